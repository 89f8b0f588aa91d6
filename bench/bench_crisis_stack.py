"""A second stage for the screen alone: a logistic regression over the text's word 1-2-grams (tf-idf) and the
learned layer's two scores, deciding where the layer raises `none` to `possible`. Does it flag fewer ordinary
posts at the same recall? On forum posts it did; on messages written in other registers it screened more
high-risk messages `none`, so it is not shipped (docs/CRISIS_SCREEN.md, "Nineteenth score").

    .venv/bin/python bench/bench_crisis_stack.py --scores /tmp/stack_scores.jsonl     # ~25 min the first time

Every row is scored by the shipped layer only where that layer never saw it:
- fitted on the real Reddit, RallyPoint and linked posts `crisis-learned-6` was not trained on (of the first
  Reddit draw, its held-out half and the dev rows of `-6`'s validation fold), except the ``--test`` sets;
- tested on the ``--test`` sets (default: those of the nineteenth and twentieth scores) and, per register, on
  the rows of `-6`'s own training sets that its validation fold held out (``train_crisis_layer.fold_of`` 0).
The threshold is the one at which rules + stage reach the out-of-fold recall of rules + `-6` at its shipped
threshold on the fitting rows (5 folds). The linked sets need their text rebuilt (scripts/make_linked_posts.py).
"""

from __future__ import annotations

import argparse
import collections
import hashlib
import json
import math
import re
import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT / "scripts"))

from bench_crisis_sets import SETS
from train_crisis_layer import fold_of, group_of

from psychocounsel.safety.labels import crisis_tier
from psychocounsel.safety.learned import load_layer
from psychocounsel.safety.screen import learned_scores, screen_rules

# The sets `crisis-learned-6` was trained on (scripts/train_crisis_layer.py at 76e6e49), the first Reddit draw's
# dev half only; the validation fold (fold_of 0) of each was held out of that training.
SIX_TRAINED = {"crisis_messages", "cssrs_posts", "crisis_labelled", "crisis_independent", "crisis_inbox", "crisis_hard",
               "crisis_pairs", "crisis_boundaries", "crisis_counselchat", "crisis_fresh", "crisis_reddit"}
REGISTERS = {"cssrs_posts": "r/SuicideWatch with C-SSRS labels", "crisis_counselchat": "counsel-chat questions"}
TEST = ["crisis_reddit_12", "crisis_rallypoint_7", "crisis_sdcnl_7", "crisis_reddit_13", "crisis_rallypoint_8",
        "crisis_sdcnl_8"]
WORD = re.compile(r"[a-z0-9']+")
L2, FOLDS = 1e-5, 5  # L2 chosen by the same out-of-fold comparison among 1e-3 to 1e-7


def grams(text: str) -> list[str]:
    w = WORD.findall(text.lower())
    return w + [a + " " + b for a, b in zip(w, w[1:])]


def rows() -> list[dict]:
    """Every labelled row the shipped layer never saw, with the group it is reported in."""
    paths = {**SETS, **{n: ROOT / "psychocounsel" / "data" / f"{n}.jsonl" for n in SIX_TRAINED}}
    out = []
    for name, path in sorted(paths.items()):
        if not path.exists():
            print(f"{name}: skipped, {path} is not built (scripts/make_linked_posts.py rebuilds it)")
            continue
        for line in path.read_text(encoding="utf-8").splitlines():
            r = json.loads(line)
            if "tier" not in r:
                continue
            if name in SIX_TRAINED and fold_of({"group": group_of(f"{name}.jsonl", r)}) != 0 and not (
                    name == "crisis_reddit" and r["split"] == "heldout"):
                continue  # the shipped layer trained on it
            real = name.startswith(("crisis_reddit", "crisis_rallypoint", "crisis_sdcnl", "crisis_suicide"))
            out.append({"set": name, "text": r["text"], "gold": crisis_tier(r),
                        "group": "fit" if real else REGISTERS.get(name, "written sets")})
    return out


def layer_scores(texts: list[str], cache: Path) -> tuple[list[str], list[tuple[float, float] | None]]:
    """Rules tiers, and the layer's scores of the texts the rules do not screen high (cached by text)."""
    known = {}
    if cache.exists():
        known = {r["key"]: r["score"] for r in map(json.loads, cache.read_text(encoding="utf-8").splitlines())}
    rule = [screen_rules(t) for t in texts]
    keys = [hashlib.sha256(t.encode()).hexdigest() for t in texts]
    todo = [i for i, k in enumerate(keys) if k not in known]
    if todo:
        layer = load_layer()
        with cache.open("a", encoding="utf-8") as f:
            for n in range(0, len(todo), 64):
                batch = todo[n:n + 64]
                for i, s in zip(batch, learned_scores([texts[i] for i in batch], [rule[i] for i in batch], layer)):
                    known[keys[i]] = s
                    f.write(json.dumps({"key": keys[i], "score": s}) + "\n")
                print(f"layer scores: {min(n + 64, len(todo))} of {len(todo)}", flush=True)
    return [s.tier for s in rule], [known[k] for k in keys]


