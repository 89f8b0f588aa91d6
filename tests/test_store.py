import signal
import sqlite3
import subprocess
import sys
import threading
import time

import pytest

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


def count_calls(path) -> int:
    with sqlite3.connect(path) as other:
        return other.execute("SELECT count(*) FROM calls").fetchone()[0]


def wait_for(predicate, timeout: float = 10.0) -> bool:
    end = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > end:
            return False
        time.sleep(0.005)
    return True


def writer_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("psychocounsel-writer")]


def add_calls(w: Writer, start: int, stop: int) -> None:
    for i in range(start, stop):
        w.call(f"k{i}", "b", "m", "{}", Completion(text=f"t{i}", raw="{}"))


def test_writer_commits_by_size_on_its_thread_and_on_demand(tmp_path):
    path = tmp_path / "run.sqlite"
    s = Store(path)
    w = Writer(s, max_rows=3, max_age_s=3600)
    add_calls(w, 0, 2)
    assert count_calls(path) == 0 and w.buffered_call("k1").text == "t1"  # still buffered
    add_calls(w, 2, 3)  # third row: the batch goes to the commit thread
    assert w.pending == 0 and w.buffered_call("k1").text == "t1"  # visible while it commits
    assert wait_for(lambda: count_calls(path) == 3)
    add_calls(w, 3, 4)
    w.commit()  # waits: on return the store's own connection reads everything
    assert s.get_call("k3")[0] == "t3" and count_calls(path) == 4
    assert w.buffered_call("k3") is None and not writer_threads()  # nothing left behind
    add_calls(w, 4, 5)
    w.commit()  # and it starts again
    assert count_calls(path) == 5


def test_writer_waits_rather_than_holding_more_than_two_batches(tmp_path):
    """The bound a crash can lose: one batch committing plus one full buffer; the next row waits."""
    path = tmp_path / "run.sqlite"
    s = Store(path)
    w = Writer(s, max_rows=3, max_age_s=3600)
    blocker = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    blocker.execute("BEGIN IMMEDIATE")  # another writer holds the lock: the commit thread must wait
    threading.Timer(0.3, lambda: blocker.execute("COMMIT")).start()
    t0 = time.monotonic()
    add_calls(w, 0, 5)  # one batch handed over (blocked), two rows buffered: nothing waits yet
    assert time.monotonic() - t0 < 0.25 and w.pending == 2
    add_calls(w, 5, 6)  # the buffer is full while the first batch still waits for the lock
    assert time.monotonic() - t0 >= 0.25
    w.commit()
    assert count_calls(path) == 6


def test_a_batch_is_written_in_order_so_the_last_row_of_a_key_wins(tmp_path):
    # 175 rows: three multi-row inserts of 50 and 25 single ones, repeated keys inside and across them
    s = Store(tmp_path / "run.sqlite")
    w = Writer(s, max_rows=1000, max_age_s=3600)
    for i in range(175):
        w.call(f"k{i % 70}", "b", "m", "{}", Completion(text=f"t{i}", raw="{}", prompt_tokens=i))
    w.commit()
    got = dict(s.con.execute("SELECT key, text FROM calls").fetchall())
    assert got == {f"k{k}": f"t{max(i for i in range(175) if i % 70 == k)}" for k in range(70)}
    assert s.get_call("k3")[2] == 143  # the other columns travel with their row


def test_a_failed_batch_is_raised_by_the_next_commit(tmp_path):
    s = Store(tmp_path / "run.sqlite")
    w = Writer(s, max_rows=2, max_age_s=3600)
    w.add("calls", ("k", None, "m", "{}", "t", "{}", 1, 1, 0.1, 0.0))  # backend is NOT NULL
    w.add("calls", ("k2", "b", "m", "{}", "t", "{}", 1, 1, 0.1, 0.0))
    with pytest.raises(sqlite3.IntegrityError):
        w.commit()
    assert count_calls(tmp_path / "run.sqlite") == 0  # the whole batch rolled back


def test_in_memory_store_commits_on_the_callers_thread():
    s = Store(":memory:")
    w = Writer(s, max_rows=2, max_age_s=3600)
    add_calls(w, 0, 3)
    assert s.con.execute("SELECT count(*) FROM calls").fetchone()[0] == 2
    w.commit()
    assert s.get_call("k2")[0] == "t2" and not writer_threads()


