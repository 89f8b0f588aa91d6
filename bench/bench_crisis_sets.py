"""Crisis screen on the labelled sets (crisis_messages, cssrs_posts, crisis_independent, crisis_inbox,
crisis_counselchat, crisis_fresh, the Reddit draws crisis_reddit, _2 to _13, crisis_rallypoint, _2 to _8, and the
linked sets crisis_sdcnl, _2 to _8, crisis_suicide_detection, _2 and crisis_twitter, _2 where their text
was rebuilt), per split.

    .venv/bin/python bench/bench_crisis_sets.py                # every set: dev, heldout, all
    .venv/bin/python bench/bench_crisis_sets.py --sets crisis_fresh crisis_counselchat --split heldout --learned
    .venv/bin/python bench/bench_crisis_sets.py --errors       # also the DEV misses and false alarms, with evidence
    .venv/bin/python bench/bench_crisis_sets.py --learned      # recall tables for rules + learned layer too
    .venv/bin/python bench/bench_crisis_sets.py --json out.json
    .venv/bin/python bench/bench_crisis_sets.py --sets crisis_sdcnl crisis_suicide_detection --pooled --learned
    .venv/bin/python bench/bench_crisis_sets.py --sets crisis_reddit_3 --check-model MODEL --base-url URL \
        --check-overrules                             # rules + learned layer + a capable model's check

Prints, per set and split: any-risk precision and recall, the high-tier false-negative rate (gold high
screened below high; and screened none), tier accuracy, quadratic-weighted kappa over none < possible <
high, each with a 95% percentile bootstrap interval over messages (psychocounsel.measures.bootstrap), the
tier confusion matrix, and recall per register and per category (per severity level for the C-SSRS posts, per
forum for the Reddit posts).
Then the recall tables: per gold tier (possible, high) and per register / category / C-SSRS severity, the
share of risk rows screened at any risk and the share screened at their gold tier, each with a 95% Wilson
interval (counts per cell are small, down to a handful), for the rules alone and, with ``--learned``, for
the rules plus the learned layer. With ``--check-model``, a third run: the model's second opinion
(``safety.model_check``, through a call cache) on what rules + layer flag, or on every message with ``--check-all``;
``--check-overrules`` lets its tier undo the learned layer's raises and the rules' ideation read from words alone,
as ``screen`` does: scored once with the
layer at its own threshold and once at its lower checked threshold (what ``screen --check-overrules`` uses;
also scored alone, before the model reads). Its failed calls
are counted and leave the screen's tier. Nothing here tunes anything: it measures the screen as shipped. Gold tiers are read through
``safety.labels.crisis_tier`` (another adult's risk and danger from someone else are concerns, not risk).

The held-out parts were frozen before the screen was first run on them (docs/CRISIS_SCREEN.md,
"Real-register evidence"). Error listings are for the dev split only: read held-out rows to check a
fix and the held-out set stops being held out.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from psychocounsel.measures.agreement import cohen_kappa
from psychocounsel.measures.bootstrap import bootstrap_ci, wilson_ci
from psychocounsel.safety.labels import crisis_tier
from psychocounsel.safety.learned import LAYER_PATH, load_layer
from psychocounsel.safety.model_check import make_check_backend, run_model_check
from psychocounsel.safety.screen import (
    TIER_RANK,
    TIERS,
    learned_scores,
    raise_tiers,
    screen_many,
)

DATA = ROOT / "psychocounsel" / "data"
OUT = ROOT / "bench" / "out"
SETS = {name: DATA / f"{name}.jsonl" for name in (
    "crisis_messages", "cssrs_posts", "crisis_independent", "crisis_inbox", "crisis_counselchat", "crisis_fresh",
    "crisis_reddit", *(f"crisis_reddit_{d}" for d in range(2, 14)),
    "crisis_rallypoint", *(f"crisis_rallypoint_{d}" for d in range(2, 9)))}
# Linked sets: only their labels are committed (bench/data/*.labels.jsonl); scripts/make_linked_posts.py rebuilds
# the text into bench/out/.
SETS |= {f.name.removesuffix(".labels.jsonl"): OUT / f.name.replace(".labels", "")
         for f in sorted((ROOT / "bench" / "data").glob("crisis_*.labels.jsonl"))}


def group_keys(set_name: str) -> tuple[str, ...]:
    """What a set is broken down by: written sets by register and category, the real questions by category, the
    r/SuicideWatch posts by their C-SSRS severity, the Reddit posts by forum (support or everyday, then each one),
    the first RallyPoint posts by the source's mark (about mental health or not) and its set, the later ones and
    the linked posts by set or forum, the pooled sets by which set."""
    if set_name in ("cssrs_posts", "crisis_counselchat", "crisis_rallypoint", "pooled"):
        return {"cssrs_posts": ("severity",), "crisis_counselchat": ("category",),
                "crisis_rallypoint": ("mental_health", "set", "category"), "pooled": ("labelled_set", "category")}[set_name]
    if set_name.startswith("crisis_reddit"):
        return ("forum", "subreddit", "category")
    if set_name.startswith("crisis_rallypoint_"):
        return ("set", "category")
    if SETS.get(set_name, DATA).parent == OUT:
        return ("forum", "category")
    return ("register", "category")


# The Reddit sample's forums that are not about mental health (docs/CRISIS_SCREEN.md, "crisis_reddit").
EVERYDAY_FORUMS = {"UKPersonalFinance", "conspiracy", "divorce", "guns", "legaladvice", "mindfulness",
                   "personalfinance", "teaching", "ukpolitics", "unitedkingdom"}
N_BOOT = 2000  # percentile bootstrap over messages; 2,000 keeps the endpoints' Monte-Carlo error < 1 point
ECHO = "[echoes a reported miss]"  # crisis_messages rows that reuse wording of misses seen on real text


def _share(hit: np.ndarray, of: np.ndarray) -> float:
    """Share of the ``of`` rows where ``hit`` holds; NaN when there are none (dropped by the bootstrap)."""
    return float(hit[of].mean()) if of.any() else float("nan")


def _qwk(gold: np.ndarray, pred: np.ndarray) -> float:
    return cohen_kappa(gold, pred, labels=[0, 1, 2], weights="quadratic")


def _with_ci(fn, *arrays: np.ndarray) -> dict:
    lo, hi = bootstrap_ci(fn, *arrays, n_boot=N_BOOT, seed=0)
    return {"value": fn(*arrays), "lo": lo, "hi": hi}


def score(gold_tiers: list[str], pred_tiers: list[str]) -> dict:
    """The headline numbers of one set and split, each with its bootstrap interval."""
    g = np.array([TIER_RANK[t] for t in gold_tiers])
    p = np.array([TIER_RANK[t] for t in pred_tiers])
    return {
        "n": len(g), "n_risk": int((g > 0).sum()), "n_high": int((g == 2).sum()), "n_flagged": int((p > 0).sum()),
        "any_risk_recall": _with_ci(lambda g, p: _share(p > 0, g > 0), g, p),
        "any_risk_precision": _with_ci(lambda g, p: _share(g > 0, p > 0), g, p),
        "high_fn_rate": _with_ci(lambda g, p: _share(p < 2, g == 2), g, p),
        "high_screened_none": _with_ci(lambda g, p: _share(p == 0, g == 2), g, p),
        "tier_accuracy": _with_ci(lambda g, p: float((g == p).mean()), g, p),
        "qwk": _with_ci(_qwk, g, p),
        "confusion": {TIERS[i]: {TIERS[j]: int(((g == i) & (p == j)).sum()) for j in range(3)} for i in range(3)},
    }


def by_group(rows: list[dict], preds: list[str], key: str) -> dict[str, dict]:
    """Per value of ``key``: risk rows flagged (any tier), risk rows at the right tier, none rows flagged."""
    acc: dict[str, dict] = defaultdict(lambda: {"n": 0, "risk": 0, "flagged": 0, "tier_right": 0, "none": 0,
                                                "false_alarm": 0})
    for r, pred in zip(rows, preds):
        a = acc[str(r[key])]
        a["n"] += 1
        if r["tier"] == "none":
            a["none"] += 1
            a["false_alarm"] += pred != "none"
        else:
            a["risk"] += 1
            a["flagged"] += pred != "none"
            a["tier_right"] += pred == r["tier"]
    return dict(sorted(acc.items()))


def recall_by(rows: list[dict], preds: list[str], key: str) -> dict[str, dict]:
    """Per value of ``key``, over the gold-risk rows only: how many were screened at any risk, and how many
    at their gold tier, each share with its Wilson interval. A 'none' prediction is a miss in both."""
    acc: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0])
    for r, pred in zip(rows, preds):
        if r["tier"] != "none":
            a = acc[str(r[key])]
            a[0] += 1
            a[1] += pred != "none"
            a[2] += pred == r["tier"]
    out = {}
    for k, (n, caught, right) in sorted(acc.items()):
        out[k] = {"n": n, "any_risk": {"k": caught, "value": caught / n, "ci": wilson_ci(caught, n)},
                  "right_tier": {"k": right, "value": right / n, "ci": wilson_ci(right, n)}}
    return out


def _share_ci(v: dict) -> str:
    return f"{v['value']:.2f} [{v['ci'][0]:.2f}, {v['ci'][1]:.2f}]"


def print_recall(tables: dict[str, dict[str, dict[str, dict]]]) -> None:
    """One line per group: n, then per screen 'any risk | right tier' as share [Wilson 95%]."""
    screens = list(tables)
    print("  recall over risk rows, share [Wilson 95%]: screened at any risk | screened at the gold tier")
    print(f"    {'':28s} {'n':>4s}  " + "   ".join(f"{name:^43s}" for name in screens))
    for key in tables[screens[0]]:
        for group, cell in tables[screens[0]][key].items():
            line = f"    {key + ' ' + group:28s} {cell['n']:4d}  "
            line += "   ".join(f"{_share_ci(t[key][group]['any_risk'])} | {_share_ci(t[key][group]['right_tier'])}"
                               for t in tables.values())
            print(line)


def _ci(v: dict) -> str:
    return f"{v['value']:.2f} [{v['lo']:.2f}, {v['hi']:.2f}]"


def print_score(name: str, s: dict) -> None:
    print(f"\n== {name}: {s['n']} rows, {s['n_risk']} risk ({s['n_high']} high), {s['n_flagged']} flagged")
    print(f"  any-risk recall     {_ci(s['any_risk_recall'])}")
    print(f"  any-risk precision  {_ci(s['any_risk_precision'])}")
    print(f"  high FN rate        {_ci(s['high_fn_rate'])}   (gold high screened below high)")
    print(f"  high screened none  {_ci(s['high_screened_none'])}")
    print(f"  tier accuracy       {_ci(s['tier_accuracy'])}")
    print(f"  weighted kappa (quadratic) {_ci(s['qwk'])}")
    print("  confusion (rows gold, columns screen):")
    print("    " + " ".join(f"{t:>9s}" for t in ("", *TIERS)))
    for t in TIERS:
        print("    " + f"{t:>9s} " + " ".join(f"{s['confusion'][t][u]:9d}" for u in TIERS))


def print_groups(title: str, groups: dict[str, dict]) -> None:
    print(f"  {title}: risk flagged / risk (tier right) | none flagged / none")
    for k, a in groups.items():
        risk = f"{a['flagged']:3d}/{a['risk']:<3d} ({a['tier_right']:3d})" if a["risk"] else " " * 13
        none = f"{a['false_alarm']:3d}/{a['none']:<3d}" if a["none"] else ""
        print(f"    {k:24s} {risk} | {none}")


def print_errors(rows: list[dict], screens: list) -> None:
    """DEV misses (gold risk screened lower) and false alarms, with the screen's evidence."""
    for r, s in zip(rows, screens):
        if r["split"] != "dev" or s.tier == r["tier"]:
            continue
        label = r.get("category", f"severity {r.get('severity')}")
        print(f"  {r['id']:16s} {r['tier']:>8s} -> {s.tier:8s} {label:22s} {r['text'][:150]!r}")
        if s.signals:
            print(f"  {'':16s} evidence: {s.evidence()[:200]}")


