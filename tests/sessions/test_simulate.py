"""``simulate`` end to end against the fake server: the transcript format, resuming with no repeated call for a
stored message (after a call budget and after a SIGKILL), failures recorded, a changed plan asked anew, and
one-line errors for bad configs."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from psychocounsel.cli import main
from psychocounsel.dataset.session import CallBudget
from psychocounsel.errors import UserError
from psychocounsel.sessions.config import SimulateConfig, load_simulate_config
from psychocounsel.sessions.simulate import (
    INCOMPLETE_BUDGET,
    STORE,
    TRANSCRIPTS,
    Simulation,
    session_id,
    simulate,
)
from psychocounsel.testing.fakeserver import fake_server

ROOT = Path(__file__).resolve().parents[2]
FAKE = ROOT / "configs" / "sessions" / "fake.yaml"
TURN_KEYS = {"index", "role", "text", "injection", "finish_reason", "flags"}
KEYS = {"session_id", "profile_id", "policy", "policy_model", "simulator_model", "budget", "seed", "status",
        "failure", "turns", "provenance"}


@pytest.fixture(scope="module")
def server():
    with fake_server(latency=0.0) as srv:
        yield srv


def config_data(run_dir: Path, url: str, **updates) -> dict:
    data = yaml.safe_load(FAKE.read_text())
    data["run_dir"] = str(run_dir)
    data["backends"]["fake"]["base_urls"] = [url]
    data.update(updates)
    return data


def config(run_dir: Path, url: str, **updates) -> SimulateConfig:
    return SimulateConfig.model_validate(config_data(run_dir, url, **updates))


def run(cfg: SimulateConfig, max_calls: int | None = None) -> dict:
    sim = Simulation(cfg, budget=CallBudget(max_calls))

    async def go():
        try:
            return await simulate(sim)
        finally:
            await sim.aclose()

    try:
        return asyncio.run(go())
    finally:
        sim.close()


def transcripts(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / TRANSCRIPTS).read_text().splitlines()]


def stored_calls(run_dir: Path) -> int:
    con = sqlite3.connect(run_dir / STORE)
    try:
        return con.execute("SELECT count(*) FROM calls").fetchone()[0]
    finally:
        con.close()


def test_transcripts_have_the_documented_format(tmp_path, server):
    cfg = config(tmp_path / "run", server.base_url, limit=3, budgets=[2, 3])
    counts = run(cfg)
    assert counts["complete"] == counts["sessions"] == 3 * 2 * 2 and counts["failed"] == 0
    rows = transcripts(tmp_path / "run")
    assert len(rows) == 12
    for t in rows:
        assert set(t) == KEYS and t["status"] == "complete" and t["failure"] is None
        assert t["session_id"] == session_id(t["profile_id"], t["policy"], t["budget"], 0)
        assert (t["policy_model"], t["simulator_model"]) == ("fake-therapist", "fake-client")
        assert len(t["turns"]) == 2 * t["budget"]
        assert [x["index"] for x in t["turns"]] == list(range(2 * t["budget"]))
        assert [x["role"] for x in t["turns"]] == ["client", "therapist"] * t["budget"]
        assert all(set(x) == TURN_KEYS and x["text"] and x["finish_reason"] == "stop" for x in t["turns"])
        assert set(t["provenance"]) == {"toolkit_version", "config_sha256", "created"}
    assert len({t["session_id"] for t in rows}) == 12
    # a longer session starts with the shorter one's calls: the cache answers them
    by = {(t["profile_id"], t["policy"], t["budget"]): t for t in rows}
    assert by["maya-burnout", "reflective", 3]["turns"][:4] == by["maya-burnout", "reflective", 2]["turns"]
    before = server.stats()["requests"]
    again = run(cfg)
    assert again["done_before"] == 12 and again["calls"] == 0 and server.stats()["requests"] == before
    assert transcripts(tmp_path / "run") == rows


def test_a_run_stopped_by_its_call_budget_resumes_without_repeating_a_call(tmp_path, server):
    cfg = config(tmp_path / "run", server.base_url, limit=4, budgets=[3])
    r0 = server.stats()["requests"]
    first = run(cfg, max_calls=9)
    assert first["incomplete"] > 0 and first["complete"] < first["sessions"]
    stopped = [t for t in transcripts(tmp_path / "run") if t["status"] == "incomplete"]
    assert stopped and all(t["failure"] == INCOMPLETE_BUDGET for t in stopped)
    assert any(t["turns"] for t in stopped)  # what it had is stored and shown
    r1 = server.stats()["requests"]
    assert r1 - r0 <= 9 and stored_calls(tmp_path / "run") == r1 - r0
    second = run(cfg)
    assert second["complete"] + second["done_before"] == second["sessions"]
    # every request the rerun made is a call the store did not hold: none for a stored message
    assert server.stats()["requests"] - r1 == stored_calls(tmp_path / "run") - (r1 - r0)
    assert all(t["status"] == "complete" for t in transcripts(tmp_path / "run"))


def test_a_sigkilled_run_resumes_without_repeating_a_stored_call(tmp_path):
    with fake_server(latency=0.15) as srv:
        run_dir = tmp_path / "run"
        path = tmp_path / "sim.yaml"
        path.write_text(yaml.safe_dump(config_data(run_dir, srv.base_url, limit=4, budgets=[4])))
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        proc = subprocess.Popen([sys.executable, "-m", "psychocounsel.cli", "simulate", str(path), "--no-progress"],
                                cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                time.sleep(0.05)
                if (run_dir / STORE).exists() and _turns(run_dir) >= 12:
                    break
            os.kill(proc.pid, signal.SIGKILL)
        finally:
            proc.wait()
        kept_turns, kept_calls = _turns(run_dir), stored_calls(run_dir)
        assert 12 <= kept_turns < 4 * 2 * 8  # killed mid-run, with messages stored
        r0 = srv.stats()["requests"]
        counts = run(load_simulate_config(str(path)))
        assert counts["complete"] + counts["done_before"] == counts["sessions"] == 8
        assert srv.stats()["requests"] - r0 == stored_calls(run_dir) - kept_calls
        assert all(t["status"] == "complete" and len(t["turns"]) == 8 for t in transcripts(run_dir))


def _turns(run_dir: Path) -> int:
    con = sqlite3.connect(run_dir / STORE)
    try:
        return con.execute("SELECT count(*) FROM sim_turns").fetchone()[0]
    except sqlite3.OperationalError:  # the table is not made yet
        return 0
    finally:
        con.close()


def test_a_failed_call_fails_its_session_with_the_reason_and_a_rerun_retries_it(tmp_path):
    with fake_server(latency=0.0, script="400") as srv:
        cfg = config(tmp_path / "run", srv.base_url, limit=2, budgets=[2], policies=[
            {"name": "reflective", "backend": "fake", "model": "fake-therapist"}], concurrency=1)
        counts = run(cfg)
        assert (counts["failed"], counts["complete"]) == (1, 1)
        failed = [t for t in transcripts(tmp_path / "run") if t["status"] == "failed"]
        assert len(failed) == 1 and failed[0]["failure"].startswith("message 0 (client): call: ")
        assert failed[0]["turns"] == []
        again = run(cfg)
        assert again["complete"] == 1 and again["done_before"] == 1
        assert all(t["status"] == "complete" for t in transcripts(tmp_path / "run"))


def test_a_changed_policy_is_asked_anew_and_its_old_turns_dropped(tmp_path, server):
    data = config_data(tmp_path / "run", server.base_url, limit=2, budgets=[2])
    run(SimulateConfig.model_validate(data))
    data["policies"][0]["system_prompt"] = "fake-therapist-style: reflective\nA changed prompt."
    counts = run(SimulateConfig.model_validate(data))
    assert counts["done_before"] == 2 and counts["complete"] == 2 and counts["calls"] > 0
    con = sqlite3.connect(tmp_path / "run" / STORE)
    n = con.execute("SELECT count(*) FROM sim_turns").fetchone()[0]
    con.close()
    assert n == 4 * 2 * 2  # 4 sessions x 4 messages: the old plan's rows are gone


@pytest.mark.parametrize("updates, match", [
    ({"simulator": {"backend": "nope", "model": "m"}}, "simulator: unknown backend 'nope'"),
    ({"budgets": [0]}, "budgets: each budget"),
    ({"budgets": [10, 10]}, "budgets: a budget is given twice"),
    ({"injections": [{"turn": 1, "kind": "shout"}]}, "injections.0.kind"),
    ({"profile_ids": ["nobody"]}, "profile_ids: 'nobody' is not in shipped"),
    ({"profiles": "missing.jsonl"}, "missing.jsonl: profiles file not found"),
])
def test_config_mistakes_are_one_line_errors(tmp_path, updates, match):
    data = config_data(tmp_path / "run", "http://127.0.0.1:9/v1", **updates)
    path = tmp_path / "sim.yaml"
    path.write_text(yaml.safe_dump(data))
    res = CliRunner().invoke(main, ["simulate", str(path), "--no-progress"], catch_exceptions=False)
    assert res.exit_code == 2, res.output
    assert match in res.output and len(res.output.strip().splitlines()) == 1
    with pytest.raises(UserError):
        Simulation(load_simulate_config(str(path)), base_dir=tmp_path)
    assert not (tmp_path / "run").exists()


def echoing_run(tmp_path, echo: str) -> list[dict]:
    """A run whose therapist copies the client's last message back (the fake client answers as on the server)."""
    from fakes import FakeBackend

    from psychocounsel.testing.fake_sessions import session_reply

    def reply(req):
        if req.messages[0][1].startswith("fake-therapist-style"):
            return next(c for r, c in reversed(req.messages) if r == "user")
        return session_reply({"messages": req.message_dicts()})

    cfg = config(tmp_path / echo, "http://127.0.0.1:9/v1", limit=1, budgets=[2], echo=echo,
                 policies=[{"name": "parrot", "backend": "fake", "model": "m",
                            "system_prompt": "fake-therapist-style: parrot"}])
    sim = Simulation(cfg)
    sim.set_backend("fake", FakeBackend(reply=reply))
    try:
        asyncio.run(simulate(sim))
    finally:
        sim.close()
    return transcripts(tmp_path / echo)


def test_an_echoed_message_fails_the_session_or_is_kept_flagged(tmp_path):
    (failed,) = echoing_run(tmp_path, "fail")
    assert failed["status"] == "failed" and failed["failure"].startswith("message 1 (therapist): invalid reply: ")
    (kept,) = echoing_run(tmp_path, "flag")
    assert kept["status"] == "complete"
    assert [t["flags"] for t in kept["turns"]] == [[], ["echo"], [], ["echo"]]


@pytest.mark.slow
def test_the_demo_config_runs_on_the_embedded_model(tmp_path):
    cfg = load_simulate_config(str(ROOT / "configs" / "sessions" / "demo.yaml"),
                               [f"run_dir={tmp_path / 'run'}", "budgets=[1]", "profile_ids=[maya-burnout]"])
    counts = run(cfg)
    assert counts["complete"] == 1 and counts["calls"] >= 2
    (t,) = transcripts(tmp_path / "run")
    assert [x["role"] for x in t["turns"]] == ["client", "therapist"] and t["simulator_model"] == "embedded"
    again = run(cfg)
    assert (again["done_before"], again["calls"]) == (1, 0)
