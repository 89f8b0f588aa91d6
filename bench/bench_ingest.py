"""Throughput and peak memory of ingest + dedup on synthetic speeches.

    .venv/bin/python bench/bench_ingest.py              # 100k speeches
    .venv/bin/python bench/bench_ingest.py --n 20000 --scrub

Writes a JSONL of N speeches (Zipf-distributed pseudo-words, 100-1,000 characters) with 5% exact
repeats, 5% near repeats (one word changed, Jaccard ~0.95) and 4% out of the length bounds, then times
``ingest`` over it. The file is written by a child process so the peak RSS measured here is ingest's own.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def write_synthetic(path: Path, n: int, seed: int = 0) -> None:
    import numpy as np

    rng = np.random.default_rng(seed)
    syll = ["ka", "lo", "mi", "ne", "ru", "sa", "to", "vi", "ze", "po", "da", "fe", "gu", "hi", "jo"]
    vocab = ["".join(rng.choice(syll, rng.integers(1, 4))) + str(i % 7) for i in range(20_000)]
    cdf = np.cumsum(1.0 / np.arange(1, len(vocab) + 1))  # Zipf: a few words everywhere, like real text
    cdf /= cdf[-1]

    def draw(k: int) -> list[str]:
        return [vocab[i] for i in np.searchsorted(cdf, rng.random(k))]

    recent: list[str] = []
    with path.open("w", encoding="utf-8") as fh:
        for i in range(n):
            r = rng.random()
            if r < 0.05 and recent:
                text = recent[rng.integers(len(recent))]
            elif r < 0.10 and recent:
                words = recent[rng.integers(len(recent))].split()
                words[rng.integers(len(words))] = "changed"
                text = " ".join(words)
            elif r < 0.12:
                text = "too short " * rng.integers(1, 9)
            elif r < 0.14:
                text = " ".join(draw(400))
            else:
                chars = int(rng.integers(100, 1000))
                text = " ".join(draw(chars // 4))[:chars].rsplit(" ", 1)[0] + "."
                if len(text) < 100:
                    text = text + " and that is how I feel about it all, honestly."
                recent.append(text)
                if len(recent) > 2000:
                    recent.pop(0)
            fh.write(json.dumps({"id": f"s{i}", "topic": "synthetic", "text": text}) + "\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--scrub", action="store_true", help="also mask PII")
    ap.add_argument("--file", type=Path, help="reuse this synthetic file (written if missing)")
    ap.add_argument("--child-write", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child_write:
        write_synthetic(args.child_write, args.n)
        return

    from psychocounsel.config import SpeechesConfig
    from psychocounsel.dataset.ingest import ingest

    tmp = tempfile.TemporaryDirectory()
    path = args.file or Path(tmp.name) / "synthetic.jsonl"
    if not path.exists():
        t = time.perf_counter()
        subprocess.run([sys.executable, __file__, "--n", str(args.n), "--child-write", str(path)], check=True)
        print(f"wrote {args.n:,} synthetic speeches ({path.stat().st_size / 1e6:.0f} MB) "
              f"in {time.perf_counter() - t:.1f}s")
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    t = time.perf_counter()
    speeches, report = ingest(SpeechesConfig(path=str(path), scrub_pii=args.scrub))
    kept = sum(1 for _ in speeches)
    dt = time.perf_counter() - t
    rss1 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print("\n".join(report.summary_lines()[:2]))
    print(f"ingest+dedup: {report.read:,} rows in {dt:.1f}s = {report.read / dt:,.0f} rows/s, "
          f"{kept / dt:,.0f} kept speeches/s")
    print(f"peak RSS {rss1:.0f} MB (before ingest {rss0:.0f} MB, so ingest added <= {rss1 - rss0:.0f} MB)")


if __name__ == "__main__":
    main()
