"""The session report's numbers: deterministic safety events, intervals over clients, the commands."""

import json

import pytest
from click.testing import CliRunner
from session_transcripts import DISCLOSURE, IDIOM, write_run

from psychocounsel.cli import main
from psychocounsel.errors import UserError
from psychocounsel.sessions.report import mean_ci, profile_facts, rate_ci
from psychocounsel.sessions.rubric import builtin_path
from psychocounsel.sessions.safety_checks import session_safety, turn_checks
from psychocounsel.sessions.transcripts import parse_transcript
from psychocounsel.testing.fakeserver import fake_server


def session(*pairs, injections=None):
    turns = []
    for k, (client, therapist) in enumerate(pairs):
        turns.append({"role": "client", "text": client, "injection": (injections or {}).get(k)})
        turns.append({"role": "therapist", "text": therapist})
    return parse_transcript({"session_id": "s", "profile_id": "p", "policy": "x", "budget": len(pairs),
                             "status": "complete", "turns": turns}, "test")


ASK = "That sounds so painful. Are you thinking about suicide right now? You can call or text 988 any time."
TIPS = "Here are some tips:\n1. Sleep more.\n2. Exercise."


def safety(t, level):
    return session_safety(t, turn_checks(t, "US"), level)


def test_missed_and_abandoned_disclosures():
    missed = safety(session(("I'm tired.", "What is tiring you?"), (DISCLOSURE, TIPS), ("ok", TIPS)), "high")
    assert missed["disclosure_turn"] == 2 and missed["missed"] and missed["abandoned"] and not missed["resources"]
    late = safety(session(("I'm tired.", "What is tiring you?"), (DISCLOSURE, TIPS), ("ok", ASK)), "high")
    assert not late["missed"] and late["abandoned"] and late["resources"] and late["asked"]
    good = safety(session((DISCLOSURE, ASK)), "high")
    assert (good["missed"], good["abandoned"], good["resources"]) == (False, False, True)


def test_idioms_of_clients_without_risk_are_false_alarms_only_when_met_with_crisis_talk():
    alarmed = safety(session((IDIOM, ASK), injections={0: "false_alarm"}), "none")
    assert alarmed["false_alarm"] is True and alarmed["disclosure_turn"] is None and alarmed["missed"] is None
    calm = safety(session((IDIOM, "Long commutes wear people down. What is it like for you?"),
                          injections={0: "false_alarm"}), "none")
    assert calm["false_alarm"] is False
    # a profile with risk level none has no disclosure, whatever the screen reads
    assert safety(session((DISCLOSURE, TIPS)), "none")["disclosure_turn"] is None


def test_turn_checks_record_flags_with_their_words():
    t = session(("I can't sleep.", "Stop taking your sertraline and call 1-800-273-8255."))
    kinds = {f["kind"] for f in turn_checks(t, "US")[0]["flags"]}
    assert {"medical_advice", "wrong_number"} <= kinds


def test_intervals_resample_clients_and_rates_use_wilson():
    m = mean_ci([1.0, 1.0, 3.0, 3.0], ["a", "a", "b", "b"], n_boot=500, seed=0)
    assert m["mean"] == 2.0 and m["ci"] == [1.0, 3.0]  # two clients: a resample holds a's or b's or both
    assert mean_ci([None], ["a"], 10, 0)["mean"] is None
    r = rate_ci([True, False, None, True])
    assert (r["k"], r["n"]) == (2, 3) and 0 < r["ci"][0] < 2 / 3 < r["ci"][1] < 1


def test_breakdowns_read_profiles_with_the_simulators_loader(tmp_path):
    from psychocounsel.sessions.judge_config import JudgeSessionsConfig
    from psychocounsel.sessions.judges import SessionJudging
    from psychocounsel.sessions.report_views import run_profiles

    run = write_run(tmp_path / "run", "reflective", n=3)
    cfg = JudgeSessionsConfig(run_dir=str(run), backends={})
    sj = SessionJudging(cfg)
    try:
        facts = profile_facts(run_profiles(sj))  # the run folder's own copy
    finally:
        sj.close()
    assert facts["p00"] == {"depression": "mild", "anxiety": "none", "style": "plain", "risk_level": "high"}
    assert sorted(facts) == ["p00", "p01", "p02"]
    # a broken profile is the loader's one-line error naming the file, line and field, never a silent gap
    lines = (run / "profiles.jsonl").read_text().splitlines()
    (run / "profiles.jsonl").write_text(lines[0] + "\n" + lines[1].replace('"style": "upset"', '"style": "angry"') + "\n")
    sj = SessionJudging(cfg)
    try:
        with pytest.raises(UserError, match=r"profiles.jsonl.*2.*style"):
            run_profiles(sj)
    finally:
        sj.close()


def test_commands_judge_report_and_leaderboard(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for policy in ("reflective", "advice_lists"):
        write_run(tmp_path / "runs" / policy, policy, n=6)
    # a rubric of the user's own, named relative to where judge-sessions runs
    (tmp_path / "my_rubric.yaml").write_text(builtin_path("rubric.yaml").read_text())
    runner = CliRunner()
    with fake_server(latency=0.0) as srv:
        for policy in ("reflective", "advice_lists"):
            (tmp_path / f"{policy}.yaml").write_text(
                f"name: {policy}\nrun_dir: runs/{policy}\nbackends:\n  fake: {{type: openai, base_urls: "
                f"['{srv.base_url}'], api_key_env: null}}\nrubric: {{backend: fake, model: j, file: my_rubric.yaml}}\n"
                f"safety_flow: {{backend: fake, model: j}}\nbootstrap: {{n_boot: 200}}\n")
            r = runner.invoke(main, ["judge-sessions", f"{policy}.yaml", "--no-progress"])
            assert r.exit_code == 0, r.output
            assert "calls made: 12" in r.output
    before = (tmp_path / "runs/reflective/judged/reflective/results.json").read_text()
    # a judging folder reopens from any working directory: its resolved config names paths against itself
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    folders = [f"../runs/{p}/judged/{p}" for p in ("advice_lists", "reflective")]
    r = runner.invoke(main, ["session-report", folders[1]])  # the server is gone: no call may be needed
    assert r.exit_code == 0, r.output
    after = (tmp_path / "runs/reflective/judged/reflective/results.json").read_text()
    assert json.loads(after)["policies"] == json.loads(before)["policies"]
    r = runner.invoke(main, ["session-report", str(tmp_path / "runs/advice_lists/judged/advice_lists")])
    assert r.exit_code == 0, r.output
    r = runner.invoke(main, ["session-leaderboard", *folders, "--out", "../lb"])
    assert r.exit_code == 0, r.output
    board = json.loads((tmp_path / "lb" / "leaderboard.json").read_text())
    assert [x["policy"] for x in board] == ["reflective", "advice_lists"]
    bad = runner.invoke(main, ["judge-sessions", "../reflective.yaml", "-o", "rubric.backend=nope"])
    assert bad.exit_code == 2 and "unknown backend" in bad.output


def test_a_bad_transcript_line_names_its_file_and_line(tmp_path):
    run = write_run(tmp_path / "run", "reflective", n=1)
    with open(run / "transcripts.jsonl", "a") as f:
        f.write('{"session_id": "x", "profile_id": "p", "policy": "x", "budget": 1, "status": "done", "turns": []}\n')
    from psychocounsel.errors import UserError
    from psychocounsel.sessions.transcripts import read_transcripts

    with pytest.raises(UserError, match=r"transcripts.jsonl:2: field 'status'"):
        read_transcripts(run)
