"""Build the crisis sets whose text this repository links to instead of shipping: real posts from public copies
that state no licence, each labelled by two blind annotators. Only ids, labels and a hash of each text are
committed (bench/data/<set>.labels.jsonl); the text is rebuilt on your machine from the public copy.

    git clone https://github.com/ayaanzhaque/SDCNL /tmp/sdcnl                          # r/SuicideWatch, r/depression
    git clone https://github.com/Badhrinadhgvs/Suicide-Prediction /tmp/ksd            # r/SuicideWatch, r/teenagers
    .venv/bin/python scripts/make_linked_posts.py sdcnl /tmp/sdcnl/data/testing-set.csv --rebuild
    .venv/bin/python scripts/make_linked_posts.py suicide_detection /tmp/ksd/Suicide_Detection.csv --rebuild
    .venv/bin/python scripts/make_linked_posts.py sdcnl_2 /tmp/sdcnl/data/training-set.csv --rebuild
    .venv/bin/python scripts/make_linked_posts.py sdcnl_3 /tmp/sdcnl/data/training-set.csv --rebuild
    .venv/bin/python scripts/make_linked_posts.py sdcnl_4 /tmp/sdcnl/data/training-set.csv --rebuild
    .venv/bin/python scripts/make_linked_posts.py sdcnl_5 /tmp/sdcnl/data/training-set.csv --rebuild
    .venv/bin/python scripts/make_linked_posts.py sdcnl_6 /tmp/sdcnl/data/training-set.csv --rebuild
    .venv/bin/python scripts/make_linked_posts.py sdcnl_7 /tmp/sdcnl/data/training-set.csv --rebuild
    .venv/bin/python scripts/make_linked_posts.py sdcnl_8 /tmp/sdcnl/data/training-set.csv --rebuild
    git clone https://github.com/torrentpien/chatgpt-textmining-workshop /tmp/tpw     # another Kaggle copy
    .venv/bin/python scripts/make_linked_posts.py suicide_detection_2 /tmp/tpw/Suicide_Detection.csv --rebuild
    git clone https://github.com/madiklob/tweet_classification /tmp/tweets                # tweets
    .venv/bin/python scripts/make_linked_posts.py twitter "/tmp/tweets/Suicide_Ideation_Dataset(Twitter-based).csv" --rebuild
    .venv/bin/python scripts/make_linked_posts.py twitter_2 "/tmp/tweets/Suicide_Ideation_Dataset(Twitter-based).csv" --rebuild
    .venv/bin/python bench/bench_crisis_sets.py --sets crisis_sdcnl crisis_suicide_detection --learned

``--rebuild`` joins the committed labels with the text and checks every hash: it writes
bench/out/crisis_<source>.jsonl (git ignores bench/out/), which bench_crisis_sets.py reads. Building the set the
first time took ``--blind DIR`` (the sample for the annotators) and then ``--labels A B --adjudicated ADJ``, as
for the Reddit draws.

Sources (docs/CRISIS_SCREEN.md, "Thirteenth score"):
- ``sdcnl``: the test split (379 posts) of the set of Haque, Reddi and Giallanza, *Deep Learning for Suicide and
  Depression Identification with Unsupervised Label Correction* (ICANN 2021; arXiv 2102.09427): posts from
  r/SuicideWatch and r/depression, early 2020, in github.com/ayaanzhaque/SDCNL ``data/testing-set.csv``. Each
  text is the title, a blank line and the body (the source's "emptypost", its mark for a post with no body, kept
  as the source has it). The forum is kept; it is not a risk label.
- ``sdcnl_2``: 80 posts of SDCNL's training split, drawn with the fixed seed: the risk-rich part of a rare-risk
  inbox, scored with crisis_reddit_7 and crisis_rallypoint_2 ("Fourteenth score"). ``sdcnl_3``: the next 240 of the
  same shuffle, scored with crisis_reddit_8 and crisis_rallypoint_3 ("Fifteenth score"); ``sdcnl_4``: the 240 after
  those, with crisis_reddit_9 and crisis_rallypoint_4 ("Sixteenth score"); ``sdcnl_5``: the next 240, with
  crisis_reddit_10 and crisis_rallypoint_5 ("Seventeenth score"); ``sdcnl_6``: the next 240, with
  crisis_reddit_11 and crisis_rallypoint_6 ("Eighteenth score"); ``sdcnl_7``: the next 240, with crisis_reddit_12
  and crisis_rallypoint_7 ("Nineteenth score"); ``sdcnl_8``: the last 229 of the shuffle, with crisis_reddit_13
  and crisis_rallypoint_8 ("Twentieth score").
- ``suicide_detection``: the 237-post copy of Kaggle's "Suicide and Depression Detection" (Komati, 2021;
  r/SuicideWatch posts marked ``suicide`` and r/teenagers posts marked ``non-suicide``) in
  github.com/Badhrinadhgvs/Suicide-Prediction ``Suicide_Detection.csv``. Its titles run into the body as the
  source has them. The forum is read from the source's class; it is not a risk label.
- ``suicide_detection_2``: a 500-post copy of the same Kaggle set in github.com/torrentpien/chatgpt-textmining-workshop
  ``Suicide_Detection.csv`` (commit 496c454), its posts of 80-2,000 characters that no other set labels (186 of
  the 500 are in the first copy): 265 posts, labelled and frozen alone ("Twenty-first score").
- ``twitter``: 400 tweets of the "Suicide Ideation Dataset (Twitter-based)" that Kaggle spreads (1,787 tweets the
  source marks "Potential Suicide post" or "Not Suicide post"; its mark is not a risk label and is not kept), as
  the copy in github.com/madiklob/tweet_classification (commit 4377418): tweets of 15 characters or more, the
  first 400 of the shuffle; a register no other set has ("Twenty-second score"). ``twitter_2``: the next 400
  ("Twenty-third score").

Every post of each file is taken unless a slice of it is named (links, user mentions, e-mails and phone numbers
masked), shuffled with a fixed seed and numbered; a post repeating one earlier in the shuffle is left out, and so
is a post labelled from another copy or in a shipped set (``elsewhere``). Each set served once, whole, as a fresh
test.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import random
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from make_cssrs_posts import scrub
from make_reddit_posts import _read, add_label_args, repeat_key, split_of, write

ROOT = Path(__file__).resolve().parents[1]
SEED = 20261205


def _sdcnl(row: dict) -> tuple[str, str]:
    title, body = row["title"].strip(), row["selftext"].strip()
    forum = "SuicideWatch" if "/r/SuicideWatch/" in row["url"] else "depression"
    return (f"{title}\n\n{body}" if body and body not in ("[removed]", "[deleted]") else title), forum


def _suicide_detection(row: dict) -> tuple[str, str]:
    return row["text"].strip(), "SuicideWatch" if row["class"] == "suicide" else "teenagers"


def _suicide_detection_sample(row: dict) -> tuple[str, str] | None:
    """A larger sample of the same Kaggle set: posts of 80-2,000 characters, as the Reddit draws take."""
    text, forum = _suicide_detection(row)
    return (text, forum) if 80 <= len(text) <= 2000 else None


def _tweet(row: dict) -> tuple[str, str] | None:
    """A tweet of 15 characters or more, as the source has it (its mis-decoded apostrophes and emoji included)."""
    text = (row["Tweet"] or "").strip()
    return (text, "twitter") if len(text) >= 15 else None


# name: (file, id prefix, how one CSV row becomes text and forum or None when it is not taken, which of the
# shuffled posts). The draws from one file take disjoint slices of one shuffle, so no post is drawn twice.
SOURCES = {"sdcnl": ("testing-set.csv", "sdcnl", _sdcnl, slice(None)),
           "suicide_detection": ("Suicide_Detection.csv", "ksd", _suicide_detection, slice(None)),
           "sdcnl_2": ("training-set.csv", "sdcnl2", _sdcnl, slice(0, 80)),
           "sdcnl_3": ("training-set.csv", "sdcnl3", _sdcnl, slice(80, 320)),
           "sdcnl_4": ("training-set.csv", "sdcnl4", _sdcnl, slice(320, 560)),
           "sdcnl_5": ("training-set.csv", "sdcnl5", _sdcnl, slice(560, 800)),
           "sdcnl_6": ("training-set.csv", "sdcnl6", _sdcnl, slice(800, 1040)),
           "sdcnl_7": ("training-set.csv", "sdcnl7", _sdcnl, slice(1040, 1280)),
           "sdcnl_8": ("training-set.csv", "sdcnl8", _sdcnl, slice(1280, None)),
           "suicide_detection_2": ("Suicide_Detection.csv", "ksd2", _suicide_detection_sample, slice(None)),
           "twitter": ("Suicide_Ideation_Dataset(Twitter-based).csv", "tw", _tweet, slice(0, 400)),
           "twitter_2": ("Suicide_Ideation_Dataset(Twitter-based).csv", "tw2", _tweet, slice(400, 800))}


def labels_path(source: str) -> Path:
    return ROOT / "bench" / "data" / f"crisis_{source}.labels.jsonl"


def rebuilt_path(source: str) -> Path:
    return ROOT / "bench" / "out" / f"crisis_{source}.jsonl"


def text_hash(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def elsewhere(source: str) -> set[str]:
    """The text hashes of every post labelled from another copy (another file, or another reading of one) and in
    the shipped sets. Slices of one copy's shuffle are disjoint already, and must not shift."""
    file, _, read, _ = SOURCES[source]
    out = {row["sha256"] for other, (f, _, r, _) in SOURCES.items()
           if (f, r) != (file, read) and labels_path(other).exists() for row in _read(labels_path(other)).values()}
    for path in (ROOT / "psychocounsel" / "data").glob("*.jsonl"):
        for line in path.read_text(encoding="utf-8").splitlines():
            text = json.loads(line).get("text") if line.strip() else None
            if isinstance(text, str):
                out.add(text_hash(text))
    return out


