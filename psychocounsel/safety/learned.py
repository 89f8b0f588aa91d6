"""The crisis screen's learned layer: two probes stacked, offline, on CPU.

    layer = load_layer()                   # psychocounsel/data/crisis_probe.npz (scripts/train_crisis_probe.py)
    risk, high = layer.scores(texts)       # stacked scores: risk >= layer.threshold raises none to possible,
                                           # high >= layer.high_threshold raises possible to high

Why a learned layer next to the rules: real clients say the same wish in more ways than patterns can list.
On messages written by two authors who never saw the rules, the rules found 0.43 of those at risk (dev split
of ``crisis_independent.jsonl``). Two probes read each text:

- a logistic regression on hashed word uni- and bigrams (deterministic across machines: crc32, not Python's
  salted hash), microseconds per text;
- a logistic regression on the embedded SmolLM2-135M's hidden states (mean over tokens at layer
  ``HIDDEN_LAYER``, the first 20 of 30 layers run). Word n-grams cannot tell "I hope I don't wake up" from
  "I hope I wake up feeling better"; the hidden states separate such pairs better (cross-validated on the
  dev rows, at 2% false alarms on ordinary counseling speeches: recall 0.70 for the n-grams alone, 0.77 for
  the hidden states, 0.80 stacked).

Their logits are scaled to unit spread on the training rows and mixed (``mix`` weighs the n-grams). The
hidden-state probe reads ~20 speeches a second on 2 cores (`bench/bench_screen.py --learned`: 22.7/s at 234
characters on average; the n-gram probe takes microseconds), and only texts the rules do not screen high are
read: 26k speeches, the paper's scale, take about 20 minutes. It runs in fp32 on purpose: bf16 was 2.7x
faster on a CPU with native bf16 but flipped 5 of 841 decisions, and a screen should read a text the same on
every machine.

A second pair of probes, fitted on risk rows only, scores high against possible: rules catch few plans,
methods and preparations worded outside their patterns (7 of 41 high-risk messages by new authors screened
high), and a missed high tier is the costlier miss.

The screen only lets this layer RAISE a tier (signal kinds ``learned`` and ``learned_high``, the score as
evidence), never lower one, so every rule's evidence span stays.
"""

from __future__ import annotations

import re
import threading
import zlib
from dataclasses import dataclass
from functools import lru_cache
from itertools import pairwise
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..errors import UserError
from .rules import SAME_LENGTH

PROBE_PATH = Path(__file__).resolve().parents[1] / "data" / "crisis_probe.npz"
# 2^16 buckets: the size the layer was cross-validated with (the first probe's 2^14 collides more on the larger
# training set); the weights stay under 300 KB compressed.
N_BUCKETS = 1 << 16
HIDDEN_LAYER = 20  # of SmolLM2-135M's 30: layers 16-20 gave the best cross-validated probe (layers 1-30 swept)
MAX_TOKENS = 320  # ~1,300 characters; the paper's speeches are at most 1,000 characters
_TOKEN = re.compile(r"[a-z0-9']+")


def tokens(text: str) -> list[str]:
    return _TOKEN.findall(text.translate(SAME_LENGTH).lower())


def ngram_features(text: str) -> tuple[np.ndarray, np.ndarray]:
    """Hashed word 1-2-gram counts as (bucket indices, values): log-scaled and L2-normalised, so long posts
    weigh no more than short ones."""
    toks = tokens(text)
    grams = toks + [a + " " + b for a, b in pairwise(toks)]
    if not grams:
        return np.zeros(0, np.int64), np.zeros(0, np.float32)
    idx = np.fromiter((zlib.crc32(g.encode()) & (N_BUCKETS - 1) for g in grams), dtype=np.int64, count=len(grams))
    buckets, counts = np.unique(idx, return_counts=True)
    vals = np.log1p(counts.astype(np.float32))
    return buckets, vals / np.linalg.norm(vals)


class SparseRows:
    """Rows of hashed features in CSR form, with the two products logistic regression needs."""

    def __init__(self, rows: Sequence[tuple[np.ndarray, np.ndarray]], width: int = N_BUCKETS):
        self.rows, self.width, self.n = list(rows), width, len(rows)
        lengths = np.array([len(r[0]) for r in rows], dtype=np.int64)
        self.index = np.concatenate([r[0] for r in rows]) if rows else np.zeros(0, np.int64)
        self.value = np.concatenate([r[1] for r in rows]).astype(np.float64) if rows else np.zeros(0)
        self.row = np.repeat(np.arange(self.n), lengths)

    @classmethod
    def of(cls, texts: Sequence[str]) -> "SparseRows":
        return cls([ngram_features(t) for t in texts])

    def take(self, which: np.ndarray) -> "SparseRows":
        """The rows where the boolean mask ``which`` holds, in order."""
        return SparseRows([self.rows[i] for i in np.flatnonzero(which)], self.width)

    def dot(self, w: np.ndarray) -> np.ndarray:
        return np.bincount(self.row, weights=self.value * w[self.index], minlength=self.n)

    def tdot(self, g: np.ndarray) -> np.ndarray:
        return np.bincount(self.index, weights=self.value * g[self.row], minlength=self.width)


def balanced_weights(y: np.ndarray) -> np.ndarray:
    """Per-row weights giving each class half the loss (the sets are 35-70% risk; the screen is recall first)."""
    pos = float(y.mean())
    return np.where(y == 1, 0.5 / pos, 0.5 / (1 - pos))


