"""The data stages end to end on a fake model: plans, resume, failures, G-Eval + calibration."""

import asyncio
import json

import pyarrow.parquet as pq
import pytest
import yaml

from fakes import FakeBackend, failing
from psychocounsel import PRINCIPLE_KEYS
from psychocounsel.dataset import pipeline
from psychocounsel.config import RunConfig, load_config

SPEECHES = [
    "I have been feeling so low for months now. I can't get out of bed and nothing I used to love feels worth it anymore.",
    "My partner and I fight every night about money, and I'm starting to wonder whether we even want the same future together.",
    "Work has become unbearable. My manager criticises everything I do in front of the team and I dread every single Monday.",
    "Since my mother died last spring I keep replaying our last conversation, wishing I had said something kinder to her.",
    "I get panic attacks on the train, my heart races and I feel like I'm going to faint, so I've started walking two hours to work.",
    "My teenage son won't talk to me anymore. He stays in his room all day and I don't know how to reach him without a fight.",
]

GOOD = "It sounds like you feel worn down and alone with this. What feels heaviest for you right now?"
BAD = "Just get over it, everyone has problems."


def _therapist_reply(req):
    system = req.messages[0][1]
    return BAD if "impatient" in system else GOOD


def _judge_reply(req):
    text = req.messages[-1][1]
    score = 2 if BAD in text else 5
    return json.dumps({**{k: score for k in PRINCIPLE_KEYS}, "rationale": "because"})


def make_cfg(tmp_path, backend_type="openai", **judge):
    tmp_path.mkdir(parents=True, exist_ok=True)
    src = tmp_path / "speeches.jsonl"
    src.write_text("".join(json.dumps({"text": t, "topic": "demo"}) + "\n" for t in SPEECHES))
    data = {
        "run_dir": str(tmp_path / "run"),
        "speeches": {"path": str(src)},
        "backends": {"fake": {"type": "openai", "base_urls": ["http://127.0.0.1:9/v1"], "api_key_env": None}
                     if backend_type == "openai" else {"type": "local"}},
        "therapists": {"k": 2, "profiles": [
            {"name": "kind", "backend": "fake", "model": "m1"},
            {"name": "warm", "backend": "fake", "model": "m2"},
            {"name": "rude", "backend": "fake", "model": "m3",
             "system_prompt": "You are impatient."},
        ]},
        "judge": {"backend": "fake", "model": "judge", "max_attempts": 2, **judge},
        "pairs": {"min_gap": 1.0, "dev_frac": 0.2, "test_frac": 0.3},
    }
    return RunConfig.model_validate(data)


def open_run(cfg, backend):
    run = pipeline.Run(cfg, progress=pipeline.StageProgress(enabled=False))
    run._backends["fake"] = backend
    return run


def run_all(cfg, backend):
    run = open_run(cfg, backend)
    try:
        pipeline.stage_ingest(run)
        gen = asyncio.run(pipeline.stage_generate(run))
        jud = asyncio.run(pipeline.stage_judge(run))
        res = pipeline.stage_pairs(run)
        return run, gen, jud, res
    finally:
        run.close()


def both(req):
    return _judge_reply(req) if req.model == "judge" else _therapist_reply(req)


def test_end_to_end_pairs_follow_the_judge_and_rerun_costs_nothing(tmp_path):
    cfg = make_cfg(tmp_path)
    fake = FakeBackend(reply=both)
    run, gen, jud, res = run_all(cfg, fake)
    n = len(SPEECHES) * 2
    assert gen["generated"] == n and gen["failed"] == 0
    assert jud["judged"] == n and jud["failed"] == 0
    assert len(fake.calls) == 2 * n

    # every stored pair prefers the kind reply over the rude one, by the full 3-point gap
    rows = []
    for files in res["files"].values():
        for f in files:
            if f.endswith(".parquet") and "/trl/" not in f:
                rows += pq.read_table(f).to_pylist()
    assert rows, "expected pairs"
    for r in rows:
        assert r["chosen"] == GOOD and r["rejected"] == BAD
        # chosen_model / rejected_model name the pool member (the profile)
        assert r["rejected_model"] == "rude" and r["chosen_model"] in ("kind", "warm")
        assert r["chosen_empathy_rating"] == 5 and r["rejected_empathy_rating"] == 2
    # speeches whose two drawn profiles were both kind have a tie: no pair
    drawn = [pipeline.draw_profiles(sid, ["kind", "warm", "rude"], 2, cfg.seed) for sid in
             [r[0] for c in run.store.__class__(run.dir / "run.sqlite").iter_speeches() for r in c]]
    assert len(rows) == sum("rude" in d for d in drawn)

    # rerun: zero calls, same pairs
    again = FakeBackend(reply=both)
    _, gen2, jud2, res2 = run_all(cfg, again)
    assert again.calls == [] and gen2["done_before"] == n and jud2["done_before"] == n
    assert res2["counts"] == res["counts"]


