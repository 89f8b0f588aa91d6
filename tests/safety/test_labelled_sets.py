"""The crisis labelled sets: they parse, follow the labelling guide's vocabulary, and their frozen held-out
parts still hash to what docs/CRISIS_SCREEN.md recorded (so nobody edits them silently)."""

import hashlib
import json
import re
from collections import Counter
from pathlib import Path

import pytest

from psychocounsel.safety.labels import CONCERN_CATEGORIES
from psychocounsel.safety.screen import TIERS

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "psychocounsel" / "data"
GUIDE = (ROOT / "docs" / "CRISIS_LABELS.md").read_text(encoding="utf-8")
SCREEN_DOC = (ROOT / "docs" / "CRISIS_SCREEN.md").read_text(encoding="utf-8")
MESSAGES = DATA / "crisis_messages.jsonl"
POSTS = DATA / "cssrs_posts.jsonl"


def rows(path: Path) -> list[dict]:
    out = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        assert line.strip(), f"{path.name}:{n}: blank line"
        out.append(json.loads(line))
    return out


def guide_table(heading: str) -> list[list[str]]:
    """The cells of the first markdown table after ``heading`` in the guide."""
    after = GUIDE[GUIDE.index(heading):]
    lines = after.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("|"))
    table = []
    for line in lines[start + 2:]:  # skip the header and its --- row
        if not line.startswith("|"):
            break
        table.append([c.strip() for c in line.strip("|").split("|")])
    return table


def vocabulary(heading: str) -> dict[str, str]:
    """First column (a `code` name) -> second column, for the guide's register and category tables."""
    return {cells[0].strip("`"): cells[1] for cells in guide_table(heading)}


REGISTERS = vocabulary("**Registers**")
CATEGORIES = vocabulary("**Categories**")


def hash_split(row_id: str) -> str:
    return "heldout" if int(hashlib.sha256(row_id.encode()).hexdigest()[:8], 16) % 100 < 30 else "dev"


def frozen(name: str, folder: str = "data") -> tuple[int, str]:
    m = re.search(rf"`{folder}/{re.escape(name)}`: frozen on [\d-]+, file sha256 `[0-9a-f]{{64}}`; (\d+) held-out rows, "
                  r"held-out sha256 `([0-9a-f]{64})`", SCREEN_DOC)
    assert m, f"docs/CRISIS_SCREEN.md records no freeze for {name}"
    return int(m.group(1)), m.group(2)


def heldout_sha256(path: Path) -> tuple[int, str]:
    lines = [line for line in path.read_bytes().split(b"\n") if line]
    held = [line for line in lines if json.loads(line)["split"] == "heldout"]
    return len(held), hashlib.sha256(b"".join(line + b"\n" for line in held)).hexdigest()


# ------------------------------------------------------------------------------------ the guide itself


def test_guide_vocabulary_is_read():
    assert {"teen", "older_adult", "slang", "non_native", "long_narrative"} <= set(REGISTERS)
    assert {"passive_wish", "self_harm_urge", "idiom", "kicked_out", "everyday"} <= set(CATEGORIES)
    for name, tier in CATEGORIES.items():
        assert set(tier.replace("(trap)", "").replace("(concern)", "").replace(" or ", " ").split()) <= set(TIERS), \
            (name, tier)
    concerns = {name for name, tier in CATEGORIES.items() if "(concern)" in tier}
    assert concerns == CONCERN_CATEGORIES - {"other"}  # "other": crisis_labelled.jsonl's name for other_at_risk


# ------------------------------------------------------------------------------- crisis_messages.jsonl


@pytest.fixture(scope="module")
def messages() -> list[dict]:
    return rows(MESSAGES)


def test_messages_fields_and_vocabulary(messages):
    for r in messages:
        assert set(r) == {"id", "text", "tier", "register", "category", "trap", "split", "note"}, r["id"]
        assert r["tier"] in TIERS, r["id"]
        assert r["register"] in REGISTERS, r["id"]
        assert r["category"] in CATEGORIES, r["id"]
        assert r["tier"] in CATEGORIES[r["category"]], (r["id"], r["category"], r["tier"])
        assert isinstance(r["trap"], bool) and (not r["trap"] or r["tier"] == "none"), r["id"]
        assert ("(trap)" in CATEGORIES[r["category"]]) == r["trap"], (r["id"], r["category"])
        assert r["split"] == hash_split(r["id"]), r["id"]
        assert r["text"].strip() and r["note"].strip(), r["id"]


