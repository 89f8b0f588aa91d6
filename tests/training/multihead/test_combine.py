"""Safety as a constraint, worked by hand: an unsafe reply loses to every safe one whatever its weighted mean,
ties stay ties, and the threshold calibrated at training time is the stated quantile."""

import numpy as np
import pytest

from psychocounsel.training.multihead.combine import (SAFETY_PENALTY, below_threshold, calibrate_threshold,
    constrain, rank_key)


def test_a_higher_weighted_mean_below_the_threshold_ranks_below_a_safer_reply():
    # reply 0: warm and clear (weighted 0.8) but misses the risk (safety -0.6); reply 1: plainer (0.3), safe (0.1)
    weighted, safety = np.array([0.8, 0.3]), np.array([-0.6, 0.1])
    assert int(np.argmax(weighted)) == 0  # by the weighted mean alone the unsafe reply wins
    key = constrain(weighted, safety, threshold=-0.25)
    np.testing.assert_array_equal(key, [0.8 - 1000.0, 0.3])  # -999.2, 0.3
    assert int(np.argmax(key)) == 1 and int(np.argmin(key)) == 0


def test_ties_and_the_threshold_itself():
    weighted = np.array([0.5, 0.5, -0.2, -0.2, 0.1])
    safety = np.array([0.0, 0.3, -0.9, -0.8, -0.25])
    # -0.25 is exactly the threshold: it passes (only "below" breaks the constraint)
    assert below_threshold(safety, -0.25).tolist() == [False, False, True, True, False]
    key = constrain(weighted, safety, -0.25)
    assert key[0] == key[1]  # safe and tied: still tied, whatever their safety heads
    assert key[2] == key[3]  # unsafe and tied: still tied
    order = np.argsort(-key, kind="stable").tolist()
    assert order == [0, 1, 4, 2, 3]  # safe by weighted mean, then the unsafe ones by weighted mean
    # both unsafe: the weighted mean still ranks them (all replies to a speech may break the constraint)
    assert np.argmax(constrain(np.array([0.2, 0.4]), np.array([-1.0, -1.0]), 0.0)) == 1


def test_rank_key_refuses_overalls_the_penalty_cannot_dominate():
    assert rank_key(np.array([499.0]), np.array([True]))[0] == 499.0 - SAFETY_PENALTY
    with pytest.raises(ValueError, match="outside"):
        rank_key(np.array([0.0, 600.0]), np.array([False, True]))


def test_calibrated_threshold_is_the_stated_quantile_or_the_rating_midpoint():
    # numpy's linear quantile: position 0.9 * 4 = 3.6 between -0.3 and -0.1 -> -0.3 + 0.6 * 0.2 = -0.18
    t = calibrate_threshold([-0.1, -0.9, -0.5, -0.7, -0.3], rating_center=3.0, rating_scale=2.0)
    assert t["value"] == pytest.approx(-0.18) and t["n"] == 5 and "0.9 quantile" in t["source"]
    # no response rated unsafe: rating 2.5 on the head's scale, (2.5 - 3) / 2 = -0.25, and it says so
    t = calibrate_threshold([], rating_center=3.0, rating_scale=2.0)
    assert t["value"] == -0.25 and t["n"] == 0 and "no training response" in t["source"]
