"""The evaluation's stages: generate each side's responses, judge every pair in both orders, score each
response on the principles; and the dry-run estimate of what they would spend.

Generation and principle scoring are the data pipeline's own (``dataset.generate.therapist_request`` and
``rubric.score.PrincipleScorer``, called through ``Session.generate`` / ``Session.score``); the pairwise
verdict is the evaluation's (``rubric.pairwise``). Every item ends as ``ok`` or as a recorded ``failed``
row with each attempt's reason, or stays pending when the ``--max-calls`` budget ran out (nothing
recorded, so the next run picks it up; the calls it already made replay from the cache).
"""

from __future__ import annotations

import json
import time
from typing import Any, Iterator

from ..backends import in_flight
from ..backends.base import ChatRequest
from ..dataset.estimate import CHARS_PER_TOKEN, Estimate
from ..dataset.session import OverBudget
from ..dataset.validate import INVALID
from ..errors import BackendError
from ..rubric import pairwise
from ..rubric.score import format_principles, retry_sampling
from ..runner import call_until_parsed, run_pool
from .config import SideConfig
from .results import SIDES
from .session import Evaluation, EvalWriter, ItemRow


async def stage_generate(ev: Evaluation) -> dict[str, int]:
    """Each model side's response to each speech (file sides are read, not generated), checked before any
    judge sees it (``dataset/validate.py``, the pipeline's own check): a cut, garbled or echoed reply is a
    recorded failure (a cut one kept and flagged when ``replies.truncated`` says so)."""
    counts = {"done_before": 0, "generated": 0, "cached": 0, "failed": 0, "truncated": 0, "invalid": 0,
              "over_budget": 0}
    writer = EvalWriter(ev.store)
    callers = ev.callers(writer)
    work: list[tuple[SideConfig, str, str, str, int]] = []
    for _, c in ev.sides():
        if c.responses:
            continue
        keys = [(sid, text, ev.gen_key(c, text)) for sid, text in ev.speeches]
        stored = ev.items([k for *_, k in keys])
        for sid, text, k in keys:
            got = stored.get(k)
            if got is not None and got.status == "ok":
                counts["done_before"] += 1
            else:  # a stored failure starts where it stopped (``Generated.next_attempt``, kept as attempts)
                work.append((c, sid, text, k, got.attempts if got is not None else 0))
    backends = {c.backend for _, c in ev.sides() if c.backend}
    concurrency = sum(in_flight(ev.cfg.backends[b]) for b in backends) or 1

    async def one(item: tuple[SideConfig, str, str, str, int]) -> None:
        c, _, text, key, first = item
        try:
            g = await ev.generate(callers[c.backend], ev.gen_request(c, text), ev.cfg.replies, first)
        except OverBudget:
            counts["over_budget"] += 1
            return
        finally:
            bar.advance()
        counts["failed" if g.status == "failed" else "cached" if g.cached else "generated"] += 1
        counts["truncated"] += g.truncated
        counts["invalid"] += bool(g.error and g.error.startswith(INVALID))
        value = None
        if g.status == "ok" and g.completion is not None:
            value = json.dumps({"text": g.text, "completion_tokens": g.completion.completion_tokens,
                                "prompt_tokens": g.completion.prompt_tokens, "side": c.name,
                                "finish_reason": g.finish_reason, "truncated": g.truncated, "attempt": g.attempt})
        writer.add("eval_items", ItemRow(key, "gen", g.status, value, g.error, g.next_attempt,
                                         json.dumps([g.call_key] if g.call_key else []), time.time()))

    with ev.progress.task("generate", total=len(work)) as bar:
        try:
            await run_pool(iter(work), one, concurrency)
        finally:
            writer.commit()
    return counts