def test_bad_judge_replies_are_recorded_failures_never_scores(tmp_path):
    cfg = make_cfg(tmp_path)

    def reply(req):
        if req.model != "judge":
            return _therapist_reply(req)
        return "I think it is pretty good!" if BAD in req.messages[-1][1] else _judge_reply(req)

    fake = FakeBackend(reply=reply)
    run, gen, jud, res = run_all(cfg, fake)
    rude = sum(1 for c in fake.calls if c.model != "judge" and "impatient" in c.messages[0][1])
    assert jud["failed"] == rude > 0
    judge_calls = [c for c in fake.calls if c.model == "judge"]
    assert len(judge_calls) == (len(SPEECHES) * 2 - rude) + 2 * rude  # bounded retries: 2 attempts each
    run = open_run(cfg, fake)
    rows = run.store.con.execute("SELECT status, scores, overall, error, attempts FROM judgments "
                                 "WHERE status='failed'").fetchall()
    assert len(rows) == rude
    for status, scores, overall, error, attempts in rows:
        assert scores is None and overall is None and attempts == 2 and error.startswith("parse:")
    assert sum(res["counts"].get(s, 0) for s in ("train", "dev", "test")) == 0  # only ties left
    # rerun replays the cached replies: no new calls, same failures
    again = FakeBackend(reply=reply)
    _, _, jud2, _ = run_all(cfg, again)
    assert again.calls == [] and jud2["failed"] == rude


def test_failed_generation_is_recorded_and_retried_on_rerun(tmp_path):
    cfg = make_cfg(tmp_path)
    fake = FakeBackend(replies=[failing("server on fire")], reply=both)
    _, gen, jud, _ = run_all(cfg, fake)
    assert gen["failed"] == 1 and jud["no_response"] == 1
    again = FakeBackend(reply=both)
    _, gen2, jud2, _ = run_all(cfg, again)
    assert gen2["generated"] == 1 and len([c for c in again.calls if c.model != "judge"]) == 1
    assert jud2["judged"] == 1


def test_crash_midway_then_resume_makes_no_repeat_calls(tmp_path):
    cfg = make_cfg(tmp_path)
    n = len(SPEECHES) * 2

    class Crash(FakeBackend):
        async def complete(self, request):
            if len(self.calls) == 5:
                raise RuntimeError("power cut")
            return await super().complete(request)

    crash = Crash(reply=both)
    run = open_run(cfg, crash)
    pipeline.stage_ingest(run)
    with pytest.raises(BaseException):
        asyncio.run(pipeline.stage_generate(run))
    stored = run.store.con.execute("SELECT count(*) FROM responses WHERE status='ok'").fetchone()[0]
    run.close()
    assert stored == 5
    again = FakeBackend(reply=both)
    _, gen, _, _ = run_all(cfg, again)
    assert len([c for c in again.calls if c.model != "judge"]) == n - 5
    assert gen["done_before"] == 5


def test_geval_with_calibration_builds_pairs_from_a_weak_judge(tmp_path):
    # geval needs a local backend in the config; the fake stands in for its model
    cfg = make_cfg(tmp_path, backend_type="local", mode="geval", calibration="zscore")

    def probs(prefix, suffix):
        # a weak judge: tiny preference for the kind reply, as SmolLM2 shows (2.03 vs 1.78)
        kind = BAD not in prefix[-1]["content"]
        return [0.30, 0.42, 0.20, 0.05, 0.03] if kind else [0.34, 0.42, 0.18, 0.04, 0.02]

    fake = FakeBackend(reply=both, probs=probs)
    run, gen, jud, res = run_all(cfg, fake)
    assert jud["judged"] == len(SPEECHES) * 2 and fake.score_calls == len(SPEECHES) * 2
    con = open_run(cfg, fake).store.con
    raw = [json.loads(s)["empathy"] for (s,) in con.execute("SELECT scores FROM judgments")]
    assert max(raw) - min(raw) < 0.2  # raw expected scores bunch together ...
    assert sum(res["counts"].get(s, 0) for s in ("train", "dev", "test")) > 0  # ... calibrated ones pair up
    # without calibration the same judge yields no pair at the paper's gap of 1.0
    cfg2 = make_cfg(tmp_path / "raw", backend_type="local", mode="geval", calibration="none")
    _, _, _, res2 = run_all(cfg2, FakeBackend(reply=both, probs=probs))
    assert sum(res2["counts"].get(s, 0) for s in ("train", "dev", "test")) == 0


def test_dry_run_counts_calls_before_spending(tmp_path):
    cfg = make_cfg(tmp_path)
    fake = FakeBackend(reply=both)
    run = open_run(cfg, fake)
    pipeline.stage_ingest(run)
    est = pipeline.dry_run(run)
    assert est["fake"]["calls"] == 2 * len(SPEECHES) * 2
    assert est["fake"]["completion_tokens"] > 0 and est["fake"]["cost_usd"] is None
    assert fake.calls == []


def test_shipped_configs_load(tmp_path):
    from pathlib import Path

    for path in sorted(Path(__file__).parents[2].glob("configs/*.yaml")):
        cfg = load_config(path)
        assert cfg.therapists.profiles, path
        # every comment-documented key parses as YAML and validates
        assert yaml.safe_load(path.read_text())


def test_bad_input_midway_leaves_the_store_as_it_was(tmp_path):
    from psychocounsel.errors import InputError

    cfg = make_cfg(tmp_path)
    run = open_run(cfg, FakeBackend(reply=both))
    pipeline.stage_ingest(run)
    assert run.store.count_speeches() == len(SPEECHES)
    src = tmp_path / "speeches.jsonl"
    lines = src.read_text().splitlines()
    lines.insert(3, '{"text": "broken')
    src.write_text("\n".join(lines) + "\n")
    with pytest.raises(InputError, match=r"speeches.jsonl:4"):
        pipeline.stage_ingest(run)
    assert run.store.count_speeches() == len(SPEECHES)  # the earlier speech list is intact
    run.close()