def test_messages_size_balance_and_spread(messages):
    assert len({r["id"] for r in messages}) == len(messages)
    assert len({r["text"] for r in messages}) == len(messages)
    assert len(messages) >= 600
    assert sum(r["trap"] for r in messages) >= 150
    risk = sum(r["tier"] != "none" for r in messages) / len(messages)
    assert 0.40 <= risk <= 0.50, risk  # the labelling guide's balance: ~45% risk, ~55% none
    assert set(Counter(r["register"] for r in messages)) == set(REGISTERS)
    assert all(n >= 40 for n in Counter(r["register"] for r in messages).values())
    longs = [len(r["text"]) for r in messages if r["register"] == "long_narrative"]
    assert len(longs) >= 40 and all(600 <= n <= 1000 for n in longs)
    assert sum(100 <= len(r["text"]) <= 1000 for r in messages) / len(messages) >= 0.9


def test_messages_heldout_is_frozen():
    n, digest = frozen(MESSAGES.name)
    assert heldout_sha256(MESSAGES) == (n, digest), "a held-out row of crisis_messages.jsonl changed"


# ----------------------------------------------------------------------------------- cssrs_posts.jsonl


@pytest.fixture(scope="module")
def posts() -> list[dict]:
    return rows(POSTS)


def test_posts_fields_and_mapping(posts):
    severity_tier = {int(cells[0]): cells[2] for cells in guide_table("| severity |")}
    assert sorted(severity_tier) == list(range(7))
    assert len({r["id"] for r in posts}) == len(posts) >= 1000
    for r in posts:
        assert set(r) == {"id", "text", "severity", "tier", "split", "source"}, r["id"]
        assert re.fullmatch(r"cssrs-\d{4}", r["id"]), r["id"]
        assert r["tier"] == severity_tier[r["severity"]], r["id"]
        assert r["split"] == hash_split(r["id"]), r["id"]
        assert "CC BY 4.0" in r["source"] and "2505.13480" in r["source"], r["id"]


def test_posts_carry_no_usernames_or_links(posts):
    user = re.compile(r"(?<![\w/])/?u/[A-Za-z0-9_-]{2,}")
    for r in posts:
        assert not user.search(r["text"]), r["id"]
        assert not re.search(r"https?://|www\.|reddit\.com", r["text"], re.IGNORECASE), r["id"]
        assert "\r" not in r["text"], r["id"]


def test_posts_heldout_is_frozen():
    n, digest = frozen(POSTS.name)
    assert heldout_sha256(POSTS) == (n, digest), "a held-out row of cssrs_posts.jsonl changed"


def test_posts_licence_ships_next_to_the_data():
    notice = (DATA / "CSSRS_POSTS_LICENSE.md").read_text(encoding="utf-8")
    assert "CC BY 4.0" in notice and "2505.13480" in notice and "creativecommons.org/licenses/by/4.0" in notice


# ------------------------------------------------------------------ crisis_independent.jsonl, crisis_pairs.jsonl

INDEPENDENT = DATA / "crisis_independent.jsonl"
PAIRS = DATA / "crisis_pairs.jsonl"


def _category_fits(r: dict) -> None:
    assert r["tier"] in TIERS and r["category"] in CATEGORIES, r["id"]
    assert r["tier"] in CATEGORIES[r["category"]], (r["id"], r["category"], r["tier"])
    assert isinstance(r["trap"], bool) and (not r["trap"] or r["tier"] == "none"), r["id"]
    assert r["text"].strip() and r["note"].strip(), r["id"]


