"""Pairs stage: which pairs, which split, what the files look like, and that they are read back."""

from __future__ import annotations

import json
import random
from collections import Counter

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from psychocounsel import PRINCIPLE_KEYS
from psychocounsel.dataset.pairs import build_pairs, pair_columns, pair_schema, split_of, split_sizes, write_pairs
from psychocounsel.dataset.pair_reader import load_pair_table, read_pairs
from psychocounsel.dataset.records import ScoredResponse, text_id
from psychocounsel.errors import InputError, UserError


def assign_splits(speech_ids, seed, dev_frac=0.1, test_frac=0.1):
    return {sid: split_of(sid, seed, dev_frac, test_frac) for sid in speech_ids}


EXPECTED_COLUMNS = [
    "question", "chosen", "rejected", "chosen_model", "rejected_model",
    "chosen_empathy_rating", "rejected_empathy_rating", "chosen_relevance_rating", "rejected_relevance_rating",
    "chosen_clarity_rating", "rejected_clarity_rating", "chosen_safety_rating", "rejected_safety_rating",
    "chosen_exploration_rating", "rejected_exploration_rating", "chosen_autonomy_rating",
    "rejected_autonomy_rating", "chosen_staging_rating", "rejected_staging_rating", "crisis_tier",
    "chosen_flags", "rejected_flags", "speech_id", "chosen_id", "rejected_id", "split", "chosen_score", "rejected_score",
]


def resp(rid: str, overall: float, speech: str = "s1", scores: dict | None = None) -> ScoredResponse:
    scores = scores if scores is not None else {p: overall for p in PRINCIPLE_KEYS}
    return ScoredResponse(rid, speech, f"model-{rid}", f"response {rid}", scores, overall)


def ids(pairs) -> list[tuple[str, str]]:
    return [(p.chosen.response_id, p.rejected.response_id) for p in pairs]


# ---------------------------------------------------------------- build_pairs

FOUR = [resp("a", 4.0), resp("b", 3.0), resp("c", 2.5), resp("d", 2.0)]


def test_train_pairs_gap_one_by_hand():
    # gaps: a-b 1.0, a-c 1.5, a-d 2.0, b-c 0.5, b-d 1.0, c-d 0.5 -> four reach 1.0 (1.0 itself counts)
    pairs = build_pairs("q", "s1", "train", FOUR, min_gap=1.0)
    assert ids(pairs) == [("a", "b"), ("a", "c"), ("a", "d"), ("b", "d")]
    assert [p.gap for p in pairs] == [1.0, 1.5, 2.0, 1.0]
    assert all(p.split == "train" and p.question == "q" and p.speech_id == "s1" for p in pairs)


def test_train_pairs_gap_half_keeps_all_six():
    assert ids(build_pairs("q", "s1", "train", FOUR, min_gap=0.5)) == [
        ("a", "b"), ("a", "c"), ("a", "d"), ("b", "c"), ("b", "d"), ("c", "d")]


def test_ties_are_never_pairs_even_at_gap_zero():
    rs = [resp("a", 4.0), resp("b", 4.0), resp("c", 3.0), resp("d", 3.0)]
    assert ids(build_pairs("q", "s1", "train", rs, min_gap=0.0)) == [("a", "c"), ("a", "d"), ("b", "c"), ("b", "d")]
    assert build_pairs("q", "s1", "test", [resp("a", 3.0), resp("b", 3.0)], min_gap=0.0) == []


def test_gap_of_one_survives_float_rounding_of_the_mean():
    hi, lo = sum([2, 2, 2, 2, 2, 2, 4]) / 7, sum([1, 1, 1, 1, 1, 1, 3]) / 7
    assert hi - lo < 1.0  # 0.9999999999999998: the case the epsilon is for
    assert ids(build_pairs("q", "s1", "train", [resp("x", hi), resp("y", lo)])) == [("x", "y")]


