"""The evaluation's judging stages (pairwise verdicts, absolute scores) and its dry-run estimate.

Split from ``evaluate.py`` to keep each module readable; the ``Evaluation`` object holds the store, the
prompts, the backends and the ``--max-calls`` budget. Every item ends as ``ok`` or as a recorded
``failed`` row with each attempt's reason, or stays pending when the budget ran out (nothing recorded,
so the next run picks it up; the calls it already made replay from the cache).
"""

from __future__ import annotations

import json
import time
from collections import defaultdict
from typing import TYPE_CHECKING, Any, Iterator

from ..rubric import pairwise as eval_judge, score as judge_core
from ..backends import in_flight
from ..backends.base import ChatRequest
from ..errors import BackendError
from ..runner import CachedCaller, call_until_parsed, retry_sampling, run_pool

if TYPE_CHECKING:
    from .evaluate import Evaluation

CHOICES_15 = ["1", "2", "3", "4", "5"]
# Characters per token for estimates: English text with BPE tokenizers averages ~4 (as pipeline.dry_run).
CHARS_PER_TOKEN = 4


async def judge_verdicts(ev: "Evaluation", work: Iterator[tuple], total: int) -> dict[str, int]:
    """Judge each (key, speech id, order, speech, response A, response B); store the positional verdict."""
    from .evaluate import EvalWriter, OverBudget, _fp

    pc = ev.cfg.pairwise
    writer = EvalWriter(ev.store)
    caller = CachedCaller(ev.store, writer, pc.backend, ev.backend(pc.backend))
    counts = {"verdicts_judged": 0, "verdicts_failed": 0, "verdicts_over_budget": 0, "verdict_calls_cached": 0}
    structured = getattr(ev.cfg.backends[pc.backend], "structured_output", False)
    fmt = eval_judge.pairwise_response_format() if structured else None

    def record(key: str, status: str, value: dict | None, err: str | None, attempts: int, ck: list) -> None:
        counts["verdicts_judged" if status == "ok" else "verdicts_failed"] += 1
        writer.add("eval_items", (key, "verdict", status, json.dumps(value) if value else None, err, attempts,
                                  json.dumps(ck), time.time()))

    async def one_json(item: tuple) -> None:
        key, _, _, speech, a, b = item
        base = eval_judge.build_pairwise_messages(ev.principles, ev.pairwise_prompt, speech, a, b)
        try:
            t = await call_until_parsed(
                lambda req: ev.call(caller, req),
                lambda attempt: ChatRequest.chat(pc.model, base, sampling=retry_sampling(pc.sampling, attempt),
                                                 response_format=fmt, tag=f"{ev.pairwise_prompt.version}#{attempt}"),
                eval_judge.parse_verdict, (eval_judge.VerdictParseError,), pc.max_attempts)
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
            prefix, suffix = eval_judge.choice_prefix_and_suffix(ev.principles, ev.pairwise_prompt, speech, a, b)
            ckey = _fp({"b": caller.identity(pc.model), "m": pc.model, "p": prefix, "s": suffix,
                        "c": eval_judge.CHOICES, "mode": "choice"})
            try:
                probs, cached = await ev.call_json(
                    caller, ckey, pc.model, ev.pairwise_prompt.version,
                    lambda: caller.backend.score_choices(pc.model, prefix, [suffix], eval_judge.CHOICES))
            except BackendError as e:
                record(key, "failed", None, f"call: {e}", 1, [])
                return
            counts["verdict_calls_cached"] += cached
            p = [float(x) for x in probs[0]]
            winner = eval_judge.choice_verdict(p, pc.tie_margin)
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


async def judge_scores(ev: "Evaluation", work: Iterator[tuple], total: int) -> dict[str, int]:
    """Absolute 1-5 scores per principle for each (key, speech id, side, speech, response), as judge.py does."""
    from .evaluate import EvalWriter, OverBudget, _fp

    jc = ev.cfg.scores
    assert jc is not None and ev.score_prompt is not None
    writer = EvalWriter(ev.store)
    caller = CachedCaller(ev.store, writer, jc.backend, ev.backend(jc.backend))
    counts = {"scores_judged": 0, "scores_failed": 0, "scores_over_budget": 0, "score_calls_cached": 0}
    structured = getattr(ev.cfg.backends[jc.backend], "structured_output", False)
    fmt = judge_core.judge_response_format(ev.principles) if structured else None

    def record(key: str, status: str, value: dict | None, err: str | None, attempts: int, ck: list) -> None:
        counts["scores_judged" if status == "ok" else "scores_failed"] += 1
        writer.add("eval_items", (key, "score", status, json.dumps(value) if value else None, err, attempts,
                                  json.dumps(ck), time.time()))

    async def one_json(item: tuple) -> None:
        key, _, _, speech, text = item
        base = judge_core.build_judge_messages(ev.principles, ev.score_prompt, speech, text)
        try:
            t = await call_until_parsed(
                lambda req: ev.call(caller, req),
                lambda attempt: ChatRequest.chat(jc.model, base, sampling=retry_sampling(jc.sampling, attempt),
                                                 response_format=fmt, tag=f"{ev.score_prompt.version}#{attempt}"),
                lambda reply: judge_core.parse_judgment(reply, ev.principles), (judge_core.JudgeParseError,),
                jc.max_attempts)
            counts["score_calls_cached"] += t.cached
            if t.ok:
                record(key, "ok", {"scores": t.value.scores, "rationale": t.value.rationale}, None, t.attempts,
                       t.call_keys)
            else:
                record(key, "failed", None, "; ".join(t.errors)[:2000], t.attempts, t.call_keys)
        except OverBudget:
            counts["scores_over_budget"] += 1
        finally:
            bar.advance()

    async def one_geval(item: tuple) -> None:
        key, _, _, speech, text = item
        try:
            prefix, suffixes = judge_core.geval_prefix_and_suffixes(ev.principles, ev.score_prompt, speech, text)
            ckey = _fp({"b": caller.identity(jc.model), "m": jc.model, "p": prefix, "s": suffixes,
                        "c": CHOICES_15, "mode": "geval"})
            try:
                probs, cached = await ev.call_json(
                    caller, ckey, jc.model, ev.score_prompt.version,
                    lambda: caller.backend.score_choices(jc.model, prefix, suffixes, CHOICES_15))
            except BackendError as e:
                record(key, "failed", None, f"call: {e}", 1, [])
                return
            counts["score_calls_cached"] += cached
            scores = {k: round(judge_core.expected_score(p), 4) for k, p in zip(ev.principles.keys, probs)}
            record(key, "ok", {"scores": scores, "rationale": "G-Eval expected score"}, None, 1, [ckey])
        except OverBudget:
            counts["scores_over_budget"] += 1
        finally:
            bar.advance()

    with ev.progress.task(f"scores ({jc.mode})", total=total) as bar:
        ev.on_done = bar.advance
        try:
            await run_pool(work, one_geval if jc.mode == "geval" else one_json, in_flight(ev.cfg.backends[jc.backend]))
        finally:
            writer.commit()
            ev.on_done = lambda: None
    return counts


