"""The session benchmark end to end on the fake server, through the commands a user types: ``simulate`` (18
benchmark clients, 12 of them risk personas of every level and disclosure style, both fake therapist policies) -> ``judge-sessions`` (all three
judges) -> ``session-report`` -> ``session-leaderboard``. A policy told to give advice lists and skip safety
scores lower than a reflective one on the session rubric and on the safety flow, with bootstrap intervals over
clients that do not overlap; a rerun of both stages makes no call."""

import json
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from psychocounsel.cli import main
from psychocounsel.testing.fakeserver import fake_server

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = ROOT / "configs" / "sessions"
# Six therapist turns; risk personas that disclose by client turn 3 (every level, and direct, indirect, coded
# and contradictory disclosures), so each disclosure and the event two turns later fall inside the session,
# and clients without risk of several severities and styles.
BUDGET = 6
RISK = ["risk-001", "risk-002", "risk-007", "risk-008", "risk-014", "risk-016", "risk-021", "risk-022", "risk-028",
        "risk-029", "risk-035", "risk-036"]
NO_RISK = ["bench-001", "bench-008", "bench-015", "bench-050", "bench-100", "bench-150"]


def above(a: dict, b: dict) -> bool:
    """a's interval lies wholly above b's."""
    return a["ci"][0] > b["ci"][1]


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("bench")
    runner = CliRunner()
    out = {"tmp": tmp}
    with fake_server(latency=0.0) as srv, pytest.MonkeyPatch.context() as mp:
        mp.chdir(tmp)
        sim = yaml.safe_load((CONFIGS / "fake.yaml").read_text())
        sim.update(run_dir="runs/fake", budgets=[BUDGET], profiles="benchmark", profile_ids=RISK + NO_RISK)
        sim["backends"]["fake"]["base_urls"] = [srv.base_url]
        judge = yaml.safe_load((CONFIGS / "judge_fake.yaml").read_text())
        judge.update(run_dir="runs/fake", bootstrap={"n_boot": 1000, "seed": 0})
        judge["backends"]["fake"]["base_urls"] = [srv.base_url]
        (tmp / "sim.yaml").write_text(yaml.safe_dump(sim))
        (tmp / "judge.yaml").write_text(yaml.safe_dump(judge))
        for attempt in ("first", "rerun"):
            r = runner.invoke(main, ["simulate", "sim.yaml", "--no-progress"])
            assert r.exit_code == 0, r.output
            out[f"simulate_{attempt}"] = " ".join(r.output.split())  # rich wraps lines at the terminal width
            r = runner.invoke(main, ["judge-sessions", "judge.yaml", "--no-progress"])
            assert r.exit_code == 0, r.output
            out[f"judge_{attempt}"] = " ".join(r.output.split())
    out["folder"] = tmp / "runs" / "fake" / "judged" / judge["name"]
    out["results"] = json.loads((out["folder"] / "results.json").read_text())
    return out


def test_both_stages_run_and_a_rerun_makes_no_call(bench):
    assert "36 planned, 0 done before, 36 complete, 0 failed" in bench["simulate_first"]
    assert "36 done before" in bench["simulate_rerun"] and "0 model calls" in bench["simulate_rerun"]
    # 36 sessions: 6 turns each on the principles, plus the rubric and the checklist
    assert "judged: turn 216 (+0 stored), rubric 36 (+0 stored), flow 36 (+0 stored)" in bench["judge_first"]
    # 288 judgments; identical requests are one call (the call cache), so a few fewer calls
    assert "calls made: 278;" in bench["judge_first"] and "414 model calls" in bench["simulate_first"]
    assert "calls made: 0;" in bench["judge_rerun"] and "turn 0 (+216 stored)" in bench["judge_rerun"]
    assert bench["results"]["sessions_by_status"] == {"complete": 36}
    # the run folder keeps the profiles it simulated; the report's breakdowns read them
    kept = (bench["folder"].parents[1] / "profiles.jsonl").read_text().splitlines()
    assert sorted(json.loads(x)["id"] for x in kept) == sorted(RISK + NO_RISK)
    by_risk = bench["results"]["policies"]["reflective"]["breakdowns"]["risk_level"]
    assert by_risk["none"]["n"] == len(NO_RISK) and sum(v["n"] for v in by_risk.values()) == 18


def test_advice_lists_score_lower_on_the_rubric_and_the_safety_flow(bench):
    pols = bench["results"]["policies"]
    good, bad = pols["reflective"], pols["advice-lists"]
    assert good["n_clients"] == bad["n_clients"] == 18
    assert above(good["rubric"]["mean"], bad["rubric"]["mean"])
    assert above(good["safety_flow"]["score"], bad["safety_flow"]["score"])
    assert above(good["turns"]["overall"]["mean"], bad["turns"]["overall"]["mean"])
    # the deterministic checks see the same: every risk persona's disclosure, all missed by the lists
    assert good["safety"]["risk_sessions"] == bad["safety"]["risk_sessions"] == len(RISK)
    assert bad["safety"]["missed"]["k"] == len(RISK) and good["safety"]["missed"]["k"] == 0
    # (the lists' "Call a friend" passes the rules' "points to help"; the checklist judge is what catches it)
    assert good["safety"]["resources"]["k"] == len(RISK)


def test_report_and_leaderboard_list_both_policies(bench, monkeypatch):
    folder = bench["folder"]
    monkeypatch.chdir(bench["tmp"].parent)  # another directory: the folder reopens by its own config
    runner = CliRunner()
    r = runner.invoke(main, ["session-report", str(folder)])
    assert r.exit_code == 0, r.output
    assert json.loads((folder / "results.json").read_text())["policies"] == bench["results"]["policies"]
    r = runner.invoke(main, ["session-leaderboard", str(folder), "--out", str(bench["tmp"] / "lb")])
    assert r.exit_code == 0, r.output
    board = json.loads((bench["tmp"] / "lb" / "leaderboard.json").read_text())
    assert [row["policy"] for row in board] == ["reflective", "advice-lists"]
    assert board[0]["rubric_mean"]["ci"][0] > board[1]["rubric_mean"]["ci"][1]
    html = (folder / "report.html").read_text()
    assert "reflective" in html and "advice-lists" in html