def test_test_split_is_best_vs_worst_only():
    pairs = build_pairs("q", "s1", "test", FOUR, min_gap=1.0)
    assert ids(pairs) == [("a", "d")] and pairs[0].gap == 2.0 and pairs[0].split == "test"
    # best-worst gap under min_gap: no test pair for this speech
    assert build_pairs("q", "s1", "test", [resp("a", 3.5), resp("b", 3.0), resp("c", 2.75)]) == []
    assert ids(build_pairs("q", "s1", "test", [resp("a", 3.5), resp("b", 3.0)], min_gap=0.5)) == [("a", "b")]
    assert build_pairs("q", "s1", "test", [resp("a", 5.0)]) == []


def test_dev_gets_train_style_pairs():
    assert ids(build_pairs("q", "s1", "dev", FOUR)) == ids(build_pairs("q", "s1", "train", FOUR))


def test_order_does_not_depend_on_input_order():
    rs = FOUR + [resp("e", 4.0)]  # e ties a: rank order falls back to response_id
    expected = ids(build_pairs("q", "s1", "train", rs))
    for seed in range(5):
        shuffled = rs[:]
        random.Random(seed).shuffle(shuffled)
        assert ids(build_pairs("q", "s1", "train", shuffled)) == expected
    assert expected[:4] == [("a", "b"), ("a", "c"), ("a", "d"), ("e", "b")]


@pytest.mark.parametrize("bad", [
    [resp("a", 4.0), resp("b", 3.0, speech="s2")],
    [resp("a", 4.0), resp("a", 3.0)],
    [resp("a", float("nan")), resp("b", 3.0)],
])
def test_bad_responses_raise(bad):
    with pytest.raises(ValueError):
        build_pairs("q", "s1", "train", bad)


def test_bad_split_raises():
    with pytest.raises(ValueError, match="split"):
        build_pairs("q", "s1", "validation", FOUR)


# ---------------------------------------------------------------- splits

def test_split_of_is_deterministic_and_near_the_fractions():
    sids = [text_id(f"speech {i}") for i in range(10_000)]
    first = assign_splits(sids, seed=0)
    assert assign_splits(sids, seed=0) == first
    sizes = split_sizes(sids, seed=0)
    assert sum(sizes.values()) == 10_000
    # binomial sd at p=0.1, n=10k is 30 speeches; 150 is 5 sd
    assert abs(sizes["dev"] - 1000) < 150 and abs(sizes["test"] - 1000) < 150
    other = assign_splits(sids, seed=1)
    assert sum(first[s] != other[s] for s in sids) > 1000  # the seed matters


def test_split_is_stable_when_speeches_are_added_and_dev_changes():
    sids = [f"s{i}" for i in range(2000)]
    small = assign_splits(sids[:500], seed=7)
    big = assign_splits(sids, seed=7)
    assert all(big[s] == small[s] for s in small)
    no_dev = assign_splits(sids, seed=7, dev_frac=0.0)
    assert {s for s in sids if big[s] == "test"} == {s for s in sids if no_dev[s] == "test"}
    assert "dev" not in no_dev.values()


def test_bad_fractions_are_user_errors():
    with pytest.raises(UserError, match="dev_frac"):
        split_of("s", 0, dev_frac=0.6, test_frac=0.5)


# ---------------------------------------------------------------- files

def make_pairs(integral: bool = True) -> list:
    """Speech s1 (train, 4 pairs) and s2 (test, 1 pair), each rating its own value."""
    def r(rid, speech, vals):
        scores = dict(zip(PRINCIPLE_KEYS, vals))
        return ScoredResponse(rid, speech, f"m-{rid}", f"text of {rid}", scores, sum(vals) / len(vals))
    frac = 0.0 if integral else 0.12345
    s1 = [r("a", "s1", [5, 5, 4, 5, 4, 5, 4]), r("b", "s1", [4, 4, 3, 4, 3, 4, 3]),
          r("c", "s1", [3 + frac, 4, 3, 3, 3, 3, 3]), r("d", "s1", [3, 3, 2, 3, 2, 3, 2])]
    s2 = [r("e", "s2", [5, 5, 5, 5, 5, 5, 5]), r("f", "s2", [2, 2, 2, 2, 2, 2, 2])]
    return build_pairs("question one", "s1", "train", s1) + build_pairs("question two", "s2", "test", s2)


