"""Reward-model metrics on preference pairs: accuracy, ROC AUC, ECE, Brier, bootstrap intervals.

Pure numpy, no model code, so the same functions grade a Bradley-Terry model, a per-principle head
or an LLM judge's scores.

Pairing convention (the paper's table reports AUC, ECE and Brier for a reward model on preference
pairs, but a pair file has no negative class: the chosen response always "wins"). A pair with
rewards ``r_c`` (chosen) and ``r_r`` (rejected) becomes TWO binary examples, one per order:

    (A = chosen,   B = rejected): P(A preferred) = sigmoid(r_c - r_r), outcome 1
    (A = rejected, B = chosen):   P(A preferred) = sigmoid(r_r - r_c), outcome 0

``sigmoid(r_A - r_B)`` is the Bradley-Terry probability the model was trained to output, so ECE and
Brier grade it as it is, with no temperature fitted. Evaluating both orders makes every metric
independent of which side a file happens to list first, and gives AUC its negative class. What each
metric then reads as:

* accuracy: share of pairs with ``r_c > r_r`` (RewardBench's rule: a tie is wrong, and counted apart);
  the same in both orders.
* AUC: Mann-Whitney over the 2n examples = P(d_i > -d_j) for two random pairs i, j, with
  d = r_c - r_r; 1.0 when every pair is ranked right, 0.5 for a coin.
* Brier: mean of (1 - sigmoid(d))^2; both orders give the same term, so it equals the one-order value.
* ECE: the reliability diagram is point-symmetric around (0.5, 0.5) by construction; a model that is
  right 90% of the time but says 0.99 has ECE near 0.09.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from .bootstrap import bootstrap_ci

# Equal-width bins over [0, 1]: 10 is the usual count for ECE (Guo et al. 2017; the paper does not say).
DEFAULT_BINS = 10
# 1,000 resamples: the usual count for a percentile interval; the Monte-Carlo error of a 2.5% endpoint
# is then small next to the interval itself at the paper's 2,324 test pairs.
DEFAULT_BOOTSTRAP = 1000


def sigmoid(x: np.ndarray) -> np.ndarray:
    """Numerically stable logistic function (no overflow warning for large |x|)."""
    x = np.asarray(x, dtype=np.float64)
    out = np.empty_like(x)
    pos = x >= 0
    out[pos] = 1.0 / (1.0 + np.exp(-x[pos]))
    ex = np.exp(x[~pos])
    out[~pos] = ex / (1.0 + ex)
    return out


def _check(probs: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    p = np.asarray(probs, dtype=np.float64).ravel()
    y = np.asarray(labels, dtype=np.float64).ravel()
    if p.shape != y.shape:
        raise ValueError(f"probabilities and labels differ in length: {p.size} vs {y.size}")
    if not np.all(np.isin(y, (0.0, 1.0))):
        raise ValueError("labels must be 0 or 1")
    if not np.all(np.isfinite(p)):
        raise ValueError("scores must be finite")
    return p, y


def pair_outcomes(r_chosen: np.ndarray, r_rejected: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Both orders of every pair (module docstring): ``(P(A preferred), outcome)``, 2n of each.

    First n = (chosen, rejected) with outcome 1, last n = (rejected, chosen) with outcome 0.
    """
    rc = np.asarray(r_chosen, dtype=np.float64).ravel()
    rr = np.asarray(r_rejected, dtype=np.float64).ravel()
    if rc.shape != rr.shape:
        raise ValueError(f"chosen and rejected rewards differ in length: {rc.size} vs {rr.size}")
    d = rc - rr
    return sigmoid(np.concatenate([d, -d])), np.concatenate([np.ones_like(d), np.zeros_like(d)])


def pair_accuracy(r_chosen: np.ndarray, r_rejected: np.ndarray) -> float:
    """Share of pairs the model ranks right (``r_c > r_r`` strictly; ties are wrong). NaN when empty."""
    rc, rr = np.asarray(r_chosen, dtype=np.float64), np.asarray(r_rejected, dtype=np.float64)
    return float(np.mean(rc > rr)) if rc.size else float("nan")


def accuracy(probs: np.ndarray, labels: np.ndarray, threshold: float = 0.5) -> float:
    """Binary accuracy of probabilities against 0/1 labels; exactly ``threshold`` counts as a miss on both sides."""
    p, y = _check(probs, labels)
    if p.size == 0:
        return float("nan")
    pred_pos, pred_neg = p > threshold, p < threshold
    return float(np.mean(np.where(y == 1, pred_pos, pred_neg)))


def _midranks(x: np.ndarray) -> np.ndarray:
    """1-based ranks with tied values sharing the mean of their ranks."""
    order = np.argsort(x, kind="mergesort")
    xs = x[order]
    # start index of each run of equal values, and the run each sorted position belongs to
    starts = np.flatnonzero(np.r_[True, xs[1:] != xs[:-1]])
    ends = np.r_[starts[1:], xs.size]
    run = np.repeat(np.arange(starts.size), ends - starts)
    mean_rank = (starts + ends + 1) / 2.0  # mean of ranks starts+1 .. ends
    ranks = np.empty_like(x, dtype=np.float64)
    ranks[order] = mean_rank[run]
    return ranks


