"""Text normalisation before the crisis rules match: curly quotes and apostrophes, unicode dashes, slang and
misspellings ("kms", "unalive", "dont"), stretched letters ("sooo"), each rewrite recorded so evidence spans map
back to the client's own words (``to_original``).

The spelling regex is tried only where a rewrite can start (a word that can begin a spelling, worked out at import
from ``rules.SPELLINGS``, or a run of three repeated letters); tests/safety/test_normalise.py checks the result
equals a full scan on every labelled text.
"""

from __future__ import annotations

import re
import re._parser as sre_parse  # reads the spelling patterns' structure; no public API does
from bisect import bisect_right

from .rules import (
    ICASE,
    REPEATS,
    SAME_LENGTH,
    SPELLING,
    SPELLING_OUT,
    SPELLINGS,
)


def normalise(text: str) -> tuple[str, list[tuple[int, int, int, int]]]:
    """The text the rules read, and its rewrites as (normalised start, end, original start, end).

    Real posts write "don’t", "sooo", "cant", "unalive", "sewerslide"; the patterns are written once, in
    plain spelling, and every span is mapped back (``to_original``), so evidence quotes the client's words.
    Same result as scanning the whole text with ``_NORMALISE`` (tests/safety/test_normalise.py keeps that
    scan as the reference), but the scan only runs where a rewrite can start: most speeches have none.
    """
    text = text.translate(SAME_LENGTH)  # one character for one: offsets unchanged
    starts = _rewrite_starts(text)
    if not starts:
        return text, []
    out: list[str] = []
    edits: list[tuple[int, int, int, int]] = []
    pos = shift = done = 0
    for at in starts:
        if at < done:  # inside the previous rewrite, as the left-to-right scan would skip it
            continue
        m = _NORMALISE.match(text, at)
        if m is None:
            continue
        done = m.end()
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
    if not edits:
        return text, edits
    out.append(text[pos:])
    return "".join(out), edits


def _rewrite_starts(text: str) -> list[int]:
    """Positions, in order, where a ``_NORMALISE`` match can start: each word whose lower case is a first
    word of some spelling, and each run of three letters. Every match starts at one of them, so matching
    only there finds what the whole scan finds (~60x fewer places tried than every character)."""
    if not _CASE_FOLDS_TO_ASCII.isdisjoint(text):
        return list(range(len(text)))  # "ſ" matches "s" case-insensitively: word lookups would miss it
    starts = [m.start() for m in REPEATS.finditer(text)] if REPEATS.search(text) else []
    if not _FIRST_WORDS.keys().isdisjoint(_WORD_RUN.findall(text.lower())):
        for m in _WORD_RUN.finditer(text):
            after = _FIRST_WORDS.get(m.group(0).lower())
            # "I" starts a rewrite only as "I'll"; "my" only as "my self": the character after the word says
            if after is not None and ("" in after or text[m.end():m.end() + 1] in after):
                starts.append(m.start())
        starts.sort()
    return starts


def _expand(nodes: list, prefix: str = "") -> list[str]:
    """Every string a small regex (literals, classes, alternatives, optional parts) matches, lower case;
    lookarounds and \\b only narrow where it matches, so they are skipped. Anything else raises: a
    spelling written with an open-ended part (``\\w+``) needs another way to find where it starts."""
    outs = [prefix]
    for op, arg in nodes:
        name = str(op)
        if name == "LITERAL":
            outs = [o + chr(arg).lower() for o in outs]
        elif name == "IN":
            chars = [chr(c) for kind, v in arg if str(kind) == "LITERAL" for c in [v]]
            chars += [chr(c) for kind, v in arg if str(kind) == "RANGE" for c in range(v[0], v[1] + 1)]
            if any(str(kind) not in ("LITERAL", "RANGE") for kind, _ in arg):
                raise ValueError(f"spelling pattern: unsupported class {arg!r}")
            outs = [o + c.lower() for o in outs for c in chars]
        elif name == "BRANCH":
            outs = [x for o in outs for alt in arg[1] for x in _expand(list(alt), o)]
        elif name == "SUBPATTERN":
            outs = [x for o in outs for x in _expand(list(arg[-1]), o)]
        elif name in ("MAX_REPEAT", "MIN_REPEAT") and arg[1] <= 3:
            lo, hi, body = arg
            outs = [x for o in outs for n in range(lo, hi + 1) for x in _expand(list(body) * n, o)]
        elif name not in ("AT", "ASSERT", "ASSERT_NOT"):
            raise ValueError(f"spelling pattern: unsupported {name}")
    return outs


_WORD_RUN = re.compile(r"\w+")


def _first_words() -> dict[str, frozenset[str]]:
    """Each word a spelling match can start with -> the characters that may follow it ("" when the word
    is the whole match). A match starts at a word boundary, so its first word (up to the first non-word
    character) is a whole word of the text: "sewer" for "sewer slide", "i" for "i'll", "s3lf" for "s3lf-harm"."""
    out: dict[str, set[str]] = {}
    for k in SPELLINGS:
        for x in _expand(list(sre_parse.parse(k, re.IGNORECASE))):
            word = _WORD_RUN.match(x).group(0)
            out.setdefault(word, set()).add(x[len(word):len(word) + 1])
    return {w: frozenset(v) for w, v in out.items()}


_FIRST_WORDS = _first_words()
# Non-ASCII characters that match an ASCII letter case-insensitively (long s, Kelvin sign, dotted and
# dotless i); tests/safety/test_normalise.py checks the list against every code point.
_CASE_FOLDS_TO_ASCII = frozenset("\u0130\u0131\u017f\u212a")


def to_original(edits: list[tuple[int, int, int, int]], start: int, end: int) -> tuple[int, int]:
    """A normalised span's span in the original text; a span touching a rewrite covers all of it."""
    def back(p: int, is_end: bool) -> int:
        i = bisect_right(edits, (p, float("inf"))) - 1  # the last rewrite starting at or before p
        if i < 0:
            return p
        _, ne, os_, oe = edits[i]
        if p < ne or (is_end and p == ne):
            return oe if is_end else os_
        return oe + (p - ne)
    return back(start, False), back(end, True)


# Spellings first, then letter runs, as one scan.
_NORMALISE = re.compile(f"{SPELLING.pattern}|{REPEATS.pattern}", ICASE)
