"""How a per-principle reward model turns its heads into one "overall": a weighted mean (``weighted``), or that
mean with safety as a constraint (``safety_constraint``). Pure numpy: the scorer, the training recipe and online
DPO's best/worst choice all read it.

Why a constraint: in a weighted mean a reply that is unsafe (say, it misses a suicide risk) can buy its way back
with warmth and clarity; no weight on safety short of "safety only" stops that, and raising it blunts every other
principle. A clinician does not trade safety against empathy: an unsafe reply is out, and among the rest the
weighted mean decides. ``safety_constraint`` says exactly that: a reply whose safety head is below
``safety_threshold`` loses to every reply at or above it, whatever its other heads; within each side the weighted
mean ranks as before.
"""

from __future__ import annotations

from typing import Literal, Sequence

import numpy as np

Combine = Literal["weighted", "safety_constraint"]
COMBINE_MODES: tuple[str, ...] = ("weighted", "safety_constraint")
SAFETY = "safety"

# The lexicographic order as one number: overall - PENALTY * (safety < threshold). Heads are trained towards
# ratings mapped onto -1..1, so a weighted mean lies within a few units of 0; PENALTY / 2 = 500 is far outside
# it, and ``constrain`` checks it, so every reply above the threshold scores > -500 and every one below < -500.
# 1e3 rather than a larger number keeps float64's resolution (~1e-13 at 1e3) far below any gap that matters.
SAFETY_PENALTY = 1000.0

# Calibrating the threshold at training time: the judge rates safety 1-5; 1 and 2, below the scale's middle,
# are the replies it found unsafe. The threshold is the THRESHOLD_QUANTILE quantile of the safety head on
# the training responses rated that low: 90% of the replies the judge called unsafe fall below it.
UNSAFE_RATING = 2.0
THRESHOLD_QUANTILE = 0.9
# Without any such response, the rating half-way between "unsafe" (2) and "adequate" (3), on the head's scale.
FALLBACK_RATING = 2.5


def below_threshold(safety: np.ndarray, threshold: float) -> np.ndarray:
    """True where a reply breaks the constraint. A reply exactly at the threshold passes it."""
    return np.asarray(safety, dtype=np.float64) < threshold


def rank_key(weighted: np.ndarray, below: np.ndarray) -> np.ndarray:
    """``weighted - SAFETY_PENALTY * below``: sorting by it is sorting by (passes the constraint, weighted
    mean). Ties stay ties on either side."""
    w = np.asarray(weighted, dtype=np.float64)
    if w.size and np.max(np.abs(w)) >= SAFETY_PENALTY / 2:
        raise ValueError(f"a weighted overall of {np.max(np.abs(w)):.4g} is outside +-{SAFETY_PENALTY / 2:g}: "
                         "the safety constraint could not rank it (is this a trained per-principle model?)")
    return w - SAFETY_PENALTY * np.asarray(below, dtype=bool)


def constrain(weighted: np.ndarray, safety: np.ndarray, threshold: float) -> np.ndarray:
    """The ``safety_constraint`` overall: ``rank_key`` with the replies whose safety head is below
    ``threshold``."""
    return rank_key(weighted, below_threshold(safety, threshold))


def rating_to_score(rating: float, rating_center: float, rating_scale: float) -> float:
    """A 1-5 rating on a head's scale (the inverse of ``rating = center + scale * score``)."""
    return (rating - rating_center) / rating_scale


def calibrate_threshold(unsafe_scores: Sequence[float], rating_center: float, rating_scale: float,
                        quantile: float = THRESHOLD_QUANTILE) -> dict[str, float | int | str]:
    """The safety threshold and where it came from: the ``quantile`` of the safety head over responses the
    judge rated <= UNSAFE_RATING, or, with none, FALLBACK_RATING on the head's scale (said in ``source``)."""
    s = np.asarray(unsafe_scores, dtype=np.float64)
    if s.size:
        return {"value": float(np.quantile(s, quantile)), "n": int(s.size), "source": (
            f"{quantile:g} quantile of the safety head on {s.size} training responses rated safety <= "
            f"{UNSAFE_RATING:g}")}
    return {"value": rating_to_score(FALLBACK_RATING, rating_center, rating_scale), "n": 0, "source": (
        f"rating {FALLBACK_RATING:g} on the head's scale: no training response was rated safety <= "
        f"{UNSAFE_RATING:g}")}
