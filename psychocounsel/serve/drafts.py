"""N drafts for one client message: the request, the calls, the style checks and the reward model's ranking.

    draft_request(message, history, system, style, instruction, model, sampling, seed) -> ChatRequest
    await generate(backend, requests) -> [Completion | BackendError]     all N at once
    rank(scorer, prompt, texts, blocked) -> [Ranking]                    overall + per principle + one reason

Ranking: by the reward model's overall score, except that a draft the reply checks block is never ranked above
one they pass (the same safety-first order the per-principle reward model uses for online DPO). Without a
reward model the drafts keep the order they were written in and the page says they are unranked.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import Field

from ..backends.base import Backend, ChatRequest, Completion, Sampling
from ..config import SamplingConfig, Strict
from ..errors import BackendError
from ..training.scoring import OVERALL, Scorer, as_heads

CHARS_PER_TOKEN = 4  # the backends' own estimate (testing/fakeserver.py, openai_http usage guesses)


class Style(Strict):
    """A clinician's style controls, applied to every draft they ask for."""

    max_chars: int | None = Field(None, ge=40, le=4000, description="Longest draft in characters (None: no cap). "
                                  "Asked of the model, and a longer draft is flagged.")
    one_question: bool = Field(False, description="At most one question per draft; more is flagged.")


def style_instruction(style: Style) -> str:
    parts = []
    if style.max_chars:
        parts.append(f"Keep the reply under {style.max_chars} characters.")
    if style.one_question:
        parts.append("Ask at most one question.")
    return " ".join(parts)


_QUESTION = re.compile(r"\?+")


def style_flags(style: Style, text: str) -> list[dict[str, Any]]:
    """Where a draft breaks the clinician's own style controls: shown, never blocking."""
    out = []
    if style.max_chars and len(text) > style.max_chars:
        out.append({"kind": "too_long", "severity": "low", "text": "",
                    "detail": f"{len(text)} characters, cap {style.max_chars}"})
    if style.one_question and len(_QUESTION.findall(text)) > 1:
        out.append({"kind": "many_questions", "severity": "low", "text": "",
                    "detail": f"{len(_QUESTION.findall(text))} questions, at most one asked for"})
    return out


def draft_request(messages: Sequence[tuple[str, str]], *, system: str, style: Style, instruction: str, model: str,
                  sampling: SamplingConfig, seed: int, tag: str) -> ChatRequest:
    """One draft's call: the system prompt (+ the gate's safety instruction, + the style), then the conversation
    so far as (role, text) turns ending with the client's message. ``seed`` differs per draft so they differ."""
    system_text = "\n\n".join(p for p in (system, instruction, style_instruction(style)) if p)
    max_tokens = sampling.max_tokens
    if style.max_chars:  # room for the cap and a little over, so an overlong draft is flagged, not cut
        max_tokens = min(max_tokens, style.max_chars // CHARS_PER_TOKEN * 2 + 16)
    return ChatRequest(model, (("system", system_text), *messages),
                       sampling=Sampling(sampling.temperature, sampling.top_p, max_tokens, seed), tag=tag)


async def generate(backend: Backend, requests: Sequence[ChatRequest]) -> list[Completion | BackendError]:
    """All drafts at once; a failed call is returned as its error (shown on the page), never dropped."""
    got = await asyncio.gather(*(backend.complete(r) for r in requests), return_exceptions=True)
    out: list[Completion | BackendError] = []
    for g in got:
        if isinstance(g, BaseException) and not isinstance(g, BackendError):
            if isinstance(g, asyncio.CancelledError):
                raise g
            out.append(BackendError(f"{type(g).__name__}: {g}", retryable=False))
        else:
            out.append(g)
    return out


@dataclass(frozen=True)
class Ranking:
    """One draft's place: ``rank`` 1 = first shown; scores None when no reward model is configured."""

    index: int
    rank: int
    overall: float | None
    principles: dict[str, float]
    reason: str


def _ordinal(k: int) -> str:
    return f"{k}{'th' if 10 <= k % 100 <= 20 else {1: 'st', 2: 'nd', 3: 'rd'}.get(k % 10, 'th')}"


def rank(scorer: Scorer | None, prompt: str, texts: Sequence[str], blocked: Sequence[bool]) -> list[Ranking]:
    """Rankings in the drafts' order (``index``), each with its rank and a one-line reason."""
    n = len(texts)
    if n == 0:
        return []
    if scorer is None:
        return [Ranking(i, i + 1, None, {}, "unranked: no reward model is configured"
                        + ("; fails a safety check" if blocked[i] else "")) for i in range(n)]
    heads = as_heads(scorer.score_batch([prompt] * n, list(texts)), n, getattr(scorer, "name", "reward model"))
    overall = heads[OVERALL]
    order = sorted(range(n), key=lambda i: (blocked[i], -overall[i], i))
    places = {i: k + 1 for k, i in enumerate(order)}
    principles = {h: v for h, v in heads.items() if h != OVERALL}
    out = []
    for i in range(n):
        per = {h: round(float(v[i]), 3) for h, v in principles.items()}
        out.append(Ranking(i, places[i], round(float(overall[i]), 3), per,
                           _reason(i, places[i], n, overall, principles, blocked[i])))
    return out


def _reason(i: int, place: int, n: int, overall: Any, principles: dict[str, Any], blocked: bool) -> str:
    if blocked:
        return f"ranked {_ordinal(place)} of {n}: fails a safety check, so below every draft that passes"
    head = f"{_ordinal(place)} of {n} by the reward model ({overall[i]:.2f})"
    if not principles or n < 2:
        return head
    # Against the other drafts' mean per principle: what sets this one apart, up and down.
    diffs = {h: float(v[i] - (v.sum() - v[i]) / (n - 1)) for h, v in principles.items()}
    best = max(diffs, key=diffs.get)
    worst = min(diffs, key=diffs.get)
    return f"{head}; strongest on {best} ({diffs[best]:+.2f} vs the others), weakest on {worst} ({diffs[worst]:+.2f})"