def fit(x: Any, y: np.ndarray, l2: float, steps: int = 500, lr: float = 0.1) -> tuple[np.ndarray, float]:
    """Class-balanced logistic regression by full-batch gradient descent with momentum, on a dense matrix or
    ``SparseRows``: a few thousand rows, so seconds on one core with nothing beyond numpy."""
    sparse = isinstance(x, SparseRows)
    width = x.width if sparse else x.shape[1]
    w, b = np.zeros(width), 0.0
    vw, vb = np.zeros(width), 0.0
    sw = balanced_weights(y) / len(y)
    for _ in range(steps):
        z = (x.dot(w) if sparse else x @ w) + b
        g = sw * (1.0 / (1.0 + np.exp(-z)) - y)
        vw = 0.9 * vw + (x.tdot(g) if sparse else x.T @ g) + l2 * w
        vb = 0.9 * vb + g.sum()
        w -= lr * vw
        b -= lr * vb
    return w, float(b)


class HiddenStates:
    """Mean-pooled hidden states of the embedded SmolLM2 at ``HIDDEN_LAYER``, the layers above it never run.

    Loaded once per process, on first use (~10 s; ~300 MB). Thread-safe: the serve gate calls it from
    worker threads."""

    def __init__(self, layer: int = HIDDEN_LAYER, batch_size: int = 16):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from ..backends.local_models import resolve_model

        src = resolve_model("embedded")
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(src.location, gguf_file=src.gguf_file)
            model = AutoModelForCausalLM.from_pretrained(src.location, gguf_file=src.gguf_file, dtype=torch.float32)
        except Exception as e:  # a damaged install: one line, as for every model load
            msg = (str(e).strip().splitlines() or [type(e).__name__])[0]
            raise UserError(f"crisis screen: cannot load the embedded model for the learned layer: {msg}") from None
        self.body = model.model
        self.body.layers = self.body.layers[:layer]
        self.body.norm = torch.nn.Identity()  # the final norm belongs to layer 30's output, not ours
        self.body.eval()
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.tokenizer.padding_side = "right"
        self.batch_size = batch_size
        self._lock = threading.Lock()
        self._torch = torch

    def __call__(self, texts: Sequence[str]) -> np.ndarray:
        torch = self._torch
        out = np.zeros((len(texts), self.body.config.hidden_size), dtype=np.float32)
        order = np.argsort([len(t) for t in texts])  # similar lengths together: less padding
        with self._lock, torch.inference_mode():
            for i in range(0, len(texts), self.batch_size):
                idx = order[i:i + self.batch_size]
                enc = self.tokenizer([texts[j] for j in idx], return_tensors="pt", padding=True, truncation=True,
                                     max_length=MAX_TOKENS)
                h = self.body(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"]).last_hidden_state
                mask = enc["attention_mask"].unsqueeze(-1).float()
                out[idx] = ((h * mask).sum(1) / mask.sum(1).clamp(min=1)).numpy()
        return out


@lru_cache(maxsize=1)
def hidden_states() -> HiddenStates:
    return HiddenStates()


@dataclass(frozen=True)
class LearnedLayer:
    """The stacked probes as shipped. ``scores`` >= ``threshold`` raises a ``none`` to ``possible``."""

    ngram_w: np.ndarray
    ngram_b: float
    hidden_mean: np.ndarray
    hidden_scale: np.ndarray
    hidden_w: np.ndarray
    hidden_b: float
    ngram_spread: float
    hidden_spread: float
    mix: float
    threshold: float
    # The high tier: the same two probes, fitted on risk rows only (high vs possible), mixed alike. A text
    # screened possible whose high score reaches ``high_threshold`` is raised to high.
    high_ngram_w: np.ndarray
    high_ngram_b: float
    high_hidden_w: np.ndarray
    high_hidden_b: float
    high_ngram_spread: float
    high_hidden_spread: float
    high_threshold: float
    version: str

    def stack(self, ngram: np.ndarray, hidden: np.ndarray) -> np.ndarray:
        return self.mix * ngram / self.ngram_spread + (1 - self.mix) * hidden / self.hidden_spread

    def scores(self, texts: Sequence[str], states: Any = None) -> tuple[np.ndarray, np.ndarray]:
        """Stacked (any-risk, high) scores of ``texts``; ``states`` computes hidden states (default: the embedded
        model's). Compare them with ``threshold`` and ``high_threshold``."""
        if not texts:
            return np.zeros(0), np.zeros(0)
        rows = SparseRows.of(texts)
        z = (((states or hidden_states())(list(texts))) - self.hidden_mean) / self.hidden_scale
        risk = self.stack(rows.dot(self.ngram_w.astype(np.float64)) + self.ngram_b, z @ self.hidden_w + self.hidden_b)
        high = (self.mix * (rows.dot(self.high_ngram_w.astype(np.float64)) + self.high_ngram_b) / self.high_ngram_spread
                + (1 - self.mix) * (z @ self.high_hidden_w + self.high_hidden_b) / self.high_hidden_spread)
        return risk, high


def save_layer(layer: LearnedLayer, path: Path = PROBE_PATH) -> None:
    fields = {k: getattr(layer, k) for k in LearnedLayer.__dataclass_fields__}
    np.savez_compressed(path, **{k: (np.asarray(v, dtype=np.float32) if not isinstance(v, str) else v)
                                 for k, v in fields.items()})


@lru_cache(maxsize=1)
def load_layer(path: Path = PROBE_PATH) -> LearnedLayer | None:
    """The shipped layer, or None where the file is absent (then the screen is the rules alone)."""
    if not path.exists():
        return None
    z = np.load(path)
    kw: dict[str, Any] = {}
    for k, f in LearnedLayer.__dataclass_fields__.items():
        v = z[k]
        kw[k] = str(v) if f.type == "str" else (float(v) if f.type == "float" else v)
    return LearnedLayer(**kw)