def test_independent_set_fields_split_and_balance():
    rows_ = rows(INDEPENDENT)
    assert len(rows_) == len({r["id"] for r in rows_}) == len({r["text"] for r in rows_}) == 520
    for r in rows_:
        assert set(r) == {"id", "text", "tier", "register", "category", "trap", "author", "split", "note"}, r["id"]
        _category_fits(r)
        h = int(hashlib.sha256(("independent:" + r["id"]).encode()).hexdigest()[:8], 16)
        assert r["split"] == ("heldout" if h % 2 == 0 else "dev"), r["id"]
    assert Counter(r["author"] for r in rows_) == {"A": 260, "B": 260}
    assert 0.30 <= sum(r["tier"] != "none" for r in rows_) / len(rows_) <= 0.40
    assert len({r["register"] for r in rows_}) >= 12 and sum(r["trap"] for r in rows_) >= 150


def test_independent_heldout_is_frozen():
    n, digest = frozen(INDEPENDENT.name)
    assert heldout_sha256(INDEPENDENT) == (n, digest), "a held-out row of crisis_independent.jsonl changed"


def test_minimal_pairs_tell_one_story_twice():
    rows_ = rows(PAIRS)
    by_pair: dict[str, list[dict]] = {}
    for r in rows_:
        assert set(r) == {"id", "pair", "text", "tier", "register", "category", "trap", "note"}, r["id"]
        _category_fits(r)
        by_pair.setdefault(r["pair"], []).append(r)
    assert len(by_pair) == 170
    for pair, (a, b) in ((k, sorted(v, key=lambda r: r["id"])) for k, v in by_pair.items()):
        assert (a["id"], b["id"]) == (pair + "a", pair + "b")
        assert a["tier"] != "none" and b["tier"] == "none", pair
        assert abs(len(a["text"]) - len(b["text"])) <= 0.2 * max(len(a["text"]), len(b["text"])), pair


INBOX = DATA / "crisis_inbox.jsonl"


def all_heldout_written_set(path: Path, size: int) -> list[dict]:
    """The rows of a written set that is held out whole: ``size`` distinct messages with the written sets' fields,
    every one held out, and the file still hashing to its recorded freeze."""
    rows_ = rows(path)
    assert len(rows_) == len({r["id"] for r in rows_}) == len({r["text"] for r in rows_}) == size
    for r in rows_:
        assert set(r) == {"id", "text", "tier", "register", "category", "trap", "author", "split", "note"}, r["id"]
        assert r["split"] == "heldout", r["id"]
        _category_fits(r)
    n, digest = frozen(path.name)
    assert heldout_sha256(path) == (n, digest), f"a row of {path.name} changed"
    return rows_


def test_inbox_set_is_all_heldout_and_frozen():
    rows_ = all_heldout_written_set(INBOX, 440)
    assert 0.20 <= sum(r["tier"] != "none" for r in rows_) / len(rows_) <= 0.30  # an inbox's mix, not a test's


def test_hard_cases_fields():
    rows_ = rows(DATA / "crisis_hard.jsonl")
    assert len(rows_) == len({r["id"] for r in rows_}) == len({r["text"] for r in rows_}) == 320
    for r in rows_:
        assert set(r) == {"id", "text", "tier", "register", "category", "trap", "note"}, r["id"]
        _category_fits(r)


COUNSELCHAT = DATA / "crisis_counselchat.jsonl"
FRESH = DATA / "crisis_fresh.jsonl"


def test_counselchat_set_is_real_doubly_labelled_and_frozen():
    rows_ = rows(COUNSELCHAT)
    assert len(rows_) == len({r["id"] for r in rows_}) == len({r["text"] for r in rows_}) == 830
    for r in rows_:
        assert set(r) == {"id", "text", "tier", "category", "split", "annotators", "note", "url"}, r["id"]
        assert r["tier"] in CATEGORIES[r["category"]] and all(t in TIERS for t in r["annotators"]), r["id"]
        assert r["url"].startswith("https://counselchat.com/questions/") or r["url"] == "", r["id"]
        # where the two annotators agreed, the label is theirs; a disagreement was adjudicated and says so
        assert r["tier"] == r["annotators"][0] == r["annotators"][1] or "adjudicated" in r["note"], r["id"]
        assert r["split"] == ("heldout" if int(hashlib.sha256(r["id"].encode()).hexdigest(), 16) % 2 == 0 else "dev")
    n, digest = frozen(COUNSELCHAT.name)
    assert heldout_sha256(COUNSELCHAT) == (n, digest), "a held-out row of crisis_counselchat.jsonl changed"


