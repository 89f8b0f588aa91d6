"""Checks the shipped demo speeches keep the shape the pipeline and its reports rely on."""
import json
from collections import Counter
from pathlib import Path

import pytest

DEMO = Path(__file__).resolve().parents[2] / "psychocounsel" / "data" / "demo_speeches.jsonl"
ALLOWED_TOPICS = {
    "depression", "anxiety", "relationships", "family", "trauma", "self-esteem",
    "work_and_school", "grief_and_loss", "substance_use", "crisis",
}


@pytest.fixture(scope="module")
def rows() -> list[dict]:
    lines = DEMO.read_text(encoding="utf-8").splitlines()
    out = []
    for n, line in enumerate(lines, start=1):
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError as e:  # name the line so a broken edit is easy to find
            pytest.fail(f"{DEMO}:{n}: not JSON: {e}")
    return out


def test_enough_rows_with_unique_ids(rows):
    assert len(rows) >= 170
    ids = [r["id"] for r in rows]
    assert len(ids) == len(set(ids))


def test_fields_and_topics(rows):
    for r in rows:
        assert {"id", "topic", "subtopic", "text"} <= r.keys(), r.get("id")
        assert r["topic"] in ALLOWED_TOPICS, r["id"]
        assert r["subtopic"].strip(), r["id"]


def test_text_lengths_inside_ingest_window(rows):
    # 150-900 leaves margin inside ingest's 100-1,000 character keep window
    bad = [(r["id"], len(r["text"])) for r in rows if not 150 <= len(r["text"]) <= 900]
    assert not bad


def test_enough_crisis_rows(rows):
    assert Counter(r["topic"] for r in rows)["crisis"] >= 6


def test_planted_duplicates_point_at_real_rows(rows):
    by_id = {r["id"]: r for r in rows}
    notes = [r for r in rows if r.get("note", "").startswith(("near_dup_of", "exact_dup_of"))]
    assert notes
    for r in notes:
        kind, target = r["note"].split()
        assert target in by_id
        if kind == "exact_dup_of":
            assert r["text"] == by_id[target]["text"]
        else:
            assert r["text"] != by_id[target]["text"]
