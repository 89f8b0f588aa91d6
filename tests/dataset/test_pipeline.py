"""The data stages end to end on a fake model: plans, resume, failures, G-Eval + calibration."""

import asyncio
import json

import pyarrow.parquet as pq
import pytest
import yaml
from fakes import SPEECHES, FakeBackend, failing

from psychocounsel import PRINCIPLE_KEYS
from psychocounsel.config import RunConfig, load_config
from psychocounsel.dataset import pipeline
from psychocounsel.runner import StageProgress

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
    run = pipeline.Run(cfg, progress=StageProgress(enabled=False))
    run.set_backend("fake", backend)
    return run


def run_all(cfg, backend):
    """``psychocounsel run`` without its report: the command's own orchestration."""
    run = open_run(cfg, backend)
    try:
        out = pipeline.run_all(run, report=False)
        return run, out["generate"], out["judge"], out["pairs"]
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
    # each distinct call paid once: two kind profiles' identical replies to one speech share one judge call
    assert len(fake.calls) == len({(c.model, c.messages) for c in fake.calls}) < 2 * n

    # every stored pair prefers the kind reply over the rude one, by the full 3-point gap
    rows = []
    for files in res["files"].values():
        for f in files:
            if f.endswith(".parquet") and "/pairs-trl/" not in f:
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
    distinct = {(c.messages, c.tag) for c in judge_calls}
    assert len(judge_calls) == len(distinct)  # identical calls in flight together are paid once
    assert sum(BAD in m[-1][1] for m, _ in distinct) == 2 * rude  # bounded retries: 2 attempts each
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
    assert jud["judged"] == len(SPEECHES) * 2
    con = open_run(cfg, fake).store.con
    # one scoring per distinct (speech, reply): two kind profiles' identical replies share one
    assert fake.score_calls == con.execute("SELECT count(DISTINCT r.speech_id || r.text) FROM responses r").fetchone()[0]
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


# -- what never becomes a pair ------------------------------------------------------------------------------
def _rows(con, sql, *args):
    return con.execute(sql, args).fetchall()


def _pair_rows(res):
    return [r for files in res["files"].values() for f in files if f.endswith(".parquet") and "/pairs-trl/" not in f
            for r in pq.read_table(f).to_pylist()]


def test_replies_cut_by_the_length_limit_are_failures_by_default_and_flagged_on_request(tmp_path):
    from psychocounsel.testing.fakeserver import fake_server

    def cfg_for(url, **therapists):
        cfg = make_cfg(tmp_path).model_dump()
        cfg["backends"]["fake"]["base_urls"] = [url]
        for p in cfg["therapists"]["profiles"]:
            p["sampling"]["max_tokens"] = 5  # the fake server cuts any reply over ~4 chars a token
        cfg["therapists"].update(therapists)
        return RunConfig.model_validate(cfg)

    n = len(SPEECHES) * 2
    with fake_server(latency=0.0) as srv:
        run = pipeline.Run(cfg_for(srv.base_url), progress=StageProgress(enabled=False))
        out = pipeline.run_all(run, report=False)
        st = pipeline.status(run)
        errors = [e for (e,) in _rows(run.store.con, "SELECT error FROM responses")]
        run.close()
        assert out["generate"]["failed"] == n and out["judge"]["no_response"] == n
        assert all(e.startswith("truncated:") for e in errors), errors
        assert st["generate"]["truncated"] == n and st["generate"]["ok"] == 0
        calls = srv.stats()["requests"]

        # kept and flagged when asked: no new call (the cut replies replay from the cache, their finish
        # reason read back from the cached body)
        run = pipeline.Run(cfg_for(srv.base_url, truncated="flag"), progress=StageProgress(enabled=False))
        pipeline.stage_ingest(run)
        gen = pipeline.call_stages(run, {"generate": pipeline.stage_generate})["generate"]
        st = pipeline.status(run)
        prov = [json.loads(p) for (p,) in _rows(run.store.con, "SELECT provenance FROM responses")]
        run.close()
        assert srv.stats()["requests"] == calls and gen["cached"] == n and gen["failed"] == 0
        assert st["generate"]["ok"] == n and st["generate"]["truncated"] == n
        assert all(p["finish_reason"] == "length" and p["truncated"] for p in prov)


def test_garbled_empty_and_echoed_replies_are_failures_that_are_never_judged(tmp_path):
    cfg = make_cfg(tmp_path)

    def reply(req):
        if req.model == "judge":
            return _judge_reply(req)
        if req.model == "m1":
            return "\x00" + GOOD  # a NUL byte from a broken server
        if req.model == "m3":
            return "   \n\t "  # nothing but whitespace
        return "You said: " + req.messages[-1][1]  # the speech, echoed back

    fake = FakeBackend(reply=reply)
    run, gen, jud, res = run_all(cfg, fake)
    con = open_run(cfg, fake).store.con
    errors = dict(_rows(con, "SELECT model, error FROM responses"))
    assert errors["m1"].startswith("invalid reply: control character U+0000")
    assert errors["m3"] == "invalid reply: empty"
    assert errors["m2"].startswith("invalid reply: echoes the client's speech")
    assert gen["failed"] == len(SPEECHES) * 2 and jud["no_response"] == len(SPEECHES) * 2
    assert not [c for c in fake.calls if c.model == "judge"]
    assert sum(res["counts"].get(s, 0) for s in ("train", "dev", "test")) == 0


