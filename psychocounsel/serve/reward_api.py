"""The reward model over HTTP: our ``/v1/reward`` and OpenRLHF's remote reward-model shape ``/get_reward``.

    POST /v1/reward   {"prompts": [speech, ...], "responses": [reply, ...]}
                      -> {"rewards": [...], "principles": {name: [...]} (per-principle models), "model": ...}
    POST /get_reward  {"query": [text, ...], "prompts": [prompt, ...] (optional)} -> {"rewards": [...]}

OpenRLHF's trainer posts each sample as one ``query``: the prompt and the response, already rendered with the
policy's chat template. With ``prompts`` the response is what follows its prompt; without, the query is split at
the last assistant turn of a ChatML, Llama 3 or "Assistant:" transcript, and the client's message is the last
user turn before it. A query that cannot be split is a 422 naming its index, never a reward for the wrong text.
Needs a clinician's or the admin's token (Bearer); 503 when the deployment has no reward model.
"""

from __future__ import annotations

import json
import re

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.concurrency import run_in_threadpool

from ..training.scoring import OVERALL
from .auth import Auth
from .service import DraftService

MAX_ROWS = 512  # rows per call: a training batch, not a whole dataset in one request

# (user turn start, user turn end, assistant turn start) per chat format.
TEMPLATES = [
    ("<|im_start|>user\n", "<|im_end|>", "<|im_start|>assistant\n"),
    ("<|start_header_id|>user<|end_header_id|>\n\n", "<|eot_id|>", "<|start_header_id|>assistant<|end_header_id|>\n\n"),
    ("Human:", "\n", "Assistant:"),
    ("User:", "\n", "Assistant:"),
]
END_MARKS = re.compile(r"(?:<\|im_end\|>|<\|eot_id\|>|<\|end_of_text\|>|</s>|<\|endoftext\|>)\s*$")


class RewardBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    prompts: list[str] = Field(min_length=1, max_length=MAX_ROWS)
    responses: list[str] = Field(min_length=1, max_length=MAX_ROWS)


class OpenRLHFBody(BaseModel):
    model_config = ConfigDict(extra="ignore")  # newer trainers add "labels"; rewards here do not use them
    query: list[str] = Field(min_length=1, max_length=MAX_ROWS)
    prompts: list[str] | None = None


def last_user_turn(text: str) -> str | None:
    """The last user turn of a rendered chat (ChatML, Llama 3, "Human:/User:"), or None when there is none."""
    for user, end, assistant in TEMPLATES:
        u = text.rfind(user)
        if u < 0:
            continue
        turn = text[u + len(user):]
        cut = [i for i in (turn.find(end), turn.find(assistant)) if i >= 0]
        return (turn[:min(cut)] if cut else turn).strip()
    return None


def split_query(query: str, prompt: str | None = None) -> tuple[str, str] | None:
    """(client message, response) from one OpenRLHF query, or None when it cannot be split."""
    if prompt is not None:
        if not query.startswith(prompt):
            return None
        speech = last_user_turn(prompt)
        return (speech if speech is not None else prompt.strip()), END_MARKS.sub("", query[len(prompt):]).strip()
    for _, _, assistant in TEMPLATES:
        a = query.rfind(assistant)
        if a < 0:
            continue
        speech = last_user_turn(query[:a])
        if speech is None:
            continue
        return speech, END_MARKS.sub("", query[a + len(assistant):]).strip()
    return None


def _error(status: int, message: str) -> Response:
    return JSONResponse({"error": message, "status": status}, status_code=status)


def add_reward_routes(app: FastAPI, service: DraftService, auth: Auth) -> None:
    def allowed(request: Request) -> bool:
        c, via_cookie = auth.clinician(request)
        ok, admin_cookie = auth.admin(request)
        return (c is not None and not via_cookie) or (ok and not admin_cookie)

    async def score(prompts: list[str], responses: list[str]) -> dict[str, list[float]]:
        heads = await run_in_threadpool(service.score_rows, prompts, responses)
        return {k: [float(x) for x in v] for k, v in heads.items()}

    async def read(request: Request, model: type[BaseModel]) -> BaseModel | Response:
        if not allowed(request):
            return _error(401, "a clinician's or the admin's token is required (Authorization: Bearer)")
        if service.scorer is None:
            return _error(503, "this deployment has no reward model (reward_model in the deployment file)")
        try:
            return model.model_validate(json.loads(await request.body()))
        except ValidationError as e:
            first = e.errors(include_url=False)[0]
            return _error(422, ".".join(str(p) for p in first["loc"]) + ": " + first["msg"])
        except ValueError:
            return _error(400, "body is not JSON")

    @app.post("/v1/reward")
    async def reward(request: Request):
        body = await read(request, RewardBody)
        if isinstance(body, Response):
            return body
        if len(body.prompts) != len(body.responses):
            return _error(422, f"{len(body.prompts)} prompts but {len(body.responses)} responses")
        heads = await score(body.prompts, body.responses)
        return JSONResponse({"rewards": heads.pop(OVERALL), "principles": heads,
                             "model": getattr(service.scorer, "name", service.cfg.reward_model)})

    @app.post("/get_reward")
    async def get_reward(request: Request):
        body = await read(request, OpenRLHFBody)
        if isinstance(body, Response):
            return body
        if body.prompts is not None and len(body.prompts) != len(body.query):
            return _error(422, f"{len(body.query)} queries but {len(body.prompts)} prompts")
        rows = []
        for i, q in enumerate(body.query):
            got = split_query(q, body.prompts[i] if body.prompts is not None else None)
            if got is None:
                return _error(422, f"query[{i}]: cannot tell the prompt from the response (send prompts, or a "
                              "ChatML / Llama 3 / 'Assistant:' transcript)")
            rows.append(got)
        heads = await score([r[0] for r in rows], [r[1] for r in rows])
        return JSONResponse({"rewards": heads[OVERALL]})