async def stage_judge(ev: Evaluation) -> dict[str, int]:
    """Verdicts in both orders for every speech both sides answered, then (if configured) the scores."""
    resp = ev.responses()
    counts = await judge_verdicts(ev, ev.judge_plan(resp, "verdict"), ev.planned(resp, "verdict"))
    counts["verdicts_done_before"] = ev.counts["verdicts_done_before"]
    if ev.cfg.scores is not None:
        counts.update(await judge_scores(ev, ev.judge_plan(resp, "score"), ev.planned(resp, "score")))
        counts["scores_done_before"] = ev.counts["scores_done_before"]
    return counts


async def judge_verdicts(ev: Evaluation, work: Iterator[tuple], total: int) -> dict[str, int]:
    """Judge each (key, speech id, order, speech, response A, response B); store the positional verdict."""
    pc = ev.cfg.pairwise
    writer = EvalWriter(ev.store)
    caller = ev.callers(writer)[pc.backend]
    counts = {"verdicts_judged": 0, "verdicts_failed": 0, "verdicts_over_budget": 0, "verdict_calls_cached": 0}
    structured = getattr(ev.cfg.backends[pc.backend], "structured_output", False)
    fmt = pairwise.pairwise_response_format() if structured else None

    def record(key: str, status: str, value: dict | None, err: str | None, attempts: int, ck: list) -> None:
        counts["verdicts_judged" if status == "ok" else "verdicts_failed"] += 1
        writer.add("eval_items", ItemRow(key, "verdict", status, json.dumps(value) if value else None, err, attempts,
                                         json.dumps(ck), time.time()))

    async def one_json(item: tuple) -> None:
        key, _, _, speech, a, b = item
        base = pairwise.build_pairwise_messages(ev.principles, ev.pairwise_prompt, speech, a, b)
        try:
            t = await call_until_parsed(
                lambda req: ev.call(caller, req),
                lambda attempt: ChatRequest.chat(pc.model, base, sampling=retry_sampling(pc.sampling, attempt),
                                                 response_format=fmt, tag=f"{ev.pairwise_prompt.version}#{attempt}"),
                pairwise.parse_verdict, (pairwise.VerdictParseError,), pc.max_attempts)
            counts["verdict_calls_cached"] += t.cached
            if t.ok:
                winner, rationale = t.value
                record(key, "ok", {"winner": winner, "rationale": rationale}, None, t.attempts, t.call_keys)
            else:
                record(key, "failed", None, "; ".join(t.errors)[:2000], t.attempts, t.call_keys)
        except OverBudget:
            counts["verdicts_over_budget"] += 1
        finally:
            bar.advance()

    async def one_choice(item: tuple) -> None:
        key, _, _, speech, a, b = item
        try:
            prefix, suffix = pairwise.choice_prefix_and_suffix(ev.principles, ev.pairwise_prompt, speech, a, b)
            ckey = ev.fingerprint({"b": caller.identity(pc.model), "m": pc.model, "p": prefix, "s": suffix,
                                   "c": pairwise.VERDICT_LETTERS, "mode": "choice"})
            try:
                probs, cached = await ev.call_json(
                    caller, ckey, pc.model, json.dumps({"tag": ev.pairwise_prompt.version}),
                    lambda: caller.backend.score_choices(pc.model, prefix, [suffix], pairwise.VERDICT_LETTERS))  # type: ignore[attr-defined]
            except BackendError as e:
                record(key, "failed", None, f"call: {e}", 1, [])
                return
            counts["verdict_calls_cached"] += cached
            p = [float(x) for x in probs[0]]
            winner = pairwise.choice_verdict(p, pc.tie_margin)
            record(key, "ok", {"winner": winner, "rationale": f"p(A)={p[0]:.3f} p(B)={p[1]:.3f}", "probs": p},
                   None, 1, [ckey])
        except OverBudget:
            counts["verdicts_over_budget"] += 1
        finally:
            bar.advance()

    with ev.progress.task(f"pairwise ({pc.mode})", total=total) as bar:
        ev.on_done = bar.advance
        try:
            await run_pool(work, one_choice if pc.mode == "choice" else one_json,
                           in_flight(ev.cfg.backends[pc.backend]))
        finally:
            writer.commit()
            ev.on_done = lambda: None
    return counts


