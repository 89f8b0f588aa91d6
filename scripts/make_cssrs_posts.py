"""Build psychocounsel/data/cssrs_posts.jsonl from the C-SSRS-labelled r/SuicideWatch posts of Patil et al.

    git -C <mirror of av9ash/llm_cssrs_code> show \
        951522ca19043d86f9e787b89470e5bf1b55df2b:labelled_data/csv/human_n_llm_labeled_rSuicidewatch_posts.csv \
        > /tmp/cssrs.csv
    .venv/bin/python scripts/make_cssrs_posts.py /tmp/cssrs.csv

Source: Patil, Tao, Gedhu, "Evaluating Reasoning LLMs for Suicide Screening with the Columbia-Suicide
Severity Rating Scale", arXiv 2505.13480 (2025), github.com/av9ash/llm_cssrs_code, CC BY 4.0. Their column
`severity` (0-6) is the human label; the LLM columns are dropped.

What is kept: the post text (title and body as the CSV has them), the human severity, the tier it maps
to (docs/CRISIS_LABELS.md, "The C-SSRS posts"), a split and the attribution. What is dropped: the
author, the post URL (it names the post and so the account), the creation time, the five LLM labels.
Inside the text, links, u/ mentions, e-mail addresses and phone numbers become [url], [user], [email],
[phone]. All 1,170 posts fit in ~0.5 MB, so the whole set ships; ids follow the CSV's row order at the
pinned commit (cssrs-0001 is its first data row), and the split is a hash of the id, so the held-out
part does not depend on anything else.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "psychocounsel" / "data" / "cssrs_posts.jsonl"
COMMIT = "951522ca19043d86f9e787b89470e5bf1b55df2b"
SOURCE = f"Patil et al. 2025, arXiv 2505.13480; github.com/av9ash/llm_cssrs_code@{COMMIT[:7]}; CC BY 4.0"
# C-SSRS screener questions 1-2 (wish to be dead, non-specific thoughts) are the screen's `possible`;
# 3-6 (method, intent, plan, behaviour) are `high`: the screener's own line for an immediate response.
TIER_OF_SEVERITY = {0: "none", 1: "possible", 2: "possible", 3: "high", 4: "high", 5: "high", 6: "high"}
# 30% held out, as for crisis_messages.jsonl: ~350 posts, enough for a recall interval of about +-5 points.
HELDOUT_PERCENT = 30

_SCRUB = [
    (re.compile(r"https?://\S+|www\.\S+", re.IGNORECASE), "[url]"),
    (re.compile(r"(?<![\w/])/?u/[A-Za-z0-9_-]{2,}"), "[user]"),
    (re.compile(r"\b[\w.+-]+@[\w-]+\.[\w.]+\b"), "[email]"),
    (re.compile(r"(?<!\d)(?:\+?\d[\d ()-]{8,}\d)(?!\d)"), "[phone]"),
]


def split_of(row_id: str) -> str:
    """'heldout' for ~30% of ids by a hash of the id alone, so adding rows never moves an old one."""
    return "heldout" if int(hashlib.sha256(row_id.encode()).hexdigest()[:8], 16) % 100 < HELDOUT_PERCENT else "dev"


def scrub(text: str) -> str:
    """The post with links, user mentions, e-mails and phone numbers replaced, and Windows line ends as \\n."""
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    for rx, repl in _SCRUB:
        text = rx.sub(repl, text)
    return text.strip()


def convert(csv_path: Path) -> list[dict]:
    with csv_path.open(encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f))
    out = []
    for i, r in enumerate(rows, start=1):
        sev = int(r["severity"])
        row_id = f"cssrs-{i:04d}"
        out.append({"id": row_id, "text": scrub(r["content"]), "severity": sev, "tier": TIER_OF_SEVERITY[sev],
                    "split": split_of(row_id), "source": SOURCE})
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("csv", type=Path, help="human_n_llm_labeled_rSuicidewatch_posts.csv at the pinned commit")
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args()
    rows = convert(args.csv)
    args.out.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    print(f"{len(rows)} posts -> {args.out}")


if __name__ == "__main__":
    main()
