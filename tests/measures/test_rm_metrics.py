import math

import numpy as np
import pytest

from psychocounsel.measures.rm_metrics import (
    accuracy,
    brier,
    ece,
    pair_accuracy,
    pair_outcomes,
    preference_metrics,
    reliability_bins,
    roc_auc,
    sigmoid,
)


def test_auc_with_ties_matches_mann_whitney_by_hand():
    # positives 0.4, 0.8; negatives 0.1, 0.4: pairs (0.4>0.1)=1, (0.4=0.4)=1/2, (0.8>0.1)=1, (0.8>0.4)=1
    assert roc_auc([0.1, 0.4, 0.4, 0.8], [0, 0, 1, 1]) == pytest.approx(3.5 / 4)
    assert roc_auc([1, 1, 1, 1], [0, 1, 0, 1]) == pytest.approx(0.5)  # all tied: a coin
    assert roc_auc([0.9, 0.1], [0, 1]) == 0.0
    assert math.isnan(roc_auc([0.3, 0.7], [1, 1]))  # one class: undefined, not 0.5


def test_ece_two_bins_by_hand():
    p, y = [0.2, 0.4, 0.6, 0.9], [0, 1, 1, 1]
    # bin [0, .5): mean p .3, frequency .5 -> |.2| * 2/4; bin [.5, 1]: mean p .75, frequency 1 -> |.25| * 2/4
    assert ece(p, y, n_bins=2) == pytest.approx(0.1 + 0.125)
    bins = reliability_bins(p, y, n_bins=2)
    assert bins["count"] == [2, 2] and bins["mean_prob"] == pytest.approx([0.3, 0.75])
    assert bins["frequency"] == pytest.approx([0.5, 1.0]) and bins["edges"] == [0, 0.5, 1]
    assert ece([1.0, 0.0], [1, 0], n_bins=10) == 0.0  # p = 1.0 falls in the last (closed) bin
    assert reliability_bins([0.05], [0], n_bins=4)["mean_prob"] == [0.05, None, None, None]


def test_brier_and_accuracy_by_hand():
    p, y = [0.2, 0.4, 0.6, 0.9], [0, 1, 1, 1]
    assert brier(p, y) == pytest.approx((0.04 + 0.36 + 0.16 + 0.01) / 4)
    assert accuracy(p, y) == pytest.approx(0.75)
    assert accuracy([0.5, 0.5], [0, 1]) == 0.0  # exactly 0.5 is no prediction
    with pytest.raises(ValueError, match="0 or 1"):
        brier([0.5], [2])
    with pytest.raises(ValueError, match="length"):
        brier([0.5, 0.1], [1])


def test_pairs_in_both_orders_by_hand():
    rc, rr = np.array([2.0, 1.0, 0.0, 0.0]), np.array([0.0, 0.0, 1.0, 0.0])  # margins 2, 1, -1, 0
    probs, labels = pair_outcomes(rc, rr)
    s = lambda x: 1 / (1 + math.exp(-x))
    assert probs == pytest.approx([s(2), s(1), s(-1), 0.5, s(-2), s(-1), s(1), 0.5])
    assert labels.tolist() == [1, 1, 1, 1, 0, 0, 0, 0]
    m = preference_metrics(rc, rr, n_boot=0)
    assert m["n_pairs"] == 4 and m["n_ties"] == 1
    assert m["accuracy"] == 0.5 == pair_accuracy(rc, rr)  # the tie counts as wrong (RewardBench)
    # positives {2, 1, -1, 0} vs negatives {-2, -1, 1, 0}: wins 4 + 3.5 + 1.5 + 2.5 of 16
    assert m["auc"] == pytest.approx(11.5 / 16)
    # both orders give the same Brier term (1 - s(d))^2
    assert m["brier"] == pytest.approx(np.mean([(1 - s(d)) ** 2 for d in (2, 1, -1, 0)]))
    # order of a file's columns cannot matter: swapping sides mirrors every metric
    swapped = preference_metrics(rr, rc, n_boot=0)
    assert swapped["brier"] == pytest.approx(np.mean([(1 - s(-d)) ** 2 for d in (2, 1, -1, 0)]))
    assert swapped["auc"] == pytest.approx(1 - 11.5 / 16)
    assert m["accuracy_ci"] is None


def test_symmetric_construction_makes_a_perfectly_calibrated_model_score_zero_ece():
    # margins of log(9): P = 0.9; 9 of 10 pairs right -> observed 0.9 in bin [.9, 1], 0.1 in [.1, .2)
    d = np.full(10, math.log(9.0))
    d[0] = -d[0]
    m = preference_metrics(d, np.zeros(10), n_boot=0)
    assert m["accuracy"] == pytest.approx(0.9) and m["ece"] == pytest.approx(0.0, abs=1e-12)


def test_auc_on_margins_survives_sigmoid_saturation():
    # margins of 50 and 60 both round to P = 1.0, but the ranking still separates them
    m = preference_metrics([60.0, -50.0], [0.0, 0.0], n_boot=0)
    assert m["auc"] == pytest.approx(3 / 4)  # pos {60, -50} vs neg {-60, 50}: 1 + 1 + 1 + 0 of 4
    assert sigmoid(np.array([800.0, -800.0])).tolist() == [1.0, 0.0]  # no overflow


def test_a_value_on_a_bin_edge_opens_that_bin():
    # 0.29 * 100 is 28.999999999999996 in floating point, so int(p * B) put 0.29 in bin 28; the edge
    # 29/100 is the same double as the literal 0.29, so comparing with the edges puts it in bin 29.
    for p, n_bins, want in [(0.29, 100, 29), (0.57, 100, 57), (0.58, 100, 58), (0.58, 50, 29)]:
        count = reliability_bins([p], [1], n_bins=n_bins)["count"]
        assert count.index(1) == want, (p, n_bins)
    # every edge i/B (as a double) opens bin i, for every bin count up to 200; 1.0 stays in the last bin
    for n_bins in range(1, 201):
        edges = np.arange(n_bins + 1) / n_bins
        count = reliability_bins(edges, np.ones(n_bins + 1), n_bins=n_bins)["count"]
        assert count == [1] * (n_bins - 1) + [2], n_bins
    # the ECE moves with it: 0.285 and 0.29 are two bins, not one bin of mean 0.2875 and frequency 0.5
    # bin 28: |0 - 0.285| * 1/2; bin 29: |1 - 0.29| * 1/2
    assert ece([0.285, 0.29], [0, 1], n_bins=100) == pytest.approx((0.285 + 0.71) / 2)
