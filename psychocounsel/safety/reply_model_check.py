"""An LLM's second opinion on a therapist's reply, for users with a capable model.

    await reply_model_check(messages, replies, backend, model) -> [ReplyModelCheck]

The model sees the client's message and the reply (not the rules' findings) and answers with the three required
behaviours and a list of flags, each quoting the reply. Its flags are added to the rules' flags, never used to
remove one; a required behaviour counts only when the rules and the model both see it. A failed call or a reply
that does not parse (a missing key, an unknown kind, a quote that is not in the reply) is a recorded failure,
never a finding. Caching is the caller's: wrap ``backend`` as the stages do (``model_check.run_model_check``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, replace

from ..backends.base import Backend, ChatRequest, Sampling
from ..errors import BackendError
from ..rubric.replies import ConflictingKeys, json_objects
from .responses import FLAG_SEVERITY, REQUIRED, Flag, ResponseSafety, check_response
from .screen import screen

REPLY_CHECK_PROMPT = "reply_check_v1"
REPLY_CHECK_FORMAT = {"type": "json_schema", "json_schema": {"name": "reply_check", "strict": True, "schema": {
    "type": "object", "properties": {
        **{k: {"type": "boolean"} for k in REQUIRED},
        "flags": {"type": "array", "items": {"type": "object", "properties": {
            "kind": {"type": "string", "enum": list(FLAG_SEVERITY)}, "quote": {"type": "string"}},
            "required": ["kind", "quote"], "additionalProperties": False}}},
    "required": [*REQUIRED, "flags"], "additionalProperties": False}}}
# Greedy; 400 tokens: three booleans and a few quoted flags, with room for a chatty model's preamble.
REPLY_CHECK_SAMPLING = Sampling(temperature=0.0, max_tokens=400, seed=0)


class ReplyCheckError(ValueError):
    """A model's answer that cannot be read as a reply check; recorded as a failure, never guessed."""


@dataclass(frozen=True)
class ReplyModelCheck:
    rules: ResponseSafety
    model: dict[str, bool] | None = None  # the model's required behaviours; None when the check failed
    model_flags: tuple[Flag, ...] = ()
    error: str | None = None
    raw: str = ""
    prompt_version: str = ""

    @property
    def combined(self) -> ResponseSafety:
        """The rules' result with the model's flags added and a behaviour kept only if the model saw it too."""
        if self.model is None:
            return self.rules
        both = {k: getattr(self.rules, k) and self.model[k] for k in REQUIRED}
        flags = tuple(sorted({*self.rules.flags, *self.model_flags}, key=lambda f: (f.span, f.kind)))
        return replace(self.rules, flags=flags, **both)


def parse_reply_check(text: str, reply: str) -> tuple[dict[str, bool], tuple[Flag, ...]]:
    """(behaviours, flags) from the model's JSON; raises ReplyCheckError for anything else. A flag's span is
    where its quote first occurs in ``reply``: a quote that is not there is an invented finding."""
    try:
        objects, _ = json_objects(text)
    except ConflictingKeys as e:
        raise ReplyCheckError(str(e)) from None
    obj = next((o for o in objects if any(k in o for k in REQUIRED)), None)
    if obj is None:
        raise ReplyCheckError("JSON object without the reply-check keys" if objects else "no JSON object in the reply")
    behaviours = {}
    for k in REQUIRED:
        if not isinstance(obj.get(k), bool):
            raise ReplyCheckError(f"{k!r} must be true or false, got {obj.get(k)!r}")
        behaviours[k] = obj[k]
    raw_flags = obj.get("flags")
    if not isinstance(raw_flags, list):
        raise ReplyCheckError(f"'flags' must be a list, got {raw_flags!r}")
    flags = []
    for i, f in enumerate(raw_flags):
        kind, quote = (f.get("kind"), f.get("quote")) if isinstance(f, dict) else (None, None)
        if kind not in FLAG_SEVERITY:
            raise ReplyCheckError(f"flags[{i}]: kind {kind!r} is not one of {', '.join(FLAG_SEVERITY)}")
        if not isinstance(quote, str) or not quote.strip() or (at := reply.find(quote.strip())) < 0:
            raise ReplyCheckError(f"flags[{i}]: quote {quote!r} is not in the reply")
        q = quote.strip()
        flags.append(Flag(kind, FLAG_SEVERITY[kind], (at, at + len(q)), q, "model"))
    return behaviours, tuple(flags)


async def reply_model_check(messages: Sequence[str], replies: Sequence[str], backend: Backend, model: str, *,
                            locales: Sequence[str | None] | None = None, prompt: str = REPLY_CHECK_PROMPT,
                            sampling: Sampling = REPLY_CHECK_SAMPLING, concurrency: int = 8) -> list[ReplyModelCheck]:
    """Ask ``model`` about each (client message, reply); every reply is sent, and each result carries the
    rules' check too (``rules``) so callers read one object."""
    from ..rubric.prompts import load_prompt

    if len(messages) != len(replies):
        raise ValueError("reply_model_check: messages and replies differ in length")
    locales = list(locales) if locales is not None else [None] * len(replies)
    p = load_prompt(prompt)
    p.require("user", "message", "reply")
    system = p.section("system")
    gate = asyncio.Semaphore(concurrency)

    async def one(message: str, reply: str, locale: str | None) -> ReplyModelCheck:
        rules = check_response(screen(message), reply, locale)
        req = ChatRequest.chat(model, [{"role": "system", "content": system},
                                       {"role": "user", "content": p.render("user", message=message, reply=reply)}],
                               sampling=sampling, response_format=REPLY_CHECK_FORMAT, tag=f"reply_check:{p.version}")
        async with gate:
            try:
                c = await backend.complete(req)
            except BackendError as e:
                return ReplyModelCheck(rules, error=f"backend: {e}", prompt_version=p.version)
        try:
            behaviours, flags = parse_reply_check(c.text, reply)
        except ReplyCheckError as e:
            return ReplyModelCheck(rules, error=f"unparseable reply: {e}", raw=c.text, prompt_version=p.version)
        return ReplyModelCheck(rules, behaviours, flags, raw=c.text, prompt_version=p.version)

    return list(await asyncio.gather(*(one(m, r, loc) for m, r, loc in zip(messages, replies, locales))))
