"""Faults that must never cost what is stored: failed and killed stages, and calls in flight twice.

A stage that fails leaves the store and the pair files as they were; a stage killed with SIGKILL leaves
no partial table and no temp file the next run keeps; an empty pair set never silently replaces a full
one; identical calls in flight at once are paid once, and every stored judgment was scored from the very
reply the cache keeps.
"""

from __future__ import annotations

import json

import pyarrow.parquet as pq
import pytest
from fakes import FakeBackend

from psychocounsel import PRINCIPLE_KEYS
from psychocounsel.config import RunConfig
from psychocounsel.dataset import pipeline
from psychocounsel.errors import UserError
from psychocounsel.runner import StageProgress

TOPICS = ["sleep", "work", "my mother", "money", "the train", "my son", "exams", "moving house", "my friend",
          "the dog"]
SPEECHES = [f"I keep thinking about {t} every night; it has been weeks now and I can't talk to anyone about it, "
            f"so I lie awake and go over it again and again until morning comes." for t in TOPICS]
SCORE = {"m1": 5, "m2": 3, "m3": 1}  # three profiles a full point or more apart: every response pair is a pair


def reply(req):
    if req.model == "judge":
        text = req.messages[-1][1]
        score = next(s for m, s in SCORE.items() if f"[{m}]" in text)
        return json.dumps({**{k: score for k in PRINCIPLE_KEYS}, "rationale": "because"})
    return f"[{req.model}] That sounds hard. What has helped you a little, even once, when it felt like this?"


def make_cfg(tmp_path, **pairs) -> RunConfig:
    src = tmp_path / "speeches.jsonl"
    src.write_text("".join(json.dumps({"text": t}) + "\n" for t in SPEECHES))
    return RunConfig.model_validate({
        "run_dir": str(tmp_path / "run"), "speeches": {"path": str(src), "near_dup_threshold": 1.0},
        "backends": {"fake": {"type": "openai", "base_urls": ["http://127.0.0.1:9/v1"], "api_key_env": None}},
        "therapists": {"k": 3, "profiles": [{"name": m, "backend": "fake", "model": m} for m in SCORE]},
        "judge": {"backend": "fake", "model": "judge", "max_attempts": 2},
        "pairs": {"min_gap": 1.0, "dev_frac": 0.2, "test_frac": 0.2, **pairs},
    })


def open_run(cfg) -> pipeline.Run:
    run = pipeline.Run(cfg, progress=StageProgress(enabled=False))
    run.set_backend("fake", FakeBackend(reply=reply))
    return run


def judged_run(tmp_path, **pairs) -> pipeline.Run:
    run = open_run(make_cfg(tmp_path, **pairs))
    pipeline.stage_ingest(run)
    pipeline.call_stages(run, {"generate": pipeline.stage_generate, "judge": pipeline.stage_judge})
    return run


def file_rows(pairs_dir) -> dict[str, int]:
    """split -> rows, from the parquet files in a pairs folder."""
    return {p.stem: pq.read_metadata(p).num_rows for p in sorted(pairs_dir.glob("*.parquet"))}


def snapshot(run) -> tuple:
    """What a pairs stage may change: the table's counts, the files' bytes, the stored result."""
    files = {p.name: p.read_bytes() for d in (run.dir / "pairs", run.dir / "pairs-trl") if d.exists()
             for p in sorted(d.iterdir())}
    return pipeline.status(run)["pairs"], files, run.store.get_meta("pairs_result")


def test_pairs_refuse_to_replace_pair_files_with_an_empty_set(tmp_path):
    run = judged_run(tmp_path)
    try:
        first = pipeline.stage_pairs(run)
        assert sum(first["counts"].get(s, 0) for s in ("train", "dev", "test")) > 0
        before = snapshot(run)
        # a judge change that leaves no pair (here: a gap no response pair reaches)
        run.cfg.pairs.min_gap = 10.0
        with pytest.raises(UserError, match="--allow-empty") as e:
            pipeline.stage_pairs(run)
        assert "\n" not in str(e.value)
        run.cfg.pairs.min_gap = 1.0
        assert snapshot(run) == before
        run.cfg.pairs.min_gap = 10.0
        res = pipeline.stage_pairs(run, allow_empty=True)  # asked for: the empty set replaces the files
        assert res["files"] == {} and not list((run.dir / "pairs").glob("*.parquet"))
        assert pipeline.status(run)["pairs"] == {}
    finally:
        run.close()


