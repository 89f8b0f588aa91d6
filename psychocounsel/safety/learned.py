"""The crisis screen's learned layer: a logistic-regression probe on hashed word n-grams, offline, on CPU.

    probe = load_probe()                 # psychocounsel/data/crisis_probe.npz, built by scripts/train_crisis_probe.py
    probe.probability(text) -> float     # P(any risk) for one speech

Why a probe next to the rules: real posts say the same wish in more ways than patterns can list (the rules
alone found under half of the dev posts of cssrs_posts.jsonl at risk). The probe reads word uni- and bigrams,
hashed into a fixed vector (no vocabulary file, deterministic across machines: crc32, not Python's salted
hash), and its threshold was chosen by cross-validation on the dev splits for any-risk recall >= 0.95. The
screen only lets it RAISE a tier (signal kind ``learned``, the probability as its evidence), never lower one,
so every rule's evidence span stays.
"""

from __future__ import annotations

import re
import zlib
from dataclasses import dataclass
from functools import lru_cache
from itertools import pairwise
from pathlib import Path

import numpy as np

from .rules import SAME_LENGTH

PROBE_PATH = Path(__file__).resolve().parents[1] / "data" / "crisis_probe.npz"
# 2^14 buckets: ~1,800 training speeches use ~60k distinct uni+bigrams; collisions at this size cost under a
# point of cross-validated recall in the training script's sweep, and the weights stay at 64 KB.
N_BUCKETS = 1 << 14
_TOKEN = re.compile(r"[a-z0-9']+")


def tokens(text: str) -> list[str]:
    return _TOKEN.findall(text.translate(SAME_LENGTH).lower())


def features(text: str) -> np.ndarray:
    """Hashed word 1-2-gram counts, log-scaled and L2-normalised (long posts weigh no more than short ones)."""
    toks = tokens(text)
    grams = toks + [a + " " + b for a, b in pairwise(toks)]
    x = np.zeros(N_BUCKETS, dtype=np.float32)
    if not grams:
        return x
    idx = np.fromiter((zlib.crc32(g.encode()) & (N_BUCKETS - 1) for g in grams), dtype=np.int64, count=len(grams))
    np.add.at(x, idx, 1.0)
    np.log1p(x, out=x)
    x /= np.linalg.norm(x)
    return x


@dataclass(frozen=True)
class Probe:
    weights: np.ndarray
    bias: float
    threshold: float
    version: str

    def probability(self, text: str) -> float:
        z = float(features(text) @ self.weights) + self.bias
        return 1.0 / (1.0 + np.exp(-z))


def fit(x: np.ndarray, y: np.ndarray, l2: float = 1e-4, steps: int = 400, lr: float = 0.5) -> tuple[np.ndarray, float]:
    """Logistic regression by full-batch gradient descent with momentum: the data are small (~2k rows), so
    this is seconds on one core and needs nothing beyond numpy."""
    w = np.zeros(x.shape[1], dtype=np.float64)
    b = 0.0
    vw, vb = np.zeros_like(w), 0.0
    pos = y.mean()
    # Classes weighted to balance: the sets are ~60% risk, the screen's use is recall first.
    sw = np.where(y == 1, 0.5 / pos, 0.5 / (1 - pos))
    for _ in range(steps):
        p = 1.0 / (1.0 + np.exp(-(x @ w + b)))
        g = sw * (p - y) / len(y)
        gw = x.T @ g + l2 * w
        gb = g.sum()
        vw = 0.9 * vw + gw
        vb = 0.9 * vb + gb
        w -= lr * vw
        b -= lr * vb
    return w.astype(np.float32), float(b)


@lru_cache(maxsize=1)
def load_probe(path: Path = PROBE_PATH) -> Probe | None:
    """The shipped probe, or None where the file is absent (then the screen is the rules alone)."""
    if not path.exists():
        return None
    z = np.load(path)
    return Probe(weights=z["weights"], bias=float(z["bias"]), threshold=float(z["threshold"]), version=str(z["version"]))
