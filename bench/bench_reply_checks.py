"""Reply checks: precision and recall of every check on the labelled replies, with bootstrap 95% intervals.

    .venv/bin/python bench/bench_reply_checks.py                 # held-out first, then dev and all
    .venv/bin/python bench/bench_reply_checks.py --errors        # the dev rows a check gets wrong (never held-out)
    .venv/bin/python bench/bench_reply_checks.py --json out.json

The set (psychocounsel/data/reply_checks.jsonl) was written by the author of the rules, before they were run;
every 4th line is held out, frozen (its sha256 is in docs/CRISIS_SCREEN.md and tests/safety/test_responses.py)
and never used to tune. The author had read those rows while writing the rules, so even the held-out score is
an upper bound, not an estimate for real replies. Required behaviours are scored on risk messages only (where
the label is not null); flags on every reply.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from psychocounsel.measures.bootstrap import bootstrap_ci
from psychocounsel.safety.responses import FLAG_SEVERITY, REQUIRED, check_response
from psychocounsel.safety.screen import screen

DATA = ROOT / "psychocounsel" / "data" / "reply_checks.jsonl"
N_BOOT = 2000  # percentile bootstrap over replies; 2,000 keeps the endpoints' Monte-Carlo error near 1 point


def _prec(pred: np.ndarray, gold: np.ndarray) -> float:
    return float(gold[pred].mean()) if pred.any() else float("nan")


def _rec(pred: np.ndarray, gold: np.ndarray) -> float:
    return float(pred[gold].mean()) if gold.any() else float("nan")


def score(rows: list[dict], errors: list | None = None) -> dict[str, dict]:
    """Per check: n labelled, positives, precision and recall with 95% intervals (resampling replies)."""
    got = [check_response(screen(r["message"]), r["reply"], r["locale"]) for r in rows]
    out = {}
    for k in (*REQUIRED, *FLAG_SEVERITY):
        pairs = [(r, g) for r, g in zip(rows, got) if k in FLAG_SEVERITY or r["required"] is not None]
        gold = np.array([k in r["flags"] if k in FLAG_SEVERITY else r["required"][k] for r, _ in pairs], dtype=bool)
        pred = np.array([k in g.flag_kinds() if k in FLAG_SEVERITY else getattr(g, k) for _, g in pairs], dtype=bool)
        if errors is not None:
            errors += [(k, "missed" if gd else "false alarm", r["id"], r["reply"])
                       for (r, _), gd, p in zip(pairs, gold, pred) if gd != p]
        out[k] = {"n": len(gold), "positives": int(gold.sum()), "tp": int((gold & pred).sum()),
                  "fp": int((~gold & pred).sum()), "fn": int((gold & ~pred).sum()),
                  "precision": _prec(pred, gold), "precision_ci": bootstrap_ci(_prec, pred, gold, n_boot=N_BOOT),
                  "recall": _rec(pred, gold), "recall_ci": bootstrap_ci(_rec, pred, gold, n_boot=N_BOOT)}
    return out


def _fmt(v: float, ci: tuple[float, float]) -> str:
    return "n/a" if np.isnan(v) else f"{v:.2f} [{ci[0]:.2f}, {ci[1]:.2f}]"


def table(name: str, res: dict[str, dict]) -> str:
    lines = [f"\n== {name}", "| check | positives / n | precision | recall | fp | fn |", "|---|---|---|---|---|---|"]
    for k, d in res.items():
        lines.append(f"| {k} | {d['positives']} / {d['n']} | {_fmt(d['precision'], d['precision_ci'])} | "
                     f"{_fmt(d['recall'], d['recall_ci'])} | {d['fp']} | {d['fn']} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--errors", action="store_true", help="list the dev rows each check gets wrong")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    rows = [json.loads(x) for x in DATA.read_text(encoding="utf-8").splitlines()]
    report = {}
    # Batch 1 (ids rc-) was written before the rules and read while writing them; batch 2 (ids rc2-) was written
    # after the rules froze and first scored unseen: its numbers are the less flattering, more honest ones.
    parts = {"batch 2 heldout": lambda r: r["id"].startswith("rc2-") and r["split"] == "heldout",
             "batch 2 dev": lambda r: r["id"].startswith("rc2-") and r["split"] == "dev",
             "batch 2 (all, scored unseen)": lambda r: r["id"].startswith("rc2-"),
             "heldout": lambda r: r["split"] == "heldout", "dev": lambda r: r["split"] == "dev",
             "all": lambda r: True}
    for split, keep in parts.items():
        part = [r for r in rows if keep(r)]
        errs: list | None = [] if args.errors and split == "dev" else None
        report[split] = score(part, errs)
        print(table(f"{split} ({len(part)} replies)", report[split]))
        for e in errs or []:
            print("  ", e)
    t = time.perf_counter()
    texts = [r["reply"] for r in rows] * 20
    s = screen("I want to die.")
    for text in texts:
        check_response(s, text)
    rate = len(texts) / (time.perf_counter() - t)
    report["replies_per_s"] = rate
    print(f"\nspeed: {rate:,.0f} replies/s on one core (mean {np.mean([len(x) for x in texts]):.0f} characters)")
    if args.json:
        args.json.write_text(json.dumps(report, indent=1, default=float))


if __name__ == "__main__":
    main()