def dry_run(ev: "Evaluation") -> dict[str, Any]:
    """Calls and tokens the next run would spend per backend (upper bounds: every pending item is a miss,
    retries not counted ahead), and cost where prices are configured. Nothing is called or loaded."""
    est: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    cfg = ev.cfg
    resp = ev.responses()
    guess_chars: dict[str, int] = {}
    for side, c in ev._sides():
        if c.backend is None:
            continue
        for sid, speech in ev.speeches:
            if resp[side][sid][0] != "ok":
                req = ev.gen_request(c, speech)
                e = est[c.backend]
                e["calls"] += 1
                e["prompt_tokens"] += sum(len(m[1]) for m in req.messages) / CHARS_PER_TOKEN
                e["completion_tokens"] += req.sampling.max_tokens
                guess_chars[side] = req.sampling.max_tokens * CHARS_PER_TOKEN
    pc = cfg.pairwise
    shown = eval_judge.principle_list(ev.principles) if pc.mode == "choice" else judge_core.format_principles(ev.principles)
    rubric = len(ev.pairwise_prompt.text) + len(shown)
    for item in ev.judge_plan(resp, "verdict"):
        e = est[pc.backend]
        e["calls"] += 1
        e["prompt_tokens"] += (rubric + len(item[3]) + len(item[4]) + len(item[5])) / CHARS_PER_TOKEN
        e["completion_tokens"] += pc.sampling.max_tokens if pc.mode == "json" else 0
    score_rubric = len(ev.score_prompt.text) + len(judge_core.format_principles(ev.principles)) if ev.score_prompt else 0
    for item in ev.judge_plan(resp, "score"):
        e = est[cfg.scores.backend]  # type: ignore[union-attr]
        e["calls"] += 1
        e["prompt_tokens"] += (score_rubric + len(item[3]) + len(item[4])) / CHARS_PER_TOKEN
        e["completion_tokens"] += cfg.scores.sampling.max_tokens if cfg.scores.mode == "json" else 0  # type: ignore[union-attr]
    # speeches whose responses are not generated yet: their judge calls, with max-length responses
    pending = [sid for sid, _ in ev.speeches if any(resp[s][sid][0] == "pending" for s in ("policy", "reference"))]
    text = dict(ev.speeches)
    for sid in pending:
        chars = {s: guess_chars.get(s, len(resp[s][sid][1] or "") if isinstance(resp[s][sid][1], str) else 0)
                 for s in ("policy", "reference")}
        e = est[pc.backend]
        e["calls"] += 2
        e["prompt_tokens"] += 2 * (rubric + len(text[sid]) + sum(chars.values())) / CHARS_PER_TOKEN
        e["completion_tokens"] += 2 * pc.sampling.max_tokens if pc.mode == "json" else 0
        if cfg.scores is not None:
            e = est[cfg.scores.backend]
            e["calls"] += 2
            e["prompt_tokens"] += (2 * (score_rubric + len(text[sid])) + sum(chars.values())) / CHARS_PER_TOKEN
            e["completion_tokens"] += 2 * cfg.scores.sampling.max_tokens if cfg.scores.mode == "json" else 0
    out: dict[str, Any] = {}
    for name, e in est.items():
        b = cfg.backends[name]
        cost = None
        if b.price_input_per_mtok is not None and b.price_output_per_mtok is not None:
            cost = (e["prompt_tokens"] * b.price_input_per_mtok + e["completion_tokens"] * b.price_output_per_mtok) / 1e6
        out[name] = {"calls": int(e["calls"]), "prompt_tokens": int(e["prompt_tokens"]),
                     "completion_tokens": int(e["completion_tokens"]), "cost_usd": cost}
    return {"speeches": len(ev.speeches), "backends": out, "max_calls": ev.budget.limit}
