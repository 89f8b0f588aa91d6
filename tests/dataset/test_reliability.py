"""The whole data pipeline against a misbehaving OpenAI-compatible server.

500s, 429s with Retry-After, hangs (timeouts), dropped connections and garbled judge replies: the run
finishes, every planned response is stored as ok or as a recorded failure, every ok response is judged or
has a recorded judge failure, nothing is lost, and a rerun makes no call for what is already stored.
"""

import json

from psychocounsel.dataset import pipeline
from psychocounsel.config import RunConfig
from psychocounsel.runner import StageProgress
from psychocounsel.testing.fakeserver import fake_server

N_SPEECHES = 30


def speeches_file(tmp_path):
    path = tmp_path / "speeches.jsonl"
    with path.open("w") as f:
        for i in range(N_SPEECHES):
            text = (f"Client {i}: I have been struggling with my sleep and my job for {i + 2} months, and I keep "
                    f"worrying about number {i * 7919 % 1000} things that might go wrong at home.")
            f.write(json.dumps({"text": text}) + "\n")
    return path


def config(tmp_path, base_url):
    return RunConfig.model_validate({
        "run_dir": str(tmp_path / "run"),
        "speeches": {"path": str(speeches_file(tmp_path)), "near_dup_threshold": 1.0},
        "backends": {"srv": {"type": "openai", "base_urls": [base_url], "api_key_env": None, "concurrency": 16,
                             "timeout_s": 0.5, "max_retries": 3, "backoff_base_s": 0.01, "backoff_max_s": 0.2}},
        "therapists": {"k": 3, "profiles": [{"name": f"t{i}", "backend": "srv", "model": f"m{i}"} for i in range(4)]},
        "judge": {"backend": "srv", "model": "judge", "max_attempts": 2},
    })


def run_stages(cfg):
    run = pipeline.Run(cfg, progress=StageProgress(enabled=False))
    try:
        out = pipeline.run_all(run, report=False)
        return run, out["generate"], out["judge"], out["pairs"], pipeline.status(run)
    finally:
        run.close()


def test_faulty_server_run_finishes_with_every_outcome_accounted_for(tmp_path):
    faults = dict(latency=0.005, p500=0.15, p429=0.1, retry_after=0.05, p_hang=0.05, p_drop=0.05, p_garble=0.15,
                  seed=7)
    planned = N_SPEECHES * 3
    with fake_server(**faults) as srv:
        cfg = config(tmp_path, srv.base_url)
        run, gen, jud, res, st = run_stages(cfg)
        stats = srv.stats()
    # the server really misbehaved, in every way asked for
    for action in ("500", "429", "hang", "drop", "garble"):
        assert stats.get(action, 0) > 0, (action, stats)
    # nothing lost: every planned response is stored, as ok or as a recorded failure
    assert st["generate"]["planned"] == planned and st["generate"]["pending"] == 0
    assert gen["generated"] + gen["failed"] == planned
    # every ok response is judged or has a recorded failure, never a default score
    ok = st["generate"]["ok"]
    assert jud["judged"] + jud["failed"] == ok
    assert st["judge"]["planned"] == ok and st["judge"]["pending"] == 0
    assert jud["judged"] > 0.8 * ok  # retries recover most faults
    from psychocounsel.store import Store

    con = Store(cfg.run_dir + "/run.sqlite").con
    for status, scores, error in con.execute("SELECT status, scores, error FROM judgments"):
        assert (status == "ok") == (scores is not None) and (status == "failed") == bool(error)
    for status, text, error in con.execute("SELECT status, text, error FROM responses"):
        assert (status == "ok") == bool(text) and (status == "failed") == bool(error)

    # a rerun on a healthy server calls only for what failed before
    with fake_server(latency=0.0) as srv2:
        cfg2 = cfg.model_copy(update={"backends": {"srv": cfg.backends["srv"].model_copy(
            update={"base_urls": [srv2.base_url]})}})
        _, gen2, jud2, _, st2 = run_stages(cfg2)
        calls = srv2.stats()["requests"]
    assert gen2["done_before"] == gen["generated"] and jud2["done_before"] == jud["judged"]
    assert {k: st2["generate"][k] for k in ("planned", "ok", "failed", "pending")} == {
        "planned": planned, "ok": planned, "failed": 0, "pending": 0}
    # a failed response costs one generation plus at most two judge attempts; a failed judgment at most two
    # new attempts (bad replies already cached replay for free): nothing that succeeded is asked again
    assert calls <= 3 * gen["failed"] + 2 * jud["failed"]
