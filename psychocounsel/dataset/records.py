"""The records that flow between stages (and rows of the run store).

speech --generate--> response --judge--> judgment --pairs--> pair
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any


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
class Response:
    id: str  # text_id(speech_id, profile)
    speech_id: str
    profile: str
    model: str
    text: str


@dataclass
class Judgment:
    response_id: str
    scores: dict[str, float]  # principle key -> 1..5 (ints from a JSON judge, expectations from G-Eval)
    rationale: str = ""
    overall: float = 0.0  # weighted mean of scores (after calibration when configured)


@dataclass
class ScoredResponse:
    """What the pair builder needs of one judged response."""

    response_id: str
    speech_id: str
    model: str  # goes to chosen_model / rejected_model
    text: str
    scores: dict[str, float]
    overall: float


@dataclass
class Pair:
    split: str  # train | dev | test
    speech_id: str
    question: str
    chosen: ScoredResponse
    rejected: ScoredResponse

    @property
    def gap(self) -> float:
        return self.chosen.overall - self.rejected.overall
