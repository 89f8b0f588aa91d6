"""Agreement statistics against hand-worked tables and Krippendorff's published example."""

import json
import math
from decimal import Decimal
from fractions import Fraction

import numpy as np
import pytest

from psychocounsel.measures.agreement import (
    agreement_report,
    cohen_kappa,
    coincidence_matrix,
    confusion_matrix,
    krippendorff_alpha,
    percent_agreement,
)

# Two raters, 50 items, labels yes/no:
#                 b = yes   b = no
#     a = yes        20         5      (a says yes 25 times)
#     a = no         10        15      (a says no 25 times)
#                 (b: yes 30, no 20)
A_YN = ["yes"] * 25 + ["no"] * 25
B_YN = ["yes"] * 20 + ["no"] * 5 + ["yes"] * 10 + ["no"] * 15


def test_percent_and_kappa_by_hand():
    # p_o = (20 + 15) / 50 = 0.7
    # p_e = P(a yes) P(b yes) + P(a no) P(b no) = 0.5 * 0.6 + 0.5 * 0.4 = 0.5
    # kappa = (0.7 - 0.5) / (1 - 0.5) = 0.4
    assert percent_agreement(A_YN, B_YN) == pytest.approx(0.7)
    assert cohen_kappa(A_YN, B_YN) == pytest.approx(0.4)
    labels, t = confusion_matrix(A_YN, B_YN, labels=["yes", "no"])
    assert labels == ["yes", "no"] and t.tolist() == [[20, 5], [10, 15]]
    # kappa is symmetric in the raters
    assert cohen_kappa(B_YN, A_YN) == pytest.approx(0.4)


def test_weighted_kappa_by_hand():
    a, b = [1, 2, 3, 1], [1, 3, 3, 2]
    # table cells (a, b): (1,1) (2,3) (3,3) (1,2); margins a: 1:2, 2:1, 3:1; b: 1:1, 2:1, 3:2; N = 4
    # quadratic: observed sum (i-j)^2 = 0 + 1 + 0 + 1 = 2
    #   expected sum a_i b_j (i-j)^2 / N = [2(1*1 + 2*4) + 1(1*1 + 2*1) + 1(1*4 + 1*1)] / 4 = 26/4 = 6.5
    #   kappa = 1 - 2 / 6.5 = 9/13
    assert cohen_kappa(a, b, weights="quadratic") == pytest.approx(9 / 13)
    # linear: observed 2; expected [2(1*1 + 2*2) + 1(1*1 + 2*1) + 1(1*2 + 1*1)] / 4 = 16/4 = 4; kappa = 1 - 2/4
    assert cohen_kappa(a, b, weights="linear") == pytest.approx(0.5)
    # unweighted: p_o = 2/4; p_e = (2*1 + 1*1 + 1*2) / 16 = 5/16; kappa = (8/16 - 5/16) / (11/16) = 3/11
    assert cohen_kappa(a, b) == pytest.approx(3 / 11)


def test_alpha_by_hand_two_raters_nominal_and_interval():
    # Two raters, no missing: each item adds 1 to o[a,b] and 1 to o[b,a] (m_u - 1 = 1).
    # yes/no table above: o_yy = 40, o_nn = 30, o_yn = o_ny = 15; n_yes = 55, n_no = 45, n = 100
    # alpha = 1 - (n - 1) * sum_{c!=k} o_ck / sum_{c!=k} n_c n_k = 1 - 99 * 30 / (2 * 55 * 45) = 1 - 2970/4950 = 0.4
    assert krippendorff_alpha(list(zip(A_YN, B_YN))) == pytest.approx(0.4)
    # interval, a = [1, 2, 3], b = [1, 2, 4]: o_11 = 2, o_22 = 2, o_34 = o_43 = 1; n_1 = n_2 = 2, n_3 = n_4 = 1, n = 6
    # observed sum o (c-k)^2 = 2 * 1 = 2
    # expected sum n_c n_k (c-k)^2 = 2 * (4*1 + 2*4 + 2*9 + 2*1 + 2*4 + 1*1) = 82
    # alpha = 1 - 5 * 2 / 82 = 36/41
    assert krippendorff_alpha([[1, 1], [2, 2], [3, 4]], level="interval") == pytest.approx(36 / 41)


