"""The dashboard's agreement tables: n and a 95% interval beside every figure, and no figure from too few items."""

from __future__ import annotations

import numpy as np
import pytest
from pairfiles import write_pairs

from psychocounsel.annotate.dashboard import MIN_ITEMS, study_agreement
from psychocounsel.annotate.sources import study_spec
from psychocounsel.annotate.store import AnnotationStore
from psychocounsel.measures.agreement import krippendorff_alpha
from psychocounsel.measures.bootstrap import resample_weights

FIGURES = {"percent", "kappa", "alpha", "percent_ci", "kappa_ci", "alpha_ci", "agree"}


def answered_study(tmp_path, n_items: int):
    """Two annotators answer every item and rate empathy for both responses, with some disagreement."""
    store = AnnotationStore(tmp_path / "a.sqlite")
    sid = store.create_study(study_spec(write_pairs(tmp_path / "p.jsonl", n_items), n=n_items, seed=0, name="s"))
    for who in range(2):
        aid = store.add_annotator(sid, f"rater{who}")[0]
        for k, a in enumerate(store.assignments(aid)):
            choice = "AB"[(k * (who + 2)) % 3 == 0]
            ratings = {"A": {"empathy": 1 + (k + who) % 5}, "B": {"empathy": 1 + (2 * k + who * who) % 5}}
            store.submit(aid, a["assignment_id"], choice, ratings)
    study = store.study(sid)
    return store.annotation_rows(sid), store.annotators(sid), study


def reports(agreement: dict) -> list[dict | None]:
    out = [r["report"] for r in agreement["between_annotators"] + agreement["vs_label"]]
    out.append(agreement["all_annotators"])
    for p in agreement["principles"]:
        out += [p["annotators"], p["with_judge"]]
    return out


def keys_anywhere(obj) -> set[str]:
    if isinstance(obj, dict):
        return set(obj) | set().union(*(keys_anywhere(v) for v in obj.values()))
    if isinstance(obj, list):
        return set().union(*(keys_anywhere(v) for v in obj)) if obj else set()
    return set()


def test_below_the_minimum_there_is_no_figure_at_all(tmp_path):
    rows, annotators, study = answered_study(tmp_path, 3)
    agreement = study_agreement(rows, annotators, study, n_boot=50)
    assert MIN_ITEMS == 10 and agreement["min_items"] == 10
    empathy = next(p for p in agreement["principles"] if p["key"] == "empathy")
    for rep in [r["report"] for r in agreement["between_annotators"] + agreement["vs_label"]] + [
            agreement["all_annotators"], empathy["annotators"], empathy["with_judge"]]:
        assert rep == {"n": 3, "enough": False, "min_items": 10, "note": "not enough ratings (n=3; at least 10)"}
    assert not keys_anywhere(agreement) & FIGURES  # nowhere in the JSON either
    # Principles nobody rated have no report at all (not a "not enough" one).
    assert next(p for p in agreement["principles"] if p["key"] == "safety")["annotators"] is None


def test_the_minimum_is_a_boundary(tmp_path):
    rows, annotators, study = answered_study(tmp_path, 4)
    assert study_agreement(rows, annotators, study, n_boot=20, min_items=4)["all_annotators"]["enough"] is True
    assert study_agreement(rows, annotators, study, n_boot=20, min_items=5)["all_annotators"]["enough"] is False


def test_every_figure_has_n_and_an_interval(tmp_path):
    rows, annotators, study = answered_study(tmp_path, 12)
    agreement = study_agreement(rows, annotators, study, n_boot=200)
    shown = [r for r in reports(agreement) if r is not None and r["enough"]]
    assert len(shown) == 1 + 2 + 1 + 2  # a pair, two vs the label, everyone, empathy among and with the judge
    for rep in shown:
        assert rep["n"] == 12
        for fig in ("percent", "kappa", "alpha"):
            if fig in rep and rep[fig] is not None:
                lo, hi = rep[f"{fig}_ci"]
                assert lo <= rep[fig] + 1e-12 and rep[fig] <= hi + 1e-12, (fig, rep)


def test_principle_interval_resamples_items_with_both_responses(tmp_path):
    """The principle alpha's interval, redone by hand: draw items (each item's two responses together) with
    the dashboard's seeded draws, compute alpha on each resample with the plain function, take percentiles."""
    rows, annotators, study = answered_study(tmp_path, 12)
    n_boot = 300
    rep = next(p for p in study_agreement(rows, annotators, study, n_boot=n_boot)["principles"]
               if p["key"] == "empathy")["annotators"]
    ids = [a["id"] for a in annotators]
    units: dict[tuple[int, str], dict[int, int]] = {}
    for r in rows:
        for side in ("first", "second"):
            units.setdefault((r["item"], side), {})[r["annotator_id"]] = r["ratings"][side]["empathy"]
    keys = sorted(units)
    table = [[units[k].get(x) for x in ids] for k in keys]
    assert rep["n"] == 12 and rep["n_units"] == 24
    assert rep["alpha"] == pytest.approx(krippendorff_alpha(table, "ordinal", [1, 2, 3, 4, 5]))
    groups = [k[0] for k in keys]
    alphas = []
    for block in resample_weights(groups, len(keys), n_boot, 0):
        for w in block:
            drawn = [row for row, times in zip(table, w, strict=True) for _ in range(int(times))]
            alphas.append(krippendorff_alpha(drawn, "ordinal", [1, 2, 3, 4, 5]))
    v = np.array(alphas)
    v = v[np.isfinite(v)]
    assert rep["alpha_ci"] == pytest.approx(list(np.quantile(v, [0.025, 0.975])))
