"""Run many model calls: a bounded worker pool, the call cache, and progress bars.

The pool pulls work lazily from an iterator, so a 100k-speech stage holds only the calls in
flight in memory. Each worker handles its own failures (a failed call is recorded, not raised);
an unexpected exception cancels the stage (TaskGroup) after the writer commits what finished.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable, Iterator, TypeVar

from rich.console import Console
from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn,
                           TimeRemainingColumn)

from .backends.base import Backend, ChatRequest, Completion, cache_key, json_string
from .errors import BackendError
from .store import Store, Writer

T = TypeVar("T")


@dataclass
class Tries:
    """What ``call_until_parsed`` did: the parsed value (None when no attempt parsed), each failed attempt's
    reason ("call: ..." / "parse: ..."), the call-cache keys of the calls made, and how many were cache hits."""

    value: Any = None
    ok: bool = False
    attempts: int = 0
    errors: list[str] = field(default_factory=list)
    call_keys: list[str] = field(default_factory=list)
    cached: int = 0


async def call_until_parsed(call: Callable[[ChatRequest], Awaitable[tuple[Completion, str, bool]]],
                            request_for: Callable[[int], ChatRequest], parse: Callable[[str], T],
                            parse_errors: tuple[type[Exception], ...], max_attempts: int) -> Tries:
    """Call and parse until a reply parses, at most ``max_attempts`` times; a non-retryable backend error
    stops early. Nothing is ever turned into a value: a reply that does not parse is a reason in ``errors``.
    Used by every judge (pipeline scores, evaluation verdicts and scores)."""
    t = Tries()
    for attempt in range(max_attempts):
        try:
            c, key, cached = await call(request_for(attempt))
        except BackendError as e:
            t.errors.append(f"call: {e}")
            if not e.retryable:
                break
            continue
        t.call_keys.append(key)
        t.cached += cached
        try:
            t.value = parse(c.text)
        except parse_errors as e:
            t.errors.append(f"parse: {getattr(e, 'reason', e)}")
            continue
        t.ok, t.attempts = True, attempt + 1
        return t
    t.attempts = len(t.errors)
    return t


async def run_pool(items: Iterator[T], fn: Callable[[T], Awaitable[None]], concurrency: int) -> None:
    """Apply ``fn`` to every item with at most ``concurrency`` in flight.

    A fixed set of worker coroutines sharing one iterator creates no task per item and holds no
    queue; the whole pipeline then costs 0.19-0.29 ms of CPU per call (bench/bench_pipeline.py).
    Safe because the event loop is single-threaded and ``next(items)`` never awaits.
    """

    async def worker() -> None:
        for item in items:
            await fn(item)

    try:
        async with asyncio.TaskGroup() as tg:
            for _ in range(max(1, concurrency)):
                tg.create_task(worker())
    except ExceptionGroup as eg:
        # every worker hits the same bug: report it once, not 256 times
        raise eg.exceptions[0] from None


def request_summary(req: ChatRequest) -> str:
    """What the calls table keeps of a request: the varying part in full, the rest as a hash.

    The system prompt and the judge rubric come from versioned prompt files (named in ``tag``);
    storing them on every row would multiply the database size for nothing.
    """
    # The text is exactly ``json.dumps({"tag", "last", "messages_sha", "sampling", "structured"},
    # ensure_ascii=False)`` as earlier versions stored it (tests/test_runner.py pins it), assembled from the
    # request's shared ``message_json`` instead of encoding the long messages twice more.
    pieces = req.message_json
    spaced = b"[" + b", ".join([b"[%b, %b]" % rc for rc in pieces]) + b"]"  # json.dumps' default separators
    s = req.sampling
    summary = b'{"tag": %b, "last": %b, "messages_sha": "%b", "sampling": %b, "structured": %b}' % (
        json_string(req.tag), pieces[-1][1] if pieces else b'""',
        hashlib.blake2b(spaced, digest_size=8).hexdigest().encode(),
        json.dumps([s.temperature, s.top_p, s.max_tokens, s.seed]).encode(),
        b"false" if req.response_format is None else b"true")
    return summary.decode()


class CachedCaller:
    """Calls a backend through the run's cache: a call that once succeeded is never paid again.

    Identical calls in flight at the same moment (two profiles that differ only in name, a judge asked the
    same thing twice) share one request: the first makes it, the others wait on its future (``in_flight``,
    one per cache key; pass one dict to every caller of a stage so callers of different backend names share
    it too). Without that each was paid, and the cache kept whichever answer came last while the others had
    already been scored from their own: a stored judgment that its cached reply did not match.
    """

    def __init__(self, store: Store, writer: Writer, name: str, backend: Backend,
                 in_flight: dict[str, asyncio.Future] | None = None):
        self.store, self.writer, self.name, self.backend = store, writer, name, backend
        self.in_flight: dict[str, asyncio.Future] = {} if in_flight is None else in_flight
        self._identity: dict[str, dict[str, Any]] = {}
        self.hits = 0
        self.misses = 0

    def identity(self, model: str) -> dict[str, Any]:
        """Backend identity for ``model``, once per stage: local backends add a fingerprint of the
        model's files, so changed weights under the same name never hit old answers."""
        if model not in self._identity:
            self._identity[model] = self.backend.identity(model)
        return self._identity[model]

    def key(self, req: ChatRequest) -> str:
        return cache_key(self.identity(req.model), req)

    def lookup(self, key: str) -> Completion | None:
        # an answer may still wait in the writer, uncommitted (a CallRow), else it is in the store (a StoredCall)
        r = self.writer.buffered_call(key) or self.store.get_call(key)
        if r is None:
            return None
        return Completion(text=r.text, raw=r.raw, prompt_tokens=r.prompt_tokens, completion_tokens=r.completion_tokens,
                          latency_s=r.latency_s)

    async def complete(self, req: ChatRequest) -> tuple[Completion, str, bool]:
        """Returns (completion, cache key, was_cached). Raises BackendError after the backend's retries."""
        key = self.key(req)
        hit = self.lookup(key)
        if hit is not None:
            self.hits += 1
            return hit, key, True
        c, paid = await self._once(key, lambda: self.backend.complete(req),
                                   lambda c: self.writer.call(key, self.name, req.model, request_summary(req), c))
        return c, key, not paid

    async def _once(self, key: str, make: Callable[[], Awaitable[T]], store: Callable[[T], None]) -> tuple[T, bool]:
        """``make()`` once for all identical calls in flight; (its result, whether this caller paid for it).
        The result is in the writer (``store``) before any waiter sees it, so every later lookup finds it."""
        pending = self.in_flight.get(key)
        if pending is not None:
            value = await asyncio.shield(pending)  # a waiter's cancellation must not cancel the call
            self.hits += 1
            return value, False
        fut = self.in_flight[key] = asyncio.get_running_loop().create_future()
        try:
            value = await make()
        except BaseException as e:
            if isinstance(e, Exception):
                fut.set_exception(e)  # each waiter fails as this caller does: one failed call, not several
                fut.exception()  # marks it read: with no waiter, asyncio must not log it as lost
            else:
                fut.cancel()
            raise
        finally:
            del self.in_flight[key]
        self.misses += 1
        store(value)
        fut.set_result(value)
        return value, True

    async def cached_json(self, key: str, model: str, request: str, compute: Callable[[], Awaitable[Any]]) -> tuple[Any, bool]:
        """Cache any JSON-able result (e.g. G-Eval probabilities) in the calls table under ``key``."""
        hit = self.lookup(key)
        if hit is not None:
            self.hits += 1
            return json.loads(hit.raw), True
        t0 = time.perf_counter()
        value, paid = await self._once(key, compute, lambda v: self.writer.call(
            key, self.name, model, request, Completion(text="", raw=json.dumps(v), latency_s=time.perf_counter() - t0)))
        return value, not paid


