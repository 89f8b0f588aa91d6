"""The one small interface every model backend speaks, and the request/response types.

A backend turns a ``ChatRequest`` into a ``Completion`` (async, so many calls can be in flight).
Backends that can read next-token probabilities (the ``local`` transformers backend) also
implement ``score_choices`` for G-Eval-style judging. Everything else (caching, storing,
progress, failure bookkeeping) lives in the stage runner, not in the backends.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol, runtime_checkable


@dataclass(frozen=True)
class Sampling:
    """Decoding settings. Part of every cache key: a different temperature is a different call."""

    temperature: float = 0.7
    top_p: float = 1.0
    max_tokens: int = 256
    seed: int | None = None


@dataclass(frozen=True)
class ChatRequest:
    """One chat-completions call. ``tag`` is free provenance (e.g. prompt version) and IS part of the key."""

    model: str
    messages: tuple[tuple[str, str], ...]  # ((role, content), ...): hashable and order-preserving
    sampling: Sampling = field(default_factory=Sampling)
    response_format: dict[str, Any] | None = None  # OpenAI structured output (json_schema), if any
    tag: str = ""

    @staticmethod
    def chat(model: str, messages: list[dict[str, str]], **kw: Any) -> "ChatRequest":
        return ChatRequest(model=model, messages=tuple((m["role"], m["content"]) for m in messages), **kw)

    def message_dicts(self) -> list[dict[str, str]]:
        return [{"role": r, "content": c} for r, c in self.messages]


@dataclass
class Completion:
    """What every backend returns for a ChatRequest."""

    text: str
    prompt_tokens: int = 0
    completion_tokens: int = 0
    latency_s: float = 0.0
    finish_reason: str | None = None
    raw: str = ""  # the raw reply body (JSON text for HTTP backends), kept so parsers can be rerun
    base_url: str | None = None  # which replica answered, for HTTP backends


@runtime_checkable
class Backend(Protocol):
    """A model backend. ``identity(model)`` goes into every cache key: the backend type and, where the
    backend can tell cheaply, a fingerprint of ``model`` (local backends hash the weight files)."""

    def identity(self, model: str | None = None) -> dict[str, Any]: ...

    async def complete(self, request: ChatRequest) -> Completion: ...

    async def aclose(self) -> None: ...


@runtime_checkable
class ChoiceScorer(Protocol):
    """Backends that can score a fixed set of answer tokens after a prompt (G-Eval).

    ``score_choices(prefix_messages, suffixes, choices)`` returns, for each suffix, the
    probability of each choice string (e.g. "1".."5") as the next token after
    prefix+suffix, renormalised over the choices. The shared prefix is encoded once.
    """

    async def score_choices(
        self, model: str, prefix_messages: list[dict[str, str]], suffixes: list[str], choices: list[str]
    ) -> list[list[float]]: ...


def cache_key(identity: dict[str, Any], request: ChatRequest) -> str:
    """Hash of everything that shapes an answer: backend identity, model, messages, sampling, format, tag."""
    payload = {
        "backend": identity,
        "model": request.model,
        "messages": request.messages,
        "sampling": asdict(request.sampling),
        "response_format": request.response_format,
        "tag": request.tag,
    }
    blob = json.dumps(payload, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.blake2b(blob.encode(), digest_size=16).hexdigest()