def test_a_failed_pairs_stage_leaves_the_table_and_the_files_as_they_were(tmp_path, monkeypatch):
    run = judged_run(tmp_path)
    try:
        pipeline.stage_pairs(run)
        before = snapshot(run)
        assert sum(before[0].values()) == sum(file_rows(run.dir / "pairs").values()) > 0
        built = pipeline.pairs_core.build_pairs
        seen = []

        def fails_midway(*a, **kw):  # a crash after some pairs were written (disk full, a bug, Ctrl-C)
            seen.append(1)
            if len(seen) == 7:
                raise OSError("disk full")
            return built(*a, **kw)

        monkeypatch.setattr(pipeline.pairs_core, "build_pairs", fails_midway)
        with pytest.raises(OSError, match="disk full"):
            pipeline.stage_pairs(run)
        assert snapshot(run) == before
        assert not [p for p in (run.dir / "pairs").iterdir() if p.name.startswith(".")]
    finally:
        run.close()


def test_pairs_remove_the_temp_files_a_killed_run_left(tmp_path):
    run = judged_run(tmp_path)
    try:
        pipeline.stage_pairs(run)
        stale = [run.dir / "pairs" / ".train.parquet.k1ll3d.tmp", run.dir / "pairs" / ".dev.jsonl.x.tmp.int",
                 run.dir / "pairs-trl" / ".test.jsonl.y.tmp"]
        for p in stale:
            p.write_text("half a file")
        other = run.dir / "pairs" / "notes.txt"  # not ours: stays
        other.write_text("mine")
        pipeline.stage_pairs(run)
        assert not any(p.exists() for p in stale) and other.exists()
        assert pipeline.status(run)["pairs"] == file_rows(run.dir / "pairs")
    finally:
        run.close()


# ---------------------------------------------------------------- against a misbehaving server, killed

# The fault mix the pipeline was tested against (5,256 requests: 403 HTTP 500s, 280 429s, 112 hangs, 230
# malformed judge replies), as per-request fractions.
FAULTS = {"p500": 403 / 5256, "p429": 280 / 5256, "p_hang": 112 / 5256, "p_garble": 230 / 5256}
N_KILLED = 120  # speeches: enough that generate, judge and pairs each last long enough to be killed in


def server_cfg(tmp_path, base_url, profiles, n_speeches=N_KILLED, k=2) -> dict:
    src = tmp_path / "speeches.jsonl"
    with src.open("w") as f:
        for i in range(n_speeches):
            f.write(json.dumps({"text": f"Client {i}: I have been struggling with my sleep and my job for {i + 2} "
                                        f"months, and I keep worrying about number {i * 7919 % 1000} things that "
                                        f"might go wrong at home, week {i}."}) + "\n")
    return {
        "run_dir": str(tmp_path / "run"),
        "speeches": {"path": str(src), "near_dup_threshold": 1.0},
        "backends": {"srv": {"type": "openai", "base_urls": [base_url], "api_key_env": None, "concurrency": 16,
                             "timeout_s": 0.5, "max_retries": 3, "backoff_base_s": 0.01, "backoff_max_s": 0.1}},
        "therapists": {"k": k, "profiles": profiles},
        "judge": {"backend": "srv", "model": "judge", "max_attempts": 2},
    }


def test_identical_calls_in_flight_are_paid_once_and_judged_from_the_cached_reply(tmp_path):
    from psychocounsel.testing.fakeserver import fake_server

    # two profiles that differ only in name: every speech asks the same thing twice, at the same moment
    twins = [{"name": n, "backend": "srv", "model": "m"} for n in ("a", "b")]
    with fake_server(latency=0.02) as srv:
        cfg = RunConfig.model_validate(server_cfg(tmp_path, srv.base_url, twins, n_speeches=5))
        run = pipeline.Run(cfg, progress=StageProgress(enabled=False))
        try:
            pipeline.run_all(run, report=False)
            assert srv.stats()["requests"] == 10  # 5 replies + 5 judgments, not 20
            assert stored_vs_cached(run) == (10, 10, 0)
        finally:
            run.close()


def stored_vs_cached(run) -> tuple[int, int, int]:
    """(ok responses, ok judgments, rows whose stored result differs from the cached reply it came from)."""
    con, scorer = run.store.con, run.judge_scorer()
    bad = 0
    responses = con.execute("SELECT r.text, c.text FROM responses r LEFT JOIN calls c ON c.key = r.call_key "
                            "WHERE r.status = 'ok'").fetchall()
    bad += sum(cached is None or stored != cached.strip() for stored, cached in responses)
    judgments = con.execute("SELECT scores, call_keys FROM judgments WHERE status = 'ok'").fetchall()
    for scores, keys in judgments:
        call = run.store.get_call(json.loads(keys)[-1])  # the reply that parsed is the last call made
        bad += call is None or scorer.parse(call.text).scores != json.loads(scores)
    return len(responses), len(judgments), bad