def sample(source: str, csv_path: Path) -> list[dict]:
    name, prefix, read, rows = SOURCES[source]
    if csv_path.name != name:
        sys.exit(f"{csv_path}: {source} is drawn from the source's {name}")
    with csv_path.open(encoding="utf-8", newline="") as f:
        picked = [post for post in map(read, csv.DictReader(f)) if post is not None]
    random.Random(SEED).shuffle(picked)
    first: dict[str, tuple[str, str]] = {}  # the sources repeat some posts; in shuffle order, a repeat is left out
    for post in picked:
        first.setdefault(repeat_key(post[0]), post)
    labelled = elsewhere(source)  # two copies of one source share posts: a post labelled in another set is left out
    picked = [post for post in first.values() if text_hash(scrub(post[0])) not in labelled][rows]
    return [{"id": f"{prefix}-{k:04d}", "text": scrub(text), "split": split_of(f"{prefix}-{k:04d}"), "forum": forum}
            for k, (text, forum) in enumerate(picked, 1)]


def rebuild(posts: list[dict], labels: Path, out: Path) -> None:
    """The labelled set with its text, every text checked against the hash committed with its labels."""
    if not labels.exists():
        sys.exit(f"{labels}: no labels for this source")
    by_id = {p["id"]: p for p in posts}
    rows = []
    for n, row in enumerate(_read(labels).values(), 1):
        post = by_id.get(row["id"])
        if post is None or text_hash(post["text"]) != row["sha256"]:
            sys.exit(f"{labels}, line {n}: {row['id']}'s text is not in this copy of the source, or differs from "
                     "the labelled one (another version of the file?)")
        rows.append({"id": row["id"], "text": post["text"], **{k: v for k, v in row.items() if k not in ("id", "sha256")}})
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    print(f"{len(rows)} posts, every text matching its hash -> {out}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("source", choices=sorted(SOURCES))
    ap.add_argument("csv", type=Path, help="the source's CSV file, from a clone of its repository")
    add_label_args(ap)
    ap.add_argument("--rebuild", action="store_true", help="join the committed labels with the text, into bench/out/")
    args = ap.parse_args()
    if not args.csv.is_file():
        sys.exit(f"{args.csv}: no such file")
    posts = sample(args.source, args.csv)
    write(posts, args, labels_path(args.source), as_row=lambda r: {
        "id": r["id"], "sha256": text_hash(r["text"]), **{k: v for k, v in r.items() if k not in ("id", "text")}})
    if args.rebuild:
        rebuild(posts, labels_path(args.source), rebuilt_path(args.source))


if __name__ == "__main__":
    main()
