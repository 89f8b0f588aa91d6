"""Agreement between two judges, or a judge and human labels: percent agreement, Cohen's kappa,
Krippendorff's alpha, with bootstrap intervals over items.
Pure math: the label files and the ``agree`` command are in ``evaluation/agree.py``.

The paper reports that two therapists agreed with its labels on 88.5% of 200 pairs and with the GPT-4o
judge 82.5% of the time; this is how a user checks their own judge the same way, plus chance-corrected
numbers (percent agreement alone rewards a judge that always says what is most common).

* Cohen's kappa = (p_o - p_e) / (1 - p_e), written as 1 - sum(D * O) / sum(D * E) so the weighted
  forms (linear, quadratic disagreement on the positions of ``labels``) use the same code.
* Krippendorff's alpha via the coincidence matrix (Krippendorff 2011, "Computing Krippendorff's
  Alpha-Reliability"): any number of raters, missing values, nominal / ordinal / interval distances.
  alpha = 1 - (n - 1) * sum_ck o_ck d2_ck / sum_ck n_c n_k d2_ck.
* Undefined numbers (kappa when both raters used one same label for every item; alpha when the data
  hold a single value) are NaN from the functions and None in reports, with the reason in ``notes``:
  never a crash, never a made-up 0 or 1.
* Labels are any hashable values. Numbers of any type (Python, numpy, ``Decimal``, ``Fraction``) are one
  scale, ordered by value. A statistic that needs an order (ordinal alpha, weighted kappa) takes it
  from the numbers, or from the caller (``values=`` / ``labels=``) when any label is not a number:
  text sorted alphabetically ("high" < "low" < "mid") would be a silent wrong scale, so it is refused.

Both statistics are sums over items (a contingency table, a coincidence matrix), so a bootstrap
resample is a weight per item and every resample is one matrix product (``bootstrap.resample_weights``).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Hashable, Sequence
from decimal import Decimal
from typing import Any, Literal

import numpy as np

from .bootstrap import DEFAULT_N_BOOT, resample_weights

Level = Literal["nominal", "ordinal", "interval"]
LEVELS = ("nominal", "ordinal", "interval")
KappaWeights = Literal["linear", "quadratic"] | None
# Text a spreadsheet writes for "no label": read as missing, never as a category of its own.
MISSING_TEXT = {"", "na", "n/a", "nan", "null", "none"}


def is_missing(v: Any) -> bool:
    """None or a NaN of any float type (a numpy float32 array's NaN is as missing as Python's)."""
    if v is None:
        return True
    if isinstance(v, (float, np.floating)):
        return bool(np.isnan(v))
    return isinstance(v, Decimal) and v.is_nan()


def is_number(v: Any) -> bool:
    """A real number of any type (Python, numpy, Decimal, Fraction). A bool is a yes/no label, not a number."""
    return isinstance(v, (numbers.Real, Decimal)) and not isinstance(v, (bool, np.bool_))


def _sorted_labels(values: Sequence[Hashable]) -> list[Hashable]:
    """Numbers by value (whatever their types), else all-text alphabetically, else in order of first
    appearance. Only for display and for statistics that ignore order (see ``_ranked_labels``)."""
    uniq = list(dict.fromkeys(values))
    if all(is_number(v) for v in uniq):
        return sorted(uniq, key=float)
    try:
        return sorted(uniq)
    except TypeError:
        return uniq


def unranked_labels(values: Sequence[Hashable | None]) -> str:
    """The labels that cannot rank themselves (not numbers), quoted for a message; "" when there are none."""
    text = _sorted_labels([v for v in values if not is_missing(v) and not is_number(v)])
    return ", ".join(map(repr, text[:5])) + (", ..." if len(text) > 5 else "")


def _ranked_labels(values: Sequence[Hashable], given: Sequence[Hashable] | None, what: str,
                   param: str) -> list[Hashable]:
    """The rank order a statistic needs: ``given``, or the labels by value when all are numbers."""
    if given is not None:
        return list(given)
    text = unranked_labels(values)
    if text:
        raise ValueError(f"{what} ranks the labels, and {text} are not numbers: give their order with "
                         f"{param}=[lowest, ..., highest]")
    return sorted(dict.fromkeys(values), key=float)


def _paired(a: Sequence[Hashable | None], b: Sequence[Hashable | None]) -> tuple[list, list]:
    if len(a) != len(b):
        raise ValueError(f"the two raters label different numbers of items: {len(a)} vs {len(b)}")
    keep = [(x, y) for x, y in zip(a, b) if not is_missing(x) and not is_missing(y)]
    if not keep:
        raise ValueError("no item carries a label from both raters: nothing to compare")
    return [x for x, _ in keep], [y for _, y in keep]


def _index(values: Sequence[Hashable], labels: Sequence[Hashable]) -> np.ndarray:
    pos = {lab: i for i, lab in enumerate(labels)}
    try:
        return np.array([pos[v] for v in values], dtype=np.int64)
    except KeyError as e:
        raise ValueError(f"label {e.args[0]!r} is not among labels {list(labels)!r}") from None


# -- percent agreement and Cohen's kappa ----------------------------------------------------------
def percent_agreement(a: Sequence[Hashable | None], b: Sequence[Hashable | None]) -> float:
    """Share of items (labelled by both) where the two labels are equal."""
    x, y = _paired(a, b)
    return float(np.mean([u == v for u, v in zip(x, y)]))


def _disagreement(k: int, weights: KappaWeights) -> np.ndarray:
    i = np.arange(k)
    d = np.abs(i[:, None] - i[None, :]).astype(np.float64)
    if weights is None:
        return (d > 0).astype(np.float64)
    if weights == "linear":
        return d
    if weights == "quadratic":
        return d ** 2
    raise ValueError(f"weights must be None, 'linear' or 'quadratic', got {weights!r}")


def _kappa_from_tables(t: np.ndarray, dis: np.ndarray) -> np.ndarray:
    """Kappa for a stack of (b, k, k) contingency tables: 1 - sum(D * O) / sum(D * E); NaN where undefined."""
    n = t.sum(axis=(1, 2))
    e = t.sum(axis=2)[:, :, None] * t.sum(axis=1)[:, None, :] / np.where(n > 0, n, 1)[:, None, None]
    obs, exp = (t * dis).sum(axis=(1, 2)), (e * dis).sum(axis=(1, 2))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(exp > 0, 1 - obs / exp, np.nan)


def confusion_matrix(a: Sequence[Hashable | None], b: Sequence[Hashable | None],
                     labels: Sequence[Hashable] | None = None) -> tuple[list[Hashable], np.ndarray]:
    """(labels, counts[i, j] = items rater a called labels[i] and rater b labels[j]) over items both labelled."""
    x, y = _paired(a, b)
    labs = list(labels) if labels is not None else _sorted_labels(x + y)
    ia, ib = _index(x, labs), _index(y, labs)
    t = np.zeros((len(labs), len(labs)))
    np.add.at(t, (ia, ib), 1.0)
    return labs, t


def cohen_kappa(a: Sequence[Hashable | None], b: Sequence[Hashable | None],
                labels: Sequence[Hashable] | None = None, weights: KappaWeights = None) -> float:
    """Cohen's kappa over items both raters labelled; NaN when chance agreement is already perfect.

    ``labels`` fixes the category set and, for ``weights`` "linear"/"quadratic", their order (lowest
    first; needed for weights unless every label is a number).
    """
    if weights is not None:
        x, y = _paired(a, b)
        labels = _ranked_labels(x + y, labels, "weighted kappa", "labels")
    labs, t = confusion_matrix(a, b, labels)
    return float(_kappa_from_tables(t[None], _disagreement(len(labs), weights))[0])


# -- Krippendorff's alpha -------------------------------------------------------------------------
def _units(data: Sequence[Sequence[Hashable | None]]) -> list[list[Hashable]]:
    rows = [list(r) for r in data]
    if not rows:
        raise ValueError("no items: krippendorff_alpha needs data[item][rater]")
    return [[v for v in r if not is_missing(v)] for r in rows]


def _unit_coincidences(units: list[list[Hashable]], values: list[Hashable]) -> np.ndarray:
    """(items, k*k): item u adds (c c^T - diag c) / (m_u - 1) for its value counts c, m_u >= 2 values."""
    k = len(values)
    pos = {v: i for i, v in enumerate(values)}
    out = np.zeros((len(units), k * k))
    for u, vals in enumerate(units):
        m = len(vals)
        if m < 2:
            continue  # a lone value has no partner: not pairable
        c = np.zeros(k)
        for v in vals:
            c[pos[v]] += 1
        out[u] = ((np.outer(c, c) - np.diag(c)) / (m - 1)).ravel()
    return out


def _alpha_from_coincidences(o: np.ndarray, values: list[Hashable], level: Level) -> np.ndarray:
    """Alpha for a stack of (b, k, k) coincidence matrices; NaN where undefined (no pairs, no variation)."""
    k = len(values)
    nc = o.sum(axis=2)  # (b, k) marginals
    n = nc.sum(axis=1)
    if level == "nominal":
        d2 = np.broadcast_to(1.0 - np.eye(k), o.shape)
    elif level == "interval":
        x = np.array([float(v) for v in values])
        d2 = np.broadcast_to((x[:, None] - x[None, :]) ** 2, o.shape)
    elif level == "ordinal":
        # d2_ck = (sum of n_g for g from c to k - (n_c + n_k) / 2)^2, values in rank order
        cum = np.cumsum(nc, axis=1)
        prev = cum - nc
        i = np.arange(k)
        lo, hi = np.minimum(i[:, None], i[None, :]), np.maximum(i[:, None], i[None, :])
        span = cum[:, hi] - prev[:, lo]
        d2 = (span - (nc[:, :, None] + nc[:, None, :]) / 2) ** 2
    else:
        raise ValueError(f"level must be one of {LEVELS}, got {level!r}")
    obs = (o * d2).sum(axis=(1, 2))
    exp = (nc[:, :, None] * nc[:, None, :] * d2).sum(axis=(1, 2))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where((exp > 0) & (n > 1), 1 - (n - 1) * obs / exp, np.nan)


def _check_interval(vals: Sequence[Hashable]) -> None:
    bad = [v for v in vals if not is_number(v)]
    if bad:
        raise ValueError(f"interval alpha needs numeric labels, got {bad[0]!r}")
    inf = [v for v in vals if not math.isfinite(float(v))]
    if inf:
        raise ValueError(f"interval alpha needs finite numbers, got {inf[0]!r}")


def _alpha_values(units: list[list[Hashable]], level: Level, values: Sequence[Hashable] | None,
                  param: str = "values") -> list[Hashable]:
    seen = [v for r in units for v in r]
    if values is not None:
        vals = list(values)
        extra = set(seen) - set(vals)
        if extra:
            shown = ", ".join(sorted(map(repr, extra)))
            raise ValueError(f"labels {shown} are not among the given {param} {vals!r}")
    elif level == "ordinal":
        vals = _ranked_labels(seen, None, "ordinal alpha", param)
    else:
        vals = _sorted_labels(seen)
    if level == "interval":
        _check_interval(vals)
    return vals


def coincidence_matrix(data: Sequence[Sequence[Hashable | None]],
                       values: Sequence[Hashable] | None = None) -> tuple[list[Hashable], np.ndarray]:
    """(values, o[c, k]): Krippendorff's coincidence matrix of ``data[item][rater]`` (None = missing)."""
    units = _units(data)
    vals = _alpha_values(units, "nominal", values)
    return vals, _unit_coincidences(units, vals).sum(axis=0).reshape(len(vals), len(vals))


