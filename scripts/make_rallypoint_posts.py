"""Build psychocounsel/data/crisis_rallypoint.jsonl: real posts from RallyPoint, a social network of US service
members and veterans, each labelled by two blind annotators.

    pip download construct-tracker==1.0.16 --no-deps -d /tmp/ct && unzip -q /tmp/ct/*.whl -d /tmp/ct
    DIR=/tmp/ct/construct_tracker/data/datasets/rally_point_reddit_mental_health
    .venv/bin/python scripts/make_rallypoint_posts.py $DIR --blind /tmp/rp          # the sample, for the annotators
    .venv/bin/python scripts/make_rallypoint_posts.py $DIR --labels /tmp/rp/ann_a.jsonl /tmp/rp/ann_b.jsonl \\
        --adjudicated /tmp/rp/adjudicated.jsonl                                      # the labelled set
    .venv/bin/python scripts/make_rallypoint_posts.py $DIR --draw 2 --blind /tmp/rp2    # the second draw, likewise

Source: the RallyPoint and Reddit mental-health classification set that ships in the construct-tracker package
(Low et al.; Apache-2.0), both of its files (train and test). Only RallyPoint's own posts are taken (the sources
"rallypoint Set 1" to "Set 6", "first500" and "nock2000"); its Reddit rows repeat the forums of the Reddit
draws, and its phrase lists, highlighted excerpts, negated rewrites and TalkLife rows are not whole posts written
by their authors. The source marks each post 1 if it is about mental health; that mark is kept (``mental_health``)
and is not a risk label.

The sample: posts of 80-2,000 characters, deduplicated; every post the source marked as about mental health
(where the risk and the traps are: war, suicide prevention training, lost comrades) and, with a fixed seed, as
many of the others, shuffled and numbered ``rp-0001``... The split is a hash of the id alone, as in the Reddit
draws, fixed before any label existed. Kept: the text (links, user mentions, e-mails and phone numbers masked),
the source's set name and its mark.

The second draw (``--draw 2``, ids ``rp2-``, crisis_rallypoint_2.jsonl): 220 posts, with their own seed, of those
the first left, none of them marked as about mental health: the service-life part of a rare-risk inbox, scored
with crisis_reddit_7 and crisis_sdcnl_2 ("Fourteenth score"). The third (``--draw 3``, ``rp3-``): 200 more the
same way, scored with crisis_reddit_8 and crisis_sdcnl_3 ("Fifteenth score"); the fourth (``rp4-``) likewise, with
crisis_reddit_9 and crisis_sdcnl_4 ("Sixteenth score"), and the fifth (``rp5-``) with crisis_reddit_10 and
crisis_sdcnl_5 ("Seventeenth score"); the sixth (``rp6-``) with crisis_reddit_11 and crisis_sdcnl_6 ("Eighteenth
score"); the seventh (``rp7-``) with crisis_reddit_12 and crisis_sdcnl_7 ("Nineteenth score"), and the eighth
(``rp8-``) with crisis_reddit_13 and crisis_sdcnl_8 ("Twentieth score").
"""

from __future__ import annotations

import argparse
import random
import sys
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from make_reddit_posts import add_label_args, repeat_key, split_of, write

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "psychocounsel" / "data" / "crisis_rallypoint.jsonl"
FILES = ("rallypoint_reddit_mentalhealth_train_3632.csv", "rallypoint_reddit_mentalhealth_test_908.csv")
SOURCES = tuple(f"rallypoint Set {i}" for i in range(1, 7)) + ("rallypoint first500", "rallypoint nock2000")
SEED = 20261210
# The later draws: posts the source did not mark as about mental health, none drawn before (id prefix, seed, posts).
LATER = {2: ("rp2", 20261215, 220), 3: ("rp3", 20261216, 200), 4: ("rp4", 20261217, 200),
         5: ("rp5", 20261218, 200), 6: ("rp6", 20261219, 200), 7: ("rp7", 20261220, 200),
         8: ("rp8", 20261221, 200)}


def sample(folder: Path, draw: int = 1) -> list[dict]:
    d = pd.concat([pd.read_csv(folder / f) for f in FILES], ignore_index=True)
    d = d[d.source.isin(SOURCES)].assign(doc=lambda x: x.doc.str.strip()).drop_duplicates("doc")
    d = d[d.doc.str.len().between(80, 2000)].sort_values(["source", "doc"])
    marked = d[d.label == 1]
    rng = random.Random(SEED)
    others = d.loc[sorted(rng.sample(list(d[d.label == 0].index), len(marked)))]
    picked = [(r.doc, r.source.removeprefix("rallypoint "), int(r.label))
              for r in pd.concat([marked, others]).itertuples()]
    rng.shuffle(picked)
    prefix, left = "rp", d[(d.label == 0) & ~d.index.isin(others.index)]
    drawn = set(pd.concat([marked, others]).doc.map(repeat_key))
    for n in range(2, draw + 1):  # each later draw takes posts no earlier draw took
        prefix, seed, k = LATER[n]
        if n >= 3:  # from the third draw on, a post repeating one drawn before is left out
            left = left[~left.doc.map(repeat_key).isin(drawn)]
        rng = random.Random(seed)
        taken = sorted(rng.sample(list(left.index), k))
        picked = [(r.doc, r.source.removeprefix("rallypoint "), int(r.label)) for r in left.loc[taken].itertuples()]
        rng.shuffle(picked)
        left = left.drop(taken)
        drawn |= {repeat_key(text) for text, _, _ in picked}
    return [{"id": f"{prefix}-{k:04d}", "text": text, "split": split_of(f"{prefix}-{k:04d}"), "set": source,
             "mental_health": mark} for k, (text, source, mark) in enumerate(picked, 1)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("folder", type=Path, help="rally_point_reddit_mental_health/ from construct-tracker 1.0.16")
    add_label_args(ap)
    ap.add_argument("--draw", type=int, choices=(1, *LATER), default=1, help="which draw (default 1)")
    ap.add_argument("--out", type=Path, help="default: the draw's file in psychocounsel/data")
    args = ap.parse_args()
    out = OUT if args.draw == 1 else OUT.with_name(f"crisis_rallypoint_{args.draw}.jsonl")
    write(sample(args.folder, args.draw), args, args.out or out)


if __name__ == "__main__":
    main()