async def judge_scores(ev: Evaluation, work: Iterator[tuple], total: int) -> dict[str, int]:
    """Principle scores for each (key, speech id, side, speech, response), by the data pipeline's judge."""
    jc = ev.cfg.scores
    assert jc is not None and ev.score_prompt is not None
    scorer = ev.scorer(jc, ev.score_prompt)
    writer = EvalWriter(ev.store)
    caller = ev.callers(writer)[jc.backend]
    counts = {"scores_judged": 0, "scores_failed": 0, "scores_over_budget": 0, "score_calls_cached": 0}

    async def one(item: tuple) -> None:
        key, _, _, speech, text = item
        try:
            j = await ev.score(caller, scorer, speech, text)
        except OverBudget:
            counts["scores_over_budget"] += 1
            return
        finally:
            bar.advance()
        counts["score_calls_cached"] += j.cached
        counts["scores_judged" if j.ok else "scores_failed"] += 1
        value = json.dumps({"scores": j.scores, "rationale": j.rationale}) if j.ok else None
        writer.add("eval_items", ItemRow(key, "score", "ok" if j.ok else "failed", value, j.error, j.attempts,
                                         json.dumps(j.call_keys), time.time()))

    with ev.progress.task(f"scores ({jc.mode})", total=total) as bar:
        ev.on_done = bar.advance
        try:
            await run_pool(work, one, in_flight(ev.cfg.backends[jc.backend]))
        finally:
            writer.commit()
            ev.on_done = lambda: None
    return counts


def dry_run(ev: Evaluation) -> dict[str, Any]:
    """Calls, tokens and cost per backend the next run would spend (``dataset/estimate.py``); nothing is called or
    loaded. Speeches whose responses are not generated yet count their judge calls with max-length responses."""
    est = Estimate()
    cfg = ev.cfg
    resp = ev.responses()
    guess_chars: dict[str, int] = {}
    for side, c in ev.sides():
        if c.backend is None:
            continue
        for sid, speech in ev.speeches:
            if resp[side][sid].status != "ok":
                req = ev.gen_request(c, speech)
                est.generation(c.backend, req)
                guess_chars[side] = req.sampling.max_tokens * CHARS_PER_TOKEN
    pc = cfg.pairwise
    shown = pairwise.principle_list(ev.principles) if pc.mode == "choice" else format_principles(ev.principles)
    rubric = len(ev.pairwise_prompt.text) + len(shown)
    verdict_tokens = pc.sampling.max_tokens if pc.mode == "json" else 0
    for item in ev.judge_plan(resp, "verdict"):
        est.add(pc.backend, rubric + len(item[3]) + len(item[4]) + len(item[5]), verdict_tokens, model=pc.model)
    scorer = ev.scorer(cfg.scores, ev.score_prompt) if cfg.scores and ev.score_prompt else None
    score_model = cfg.scores.model if cfg.scores else None
    for item in ev.judge_plan(resp, "score"):
        est.add(cfg.scores.backend, scorer.prompt_chars(len(item[3]), len(item[4])),  # type: ignore[union-attr]
                scorer.max_completion_tokens, model=score_model)  # type: ignore[union-attr]
    for sid, speech in ev.speeches:
        if not any(resp[s][sid].status == "pending" for s in SIDES):
            continue
        chars = {s: guess_chars.get(s, len(v) if isinstance(v := resp[s][sid].value, str) else 0) for s in SIDES}
        est.add(pc.backend, 2 * (rubric + len(speech) + sum(chars.values())), 2 * verdict_tokens, calls=2,
                model=pc.model)
        if scorer is not None:
            for s in SIDES:
                est.add(cfg.scores.backend, scorer.prompt_chars(len(speech), chars[s]),  # type: ignore[union-attr]
                        scorer.max_completion_tokens, model=score_model)
    return {"speeches": len(ev.speeches), "backends": est.by_backend(cfg.backends), "max_calls": ev.budget.limit}
