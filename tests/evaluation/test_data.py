"""The evaluation's inputs: the seeded speech sample and speeches from pair files."""

from fakes import SPEECHES

from psychocounsel import PRINCIPLE_KEYS
from psychocounsel.evaluation.config import EvalConfig
from psychocounsel.evaluation.data import load_speech_set, sample_ids


def config(speeches: dict) -> EvalConfig:
    return EvalConfig.model_validate({
        "name": "data", "speeches": speeches, "backends": {"fake": {"type": "local"}},
        "policy": {"name": "p", "backend": "fake", "model": "m"}, "reference": {"name": "r", "responses": "r.jsonl"},
        "pairwise": {"backend": "fake", "model": "m"}})


def test_sample_is_seeded_and_grows_stably():
    ids = [f"s{i}" for i in range(100)]
    assert sample_ids(ids, 10, 0) == sample_ids(list(reversed(ids)), 10, 0)
    assert sample_ids(ids, 20, 0)[:10] == sample_ids(ids, 10, 0)
    assert sample_ids(ids, 10, 1) != sample_ids(ids, 10, 0)


def test_speeches_from_the_published_parquet_test_split(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = []
    for i, q in enumerate(SPEECHES * 2):  # each question twice (train-style pairs repeat a speech)
        row = {"question": q, "chosen": "good", "rejected": "bad", "chosen_model": "m1", "rejected_model": "m2"}
        for p in PRINCIPLE_KEYS:
            row[f"chosen_{p}_rating"], row[f"rejected_{p}_rating"] = 5, 1
        rows.append(row)
    folder = tmp_path / "data"
    folder.mkdir()
    pq.write_table(pa.Table.from_pylist(rows[:8]), folder / "test-00000-of-00001.parquet")
    pq.write_table(pa.Table.from_pylist(rows[8:]), folder / "train-00000-of-00001.parquet")
    some = load_speech_set(config({"source": "pairs", "path": str(folder), "split": "test", "n": 4}), tmp_path)
    assert len(some) == 4 and {t for _, t in some} <= set(SPEECHES)
    every = load_speech_set(config({"source": "pairs", "path": str(folder), "split": None}), tmp_path)
    assert len(every) == len(SPEECHES)  # deduplicated across files and rows
