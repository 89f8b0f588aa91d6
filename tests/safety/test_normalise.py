"""normalise looks for rewrites only where one can start; it must find exactly what scanning every character
with the spelling and letter-run patterns finds, on every evidence text and on seeded random texts."""

from __future__ import annotations

import json
import random
import re
from pathlib import Path

from psychocounsel.safety.normalise import normalise
from psychocounsel.safety.rules import (
    ICASE,
    REPEATS,
    SAME_LENGTH,
    SPELLING,
    SPELLING_OUT,
    SPELLINGS,
)

DATA = Path(__file__).resolve().parents[2] / "psychocounsel" / "data"
_SCAN = re.compile(f"{SPELLING.pattern}|{REPEATS.pattern}", ICASE)


def scan_every_character(text: str) -> tuple[str, list[tuple[int, int, int, int]]]:
    """The reference: one left-to-right scan of the whole text with both patterns."""
    text = text.translate(SAME_LENGTH)
    out: list[str] = []
    edits: list[tuple[int, int, int, int]] = []
    pos = shift = 0
    for m in _SCAN.finditer(text):
        if m.lastgroup == "run":
            new = m.group("run")
        else:
            new = SPELLING_OUT[m.lastindex - 1]
            new = m.group(0) + "g" if new == "+g" else new
        if new == m.group(0):
            continue
        out.append(text[pos:m.start()])
        out.append(new)
        edits.append((m.start() + shift, m.start() + shift + len(new), m.start(), m.end()))
        shift += len(new) - (m.end() - m.start())
        pos = m.end()
    out.append(text[pos:])
    return "".join(out), edits


def evidence_texts() -> list[str]:
    texts = []
    for name in ("crisis_messages.jsonl", "cssrs_posts.jsonl", "crisis_labelled.jsonl", "demo_speeches.jsonl"):
        for line in (DATA / name).read_text(encoding="utf-8").splitlines():
            if line.strip():
                row = json.loads(line)
                texts += [row[k] for k in ("text", "response") if k in row]
    return texts


def test_same_rewrites_as_a_full_scan_on_every_evidence_text():
    texts = evidence_texts()
    assert len(texts) > 2000
    for t in texts:
        assert normalise(t) == scan_every_character(t), t[:80]


# Words that start spellings, words that end them, and the contexts their lookarounds ask for.
_PLAIN = [k for k in SPELLINGS if re.fullmatch(r"[\w|]+", k)]
_WORDS = [w for k in _PLAIN for w in k.split("|")] + [
    "sewer slide", "sewerslide", "s3lf-h@rm", "self-h@rm", "self h@rm", "i'll", "ill", "sh'd", "on sh", "my sh",
    "sh!", "my self", "myselv", "evry one", "unalive myself", "id rather", "r from", "b the", "w my", "thinkin",
    "hopin", "sooo", "dieeee", "AAAh", "heLLLo", "I", "me", "kill", "to", "die", "x", "2day", "b4", "u", "ur",
]
_GLUE = [" ", " ", " ", ", ", ". ", "-", "'", "\n", "", "! ", "’", "“"]
# Non-ASCII letters that match ASCII ones case-insensitively; the word lookup has to notice them.
_FOLDS = [chr(c) for c in range(128, 0x3000) if re.fullmatch("[a-z]", chr(c), re.IGNORECASE)]


def test_same_rewrites_as_a_full_scan_on_random_texts():
    rng = random.Random(20261204)
    for _ in range(3000):
        t = "".join(rng.choice(_WORDS) + rng.choice(_GLUE) for _ in range(rng.randint(1, 12)))
        if rng.random() < 0.3:
            t = t.upper() if rng.random() < 0.5 else t.title()
        if rng.random() < 0.1 and _FOLDS:
            i = rng.randrange(len(t))
            t = t[:i] + rng.choice(_FOLDS) + t[i + 1:]
        assert normalise(t) == scan_every_character(t), repr(t)


def test_letters_that_fold_to_ascii_are_rewritten_like_their_ascii_twins():
    assert _FOLDS  # the long s, the Kelvin sign, dotted and dotless i
    for text in ("on \u017fh last night", "\u0130m done", "i\u212anow", "\u0131m tired"):
        assert normalise(text) == scan_every_character(text), text
    assert normalise("on \u017fh last night")[0] == "on self harm last night"