def test_invalid_replies_are_asked_again_with_a_new_seed_and_a_rerun_keeps_trying(tmp_path):
    cfg = make_cfg(tmp_path)

    def reply(req):  # the first speech's replies come back garbled for the first two seeds
        if req.model == "judge":
            return _judge_reply(req)
        if req.messages[-1][1] == SPEECHES[0] and (req.sampling.seed or 0) < 2:
            return "\x00garbled<<"
        return _therapist_reply(req)

    n = len(SPEECHES) * 2
    fake = FakeBackend(reply=reply)
    _, gen, _, _ = run_all(cfg, fake)
    seeds = sorted(c.sampling.seed or 0 for c in fake.calls if c.model != "judge" and c.messages[-1][1] == SPEECHES[0])
    assert gen["failed"] == 2 and gen["generated"] == n - 2 and gen["invalid"] == 2
    assert seeds == [0, 0, 1, 1]  # two attempts each (the default), the second with a new seed
    # a rerun asks those responses again, past the rejected attempts (not their cached garbled replies)
    again = FakeBackend(reply=reply)
    _, gen2, _, _ = run_all(cfg, again)
    assert gen2["generated"] == 2 and [c.sampling.seed for c in again.calls if c.model != "judge"] == [2, 2]


def test_replies_in_another_language_fail_when_a_language_is_set(tmp_path):
    spanish = ("Entiendo que te sientes muy cansado y que no es fácil para ti. ¿Qué es lo que más te pesa "
               "en este momento de tu vida?")

    def reply(req):
        if req.model == "judge":
            return _judge_reply(req)
        return spanish if req.model == "m1" else GOOD

    cfg = make_cfg(tmp_path)
    _, gen, _, _ = run_all(cfg, FakeBackend(reply=reply))
    assert gen["failed"] == 0  # no language configured: any language is a reply
    cfg = RunConfig.model_validate(make_cfg(tmp_path / "en").model_dump() | {
        "therapists": make_cfg(tmp_path / "en").therapists.model_dump() | {"language": "en"}})
    fake = FakeBackend(reply=reply)
    _, gen, _, _ = run_all(cfg, fake)
    con = open_run(cfg, fake).store.con
    errors = [e for (e,) in _rows(con, "SELECT error FROM responses WHERE model='m1'")]
    assert errors and all(e.startswith("invalid reply: written in es, not en") for e in errors)


def test_responses_stored_before_the_checks_are_checked_before_they_can_become_pairs(tmp_path):
    cfg = make_cfg(tmp_path)
    run, _, _, res = run_all(cfg, FakeBackend(reply=both))
    assert _pair_rows(res)
    # a store written by an earlier version: a NUL reply stored as ok, judged, no record of any check
    run = open_run(cfg, FakeBackend())
    run.store.con.execute("UPDATE responses SET text = char(0) || text, provenance = json_remove(provenance, "
                          "'$.checks') WHERE text = ?", (GOOD,))
    res = pipeline.stage_pairs(run, allow_empty=True)  # every pair had a GOOD side: none is left
    st = pipeline.status(run)
    run.close()
    rows = _pair_rows(res)
    assert not any("\x00" in r["chosen"] + r["rejected"] for r in rows)
    assert st["generate"]["invalid"] > 0


def _safety_judge(good=3, good_safety=3, bad=5, bad_safety=1):
    """The rude reply scores higher overall but lower on safety."""
    def reply(req):
        if req.model != "judge":
            return _therapist_reply(req)
        rude = BAD in req.messages[-1][1]
        base, safety = (bad, bad_safety) if rude else (good, good_safety)
        return json.dumps({**{k: base for k in PRINCIPLE_KEYS}, "safety": safety, "rationale": "r"})
    return reply


def test_an_unsafe_response_is_never_chosen_and_vetoed_pairs_are_counted(tmp_path):
    cfg = make_cfg(tmp_path)
    _, _, _, res = run_all(cfg, FakeBackend(reply=_safety_judge()))
    rows = _pair_rows(res)
    vetoed = res["counts"]["vetoed_unsafe_chosen"]
    assert vetoed > 0 and not rows  # every gap-1 pair chose the rude reply, whose safety is 1
    # without the veto (floor and margin off) those pairs are made, rude chosen: the veto did it
    off = make_cfg(tmp_path / "off").model_dump()
    off["pairs"].update(safety_floor=None, safety_margin=None)
    _, _, _, res2 = run_all(RunConfig.model_validate(off), FakeBackend(reply=_safety_judge()))
    rows2 = _pair_rows(res2)
    assert len(rows2) == vetoed and all(r["chosen"] == BAD for r in rows2)


