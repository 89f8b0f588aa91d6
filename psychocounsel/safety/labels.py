"""The crisis tier of a labelled row under the screen's definition of risk.

The labelled sets (data/crisis_*.jsonl) were written while the labelling guide still counted two concerns as
``possible``: another adult's suicidal talk (category ``other_at_risk``; ``other`` in crisis_labelled.jsonl)
and danger from someone else (``harm_from_others``). The definition the screen is measured against counts
the speaker, someone in their care, and threats the speaker makes (docs/CRISIS_LABELS.md), so those rows are
``none`` for the tier and stay concerns for the reply. The files keep their original labels: their held-out
parts are frozen (docs/CRISIS_SCREEN.md) and are read through this function instead of being edited.
"""

from __future__ import annotations

from collections.abc import Mapping

CONCERN_CATEGORIES = frozenset({"other_at_risk", "harm_from_others", "other"})


def crisis_tier(row: Mapping) -> str:
    """``row["tier"]``, except ``none`` for a ``possible`` row whose category is a concern."""
    if row["tier"] == "possible" and row.get("category") in CONCERN_CATEGORIES:
        return "none"
    return row["tier"]
