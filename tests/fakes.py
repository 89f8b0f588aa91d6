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


# Six client speeches in the paper's range (100-1,000 characters), for stage tests.
SPEECHES = [
    "I have been feeling so low for months now. I can't get out of bed and nothing I used to love feels worth it anymore.",
    "My partner and I fight every night about money, and I'm starting to wonder whether we even want the same future together.",
    "Work has become unbearable. My manager criticises everything I do in front of the team and I dread every single Monday.",
    "Since my mother died last spring I keep replaying our last conversation, wishing I had said something kinder to her.",
    "I get panic attacks on the train, my heart races and I feel like I'm going to faint, so I've started walking two hours to work.",
    "My teenage son won't talk to me anymore. He stays in his room all day and I don't know how to reach him without a fight.",
]
