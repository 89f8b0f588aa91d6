"""One run folder and what every stage in it shares; the data pipeline's ``Run`` and the evaluation's
``Evaluation`` are both a ``Session``.

It lives in ``dataset/`` because the data pipeline is what the evaluation builds on: the evaluation
generates with the pipeline's therapist requests (``generate.py``) and scores with its principle judge,
through the pipeline's run folder, here; nothing here imports the evaluation.

A session is a folder holding its SQLite store and the resolved config, the principles and prompts
(resolved against the config's folder), the backends (made on first use, closed at the end), each model's
identity (a local model's weight fingerprint), the store's key style, progress bars and a call budget.
It also makes the two calls both pipelines make: a therapist generation and a principle judgment, each
through the call cache (and budget), each ending as a value or as a recorded failure, never a guess.

Why one class under both rather than a helper module beside them: the two differ only in what their store
holds (responses and judgments; evaluation items) and in how they plan. Everything that touches a backend
or the cache is this code, so a fix in one pipeline reaches the other. (When each had its own copy, both
inlined the G-Eval expected score without the row-length check the tested ``geval_scores`` has.)
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Awaitable, Callable

from ..backends import make_backend
from ..backends.base import Backend, ChatRequest, Completion
from ..config import JudgeConfig
from ..errors import BackendError, UserError
from ..rubric.principles import PrincipleSet, load_principles
from ..rubric.prompts import Prompt, load_prompt
from ..rubric.score import (
    GEVAL_RATIONALE,
    SCORE_CHOICES,
    JudgeParseError,
    PrincipleScorer,
    retry_sampling,
)
from ..runner import CachedCaller, StageProgress, call_until_parsed
from ..store import Store, Writer
from .validate import ReplyRules, check_reply, finish_reason

# A stored error is a reason to read, not a log: long backend bodies are cut here.
MAX_ERROR_CHARS = 2000


# -- keys -------------------------------------------------------------------------------------------------
# Every key a store holds (response ids, judge fingerprints, item keys) is a BLAKE2b digest of the canonical
# JSON of everything that shapes what it names: an unchanged plan finds its stored rows, a changed one never
# reuses them. There are two styles because data runs and evaluations wrote their stores before they shared
# this code, and a folder written then must keep its keys byte for byte (tests/test_keys.py pins them).
# Chat calls are keyed apart, by ``backends.base.cache_key``. A new kind of key takes the style of the
# store it lives in; it never invents another.


def fingerprint(obj: Any, digest_size: int, *, ensure_ascii: bool = True) -> str:
    """Hex BLAKE2b digest of ``obj`` as sorted-key JSON."""
    blob = json.dumps(obj, sort_keys=True, ensure_ascii=ensure_ascii)
    return hashlib.blake2b(blob.encode(), digest_size=digest_size).hexdigest()


@dataclass(frozen=True)
class KeyStyle:
    """How one kind of store spells its keys."""

    digest_size: int
    ensure_ascii: bool

    def __call__(self, obj: Any) -> str:
        return fingerprint(obj, self.digest_size, ensure_ascii=self.ensure_ascii)


RUN_KEYS = KeyStyle(digest_size=8, ensure_ascii=True)  # data runs (run.sqlite), since their first store
EVAL_KEYS = KeyStyle(digest_size=12, ensure_ascii=False)  # evaluations (eval.sqlite), since theirs


class OverBudget(Exception):
    """The --max-calls cap is reached: the item stays pending for the next run."""


@dataclass
class CallBudget:
    """Counts calls that reach a model (cache hits are free). ``limit=None``: no cap."""

    limit: int | None = None
    used: int = 0
    refused: int = 0

    def take(self) -> None:
        if self.limit is not None and self.used >= self.limit:
            self.refused += 1
            raise OverBudget
        self.used += 1


@dataclass
class Generated:
    """One therapist generation: ``ok`` with its text, or ``failed`` with the reason (``dataset/validate.py``).

    ``truncated``: the reply was cut by max_tokens (a failure, or kept and flagged, as the rules say).
    ``attempt``: which attempt this outcome is (0: the request as planned; later ones a new seed).
    ``next_attempt``: where a rerun of a failure starts. Past an invalid reply, so it asks anew instead of
    replaying the rejected reply from the cache; at a call that never answered, to ask it again; at a
    truncated reply, which then replays from the cache for free under the rules of that run (a new seed
    would be cut by the same cap, and paid for).
    """

    status: str
    text: str | None
    error: str | None
    completion: Completion | None  # None when the call itself failed
    call_key: str | None
    cached: bool = False
    finish_reason: str | None = None
    truncated: bool = False
    attempt: int = 0
    next_attempt: int = 0


@dataclass
class Judged:
    """One principle judgment: scores (and the judge's rationale), or a failure's reasons; the calls it took."""

    scores: dict[str, float] | None
    rationale: str
    error: str | None
    attempts: int
    call_keys: list[str] = field(default_factory=list)
    cached: int = 0  # calls answered from the cache

    @property
    def ok(self) -> bool:
        return self.scores is not None


def retry_request(req: ChatRequest, attempt: int) -> ChatRequest:
    """Attempt ``attempt`` (> 0) of a therapist request whose earlier replies were invalid: the judges' retry
    sampling (a new seed; some temperature if greedy), tagged so its cache key is its own."""
    return ChatRequest(req.model, req.messages, sampling=retry_sampling(req.sampling, attempt),
                       response_format=req.response_format, tag=f"{req.tag}#retry{attempt}")


class Callers(dict):
    """One ``CachedCaller`` per backend name for a stage's writer, made on first use."""

    def __init__(self, session: "Session", writer: Writer):
        super().__init__()
        self.session, self.writer = session, writer
        self.in_flight: dict = {}  # shared: identical calls through two backend names are still paid once

    def __missing__(self, name: str) -> CachedCaller:
        caller = self[name] = CachedCaller(self.session.store, self.writer, name, self.session.backend(name),
                                           self.in_flight)
        return caller


class Session:
    """A run folder: store, resolved config, principles, prompts, backends, key style, progress, budget.

    ``cfg`` is a ``RunConfig`` or an ``EvalConfig``; what a session reads of it (``principles``,
    ``backends``) both have. ``folder`` is resolved against ``base_dir`` when relative.
    """

    def __init__(self, cfg: Any, folder: Path, store_name: str, *, base_dir: Path, progress: StageProgress,
                 budget: CallBudget, keys: KeyStyle):
        self.cfg = cfg
        self.base_dir = Path(base_dir)
        self.dir = folder if folder.is_absolute() else self.base_dir / folder
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
        except FileExistsError:
            raise UserError(f"{self.dir}: exists and is not a folder (the config's run folder)") from None
        except OSError as e:  # a parent that is a file, no permission, a read-only disk
            raise UserError(f"{self.dir}: cannot make the run folder: {e.strerror}") from None
        self.store = Store(self.dir / store_name)
        self.progress, self.budget = progress, budget
        self.fingerprint = keys  # the store's key style: its keys must stay what earlier versions wrote
        self.principles: PrincipleSet = load_principles(self.path(cfg.principles))
        self._backends: dict[str, Backend] = {}
        self._identities: dict[tuple[str, str], Any] = {}
        (self.dir / "config.resolved.json").write_text(cfg.model_dump_json(indent=2))

    def path(self, spec: str) -> str:
        """Built-in names stay as they are; relative file paths resolve against the config's folder."""
        p = self.base_dir / spec
        return str(p) if ("/" in spec or spec.endswith((".yaml", ".yml", ".txt"))) and p.exists() else spec

    def prompt(self, spec: str) -> Prompt:
        return load_prompt(self.path(spec))

    # -- backends -------------------------------------------------------------------------------------------
    def backend(self, name: str) -> Backend:
        if name not in self._backends:
            self._backends[name] = make_backend(self.cfg.backends[name])
        return self._backends[name]

    def set_backend(self, name: str, backend: Backend) -> None:
        """Answer for backend ``name`` with ``backend`` (a fake model in tests, a model already loaded)."""
        self._backends[name] = backend

    def identity(self, backend: str, model: str) -> Any:
        """What identifies a model's answers: for local models a fingerprint of the weight files (cheap: no
        model is loaded), for servers the backend type (the model name is keyed beside it)."""
        if self.cfg.backends[backend].type != "local":
            return self.cfg.backends[backend].type
        if (backend, model) not in self._identities:
            self._identities[backend, model] = self.backend(backend).identity(model)  # type: ignore[call-arg]
        return self._identities[backend, model]

    def callers(self, writer: Writer) -> Callers:
        return Callers(self, writer)

    def scorer(self, judge: JudgeConfig, prompt: Prompt) -> PrincipleScorer:
        """The principle scorer of a ``JudgeConfig`` (the pipeline's judge, the evaluation's scores)."""
        structured = getattr(self.cfg.backends[judge.backend], "structured_output", False)
        return PrincipleScorer(self.principles, prompt, judge.model, judge.sampling, judge.mode,
                               judge.max_attempts, structured=structured)

    def usage(self) -> dict[str, Any]:
        """What each HTTP backend spent so far (requests, retries, failures, tokens, cost)."""
        return {n: b.usage for n, b in self._backends.items() if getattr(b, "usage", None) is not None}

    async def aclose(self) -> None:
        for b in self._backends.values():
            await b.aclose()
        self._backends.clear()

    def close(self) -> None:
        self.store.close()

    # -- calls ----------------------------------------------------------------------------------------------
    async def call(self, caller: CachedCaller, req: ChatRequest) -> tuple[Completion, str, bool]:
        """A cached chat call; a cache miss counts against the budget (checked before the call when capped)."""
        capped = self.budget.limit is not None
        if capped and caller.lookup(caller.key(req)) is None:
            self.budget.take()
        c, key, cached = await caller.complete(req)
        if not cached and not capped:
            self.budget.used += 1
        return c, key, cached

    async def call_json(self, caller: CachedCaller, key: str, model: str, request: str,
                        compute: Callable[[], Awaitable[Any]]) -> tuple[Any, bool]:
        """A cached non-chat result (choice probabilities) under ``key``, counted as ``call`` counts."""
        capped = self.budget.limit is not None
        if capped and caller.lookup(key) is None:
            self.budget.take()
        value, cached = await caller.cached_json(key, model, request, compute)
        if not cached and not capped:
            self.budget.used += 1
        return value, cached

    async def generate(self, caller: CachedCaller, req: ChatRequest, rules: ReplyRules,
                       first_attempt: int = 0) -> Generated:
        """A therapist's reply to one speech, checked (``validate.check_reply``) before anything can judge it.

        An invalid reply is asked again with a new seed, ``rules.max_attempts`` calls in all, from
        ``first_attempt`` (a stored failure's ``next_attempt``); a truncated one is not (the same cap cuts the
        next one too). ``OverBudget`` propagates.
        """
        speech = next((c for r, c in reversed(req.messages) if r == "user"), "")
        system = next((c for r, c in req.messages if r == "system"), None)
        out = Generated("failed", None, "no attempt", None, None, attempt=first_attempt, next_attempt=first_attempt)
        for attempt in range(first_attempt, first_attempt + rules.max_attempts):
            r = req if attempt == 0 else retry_request(req, attempt)
            try:
                c, key, cached = await self.call(caller, r)
            except BackendError as e:
                return Generated("failed", None, str(e)[:MAX_ERROR_CHARS], None, None, attempt=attempt,
                                 next_attempt=attempt)
            check = check_reply(c.text, speech=speech, system=system, finish=finish_reason(c),
                                completion_tokens=c.completion_tokens, max_tokens=r.sampling.max_tokens,
                                rules=rules)
            out = Generated("ok" if check.ok else "failed", c.text.strip() if check.ok else None, check.problem, c,
                            key, cached, check.finish_reason, check.truncated, attempt,
                            attempt + 1 if check.invalid else attempt)
            if not check.invalid:
                return out
        return out

    async def score(self, caller: CachedCaller, scorer: PrincipleScorer, speech: str, response: str) -> Judged:
        """Principle scores of one response: retried on unreadable replies up to the scorer's attempts, then
        a recorded failure. ``OverBudget`` propagates (the item stays pending)."""
        if scorer.mode == "geval":
            return await self._score_geval(caller, scorer, speech, response)
        t = await call_until_parsed(lambda req: self.call(caller, req),
                                    lambda attempt: scorer.request(speech, response, attempt),
                                    scorer.parse, (JudgeParseError,), scorer.max_attempts)
        if t.ok:
            return Judged(t.value.scores, t.value.rationale, None, t.attempts, t.call_keys, t.cached)
        return Judged(None, "", "; ".join(t.errors)[:MAX_ERROR_CHARS], t.attempts, t.call_keys, t.cached)

    async def _score_geval(self, caller: CachedCaller, scorer: PrincipleScorer, speech: str,
                           response: str) -> Judged:
        prefix, suffixes = scorer.geval_prompt(speech, response)
        model = scorer.model
        key = self.fingerprint({"b": caller.identity(model), "m": model, "p": prefix, "s": suffixes,
                                "c": SCORE_CHOICES, "mode": "geval"})
        try:
            probs, cached = await self.call_json(
                caller, key, model, json.dumps({"tag": scorer.prompt.version, "geval": True}),
                lambda: caller.backend.score_choices(model, prefix, suffixes, SCORE_CHOICES))  # type: ignore[attr-defined]
        except BackendError as e:
            return Judged(None, "", f"call: {e}"[:MAX_ERROR_CHARS], 1)
        try:
            scores = scorer.geval_scores(probs)
        except ValueError as e:
            return Judged(None, "", f"parse: {e}"[:MAX_ERROR_CHARS], 1, [key], int(cached))
        return Judged(scores, GEVAL_RATIONALE, None, 1, [key], int(cached))