class StageProgress:
    """A rich progress bar with rate and ETA that costs nothing per item (refresh is time-based)."""

    def __init__(self, console: Console | None = None, enabled: bool = True):
        self.console = console or Console(stderr=True)
        self.enabled = enabled

    @contextmanager
    def task(self, description: str, total: int, completed: int = 0):
        if not self.enabled:
            yield _NullBar()
            return
        progress = Progress(
            TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
            TextColumn("{task.fields[rate]}"), TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
            console=self.console, refresh_per_second=5, transient=False,
        )
        with progress:
            tid = progress.add_task(description, total=total, completed=completed, rate="")
            bar = _Bar(progress, tid, completed)
            try:
                yield bar
            finally:
                bar.refresh()


class _NullBar:
    def advance(self, n: int = 1) -> None:
        pass


class _Bar:
    def __init__(self, progress: Progress, tid: Any, start: int):
        self.progress, self.tid, self.start = progress, tid, start
        self.n = 0
        self.t0 = self.last = time.monotonic()

    def advance(self, n: int = 1) -> None:
        self.n += n
        now = time.monotonic()
        if now - self.last >= 0.2:  # updating rich per item costs ~50 us; per 0.2 s costs nothing
            self.last = now
            self.refresh(now)

    def refresh(self, now: float | None = None) -> None:
        rate = self.n / max((now or time.monotonic()) - self.t0, 1e-9)
        self.progress.update(self.tid, completed=self.start + self.n, rate=f"{rate:,.1f}/s")
