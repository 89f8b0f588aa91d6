"""Pairwise win rates: both-order verdicts, flip rate, length-controlled win rate, speech-level bootstrap.

Pure numpy; the evaluation stage feeds it verdicts and lengths and gets numbers with intervals back.

Both orders (MT-Bench's rule). Each comparison is judged twice: once with the policy's response shown
as A (``policy_first``), once as B (``reference_first``). Each verdict is read from the policy's side
(1 win, 0.5 tie, 0 loss); the pair scores that value when both orders agree, else 0.5 (a tie). A pair
is *flipped* when the two orders disagree; ``same_position`` marks the strongest form, the judge picking
the same slot (A/A or B/B) both times. A verdict that could not be parsed (``None``) makes the pair a
failure: ``score is None``, left out of every rate and counted apart, never a silent tie.

Length-controlled win rate: alpaca_eval's *minimal* length GLM (``length_controlled_minimal`` in
``alpaca_eval/metrics/glm_winrate.py``, Dubois et al. 2024), NOT the LC of the AlpacaEval 2 leaderboard.
A logistic GLM of the policy's score y in [0, 1] on

    logit P(policy preferred) = theta_model + theta_length * tanh(delta / sd(delta)),
    delta = len(policy) - len(reference) in characters (AlpacaEval uses ``str.len()`` too),

fitted by maximising the fractional (Bernoulli quasi-) likelihood sum y log p + (1 - y) log(1 - p), so a
tie (0.5) counts half a win and half a loss, as AlpacaEval does by duplicating each row with weights
y and 1 - y. ``delta`` is divided by its standard deviation but NOT centred: zero must stay "same length".
The LC win rate is the prediction at delta = 0, i.e. ``sigmoid(theta_model)``.

The leaderboard's GLM (``length_controlled_v1``) adds a per-instruction difficulty term, estimated
across the many models of its leaderboard, and pulls the fit towards length-gamed baselines from its own
data; its LC is the mean over instructions of the prediction at delta = 0. Neither can exist for one
policy against one reference: one comparison per speech cannot tell a speech's difficulty from noise.
What leaving them out costs:

* Not comparable with the leaderboard. On alpaca_eval's AlpacaEval 2 annotation files that name a
  leaderboard model (58 files, 56 models, judge ``weighted_alpaca_eval_gpt4_turbo``) this fit reads -0.3
  to +27.2 points off the published LC (median +4.8): within 0.7 for the five FuseChat models (raw win
  rate 30-71%), far above for weak or length-gamed ones (``gpt4_gamed`` 39.4 vs 12.2). On 59 files it
  matches alpaca_eval's own minimal GLM to a median 0.03 points (at most 0.85, where its cross-validated
  L1 penalty shrinks a 13% win rate). Compare our LC numbers only with each other, under one judge and
  one reference.
* Biased when speech difficulty drives the length difference and the two sides differ in mean length.
  The fit reads "equal length" off the speeches whose length difference is near zero. If harder
  speeches get longer reference answers and the policy writes longer on average, those speeches are
  harder than the average one and the LC rate reads low; a policy shorter on average reads high.
  Simulation (``tests/measures/test_winrate.py``; difficulty 1 logit per sd, 100 characters of reference
  length per sd of difficulty): -1.9 points with the policy 100 characters longer on average, +1.9 with
  it 100 shorter, about -4 at 200 longer. With difficulty unrelated to length, or equal mean lengths, the
  bias is within noise (0.2 points): only then does leaving the difficulty term out cost nothing.

AlpacaEval fits with an L1 penalty whose strength is picked by 5-fold cross-validation; we use a fixed
small L2 penalty (``DEFAULT_L2``) fitted by Newton's method. Its only job is to keep the fit finite when
the data are separable (e.g. the policy wins every pair) without moving ordinary estimates.

Bootstrap. Intervals resample speeches (``groups``), not rows, so several samples or judgments of one
speech move together. Resampling is done as integer weights (B x n matrix, in chunks), which lets the
win rate, flip rate and even the GLM (a batch of 2x2 Newton solves) run for all resamples at once.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from .bootstrap import DEFAULT_N_BOOT, bootstrap_by_group, weighted_mean
from .rm_metrics import sigmoid

Verdict = Literal["A", "B", "tie"] | None

# L2 strength on the summed log-likelihood: 1/C with C = 100, the C alpaca_eval's fit uses when it skips
# cross-validation. With n = 200 pairs it moves a typical coefficient by well under 1%.
DEFAULT_L2 = 0.01

_POLICY_SIDE = {"policy_first": {"A": 1.0, "B": 0.0, "tie": 0.5},
                "reference_first": {"A": 0.0, "B": 1.0, "tie": 0.5}}


@dataclass(frozen=True)
class PairOutcome:
    """One comparison judged in both orders. ``score`` None = a verdict failed (excluded, counted)."""

    score: float | None
    flipped: bool  # the two orders disagree (read from the policy's side)
    same_position: bool = False  # the judge picked the same slot both times (A/A or B/B)


def _side(v: Verdict, order: str) -> float | None:
    if v is None:
        return None
    try:
        return _POLICY_SIDE[order][v]
    except (KeyError, TypeError):
        raise ValueError(f"{order} verdict must be 'A', 'B', 'tie' or None, got {v!r}") from None


def combine_orders(policy_first: Verdict, reference_first: Verdict) -> PairOutcome:
    """Merge the two orders: a win or loss counts only when both agree; any disagreement is a tie (0.5)."""
    p1, p2 = _side(policy_first, "policy_first"), _side(reference_first, "reference_first")
    if p1 is None or p2 is None:
        return PairOutcome(score=None, flipped=False, same_position=False)
    same = policy_first == reference_first and policy_first in ("A", "B")
    return PairOutcome(score=p1 if p1 == p2 else 0.5, flipped=p1 != p2, same_position=same)


def _scores_array(scores: Sequence[float] | np.ndarray, what: str = "scores") -> np.ndarray:
    s = np.asarray(scores, dtype=np.float64).ravel()
    if s.size == 0:
        raise ValueError(f"no {what}: nothing to compute a win rate from")
    if not np.all(np.isfinite(s)) or np.any((s < 0) | (s > 1)):
        raise ValueError(f"{what} must be numbers in [0, 1] (drop failed verdicts first; count them apart)")
    return s


def win_rate(scores: Sequence[float] | np.ndarray) -> float:
    """Mean of the policy's scores (1 win, 0.5 tie, 0 loss). Failed verdicts must be removed by the caller."""
    return float(_scores_array(scores).mean())


