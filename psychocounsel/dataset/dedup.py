"""Near-duplicate detection for client speeches: MinHash + LSH banding, streamed, exact-Jaccard verified.

Why this design: ingest sees speeches one at a time and may see millions, so comparing every pair is out.
Each speech gets a MinHash signature over its shingles; the signature is cut into LSH bands, and two speeches
sharing any band are candidates. A candidate only counts as a duplicate after the exact Jaccard of the two
shingle sets reaches the threshold, so MinHash noise can cause a miss (rare, see ``lsh_params``) but never a
false drop. Shingles are word 3-grams of the lower-cased words; the threshold (default 0.7) is
``SpeechesConfig.near_dup_threshold`` in config.py, where the number is explained.
"""

from __future__ import annotations

import hashlib
import math
import re
from typing import Any

import numpy as np

SHINGLE_WORDS = 3  # word 3-grams: on 100-1,000 char speeches a two-word edit keeps J ~0.85 (5-grams: ~0.76)
_WORD = re.compile(r"\w+")


def shingles(text: str, n: int = SHINGLE_WORDS) -> set[tuple[str, ...]]:
    """Word n-grams of the lower-cased words; a text shorter than n words is one shingle."""
    words = _WORD.findall(text.lower())
    if len(words) < n:
        return {tuple(words)}
    return set(zip(*(words[i:] for i in range(n))))


def jaccard(a: set, b: set) -> float:
    return len(a & b) / len(a | b) if a or b else 1.0


def lsh_params(threshold: float, miss: float = 1e-3) -> tuple[int, int]:
    """(bands, rows) for LSH banding. A pair with Jaccard s becomes a candidate with probability
    1 - (1 - s^r)^b. r puts the steep part of that S-curve near the threshold (s^r ~ 1/2) and b is the
    fewest bands that miss a pair at exactly the threshold with probability <= ``miss``.
    For the default 0.7: r = 2, b = 11 (22 hashes); a pair at 0.7 is missed 1 time in ~1,600."""
    t = min(threshold, 0.99)
    rows = min(16, max(1, round(math.log(0.5) / math.log(t))))
    bands = max(1, math.ceil(math.log(miss) / math.log(1 - t ** rows)))
    return bands, rows


class NearDupIndex:
    """Streaming near-duplicate finder: MinHash signatures, LSH bands in dicts, exact-Jaccard check.

    Memory per kept speech: its text (to re-shingle a candidate exactly) plus one dict entry per band.
    Word hashes come from blake2b, not ``hash()``, so the same input keeps the same speeches on every run.
    """

    _MAX_CACHE = 500_000  # words; bounds the word-hash cache on huge vocabularies

    def __init__(self, threshold: float, seed: int = 0):
        self.threshold = threshold
        self.bands, self.rows = lsh_params(threshold)
        rng = np.random.default_rng(seed)
        k = self.bands * self.rows
        # multiply-shift hashing: (a*x + b) mod 2^64, top 32 bits; a odd
        self._a = (rng.integers(0, 2**63, k, dtype=np.uint64) * np.uint64(2) + np.uint64(1))[:, None]
        self._b = rng.integers(0, 2**63, k, dtype=np.uint64)[:, None]
        self._pos = rng.integers(0, 2**63, SHINGLE_WORDS, dtype=np.uint64) * np.uint64(2) + np.uint64(1)
        self._band_mix = rng.integers(0, 2**63, self.rows, dtype=np.uint64) * np.uint64(2) + np.uint64(1)
        self._tables: list[dict[int, Any]] = [{} for _ in range(self.bands)]
        self._words: dict[str, int] = {}
        self.texts: list[str] = []

    def _word_ids(self, words: list[str]) -> np.ndarray:
        cache = self._words
        if len(cache) > self._MAX_CACHE:
            cache.clear()
        ids = list(map(cache.get, words))  # a C-level loop; only new words reach blake2b
        if None in ids:
            for i, h in enumerate(ids):
                if h is None:
                    w = words[i]
                    ids[i] = cache[w] = int.from_bytes(hashlib.blake2b(w.encode(), digest_size=8).digest(), "little")
        return np.array(ids, dtype=np.uint64)

    def band_keys(self, text: str) -> list[int]:
        words = _WORD.findall(text.lower())
        ids = self._word_ids(words)
        n = len(ids)
        if n < SHINGLE_WORDS:
            # one shingle for the whole (short) text, matching shingles()
            sh = np.array([int(np.bitwise_xor.reduce(ids * self._pos[:n])) if n else 0], dtype=np.uint64)
        else:
            m = n - SHINGLE_WORDS + 1
            sh = ids[:m] * self._pos[0]
            for j in range(1, SHINGLE_WORDS):
                sh = sh ^ (ids[j:j + m] * self._pos[j])
            sh = np.unique(sh)
        with np.errstate(over="ignore"):
            sig = ((self._a * sh[None, :] + self._b) >> np.uint64(32)).min(axis=1)
        keys = (sig.reshape(self.bands, self.rows) * self._band_mix).sum(axis=1)
        return keys.tolist()

    def find(self, text: str, keys: list[int]) -> tuple[int, float] | None:
        """(index of the most similar kept text, its Jaccard) if one reaches the threshold."""
        cands: set[int] = set()
        for table, key in zip(self._tables, keys):
            hit = table.get(key)
            if isinstance(hit, list):
                cands.update(hit)
            elif hit is not None:
                cands.add(hit)
        if not cands:
            return None
        mine = shingles(text)
        best = max(((i, jaccard(mine, shingles(self.texts[i]))) for i in sorted(cands)), key=lambda x: x[1])
        return best if best[1] >= self.threshold else None

    def add(self, text: str, keys: list[int]) -> int:
        idx = len(self.texts)
        self.texts.append(text)
        for table, key in zip(self._tables, keys):
            hit = table.get(key)
            if hit is None:
                table[key] = idx
            elif isinstance(hit, list):
                hit.append(idx)
            else:
                table[key] = [hit, idx]
        return idx
