"""Rebuild psychocounsel/data/crisis_probe.npz, the crisis screen's learned layer, from DEV rows only.

    .venv/bin/python scripts/train_crisis_probe.py                 # ~5 min on 2 cores (hidden states of ~2,300 texts)
    .venv/bin/python scripts/train_crisis_probe.py states.npz      # keep the hidden states for the next run

Training rows (never a held-out row):
- the dev splits of crisis_messages.jsonl, cssrs_posts.jsonl and crisis_independent.jsonl;
- every row of crisis_labelled.jsonl except its held-out ones, every row of crisis_pairs.jsonl (minimal
  pairs: one story written with and without a risk clause; a pair stays in one fold) and of crisis_hard.jsonl
  (the cases the layer got wrong on the dev folds, written anew: fear of dying, denials, other people's
  history, long hard lives; plans, preparation and self-harm worded without the usual words);
- the demo speeches (demo_speeches.jsonl): ordinary counseling speeches, `none` except the eight of topic
  `crisis`, labelled by hand below (DEMO_RISK).
The label is any risk (tier possible or high); a second pair of probes, fitted on risk rows only, tells high
from possible. Five folds, grouped so a minimal pair never straddles two.
The out-of-fold logits of both probes give each its spread, the mix and the threshold: the lowest score
at which cross-validated any-risk recall of rules + layer reaches TARGET_RECALL on the counseling-register
rows (every set but the r/SuicideWatch posts, whose `none` rows are posts from a suicide forum). The
cross-validated figures it prints are the dev numbers docs/CRISIS_SCREEN.md reports.
"""

from __future__ import annotations

import hashlib
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from psychocounsel.safety.learned import PROBE_PATH, LearnedLayer, SparseRows, fit, hidden_states, save_layer
from psychocounsel.safety.screen import screen

DATA = ROOT / "psychocounsel" / "data"
# The screen's goal is any-risk recall >= 0.95 at precision >= 0.90 (docs/CRISIS_SCREEN.md); no threshold reaches
# both on the dev folds. At 0.95 a third of the counseling-register `none` messages were flagged (28% of the
# ordinary demo speeches); at 0.90 one in five (16%). A screen that flags a third of ordinary messages stops
# being read, so the shipped threshold aims at 0.90 and the misses are reported per register.
TARGET_RECALL = 0.90
FOLDS = 5
VERSION = "crisis-learned-4"
L2_NGRAM, L2_HIDDEN = 1e-4, 1e-2  # swept on the dev folds (1e-5..1e-3; 1e-3..1e-1)
# The high tier: the highest threshold (of the possible-vs-high probes' stacked out-of-fold score) at which no
# more than this share of dev `possible` risk rows is raised to high (10%: 8% at the chosen point, against
# high-tier recall 0.53 -> 0.75 on dev).
HIGH_WRONG = 0.10
MIXES = (0.2, 0.35, 0.5)  # n-gram weight in the stack; 0.2-0.5 were within a point of each other on dev
# The demo speeches of topic "crisis", read and labelled by the guide (docs/CRISIS_LABELS.md).
DEMO_RISK = {"demo-167": "possible", "demo-168": "possible", "demo-169": "possible", "demo-170": "high",
             "demo-171": "high", "demo-172": "possible", "demo-173": "possible", "demo-174": "possible"}


def _jsonl(name: str) -> list[dict]:
    return [json.loads(line) for line in (DATA / name).read_text(encoding="utf-8").splitlines() if line.strip()]


def rows() -> list[dict]:
    out = []
    for name in ("crisis_messages.jsonl", "cssrs_posts.jsonl", "crisis_labelled.jsonl", "crisis_independent.jsonl"):
        out += [dict(r, source=name) for r in _jsonl(name) if r.get("split", "dev") == "dev" and "tier" in r]
    out += [dict(r, source="crisis_pairs.jsonl", group=r["pair"]) for r in _jsonl("crisis_pairs.jsonl")]
    out += [dict(r, source="crisis_hard.jsonl") for r in _jsonl("crisis_hard.jsonl")]
    for r in _jsonl("demo_speeches.jsonl"):
        if r["topic"] == "crisis" and r["id"] not in DEMO_RISK:
            raise SystemExit(f"demo speech {r['id']} is about a crisis and has no label in DEMO_RISK")
        out.append({"id": r["id"], "text": r["text"], "tier": DEMO_RISK.get(r["id"], "none"),
                    "source": "demo_speeches.jsonl"})
    return out


def fold_of(r: dict) -> int:
    return int(hashlib.sha256(r.get("group", r["id"]).encode()).hexdigest()[:8], 16) % FOLDS


def cached_states(texts: list[str], cache: Path | None) -> np.ndarray:
    """Hidden states of ``texts``; with a cache file (the script's optional argument), only new texts run the
    model: retuning the stack then takes seconds instead of minutes."""
    keys = [hashlib.sha256(t.encode()).hexdigest() for t in texts]
    have: dict[str, np.ndarray] = {}
    if cache is not None and cache.exists():
        z = np.load(cache)
        have = dict(zip(z["keys"].tolist(), z["states"]))
    todo = [i for i, k in enumerate(keys) if k not in have]
    if todo:
        for i, row in zip(todo, hidden_states()([texts[i] for i in todo])):
            have[keys[i]] = row
        if cache is not None:
            np.savez(cache, keys=np.array(list(have)), states=np.stack(list(have.values())))
    return np.stack([have[k] for k in keys]).astype(np.float64)