def psychocounsel(*args: str):
    import subprocess
    import sys

    return subprocess.Popen([sys.executable, "-m", "psychocounsel.cli", *args, "--no-progress"]
                            if args[0] == "run" else [sys.executable, "-m", "psychocounsel.cli", *args],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def kill_when(proc, ready, timeout: float = 60.0) -> bool:
    """SIGKILL ``proc`` as soon as ``ready()``; False when it ended first."""
    import signal
    import time

    end = time.monotonic() + timeout
    while proc.poll() is None and time.monotonic() < end:
        if ready():
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            return True
        time.sleep(0.002)
    proc.wait(timeout=max(1.0, end - time.monotonic()))
    return False


def count(db, sql: str) -> int:
    import sqlite3

    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=0.05) as con:
            return con.execute(sql).fetchone()[0]
    except sqlite3.Error:  # not created yet, or busy for a moment
        return 0


def temp_files(run_dir) -> list:
    return [p for p in run_dir.rglob("*") if p.name.startswith(".") and ".tmp" in p.name]


def test_a_run_killed_mid_generate_mid_judge_and_mid_pairs_finishes_whole_on_a_faulty_server(tmp_path):
    import yaml

    from psychocounsel.testing.fakeserver import fake_server

    profiles = [{"name": f"t{i}", "backend": "srv", "model": f"m{i}"} for i in range(3)]
    with fake_server(latency=0.005, retry_after=0.05, seed=11, **FAULTS) as srv:
        data = server_cfg(tmp_path, srv.base_url, profiles)
        cfg_path = tmp_path / "run.yaml"
        cfg_path.write_text(yaml.safe_dump(data))
        run_dir, db = tmp_path / "run", tmp_path / "run" / "run.sqlite"
        planned = N_KILLED * 2

        # mid generate, then mid judge: the moment picked from what the store has committed
        assert kill_when(psychocounsel("run", str(cfg_path)),
                         lambda: count(db, "SELECT count(*) FROM responses") >= planned // 3)
        assert count(db, "SELECT count(*) FROM responses") < planned
        assert kill_when(psychocounsel("run", str(cfg_path)),
                         lambda: count(db, "SELECT count(*) FROM judgments") >= planned // 3)
        assert count(db, "SELECT count(*) FROM judgments") < planned
        # finish generate and judge, then kill `pairs` while its temp files exist (retried: it is quick)
        done = psychocounsel("run", str(cfg_path))
        assert done.wait(timeout=120) == 0, done.stderr.read()[-2000:]
        killed_in_pairs = 0
        for _ in range(8):
            killed_in_pairs += kill_when(psychocounsel("pairs", str(cfg_path)), lambda: bool(temp_files(run_dir)))
            if killed_in_pairs:
                break
        assert killed_in_pairs, "the pairs stage always finished before it could be killed"
        assert temp_files(run_dir)  # what a kill leaves: removed by the next run

        final = psychocounsel("run", str(cfg_path))
        assert final.wait(timeout=120) == 0, final.stderr.read()[-2000:]
        stats = srv.stats()
    for action in ("500", "429", "hang", "garble"):
        assert stats.get(action, 0) > 0, (action, stats)

    run = pipeline.Run(RunConfig.model_validate(data), progress=StageProgress(enabled=False))
    try:
        st = pipeline.status(run)
        # every speech accounted for: each planned response and judgment stored, as ok or as a failure
        assert st["speeches"] == N_KILLED and st["generate"]["planned"] == planned
        assert st["generate"]["pending"] == 0 and st["judge"]["pending"] == 0
        assert st["judge"]["planned"] == st["generate"]["ok"] > 0
        # every stored result is the one the cache keeps
        n_ok, n_judged, mismatched = stored_vs_cached(run)
        assert n_ok == st["generate"]["ok"] and n_judged == st["judge"]["ok"] and mismatched == 0
        # no temp file left, and the table says what the files hold
        assert temp_files(run_dir) == []
        assert st["pairs"] == file_rows(run_dir / "pairs") and sum(st["pairs"].values()) > 0
        # no cut or control-character reply in any pair file
        texts = [t for p in (run_dir / "pairs").glob("*.parquet") for col in ("chosen", "rejected")
                 for t in pq.read_table(p, columns=[col]).column(col).to_pylist()]
        assert texts and not [t for t in texts if any(ord(ch) < 32 and ch not in "\n\t" for ch in t)]
        ids = [i for p in (run_dir / "pairs").glob("*.parquet") for col in ("chosen_id", "rejected_id")
               for i in pq.read_table(p, columns=[col]).column(col).to_pylist()]
        states = pipeline.reply_states(run, ids)
        assert not [i for i in ids if states[i].truncated or states[i].finish_reason != "stop"]
    finally:
        run.close()