def test_schema_columns_and_dtypes_exactly(tmp_path):
    out = write_pairs(make_pairs(), tmp_path / "pairs")
    assert list(out) == ["train", "test"]
    assert out["train"] == [tmp_path / "pairs" / "train.parquet", tmp_path / "pairs" / "train.jsonl",
                            tmp_path / "pairs-trl" / "train.parquet", tmp_path / "pairs-trl" / "train.jsonl"]
    schema = pq.read_schema(tmp_path / "pairs" / "train.parquet")
    assert schema.names == EXPECTED_COLUMNS == pair_columns()
    assert schema.equals(pair_schema(integer_ratings=True))
    assert all(schema.field(c).type == pa.int64() for c in EXPECTED_COLUMNS if c.endswith("_rating"))
    assert schema.field("chosen_score").type == pa.float64() and schema.field("question").type == pa.string()
    assert schema.field("crisis_tier").type == pa.string()
    assert schema.field("chosen_flags").type == pa.list_(pa.string())
    line = json.loads((tmp_path / "pairs" / "train.jsonl").read_text().splitlines()[0])
    assert list(line) == EXPECTED_COLUMNS
    assert line["chosen_empathy_rating"] == 5 and isinstance(line["chosen_empathy_rating"], int)
    assert pq.read_table(tmp_path / "pairs" / "train.parquet").num_rows == 4
    assert pq.read_table(tmp_path / "pairs" / "test.parquet")["chosen_id"].to_pylist() == ["e"]


def test_float_ratings_are_rounded_to_three_decimals(tmp_path):
    write_pairs(make_pairs(integral=False), tmp_path, formats=["parquet"], trl_format=None)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["test.parquet", "train.parquet"]
    t = pq.read_table(tmp_path / "train.parquet")
    assert t.schema.field("chosen_empathy_rating").type == pa.float64()
    assert 3.123 in t["rejected_empathy_rating"].to_pylist()  # c's 3.12345


def test_forced_int_ratings_reject_fractions(tmp_path):
    with pytest.raises(UserError, match="ratings='int'"):
        write_pairs(make_pairs(integral=False), tmp_path / "pairs", ratings="int")
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == []


def test_roundtrip_parquet_and_jsonl(tmp_path):
    pairs = make_pairs()
    write_pairs(pairs, tmp_path)
    rows_pq = list(read_pairs(tmp_path / "train.parquet"))
    rows_js = list(read_pairs(tmp_path / "train.jsonl"))
    assert rows_pq == rows_js
    assert [(r["chosen_id"], r["rejected_id"]) for r in rows_pq] == ids(pairs[:4])
    first = rows_pq[0]
    assert first["question"] == "question one" and first["chosen"] == "text of a" and first["split"] == "train"
    assert first["chosen_safety_rating"] == 5.0 and first["rejected_score"] == pytest.approx(25 / 7)
    assert first["crisis_tier"] == "none"
    t = load_pair_table(tmp_path / "test.jsonl")
    assert t.column_names == EXPECTED_COLUMNS and t.num_rows == 1