def krippendorff_alpha(data: Sequence[Sequence[Hashable | None]], level: Level = "nominal",
                       values: Sequence[Hashable] | None = None) -> float:
    """Krippendorff's alpha of ``data[item][rater]`` (None or NaN = missing); NaN when undefined.

    ``values`` fixes the category set and, for ``ordinal``, the rank order (lowest first); it may be left
    out when every label is a number. ``interval`` needs numbers (any numeric type).
    """
    if level not in LEVELS:
        raise ValueError(f"level must be one of {LEVELS}, got {level!r}")
    units = _units(data)
    vals = _alpha_values(units, level, values)
    if not vals:
        return float("nan")
    o = _unit_coincidences(units, vals).sum(axis=0).reshape(1, len(vals), len(vals))
    return float(_alpha_from_coincidences(o, vals, level)[0])


# -- report with intervals ------------------------------------------------------------------------
def _undefined_notes(labs: list, t: np.ndarray, kappa: float, alpha: float) -> list[str]:
    notes = []
    if math.isnan(kappa):
        used_a, used_b = t.sum(1) > 0, t.sum(0) > 0
        if used_a.sum() == 1 and used_b.sum() == 1:
            la, lb = labs[int(np.argmax(used_a))], labs[int(np.argmax(used_b))]
            same = "both raters" if la == lb else "each rater"
            notes.append(f"kappa undefined: {same} used a single label ({la!r}"
                         + ("" if la == lb else f", {lb!r}") + ") for every item, so chance agreement is 1")
        else:
            notes.append("kappa undefined: expected disagreement is 0")
    if math.isnan(alpha):
        notes.append("alpha undefined: every pairable value is the same, so there is no variation to agree on")
    return notes


