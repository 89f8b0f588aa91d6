"""Small preference-pair files for tests: our JSONL schema and the published dataset's parquet."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from psychocounsel import PRINCIPLE_KEYS

GOOD = ["It sounds like the mornings are really hard for you right now.",
        "What would it look like if you felt heard in those talks?"]
BAD = ["Rate the response from 1 to 5.", "You are a helpful and careful therapist."]


def published(folder: Path, n: int, split: str, long_response: int | None = None) -> Path:
    """A PsychoCounsel-Preference parquet (the hub's column set and file naming)."""
    chosen = [GOOD[i % 2] for i in range(n)]
    if long_response is not None:
        chosen[long_response] = "I feel anxious every morning. " * 20
    cols = {"ID": list(range(n)), "prefID": list(range(n)),
            "question": [f"My partner and I argue about money {i}." for i in range(n)],
            "chosen": chosen, "rejected": [BAD[i % 2] for i in range(n)],
            "chosen_model": ["m1"] * n, "rejected_model": ["m2"] * n}
    for k in PRINCIPLE_KEYS:
        cols[f"chosen_{k}_rating"] = [5 - (i % 2) for i in range(n)]  # gaps of 2 and 1: margins differ
        cols[f"rejected_{k}_rating"] = [3] * n
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{split}-00000-of-00001.parquet"
    pq.write_table(pa.table(cols), path)
    return path


def write_pairs(path: Path, n: int = 8, tweak: str = "") -> Path:
    """Pairs in the released schema with lengths that vary (so length grouping and truncation have work)."""
    rows = []
    for i in range(n):
        row = {"question": f"I feel anxious every morning before work {i}." + " I do not know why." * (i % 3),
               "chosen": "It sounds like the mornings are hard for you." + " What would help?" * (i % 2) + tweak,
               "rejected": "Just stop worrying." + " Work is work." * (i % 3),
               "chosen_model": "a", "rejected_model": "b"}
        for k in PRINCIPLE_KEYS:
            row[f"chosen_{k}_rating"], row[f"rejected_{k}_rating"] = 5, 2
        rows.append(row)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path
