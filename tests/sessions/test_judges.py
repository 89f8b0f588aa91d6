"""The session judges on the fake server: a list-giving policy that skips safety scores lower than a reflective one,
with intervals that do not overlap; reruns cost no call; unreadable replies are recorded failures."""

import json

import pytest
from session_transcripts import write_run

from psychocounsel.rubric.score import JudgeParseError
from psychocounsel.sessions.judge_config import JudgeSessionsConfig
from psychocounsel.sessions.judges import judge_sessions, turn_summary
from psychocounsel.sessions.report_views import (
    build_session_leaderboard,
    write_session_report,
)
from psychocounsel.sessions.rubric import load_session_rubric
from psychocounsel.testing.fakeserver import fake_server


def judge_cfg(run, url, **kw):
    j = {"backend": "fake", "model": "judge"}
    return JudgeSessionsConfig(run_dir=str(run), backends={"fake": {"type": "openai", "base_urls": [url],
                                                                    "api_key_env": None, **kw.pop("backend", {})}},
                               turns=j, rubric=j, safety_flow=j, bootstrap={"n_boot": 400}, **kw)


@pytest.fixture(scope="module")
def judged(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("judged")
    out = {}
    with fake_server(latency=0.0) as srv:
        for policy in ("reflective", "advice_lists"):
            sj, counts = judge_sessions(judge_cfg(write_run(tmp / policy, policy), srv.base_url))
            results = write_session_report(sj)
            again, counts2 = judge_sessions(judge_cfg(tmp / policy, srv.base_url))
            out[policy] = {"results": results["policies"][policy], "counts": counts, "rerun": counts2, "dir": sj.dir}
            sj.close()
            again.close()
    return out


def above(a, b):
    """a's interval lies wholly above b's."""
    return a["ci"][0] > b["ci"][1]


def test_advice_lists_scores_lower_than_reflective_with_separate_intervals(judged):
    good, bad = judged["reflective"]["results"], judged["advice_lists"]["results"]
    assert above(good["rubric"]["mean"], bad["rubric"]["mean"])
    assert above(good["safety_flow"]["score"], bad["safety_flow"]["score"])
    assert above(good["turns"]["overall"]["mean"], bad["turns"]["overall"]["mean"])
    assert above(good["turns"]["safety"]["min"], bad["turns"]["safety"]["min"])
    # the deterministic checks agree: the list policy misses every disclosure, the reflective one none
    assert bad["safety"]["missed"]["rate"] == 1.0 and good["safety"]["missed"]["rate"] == 0.0
    assert good["safety"]["resources"]["rate"] == 1.0 and bad["safety"]["resources"]["rate"] == 0.0
    assert bad["safety_flow"]["red_failures"]["acknowledges"] == bad["safety"]["risk_sessions"] == 4


def test_every_item_is_judged_once_and_a_rerun_makes_no_call(judged):
    c, again = judged["reflective"]["counts"], judged["reflective"]["rerun"]
    assert (c["turn_judged"], c["rubric_judged"], c["flow_judged"]) == (48, 12, 12)  # 12 sessions x 4 turns
    assert c["calls_made"] == 72 and not any(v for k, v in c.items() if k.endswith("failed"))
    assert again["calls_made"] == 0 and again["turn_done_before"] == 48 and again["flow_done_before"] == 12


def test_report_files_and_leaderboard(judged, tmp_path):
    d = judged["reflective"]["dir"]
    for f in ("results.json", "sessions.jsonl", "report.html", "scores.png", "decay.png"):
        assert (d / f).is_file(), f
    rows = [json.loads(x) for x in (d / "sessions.jsonl").read_text().splitlines()]
    assert len(rows) == 12 and all(len(r["turn_checks"]) == 4 for r in rows)
    board = build_session_leaderboard([judged["advice_lists"]["dir"], d], tmp_path / "lb")
    assert [r["policy"] for r in board] == ["reflective", "advice_lists"]
    assert (tmp_path / "lb" / "leaderboard.html").is_file()


def test_unreadable_replies_are_recorded_failures_never_scores(tmp_path):
    run = write_run(tmp_path / "run", "reflective", n=1)
    # one call at a time: the first three requests are the first item's three attempts, all garbled
    with fake_server(latency=0.0, script="garble,garble,garble") as srv:
        cfg = judge_cfg(run, srv.base_url, backend={"concurrency": 1})
        sj, counts = judge_sessions(cfg)
        failed = sum(v for k, v in counts.items() if k.endswith("_failed"))
        assert failed == 1 and counts["calls_made"] == 3 + 5  # 4 turns + rubric + flow; one item took 3 calls
        recs = sj.collect()
        errors = [t["error"] for t in recs[0]["turns"].values() if t["scores"] is None]
        assert len(errors) == 1 and errors[0].count("parse:") == 3
        sj.close()


def test_turn_summary_by_hand():
    s = turn_summary([{"a": 4, "b": 2}, {"a": 2, "b": 2}])
    assert s["a"] == {"mean": 3.0, "min": 2, "below": 0.5}
    assert s["overall"] == {"mean": 2.5, "min": 2.0, "below": 0.5}  # turn overalls 3 and 2


def test_rubric_reply_is_read_strictly():
    r = load_session_rubric()
    ok = {k: 4 for k in r.keys}
    assert r.parse("chatter " + json.dumps({"rationale": "fine", **ok})).scores == ok
    for bad in ({**ok, "alliance": 7}, {**ok, "alliance": "four"}, {k: 4 for k in r.keys[1:]}, {**ok, "alliance": 2.5}):
        with pytest.raises(JudgeParseError):
            r.parse(json.dumps(bad))
    with pytest.raises(JudgeParseError):
        r.parse('{"clinical_competence": 3, "clinical_competence": 5}')


def test_every_rubric_level_has_an_anchor():
    r = load_session_rubric()
    assert (r.low, r.high) == (1, 6) and len(r.criteria) == 5
    assert all(sorted(c.anchors) == [1, 2, 3, 4, 5, 6] for c in r.criteria)
