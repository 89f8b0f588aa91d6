"""Confidence intervals: percentile bootstrap, seeded, over rows, or over groups (speeches) so that several samples or
judgments of one speech move together.

A resample is a vector of integer weights (how often each row's group was drawn), made in (B x n) blocks.
A vectorised statistic takes the whole block (``stat(*arrays, weights=W)``) and answers every resample at once
as matrix products (win rates, the length-controlled GLM, agreement coefficients); any other statistic runs
once per resample on the drawn rows. Row resampling (``groups=None``) draws the same indices, in the same
order, as drawing each resample with ``rng.integers(0, n, n)``, so the intervals of earlier releases stand.
For a plain proportion of a few items (crisis speeches), ``wilson_ci`` gives the Wilson score interval.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

# 2,000 resamples: percentile endpoints at 2.5% then rest on 50 resamples each.
DEFAULT_N_BOOT = 2000
# Resamples per vectorised block: 256 x n float64 stays at 20 MB for n = 10,000 speeches.
_CHUNK = 256


def _group_index(groups: Sequence[Any] | np.ndarray | None, n: int) -> tuple[np.ndarray, int]:
    if groups is None:
        return np.arange(n), n
    g = np.asarray(groups)
    if g.shape != (n,):
        raise ValueError(f"groups must have one entry per row: {g.size} groups for {n} rows")
    _, inv = np.unique(g, return_inverse=True)
    return inv.ravel(), int(inv.max()) + 1 if n else 0


def resample_weights(groups: Sequence[Any] | np.ndarray | None, n: int, n_boot: int, seed: int = 0):
    """Yield (b, n) integer weight blocks: row i's weight = how often its group was drawn in a resample.

    Drawing G groups with replacement from G is the speech-level bootstrap; the same seed gives the
    same resamples whatever ``stat`` is computed on them.
    """
    inv, n_groups = _group_index(groups, n)
    rng = np.random.default_rng(seed)
    done = 0
    while done < n_boot:
        b = min(_CHUNK, n_boot - done)
        draws = rng.integers(0, n_groups, size=(b, n_groups))
        counts = np.zeros((b, n_groups))
        np.add.at(counts, (np.repeat(np.arange(b), n_groups), draws.ravel()), 1.0)
        yield counts[:, inv]
        done += b


def bootstrap_by_group(stat: Callable[..., Any], groups: Sequence[Any] | np.ndarray | None, *arrays: Any,
                       n_boot: int = DEFAULT_N_BOOT, seed: int = 0, alpha: float = 0.05,
                       vectorized: bool = False) -> tuple[float, float]:
    """Percentile (1 - alpha) interval of ``stat`` resampling whole groups (speeches), seeded.

    ``vectorized=False``: ``stat(*arrays)`` on each resample's rows (any function, one loop per resample).
    ``vectorized=True``: ``stat(*arrays, weights=W)`` with W a (b, n) matrix of row counts must return b
    values; all resamples then run as matrix products. ``groups=None`` resamples rows. Resamples where
    the statistic is NaN are dropped; (nan, nan) when none is finite.
    """
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    arrs = [np.asarray(a) for a in arrays]
    if not arrs:
        raise ValueError("bootstrap_by_group needs at least one array")
    n = len(arrs[0])
    if any(len(a) != n for a in arrs):
        raise ValueError("bootstrap_by_group: arrays differ in length")
    if n == 0:
        raise ValueError("bootstrap_by_group: no rows to resample")
    if n_boot < 1:
        return float("nan"), float("nan")
    vals = []
    for w in resample_weights(groups, n, n_boot, seed):
        if vectorized:
            vals.append(np.asarray(stat(*arrs, weights=w), dtype=np.float64).ravel())
        else:
            idx = [np.repeat(np.arange(n), row.astype(np.int64)) for row in w]
            vals.append(np.array([stat(*(a[i] for a in arrs)) for i in idx], dtype=np.float64))
    v = np.concatenate(vals)
    v = v[np.isfinite(v)]
    if v.size == 0:
        return float("nan"), float("nan")
    lo, hi = np.quantile(v, [alpha / 2, 1 - alpha / 2])
    return float(lo), float(hi)


def weighted_mean(x: np.ndarray, *, weights: np.ndarray) -> np.ndarray:
    """Vectorised statistic for ``bootstrap_by_group``: the mean of x under each row of weights."""
    tot = weights.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (weights @ np.asarray(x, dtype=np.float64)) / tot


def bootstrap_ci(stat: Callable[..., float], *arrays: np.ndarray, n_boot: int = 1000, level: float = 0.95,
                 seed: int = 0) -> tuple[float, float]:
    """Percentile interval of ``stat(*arrays)`` resampling rows (the same rows in every array); (nan, nan)
    when there are no rows. Resamples where ``stat`` is NaN (e.g. AUC of one class) are dropped."""
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    if arrays and len(arrays[0]) == 0 and all(len(a) == 0 for a in arrays):
        return float("nan"), float("nan")
    return bootstrap_by_group(stat, None, *arrays, n_boot=n_boot, seed=seed, alpha=1 - level)


def wilson_ci(successes: int, n: int, level: float = 0.95) -> tuple[float, float]:
    """Wilson score interval of a binomial proportion (Wilson 1927): sound at the small counts where a
    percentile bootstrap is not (e.g. 3 of 8 crisis speeches; 0 or n successes still get a width);
    (nan, nan) when n is 0."""
    from statistics import NormalDist

    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    if not 0 <= successes <= n:
        raise ValueError(f"wilson_ci: {successes} successes of {n}")
    if n == 0:
        return float("nan"), float("nan")
    z = NormalDist().inv_cdf(1 - (1 - level) / 2)
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return float(max(0.0, centre - half)), float(min(1.0, centre + half))