def roc_auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """ROC AUC as the Mann-Whitney U statistic: P(score of a positive > score of a negative), ties 1/2.

    NaN when one class is empty (AUC is undefined then, not 0.5).
    """
    s, y = _check(scores, labels)
    n_pos = int(y.sum())
    n_neg = y.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = _midranks(s)
    u = ranks[y == 1].sum() - n_pos * (n_pos + 1) / 2.0
    return float(u / (n_pos * n_neg))


def _bin_edges(n_bins: int) -> np.ndarray:
    """Edges i / B, each the double nearest the exact fraction (so edge 29 of 100 is the literal 0.29)."""
    return np.arange(n_bins + 1) / n_bins


def _bin_index(p: np.ndarray, n_bins: int) -> np.ndarray:
    # Bins [0, 1/B), [1/B, 2/B), ..., [(B-1)/B, 1]: the last bin is closed so p = 1.0 has a home.
    # Compared with the edges, not int(p * B): 0.29 * 100 is 28.999999999999996 in floating point,
    # which would put a value sitting on an edge one bin too low.
    return np.minimum(np.searchsorted(_bin_edges(n_bins), p, side="right") - 1, n_bins - 1)


def reliability_bins(probs: np.ndarray, labels: np.ndarray, n_bins: int = DEFAULT_BINS) -> dict[str, list]:
    """Per equal-width bin: count, mean predicted probability, observed frequency (None when empty)."""
    if n_bins < 1:
        raise ValueError(f"n_bins must be >= 1, got {n_bins}")
    p, y = _check(probs, labels)
    if np.any((p < 0) | (p > 1)):
        raise ValueError("probabilities must lie in [0, 1]")
    idx = _bin_index(p, n_bins)
    count = np.bincount(idx, minlength=n_bins)
    sum_p = np.bincount(idx, weights=p, minlength=n_bins)
    sum_y = np.bincount(idx, weights=y, minlength=n_bins)
    nz = count > 0
    mean_p = [float(sum_p[i] / count[i]) if nz[i] else None for i in range(n_bins)]
    freq = [float(sum_y[i] / count[i]) if nz[i] else None for i in range(n_bins)]
    edges = _bin_edges(n_bins).tolist()
    return {"edges": edges, "count": count.tolist(), "mean_prob": mean_p, "frequency": freq}


def ece(probs: np.ndarray, labels: np.ndarray, n_bins: int = DEFAULT_BINS) -> float:
    """Expected calibration error: sum over bins of (bin share) * |observed frequency - mean probability|."""
    p, _ = _check(probs, labels)
    if p.size == 0:
        return float("nan")
    bins = reliability_bins(probs, labels, n_bins)
    total = 0.0
    for n, mp, fr in zip(bins["count"], bins["mean_prob"], bins["frequency"]):
        if n:
            total += n / p.size * abs(fr - mp)
    return float(total)


def brier(probs: np.ndarray, labels: np.ndarray) -> float:
    """Brier score: mean squared difference between probability and 0/1 outcome (0 is perfect)."""
    p, y = _check(probs, labels)
    return float(np.mean((p - y) ** 2)) if p.size else float("nan")


def preference_metrics(r_chosen: Sequence[float] | np.ndarray, r_rejected: Sequence[float] | np.ndarray,
                       n_bins: int = DEFAULT_BINS, n_boot: int = DEFAULT_BOOTSTRAP,
                       seed: int = 0) -> dict[str, Any]:
    """The paper's reward-model table for one set of pairs, under the both-orders convention above.

    ``accuracy_ci`` is a 95% percentile bootstrap over pairs (``n_boot=0`` skips it).
    """
    rc = np.asarray(r_chosen, dtype=np.float64).ravel()
    rr = np.asarray(r_rejected, dtype=np.float64).ravel()
    probs, labels = pair_outcomes(rc, rr)
    out: dict[str, Any] = {
        "n_pairs": int(rc.size),
        "n_ties": int(np.sum(rc == rr)),
        "accuracy": pair_accuracy(rc, rr),
        "accuracy_ci": list(bootstrap_ci(pair_accuracy, rc, rr, n_boot=n_boot, seed=seed)) if n_boot else None,
        # AUC on the margins, not the probabilities: same ranking, but no ties from sigmoid saturating at 1.0
        "auc": roc_auc(np.concatenate([rc - rr, rr - rc]), labels) if rc.size else float("nan"),
        "ece": ece(probs, labels, n_bins),
        "brier": brier(probs, labels),
        "mean_margin": float(np.mean(rc - rr)) if rc.size else float("nan"),
    }
    return out
