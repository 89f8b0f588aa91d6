"""The pairwise judge's pure core: two responses in, a positional verdict out. No I/O, no model calls.

A verdict is positional: "A" (the response shown first), "B" or "tie". The evaluation
(``evaluation/stages.py``) asks for every comparison twice, the policy shown as A and then as B, and
``winrate.combine_orders`` turns the two positional verdicts into the policy's score; a judge that prefers
a position then shows as a flip, not a win (MT-Bench's convention: GPT-4 flips 12.9% of its verdicts on
swapping).

Two modes:
- json: the reply is ``{"rationale": ..., "winner": "A" | "B" | "tie"}``; ``parse_verdict`` is strict and
  raises ``VerdictParseError`` (a recorded failure after bounded retries, never a tie).
- choice: a local model's next-token probabilities of "A" and "B" after the prompt (``choice_verdict``);
  for small models that cannot write JSON. It always parses, so position bias is all that can go wrong.
"""

from __future__ import annotations

import re
from typing import Any, Literal

from .principles import PrincipleSet
from .prompts import Prompt
from .replies import ConflictingKeys, json_objects
from .score import format_principles

Position = Literal["A", "B", "tie"]
WINNER_KEYS = ("winner", "verdict", "better", "preferred", "choice", "better_response")
RATIONALE_KEYS = ("rationale", "reasoning", "explanation", "justification")
TIE_WORDS = {"tie", "equal", "draw", "both", "neither", "same", "c"}
# The next tokens a choice-mode judge is scored on (a tie is a margin, never a token); part of its call keys.
VERDICT_LETTERS = ["A", "B"]


class VerdictParseError(ValueError):
    """A pairwise reply that names no winner. ``reason`` is short enough to store per failure."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


def principle_list(principles: PrincipleSet) -> str:
    """One line per principle (name: definition): the short rubric for small choice-mode judges."""
    return "\n".join(f"- {p.name}: {p.definition}" for p in principles)


_RUBRICS: dict[str, tuple[str, str]] = {}  # principle-set version -> (full rubric, short list)


def _values(principles: PrincipleSet, speech: str, response_a: str, response_b: str) -> dict[str, str]:
    # The rubric text is the same for every comparison of a run; formatting it per call was a third of the
    # judge stage's CPU. The version is a content hash for user sets, so the cache never serves stale text.
    if principles.version not in _RUBRICS:
        _RUBRICS[principles.version] = (format_principles(principles), principle_list(principles))
    full, short = _RUBRICS[principles.version]
    return {"principles": full, "principle_list": short, "speech": speech, "response_a": response_a,
            "response_b": response_b}


def build_pairwise_messages(principles: PrincipleSet, prompt: Prompt, speech: str, response_a: str,
                            response_b: str) -> list[dict[str, str]]:
    """System + user messages for one JSON-mode comparison (a plain prompt file is one user message)."""
    values = _values(principles, speech, response_a, response_b)
    if not prompt.sections:
        prompt.require(None, "speech", "response_a", "response_b")
        return [{"role": "user", "content": prompt.render(None, **values)}]
    prompt.require("user", "speech", "response_a", "response_b")
    messages = []
    if "system" in prompt.sections:
        messages.append({"role": "system", "content": prompt.render("system", **values)})
    messages.append({"role": "user", "content": prompt.render("user", **values)})
    return messages


def choice_prefix_and_suffix(principles: PrincipleSet, prompt: Prompt, speech: str, response_a: str,
                             response_b: str) -> tuple[list[dict[str, str]], str]:
    """Prefix messages and the one suffix after which the next token is the letter (choice mode)."""
    if "suffix" not in prompt.sections:
        from ..errors import UserError

        raise UserError(f"{prompt.source or prompt.name}: pairwise mode 'choice' needs a prompt with a "
                        "<<<suffix>>> section (e.g. pairwise_choice_v1)")
    messages = build_pairwise_messages(principles, prompt, speech, response_a, response_b)
    return messages, "\n\n" + prompt.render("suffix").rstrip()


def pairwise_response_format() -> dict[str, Any]:
    """OpenAI structured output: the reply can only be the object ``parse_verdict`` expects."""
    return {"type": "json_schema", "json_schema": {
        "name": "pairwise_verdict", "strict": True,
        "schema": {"type": "object", "additionalProperties": False, "required": ["rationale", "winner"],
                   "properties": {"rationale": {"type": "string"},
                                  "winner": {"type": "string", "enum": ["A", "B", "tie"]}}}}}


def _position(value: Any) -> Position | None:
    """"A", "a", "Response A", "[[A]]", "Assistant B" -> the position; tie words -> "tie"; else None."""
    if not isinstance(value, str):
        return None
    v = re.sub(r"[\[\]\"'().*:]", " ", value).strip().lower()
    v = re.sub(r"^(response|output|answer|assistant|reply)\s+", "", v).strip()
    if v in ("a", "b"):
        return v.upper()  # type: ignore[return-value]
    if v in TIE_WORDS:
        return "tie"
    return None


def parse_verdict(text: str) -> tuple[Position, str]:
    """(winner, rationale) from a JSON-mode reply. Raises ``VerdictParseError`` rather than guess.

    Accepted: a JSON object (fenced or with chatter around it) with a winner under one of WINNER_KEYS,
    valued A/B/tie in any of the spellings ``_position`` knows; or a bare reply that is only "A", "B",
    "[[A]]" or "tie". When several objects name a winner, the last one counts (judges correct themselves
    last). A key given twice with different values (``{"winner": "A", "winner": "B"}``) is an error.
    """
    if not isinstance(text, str) or not text.strip():
        raise VerdictParseError("empty reply")
    bare = _position(text.strip())
    if bare is not None:
        return bare, ""
    try:
        objects, error = json_objects(text)
    except ConflictingKeys as e:
        raise VerdictParseError(str(e)) from None
    found: tuple[Position, str] | None = None
    bad: str | None = None
    for obj in objects:
        lowered = {str(k).lower(): v for k, v in obj.items()}
        for key in WINNER_KEYS:
            if key in lowered:
                pos = _position(lowered[key])
                if pos is None:
                    bad = f"{key}: {str(lowered[key])[:30]!r} is not A, B or tie"
                    break
                rationale = next((str(lowered[k]).strip() for k in RATIONALE_KEYS if lowered.get(k) is not None), "")
                found = (pos, rationale)
                break
    if found is not None:
        return found
    if bad:
        raise VerdictParseError(bad)
    if error and not objects:
        raise VerdictParseError(f"invalid JSON: {error}")
    raise VerdictParseError("no winner in reply" if objects else "no JSON object")


def choice_verdict(probs: list[float], tie_margin: float = 0.0) -> Position:
    """Verdict from p("A"), p("B") (renormalised over the two): the likelier letter, or a tie within the margin."""
    pa, pb = probs
    total = pa + pb
    if total <= 0:
        return "tie"
    pa, pb = pa / total, pb / total
    if abs(pa - pb) <= tie_margin:
        return "tie"
    return "A" if pa > pb else "B"
