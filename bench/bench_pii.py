"""PII scrubbing: speed on the demo speeches, recall per kind and false masks on the labelled set.

    .venv/bin/python bench/bench_pii.py                    # speed + dev split + demo false masks
    .venv/bin/python bench/bench_pii.py --split heldout    # the honest score: run once tuning is over
    .venv/bin/python bench/bench_pii.py --show             # also list every miss and false mask

Recall counts a labelled detail as caught when masks cover all of it (any kind; "typed" needs the right
kind). Precision is 1 - false masks / masks, a false mask covering no labelled character. The held-out
split is printed only when asked, so tuning runs never see it.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from psychocounsel.dataset.pii.score import Score

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def table(name: str, score: Score) -> list[str]:
    head = (f"{name}: {score.texts} texts, {score.masks} masks, {len(score.false_masks)} false "
            f"(precision {score.precision:.3f})")
    lines = [head, f"  {'kind':9} {'n':>4} {'recall':>7} {'typed':>7}"]
    for kind, k in score.kinds.items():
        if k.n:
            lines.append(f"  {kind:9} {k.n:4d} {k.recall:7.3f} {k.typed / k.n:7.3f}")
    n = sum(k.n for k in score.kinds.values())
    caught = sum(k.caught for k in score.kinds.values())
    lines.append(f"  {'all':9} {n:4d} {caught / n if n else float('nan'):7.3f}")
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--split", choices=["dev", "heldout", "demo"], action="append",
                    help="splits to score (default: dev and demo)")
    ap.add_argument("--repeat", type=int, default=3, help="passes over the demo speeches for the speed figure")
    ap.add_argument("--show", action="store_true", help="list misses and false masks")
    args = ap.parse_args()
    splits = args.split or ["dev", "demo"]

    t = time.perf_counter()
    from psychocounsel.dataset.pii.score import demo_speeches, evaluate, load_labelled
    from psychocounsel.dataset.pii.scrub import find, scrub

    scrub("warm up: load Presidio and the NER model")
    print(f"first call (imports + model load): {time.perf_counter() - t:.1f}s")

    demo = [json.loads(line)["text"] for line in (ROOT / "psychocounsel/data/demo_speeches.jsonl").open()]
    t = time.perf_counter()
    for _ in range(args.repeat):
        for text in demo:
            scrub(text)
    dt = time.perf_counter() - t
    n = len(demo) * args.repeat
    chars = sum(map(len, demo)) * args.repeat
    print(f"scrub: {n / dt:,.0f} speeches/s ({chars / dt / 1e3:,.0f}k chars/s, mean {chars / n:.0f} chars) "
          f"over {n} demo speeches; 26,000 speeches ~ {26_000 / (n / dt) / 60:.1f} min on one core")

    # The NER model alone, as scrub runs it, to show how much of the time the model takes on this machine.
    import spacy

    from psychocounsel.dataset.pii.scrub import NER_MODEL

    nlp = spacy.load(NER_MODEL, exclude=["tok2vec", "tagger", "parser", "attribute_ruler", "lemmatizer", "senter"])
    t = time.perf_counter()
    for _ in range(args.repeat):
        for text in demo:
            nlp(text)
    print(f"the NER model alone: {n / (time.perf_counter() - t):,.0f} speeches/s")

    labelled = load_labelled()
    for split in splits:
        rows = demo_speeches(labelled) if split == "demo" else [r for r in labelled if r.split == split]
        score = evaluate(rows, find)
        print("\n".join(table(split, score)))
        if args.show:
            for row_id, kind, text in score.missed:
                print(f"    missed {kind:8} {row_id}: {text!r}")
            for row_id, kind, text in score.false_masks:
                print(f"    false  {kind:8} {row_id}: {text!r}")


if __name__ == "__main__":
    main()