def test_alpha_by_hand_three_raters_with_missing():
    # item 1 (a, a, a): m = 3, o_aa += 3*2/2 = 3;  item 2 (a, b, -): o_ab = o_ba = 1;  item 3 (b, b, b): o_bb += 3
    # item 4 (b, -, -): one value, not pairable.  n_a = 4, n_b = 4, n = 8
    # alpha = 1 - 7 * 2 / (2 * 4 * 4) = 1 - 14/32 = 0.5625
    data = [["a", "a", "a"], ["a", "b", None], ["b", "b", "b"], ["b", None, None]]
    assert krippendorff_alpha(data) == pytest.approx(0.5625)
    values, o = coincidence_matrix(data)
    assert values == ["a", "b"] and o.tolist() == [[3, 1], [1, 3]]


# Krippendorff (2011), "Computing Krippendorff's Alpha-Reliability", section C: 4 observers, 12 units,
# values 1-5, missing data (None).
KRIPP = {
    "A": [1, 2, 3, 3, 2, 1, 4, 1, 2, None, None, None],
    "B": [1, 2, 3, 3, 2, 2, 4, 1, 2, 5, None, 3],
    "C": [None, 3, 3, 3, 2, 3, 4, 2, 2, 5, 1, None],
    "D": [1, 2, 3, 3, 2, 4, 4, 1, 2, 5, 1, None],
}


def test_krippendorff_published_example():
    data = list(zip(*KRIPP.values()))
    # Coincidence matrix by hand (x3 to keep integers). Unit 6 = (1, 2, 3, 4) adds 1/3 to every
    # off-diagonal cell among 1..4; unit 8 = (1, 1, 2, 1) adds 2 to o_11 and 1 to o_12, o_21;
    # unit 2 = (2, 3, 2, 2) adds 2 to o_22 and 1 to o_23, o_32; unit 12 has one value (not pairable).
    values, o = coincidence_matrix(data)
    assert values == [1, 2, 3, 4, 5]
    assert np.allclose(o * 3, [[21, 4, 1, 1, 0],
                               [4, 30, 4, 1, 0],
                               [1, 4, 24, 1, 0],
                               [1, 1, 1, 12, 0],
                               [0, 0, 0, 0, 9]])
    # margins n_c = 9, 13, 10, 5, 3; n = 40
    # nominal: off-diagonal o sum = 8; sum_{c!=k} n_c n_k = 40^2 - (81+169+100+25+9) = 1216
    #   alpha = 1 - 39 * 8 / 1216 = 0.7434  (published: 0.743)
    assert krippendorff_alpha(data, "nominal") == pytest.approx(1 - 39 * 8 / 1216)
    assert round(krippendorff_alpha(data, "nominal"), 3) == 0.743
    # interval: observed sum o (c-k)^2 = 2 * (4/3*1 + 1/3*4 + 1/3*9 + 4/3*1 + 1/3*4 + 1/3*1) = 52/3
    #   expected sum n_c n_k (c-k)^2 = 2 * (117+360+405+432+130+260+351+50+120+15) = 4480
    #   alpha = 1 - 39 * (52/3) / 4480 = 0.8491  (published: 0.849)
    assert krippendorff_alpha(data, "interval") == pytest.approx(1 - 39 * 52 / 3 / 4480)
    assert round(krippendorff_alpha(data, "interval"), 3) == 0.849
    # ordinal: published 0.815 (not worked by hand here)
    assert round(krippendorff_alpha(data, "ordinal"), 3) == 0.815


def test_ordinal_alpha_uses_rank_order_only():
    # relabelling ordered categories keeps ordinal alpha (it depends on ranks, not distances)
    data = list(zip(*KRIPP.values()))
    names = {1: "v.low", 2: "low", 3: "mid", 4: "high", 5: "v.high"}
    renamed = [[None if v is None else names[v] for v in row] for row in data]
    order = ["v.low", "low", "mid", "high", "v.high"]
    assert krippendorff_alpha(renamed, "ordinal", values=order) == pytest.approx(krippendorff_alpha(data, "ordinal"))


def test_undefined_values_are_nan_with_a_reason_never_a_crash():
    same = ["safe"] * 10
    assert percent_agreement(same, same) == 1.0
    assert math.isnan(cohen_kappa(same, same))
    assert math.isnan(krippendorff_alpha(list(zip(same, same))))
    rep = agreement_report(same, same, n_boot=50)
    assert rep["percent"] == 1.0 and rep["kappa"] is None and rep["alpha"] is None
    assert rep["kappa_ci"] == [None, None]
    assert any("kappa undefined" in n and "'safe'" in n for n in rep["notes"])
    assert any("alpha undefined" in n for n in rep["notes"])
    json.dumps(rep, allow_nan=False)  # the report is strict JSON


