import sqlite3

from psychocounsel.backends.base import ChatRequest, Completion, Sampling, cache_key
from psychocounsel.store import MIGRATIONS, Store, Writer


def test_schema_migrates_once_and_uses_wal(tmp_path):
    s = Store(tmp_path / "run.sqlite")
    assert s.con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert s.con.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)
    s.set_meta("k", {"a": 1})
    s.close()
    s2 = Store(tmp_path / "run.sqlite")  # reopening applies nothing twice and keeps data
    assert s2.get_meta("k") == {"a": 1}


def test_speeches_replace_and_chunked_iteration(tmp_path):
    s = Store(tmp_path / "run.sqlite")
    rows = ((f"id{i}", i, f"text {i}", "f:1", None, "{}", "train") for i in range(2500))
    assert s.replace_speeches(rows, batch=1000) == 2500
    chunks = list(s.iter_speeches(chunk=1000))
    assert [len(c) for c in chunks] == [1000, 1000, 500]
    assert chunks[0][0][0] == "id0" and chunks[-1][-1][0] == "id2499"
    s.replace_speeches(iter([("x", 0, "t", "", None, "{}", "test")]))
    assert s.count_speeches() == 1


def test_writer_commits_by_size_and_on_demand(tmp_path):
    s = Store(tmp_path / "run.sqlite")
    w = Writer(s, max_rows=3, max_age_s=3600)
    for i in range(2):
        w.call(f"k{i}", "b", "m", "{}", Completion(text=f"t{i}", raw="{}"))
    other = sqlite3.connect(tmp_path / "run.sqlite")
    assert other.execute("SELECT count(*) FROM calls").fetchone()[0] == 0  # still buffered
    w.call("k2", "b", "m", "{}", Completion(text="t2", raw="{}"))  # third row: size-triggered commit
    assert other.execute("SELECT count(*) FROM calls").fetchone()[0] == 3
    assert s.get_call("k1")[0] == "t1"


def test_cache_key_covers_everything_that_shapes_an_answer():
    base = ChatRequest.chat("m", [{"role": "user", "content": "hi"}], sampling=Sampling(0.7), tag="p_v1")
    k = cache_key({"type": "x"}, base)
    variants = [
        ChatRequest.chat("m2", [{"role": "user", "content": "hi"}], sampling=Sampling(0.7), tag="p_v1"),
        ChatRequest.chat("m", [{"role": "user", "content": "hi!"}], sampling=Sampling(0.7), tag="p_v1"),
        ChatRequest.chat("m", [{"role": "user", "content": "hi"}], sampling=Sampling(0.8), tag="p_v1"),
        ChatRequest.chat("m", [{"role": "user", "content": "hi"}], sampling=Sampling(0.7, seed=1), tag="p_v1"),
        ChatRequest.chat("m", [{"role": "user", "content": "hi"}], sampling=Sampling(0.7), tag="p_v2"),
        ChatRequest.chat("m", [{"role": "user", "content": "hi"}], sampling=Sampling(0.7), tag="p_v1",
                         response_format={"type": "json_object"}),
    ]
    keys = {cache_key({"type": "x"}, v) for v in variants} | {cache_key({"type": "y"}, base)}
    assert k not in keys and len(keys) == len(variants) + 1
    assert cache_key({"type": "x"}, base) == k
