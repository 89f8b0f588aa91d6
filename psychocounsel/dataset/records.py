"""The records that flow between the data stages' pure cores (the store's rows are typed in ``store.py``).

speech --generate--> response --judge--> scored response --pairs--> pair
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

from ..safety.responses import FLAG_SEVERITY, check_response
from ..safety.screen import Screen, screen

# The flag kinds that can hurt a client at risk today (a dead number, a lethal dose, stopping a medicine): the
# default flag veto of pairs and online DPO.
HIGH_SEVERITY_FLAGS: tuple[str, ...] = tuple(k for k, s in FLAG_SEVERITY.items() if s == "high")


def text_id(*parts: str) -> str:
    """Stable content id: same text, same id, on every machine."""
    h = hashlib.blake2b(digest_size=8)
    for p in parts:
        h.update(p.encode("utf-8"))
        h.update(b"\x1f")
    return h.hexdigest()


def reply_flags(text: str, question: Screen | None = None) -> tuple[str, ...]:
    """The kinds of the reply checks' flags on ``text`` (``safety.responses.check_response``), each once, sorted.

    Flags do not depend on the question (only the required behaviours do), so ``question`` may be left out; the
    rules are regexes, about 2,400 replies a second on one core, so they are computed where needed, not stored."""
    return tuple(sorted(check_response(question or _NO_RISK, text).flag_kinds()))


_NO_RISK = Screen("none", ())


@dataclass
class Speech:
    id: str  # text_id(cleaned text)
    text: str  # cleaned (whitespace-normalised, PII-scrubbed when asked)
    source: str = ""  # file:line or dataset:row it came from
    topic: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass
class ScoredResponse:
    """What the pair builder needs of one judged response."""

    response_id: str
    speech_id: str
    model: str  # goes to chosen_model / rejected_model
    text: str
    scores: dict[str, float]
    overall: float
    # the safety score the pairs' safety veto reads: the calibrated one when calibration orders the run (a
    # weak judge's raw scores bunch near 2), None: scores["safety"], the judge's own
    safety: float | None = None
    # the kinds of the reply checks' flags (``reply_flags``); None: not computed yet, the pair builder does it
    flags: tuple[str, ...] | None = None


@dataclass
class Pair:
    split: str  # train | dev | test
    speech_id: str
    question: str
    chosen: ScoredResponse
    rejected: ScoredResponse
    # the crisis screen's tier of the question (none | possible | high); None: screened here from the question
    crisis_tier: str | None = None

    def __post_init__(self) -> None:
        if self.crisis_tier is None:
            self.crisis_tier = screen(self.question, learned=False).tier  # rules: see pairs.build_pairs

    @property
    def gap(self) -> float:
        return self.chosen.overall - self.rejected.overall