CHILD = """
import sys, time
from psychocounsel.backends.base import Completion
from psychocounsel.store import Store, Writer
w = Writer(Store(sys.argv[1]), max_rows=100, max_age_s=3600)
for i in range(1050):
    w.call(f"k{i}", "b", "m", "{}", Completion(text=f"t{i}", raw="{}"))
print("added", flush=True)
time.sleep(60)
"""


def test_sigkill_loses_at_most_two_batches(tmp_path):
    path = tmp_path / "run.sqlite"
    Store(path).close()
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(path)], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "added"
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    s = Store(path)  # the killed writer's WAL is recovered on open
    committed = s.con.execute("SELECT count(*) FROM calls").fetchone()[0]
    assert 1050 - 2 * 100 <= committed < 1050
    keys = [r[0] for r in s.con.execute("SELECT key FROM calls ORDER BY rowid")]
    assert keys == [f"k{i}" for i in range(committed)]  # whole batches, in order


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


def test_rows_cross_the_store_typed(tmp_path):
    from psychocounsel.store import (JudgmentRow, PairRow, ResponseRow, SpeechRow, StoredJudgment, StoredResponse,
                                     StoredSpeech)

    s = Store(tmp_path / "run.sqlite")
    s.replace_speeches([SpeechRow("s1", 0, "I feel stuck.", "f:1", "work", "{}", "train")])
    w = Writer(s)
    w.add("responses", ResponseRow("r1", "s1", "kind", "m1", "fp", "ok", "Tell me more.", None, 10, 4, 0.1, "k1",
                                   "{}", 1.0))
    w.add("judgments", JudgmentRow("r1", "judge", "ok", '{"empathy": 4}', "fine", 4.0, None, 1, '["k2"]', 1.0))
    w.add("pairs", PairRow("r1", "r2", "s1", "train", 1.5, "plan"))
    w.call("k1", "b", "m1", "{}", Completion(text="Tell me more.", raw="{}", prompt_tokens=10))
    w.commit()
    speech = next(s.iter_speeches())[0]
    assert isinstance(speech, StoredSpeech) and (speech.id, speech.text, speech.split) == ("s1", "I feel stuck.", "train")
    assert s.responses_by_id(["r1", "missing"]) == {"r1": StoredResponse("ok", "Tell me more.", "m1", "kind")}
    j = s.judgments_by_id(["r1"], "judge")["r1"]
    assert j == StoredJudgment("ok", {"empathy": 4}, 4.0, "fine", None) and j.scores == {"empathy": 4}
    assert s.get_call("k1").text == "Tell me more." and s.get_call("k1").prompt_tokens == 10
    assert s.con.execute("SELECT gap FROM pairs").fetchone()[0] == 1.5


def test_replacing_speeches_with_none_or_failing_midway_changes_nothing(tmp_path):
    s = Store(tmp_path / "run.sqlite")
    s.replace_speeches(iter([("a", 0, "t", "", None, "{}", "test")]), meta=lambda: {"ingest_key": "one"})

    def breaks():
        yield ("b", 0, "t", "", None, "{}", "test")
        raise ValueError("bad row")

    assert s.replace_speeches(iter([]), meta=lambda: {"ingest_key": "empty"}) == 0
    with pytest.raises(ValueError):
        s.replace_speeches(breaks(), meta=lambda: {"ingest_key": "broken"})
    assert [r.id for c in s.iter_speeches() for r in c] == ["a"] and s.get_meta("ingest_key") == "one"


def test_an_answer_is_committed_within_max_age_even_when_no_other_row_follows(tmp_path):
    # the last answers before a long wait (every worker on a hung request) must not sit in the buffer
    # until the next row: a kill during the wait would pay for them again
    import asyncio

    path = tmp_path / "run.sqlite"
    s = Store(path)
    w = Writer(s, max_rows=500, max_age_s=0.05)

    async def stage() -> tuple[int, int]:
        add_calls(w, 0, 1)
        await asyncio.sleep(0.06)
        add_calls(w, 1, 3)  # handed over with the first: it was due
        seen = []
        for _ in range(2):
            await asyncio.sleep(0.3)  # a long wait, no row added
            seen.append(count_calls(path))
        return seen[0], seen[1]

    assert asyncio.run(stage()) == (3, 3)
    w.commit()
    s.close()