def test_bad_input_is_a_clear_error():
    with pytest.raises(ValueError, match="no item carries a label from both raters"):
        cohen_kappa([], [])
    with pytest.raises(ValueError, match="no item carries a label from both raters"):
        percent_agreement([None, "a"], ["b", None])
    with pytest.raises(ValueError, match="different numbers of items"):
        percent_agreement(["a"], ["a", "b"])
    with pytest.raises(ValueError, match="no items"):
        krippendorff_alpha([])
    with pytest.raises(ValueError, match="'c' is not among labels"):
        cohen_kappa(["a", "c"], ["a", "b"], labels=["a", "b"])
    with pytest.raises(ValueError, match="numeric labels"):
        krippendorff_alpha([["x", "y"]], level="interval")
    with pytest.raises(ValueError, match="level must be"):
        krippendorff_alpha([[1, 2]], level="ratio")


def test_report_intervals_and_missing_items():
    rng = np.random.default_rng(0)
    truth = rng.integers(1, 6, 300)
    a = list(truth)
    b = [int(np.clip(t + rng.choice([-1, 0, 0, 0, 1]), 1, 5)) for t in truth]
    a[:7] = [None] * 7
    rep = agreement_report(a, b, level="ordinal", n_boot=500)
    assert rep["n"] == 293 and rep["n_missing"] == 7
    for k in ("percent", "kappa", "alpha"):
        lo, hi = rep[k + "_ci"]
        assert lo < rep[k] < hi
    assert rep["alpha"] > rep["kappa"]  # near misses count as near under ordinal alpha, as misses under kappa
    assert rep == agreement_report(a, b, level="ordinal", n_boot=500)  # seeded


# -- label types and order ------------------------------------------------------------------------
# Two raters, five items: (1,2) (2,2) (3,3) (4,5) (1,1). Coincidences: o_11 = 2, o_12 = o_21 = 1, o_22 = 2,
# o_33 = 2, o_45 = o_54 = 1; margins n_1..n_5 = 3, 3, 2, 1, 1; n = 10.
# interval: observed sum o (c-k)^2 = 4 (the four off-diagonal cells, each 1 apart)
#   expected sum n_c n_k (c-k)^2 = 2 * (9 + 24 + 27 + 48 + 6 + 12 + 27 + 2 + 8 + 1) = 328
#   alpha = 1 - 9 * 4 / 328 = 73/82 = 0.890244
FIVE = [[1, 2], [2, 2], [3, 3], [4, 5], [1, 1]]


@pytest.mark.parametrize("cast", [int, float, np.int64, np.int32, np.uint8, np.float64, np.float32, Decimal, Fraction],
                         ids=lambda c: c.__name__)
def test_interval_alpha_takes_any_numeric_label_type(cast):
    data = [[cast(v) for v in row] for row in FIVE]
    assert krippendorff_alpha(data, "interval") == pytest.approx(73 / 82)
    a, b = [r[0] for r in data], [r[1] for r in data]
    assert agreement_report(a, b, level="interval", n_boot=0)["alpha"] == pytest.approx(73 / 82)


def test_numpy_arrays_go_straight_in():
    arr = np.array(FIVE)
    assert krippendorff_alpha(arr, "interval") == pytest.approx(73 / 82)
    assert agreement_report(arr[:, 0], arr[:, 1], level="interval", n_boot=0)["alpha"] == pytest.approx(73 / 82)
    # a float array's NaN is a missing label whatever the float width, as a Python float NaN is
    half = np.array([[1, 2], [2, 2], [3, 3], [4, 5], [1, 1], [5, np.nan]], dtype=np.float32)
    assert krippendorff_alpha(half, "interval") == pytest.approx(73 / 82)
    rep = agreement_report(half[:, 0], half[:, 1], level="interval", n_boot=0)
    assert rep["n_missing"] == 1 and rep["alpha"] == pytest.approx(73 / 82)
    # numbers of mixed types are one ordered scale: ordinal alpha equals the all-int one
    mixed = [[np.int64(1), 2.0], [Decimal(2), 2], [3, np.float32(3)], [Fraction(4), 5], [1, 1]]
    assert krippendorff_alpha(mixed, "ordinal") == pytest.approx(krippendorff_alpha(FIVE, "ordinal"))