def flip_rate(outcomes: Sequence[PairOutcome]) -> float:
    """Share of parsed pairs whose two orders disagree; NaN (not 0) when no pair parsed."""
    ok = [o for o in outcomes if o.score is not None]
    return float(np.mean([o.flipped for o in ok])) if ok else float("nan")


# -- length-controlled win rate -------------------------------------------------------------------
@dataclass(frozen=True)
class LCResult:
    """The fitted length GLM. ``value`` is the LC win rate (NaN with ``note`` when not identifiable)."""

    value: float
    coef_model: float  # logit of the win rate at equal length
    coef_length: float  # effect of tanh(standardised length difference); > 0 = the judge likes longer
    length_sd: float  # sd of len(policy) - len(reference), the standardisation used
    n: int
    converged: bool
    note: str = ""


def _length_feature(delta: np.ndarray, w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """tanh(delta / sd) per resample (rows of w), with the weighted sd (ddof 1, as pandas' ``std``)."""
    n = w.sum(axis=1, keepdims=True)
    mean = (w @ delta)[:, None] / n
    var = (w * (delta[None, :] - mean) ** 2).sum(axis=1, keepdims=True) / np.maximum(n - 1, 1)
    sd = np.sqrt(var)
    safe = np.where(sd > 0, sd, 1.0)
    return np.tanh(delta[None, :] / safe), sd[:, 0]


def _fit_glm(y: np.ndarray, delta: np.ndarray, w: np.ndarray, l2: float,
             max_iter: int = 50, tol: float = 1e-10) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Penalised fractional logistic regression for B weightings at once (Newton, 2x2 solves).

    Returns (theta (B, 2), length sd (B,), converged (B,), length identifiable (B,)). Where every
    length difference is equal (sd 0) the length column is dropped: with all deltas 0 the LC rate is
    the plain fit of the intercept; with a constant non-zero delta it cannot be separated from it.
    """
    x, sd = _length_feature(delta, w)
    has_len = sd > 0
    x = np.where(has_len[:, None], x, 0.0)
    theta = np.zeros((w.shape[0], 2))
    conv = np.zeros(w.shape[0], dtype=bool)
    for _ in range(max_iter):
        p = sigmoid(theta[:, :1] + theta[:, 1:] * x)
        r = w * (y[None, :] - p)
        g = np.stack([r.sum(1), (r * x).sum(1)], axis=1) - l2 * theta
        v = w * p * (1 - p)
        h00 = v.sum(1) + l2
        h01 = (v * x).sum(1)
        h11 = (v * x * x).sum(1) + l2
        det = h00 * h11 - h01 ** 2
        step = np.stack([(h11 * g[:, 0] - h01 * g[:, 1]) / det, (h00 * g[:, 1] - h01 * g[:, 0]) / det], axis=1)
        step[~has_len, 1] = 0.0
        # damped: a logit step over 5 only happens far from the optimum (near-separable data), where a
        # full Newton step can overshoot; near the optimum steps are tiny and convergence stays quadratic
        step = np.clip(step, -5.0, 5.0)
        theta += step
        conv = np.abs(step).max(axis=1) < tol
        if conv.all():
            break
    return theta, sd, conv, has_len


def _lengths(len_policy: Any, len_reference: Any, n: int) -> np.ndarray:
    lp = np.asarray(len_policy, dtype=np.float64).ravel()
    lr = np.asarray(len_reference, dtype=np.float64).ravel()
    if lp.size != n or lr.size != n:
        raise ValueError(f"lengths must match the scores: {n} scores, {lp.size} policy and {lr.size} reference lengths")
    if not (np.all(np.isfinite(lp)) and np.all(np.isfinite(lr))):
        raise ValueError("lengths must be finite numbers")
    return lp - lr


def lc_win_rate(scores: Sequence[float] | np.ndarray, len_policy: Sequence[float] | np.ndarray,
                len_reference: Sequence[float] | np.ndarray, *, l2: float = DEFAULT_L2) -> LCResult:
    """Length-controlled win rate: alpaca_eval's minimal length GLM's win probability at equal length.

    Not the AlpacaEval 2 leaderboard's LC (no instruction-difficulty term, no pull towards gamed baselines),
    so not comparable with its numbers; biased when speech difficulty drives the length difference and
    the sides differ in mean length (module docstring).
    """
    y = _scores_array(scores)
    delta = _lengths(len_policy, len_reference, y.size)
    theta, sd, conv, has_len = _fit_glm(y, delta, np.ones((1, y.size)), l2)
    note, value = "", float(sigmoid(theta[0, :1])[0])
    if not has_len[0] and np.any(delta != 0):
        note = "every length difference is the same non-zero value: length and model effects cannot be separated"
        value = float("nan")
    elif not has_len[0]:
        note = "every pair has equal lengths: no length term, LC win rate = fitted win rate"
    return LCResult(value=value, coef_model=float(theta[0, 0]), coef_length=float(theta[0, 1]),
                    length_sd=float(sd[0]), n=int(y.size), converged=bool(conv[0]), note=note)


def weighted_lc_win_rate(scores: np.ndarray, delta: np.ndarray, *, weights: np.ndarray,
                         l2: float = DEFAULT_L2) -> np.ndarray:
    """Vectorised LC win rate for ``bootstrap_by_group`` (``delta`` = policy minus reference length).

    The length sd is recomputed in every resample, as a refit on the resampled data would.
    """
    theta, _, _, has_len = _fit_glm(np.asarray(scores, dtype=np.float64), np.asarray(delta, dtype=np.float64),
                                     weights, l2)
    out = sigmoid(theta[:, 0])
    # a resample with one constant non-zero difference has no LC rate (see lc_win_rate)
    const = ~has_len & (np.abs(weights @ np.abs(delta)) > 0)
    out[const] = np.nan
    return out


def mean_with_ci(values: Sequence[float] | np.ndarray, groups: Sequence[Any] | None = None, *,
                 n_boot: int = DEFAULT_N_BOOT, seed: int = 0, alpha: float = 0.05) -> dict[str, Any]:
    """Mean with a speech-level percentile interval: per-principle scores, the share of unsafe responses
    (a 0/1 array), a paired score difference. ``{"value", "ci", "n"}``, None where undefined (JSON-safe)."""
    x = np.asarray(values, dtype=np.float64).ravel()
    if x.size == 0:
        raise ValueError("no values to average")
    if not np.all(np.isfinite(x)):
        raise ValueError("values must be finite numbers (drop failed judgments first; count them apart)")
    ci = bootstrap_by_group(weighted_mean, groups, x, n_boot=n_boot, seed=seed, alpha=alpha, vectorized=True)
    return {"value": float(x.mean()), "ci": _ci(ci), "n": int(x.size)}


# -- one evaluation's headline numbers ------------------------------------------------------------
def _ci(lo_hi: tuple[float, float]) -> list[float | None]:
    return [None if not np.isfinite(x) else x for x in lo_hi]


def _num(x: float) -> float | None:
    return float(x) if np.isfinite(x) else None


def summarize(scores: Sequence[float | None], len_policy: Sequence[float], len_reference: Sequence[float],
              flipped: Sequence[bool], failed: Sequence[bool] | None = None, *,
              groups: Sequence[Any] | None = None, n_boot: int = DEFAULT_N_BOOT, seed: int = 0,
              alpha: float = 0.05, l2: float = DEFAULT_L2) -> dict[str, Any]:
    """Headline numbers of one policy-vs-reference evaluation, each with a speech-level bootstrap interval.

    One row per comparison: the policy's combined score (None or NaN when a verdict failed), both
    lengths, whether the orders flipped, and optionally explicit failure flags (a row is a failure when
    flagged OR its score is missing). Failures are left out of every rate and reported as ``n_failed``.
    ``groups`` = speech id per row (default: each row its own speech). Undefined numbers are None
    (JSON-safe), with the reason in ``notes``.
    """
    raw = [np.nan if s is None else float(s) for s in scores]
    n_all = len(raw)
    if n_all == 0:
        raise ValueError("no comparisons to summarise")
    lp = np.asarray(len_policy, dtype=np.float64).ravel()
    lr = np.asarray(len_reference, dtype=np.float64).ravel()
    fl = np.asarray(flipped, dtype=bool).ravel()
    fail = np.isnan(np.asarray(raw))
    if failed is not None:
        f = np.asarray(failed, dtype=bool).ravel()
        if f.size != n_all:
            raise ValueError(f"failed flags must match the scores: {f.size} vs {n_all}")
        fail |= f
    for name, arr in (("len_policy", lp), ("len_reference", lr), ("flipped", fl)):
        if arr.size != n_all:
            raise ValueError(f"{name} must have one entry per comparison: {arr.size} vs {n_all}")
    g = np.arange(n_all) if groups is None else np.asarray(groups)
    if g.shape != (n_all,):
        raise ValueError(f"groups must have one entry per comparison: {g.size} vs {n_all}")
    ok = ~fail
    out: dict[str, Any] = {"n": int(ok.sum()), "n_failed": int(fail.sum()), "n_speeches": int(np.unique(g[ok]).size),
                           "ci_level": 1 - alpha, "n_boot": n_boot, "notes": []}
    if not ok.any():
        out["notes"].append("every verdict failed: no rate can be computed")
        for k in ("win_rate", "lc_win_rate", "flip_rate"):
            out[k], out[k + "_ci"] = None, [None, None]
        return out
    s, d, f, gg = np.asarray(raw)[ok], (lp - lr)[ok], fl[ok].astype(np.float64), g[ok]
    lc = lc_win_rate(s, lp[ok], lr[ok], l2=l2)
    if lc.note:
        out["notes"].append(f"lc_win_rate: {lc.note}")
    boot = {"n_boot": n_boot, "seed": seed, "alpha": alpha, "vectorized": True}
    out.update({
        "win_rate": win_rate(s),
        "win_rate_ci": _ci(bootstrap_by_group(weighted_mean, gg, s, **boot)),
        "lc_win_rate": _num(lc.value),
        "lc_win_rate_ci": _ci(bootstrap_by_group(lambda a, b, weights: weighted_lc_win_rate(a, b, weights=weights, l2=l2),
                                                 gg, s, d, **boot)) if np.isfinite(lc.value) else [None, None],
        "flip_rate": float(f.mean()),
        "flip_rate_ci": _ci(bootstrap_by_group(weighted_mean, gg, f, **boot)),
        "wins": int(np.sum(s == 1)), "ties": int(np.sum(s == 0.5)), "losses": int(np.sum(s == 0)),
        "length_coef": lc.coef_length, "length_sd": lc.length_sd,
        "mean_len_policy": float(lp[ok].mean()), "mean_len_reference": float(lr[ok].mean()),
    })
    return out


def summarize_outcomes(outcomes: Sequence[PairOutcome], len_policy: Sequence[float],
                       len_reference: Sequence[float], **kw: Any) -> dict[str, Any]:
    """``summarize`` fed straight from ``combine_orders`` results (failures = outcomes with no score)."""
    return summarize([o.score for o in outcomes], len_policy, len_reference, [o.flipped for o in outcomes], **kw)