def standardised(a: np.ndarray, train: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    mean, scale = a[train].mean(0), a[train].std(0) + 1e-6
    return (a - mean) / scale, mean, scale


def threshold_for(score: np.ndarray, rule: np.ndarray, y: np.ndarray, rows_: np.ndarray, target: float) -> float:
    """The highest threshold at which rules + layer reach ``target`` recall on ``rows_``."""
    risk = rows_ & (y == 1)
    for t in np.sort(score[risk & ~rule])[::-1]:
        if (rule | (score >= t))[risk].mean() >= target:
            return float(t)
    return -np.inf


def report(name: str, flag: np.ndarray, y: np.ndarray, source: np.ndarray) -> None:
    print(f"{name}: recall {flag[y == 1].mean():.3f}  precision {y[flag].mean():.3f}")
    for s in sorted(set(source)):
        m = source == s
        print(f"    {s:26s} n {m.sum():4d}  recall {flag[m & (y == 1)].mean():.2f}  "
              f"false alarms {flag[m & (y == 0)].mean():.2f} of {int((m & (y == 0)).sum())}")


def main() -> None:
    data = rows()
    texts = [r["text"] for r in data]
    y = np.array([r["tier"] != "none" for r in data], dtype=np.float64)
    source = np.array([r["source"] for r in data])
    fold = np.array([fold_of(r) for r in data])
    rule = np.array([screen(t, learned=False).tier != "none" for t in texts])
    counseling = source != "cssrs_posts.jsonl"
    print(f"{len(data)} dev rows, {int(y.sum())} at risk; hidden states ...", flush=True)
    t0 = time.perf_counter()
    states = cached_states(texts, Path(sys.argv[1]) if len(sys.argv) > 1 else None)
    print(f"  {time.perf_counter() - t0:.0f} s", flush=True)
    sparse = SparseRows.of(texts)

    oof_n, oof_h = np.zeros(len(data)), np.zeros(len(data))
    for k in range(FOLDS):
        train, test = fold != k, fold == k
        w, b = fit(sparse.take(train), y[train], L2_NGRAM)
        oof_n[test] = sparse.dot(w)[test] + b
        z, _, _ = standardised(states, train)
        w, b = fit(z[train], y[train], L2_HIDDEN)
        oof_h[test] = z[test] @ w + b
    spread_n, spread_h = float(oof_n.std()), float(oof_h.std())
    report("rules alone", rule, y, source)
    best = None
    for mix in MIXES:
        score = mix * oof_n / spread_n + (1 - mix) * oof_h / spread_h
        t = threshold_for(score, rule, y, counseling, TARGET_RECALL)
        flag = rule | (score >= t)
        fa = flag[counseling & (y == 0)].mean()
        print(f"mix {mix}: threshold {t:.3f}, counseling-register false alarms {fa:.3f}")
        if best is None or fa < best[0]:
            best = (fa, mix, t)
    _, mix, t = best
    score = mix * oof_n / spread_n + (1 - mix) * oof_h / spread_h
    report(f"rules + layer (5-fold CV, mix {mix}, threshold {t:.3f})", rule | (score >= t), y, source)

    # The high tier: possible vs high, fitted on risk rows only, the same mix.
    yh = np.array([r["tier"] == "high" for r in data], dtype=np.float64)
    risk = y == 1
    oof_hn, oof_hh = np.zeros(len(data)), np.zeros(len(data))
    for k in range(FOLDS):
        train, test = (fold != k) & risk, fold == k
        w, b = fit(sparse.take(train), yh[train], L2_NGRAM)
        oof_hn[test] = sparse.dot(w)[test] + b
        z, _, _ = standardised(states, fold != k)
        w, b = fit(z[train], yh[train], L2_HIDDEN)
        oof_hh[test] = z[test] @ w + b
    spread_hn, spread_hh = float(oof_hn[risk].std()), float(oof_hh[risk].std())
    high_score = mix * oof_hn / spread_hn + (1 - mix) * oof_hh / spread_hh
    possible = risk & (yh == 0)
    t_high = float(np.quantile(high_score[possible], 1 - HIGH_WRONG))
    rule_high = np.array([screen(x, learned=False).tier == "high" for x in texts])
    flagged = rule | (score >= t)
    raised = rule_high | (flagged & (high_score >= t_high))
    print(f"high tier (5-fold CV, threshold {t_high:.3f}): high recall {raised[yh == 1].mean():.2f} "
          f"(rules {rule_high[yh == 1].mean():.2f}); possible raised to high {raised[possible].mean():.2f}; "
          f"none raised to high {raised[y == 0].mean():.2f}")
    for src_name in sorted(set(source)):
        m = source == src_name
        print(f"    {src_name:26s} high recall {raised[m & (yh == 1)].mean():.2f} (rules "
              f"{rule_high[m & (yh == 1)].mean():.2f})  possible raised {raised[m & possible].mean():.2f}")

    all_rows = np.ones(len(data), dtype=bool)
    wn, bn = fit(sparse, y, L2_NGRAM)
    z, mean, scale = standardised(states, all_rows)
    wh, bh = fit(z, y, L2_HIDDEN)
    whn, bhn = fit(sparse.take(risk), yh[risk], L2_NGRAM)
    whh, bhh = fit(z[risk], yh[risk], L2_HIDDEN)
    layer = LearnedLayer(ngram_w=wn.astype(np.float32), ngram_b=bn, hidden_mean=mean.astype(np.float32),
                         hidden_scale=scale.astype(np.float32), hidden_w=wh.astype(np.float32), hidden_b=bh,
                         ngram_spread=spread_n, hidden_spread=spread_h, mix=mix, threshold=t,
                         high_ngram_w=whn.astype(np.float32), high_ngram_b=bhn, high_hidden_w=whh.astype(np.float32),
                         high_hidden_b=bhh, high_ngram_spread=spread_hn, high_hidden_spread=spread_hh,
                         high_threshold=t_high, version=VERSION)
    save_layer(layer)
    print(f"wrote {PROBE_PATH} ({PROBE_PATH.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
