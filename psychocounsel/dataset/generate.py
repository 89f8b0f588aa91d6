"""Therapist generation: the request a model profile sends to answer one client speech.

One builder for both places a therapist model answers: the data pipeline's generate stage (k drawn
profiles per speech) and the evaluation's generate stage (the policy and the reference), so a profile asks
the same question the same way in both. Pure: the session makes the call and stores the answer.
"""

from __future__ import annotations

from typing import Any, Callable, Protocol

from ..backends.base import ChatRequest, Sampling
from ..rubric.prompts import Prompt


class LengthCap(Protocol):
    """The paper's length-capped setting (``evaluation.config.LengthCapConfig``)."""

    words: int
    max_tokens: int
    instruction: str


def therapist_request(speech: str, *, model: str, system_prompt: str | None, sampling: Any, prompt: Prompt,
                      fingerprint: Callable[[Any], str], cap: LengthCap | None = None,
                      tidy: bool = False) -> ChatRequest:
    """The chat call of one profile (``model``, its own ``system_prompt`` or else the versioned ``prompt``,
    ``sampling``) for ``speech``.

    ``tag`` names the system prompt in the call key: the prompt's version, or ``custom:`` and the
    ``fingerprint`` (the store's key style) of a profile's own text. ``cap`` appends the word-limit
    instruction and caps the tokens. ``tidy`` (evaluations) strips the system prompt and sends the bare
    speech when it is empty, as the paper's policy and GPT-4o reference saw it; data runs send it verbatim,
    because their stored call keys were made that way.
    """
    custom = system_prompt is not None
    system = system_prompt if custom else prompt.text
    tag = "custom:" + fingerprint(system) if custom else prompt.version
    max_tokens = sampling.max_tokens
    if cap is not None:
        system = system + "\n\n" + cap.instruction.replace("{words}", str(cap.words))
        max_tokens = min(max_tokens, cap.max_tokens)
        tag += f"|lencap:{cap.words}:{cap.max_tokens}"
    if tidy:
        system = system.strip()
        messages = ((("system", system),) if system else ()) + (("user", speech),)
    else:
        messages = (("system", system), ("user", speech))
    return ChatRequest(model, messages, sampling=Sampling(sampling.temperature, sampling.top_p, max_tokens,
                                                          sampling.seed), tag=tag)