def test_fresh_set_is_all_heldout_and_frozen():
    rows_ = all_heldout_written_set(FRESH, 480)
    assert Counter(r["author"] for r in rows_) == {"wh": 240, "wi": 240}


def test_boundary_training_set_fields_and_contrast_pairs():
    rows_ = rows(DATA / "crisis_boundaries.jsonl")
    assert len(rows_) == len({r["id"] for r in rows_}) == len({r["text"] for r in rows_}) == 400
    by_id = {r["id"]: r for r in rows_}
    for r in rows_:
        assert set(r) == {"id", "text", "tier", "register", "category", "trap", "pair", "note"}, r["id"]
        _category_fits(r)
        if r["pair"]:  # a contrast pair: the same story once with risk and once without, pointing both ways
            other = by_id[r["pair"]]
            assert other["pair"] == r["id"] and (r["tier"] == "none") != (other["tier"] == "none"), r["id"]
    assert sum(bool(r["pair"]) for r in rows_) == 120


# Posts and forums per draw: the sixth has no r/suicidewatch or r/depression post left to draw, the seventh
# only everyday forums.
REDDIT_DRAWS = {"crisis_reddit.jsonl": (1060, 27), "crisis_reddit_2.jsonl": (1155, 27), "crisis_reddit_3.jsonl": (550, 27),
                "crisis_reddit_4.jsonl": (550, 27), "crisis_reddit_5.jsonl": (531, 27), "crisis_reddit_6.jsonl": (1002, 25),
                "crisis_reddit_7.jsonl": (220, 10), "crisis_reddit_8.jsonl": (160, 10),
                "crisis_reddit_9.jsonl": (160, 10), "crisis_reddit_10.jsonl": (160, 10),
                "crisis_reddit_11.jsonl": (144, 10), "crisis_reddit_12.jsonl": (108, 8),
                "crisis_reddit_13.jsonl": (40, 4)}


@pytest.mark.parametrize("name", REDDIT_DRAWS)
def test_reddit_set_is_real_doubly_labelled_and_frozen(name):
    reddit = DATA / name
    rows_ = rows(reddit)
    n_posts, n_forums = REDDIT_DRAWS[name]
    assert len(rows_) == len({r["id"] for r in rows_}) == len({r["text"] for r in rows_}) == n_posts
    user = re.compile(r"(?<![\w/])/?u/[A-Za-z0-9_-]{2,}")
    for r in rows_:
        assert set(r) == {"id", "text", "tier", "category", "split", "annotators", "note", "subreddit", "month"}, r["id"]
        assert r["tier"] in CATEGORIES[r["category"]] and all(t in TIERS for t in r["annotators"]), r["id"]
        assert r["tier"] == r["annotators"][0] == r["annotators"][1] or "adjudicated" in r["note"], r["id"]
        assert r["split"] == ("heldout" if int(hashlib.sha256(r["id"].encode()).hexdigest(), 16) % 2 else "dev")
        # The draw keeps posts of 80-2,000 characters as the source has them; trimming and masking links shortens some.
        assert re.fullmatch(r"20(18|19)-\d\d", r["month"]) and 0 < len(r["text"].strip()) <= 2000, r["id"]
        assert not user.search(r["text"]) and not re.search(r"https?://|www\.", r["text"]), r["id"]
    assert len(Counter(r["subreddit"] for r in rows_)) == n_forums
    n, digest = frozen(name)
    assert heldout_sha256(reddit) == (n, digest), f"a held-out row of {name} changed"
    notice = (DATA / "REDDIT_POSTS_LICENSE.md").read_text(encoding="utf-8")
    assert name in notice and "CC BY 4.0" in notice and "10.5281/zenodo.3941387" in notice and "make_reddit_posts.py" in notice


