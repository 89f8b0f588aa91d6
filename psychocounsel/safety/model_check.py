"""An LLM's second opinion on the crisis screen's tier, for users with a capable model.

    await model_check(texts, backend, model) -> [ModelCheck | None]   an LLM's tier, or a recorded failure
    run_model_check(...)                                               the same through a SQLite call cache
    make_check_backend(kind, base_url, api_key_env, concurrency)       the backend it runs on (CLI and benches)

The combined tier is never below the rules' tier: the model may raise a tier, never lower one. With
``overrule``, the model reviews what the screen cannot read well, and its tier replaces it: what the learned layer
raised, and the rules' suicidal thoughts or wishes to die read from words alone (``screen.REVIEWABLE_KINDS``, the
`possible` tier). Such a flag is cleared when a capable model answers ``none``, with the model's reason as the
evidence; every other rule signal (attempts, self-harm, methods, plans, intent) still stands, and the learned layer
flags at its lower ``checked_threshold``, for recall, since the model reviews each flag. The learned layer hears
distress as risk on real forum posts, and the rules read suicidal thoughts that have ended as current
(docs/CRISIS_SCREEN.md); this is the second reader that can tell them apart. The embedded model cannot (it is at
chance as a judge).
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ..backends.base import Backend, ChatRequest, Sampling
from ..errors import BackendError
from ..rubric.replies import ConflictingKeys, json_objects
from .screen import TIER_RANK, TIERS, Screen, Tier, screen_many

_I = re.IGNORECASE

# --------------------------------------------------------------------------------------- model check
CHECK_PROMPT = "crisis_check_v4"
CHECK_FORMAT = {"type": "json_schema", "json_schema": {"name": "crisis_tier", "strict": True, "schema": {
    "type": "object", "properties": {"tier": {"type": "string", "enum": list(TIERS)}, "reason": {"type": "string"}},
    "required": ["tier", "reason"], "additionalProperties": False}}}
# Greedy and short: the answer is one word and a sentence; 200 tokens leaves room for a chatty model's preamble.
CHECK_SAMPLING = Sampling(temperature=0.0, max_tokens=200, seed=0)


class CheckReplyError(ValueError):
    """A model's reply that carries no valid tier; it is recorded as a failure, never guessed."""


@dataclass(frozen=True)
class ModelCheck:
    screen_tier: Tier  # the rules' tier, raised by the learned layer where it read the speech
    model_tier: Tier | None  # None: the call or its parsing failed (see ``error``)
    reason: str = ""
    error: str | None = None
    raw: str = ""
    prompt_version: str = ""
    # The tier of the rules' evidence the model may not clear, where it reviews the screen (``overrule``:
    # ``Screen.firm_tier``); None where it may only raise.
    floor: Tier | None = None

    @property
    def agrees(self) -> bool | None:
        return None if self.model_tier is None else self.model_tier == self.screen_tier

    @property
    def tier(self) -> Tier:
        """The higher of the model's tier and the screen's, or, where the model reviews the screen, of the model's
        and the firm rules' (``floor``): a model never silences an attempt, self-harm, a method or a plan the
        rules found, and a failed check changes nothing."""
        if self.model_tier is None:
            return self.screen_tier
        base = self.screen_tier if self.floor is None else self.floor
        return max(base, self.model_tier, key=TIER_RANK.__getitem__)

    @property
    def overruled(self) -> bool:
        """Whether the model lowered the screen's tier (its reason is the evidence)."""
        return TIER_RANK[self.tier] < TIER_RANK[self.screen_tier]


def parse_check_reply(text: str) -> tuple[Tier, str]:
    """(tier, reason) from the model's JSON; raises CheckReplyError for anything else (the judges' reader:
    a key given twice with different values is unreadable, as there)."""
    try:
        objects, _ = json_objects(text)
    except ConflictingKeys as e:
        raise CheckReplyError(str(e)) from None
    for obj in objects:
        tier = obj.get("tier")
        if isinstance(tier, str) and tier.strip().lower() in TIERS:
            return tier.strip().lower(), str(obj.get("reason", ""))[:500]  # type: ignore[return-value]
        if "tier" in obj:
            raise CheckReplyError(f"tier {tier!r} is not one of {', '.join(TIERS)}")
    raise CheckReplyError("JSON object without a 'tier' key" if objects else "no JSON object in the reply")


