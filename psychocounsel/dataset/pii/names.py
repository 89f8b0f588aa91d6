"""People's names: what the NER model proposes, less what is not a name, plus names a cue announces.

A small English NER model (trained on news, OntoNotes 5) misses names it has rarely seen and tags
capitalised words at the start of a stage direction ("(Rubs eyes)") as people. Plain rules help on
both sides, whatever the name's language:

- a capitalised word right after a relation or title is a name: "my husband Chinedu", "my sister,
  Tran Thi Mai,", "Dr. Chukwuemeka Eze", "a man called Hamza", "my name is Svetlana Ivanova"; so is one
  that shares "I" with the speaker ("Javier and I", "me and Funmi") or that says something ("Renata
  says ...");
- a family word, a deity, a holiday or an acronym is not a name, though the model often says it is
  ("Mum", "God", "Eid", "DOB"), nor is a country ("Guatemala"); nor is a lower-case word ("grey"), a span holding one ("Lymph node"), or
  a word opening a sentence or a parenthesis that the tagger calls no proper noun ("Laid off on a
  Tuesday", "(Rubs eyes)").
"""

from __future__ import annotations

import re
from collections.abc import Callable

from .regions import is_region
from .spans import Found
from .words import CLAUSE_WORDS, NOT_PII, key, opens_sentence

_RELATION = (
    r"(?:husband|wife|partner|spouse|boyfriend|girlfriend|fianc[ée]e?|son|daughter|child|kid|baby|brother|"
    r"sister|sibling|twin|cousin|niece|nephew|uncle|aunt|auntie|aunty|mother|father|mum|mom|dad|"
    r"step(?:mother|father|mum|mom|dad|son|daughter|brother|sister)|grand(?:mother|father|ma|pa|son|daughter)|"
    r"(?:mother|father|brother|sister|son|daughter)-in-law|friend|bestie|roommate|flatmate|housemate|"
    r"neighbou?r|colleague|co-?worker|boss|manager|supervisor|teacher|tutor|coach|therapist|counsell?or|"
    r"psychiatrist|psychologist|doctor|GP|nurse|pastor|priest|imam|rabbi|landlord|landlady|ex|classmate|"
    r"teammate|lawyer|caseworker|social\s+worker|mentor|carer|cousins|friends|parents|kids|children|sons|"
    r"daughters|brothers|sisters)"
)
_TITLE = (r"(?:Dr|Mr|Mrs|Ms|Miss|Mx|Prof|Professor|Pastor|Father|Imam|Rabbi|Sheikh|Uncle|Aunt|Auntie|Aunty|"
          r"Coach|Nurse|Sister)\.?")
_CAP = r"[A-Z][\w'’-]*"
_NAME = rf"{_CAP}(?:\s+{_CAP}){{0,3}}"
_SAYS = r"(?:says|said|told|tells|thinks|thought|wants|wanted|keeps|kept|asked|asks|called|texted|calls|texts)"
# "... died in Guatemala and I couldn't go": after a preposition, "X and I" is a place and the speaker.
_NO_PREPOSITION = r"(?<!\bin\s)(?<!\bat\s)(?<!\bto\s)(?<!\bon\s)(?<!from\s)(?<!near\s)"
# One pattern per cue, each run on its own, so one cue's match never hides another's ("I told Wojciech":
# "I told" is no name, and "told Wojciech" still is). Group "n" is the name, "m" a second one.
_STRONG_CUES = [  # a relation or title makes a name even of "Jordan"
    re.compile(rf"\b(?i:(?:my|his|her|our|their|your)\s+(?:(?:ex|step|late|older|younger|little|big|best|old|"
               rf"new|eldest|youngest|online|school|elder|twin)[-\s]+)*{_RELATION}(?:'s)?),?\s+(?:{_TITLE}\s+)?"
               rf"(?P<n>{_NAME})(?:\s+and\s+(?P<m>{_NAME}))?"),
    re.compile(rf"\b{_TITLE}\s+(?P<n>{_NAME})"),
    re.compile(rf"\b(?i:named|called|name\s+is|name's|go\s+by|goes\s+by|the\s+name)\s+(?:(?:him|her|them)\s+)?"
               rf"(?:{_TITLE}\s+)?(?P<n>{_NAME})"),
]
_WEAK_CUES = [  # these also find countries ("... Guatemala and I"), which are dropped
    re.compile(rf"{_NO_PREPOSITION}\b(?P<n>{_CAP})\s+and\s+(?:I|me)\b|\bme\s+and\s+(?P<m>{_CAP})"),
    re.compile(rf"(?:^|(?<=[.!?]\s)|(?<=,\s))(?P<n>{_CAP})\s+{_SAYS}\b"),
    re.compile(rf"\b(?i:forgive|miss|love|hate|met|meet|told|tell|asked|ask|blame|trust|marry|married|dating|"
               rf"date|texted|text|visit|visited|lost)\s+(?P<n>{_CAP})"),
]
_SPEAKER = frozenset(["i", "i'm", "i've", "i'd", "i'll"])
_PARTICLES = frozenset("bin binti bint ibn al el de del da di dos van von der le la ter ten".split())


def _trim(text: str, start: int, end: int) -> tuple[int, int] | None:
    """Cut a cued name before the speaker ("Wojciech I needed"), a family word, a month or a title, and
    at a possessive. Other clause words stop only the first word: "An" ends "Nguyen Van An", it does not
    open a name."""
    keep_end = start
    for i, w in enumerate(re.finditer(r"\S+", text[start:end])):
        token = w.group(0)
        k = key(token)
        if k in NOT_PII and k not in _PARTICLES and (i == 0 or k not in CLAUSE_WORDS or k in _SPEAKER):
            break
        keep_end = start + w.end()
        if token.endswith(("'s", "’s")):
            keep_end -= 2
            break
    return (start, keep_end) if keep_end > start else None


def find_cued_names(text: str) -> list[Found]:
    out = []
    for strong, cues in ((True, _STRONG_CUES), (False, _WEAK_CUES)):
        for cue in cues:
            for m in cue.finditer(text):
                for g, name in m.groupdict().items():
                    if name:
                        span = _trim(text, m.start(g), m.end(g))
                        if span and (strong or not is_region(text[span[0]:span[1]])):
                            out.append(Found(*span, "NAME"))
    return out


def is_name(text: str, start: int, end: int, proper_noun: Callable[[int, int], bool]) -> bool:
    """Whether the NER model's PERSON span ``text[start:end]`` reads as a person's name.

    ``proper_noun(start, end)`` asks the model's part-of-speech tagger; it is called only for one word
    opening a sentence or a parenthesis, where the capital letter says nothing ("Laid off on a
    Tuesday", "(Rubs eyes)"), so most speeches never pay for tagging.
    """
    tokens = text[start:end].split()
    if not tokens or not tokens[0][0].isupper():
        return False
    if any(not t[0].isupper() and key(t) not in _PARTICLES for t in tokens):
        return False  # "Lymph node", "Flat 4": a name has no lower-case word and no number
    if all(key(t) in NOT_PII for t in tokens) or is_region(text[start:end]):
        return False
    if len(tokens) == 1 and text[:start].rstrip().endswith("("):
        return False  # "(Sheepishly)", "(Rubs eyes)": a stage direction, whatever the tagger says
    return not (len(tokens) == 1 and opens_sentence(text, start)) or proper_noun(start, end)


