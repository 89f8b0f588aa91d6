"""A fake model with queued replies, for tests (never among the user's choices)."""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Callable

from psychocounsel.backends.base import ChatRequest, Completion
from psychocounsel.errors import BackendError


class FakeBackend:
    """Answers from a queue of replies, or from ``reply(request)``; counts every call.

    A queued ``BackendError`` is raised instead of answered. ``probs`` feeds ``score_choices``.
    """

    def __init__(self, replies: list | None = None, reply: Callable[[ChatRequest], str] | None = None,
                 probs: Callable[[list[dict], str], list[float]] | None = None, name: str = "fake"):
        self.queue = deque(replies or [])
        self.reply = reply
        self.probs = probs
        self.name = name
        self.calls: list[ChatRequest] = []
        self.score_calls = 0
        self.closed = False

    def identity(self, model: str | None = None) -> dict:
        return {"type": "fake", "name": self.name}

    async def complete(self, request: ChatRequest) -> Completion:
        self.calls.append(request)
        await asyncio.sleep(0)
        item = self.queue.popleft() if self.queue else self.reply(request) if self.reply else "ok"
        if isinstance(item, BaseException):
            raise item
        return Completion(text=item, prompt_tokens=10, completion_tokens=len(item.split()), raw=f'{{"text": {item!r}}}')

    async def score_choices(self, model, prefix_messages, suffixes, choices):
        self.score_calls += 1
        await asyncio.sleep(0)
        return [self.probs(prefix_messages, s) for s in suffixes]

    async def aclose(self) -> None:
        self.closed = True


def failing(msg: str = "boom", retryable: bool = True) -> BackendError:
    return BackendError(msg, status=500, retryable=retryable)
