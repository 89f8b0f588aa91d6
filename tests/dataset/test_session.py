"""The data pipeline and the evaluation generate and judge through one session: same requests, same checks.

Each test runs both on a fake model with the same therapist profile and the same principle judge, and
compares what reached the model or what was stored.
"""

import json

import pytest

from fakes import FakeBackend
from psychocounsel import PRINCIPLE_KEYS
from psychocounsel.config import RunConfig
from psychocounsel.dataset import pipeline
from psychocounsel.evaluation.config import EvalConfig
from psychocounsel.evaluation.evaluate import evaluate
from psychocounsel.evaluation.session import Evaluation
from psychocounsel.runner import StageProgress
from psychocounsel.dataset.session import CallBudget, OverBudget

SPEECH = ("Since the layoff I sit in the car outside the house every evening because I can't face telling "
          "my wife that I still haven't found anything.")
SYSTEM = "You are a warm, careful therapist."
SAMPLING = {"temperature": 0.7, "max_tokens": 300, "seed": 3}
REPLY = "That sounds like a heavy secret to carry alone. What do you imagine would happen if you told her?"


def judge_reply(req):
    return json.dumps({"rationale": "fine", **{k: 4 for k in PRINCIPLE_KEYS}})


def reply(req):
    return judge_reply(req) if req.model == "judge" else REPLY


def backend(local: bool) -> dict:
    return {"type": "local"} if local else {"type": "openai", "base_urls": ["http://127.0.0.1:9/v1"],
                                            "api_key_env": None}


def run_pipeline(tmp_path, fake, local=False, **judge):
    tmp_path.mkdir(parents=True, exist_ok=True)
    src = tmp_path / "speeches.jsonl"
    src.write_text(json.dumps({"text": SPEECH}) + "\n")
    profile = {"backend": "fake", "model": "therapist", "system_prompt": SYSTEM, "sampling": SAMPLING}
    cfg = RunConfig.model_validate({
        "run_dir": str(tmp_path / "run"), "speeches": {"path": str(src), "min_chars": 10},
        "backends": {"fake": backend(local)},
        "therapists": {"k": 2, "profiles": [{"name": "a", **profile}, {"name": "b", **profile}]},
        "judge": {"backend": "fake", "model": "judge", "max_attempts": 2, **judge}})
    run = pipeline.Run(cfg, progress=StageProgress(enabled=False))
    run.set_backend("fake", fake)
    try:
        pipeline.run_all(run, report=False)
        return run.store.con.execute("SELECT status, scores, error FROM judgments").fetchall()
    finally:
        run.close()


def run_evaluation(tmp_path, fake, local=False, **scores):
    tmp_path.mkdir(parents=True, exist_ok=True)
    src = tmp_path / "speeches.jsonl"
    src.write_text(json.dumps({"text": SPEECH}) + "\n")
    side = {"backend": "fake", "model": "therapist", "system_prompt": SYSTEM, "sampling": SAMPLING}
    cfg = EvalConfig.model_validate({
        "name": "same", "out_dir": str(tmp_path / "eval"),
        "speeches": {"source": "file", "path": str(src), "min_chars": 10}, "backends": {"fake": backend(local)},
        "policy": {"name": "pol", **side}, "reference": {"name": "ref", **side},
        "pairwise": {"backend": "fake", "model": "pairwise", **({"mode": "choice"} if local else {})},
        "scores": {"backend": "fake", "model": "judge", "max_attempts": 2, **scores},
        "bootstrap": {"n_boot": 0}})
    ev = Evaluation(cfg, progress=StageProgress(enabled=False), budget=CallBudget())
    ev.set_backend("fake", fake)
    try:
        evaluate(ev)
        return ev.store.con.execute("SELECT status, value, error FROM eval_items WHERE kind='score'").fetchall()
    finally:
        ev.close()


def test_both_send_the_same_therapist_and_judge_requests(tmp_path):
    data, ev = FakeBackend(reply=reply), FakeBackend(
        reply=lambda r: '{"winner": "A", "rationale": "x"}' if r.model == "pairwise" else reply(r))
    run_pipeline(tmp_path / "run", data)
    run_evaluation(tmp_path / "eval", ev)
    for model in ("therapist", "judge"):
        # the tag of a custom system prompt is spelled in each store's own key style, so it is left out
        sent = {(c.messages, c.sampling, json.dumps(c.response_format)) for c in data.calls if c.model == model}
        assert sent == {(c.messages, c.sampling, json.dumps(c.response_format)) for c in ev.calls if c.model == model}
        assert len(sent) == 1, model  # one speech, one reply: one distinct request each
    assert {c.tag for c in data.calls if c.model == "judge"} == {c.tag for c in ev.calls if c.model == "judge"}


@pytest.mark.parametrize("bad", [
    lambda rows: rows[:-1],  # a row short: one principle would go unscored
    lambda rows: [r[:4] for r in rows],  # four probabilities for five digits
])
def test_a_malformed_probability_reply_is_a_recorded_failure_in_both(tmp_path, bad):
    class Garbled(FakeBackend):
        async def score_choices(self, model, prefix_messages, suffixes, choices):
            rows = await super().score_choices(model, prefix_messages, suffixes, choices)
            return bad(rows) if choices == ["1", "2", "3", "4", "5"] else rows

    def probs(prefix, suffix):
        return [0.6, 0.4] if "Better response" in suffix else [0.1, 0.2, 0.4, 0.2, 0.1]

    stored = run_pipeline(tmp_path / "run", Garbled(reply=reply, probs=probs), local=True, mode="geval")
    assert stored and all(st == "failed" and scores is None and err.startswith("parse: ") for st, scores, err in stored)
    items = run_evaluation(tmp_path / "eval", Garbled(reply=reply, probs=probs), local=True, mode="geval")
    assert items and all(st == "failed" and value is None and err.startswith("parse: ") for st, value, err in items)


def test_the_budget_counts_misses_and_stops_at_its_cap(tmp_path):
    budget = CallBudget(limit=1)
    budget.take()
    with pytest.raises(OverBudget):
        budget.take()
    assert (budget.used, budget.refused) == (1, 1)
