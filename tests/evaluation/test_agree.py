"""The ``agree`` command and its label files: loaders, id matching, --order, one-line errors."""

import json

import pytest
from click.testing import CliRunner

from psychocounsel.cli import main
from psychocounsel.errors import InputError, UserError
from psychocounsel.evaluation.agree import compare_files, read_labels
from psychocounsel.measures.agreement import agreement_report


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


# -- --order: the rank of text labels -------------------------------------------------------------
A_SEV = ["low", "mid", "high", "low", "mid", "high", "mid", "low"]
B_SEV = ["low", "high", "high", "mid", "mid", "mid", "mid", "low"]
CODE = {"low": 1, "mid": 2, "high": 3}


def _severity_files(tmp_path, b_labels=B_SEV):
    a = tmp_path / "a.csv"
    a.write_text("id,label\n" + "".join(f"s{i},{v}\n" for i, v in enumerate(A_SEV)))
    b = tmp_path / "b.jsonl"
    b.write_text("".join(json.dumps({"id": f"s{i}", "label": v}) + "\n" for i, v in enumerate(b_labels)))
    return a, b


def test_order_ranks_text_labels_for_ordinal_alpha(tmp_path):
    a, b = _severity_files(tmp_path)
    # without an order, text labels would rank alphabetically (high < low < mid): refused, fix named
    with pytest.raises(UserError, match=r"a\.csv vs .*b\.jsonl \(column 'label'\).*ordinal.*--order"):
        compare_files(a, b, level="ordinal", n_boot=0)
    res = compare_files(a, b, level="ordinal", order=["low", "mid", "high"], n_boot=0)["columns"]["label"]
    numeric = agreement_report([CODE[x] for x in A_SEV], [CODE[x] for x in B_SEV], level="ordinal", n_boot=0)
    assert res["labels"] == ["low", "mid", "high"]
    assert res["alpha"] == pytest.approx(numeric["alpha"])
    # order entries are read as the files' cells are: "3" in --order is the number 3 of a 1-5 column
    na, nb = tmp_path / "na.csv", tmp_path / "nb.csv"
    for path, labels in ((na, A_SEV), (nb, B_SEV)):
        path.write_text("id,label\n" + "".join(f"s{i},{CODE[v]}\n" for i, v in enumerate(labels)))
    rev = compare_files(na, nb, level="ordinal", order=["3", "2", "1"], n_boot=0)["columns"]["label"]
    assert rev["labels"] == [3, 2, 1]
    assert rev["alpha"] == pytest.approx(numeric["alpha"])  # ordinal alpha does not care which end is high
    # numbers rank themselves: no order needed
    assert compare_files(na, nb, level="ordinal", n_boot=0)["columns"]["label"]["alpha"] == pytest.approx(
        numeric["alpha"])


def test_unknown_label_and_bad_order_are_one_line_errors(tmp_path):
    a, b = _severity_files(tmp_path, b_labels=B_SEV[:2] + ["hgih"] + B_SEV[3:])
    # line 3 of b.jsonl holds s2's typo
    with pytest.raises(InputError, match=r"b\.jsonl:3 \(column 'label'\): label 'hgih' is not in --order "
                                         r"\(low, mid, high\)"):
        compare_files(a, b, level="ordinal", order=["low", "mid", "high"], n_boot=0)
    for bad, why in ([["low", "low", "high"]], "twice"), ([["low", "", "high"]], "empty"), ([[]], "empty"):
        with pytest.raises(UserError, match=f"--order.*{why}"):
            compare_files(a, b, level="ordinal", order=bad[0], n_boot=0)