def _clean(x: float) -> float | None:
    return None if x is None or not np.isfinite(x) else float(x)


def agreement_report(a: Sequence[Hashable | None], b: Sequence[Hashable | None], *, level: Level = "nominal",
                     labels: Sequence[Hashable] | None = None, n_boot: int = DEFAULT_N_BOOT, seed: int = 0,
                     alpha: float = 0.05) -> dict[str, Any]:
    """Percent agreement, Cohen's kappa and Krippendorff's alpha (at ``level``) with percentile bootstrap
    intervals over items (seeded). Items missing either label are left out and counted in ``n_missing``.
    ``labels`` fixes the category set and, for ``ordinal``, the rank order (needed unless every label is a
    number). Undefined values are None with the reason in ``notes`` (JSON-safe)."""
    if level not in LEVELS:
        raise ValueError(f"level must be one of {LEVELS}, got {level!r}")
    x, y = _paired(a, b)
    labs = _alpha_values([x + y], level, labels, param="labels")
    ia, ib = _index(x, labs), _index(y, labs)
    k, n = len(labs), len(x)
    # per-item tables: one cell of the contingency table; (a,b)+(b,a) of the coincidence matrix (m_u = 2)
    cell = np.zeros((n, k * k))
    cell[np.arange(n), ia * k + ib] = 1.0
    coin = cell.copy()
    np.add.at(coin, (np.arange(n), ib * k + ia), 1.0)
    agree = (ia == ib).astype(np.float64)
    dis = _disagreement(k, None)

    def stats(w: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        with np.errstate(invalid="ignore", divide="ignore"):
            pa = (w @ agree) / w.sum(axis=1)
        kap = _kappa_from_tables((w @ cell).reshape(-1, k, k), dis)
        alp = _alpha_from_coincidences((w @ coin).reshape(-1, k, k), labs, level)
        return pa, kap, alp

    point = [float(s[0]) for s in stats(np.ones((1, n)))]
    boots: list[list[np.ndarray]] = [[], [], []]
    for w in resample_weights(None, n, n_boot, seed):
        for acc, s in zip(boots, stats(w)):
            acc.append(s)
    cis = []
    for acc in boots:
        v = np.concatenate(acc) if acc else np.array([])
        v = v[np.isfinite(v)]
        cis.append([None, None] if v.size == 0 else [float(q) for q in np.quantile(v, [alpha / 2, 1 - alpha / 2])])
    _, t = confusion_matrix(x, y, labs)
    return {
        "n": n, "n_missing": len(a) - n, "labels": labs, "level": level, "ci_level": 1 - alpha, "n_boot": n_boot,
        "percent": point[0], "percent_ci": cis[0],
        "kappa": _clean(point[1]), "kappa_ci": cis[1] if np.isfinite(point[1]) else [None, None],
        "alpha": _clean(point[2]), "alpha_ci": cis[2] if np.isfinite(point[2]) else [None, None],
        "confusion": t.astype(int).tolist(),
        "notes": _undefined_notes(labs, t, point[1], point[2]),
    }


def alpha_report(data: Sequence[Sequence[Hashable | None]], level: Level = "nominal",
                 values: Sequence[Hashable] | None = None, *, groups: Sequence[Hashable] | None = None,
                 n_boot: int = DEFAULT_N_BOOT, seed: int = 0, alpha: float = 0.05) -> dict[str, Any]:
    """Krippendorff's alpha of ``data[item][rater]`` (any number of raters) with a percentile bootstrap
    interval, resampling items, or whole ``groups`` of items (one group label per item) where items are not
    independent (the two responses of one comparison). Seeded; JSON-safe; alpha None when undefined.

    ``n`` counts the groups (items when ``groups`` is None) holding a pairable item (two or more values):
    alpha sees only those, and the bootstrap resamples them.
    """
    if level not in LEVELS:
        raise ValueError(f"level must be one of {LEVELS}, got {level!r}")
    units = _units(data)
    if groups is not None and len(groups) != len(units):
        raise ValueError(f"groups must have one entry per item: {len(groups)} groups for {len(units)} items")
    vals = _alpha_values(units, level, values)
    keep = [i for i, u in enumerate(units) if len(u) >= 2]
    kept_groups = None if groups is None else [groups[i] for i in keep]
    out: dict[str, Any] = {
        "n": len(keep) if kept_groups is None else len(set(kept_groups)), "n_units": len(keep),
        "n_values": sum(len(units[i]) for i in keep), "level": level, "ci_level": 1 - alpha, "n_boot": n_boot,
        "alpha": None, "alpha_ci": [None, None]}
    if not keep or not vals:
        return out
    k = len(vals)
    coin = _unit_coincidences([units[i] for i in keep], vals)  # (items, k*k): a resample is a weight per item
    if kept_groups is not None:
        # One row per group, in np.unique's order: resampling these rows draws exactly what
        # resample_weights(kept_groups, ...) draws, with a matrix half the size or less.
        _, inv = np.unique(np.asarray(kept_groups), return_inverse=True)
        per_group = np.zeros((out["n"], k * k))
        np.add.at(per_group, inv.ravel(), coin)
        coin = per_group
    point = float(_alpha_from_coincidences(coin.sum(axis=0).reshape(1, k, k), vals, level)[0])
    boots = [_alpha_from_coincidences((w @ coin).reshape(-1, k, k), vals, level)
             for w in resample_weights(None, len(coin), n_boot, seed)]
    v = np.concatenate(boots) if boots else np.array([])
    v = v[np.isfinite(v)]
    out["alpha"] = _clean(point)
    if np.isfinite(point) and v.size:
        out["alpha_ci"] = [float(q) for q in np.quantile(v, [alpha / 2, 1 - alpha / 2])]
    return out