def test_trl_files_have_the_documented_shapes_and_load_with_datasets(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    import datasets

    write_pairs(make_pairs(), tmp_path / "pairs")
    cache = str(tmp_path / "cache")
    for fmt, builder in (("parquet", "parquet"), ("jsonl", "json")):
        trl = datasets.load_dataset(builder, data_files=str(tmp_path / "pairs-trl" / f"train.{fmt}"),
                                    split="train", cache_dir=cache)
        assert trl.column_names == ["prompt", "chosen", "rejected"]
        assert trl[0]["prompt"] == [{"role": "user", "content": "question one"}]
        assert trl[0]["chosen"] == [{"role": "assistant", "content": "text of a"}]
        assert trl[0]["rejected"] == [{"role": "assistant", "content": "text of b"}]
        main = datasets.load_dataset(builder, data_files=str(tmp_path / "pairs" / f"train.{fmt}"), split="train",
                                     cache_dir=cache)
        assert main.column_names == EXPECTED_COLUMNS and main.num_rows == 4


def test_the_pairs_folder_loads_as_one_dataset_and_old_trl_files_inside_it_are_removed(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    import datasets

    old = tmp_path / "pairs" / "trl"
    old.mkdir(parents=True)
    (old / "train.jsonl").write_text('{"prompt": "q", "chosen": "a", "rejected": "b"}\n')  # an earlier layout
    write_pairs(make_pairs(), tmp_path / "pairs")
    assert not old.exists()
    ds = datasets.load_dataset(str(tmp_path / "pairs"), cache_dir=str(tmp_path / "cache"))
    assert {s: ds[s].num_rows for s in ds} == {"train": 4, "test": 1}
    assert ds["train"].column_names == EXPECTED_COLUMNS


def test_standard_trl_format(tmp_path):
    write_pairs(make_pairs(), tmp_path / "pairs", formats=["jsonl"], trl_format="standard")
    row = json.loads((tmp_path / "pairs-trl" / "test.jsonl").read_text())
    assert row == {"prompt": "question two", "chosen": "text of e", "rejected": "text of f"}


def test_atomic_write_leaves_nothing_on_failure(tmp_path):
    write_pairs(make_pairs()[:1], tmp_path / "pairs")  # an earlier run: train only
    before = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}

    def exploding():
        yield from make_pairs()  # 5 pairs: with batch_size=2 two batches were flushed to disk
        raise RuntimeError("judge store went away")

    with pytest.raises(RuntimeError, match="went away"):
        write_pairs(exploding(), tmp_path / "pairs", batch_size=2)
    after = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    assert after == before  # old files intact, no temp files, no test split


def test_stale_split_files_are_removed(tmp_path):
    write_pairs(make_pairs(), tmp_path / "pairs")
    assert (tmp_path / "pairs" / "test.parquet").exists()
    write_pairs(make_pairs()[:4], tmp_path / "pairs")  # train only this time
    assert not (tmp_path / "pairs" / "test.parquet").exists() and not (tmp_path / "pairs-trl" / "test.jsonl").exists()
    assert (tmp_path / "pairs" / "train.parquet").exists()


# ---------------------------------------------------------------- safety veto and crisis tier

def safe(rid: str, overall: float, safety: float) -> ScoredResponse:
    return resp(rid, overall, scores={**{p: overall for p in PRINCIPLE_KEYS}, "safety": safety})


def test_a_response_at_or_below_the_safety_floor_is_never_chosen():
    rs = [safe("a", 4.5, 2.0), safe("b", 3.4, 4.0), safe("c", 2.0, 3.0)]
    vetoed = Counter()
    pairs = build_pairs("q", "s1", "train", rs, safety_floor=2.0, vetoed=vetoed)
    assert ids(pairs) == [("b", "c")]  # a (safety 2) would win both its pairs
    assert vetoed == {"unsafe_chosen": 2}
    assert ids(build_pairs("q", "s1", "train", rs)) == [("a", "b"), ("a", "c"), ("b", "c")]  # no veto asked


def test_a_pair_whose_chosen_side_is_less_safe_by_the_margin_is_dropped():
    rs = [safe("a", 4.5, 3.0), safe("b", 3.0, 4.0), safe("c", 2.0, 3.5)]
    vetoed = Counter()
    pairs = build_pairs("q", "s1", "train", rs, safety_floor=2.0, safety_margin=1.0, vetoed=vetoed)
    # a-b: a is 1.0 less safe (dropped); a-c: 0.5 less safe (kept); b-c: b is safer (kept)
    assert ids(pairs) == [("a", "c"), ("b", "c")] and vetoed == {"less_safe": 1}


def test_a_vetoed_test_pair_leaves_the_speech_without_a_pair():
    rs = [safe("a", 4.5, 1.0), safe("b", 3.0, 4.0), safe("c", 2.0, 3.0)]
    vetoed = Counter()
    assert build_pairs("q", "s1", "test", rs, safety_floor=2.0, vetoed=vetoed) == [] and vetoed == {"unsafe_chosen": 1}


def test_the_veto_reads_the_calibrated_safety_when_calibration_orders_the_run():
    # a weak judge's raw safety bunches near 2 (here a: 1.9, under the floor); calibrated, it spreads out
    a, b = safe("a", 4.0, 1.9), safe("b", 2.0, 1.8)
    assert build_pairs("q", "s1", "train", [a, b], safety_floor=2.0) == []
    a.safety, b.safety = 4.0, 2.0
    assert ids(build_pairs("q", "s1", "train", [a, b], safety_floor=2.0, safety_margin=1.0)) == [("a", "b")]
    a.safety = 1.5  # relatively unsafe in this run: never chosen
    assert build_pairs("q", "s1", "train", [a, b], safety_floor=2.0) == []


def test_the_veto_needs_a_safety_score():
    rs = [resp("a", 4.0, scores={"empathy": 4.0}), resp("b", 2.0, scores={"empathy": 2.0})]
    with pytest.raises(ValueError, match="no safety score"):
        build_pairs("q", "s1", "train", rs, safety_floor=2.0)


def test_pairs_carry_the_crisis_tier_of_their_question():
    risky = "I have pills saved up and I plan to kill myself tonight. Nothing matters anymore."
    assert [p.crisis_tier for p in build_pairs(risky, "s1", "train", FOUR)] == ["high"] * 4
    assert {p.crisis_tier for p in build_pairs("I argue with my sister.", "s1", "train", FOUR)} == {"none"}


# ---------------------------------------------------------------- published schema

def published_table(n: int = 3) -> pa.Table:
    cols = {"ID": list(range(n)), "prefID": [f"p{i}" for i in range(n)],
            "question": [f"client speech {i}" for i in range(n)],
            "chosen": [f"good reply {i}" for i in range(n)], "rejected": [f"weak reply {i}" for i in range(n)],
            "chosen_model": ["gpt-4o"] * n, "rejected_model": ["llama-3b"] * n}
    for p in PRINCIPLE_KEYS:
        cols[f"chosen_{p}_rating"] = pa.array([5] * n, pa.int64())
        cols[f"rejected_{p}_rating"] = pa.array([2 + (p == "safety")] * n, pa.int64())
    return pa.table(cols)


def test_published_schema_imports(tmp_path):
    path = tmp_path / "train-00000-of-00001.parquet"
    pq.write_table(published_table(), path)
    t = load_pair_table(path)
    assert t.column_names == EXPECTED_COLUMNS + ["ID", "prefID"]
    assert t["crisis_tier"].to_pylist() == ["none"] * 3  # screened from the question
    assert t["chosen_flags"].to_pylist() == [None] * 3  # not computed on load: the stats report does it
    assert t["split"].to_pylist() == ["train"] * 3
    assert t["speech_id"][0].as_py() == text_id("client speech 0")
    assert t["chosen_id"][0].as_py() == text_id(text_id("client speech 0"), "gpt-4o")
    assert t["chosen_score"].to_pylist() == [5.0] * 3
    assert t["rejected_score"][0].as_py() == pytest.approx(15 / 7)  # six 2s and a safety 3
    assert t["chosen_empathy_rating"].type == pa.float64()
    row = next(read_pairs(path, split="test"))
    assert row["split"] == "test" and row["prefID"] == "p0"


@pytest.mark.parametrize("drop", ["rejected_model", "rejected_safety_rating", "question"])
def test_missing_column_is_one_line_naming_file_and_column(tmp_path, drop):
    path = tmp_path / "train.parquet"
    pq.write_table(published_table().drop_columns([drop]), path)
    with pytest.raises(InputError) as err:
        load_pair_table(path)
    msg = str(err.value)
    assert "\n" not in msg and str(path) in msg and repr(drop) in msg and "missing" in msg


def test_jsonl_errors_name_the_line(tmp_path):
    path = tmp_path / "pairs.jsonl"
    good = published_table(1).to_pylist()[0]
    bad = {k: v for k, v in good.items() if k != "chosen"}
    path.write_text(json.dumps(good) + "\n" + json.dumps(bad) + "\n")
    with pytest.raises(InputError, match=r"pairs\.jsonl:2 \(column 'chosen'\)"):
        load_pair_table(path)
    path.write_text(json.dumps(good) + "\n{not json\n")
    with pytest.raises(InputError, match=r"pairs\.jsonl:2: invalid JSON"):
        list(read_pairs(path))


def test_unknown_file_type(tmp_path):
    path = tmp_path / "pairs.csv"
    path.write_text("question,chosen\n")
    with pytest.raises(InputError, match="unknown pair file type"):
        load_pair_table(path)


# ---------------------------------------------------------------- reply-check flags

MEDICAL = "You should take 50mg of sertraline every morning; it will help."
DEAD_LINE = "Please call the Lifeline at 1-800-273-8255 tonight."


def texted(rid: str, overall: float, text: str) -> ScoredResponse:
    r = resp(rid, overall)
    r.text = text
    return r


def test_pairs_carry_each_sides_flag_kinds():
    rs = [texted("a", 4.5, "That sounds so hard. What feels heaviest?"), texted("b", 2.0, MEDICAL)]
    (pair,) = build_pairs("q", "s1", "train", rs)
    assert pair.chosen.flags == () and pair.rejected.flags == ("medical_advice",)


def test_the_flag_veto_drops_pairs_whose_chosen_side_is_flagged():
    rs = [texted("a", 4.5, MEDICAL), texted("b", 3.0, "I hear you."), texted("c", 2.0, DEAD_LINE)]
    vetoed = Counter()
    pairs = build_pairs("q", "s1", "train", rs, flag_veto=["medical_advice", "wrong_number"], vetoed=vetoed)
    # a (medical advice) would win a-b and a-c; b-c keeps its flagged rejected side: a flag there is the lesson
    assert ids(pairs) == [("b", "c")] and vetoed == {"flagged_chosen": 2}
    assert pairs[0].rejected.flags == ("wrong_number",)
    assert len(build_pairs("q", "s1", "train", rs, flag_veto=["promise"])) == 3  # only the kinds asked for


def test_flag_columns_are_written_and_read_back(tmp_path):
    rs = [texted("a", 4.5, "What would help tonight?"), texted("b", 2.0, MEDICAL)]
    write_pairs(build_pairs("q", "s1", "train", rs), tmp_path / "pairs")
    for fmt in ("parquet", "jsonl"):
        (row,) = read_pairs(tmp_path / "pairs" / f"train.{fmt}")
        assert row["chosen_flags"] == [] and row["rejected_flags"] == ["medical_advice"], fmt
    line = json.loads((tmp_path / "pairs" / "train.jsonl").read_text())
    assert line["rejected_flags"] == ["medical_advice"]
    assert pq.read_table(tmp_path / "pairs-trl" / "train.parquet").column_names == ["prompt", "chosen", "rejected"]


def test_a_flag_column_that_is_not_a_list_is_an_input_error(tmp_path):
    rs = [texted("a", 4.5, "What would help?"), texted("b", 2.0, MEDICAL)]
    write_pairs(build_pairs("q", "s1", "train", rs), tmp_path / "pairs", formats=["jsonl"], trl_format=None)
    path = tmp_path / "pairs" / "train.jsonl"
    row = json.loads(path.read_text())
    row["chosen_flags"] = "medical_advice"
    path.write_text(json.dumps(row) + "\n")
    with pytest.raises(InputError, match="chosen_flags"):
        load_pair_table(path)
