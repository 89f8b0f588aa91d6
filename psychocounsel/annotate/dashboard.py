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

Every figure comes with its n (items) and a 95% percentile bootstrap interval over items, 2000
resamples, seed 0 (``measures.agreement``: ``agreement_report`` for two raters, ``alpha_report`` for
many; a principle's two responses of one item are resampled together). Below ``MIN_ITEMS`` items a
report holds no figure at all, only n and a note saying why (see ``MIN_ITEMS``).
"""

from __future__ import annotations

from collections import defaultdict
from itertools import combinations
from typing import Any

from ..measures.agreement import agreement_report, alpha_report

CANONICAL = ["first", "second", "tie"]
SHOWN = ["A", "B", "tie"]
DEFAULT_SCALE = (1, 5)  # the principle ratings' range; a study may rate on another (the session rubric's 1-6)
# No agreement figure from fewer items than this. With n items a bootstrap has C(2n-1, n) distinct
# resamples (3 for n = 2, 126 for n = 5, 92,378 for n = 10), so below 10 the interval is a handful of
# values; and one answer moves percent agreement by 10 points or more. A number from 2 ratings looks
# as solid on a dashboard as one from 200, so below the minimum the dashboard shows n and this reason.
MIN_ITEMS = 10
# The paper's expert check, shown next to the live figures for scale.
PAPER_NOTE = ("Paper: two therapists agreed with each other on 174 of 200 pairs (87%) and with the dataset "
              "labels on 184 and 170 (88.5% on average).")


def shown_label(label: str | None, swapped: bool) -> str | None:
    """The position (A/B) where this annotator saw the reference's preferred response."""
    if label is None or label == "tie":
        return label
    return "A" if (label == "first") != swapped else "B"


def not_enough(n: int, min_items: int) -> dict[str, Any]:
    """A report with no figure: n and why (``MIN_ITEMS``)."""
    return {"n": n, "enough": False, "min_items": min_items,
            "note": f"not enough ratings (n={n}; at least {min_items})"}


def _pair_report(a: list, b: list, labels: list[str], n_boot: int, seed: int,
                 min_items: int) -> dict[str, Any] | None:
    """Two raters over the items both answered: None when there are none, no figures below the minimum."""
    pairs = [(x, y) for x, y in zip(a, b) if x is not None and y is not None]
    if not pairs:
        return None
    if len(pairs) < min_items:
        return not_enough(len(pairs), min_items)
    rep = agreement_report([x for x, _ in pairs], [y for _, y in pairs], labels=labels, n_boot=n_boot, seed=seed)
    rep["agree"] = int(round(rep["percent"] * rep["n"]))
    rep.update(enough=True, min_items=min_items)
    return rep


def _alpha(table: list[list[Any]], level: str, values: list, groups: list | None, n_boot: int, seed: int,
           min_items: int) -> dict[str, Any] | None:
    """Many raters' alpha over ``table[unit][rater]``: None when no unit has two values, no figure below the
    minimum (counted in items: ``groups`` maps a unit to its item)."""
    pairable = [u for u, row in enumerate(table) if sum(v is not None for v in row) >= 2]
    if not pairable:
        return None
    n = len(pairable) if groups is None else len({groups[u] for u in pairable})
    if n < min_items:
        return not_enough(n, min_items)
    rep = alpha_report(table, level, values, groups=groups, n_boot=n_boot, seed=seed)
    rep.update(enough=True, min_items=min_items)
    return rep


def study_agreement(rows: list[dict[str, Any]], annotators: list[dict[str, Any]], study: dict[str, Any],
                    *, n_boot: int = 2000, seed: int = 0, min_items: int = MIN_ITEMS) -> dict[str, Any]:
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
        rep = _pair_report(a, b, CANONICAL, n_boot, seed, min_items)
        between.append({"a": names[x], "b": names[y], "a_id": x, "b_id": y, "report": rep})
    vs_label = []
    for x in ids:
        mine = [r for r in rows if r["annotator_id"] == x]
        a = [r["choice"] for r in mine]
        b = [shown_label(r["label"], r["swapped"]) for r in mine]
        vs_label.append({"a": names[x], "a_id": x, "b": study["label_name"],
                         "report": _pair_report(a, b, SHOWN, n_boot, seed, min_items)})
    overall = None
    if len(ids) >= 2 and items:
        table = [[by_item[i][x]["preferred"] if x in by_item[i] else None for x in ids] for i in items]
        overall = _alpha(table, "nominal", CANONICAL, None, n_boot, seed, min_items)
    return {"between_annotators": between, "vs_label": vs_label, "label_name": study["label_name"],
            "all_annotators": overall,
            "principles": principle_agreement(rows, ids, study, n_boot=n_boot, seed=seed, min_items=min_items),
            "n_boot": n_boot, "seed": seed, "min_items": min_items, "paper": PAPER_NOTE}


def principle_agreement(rows: list[dict[str, Any]], ids: list[int], study: dict[str, Any], *, n_boot: int = 2000,
                        seed: int = 0, min_items: int = MIN_ITEMS) -> list[dict[str, Any]]:
    """Ordinal alpha per principle among annotators, and with the judge as one more rater (for a session study:
    per rubric criterion, the session judges' scores as that rater)."""
    low, high = study.get("scale") or DEFAULT_SCALE
    scale = list(range(low, high + 1))  # the ratings' rank order, for ordinal alpha
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
        groups = [k[0] for k in keys]  # an item's two responses are resampled together
        among = with_judge = None
        if len(ids) >= 2:
            among = _alpha([[units[k].get(x) for x in ids] for k in keys], "ordinal", scale, groups,
                           n_boot, seed, min_items)
        if judge:
            # The judge may score on a finer scale (G-Eval's weighted 3.7): its own values join the ranks.
            values = sorted(set(scale) | {judge[k] for k in keys if k in judge}, key=float)
            with_judge = _alpha([[units[k].get(x) for x in ids] + [judge.get(k)] for k in keys], "ordinal", values,
                                groups, n_boot, seed, min_items)
        mean = (sum(v for u in units.values() for v in u.values()) / n) if n else None
        out.append({"key": key, "name": name, "n_ratings": n, "mean": mean, "annotators": among,
                    "with_judge": with_judge})
    return out