async def model_check(texts: Sequence[str], backend: Backend, model: str, *, screens: Sequence[Screen] | None = None,
                      check_all: bool = False, overrule: bool = False, prompt: str = CHECK_PROMPT,
                      sampling: Sampling = CHECK_SAMPLING, concurrency: int = 8) -> list[ModelCheck | None]:
    """Ask ``model`` for each speech's tier. Only speeches the screen flags are sent unless ``check_all``;
    the others get None. A failed call or an unparseable reply is a ModelCheck with ``model_tier=None``.
    ``overrule``: the model's tier replaces the learned layer's raises and the rules' ideation read from words
    alone (never the firm rules' tier, ``Screen.firm_tier``); screens the caller passes should then come from
    ``screen_many(texts, checked=True)``, the layer's threshold for a reviewed screen.

    The model sees the speech alone, not the rules' tier or evidence, so its answer is a second opinion
    rather than an echo. Caching is the caller's: wrap ``backend`` as the stages do.
    """
    from ..rubric.prompts import load_prompt

    p = load_prompt(prompt)
    p.require("user", "speech")
    system = p.section("system")
    screens = list(screens) if screens is not None else screen_many(texts, checked=overrule)
    if len(screens) != len(texts):
        raise ValueError("model_check: texts and screens differ in length")
    gate = asyncio.Semaphore(concurrency)

    def checked(s: Screen, tier: Tier | None, **kw) -> ModelCheck:
        return ModelCheck(s.tier, tier, prompt_version=p.version, floor=s.firm_tier if overrule else None,
                          **kw)

    async def one(text: str, s: Screen) -> ModelCheck:
        req = ChatRequest.chat(model, [{"role": "system", "content": system},
                                       {"role": "user", "content": p.render("user", speech=text)}],
                               sampling=sampling, response_format=CHECK_FORMAT, tag=f"crisis_check:{p.version}")
        async with gate:
            try:
                c = await backend.complete(req)
            except BackendError as e:
                return checked(s, None, error=f"backend: {e}")
        try:
            tier, reason = parse_check_reply(c.text)
        except CheckReplyError as e:
            return checked(s, None, error=f"unparseable reply: {e}", raw=c.text)
        return checked(s, tier, reason=reason, raw=c.text)

    todo = [i for i, s in enumerate(screens) if check_all or s.tier != "none"]
    done = await asyncio.gather(*(one(texts[i], screens[i]) for i in todo))
    out: list[ModelCheck | None] = [None] * len(texts)
    for i, r in zip(todo, done):
        out[i] = r
    return out


def make_check_backend(kind: str, base_url: str | None, api_key_env: str | None, concurrency: int) -> Backend:
    """The backend a check runs on: ``local`` (transformers) or ``openai`` (any OpenAI-compatible server at
    ``base_url``, OpenAI's by default; its key read from the variable ``api_key_env``, none when empty)."""
    from ..backends import make_backend
    from ..config import LocalBackendConfig, OpenAIBackendConfig

    if kind == "local":
        return make_backend(LocalBackendConfig())
    return make_backend(OpenAIBackendConfig(base_urls=[base_url or "https://api.openai.com/v1"],
                                            api_key_env=api_key_env or None, concurrency=concurrency))


def run_model_check(texts: Sequence[str], screens: Sequence[Screen], backend: Backend, model: str, cache: Path,
                    check_all: bool, concurrency: int, overrule: bool = False) -> list[ModelCheck | None]:
    """``model_check`` through a call cache (SQLite at ``cache``): a rerun pays no call twice."""
    from ..runner import CachedCaller
    from ..store import Store, Writer

    store = Store(cache)
    writer = Writer(store)
    caller = CachedCaller(store, writer, "crisis_check", backend)

    class Cached:  # the Backend model_check expects, answering from the cache first
        async def complete(self, req: ChatRequest):
            return (await caller.complete(req))[0]

    async def go() -> list[ModelCheck | None]:
        try:
            return await model_check(texts, Cached(), model, screens=screens, check_all=check_all,
                                      overrule=overrule, concurrency=concurrency)
        finally:
            writer.commit()
            close = getattr(backend, "aclose", None)
            if close is not None:
                await close()

    try:
        return asyncio.run(go())
    finally:
        store.close()
