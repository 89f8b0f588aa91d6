"""Requests-per-minute and tokens-per-minute limits as reserving token buckets.

Why reservations: with hundreds of coroutines waiting, each ``reserve(n)`` debits the bucket at
once and returns how long its caller must sleep. Callers are served in arrival order (no thundering
herd re-checking a shared counter), and the core is a pure function of a clock, so it is tested
with a fake clock instead of real sleeps.

Why the bucket holds one second of budget rather than a whole minute: OpenAI enforces per-minute
limits over shorter windows ("rate limits may be quantized", e.g. 60,000 rpm as 1,000 per second,
platform.openai.com/docs/guides/rate-limits), so a full minute's burst at start would draw 429s.
"""

from __future__ import annotations

import asyncio
import time
from typing import Callable


class TokenBucket:
    """Refills at ``per_minute / 60`` per second up to ``capacity``; may go into debt.

    A single reservation larger than the capacity (a long prompt under a small TPM) is allowed
    once the bucket is full, leaving it negative, rather than blocking forever.
    """

    def __init__(self, per_minute: float, capacity: float | None = None,
                 clock: Callable[[], float] = time.monotonic):
        if per_minute <= 0:
            raise ValueError("per_minute must be > 0")
        self.rate = per_minute / 60.0
        self.capacity = capacity if capacity is not None else max(1.0, self.rate)
        self.clock = clock
        self.level = self.capacity
        self.stamp = clock()

    def _refill(self, now: float) -> None:
        if now > self.stamp:
            self.level = min(self.capacity, self.level + (now - self.stamp) * self.rate)
            self.stamp = now

    def reserve(self, n: float = 1.0) -> float:
        """Debit ``n`` now; return the seconds the caller must wait before using it."""
        now = self.clock()
        self._refill(now)
        need = min(n, self.capacity)  # oversized requests wait only for a full bucket
        wait = 0.0 if self.level >= need else (need - self.level) / self.rate
        self.level -= n
        # Later callers see the debt and queue behind this one: level < 0 already encodes it.
        return wait

    def refund(self, n: float) -> None:
        """Give back (n > 0) or charge more (n < 0) once the real usage is known."""
        self._refill(self.clock())
        self.level = min(self.capacity, self.level + n)


class RateLimiter:
    """Optional RPM and TPM buckets behind one ``acquire``; ``None`` limits cost nothing."""

    def __init__(self, rpm: float | None = None, tpm: float | None = None,
                 clock: Callable[[], float] = time.monotonic):
        self.requests = TokenBucket(rpm, clock=clock) if rpm else None
        self.tokens = TokenBucket(tpm, clock=clock) if tpm else None

    @property
    def active(self) -> bool:
        return self.requests is not None or self.tokens is not None

    def reserve(self, tokens: float) -> float:
        """Debit one request and ``tokens`` tokens; return the longer of the two waits."""
        wait = 0.0
        if self.requests is not None:
            wait = self.requests.reserve(1.0)
        if self.tokens is not None:
            wait = max(wait, self.tokens.reserve(tokens))
        return wait

    async def acquire(self, tokens: float) -> None:
        wait = self.reserve(tokens)
        if wait > 0:
            await asyncio.sleep(wait)

    def reconcile(self, estimated: float, actual: float) -> None:
        """Replace the token estimate by the real usage the server reported."""
        if self.tokens is not None and actual > 0:
            self.tokens.refund(estimated - actual)