def test_interval_alpha_still_refuses_what_is_not_a_number():
    for bad in (True, np.bool_(True), "3", complex(1, 1)):
        with pytest.raises(ValueError, match="interval alpha needs numeric labels"):
            krippendorff_alpha([[bad, 1], [2, 2]], "interval")
    with pytest.raises(ValueError, match="finite"):
        krippendorff_alpha([[float("inf"), 1], [2, 2]], "interval")


def test_text_labels_need_an_explicit_order_for_ordinal_alpha_and_weighted_kappa():
    a, b = ["low", "mid", "high", "low"], ["low", "high", "high", "mid"]
    # alphabetical order (high < low < mid) would be a silent wrong scale: refused, with the fix named
    with pytest.raises(ValueError, match=r"ordinal alpha.*order.*values="):
        krippendorff_alpha(list(zip(a, b)), "ordinal")
    with pytest.raises(ValueError, match=r"weighted kappa.*order.*labels="):
        cohen_kappa(a, b, weights="linear")
    with pytest.raises(ValueError, match=r"ordinal alpha.*order.*labels="):
        agreement_report(a, b, level="ordinal", n_boot=0)
    # given the order, they are the numbers of the same data coded 1 < 2 < 3
    order = ["low", "mid", "high"]
    code = {"low": 1, "mid": 2, "high": 3}
    na, nb = [code[x] for x in a], [code[x] for x in b]
    assert krippendorff_alpha(list(zip(a, b)), "ordinal", values=order) == pytest.approx(
        krippendorff_alpha(list(zip(na, nb)), "ordinal"))
    assert cohen_kappa(a, b, labels=order, weights="linear") == pytest.approx(cohen_kappa(na, nb, weights="linear"))
    rep = agreement_report(a, b, level="ordinal", labels=order, n_boot=0)
    assert rep["labels"] == order
    assert rep["alpha"] == pytest.approx(agreement_report(na, nb, level="ordinal", n_boot=0)["alpha"])
    # nominal statistics do not depend on an order, so text labels need none
    assert cohen_kappa(a, b) == pytest.approx(cohen_kappa(na, nb))
    assert krippendorff_alpha(list(zip(a, b))) == pytest.approx(krippendorff_alpha(list(zip(na, nb))))


def test_alpha_report_interval_is_the_plain_bootstrap_of_alpha():
    """Many raters with gaps: the vectorised interval equals alpha recomputed on each resample by the plain
    function (the same seeded draws); n counts only pairable items, and grouping draws items together."""
    from psychocounsel.measures.agreement import alpha_report
    from psychocounsel.measures.bootstrap import bootstrap_by_group

    rng = np.random.default_rng(1)
    data = [[int(v) if v > 0 else None for v in rng.integers(0, 6, size=3)] for _ in range(40)]
    rep = alpha_report(data, "ordinal", [1, 2, 3, 4, 5], n_boot=300, seed=4)
    pairable = [row for row in data if sum(v is not None for v in row) >= 2]
    assert rep["n"] == rep["n_units"] == len(pairable) < len(data)
    assert rep["alpha"] == pytest.approx(krippendorff_alpha(data, "ordinal", [1, 2, 3, 4, 5]))
    rows = np.empty(len(pairable), dtype=object)
    rows[:] = pairable
    lo, hi = bootstrap_by_group(lambda r: krippendorff_alpha(list(r), "ordinal", [1, 2, 3, 4, 5]), None, rows,
                                n_boot=300, seed=4)
    assert rep["alpha_ci"] == pytest.approx([lo, hi])
    # Units in groups (an item's two responses) are drawn together, as bootstrap_by_group draws groups.
    groups = [i // 2 for i in range(len(pairable))]
    grouped = alpha_report(pairable, "ordinal", [1, 2, 3, 4, 5], groups=groups, n_boot=300, seed=4)
    assert grouped["n"] == len(set(groups)) and grouped["n_units"] == len(pairable)
    lo, hi = bootstrap_by_group(lambda r: krippendorff_alpha(list(r), "ordinal", [1, 2, 3, 4, 5]), groups, rows,
                                n_boot=300, seed=4)
    assert grouped["alpha_ci"] == pytest.approx([lo, hi])
    assert alpha_report([[None, 1]], n_boot=10)["alpha"] is None  # nothing pairable: no figure, no crash