def test_agree_command_order_option(tmp_path):
    a, b = _severity_files(tmp_path)
    r = CliRunner().invoke(main, ["agree", str(a), str(b), "--level", "ordinal", "--order", "low, mid,high",
                                  "--bootstrap", "0"])
    assert r.exit_code == 0, r.output
    r = CliRunner().invoke(main, ["agree", str(a), str(b), "--level", "ordinal"])
    assert r.exit_code == 2 and "--order" in r.output and "Traceback" not in r.output
    assert len(r.output.strip().splitlines()) == 1
    r = CliRunner().invoke(main, ["agree", str(a), str(b), "--level", "ordinal", "--order", "low,mid"])
    assert r.exit_code == 2 and "'high' is not in --order" in r.output and "a.csv:4" in r.output
    assert "--order" in CliRunner().invoke(main, ["agree", "--help"]).output


def _session_files(tmp_path):
    """Four judged sessions (two clients x two policies) and an export where two experts rated both pairs."""
    judged = tmp_path / "sessions.jsonl"
    rows = [{"session_id": "s1", "policy": "good", "rubric": {"scores": {"risk": 6, "alliance": 5}}},
            {"session_id": "s2", "policy": "bad", "rubric": {"scores": {"risk": 2, "alliance": 3}}},
            {"session_id": "s3", "policy": "good", "rubric": {"scores": {"risk": 5, "alliance": 5}}},
            {"session_id": "s4", "policy": "bad", "rubric": None}]  # a failed judgment: missing, not a score
    judged.write_text("".join(json.dumps(r) + "\n" for r in rows))
    export = tmp_path / "ratings.csv"
    export.write_text("source_key,annotator,good_risk_rating,bad_risk_rating,good_alliance_rating,bad_alliance_rating\n"
                      "s1/s2,x,6,2,4,3\n"
                      "s3/s4,x,5,1,5,\n"
                      "s1/s2,y,5,2,5,3\n")
    return judged, export


def test_session_ratings_judge_against_each_expert_by_hand(tmp_path):
    from psychocounsel.evaluation.agree import compare_session_ratings

    judged, export = _session_files(tmp_path)
    res = compare_session_ratings(judged, export, n_boot=100)
    assert (res["n_ids_a"], res["n_ids_b"], res["n_shared"]) == (4, 3, 4)
    risk, alliance = res["columns"]["risk"], res["columns"]["alliance"]
    # risk units (judge, expert): (6,6) (2,2) (5,5) (None,1) (6,5) (2,2): 5 pairs, 4 exact
    assert (risk["n"], risk["n_missing"]) == (5, 1) and risk["percent"] == pytest.approx(4 / 5)
    assert risk == {**agreement_report([6, 2, 5, None, 6, 2], [6, 2, 5, 1, 5, 2], level="ordinal", n_boot=100),
                    "column_b": "experts"}
    # alliance: (5,4) (3,3) (5,5) (None,None) (5,5) (3,3): 5 pairs, 4 exact
    assert (alliance["n"], alliance["percent"]) == (5, pytest.approx(4 / 5))
    r = CliRunner().invoke(main, ["agree", "--sessions", str(judged), str(export), "--bootstrap", "50"])
    assert r.exit_code == 0, r.output
    out = " ".join(r.output.split())
    assert "session judges vs experts: 4 sessions, 3 rated pairs" in out and "│ risk vs" in out


def test_session_ratings_errors_name_the_file_line_and_column(tmp_path):
    from psychocounsel.evaluation.agree import compare_session_ratings

    judged, export = _session_files(tmp_path)
    export.write_text(export.read_text().replace("s3/s4", "s3/s9"))
    with pytest.raises(InputError, match=r"ratings.csv.*3.*session 's9' is not in"):
        compare_session_ratings(judged, export, n_boot=10)
    export.write_text("source_key,annotator,good_risk_rating\ns1/s2,x,6\n")
    with pytest.raises(InputError, match=r"no column 'good_alliance_rating'"):
        compare_session_ratings(judged, export, n_boot=10)
    with pytest.raises(InputError, match=r"not a session judging's row"):
        compare_session_ratings(export, export, n_boot=10)
