"""How well scrubbing does on labelled text: recall per kind, and masks that hid nothing personal.

``psychocounsel/data/pii_labelled.jsonl`` holds one snippet a line, ``{"id", "split", "text", "spans"}``,
each span ``{"start", "end", "kind", "text"}`` with ``text[start:end] == span["text"]``. Splits:
``dev`` (tuned on), ``heldout`` (every 4th written snippet, frozen before any result was seen) and
``demo`` (the personal details in ``demo_speeches.jsonl``, for counting false masks on real-looking
speeches; a demo speech not listed there has none).

A labelled detail counts as caught when masks cover every non-space character of it, whatever kind
they name ("typed" also asks for the right kind): half a name masked still leaks the other half. A
mask is false when it covers no labelled character.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from ...errors import InputError
from .spans import KINDS, Found, resolve

LABELLED = Path(__file__).resolve().parents[2] / "data" / "pii_labelled.jsonl"
DEMO = Path(__file__).resolve().parents[2] / "data" / "demo_speeches.jsonl"


@dataclass(frozen=True)
class Labelled:
    id: str
    split: str
    text: str
    spans: tuple[Found, ...]


@dataclass
class KindScore:
    n: int = 0        # labelled details of this kind
    caught: int = 0   # fully masked, by any kind
    typed: int = 0    # fully masked, by a mask of this kind

    @property
    def recall(self) -> float:
        return self.caught / self.n if self.n else float("nan")


@dataclass
class Score:
    kinds: dict[str, KindScore] = field(default_factory=lambda: {k: KindScore() for k in KINDS})
    masks: int = 0
    false_masks: list[tuple[str, str, str]] = field(default_factory=list)  # (id, kind, masked text)
    missed: list[tuple[str, str, str]] = field(default_factory=list)       # (id, kind, labelled text)
    texts: int = 0

    @property
    def precision(self) -> float:
        return 1 - len(self.false_masks) / self.masks if self.masks else float("nan")


def load_labelled(path: Path = LABELLED) -> list[Labelled]:
    """Read the labelled set; a span whose offsets do not match its text is an ``InputError``."""
    out = []
    with path.open(encoding="utf-8") as fh:
        for n, line in enumerate(fh, 1):
            try:
                row = json.loads(line)
                spans = []
                for s in row["spans"]:
                    if row["text"][s["start"]:s["end"]] != s["text"]:
                        raise InputError(path, f"span {s['text']!r} does not match text[{s['start']}:{s['end']}]",
                                         line=n, column="spans")
                    spans.append(Found(s["start"], s["end"], s["kind"]))
                out.append(Labelled(row["id"], row["split"], row["text"], tuple(spans)))
            except (KeyError, ValueError, TypeError) as e:
                raise InputError(path, f"not a labelled snippet ({e})", line=n) from None
    return out


def demo_speeches(labelled: Iterable[Labelled], path: Path = DEMO) -> list[Labelled]:
    """Every demo speech, with its labelled details where ``labelled`` has some (none otherwise)."""
    gold = {r.id: r for r in labelled if r.split == "demo"}
    out = []
    with path.open(encoding="utf-8") as fh:
        for n, line in enumerate(fh, 1):
            row = json.loads(line)
            g = gold.pop(row["id"], None)
            if g is not None and g.text != row["text"]:
                raise InputError(path, f"demo speech {row['id']} differs from its labelled copy", line=n)
            out.append(Labelled(row["id"], "demo", row["text"], g.spans if g else ()))
    if gold:
        raise InputError(path, f"labelled demo speeches not in the demo set: {', '.join(sorted(gold))}")
    return out


def evaluate(rows: Iterable[Labelled], find: Callable[[str], list[Found]]) -> Score:
    """Score ``find`` (text -> finds, as ``scrub.find``) on ``rows``."""
    score = Score()
    for row in rows:
        score.texts += 1
        masks = resolve(find(row.text))
        covered_by: list[str | None] = [None] * len(row.text)
        for m in masks:
            for i in range(m.start, m.end):
                covered_by[i] = m.kind
        for s in row.spans:
            ks = score.kinds[s.kind]
            ks.n += 1
            idx = [i for i in range(s.start, s.end) if not row.text[i].isspace()]
            if all(covered_by[i] for i in idx):
                ks.caught += 1
                ks.typed += all(covered_by[i] == s.kind for i in idx)
            else:
                score.missed.append((row.id, s.kind, row.text[s.start:s.end]))
        labelled = [False] * len(row.text)
        for s in row.spans:
            for i in range(s.start, s.end):
                labelled[i] = True
        score.masks += len(masks)
        for m in masks:
            if not any(labelled[m.start:m.end]):
                score.false_masks.append((row.id, m.kind, row.text[m.start:m.end]))
    return score
