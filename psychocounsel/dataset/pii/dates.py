"""Dates of birth: a date next to a birth cue ("born on", "DOB", "date of birth", "birthday").

Dates alone are not masked: counseling text is full of them ("since March 2022", "on 01/02/2023") and
they are what a counsellor needs to follow the story. A date becomes a date of birth only when a cue
says so, within the same sentence: before it ("born on 12 June 1975", "my DOB is 1985-04-17", "born in
Hanoi in 1992, on the 5th of January") or after it ("put 09/21/1983 as my date of birth"). A bare year
counts only after "born" ("born in 1992"); after "birthday" a year is the party's, not the birth's.
"""

from __future__ import annotations

import re

from .spans import Found

_MONTH = (r"(?:Jan(?:uary)?|Feb(?:ruary)?|Mar(?:ch)?|Apr(?:il)?|May|June?|July?|Aug(?:ust)?|"
          r"Sep(?:t(?:ember)?)?|Oct(?:ober)?|Nov(?:ember)?|Dec(?:ember)?)\.?")
_DAY = r"(?:[12]\d|3[01]|0?[1-9])(?:st|nd|rd|th)?"
_YEAR = r"(?:19|20)\d{2}"
_DATE = re.compile(
    rf"\b(?:"
    rf"\d{{1,2}}[/.-]\d{{1,2}}[/.-](?:{_YEAR}|\d{{2}})"            # 14/03/1988, 04.11.1969, 9-21-83
    rf"|{_YEAR}-\d{{2}}-\d{{2}}"                                  # 1985-04-17
    rf"|(?:the\s+)?{_DAY}(?:\s+of)?\s+{_MONTH}(?:,?\s+{_YEAR})?"  # 12 June 1975, the 18th of February 2019
    rf"|{_MONTH}\s+(?:the\s+)?{_DAY}(?:,?\s+{_YEAR})?"            # March 3, 1979; December 24th
    rf"|{_MONTH}\s+{_YEAR}"                                       # June 1975
    rf"|(?P<year>{_YEAR})"                                        # 1992, only after "born"
    rf")\b",
    re.IGNORECASE,
)
_CUE_BEFORE = re.compile(
    r"\b(?:(?P<born>born)|birth\s?date|date\s+of\s+birth|d\.?o\.?b\b\.?|birthday)", re.IGNORECASE
)
_CUE_AFTER = re.compile(
    r"\s*(?:is|was|as|=)?\s*(?:my|his|her|their|the|our)?\s*(?:date\s+of\s+birth|d\.?o\.?b\b|birth\s?date|birthday)",
    re.IGNORECASE,
)
_SENTENCE_END = re.compile(r"[.!?;](?:\s|$)|\n")
# How far after a cue its date may start: "born in a village outside Aleppo in 1992" needs the room; a
# "birthday" or "DOB" date follows at once ("my birthday is on the ...", "DOB: ..."), and a wider window
# there picks up the next date in the sentence ("my birthday party is Friday and on 3 June we go").
_WINDOW_BORN = 60
_WINDOW_OTHER = 25
# Two dates are one birth date only when joined by a comma or a preposition: "in 1992, on the 5th of
# January"; "born on 7 July 1951 and died on 9 May 2020" has a second date that is not a birth.
_JOINER = re.compile(r"[\s,]*(?:(?:on|in)\s+)?", re.IGNORECASE)


def _dates_in(text: str, lo: int, hi: int, allow_year: bool) -> list[re.Match]:
    end = _SENTENCE_END.search(text, lo, hi)
    hi = end.start() if end and not _is_inside_date(text, end.start()) else hi
    out: list[re.Match] = []
    for m in _DATE.finditer(text, lo, hi):
        if m.group("year") and not allow_year:
            continue
        if out and _JOINER.fullmatch(text, out[-1].end(), m.start()) is None:
            break
        out.append(m)
    return out


def _is_inside_date(text: str, i: int) -> bool:
    """A '.' between digits ("04.11.1969") ends no sentence."""
    return 0 < i < len(text) - 1 and text[i - 1].isdigit() and text[i + 1].isdigit()


def find_dobs(text: str) -> list[Found]:
    out = []
    for cue in _CUE_BEFORE.finditer(text):
        born = bool(cue.group("born"))
        hi = min(len(text), cue.end() + (_WINDOW_BORN if born else _WINDOW_OTHER))
        for m in _dates_in(text, cue.end(), hi, born):
            out.append(Found(m.start(), m.end(), "DOB"))
    for m in _DATE.finditer(text):
        if not m.group("year") and _CUE_AFTER.match(text, m.end()):
            out.append(Found(m.start(), m.end(), "DOB"))
    return out
