"""Agreement statistics against hand-worked tables and Krippendorff's published example; the loaders
and the ``agree`` command on small files."""

import json
import math

import numpy as np
import pytest
from click.testing import CliRunner

from psychocounsel.measures.agreement import (agreement_report, coincidence_matrix, cohen_kappa, confusion_matrix,
    krippendorff_alpha, percent_agreement)
from psychocounsel.evaluation.agree import compare_files, read_labels
from psychocounsel.cli import main
from psychocounsel.errors import InputError, UserError

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
    assert t.tolist() == [[20, 5], [10, 15]]
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


# -- files and the command ------------------------------------------------------------------------
def _files(tmp_path):
    judge = tmp_path / "judge.jsonl"
    rows = [{"id": f"p{i}", "verdict": v, "scores": {"safety": s}}
            for i, (v, s) in enumerate([("A", 5), ("B", 4), ("A", 2), ("tie", 5), ("A", 3), ("B", 1)])]
    judge.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    human = tmp_path / "human.csv"
    human.write_text("pair,label,safety\np0,A,5\np1,B,4\np2,B,2\np3,tie,4\np4,,3\np9,A,1\n")
    return judge, human


def test_compare_judge_file_with_human_csv(tmp_path):
    judge, human = _files(tmp_path)
    res = compare_files(judge, human, columns=["verdict"], column_b="label", key_b="pair", n_boot=100)
    r = res["columns"]["verdict"]
    # shared ids p0..p4; p4 has no human label -> 4 compared: A/A, B/B, A/B, tie/tie
    assert res["n_shared"] == 5 and r["n"] == 4 and r["n_missing"] == 1
    assert r["percent"] == 0.75
    # numbers in JSON and text in CSV are one label: "5" == 5
    res = compare_files(judge, human, columns=["scores.safety"], column_b="safety", key_b="pair", n_boot=0)
    assert res["columns"]["scores.safety"]["percent"] == pytest.approx(4 / 5)


def test_loader_errors_name_file_line_and_column(tmp_path):
    judge, human = _files(tmp_path)
    with pytest.raises(InputError, match=r"human\.csv:1 \(column 'id'\).*no id in key column 'id'.*pair, label"):
        read_labels(human, ["label"], key="id")
    dup = tmp_path / "dup.csv"
    dup.write_text("id,label\nx,1\ny,2\nx,3\n")
    with pytest.raises(InputError, match=r"dup\.csv:4 \(column 'id'\): duplicate id 'x' \(first at line 2\)"):
        read_labels(dup)
    with pytest.raises(InputError, match=r"judge\.jsonl:1 \(column 'label'\): no row has column 'label'"):
        read_labels(judge)
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": 1, "label": "a"}\n{"id": 2, "label": [1, 2]}\n')
    with pytest.raises(InputError, match=r"bad\.jsonl:2 \(column 'label'\): expected a label"):
        read_labels(bad)
    other = tmp_path / "other.csv"
    other.write_text("id,label\nq1,A\n")
    with pytest.raises(UserError, match="share no id"):
        compare_files(human, other, key="pair", key_b="id")
    # a field absent from some JSON rows (a failed judgment) is a missing label, not an error
    part = tmp_path / "part.jsonl"
    part.write_text('{"id": 1, "label": "a"}\n{"id": 2, "error": "unparseable"}\n')
    assert read_labels(part).labels["label"] == {"1": "a", "2": None}
    with pytest.raises(InputError, match="file not found"):
        read_labels(tmp_path / "nope.csv")


def test_agree_command(tmp_path):
    judge, human = _files(tmp_path)
    out = tmp_path / "agree.json"
    r = CliRunner().invoke(main, ["agree", str(judge), str(human), "--column", "verdict", "--column-b", "label",
                                  "--key-b", "pair", "--bootstrap", "100", "--out", str(out)])
    assert r.exit_code == 0, r.output
    assert "75.0%" in r.output and "shared ids" in r.output
    data = json.loads(out.read_text())
    assert data["columns"]["verdict"]["n"] == 4
    # a user mistake is one line and exit code 2
    r = CliRunner().invoke(main, ["agree", str(judge), str(human)])
    assert r.exit_code == 2 and "no row has column 'label'" in r.output and "Traceback" not in r.output
