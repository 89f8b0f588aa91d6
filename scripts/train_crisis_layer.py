"""Rebuild psychocounsel/data/crisis_layer.npz, the crisis screen's learned layer (psychocounsel/safety/learned.py).

    .venv/bin/python scripts/train_crisis_layer.py --cache /tmp/crisis_states --validate 2 --ship fold --oof oof.npz
    .venv/bin/python scripts/train_crisis_layer.py --cache /tmp/crisis_states             # 5 folds and a final run
    .venv/bin/python scripts/train_crisis_layer.py --rethreshold oof.npz                 # after a rules change

The shipped layer is ``crisis-learned-6``, built by this script at commit 76e6e49 (``--validate 3 --ship fold``)
and given new thresholds for ``crisis-rules-5`` with ``--rethreshold`` (unchanged by rules-6 and -7).
``crisis-learned-7`` (this script at c25fd27, 7,197 rows) was measured on two fresh real sets and not shipped, since
it missed more high-risk posts (docs/CRISIS_SCREEN.md, "Eighth score"); each of its folds took ~37 minutes on 2
cores. As it stands the script builds ``crisis-learned-8`` (the first command) from every labelled set, the six
Reddit draws and the RallyPoint posts included (11,016 rows): untrained, since the long real posts make a fold
take hours on 2 cores (4.2 s a step with other work sharing them); it needs a GPU (this script runs on the CPU
only) or shorter inputs, then a fresh set to be tested on (docs/CRISIS_SCREEN.md, "Twelfth score").

Training rows: every labelled set in psychocounsel/data except the held-out parts in ``HELD_OUT`` (none now: every
set has been scored once, docs/CRISIS_SCREEN.md records each first score, and all are training rows). Tiers are
read through ``safety.labels.crisis_tier``: another adult's risk and danger from someone else are concerns, not
risk.

1. Layer-12 token states of every text, once (with ``--cache``, one file per text: a rerun skips the model's
   first 12 layers, ~8 min).
2. Cross-validation over 5 folds grouped so the two halves of a contrast pair stay together: adapters and
   heads trained on 4 folds score the fifth, for each of the first ``--validate`` folds. The
   out-of-fold scores set both thresholds and are the dev numbers docs/CRISIS_SCREEN.md reports.
3. The final layer, trained on every row, saved; or, with ``--ship fold``, the first fold's layer itself, so the
   thresholds come from rows the shipped layer never saw (a fifth fewer training rows; no final run).

The thresholds depend on the rules too (a risk message the rules catch needs no score). After a rules change,
``--rethreshold OOF.npz`` sets the shipped layer's thresholds again from the out-of-fold scores a training run
wrote with ``--oof``, without training: seconds, not hours.

Training: LoRA (rank 8) on every projection of layers 13-20 over the cached layer-12 states, two heads on the
mean-pooled layer-20 output (any risk, class-balanced; high against possible on risk rows, half the weight),
AdamW, ``EPOCHS`` epochs; the heads start from a logistic fit on the unadapted states. ``--real-weight`` can weigh
the rows of real client language (``REAL``) above the written ones in the loss.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from psychocounsel.safety.labels import crisis_tier
from psychocounsel.safety.learned import (
    ADAPTED,
    ADAPTED_FROM,
    ALPHA,
    HIDDEN_LAYER,
    HIDDEN_SIZE,
    LAYER_PATH,
    RANK,
    HiddenStates,
    LearnedLayer,
    load_layer,
    mean_pool,
    save_layer,
)
from psychocounsel.safety.screen import screen_rules

DATA = ROOT / "psychocounsel" / "data"
VERSION = "crisis-learned-8"
SEED = 0
# Chosen on one validation fold (lr 5e-4 and 1e-3; 3 and 5 epochs; adapters from layer 16 or 12):
# docs/CRISIS_SCREEN.md, "Sixth score".
EPOCHS, LR, HEAD_LR, BATCH = 5, 1e-3, 2e-4, 16
HIGH_WEIGHT = 0.5  # the high head's loss beside the risk head's
# The screen's goal is any-risk recall >= 0.95 at precision >= 0.90 on real client messages. The threshold is
# the highest at which rules + layer reach TARGET_RECALL on the out-of-fold scores of every counseling-register
# row (``--threshold-on counseling``, the default: every set but the r/SuicideWatch posts, whose `none` rows are
# posts from a suicide forum), or of the rows of real client language only (``real``: counsel-chat questions and
# the Reddit posts' dev half). Over 3 folds the real rows' threshold fell far lower, to catch a few real risk
# posts that score low, and flagged 37% of ordinary Reddit posts (docs/CRISIS_SCREEN.md, "Seventh score").
TARGET_RECALL = 0.95
# Where a capable model reviews every flag the layer raises and may clear it (``screen --check-overrules``),
# the layer flags at a lower threshold, chosen the same way for this recall; the model removes its false alarms.
CHECKED_RECALL = 0.99
# The high tier: the highest threshold at which no more than this share of `possible` rows is raised to high.
HIGH_WRONG = 0.10
FOLDS = 5
HELD_OUT: dict[str, str] = {}  # every labelled set has been scored; a new fresh set tests the next layer
SETS = ("crisis_messages.jsonl", "cssrs_posts.jsonl", "crisis_labelled.jsonl", "crisis_independent.jsonl",
        "crisis_inbox.jsonl", "crisis_hard.jsonl", "crisis_pairs.jsonl", "crisis_boundaries.jsonl",
        "crisis_counselchat.jsonl", "crisis_fresh.jsonl", "crisis_reddit.jsonl", "crisis_reddit_2.jsonl",
        "crisis_reddit_3.jsonl", "crisis_reddit_4.jsonl", "crisis_reddit_5.jsonl", "crisis_reddit_6.jsonl",
        "crisis_rallypoint.jsonl")
# Real client language with ordinary messages among it: questions to counselors and posts to support and everyday
# forums (the r/SuicideWatch posts are real too, but nearly all at risk).
REAL = ("crisis_counselchat.jsonl", "crisis_reddit.jsonl", "crisis_reddit_2.jsonl", "crisis_reddit_3.jsonl",
        "crisis_reddit_4.jsonl", "crisis_reddit_5.jsonl", "crisis_reddit_6.jsonl", "crisis_rallypoint.jsonl")
# The demo speeches of topic "crisis", read and labelled by the guide (docs/CRISIS_LABELS.md); demo-173
# (strangled by her husband) is a concern, not risk.
DEMO_RISK = {"demo-167": "possible", "demo-168": "possible", "demo-169": "possible", "demo-170": "high",
             "demo-171": "high", "demo-172": "possible", "demo-173": "none", "demo-174": "possible"}


def _jsonl(name: str) -> list[dict]:
    return [json.loads(line) for line in (DATA / name).read_text(encoding="utf-8").splitlines() if line.strip()]


def rows() -> list[dict]:
    out = []
    for name in SETS:
        for r in _jsonl(name):
            if "tier" not in r or (name in HELD_OUT and r.get("split") == HELD_OUT[name]):
                continue
            out.append({"id": r["id"], "text": r["text"], "tier": crisis_tier(r), "source": name,
                        "group": group_of(name, r)})
    for r in _jsonl("demo_speeches.jsonl"):
        if r["topic"] == "crisis" and r["id"] not in DEMO_RISK:
            raise SystemExit(f"demo speech {r['id']} is about a crisis and has no label in DEMO_RISK")
        out.append({"id": r["id"], "text": r["text"], "tier": DEMO_RISK.get(r["id"], "none"),
                    "source": "demo_speeches.jsonl", "group": r["id"]})
    return out


def group_of(source: str, r: dict) -> str:
    """The fold group of a row of ``source`` (a set's file name): the two halves of a contrast pair share one."""
    if source == "crisis_boundaries.jsonl" and r.get("pair"):
        return min(r["id"], r["pair"])
    return r.get("pair") or r["id"]


def fold_of(r: dict, folds: int = FOLDS) -> int:
    return int(hashlib.sha256(r["group"].encode()).hexdigest()[:8], 16) % folds


# ------------------------------------------------------------------------------------- cached states


def layer_inputs(texts: list[str], cache: Path | None) -> list[torch.Tensor]:
    """Each text's token states at the adapted layers' input (the output of layer ``ADAPTED_FROM``)."""
    key_of = {t: hashlib.sha256(t.encode()).hexdigest() for t in texts}
    keys = [key_of[t] for t in texts]
    have: dict[str, np.ndarray] = {}
    if cache is not None:
        cache.mkdir(parents=True, exist_ok=True)
        have = {k: np.load(cache / f"{k}.npy") for k in set(keys) if (cache / f"{k}.npy").exists()}
    todo = sorted((t for t, k in key_of.items() if k not in have), key=len)
    if todo:
        reader = HiddenStates(layer=ADAPTED_FROM)
        t0 = time.perf_counter()
        for i in range(0, len(todo), reader.batch_size):
            batch = todo[i:i + reader.batch_size]
            h, mask = reader.tokens(batch)
            for j, t in enumerate(batch):
                k = key_of[t]
                have[k] = h[j, :int(mask[j].sum())].numpy().astype(np.float16)
                if cache is not None:
                    np.save(cache / f"{k}.npy", have[k])
            done = i + len(batch)
            if done % 320 < reader.batch_size or done == len(todo):
                el = time.perf_counter() - t0
                print(f"  states {done}/{len(todo)}  {el:.0f} s, ETA {el / done * (len(todo) - done):.0f} s",
                      flush=True)
    return [torch.from_numpy(have[k].astype(np.float32)) for k in keys]


# --------------------------------------------------------------------------------------- the model


class LoRA(nn.Module):
    """A frozen linear layer plus a trainable low-rank update (B starts at zero: training starts at the base)."""

    def __init__(self, base: nn.Linear):
        super().__init__()
        self.base = base
        self.A = nn.Parameter(torch.randn(RANK, base.in_features) * 0.01)
        self.B = nn.Parameter(torch.zeros(base.out_features, RANK))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.base(x) + (x @ self.A.T @ self.B.T) * (ALPHA / RANK)


class Adapted(nn.Module):
    """Layers ``ADAPTED_FROM``..``HIDDEN_LAYER`` of the embedded model with LoRA, and the two heads."""

    def __init__(self):
        super().__init__()
        body = HiddenStates(layer=HIDDEN_LAYER).body
        for p in body.parameters():
            p.requires_grad_(False)
        self.layers = body.layers[ADAPTED_FROM:HIDDEN_LAYER]
        self.rotary = body.rotary_emb
        for layer in self.layers:
            for name in ADAPTED:
                parent, attr = name.split(".")
                module = getattr(layer, parent)
                setattr(module, attr, LoRA(getattr(module, attr)))
        self.heads = nn.Linear(HIDDEN_SIZE, 2)  # [any risk, high vs possible]

    def pooled(self, xs: list[torch.Tensor]) -> torch.Tensor:
        n = max(len(x) for x in xs)
        h = torch.zeros(len(xs), n, HIDDEN_SIZE)
        mask = torch.zeros(len(xs), n, dtype=torch.bool)
        for j, x in enumerate(xs):
            h[j, :len(x)], mask[j, :len(x)] = x, True
        positions = torch.arange(n).unsqueeze(0).expand(len(xs), n)
        rope = self.rotary(h, positions)
        attend = (torch.tril(torch.ones(n, n, dtype=torch.bool)).unsqueeze(0) & mask.unsqueeze(1)).unsqueeze(1)
        for layer in self.layers:
            h = layer(h, attention_mask=attend, position_ids=positions, position_embeddings=rope)
        return mean_pool(h, mask)

    def forward(self, xs: list[torch.Tensor]) -> torch.Tensor:
        return self.heads(self.pooled(xs))

    def adapters(self) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        return {f"layers.{ADAPTED_FROM + i}.{name}": (m.A.detach().numpy().copy(), m.B.detach().numpy().copy())
                for i, layer in enumerate(self.layers) for name in ADAPTED
                for m in [layer.get_submodule(name)]}


def batches(which: np.ndarray, lengths: np.ndarray, size: int) -> list[np.ndarray]:
    idx = np.flatnonzero(which)
    idx = idx[np.argsort(lengths[idx], kind="stable")]  # similar lengths together: less padding
    return [idx[i:i + size] for i in range(0, len(idx), size)]


def predict(model: Adapted, xs: list[torch.Tensor], which: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    out = np.zeros((len(xs), 2))
    with torch.no_grad():
        for b in batches(which, lengths, 32):
            out[b] = model([xs[i] for i in b]).numpy()
    return out


def init_heads(model: Adapted, xs: list[torch.Tensor], train: np.ndarray, lengths: np.ndarray,
               y: np.ndarray, yh: np.ndarray) -> None:
    """Start the heads at a class-balanced logistic fit on the unadapted states (the adapters start at zero)."""
    pooled = torch.zeros(len(xs), HIDDEN_SIZE)
    with torch.no_grad():
        for b in batches(train, lengths, 32):
            pooled[b] = model.pooled([xs[i] for i in b])
    mean, scale = pooled[train].mean(0), pooled[train].std(0) + 1e-6
    for k, (target, rows_) in enumerate(((y, train), (yh, train & (y == 1)))):
        z, t = (pooled[rows_] - mean) / scale, torch.tensor(target[rows_], dtype=torch.float32)
        w, b = torch.zeros(HIDDEN_SIZE, requires_grad=True), torch.zeros(1, requires_grad=True)
        opt = torch.optim.Adam([w, b], lr=0.05)
        weight = torch.where(t == 1, 0.5 / t.mean(), 0.5 / (1 - t.mean()))
        for _ in range(300):
            loss = (nn.functional.binary_cross_entropy_with_logits(z @ w + b, t, weight=weight)
                    + 1e-2 * (w ** 2).sum() / 2)
            opt.zero_grad()
            loss.backward()
            opt.step()
        with torch.no_grad():  # fold the standardisation into the head
            model.heads.weight[k] = w / scale
            model.heads.bias[k] = b - (w * mean / scale).sum()


def train(xs: list[torch.Tensor], train_rows: np.ndarray, y: np.ndarray, yh: np.ndarray, lengths: np.ndarray,
          row_weight: np.ndarray, label: str) -> Adapted:
    torch.manual_seed(SEED)
    model = Adapted()
    init_heads(model, xs, train_rows, lengths, y, yh)
    lora = [p for p in model.layers.parameters() if p.requires_grad]
    opt = torch.optim.AdamW([{"params": lora, "lr": LR}, {"params": model.heads.parameters(), "lr": HEAD_LR}],
                            weight_decay=0.0)
    pos = y[train_rows].mean()
    w_pos, w_neg = 0.5 / pos, 0.5 / (1 - pos)
    rng = np.random.default_rng(SEED)
    t0, steps = time.perf_counter(), 0
    plan = batches(train_rows, lengths, BATCH)
    total = EPOCHS * len(plan)
    for epoch in range(EPOCHS):
        for b in (plan[i] for i in rng.permutation(len(plan))):
            out = model([xs[i] for i in b])
            t, th = torch.tensor(y[b], dtype=torch.float32), torch.tensor(yh[b], dtype=torch.float32)
            weight = (torch.where(t == 1, w_pos, w_neg) * torch.tensor(row_weight[b])).float()
            loss = nn.functional.binary_cross_entropy_with_logits(out[:, 0], t, weight=weight)
            if (t == 1).any():
                loss = loss + HIGH_WEIGHT * nn.functional.binary_cross_entropy_with_logits(out[t == 1, 1], th[t == 1])
            opt.zero_grad()
            loss.backward()
            opt.step()
            steps += 1
            if steps % 100 == 0 or steps == total:
                el = time.perf_counter() - t0
                print(f"  {label}: epoch {epoch + 1}/{EPOCHS}, step {steps}/{total}, {el:.0f} s, "
                      f"ETA {el / steps * (total - steps):.0f} s", flush=True)
    return model


# ------------------------------------------------------------------------------------ thresholds


def threshold_for(score: np.ndarray, rule: np.ndarray, y: np.ndarray, rows_: np.ndarray, target: float) -> float:
    """The highest threshold at which rules + layer reach ``target`` recall on ``rows_``."""
    risk = rows_ & (y == 1)
    for t in np.sort(score[risk & ~rule])[::-1]:
        if (rule | (score >= t))[risk].mean() >= target:
            return float(t)
    return -np.inf


def report(name: str, flag: np.ndarray, y: np.ndarray, source: np.ndarray) -> None:
    print(f"{name}: recall {flag[y == 1].mean():.3f}  precision {y[flag].mean():.3f}")
    real = np.isin(source, REAL)
    print(f"    real client language: recall {flag[real & (y == 1)].mean():.3f}  precision {y[real & flag].mean():.3f}")
    for s in sorted(set(source)):
        m = source == s
        risk, none = m & (y == 1), m & (y == 0)
        recall = f"{flag[risk].mean():.2f}" if risk.any() else "  - "
        print(f"    {s:26s} n {m.sum():4d}  recall {recall}  false alarms {flag[none].mean():.2f} of {int(none.sum())}")


def thresholds(risk_score: np.ndarray, high_score: np.ndarray, y: np.ndarray, yh: np.ndarray, source: np.ndarray,
               rule: np.ndarray, rule_high: np.ndarray, on: str) -> tuple[float, float, float]:
    """(any-risk threshold, high threshold, checked threshold) from out-of-fold scores, with what they do
    printed."""
    rows_ = np.isin(source, REAL) if on == "real" else source != "cssrs_posts.jsonl"
    t_checked = threshold_for(risk_score, rule, y, rows_, CHECKED_RECALL)
    report(f"rules + layer at the checked threshold ({t_checked:.3f}, {CHECKED_RECALL} recall on the {on} rows; "
           "what a reviewing model reads)", rule | (risk_score >= t_checked), y, source)
    t = threshold_for(risk_score, rule, y, rows_, TARGET_RECALL)
    flag = rule | (risk_score >= t)
    report(f"rules + layer (threshold {t:.3f}, {TARGET_RECALL} recall on the {on} rows)", flag, y, source)
    possible = (y == 1) & (yh == 0)
    t_high = float(np.quantile(high_score[possible], 1 - HIGH_WRONG))
    raised = rule_high | (flag & (high_score >= t_high))
    high = yh == 1
    print(f"high tier (threshold {t_high:.3f}): high screened high {raised[high].mean():.2f} (rules "
          f"{rule_high[high].mean():.2f}), none {(~flag[high]).sum()} of {high.sum()}; possible raised to high "
          f"{raised[possible].mean():.2f}; none raised to high {raised[y == 0].mean():.3f}")
    return t, t_high, t_checked


def targets(data: list[dict]) -> tuple[np.ndarray, ...]:
    """(any risk, high, source, rules flag any risk, rules flag high) per row; the tiers as 0/1 floats."""
    y = np.array([r["tier"] != "none" for r in data], dtype=np.float64)
    yh = np.array([r["tier"] == "high" for r in data], dtype=np.float64)
    source = np.array([r["source"] for r in data])
    tiers = [screen_rules(r["text"]).tier for r in data]
    return y, yh, source, np.array([t != "none" for t in tiers]), np.array([t == "high" for t in tiers])


def oof_rows(oof_path: Path) -> tuple[Any, list[dict]]:
    """Out-of-fold scores a run saved with ``--oof``, and their training rows in the file's order."""
    if not oof_path.exists():
        raise SystemExit(f"{oof_path}: no such file (a training run writes it with --oof)")
    z = np.load(oof_path)
    by_id = {r["id"]: r for r in rows()}
    missing = [str(i) for i in z["id"] if str(i) not in by_id]
    if missing:
        raise SystemExit(f"{oof_path}: {len(missing)} ids are not training rows now, e.g. {missing[0]}")
    return z, [by_id[str(i)] for i in z["id"]]


def rethreshold(oof_path: Path, on: str) -> None:
    """Set the shipped layer's thresholds again from saved out-of-fold scores, with the rules as they are now."""
    layer = load_layer()
    if layer is None:
        raise SystemExit(f"--rethreshold: no learned layer at {LAYER_PATH}")
    z, data = oof_rows(oof_path)
    y, yh, source, rule, rule_high = targets(data)
    report(f"rules alone ({len(data)} out-of-fold rows)", rule, y, source)
    t, t_high, t_checked = thresholds(z["risk"], z["high"], y, yh, source, rule, rule_high, on)
    save_layer(dataclasses.replace(layer, threshold=t, high_threshold=t_high, checked_threshold=t_checked))
    print(f"{layer.version}: thresholds {layer.threshold:.3f} -> {t:.3f}, high {layer.high_threshold:.3f} -> "
          f"{t_high:.3f}, checked {layer.checked_threshold:.3f} -> {t_checked:.3f}; wrote {LAYER_PATH}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cache", type=Path, help="folder for the layer-12 states (reruns skip the model's first layers)")
    ap.add_argument("--validate", type=int, default=FOLDS, choices=range(1, FOLDS + 1),
                    help=f"how many of the {FOLDS} folds to hold out in turn for the thresholds (default: all)")
    ap.add_argument("--oof", type=Path, help="also write the out-of-fold scores (ids, sources, tiers, rules' tiers) "
                                             "to this .npz, to study other thresholds without retraining")
    ap.add_argument("--ship", choices=("all", "fold"), default="all",
                    help="all: retrain on every row and ship that (default); fold: ship the first fold's layer, "
                         "whose thresholds come from rows it never saw")
    ap.add_argument("--real-weight", type=float, default=1.0,
                    help="loss weight of the rows of real client language against 1 for the others (default 1)")
    ap.add_argument("--threshold-on", choices=("counseling", "real"), default="counseling",
                    help="the rows whose out-of-fold recall sets the threshold: every counseling-register row "
                         "(default) or only those of real client language")
    ap.add_argument("--rethreshold", type=Path, metavar="OOF",
                    help="train nothing: set the shipped layer's thresholds again from these out-of-fold scores "
                         "(written by --oof) with the current rules")
    args = ap.parse_args()
    if args.rethreshold:
        rethreshold(args.rethreshold, args.threshold_on)
        return
    data = rows()
    texts = [r["text"] for r in data]
    y, yh, source, rule, rule_high = targets(data)
    print(f"{len(data)} training rows, {int(y.sum())} at risk ({int(yh.sum())} high)", flush=True)
    xs = layer_inputs(texts, args.cache)
    lengths = np.array([len(x) for x in xs])
    row_weight = np.where(np.isin(source, REAL), args.real_weight, 1.0)

    fold = np.array([fold_of(r, FOLDS) for r in data])
    oof = np.zeros((len(data), 2))
    first: Adapted | None = None
    for k in range(args.validate):
        model = train(xs, fold != k, y, yh, lengths, row_weight, f"fold {k + 1} of {args.validate}")
        oof[fold == k] = predict(model, xs, fold == k, lengths)[fold == k]
        if first is None:
            first = model
    seen = fold < args.validate  # the rows scored out of fold
    oof, y_, yh_, source_, rule_, rule_high_ = oof[seen], y[seen], yh[seen], source[seen], rule[seen], rule_high[seen]
    risk_score, high_score = oof[:, 0], oof[:, 1]
    if args.oof:
        np.savez(args.oof, id=np.array([r["id"] for r in data])[seen], source=source_, risk=risk_score,
                 high=high_score, tier=np.array([r["tier"] for r in data])[seen],
                 rules=np.where(rule_high_, "high", np.where(rule_, "possible", "none")))
    report(f"rules alone ({args.validate} of {FOLDS} folds held out in turn, {int(seen.sum())} rows)",
           rule_, y_, source_)
    t, t_high, t_checked = thresholds(risk_score, high_score, y_, yh_, source_, rule_, rule_high_,
                                      args.threshold_on)
    if args.ship == "fold":
        model = first
    else:
        model = train(xs, np.ones(len(data), dtype=bool), y, yh, lengths, row_weight, "final")
    w = model.heads.weight.detach().numpy().astype(np.float64)
    b = model.heads.bias.detach().numpy().astype(np.float64)
    save_layer(LearnedLayer(adapters=model.adapters(), risk_w=w[0], risk_b=float(b[0]), high_w=w[1],
                            high_b=float(b[1]), threshold=t, high_threshold=t_high,
                            checked_threshold=t_checked, version=VERSION))
    print(f"wrote {LAYER_PATH} ({LAYER_PATH.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
