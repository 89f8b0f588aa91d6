"""What the admin dashboard shows: progress and agreement, computed from stored answers (pure).

Codings, and why:
- Annotator vs annotator: each answer in canonical terms (``first``/``second``/``tie``; for a pair
  file first = chosen). The two annotators saw different A/B orders, so only canonical terms compare.
- Annotator vs the reference (dataset label or LLM judge): percent agreement is the share of
  answers naming the same response; that is the paper's 88.5%. Kappa and alpha are computed with
  both answers coded as the POSITION shown (A/B/tie), the label mapped through that annotator's
  A/B order. In canonical terms a pair file's label is always ``first``, and kappa against a
  constant rater is 0 (or undefined) by construction; in shown terms the label varies with the
  randomised order, so kappa measures agreement beyond what position guessing gives. Percent
  agreement is the same in both codings.
- All annotators together: Krippendorff's alpha (nominal, canonical terms; missing answers allowed).
- Principle ratings: Krippendorff's alpha (ordinal) per principle, units = (item, response);
  among annotators, and with the judge's ratings as one more rater where the source had them.

Intervals: percentile bootstrap over items (``agreement.agreement_report``, 2000 resamples, seed 0).
"""

from __future__ import annotations

import math
from collections import defaultdict
from itertools import combinations
from typing import Any

from ..measures.agreement import agreement_report, krippendorff_alpha

CANONICAL = ["first", "second", "tie"]
SHOWN = ["A", "B", "tie"]
# The paper's expert check, shown next to the live figures for scale.
PAPER_NOTE = ("Paper: two therapists agreed with each other on 174 of 200 pairs (87%) and with the dataset "
              "labels on 184 and 170 (88.5% on average).")


def shown_label(label: str | None, swapped: bool) -> str | None:
    """The position (A/B) where this annotator saw the reference's preferred response."""
    if label is None or label == "tie":
        return label
    return "A" if (label == "first") != swapped else "B"


def _finite(x: float) -> float | None:
    return None if x is None or (isinstance(x, float) and math.isnan(x)) else float(x)


def _report(a: list, b: list, labels: list[str], n_boot: int, seed: int) -> dict[str, Any] | None:
    pairs = [(x, y) for x, y in zip(a, b) if x is not None and y is not None]
    if not pairs:
        return None
    rep = agreement_report([x for x, _ in pairs], [y for _, y in pairs], labels=labels, n_boot=n_boot, seed=seed)
    rep["agree"] = int(round(rep["percent"] * rep["n"]))
    return rep


def study_agreement(rows: list[dict[str, Any]], annotators: list[dict[str, Any]], study: dict[str, Any],
                    *, n_boot: int = 2000, seed: int = 0) -> dict[str, Any]:
    """Agreement tables of one study from ``AnnotationStore.annotation_rows`` (codings in the docstring)."""
    names = {a["id"]: a["name"] for a in annotators}
    ids = [a["id"] for a in annotators]
    by_item: dict[int, dict[int, dict[str, Any]]] = defaultdict(dict)
    for r in rows:
        by_item[r["item"]][r["annotator_id"]] = r
    items = sorted(by_item)
    between = []
    for x, y in combinations(ids, 2):
        a = [by_item[i][x]["preferred"] if x in by_item[i] else None for i in items]
        b = [by_item[i][y]["preferred"] if y in by_item[i] else None for i in items]
        rep = _report(a, b, CANONICAL, n_boot, seed)
        between.append({"a": names[x], "b": names[y], "a_id": x, "b_id": y, "report": rep})
    vs_label = []
    for x in ids:
        mine = [r for r in rows if r["annotator_id"] == x]
        a = [r["choice"] for r in mine]
        b = [shown_label(r["label"], r["swapped"]) for r in mine]
        vs_label.append({"a": names[x], "a_id": x, "b": study["label_name"], "report": _report(a, b, SHOWN, n_boot, seed)})
    overall = None
    if len(ids) >= 2 and items:
        table = [[by_item[i][x]["preferred"] if x in by_item[i] else None for x in ids] for i in items]
        if sum(sum(v is not None for v in row) >= 2 for row in table):
            overall = _finite(krippendorff_alpha(table, level="nominal"))
    return {"between_annotators": between, "vs_label": vs_label, "label_name": study["label_name"],
            "alpha_all_annotators": overall, "principles": principle_agreement(rows, ids, study),
            "n_boot": n_boot, "seed": seed, "paper": PAPER_NOTE}


def principle_agreement(rows: list[dict[str, Any]], ids: list[int], study: dict[str, Any]) -> list[dict[str, Any]]:
    """Ordinal alpha per principle among annotators, and with the judge as one more rater."""
    out = []
    for key, name in study["principles"]:
        units: dict[tuple[int, str], dict[Any, float]] = defaultdict(dict)
        judge: dict[tuple[int, str], float] = {}
        n = 0
        for r in rows:
            for side in ("first", "second"):
                v = r["ratings"].get(side, {}).get(key)
                if v is not None:
                    units[(r["item"], side)][r["annotator_id"]] = v
                    n += 1
                j = (r[f"{side}_ratings"] or {}).get(key)
                if j is not None:
                    judge[(r["item"], side)] = j
        keys = sorted(units)
        among = with_judge = None
        if keys and len(ids) >= 2:
            table = [[units[k].get(x) for x in ids] for k in keys]
            if any(sum(v is not None for v in row) >= 2 for row in table):
                among = _finite(krippendorff_alpha(table, level="ordinal"))
        if keys and judge:
            table = [[units[k].get(x) for x in ids] + [judge.get(k)] for k in keys]
            if any(sum(v is not None for v in row) >= 2 for row in table):
                with_judge = _finite(krippendorff_alpha(table, level="ordinal"))
        mean = (sum(v for u in units.values() for v in u.values()) / n) if n else None
        out.append({"key": key, "name": name, "n_ratings": n, "mean": mean, "alpha_annotators": among,
                    "alpha_with_judge": with_judge})
    return out