def test_rallypoint_set_is_real_doubly_labelled_and_frozen():
    path = DATA / "crisis_rallypoint.jsonl"
    rows_ = rows(path)
    assert len(rows_) == len({r["id"] for r in rows_}) == len({r["text"] for r in rows_}) == 610
    for r in rows_:
        assert set(r) == {"id", "text", "tier", "category", "split", "annotators", "note", "set", "mental_health"}, r["id"]
        assert r["tier"] in CATEGORIES[r["category"]] and all(t in TIERS for t in r["annotators"]), r["id"]
        assert r["tier"] == r["annotators"][0] == r["annotators"][1] or "adjudicated" in r["note"], r["id"]
        assert r["split"] == ("heldout" if int(hashlib.sha256(r["id"].encode()).hexdigest(), 16) % 2 else "dev")
        assert 0 < len(r["text"]) <= 2000 and not re.search(r"https?://|www\.", r["text"]), r["id"]
    # Every post the source marked as about mental health, and as many of its other posts.
    assert Counter(r["mental_health"] for r in rows_) == {0: 305, 1: 305}
    assert heldout_sha256(path) == frozen("crisis_rallypoint.jsonl"), "a held-out row of crisis_rallypoint changed"
    notice = (DATA / "RALLYPOINT_POSTS_LICENSE.md").read_text(encoding="utf-8")
    assert "construct-tracker" in notice and "Apache-2.0" in notice and "make_rallypoint_posts.py" in notice


# ------------------------------------------------------------------ linked sets: labels and hashes, no text