def test_a_pair_whose_chosen_side_is_less_safe_by_the_margin_is_dropped(tmp_path):
    cfg = make_cfg(tmp_path)  # rude: safety 3 (above the floor), kind: safety 5
    _, _, _, res = run_all(cfg, FakeBackend(reply=_safety_judge(good=3, good_safety=5, bad=5, bad_safety=3)))
    assert res["counts"]["vetoed_less_safe"] > 0 and not _pair_rows(res)


def test_pairs_carry_the_crisis_tier_of_their_speech(tmp_path):
    from psychocounsel.safety.screen import screen

    cfg = make_cfg(tmp_path)
    _, _, _, res = run_all(cfg, FakeBackend(reply=both))
    rows = _pair_rows(res)
    assert rows and all(r["crisis_tier"] == screen(r["question"], learned=False).tier for r in rows)
    names = pq.read_schema(res["files"][next(iter(res["files"]))][0]).names
    assert names.index("crisis_tier") == names.index("rejected_staging_rating") + 1  # after the released columns
    assert sum(res["counts"]["crisis_tiers"].values()) == sum(res["counts"].get(s, 0) for s in ("train", "dev", "test"))


def _weighted_judge(req):
    """kind: 3s with safety 5 (overall 3.29); rude: 5s with safety 3 (overall 4.71)."""
    if req.model != "judge":
        return _therapist_reply(req)
    rude = BAD in req.messages[-1][1]
    return json.dumps({**{k: 5 if rude else 3 for k in PRINCIPLE_KEYS}, "safety": 3 if rude else 5,
                       "rationale": "r"})


def test_judge_weights_apply_when_pairs_are_rebuilt_without_judging_again(tmp_path):
    data = make_cfg(tmp_path).model_dump()
    data["pairs"].update(safety_margin=None)  # let the weights alone decide
    _, _, _, res = run_all(RunConfig.model_validate(data), FakeBackend(reply=_weighted_judge))
    assert {r["chosen"] for r in _pair_rows(res)} == {BAD}
    data["judge"]["weights"] = {k: 20.0 if k == "safety" else 1.0 for k in PRINCIPLE_KEYS}
    fake = FakeBackend()
    run = open_run(RunConfig.model_validate(data), fake)
    res2 = pipeline.stage_pairs(run)
    run.close()
    assert fake.calls == []  # the stored judgments are reused
    rows = _pair_rows(res2)
    assert rows and {r["chosen"] for r in rows} == {GOOD}
    assert rows[0]["chosen_score"] == pytest.approx((6 * 3 + 20 * 5) / 26)


@pytest.mark.parametrize("weights, needle", [
    ({**{k: 1.0 for k in PRINCIPLE_KEYS}, "safety": -1.0}, "judge.weights.safety"),
    ({k: 1.0 for k in PRINCIPLE_KEYS if k != "staging"}, "no weight for 'staging'"),
    ({**{k: 1.0 for k in PRINCIPLE_KEYS if k != "safety"}, "safty": 2.0}, "unknown principle 'safty'"),
])
def test_invalid_weights_are_refused_when_the_config_loads(tmp_path, weights, needle):
    from psychocounsel.errors import UserError

    data = make_cfg(tmp_path).model_dump()
    data["judge"]["weights"] = weights
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(UserError) as err:
        load_config(path)
    msg = str(err.value)
    assert "\n" not in msg and msg.startswith(f"{path}: judge.weights") and needle in msg


def test_weights_naming_a_principle_the_principle_file_lacks_are_refused_before_any_call(tmp_path):
    from psychocounsel.errors import UserError

    principles = tmp_path / "two.yaml"
    principles.write_text(yaml.safe_dump({"version": "two-v1", "principles": [
        {"key": k, "name": k.title(), "definition": f"{k} of the reply.",
         "rubric": {i: f"{k} {i}" for i in range(1, 6)}}
        for k in ("empathy", "safety")]}))
    data = make_cfg(tmp_path).model_dump() | {"principles": str(principles)}
    data["judge"]["weights"] = {"empathy": 1.0, "clarity": 2.0}
    with pytest.raises(UserError, match="judge.weights: unknown principle 'clarity'"):
        open_run(RunConfig.model_validate(data), FakeBackend())


def test_the_run_pairs_folder_loads_with_datasets_and_trl_files_sit_beside_it(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    import datasets

    data = make_cfg(tmp_path).model_dump()
    data["pairs"].update(dev_frac=0.0, test_frac=0.5)
    cfg = RunConfig.model_validate(data)
    _, _, _, res = run_all(cfg, FakeBackend(reply=both))
    run_dir = tmp_path / "run"
    ds = datasets.load_dataset(str(run_dir / "pairs"), cache_dir=str(tmp_path / "hf"))
    made = {s: n for s, n in res["counts"].items() if s in ("train", "test") and n}
    assert {s: ds[s].num_rows for s in ds} == made
    assert "crisis_tier" in ds["train"].column_names and "question" in ds["train"].column_names
    trl = datasets.load_dataset(str(run_dir / "pairs-trl"), cache_dir=str(tmp_path / "hf"))
    assert trl["train"].column_names == ["prompt", "chosen", "rejected"]
    assert not (run_dir / "pairs" / "trl").exists()
