"""What a found detail is, how overlapping finds become one mask, and how masks are written.

Every finder returns ``Found`` spans on the original text; ``mask`` writes them in one pass, so a finder
never sees another finder's placeholder and the order finders run in does not change the result.
"""

from __future__ import annotations

from dataclasses import dataclass

# The placeholder of a kind is "[KIND]". The first four were the only kinds before names, places, dates
# of birth and ID numbers were added; their order is kept because reports print counts in this order.
KINDS = ("EMAIL", "PHONE", "URL", "HANDLE", "NAME", "PLACE", "ADDRESS", "POSTCODE", "DOB", "ID")

# When two finds of the same length overlap exactly, the earlier kind names the mask: a URL holding an
# email is a URL, an address holding a place name is an address.
_PRIORITY = {k: i for i, k in enumerate(("URL", "EMAIL", "ID", "PHONE", "HANDLE", "ADDRESS", "POSTCODE",
                                         "DOB", "NAME", "PLACE"))}


@dataclass(frozen=True, order=True)
class Found:
    """A detail of ``kind`` at ``text[start:end]``."""

    start: int
    end: int
    kind: str

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown PII kind {self.kind!r}; known: {', '.join(KINDS)}")
        if not 0 <= self.start < self.end:
            raise ValueError(f"empty or negative span {self.start}:{self.end}")


def resolve(found: list[Found]) -> list[Found]:
    """Merge overlapping finds into disjoint masks, sorted by position.

    Overlaps are merged rather than one side dropped: a partial overlap (an address pattern and an NER
    place sharing a word) masks the union, so no fragment of either leaks. The longest find in a merged
    group names it, ties broken by ``_PRIORITY``.
    """
    out: list[Found] = []
    group: list[Found] = []

    def close() -> None:
        if group:
            lead = max(group, key=lambda f: (f.end - f.start, -_PRIORITY[f.kind]))
            out.append(Found(group[0].start, max(f.end for f in group), lead.kind))

    for f in sorted(found):
        if group and f.start < max(g.end for g in group):
            group.append(f)
        else:
            close()
            group = [f]
    close()
    return out


def mask(text: str, found: list[Found]) -> tuple[str, dict[str, int]]:
    """Replace each resolved find with ``[KIND]``; return the text and how many of each kind."""
    counts = dict.fromkeys(KINDS, 0)
    parts: list[str] = []
    pos = 0
    for f in resolve(found):
        parts.append(text[pos:f.start])
        parts.append(f"[{f.kind}]")
        counts[f.kind] += 1
        pos = f.end
    parts.append(text[pos:])
    return "".join(parts), counts