def _linked_posts_script():
    import importlib.util
    import sys

    sys.path.insert(0, str(ROOT / "scripts"))
    spec = importlib.util.spec_from_file_location("make_linked_posts", ROOT / "scripts" / "make_linked_posts.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_linked_posts_rebuild_checks_every_text_against_its_hash(tmp_path, monkeypatch, capsys):
    script = _linked_posts_script()
    source = tmp_path / "Suicide_Detection.csv"
    source.write_text(",text,class\n0,I can't stop thinking about ending it,suicide\n"
                      "1,Finally passed my driving test see https://x.example/y,non-suicide\n", encoding="utf-8")
    posts = script.sample("suicide_detection", source)
    assert [p["id"] for p in posts] == ["ksd-0001", "ksd-0002"]
    assert all("https://" not in p["text"] for p in posts)  # links masked before the text is hashed
    labels = tmp_path / "labels.jsonl"
    labels.write_text("".join(json.dumps({"id": p["id"], "sha256": script.text_hash(p["text"]), "tier": "none",
                                          "forum": p["forum"]}) + "\n" for p in posts), encoding="utf-8")
    out = tmp_path / "rebuilt.jsonl"
    script.rebuild(posts, labels, out)
    rebuilt = rows(out)
    assert [r["text"] for r in rebuilt] == [p["text"] for p in posts] and "sha256" not in rebuilt[0]
    posts[1]["text"] += " (edited)"
    with pytest.raises(SystemExit, match=r"labels.jsonl, line 2: ksd-0002's text .* differs"):
        script.rebuild(posts, labels, out)


def test_linked_posts_leave_out_a_post_labelled_from_another_copy(tmp_path, monkeypatch):
    script = _linked_posts_script()
    source = tmp_path / "Suicide_Detection.csv"
    source.write_text(",text,class\n0,I can't stop thinking about ending it and I have not slept properly for weeks now,suicide\n"
                      "1,Finally passed my driving test after three tries this year and my mum cried at the kerb,"
                      "non-suicide\n", encoding="utf-8")
    first = script.sample("suicide_detection", source)
    monkeypatch.setattr(script, "labels_path", lambda name: tmp_path / f"{name}.labels.jsonl")
    script.labels_path("suicide_detection").write_text(
        json.dumps({"id": first[0]["id"], "sha256": script.text_hash(first[0]["text"])}) + "\n", encoding="utf-8")
    second = script.sample("suicide_detection_2", source)  # another copy of the same set
    assert [p["text"] for p in second] == [first[1]["text"]] and second[0]["id"] == "ksd2-0001"


# Posts and forums per linked set (bench/data/LINKED_SETS.md).
LINKED = {"crisis_suicide_detection_2": (265, {"SuicideWatch", "teenagers"}), "crisis_twitter": (400, {"twitter"}),
          "crisis_twitter_2": (400, {"twitter"}),
          "crisis_sdcnl": (379, {"SuicideWatch", "depression"}), "crisis_sdcnl_2": (80, {"SuicideWatch", "depression"}),
          "crisis_sdcnl_3": (240, {"SuicideWatch", "depression"}), "crisis_sdcnl_4": (240, {"SuicideWatch", "depression"}),
          "crisis_sdcnl_5": (240, {"SuicideWatch", "depression"}), "crisis_sdcnl_6": (240, {"SuicideWatch", "depression"}),
          "crisis_sdcnl_7": (240, {"SuicideWatch", "depression"}), "crisis_sdcnl_8": (229, {"SuicideWatch", "depression"}),
          "crisis_suicide_detection": (237, {"SuicideWatch", "teenagers"})}


@pytest.mark.parametrize("name", LINKED)
def test_linked_set_is_doubly_labelled_textless_and_frozen(name):
    path = ROOT / "bench" / "data" / f"{name}.labels.jsonl"
    rows_ = rows(path)
    n_posts, forums = LINKED[name]
    assert len(rows_) == len({r["id"] for r in rows_}) == len({r["sha256"] for r in rows_}) == n_posts
    for r in rows_:
        assert set(r) == {"id", "sha256", "tier", "category", "split", "annotators", "note", "forum"}, r["id"]
        assert r["tier"] in CATEGORIES[r["category"]] and all(t in TIERS for t in r["annotators"]), r["id"]
        assert r["tier"] == r["annotators"][0] == r["annotators"][1] or "adjudicated" in r["note"], r["id"]
        assert r["split"] == ("heldout" if int(hashlib.sha256(r["id"].encode()).hexdigest(), 16) % 2 else "dev")
        assert r["forum"] in forums and re.fullmatch(r"[0-9a-f]{64}", r["sha256"]), r["id"]
    assert heldout_sha256(path) == frozen(path.name, "bench/data"), f"a held-out row of {name} changed"
    shipped = {hashlib.sha256(r["text"].encode()).hexdigest() for f in DATA.glob("crisis_*.jsonl") for r in rows(f)}
    assert not shipped & {r["sha256"] for r in rows_}, "a linked post repeats a shipped set's text"
    others = {r["sha256"] for other in LINKED if other != name
              for r in rows(ROOT / "bench" / "data" / f"{other}.labels.jsonl")}
    assert not others & {r["sha256"] for r in rows_}, "a linked post repeats another linked set's text"
    notice = (ROOT / "bench" / "data" / "LINKED_SETS.md").read_text(encoding="utf-8")
    assert name in notice and "make_linked_posts.py" in notice


@pytest.mark.parametrize("draw,n_posts", [(2, 220), (3, 200), (4, 200), (5, 200), (6, 200), (7, 200), (8, 200)])
def test_later_rallypoint_draws_are_doubly_labelled_unmarked_new_and_frozen(draw, n_posts):
    path = DATA / f"crisis_rallypoint_{draw}.jsonl"
    rows_ = rows(path)
    earlier = [DATA / "crisis_rallypoint.jsonl", *(DATA / f"crisis_rallypoint_{d}.jsonl" for d in range(2, draw))]
    seen = {r["text"] for f in earlier for r in rows(f)}
    assert len(rows_) == len({r["id"] for r in rows_}) == len({r["text"] for r in rows_} - seen) == n_posts
    for r in rows_:
        assert set(r) == {"id", "text", "tier", "category", "split", "annotators", "note", "set", "mental_health"}, r["id"]
        assert r["tier"] in CATEGORIES[r["category"]] and all(t in TIERS for t in r["annotators"]), r["id"]
        assert r["tier"] == r["annotators"][0] == r["annotators"][1] or "adjudicated" in r["note"], r["id"]
        assert r["mental_health"] == 0 and r["id"].startswith(f"rp{draw}-"), r["id"]
    assert heldout_sha256(path) == frozen(path.name), f"a held-out row of {path.name} changed"
    assert path.name in (DATA / "RALLYPOINT_POSTS_LICENSE.md").read_text(encoding="utf-8")
