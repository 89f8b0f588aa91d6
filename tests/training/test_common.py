import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from psychocounsel import PRINCIPLE_KEYS
from psychocounsel.errors import UserError
from psychocounsel.training.common import (
    chat,
    load_pairs_dataset,
    pair_files,
    write_manifest,
)


def published(path, n=3, split_name="train"):
    cols = {"ID": list(range(n)), "prefID": list(range(n)), "question": [f"q{i}" for i in range(n)],
            "chosen": ["good"] * n, "rejected": ["bad"] * n, "chosen_model": ["a"] * n, "rejected_model": ["b"] * n}
    for k in PRINCIPLE_KEYS:
        cols[f"chosen_{k}_rating"] = [5] * n
        cols[f"rejected_{k}_rating"] = [3] * n
    f = path / f"{split_name}-00000-of-00001.parquet"
    pq.write_table(pa.table(cols), f)
    return f


def test_published_schema_becomes_a_conversational_preference_dataset(tmp_path):
    published(tmp_path, 3, "train")
    published(tmp_path, 2, "test")
    ds = load_pairs_dataset(tmp_path)
    assert len(ds) == 5 and sorted(set(ds["split"])) == ["test", "train"]
    row = ds[0]
    assert row["prompt"] == chat(row["question"]) and row["chosen"] == [{"role": "assistant", "content": "good"}]
    assert row["margin"] == pytest.approx(2.0) and row["chosen_ratings"] == [5.0] * 7
    assert len(load_pairs_dataset(tmp_path, split="test")) == 2
    with pytest.raises(UserError, match="no pairs"):
        load_pairs_dataset(tmp_path, split="dev")


def test_pair_files_and_manifest(tmp_path):
    with pytest.raises(UserError, match="not found"):
        pair_files(tmp_path / "nope.parquet")
    with pytest.raises(UserError, match="no .parquet"):
        pair_files(tmp_path)
    f = published(tmp_path)
    m = json.loads(write_manifest(tmp_path / "out", recipe="x", config={"lr": 1}, data=[f],
                                  metrics={"acc": 1.0}).read_text())
    assert m["data_hash"] and m["versions"]["torch"] and m["config"] == {"lr": 1}
