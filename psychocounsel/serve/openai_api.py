"""An OpenAI-compatible chat API in front of the policy model, with the crisis gate applied.

    POST /v1/chat/completions   stream true (server-sent events) or false; n choices
    GET  /v1/models             the one policy model this deployment drafts with

Every call needs ``Authorization: Bearer <clinician or admin token>``. The gate screens the client's turns
(role ``user``); at possible or high risk the model is told the safety instruction, and any choice that fails
the reply checks is replaced by the gate's own reply with ``finish_reason: "content_filter"``: still a valid
``chat.completion`` that any OpenAI client parses. The extra ``psychocounsel`` field carries the tier, the
evidence, which checks withheld what, and ``checked_before_sending: true``.

Streaming is framed, not incremental, on purpose: a reply must pass the reply checks before a client sees any
of it, and the checks read the whole reply (a crisis line in its last sentence counts), so every choice is
generated and checked whole, and only then sent as ``chat.completion.chunk`` events in word-sized pieces. The
first byte waits for the whole reply. The stream says so itself: it opens with an SSE comment (which SSE
clients, the openai SDK's included, skip), and each choice's first and last chunk carry the ``psychocounsel``
field. ``stream_options.include_usage`` adds OpenAI's closing usage chunk (no choices). A withheld choice ends
with ``finish_reason: "content_filter"``, as OpenAI's own filter does; the SDK's ``create(stream=True)``
yields it like any chunk, and its ``.stream()`` / ``.parse()`` helpers raise ``ContentFilterFinishReasonError``
carrying the whole completion, the gate's reply included.
Unknown request fields (``user``, ``presence_penalty``, ...) are ignored, as vLLM does.
"""

from __future__ import annotations

import json
import re
import secrets
import time
from typing import Any, Literal

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ..backends.base import Sampling
from .auth import Auth
from .service import DraftService, Refused


class Part(BaseModel):
    model_config = ConfigDict(extra="ignore")
    type: Literal["text"]
    text: str


class Message(BaseModel):
    model_config = ConfigDict(extra="ignore")
    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[Part]

    def text(self) -> str:
        return self.content if isinstance(self.content, str) else "".join(p.text for p in self.content)


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="ignore")
    include_usage: bool = False


class ChatBody(BaseModel):
    model_config = ConfigDict(extra="ignore")
    model: str
    messages: list[Message] = Field(min_length=1)
    stream: bool = False
    stream_options: StreamOptions | None = None
    n: int = Field(1, ge=1)
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    seed: int | None = None


# The stream's first line, an SSE comment (clients skip it): why the first byte came only now.
STREAM_NOTE = (b": psychocounsel: every reply is checked whole by the reply checks before any of it is sent; "
               b"the stream is framed, not incremental\n\n")


def openai_error(status: int, message: str, kind: str = "invalid_request_error", code: str | None = None) -> Response:
    return JSONResponse({"error": {"message": message, "type": kind, "param": None, "code": code}}, status_code=status)


def _chunks(text: str) -> list[str]:
    """The reply in word-sized pieces (a word and the space after it), as a streaming server sends tokens."""
    return re.findall(r"\S+\s*|\s+", text) or [""]


def add_openai_routes(app: FastAPI, service: DraftService, auth: Auth) -> None:
    cfg = service.cfg

    def actor(request: Request) -> str | None:
        c, via_cookie = auth.clinician(request)
        if c is not None and not via_cookie:
            return f"clinician:{c.id}"
        ok, via_cookie = auth.admin(request)
        return "admin" if ok and not via_cookie else None

    @app.get("/v1/models")
    async def models(request: Request):
        if actor(request) is None:
            return openai_error(401, "a clinician's or the admin's token is required (Authorization: Bearer)",
                                "authentication_error", "invalid_api_key")
        return JSONResponse({"object": "list", "data": [{"id": cfg.model, "object": "model", "created": 0,
                                                         "owned_by": "psychocounsel"}]})

    @app.post("/v1/chat/completions")
    async def chat(request: Request):
        who = actor(request)
        if who is None:
            return openai_error(401, "a clinician's or the admin's token is required (Authorization: Bearer)",
                                "authentication_error", "invalid_api_key")
        try:
            body = ChatBody.model_validate(json.loads(await request.body()))
        except ValueError as e:  # JSONDecodeError and ValidationError are both ValueErrors
            first = e.errors(include_url=False)[0] if isinstance(e, ValidationError) else None
            where = ".".join(str(p) for p in first["loc"]) + ": " + first["msg"] if first else "body is not JSON"
            return openai_error(400, where)
        if body.model != cfg.model:
            return openai_error(404, f"model {body.model!r} is not served here (GET /v1/models)", code="model_not_found")
        if body.n > cfg.n_max:
            return openai_error(400, f"n must be at most {cfg.n_max}")
        s = cfg.sampling
        sampling = Sampling(s.temperature if body.temperature is None else body.temperature,
                            s.top_p if body.top_p is None else body.top_p,
                            body.max_completion_tokens or body.max_tokens or s.max_tokens, body.seed)
        messages = [("system" if m.role == "developer" else m.role, m.text()) for m in body.messages]
        if sum(len(t) for _, t in messages) > cfg.max_message_chars * 2:
            return openai_error(413, "the conversation is too long for this deployment")
        try:
            gate, choices = await service.complete_chat(who, messages, body.n, sampling, cfg.model)
        except Refused as e:
            return openai_error(e.status, str(e), "server_error" if e.status >= 500 else "invalid_request_error")
        cid, created = "chatcmpl-" + secrets.token_hex(12), int(time.time())
        extra = {"tier": gate.tier, "evidence": [{"kind": s.kind, "text": s.text} for s in gate.screen.signals],
                 "withheld": [c["withheld"] for c in choices], "checked_before_sending": True,
                 "sent_to_client": False}
        prompt_tokens = choices[0]["usage"].prompt_tokens
        completion_tokens = sum(c["usage"].completion_tokens for c in choices)
        usage = {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                 "total_tokens": prompt_tokens + completion_tokens}
        if not body.stream:
            return JSONResponse({
                "id": cid, "object": "chat.completion", "created": created, "model": cfg.model,
                "choices": [{"index": i, "message": {"role": "assistant", "content": c["text"], "refusal": None},
                             "logprobs": None, "finish_reason": c["finish_reason"]} for i, c in enumerate(choices)],
                "usage": usage, "psychocounsel": extra})
        with_usage = body.stream_options is not None and body.stream_options.include_usage

        def event(choices: list[dict[str, Any]], **more: Any) -> bytes:
            chunk = {"id": cid, "object": "chat.completion.chunk", "created": created, "model": cfg.model,
                     "choices": choices, **({"usage": None} if with_usage else {}), **more}
            return b"data: " + json.dumps(chunk).encode() + b"\n\n"

        def delta(i: int, d: dict[str, Any], finish: str | None = None) -> list[dict[str, Any]]:
            return [{"index": i, "delta": d, "logprobs": None, "finish_reason": finish}]

        async def events():
            yield STREAM_NOTE
            for i, c in enumerate(choices):
                yield event(delta(i, {"role": "assistant", "content": ""}), psychocounsel=extra)
                for piece in _chunks(c["text"]):
                    yield event(delta(i, {"content": piece}))
                yield event(delta(i, {}, c["finish_reason"]), psychocounsel=extra)
            if with_usage:
                yield event([], usage=usage)
            yield b"data: [DONE]\n\n"

        return StreamingResponse(events(), media_type="text/event-stream")
