"""What the clinician decides about a draft, and where drafts live while they decide.

    edit_distance(a, b) -> int          Levenshtein distance in characters (insert, delete, substitute = 1)
    decision_kind(action, draft, final) "accept" (approved unchanged), "edit" (approved changed) or "reject"
    DraftMemory                         draft pages kept in this process's memory when storage is off

With storage off, a draft page's text (the client's message, the drafts) is in memory only, for
``policy.memory_minutes``, and lost on a restart: by design, since it was never to be written down.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any


def edit_distance(a: str, b: str) -> int:
    """Levenshtein distance in characters. A common prefix and suffix are skipped first: a clinician's edit is
    usually local, so the quadratic part runs on the changed middle only."""
    if a == b:
        return 0
    start = 0
    while start < min(len(a), len(b)) and a[start] == b[start]:
        start += 1
    end_a, end_b = len(a), len(b)
    while end_a > start and end_b > start and a[end_a - 1] == b[end_b - 1]:
        end_a -= 1
        end_b -= 1
    a, b = a[start:end_a], b[start:end_b]
    if len(a) < len(b):
        a, b = b, a
    if not b:
        return len(a)
    prev = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        cur = [i]
        for j, cb in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ca != cb)))
        prev = cur
    return prev[-1]


def decision_kind(action: str, draft: str, final: str) -> str:
    if action == "reject":
        return "reject"
    return "accept" if final == draft else "edit"


@dataclass
class DraftPage:
    """One draft set's content while the clinician works on it (memory only when storage is off)."""

    clinician_id: int
    gate: Any  # gate.Gate: the screen, needed to re-check an edited draft
    message: str
    texts: list[str]
    failed: list[str] = field(default_factory=list)  # drafts the backend failed to write, as first shown
    created: float = field(default_factory=time.monotonic)


class DraftMemory:
    """Draft pages by set id, dropped after ``ttl_s`` or when more than ``cap`` are held (oldest first).
    Bounded so a busy day cannot grow the process without limit: 4,096 pages of 8 drafts of ~1 kB is ~40 MB."""

    def __init__(self, ttl_s: float, cap: int = 4096):
        self.ttl_s, self.cap = ttl_s, cap
        self.pages: OrderedDict[int, DraftPage] = OrderedDict()
        self.lock = threading.Lock()

    def put(self, set_id: int, page: DraftPage) -> None:
        with self.lock:
            self.pages[set_id] = page
            while len(self.pages) > self.cap:
                self.pages.popitem(last=False)

    def get(self, set_id: int, clinician_id: int) -> DraftPage | None:
        """The page, if it is still held and belongs to this clinician."""
        with self.lock:
            now = time.monotonic()
            while self.pages:  # oldest first: expire from the front
                first = next(iter(self.pages.values()))
                if now - first.created <= self.ttl_s:
                    break
                self.pages.popitem(last=False)
            page = self.pages.get(set_id)
        return page if page is not None and page.clinician_id == clinician_id else None

    def __len__(self) -> int:
        return len(self.pages)
