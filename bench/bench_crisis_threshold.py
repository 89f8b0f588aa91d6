"""Where the learned layer's threshold could sit: recall and precision of rules + layer at every threshold, from
the out-of-fold scores a training run saved, on the counseling-register rows and on real client language.

    .venv/bin/python scripts/train_crisis_layer.py --cache /tmp/states --validate 2 --ship fold --oof oof.npz
    .venv/bin/python bench/bench_crisis_threshold.py oof.npz --png threshold.png

Prints a table (a threshold per row: the marked one, by default the shipped layer's, and those where the real
rows' recall crosses 0.80-0.95) and draws both precision-recall curves with the goal (recall >= 0.95 at precision
>= 0.90) and the marked point. The rules are the current ones, so after a rules change the curve moves as the
shipped threshold would (``train_crisis_layer.py --rethreshold``). Out-of-fold scores only: rows the scoring layer
never saw.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

from train_crisis_layer import REAL, oof_rows, targets

from psychocounsel.safety.learned import load_layer

GOAL_RECALL, GOAL_PRECISION = 0.95, 0.90


def curve(score: np.ndarray, rule: np.ndarray, y: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, ...]:
    """(thresholds, recall, precision, share of `none` rows flagged) of rules + layer on ``mask`` rows."""
    ts = np.unique(score[mask])[::-1]
    risk, none = mask & y, mask & ~y
    out = []
    for t in ts:
        flag = rule | (score >= t)
        tp, fp = (flag & risk).sum(), (flag & none).sum()
        out.append((t, tp / max(risk.sum(), 1), tp / max(tp + fp, 1), fp / max(none.sum(), 1)))
    return tuple(np.array(c) for c in zip(*out))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("oof", type=Path, help="out-of-fold scores (.npz) from train_crisis_layer.py --oof")
    ap.add_argument("--png", type=Path, help="also draw the two curves here")
    ap.add_argument("--threshold", type=float,
                    help="the threshold to mark (default: the shipped layer's; give the scoring layer's own when the "
                         "scores come from another layer)")
    ap.add_argument("--label", help="the scoring layer's name in the table and plot (default: the shipped layer's)")
    args = ap.parse_args()
    z, data = oof_rows(args.oof)
    score = z["risk"]
    y, _, source, rule, _ = targets(data)
    y = y == 1
    layer = load_layer()
    shipped = args.threshold if args.threshold is not None else (None if layer is None else layer.threshold)
    label = args.label or (layer.version if layer else "no layer")
    groups = {"counseling-register rows": source != "cssrs_posts.jsonl", "real client language": np.isin(source, REAL)}
    curves = {name: curve(score, rule, y, m) for name, m in groups.items()}

    ts, rec, _, _ = curves["real client language"]
    picks = [] if shipped is None else [shipped]
    for target in (0.80, 0.85, 0.90, 0.95):
        hit = np.nonzero(rec >= target)[0]
        if hit.size:
            picks.append(ts[hit[0]])
    print(f"{len(data)} out-of-fold rows; layer {label}, threshold {'-' if shipped is None else f'{shipped:.3f}'}")
    head = "".join(f" | {name}: recall  precision  flagged" for name in groups)
    print(f"{'threshold':>10s}{head}")
    for t in sorted(set(picks), reverse=True):
        cells = []
        flag = rule | (score >= t)
        for name, m in groups.items():
            risk, none = m & y, m & ~y
            width = len(name) + 8
            cells.append(f" | {flag[risk].mean():>{width}.3f}  {y[m & flag].mean():9.3f}  {flag[none].mean():7.3f}")
        mark = "  (marked)" if shipped is not None and t == shipped else ""
        print(f"{t:10.3f}{''.join(cells)}{mark}")
    best = {name: float(np.max(np.where(c[1] >= GOAL_RECALL, c[2], 0.0))) for name, c in curves.items()}
    for name, p in best.items():
        print(f"best precision at recall >= {GOAL_RECALL} on {name}: {p:.3f} (goal {GOAL_PRECISION})")

    if args.png:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(6.4, 4.8))
        marked = None if shipped is None else rule | (score >= shipped)
        for name, (t, r, p, _) in curves.items():
            (line,) = ax.plot(r, p, label=name)
            if marked is not None:
                m = groups[name]
                ax.plot(marked[m & y].mean(), y[m & marked].mean(), "o", color=line.get_color())
        ax.axvline(GOAL_RECALL, color="grey", ls=":", lw=1)
        ax.axhline(GOAL_PRECISION, color="grey", ls=":", lw=1)
        ax.fill_between([GOAL_RECALL, 1.0], GOAL_PRECISION, 1.0, color="green", alpha=0.08, label="goal")
        ax.set_xlabel("any-risk recall (rules + learned layer)")
        ax.set_ylabel("precision")
        ax.set_xlim(0.5, 1.0)
        ax.set_ylim(0.0, 1.0)
        ax.set_title(f"crisis screen, out of fold ({label}; dot: threshold {shipped:.2f})" if shipped is not None
                     else f"crisis screen, out of fold ({label})", fontsize=9)
        ax.legend(loc="lower left", fontsize=8)
        fig.tight_layout()
        fig.savefig(args.png, dpi=120)
        print(f"wrote {args.png}")


if __name__ == "__main__":
    main()
