"""The records that flow between the data stages' pure cores (the store's rows are typed in ``store.py``).

speech --generate--> response --judge--> scored response --pairs--> pair
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

from ..safety.screen import screen


def text_id(*parts: str) -> str:
    """Stable content id: same text, same id, on every machine."""
    h = hashlib.blake2b(digest_size=8)
    for p in parts:
        h.update(p.encode("utf-8"))
        h.update(b"\x1f")
    return h.hexdigest()


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
            self.crisis_tier = screen(self.question).tier

    @property
    def gap(self) -> float:
        return self.chosen.overall - self.rejected.overall