def checked_tiers(args: argparse.Namespace, texts: list[str], screens: list, set_name: str) -> list[str]:
    """The combined tier after ``--check-model``'s second opinion; a failed check keeps the screen's tier."""
    backend = make_check_backend("openai", args.base_url, args.api_key_env, args.concurrency)
    Path(args.cache).parent.mkdir(parents=True, exist_ok=True)
    checks = run_model_check(texts, screens, backend, args.check_model, Path(args.cache), args.check_all,
                             args.concurrency, overrule=args.check_overrules)
    done = [c for c in checks if c is not None]
    failed = sum(c.model_tier is None for c in done)
    print(f"{set_name}: {len(done)} checked by {args.check_model}, {failed} failed (their screen tier stands), "
          f"{sum(c.overruled for c in done)} flags overruled")
    return [s.tier if c is None else c.tier for s, c in zip(screens, checks)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--errors", action="store_true", help="List the DEV split's wrong tiers with the evidence.")
    ap.add_argument("--learned", action="store_true",
                    help="Also screen with the learned layer on and print its recall tables next to the rules'.")
    ap.add_argument("--json", help="Also write every number to this JSON file.")
    ap.add_argument("--sets", nargs="+", choices=list(SETS), default=list(SETS), help="Which sets (default: all).")
    ap.add_argument("--pooled", action="store_true",
                    help="Score the chosen sets together as one, broken down by set.")
    ap.add_argument("--split", choices=("dev", "heldout", "all"), help="Only this split (default: each).")
    ap.add_argument("--check-model", help="Also run this model's check (crisis_check_v4) on rules + learned layer.")
    ap.add_argument("--base-url", help="OpenAI-compatible server for --check-model (default: OpenAI's).")
    ap.add_argument("--api-key-env", default="OPENAI_API_KEY", help="Env var holding its key ('' for none).")
    ap.add_argument("--check-all", action="store_true", help="Send every message to the model, not only flagged.")
    ap.add_argument("--check-overrules", action="store_true",
                    help="The model's tier may undo the learned layer's raises and the rules' worded ideation "
                         "(never a rule's attempt, self-harm, method or plan).")
    ap.add_argument("--checked-threshold", type=float, default=None,
                    help="Score the reviewed screen with the layer at this checked threshold instead of the shipped "
                         "one (a candidate, e.g. the 0.99-recall threshold -4.283: docs/CRISIS_SCREEN.md).")
    ap.add_argument("--cache", default=str(ROOT / "bench" / "out" / "crisis_check.sqlite"),
                    help="Call cache for --check-model (SQLite; default under bench/out/, which git ignores).")
    ap.add_argument("--concurrency", type=int, default=8, help="Model calls in flight.")
    args = ap.parse_args()
    if args.check_overrules and not args.check_model:
        sys.exit("--check-overrules needs --check-model: it is that model's tier that overrules")
    if args.checked_threshold is not None and not args.check_overrules:
        sys.exit("--checked-threshold needs --check-overrules: only a reviewed screen flags at the checked threshold")
    args.learned = args.learned or bool(args.check_model)
    if args.learned and load_layer() is None:
        sys.exit(f"--learned: no learned layer at {LAYER_PATH} (scripts/train_crisis_layer.py builds it)")
    report: dict = {}
    sets = {}
    for set_name in args.sets:
        if not SETS[set_name].exists():  # a linked set whose text was not rebuilt on this machine
            print(f"{set_name}: skipped, {SETS[set_name]} is not built (scripts/make_linked_posts.py rebuilds it)")
            continue
        lines = SETS[set_name].read_text(encoding="utf-8").splitlines()
        sets[set_name] = [dict(r, tier=crisis_tier(r), labelled_set=set_name) for r in map(json.loads, filter(None, lines))]
    if args.pooled:
        sets = {"pooled": [r for rows in sets.values() for r in rows]}
    for set_name, rows in sets.items():
        if args.split in ("dev", "heldout"):  # only that split is screened (and sent to a model)
            rows = [r for r in rows if r["split"] == args.split]
        rows = [dict(r, forum="everyday" if r["subreddit"] in EVERYDAY_FORUMS else "support") if "subreddit" in r
                else r for r in rows]  # the Reddit draws' forums, grouped
        texts = [r["text"] for r in rows]
        screens = screen_many(texts, learned=False)
        preds = [s.tier for s in screens]
        runs = {"rules": preds}
        if args.learned:  # the layer reads each text once; both thresholds apply to the same scores
            layer = load_layer()
            if args.checked_threshold is not None:  # a candidate checked threshold, scored before it ships
                layer = dataclasses.replace(layer, checked_threshold=args.checked_threshold)
            scores = learned_scores(texts, screens, layer)
            learned = raise_tiers(texts, screens, scores, layer)
            runs["rules + learned"] = [s.tier for s in learned]
        if args.check_overrules:  # the model reviews the screen's flags: layer at its threshold, then its lower one
            over = f"rules + learned + {args.check_model} reviewing"
            runs[over] = checked_tiers(args, texts, learned, set_name)
            reviewed = raise_tiers(texts, screens, scores, layer, checked=True)
            runs["rules + learned at the checked threshold"] = [s.tier for s in reviewed]
            runs[f"{over}, checked threshold"] = checked_tiers(args, texts, reviewed, set_name)
        elif args.check_model:
            runs[f"rules + learned + {args.check_model}"] = checked_tiers(args, texts, learned, set_name)
        out = report[set_name] = {}
        for split in (args.split,) if args.split else ("dev", "heldout", "all"):
            idx = [i for i, r in enumerate(rows) if split == "all" or r["split"] == split]
            if not idx:  # a set that is all held out has no dev split
                continue
            part = [rows[i] for i in idx]
            for name, run in runs.items():
                part_preds = [run[i] for i in idx]
                s = out.setdefault(split if name == "rules" else f"{split}, {name}", {})
                s.update(score([r["tier"] for r in part], part_preds))
                print_score(f"{set_name}, {split}, {name}", s)
            keys = group_keys(set_name)
            for name, run in runs.items():
                s = out.setdefault(split if name == "rules" else f"{split}, {name}", {})
                for key in keys:
                    s[f"by_{key}"] = by_group(part, [run[i] for i in idx], key)
                    print_groups(f"{name}, by {key}", s[f"by_{key}"])
            s, part_preds = out[split], [preds[i] for i in idx]
            breakdowns = ("tier", *keys)
            s["recall_by"] = {name: {key: recall_by(part, [run[i] for i in idx], key) for key in breakdowns}
                              for name, run in runs.items()}
            print_recall(s["recall_by"])
            if set_name == "crisis_messages":
                fresh = [(r, p) for r, p in zip(part, part_preds) if ECHO not in r["note"]]
                s["without_echoes"] = score([r["tier"] for r, _ in fresh], [p for _, p in fresh])
                print(f"  without the {len(part) - len(fresh)} rows that echo reported misses: any-risk recall "
                      f"{_ci(s['without_echoes']['any_risk_recall'])}, high FN rate "
                      f"{_ci(s['without_echoes']['high_fn_rate'])}")
        if args.errors:
            print(f"\n-- {set_name}, dev: wrong tiers")
            print_errors(rows, screens)
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2), encoding="utf-8")


if __name__ == "__main__":
    main()