class Stage:
    """tf-idf word 1-2-grams (vocabulary: n-grams in 3+ fitting texts) and the layer's two scores, one logistic
    regression, class-balanced, L2 on the word weights."""

    def __init__(self, texts: list[str], scores: np.ndarray, y: np.ndarray):
        df = collections.Counter(g for t in texts for g in set(grams(t)))
        self.vocab = {g: i for i, g in enumerate(sorted(g for g, c in df.items() if c >= 3))}
        self.idf = np.array([math.log((1 + len(texts)) / (1 + df[g])) + 1 for g in self.vocab], np.float32)
        x, d, yt = self._x(texts), torch.tensor(scores / 5, dtype=torch.float32), torch.tensor(y, dtype=torch.float32)
        w, a, b = (torch.zeros(n, requires_grad=True) for n in (len(self.vocab), 2, 1))
        weight = torch.where(yt > 0, 0.5 / yt.mean(), 0.5 / (1 - yt.mean()))
        opt = torch.optim.LBFGS([w, a, b], max_iter=200, line_search_fn="strong_wolfe")

        def loss() -> torch.Tensor:
            opt.zero_grad()
            z = torch.sparse.mm(x, w[:, None])[:, 0] + d @ a + b
            out = (weight * torch.nn.functional.binary_cross_entropy_with_logits(z, yt, reduction="none")).mean()
            out = out + L2 * (w * w).sum()
            out.backward()
            return out

        opt.step(loss)
        self.w, self.a, self.b = w.detach(), a.detach(), b.detach()

    def _x(self, texts: list[str]) -> torch.Tensor:
        ix, vals, rows_ = [], [], []
        for k, t in enumerate(texts):
            c = collections.Counter(g for g in grams(t) if g in self.vocab)
            if c:
                cols = np.array([self.vocab[g] for g in c])
                v = np.array([1 + math.log(n) for n in c.values()], np.float32) * self.idf[cols]
                ix += cols.tolist(); vals += (v / np.linalg.norm(v)).tolist(); rows_ += [k] * len(cols)
        return torch.sparse_coo_tensor(torch.tensor([rows_, ix]), torch.tensor(vals), (len(texts), len(self.vocab)),
                                       check_invariants=False)

    def __call__(self, texts: list[str], scores: np.ndarray) -> np.ndarray:
        d = torch.tensor(scores / 5, dtype=torch.float32)
        return (torch.sparse.mm(self._x(texts), self.w[:, None])[:, 0] + d @ self.a + self.b).numpy()


def counts(gold: np.ndarray, flag: np.ndarray) -> str:
    risk, high = gold != "none", gold == "high"
    tp, fp = (flag & risk).sum(), (flag & ~risk).sum()
    return (f"recall {tp / max(risk.sum(), 1):.3f} precision {tp / max(tp + fp, 1):.3f} "
            f"high screened none {(high & ~flag).sum()} of {high.sum()}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scores", type=Path, required=True, help="cache of the layer's scores (JSON lines, by text)")
    ap.add_argument("--test", nargs="+", default=TEST, help="fresh sets left out of the fit and tested on")
    args = ap.parse_args()
    data = rows()
    for r in data:
        if r["set"] in args.test:
            r["group"] = "test"
    tiers, scores = layer_scores([r["text"] for r in data], args.scores)
    layer = load_layer()
    gold = np.array([r["gold"] for r in data])
    group = np.array([r["group"] for r in data])
    rules = np.array([t != "none" for t in tiers])
    readable = np.array([s is not None for s in scores])  # the rules screen the others high
    sc = np.array([s if s is not None else (0.0, 0.0) for s in scores], np.float32)
    shipped = rules | (readable & (sc[:, 0] >= layer.threshold))

    fit = np.where((group == "fit") & readable)[0]
    texts = [data[i]["text"] for i in fit]
    y = (gold[fit] != "none").astype(np.float32)
    fold = np.random.default_rng(0).integers(0, FOLDS, len(fit))
    oof = np.empty(len(fit))
    for k in range(FOLDS):
        stage = Stage([t for t, f in zip(texts, fold) if f != k], sc[fit][fold != k], y[fold != k])
        oof[fold == k] = stage([t for t, f in zip(texts, fold) if f == k], sc[fit][fold == k])
        print(f"fold {k + 1} of {FOLDS}", flush=True)
    on_fit = group == "fit"
    target = ((gold != "none") & shipped & on_fit).sum()
    flag_oof = rules.copy()
    for t in np.sort(oof)[::-1]:  # the highest threshold that catches as many risk rows as the shipped layer
        flag_oof[fit] = rules[fit] | (oof >= t)
        if ((gold != "none") & flag_oof & on_fit).sum() >= target:
            threshold = t
            break
    print(f"\nfitting rows, out of fold ({on_fit.sum()}): threshold {threshold:.3f}")
    print(f"  rules + -6          {counts(gold[on_fit], shipped[on_fit])}")
    print(f"  rules + -6 + stage  {counts(gold[on_fit], flag_oof[on_fit])}")

    stage = Stage(texts, sc[fit], y)
    staged = rules | (readable & (stage([r["text"] for r in data], sc) >= threshold))
    for g in ["test", *sorted(set(group) - {"fit", "test"})]:
        m = group == g
        print(f"\n{g} ({m.sum()} rows)")
        print(f"  rules + -6          {counts(gold[m], shipped[m])}")
        print(f"  rules + -6 + stage  {counts(gold[m], staged[m])}")


if __name__ == "__main__":
    main()
