"""Crisis screen: precision / recall on the labelled set (with bootstrap 95% intervals), speed, demo counts.

    .venv/bin/python bench/bench_screen.py                 # labelled set + demo speeches + speed (rules alone)
    .venv/bin/python bench/bench_screen.py --learned       # also the learned layer's speed (screen_many, batched)
    .venv/bin/python bench/bench_screen.py --json out.json

The labelled set (psychocounsel/data/crisis_labelled.jsonl) was written by the author of the rules: the
"dev" split was used while writing them, the "heldout" split was written afterwards and first scored with
the rules frozen (docs/CRISIS_SCREEN.md has that first score too). Both are reported apart; neither is an
independent clinical test set.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from psychocounsel.measures.bootstrap import bootstrap_ci
from psychocounsel.safety.labels import crisis_tier
from psychocounsel.safety.normalise import normalise
from psychocounsel.safety.responses import check_response
from psychocounsel.safety.screen import TIERS, screen_many, screen_rules

DATA = ROOT / "psychocounsel" / "data"
N_BOOT = 2000  # percentile bootstrap over speeches; 2,000 keeps the endpoints' Monte-Carlo error < 1 point


def _prec(pred: np.ndarray, gold: np.ndarray) -> float:
    return float(gold[pred].mean()) if pred.any() else float("nan")


def _rec(pred: np.ndarray, gold: np.ndarray) -> float:
    return float(pred[gold].mean()) if gold.any() else float("nan")


def binary(pred: np.ndarray, gold: np.ndarray, seed: int = 0) -> dict:
    """Precision and recall of a yes/no reading, each with a 95% bootstrap interval (resampling speeches)."""
    out = {"n_gold": int(gold.sum()), "n_pred": int(pred.sum())}
    for name, fn in (("precision", _prec), ("recall", _rec)):
        lo, hi = bootstrap_ci(fn, pred, gold, n_boot=N_BOOT, seed=seed)
        out[name] = {"value": fn(pred, gold), "lo": lo, "hi": hi}
    return out


def evaluate(rows: list[dict]) -> dict:
    gold = np.array([crisis_tier(r) for r in rows])  # concerns (another adult at risk, danger from others): none
    pred = np.array([screen_rules(r["text"]).tier for r in rows])
    res = {"n": len(rows), "accuracy": float((gold == pred).mean()),
           "confusion": {g: {p: int(((gold == g) & (pred == p)).sum()) for p in TIERS} for g in TIERS},
           "per_tier": {t: binary(pred == t, gold == t) for t in TIERS},
           "any_risk_vs_none": binary(pred != "none", gold != "none"),
           "high_vs_rest": binary(pred == "high", gold == "high")}
    traps = [i for i, r in enumerate(rows) if r.get("trap")]
    res["traps"] = {"n": len(traps), "correct": int(sum(gold[i] == pred[i] for i in traps))}
    res["errors"] = [{"id": r["id"], "gold": g, "pred": p, "category": r.get("category")}
                     for r, g, p in zip(rows, gold, pred) if g != p]
    return res


def responses(rows: list[dict]) -> dict:
    agree = Counter()
    for r in rows:
        got = check_response(screen_rules(r["text"]), r["response"])
        agree["acknowledges_risk"] += got.acknowledges_risk == r["acknowledges_risk"]
        agree["points_to_help"] += got.points_to_help == r["points_to_help"]
        agree["wrong_numbers"] += list(got.wrong_numbers) == r["wrong_numbers"]
    return {"n": len(rows), **{k: f"{v}/{len(rows)}" for k, v in agree.items()}}


def speed(texts: list[str], min_seconds: float = 2.0, fn=screen_rules) -> dict:
    """Speeches per second on one core: CPU time of this process (a busy shared machine slows the wall
    clock, not the work), timing whole passes until ``min_seconds`` of CPU have gone by; wall time too.
    ``fn`` is the screen, or one step of it (``normalise``) to see where the time goes."""
    fn(texts[0])
    n, c0, w0 = 0, time.process_time(), time.perf_counter()
    while time.process_time() - c0 < min_seconds:
        for t in texts:
            fn(t)
        n += len(texts)
    cpu, wall = time.process_time() - c0, time.perf_counter() - w0
    return {"speeches": n, "cpu_s": round(cpu, 2), "wall_s": round(wall, 2), "speeches_per_cpu_s": round(n / cpu),
            "speeches_per_wall_s": round(n / wall), "mean_chars": round(sum(map(len, texts)) / len(texts))}


def _fmt(b: dict) -> str:
    def one(k: str) -> str:
        v = b[k]
        return f"{k[:4]} {v['value']:.2f} [{v['lo']:.2f}, {v['hi']:.2f}]"
    return f"{one('precision')}  {one('recall')}  (gold {b['n_gold']}, flagged {b['n_pred']})"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", help="Also write every number to this JSON file.")
    ap.add_argument("--learned", action="store_true", help="Also time the learned layer (loads the embedded model).")
    args = ap.parse_args()
    rows = [json.loads(line) for line in (DATA / "crisis_labelled.jsonl").read_text(encoding="utf-8").splitlines() if line]
    speeches = [r for r in rows if r["kind"] == "speech"]
    demo = [json.loads(line) for line in (DATA / "demo_speeches.jsonl").read_text(encoding="utf-8").splitlines() if line]
    report: dict = {}
    for split in ("dev", "heldout", "all"):
        part = [r for r in speeches if split == "all" or r["split"] == split]
        res = report[split] = evaluate(part)
        print(f"\n== labelled set, {split}: {res['n']} speeches, accuracy {res['accuracy']:.3f}, "
              f"traps right {res['traps']['correct']}/{res['traps']['n']}")
        print("confusion (rows gold, columns screen):", json.dumps(res["confusion"]))
        for t in TIERS:
            print(f"  {t:9s} {_fmt(res['per_tier'][t])}")
        print(f"  any risk  {_fmt(res['any_risk_vs_none'])}")
        print(f"  high/rest {_fmt(res['high_vs_rest'])}")
        print("  errors:", ", ".join(f"{e['id']} {e['gold']}->{e['pred']}" for e in res["errors"]) or "none")
    report["responses"] = responses([r for r in rows if r["kind"] == "response"])
    print("\n== check_response vs labels:", report["responses"])
    demo_screens = [(r, screen_rules(r["text"])) for r in demo]
    counts = Counter(s.tier for _, s in demo_screens)
    crisis = [(r["id"], r["subtopic"], s.tier) for r, s in demo_screens if r["topic"] == "crisis"]
    others = [(r["id"], r["topic"], s.tier, s.evidence()) for r, s in demo_screens if r["topic"] != "crisis" and s.tier != "none"]
    report["demo"] = {"n": len(demo), "counts": {t: counts[t] for t in TIERS}, "crisis_rows": crisis,
                      "flagged_outside_crisis_topic": others}
    print(f"\n== demo_speeches.jsonl: {len(demo)} speeches:", {t: counts[t] for t in TIERS})
    for c in crisis:
        print("  ", *c)
    print("  flagged outside the crisis topic:", others or "none")
    texts = [r["text"] for r in demo] + [r["text"] for r in speeches]
    report["speed"] = speed(texts)
    report["speed_normalise_only"] = speed(texts, fn=normalise)
    print("\n== speed (one core):", report["speed"])
    print("   normalise alone:", report["speed_normalise_only"])
    if args.learned:
        screen_many(texts[:2])  # load the embedded model first: its ~10 s are paid once per process
        c0, w0 = time.process_time(), time.perf_counter()
        screen_many(texts)
        cpu, wall = time.process_time() - c0, time.perf_counter() - w0
        report["speed_learned"] = {"speeches": len(texts), "cpu_s": round(cpu, 1), "wall_s": round(wall, 1),
                                   "speeches_per_wall_s": round(len(texts) / wall, 1),
                                   "mean_chars": round(sum(map(len, texts)) / len(texts))}
        print("   rules + learned layer (screen_many, wall clock, all cores):", report["speed_learned"])
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2), encoding="utf-8")


if __name__ == "__main__":
    main()
