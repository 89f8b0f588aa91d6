"""The run store: one SQLite database per run directory (WAL), and the cache of every model call.

Design:
- Everything a stage produces is keyed by content, so the plan can always be recomputed from the
  config and the store only answers "is this done?": a response is keyed by (speech, profile
  fingerprint), a judgment by (response, judge fingerprint), a call by a hash of everything that
  shapes its answer (``backends.base.cache_key``). Changing a profile's sampling makes new
  responses; changing nothing makes zero calls.
- The raw reply of every successful call is kept in ``calls``, so a parser can be rerun for free.
- Writes are batched (``Writer``): one transaction per ~0.2 s or 500 rows, committed on a thread
  of its own, keeps the store at a few microseconds per row and off the event loop. A kill -9 loses
  what was answered in the last ``max_age_s`` (0.2 s) plus one or two commits (~10-30 ms), at most
  the two newest batches (1,000 rows); those calls are made again on resume. Nothing committed is
  ever paid for twice.
- Schema changes are numbered migrations tracked in ``PRAGMA user_version`` (as simonw/llm does).
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
from concurrent.futures import Future, ThreadPoolExecutor
from itertools import chain
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, NamedTuple


# -- typed rows ------------------------------------------------------------------------------
# Rows cross the store as NamedTuples: a stage reads ``row.text``, not ``row[2]``, and sqlite3 takes
# them as the plain tuples they also are. ``*Row`` types are whole rows in column order (what the
# Writer inserts); ``Stored*`` types are what a reader selects.


class SpeechRow(NamedTuple):
    id: str
    seq: int
    text: str
    source: str
    topic: str | None
    meta: str  # JSON object
    split: str | None


class StoredSpeech(NamedTuple):
    id: str
    seq: int
    text: str
    topic: str | None
    split: str | None


class CallRow(NamedTuple):
    key: str
    backend: str
    model: str
    request: str  # runner.request_summary: the varying part of the request, the rest as a hash
    text: str | None
    raw: str | None
    prompt_tokens: int | None
    completion_tokens: int | None
    latency_s: float | None
    created_at: float


class StoredCall(NamedTuple):
    text: str | None
    raw: str | None
    prompt_tokens: int | None
    completion_tokens: int | None
    latency_s: float | None


class ResponseRow(NamedTuple):
    id: str
    speech_id: str
    profile: str
    model: str
    fingerprint: str
    status: str  # ok | failed
    text: str | None
    error: str | None
    prompt_tokens: int | None
    completion_tokens: int | None
    latency_s: float | None
    call_key: str | None
    provenance: str  # JSON object
    updated_at: float


class StoredResponse(NamedTuple):
    status: str
    text: str | None
    model: str
    profile: str


class JudgmentRow(NamedTuple):
    response_id: str
    judge: str
    status: str  # ok | failed
    scores: str | None  # JSON object: principle key -> score
    rationale: str
    overall: float | None
    error: str | None
    attempts: int
    call_keys: str  # JSON list
    updated_at: float


class StoredJudgment(NamedTuple):
    status: str
    scores: dict[str, float] | None
    overall: float | None
    rationale: str | None
    error: str | None


class PairRow(NamedTuple):
    chosen_id: str
    rejected_id: str
    speech_id: str
    split: str
    gap: float
    plan: str


MIGRATIONS: list[str] = [
    # 1: initial schema
    """
    CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
    CREATE TABLE speeches (
        id TEXT PRIMARY KEY, seq INTEGER NOT NULL, text TEXT NOT NULL, source TEXT,
        topic TEXT, meta TEXT, split TEXT
    );
    CREATE INDEX speeches_seq ON speeches(seq);
    CREATE TABLE calls (
        key TEXT PRIMARY KEY, backend TEXT NOT NULL, model TEXT NOT NULL, request TEXT NOT NULL,
        text TEXT, raw TEXT, prompt_tokens INTEGER, completion_tokens INTEGER, latency_s REAL,
        created_at REAL NOT NULL
    );
    CREATE TABLE responses (
        id TEXT PRIMARY KEY, speech_id TEXT NOT NULL, profile TEXT NOT NULL, model TEXT NOT NULL,
        fingerprint TEXT NOT NULL, status TEXT NOT NULL, text TEXT, error TEXT,
        prompt_tokens INTEGER, completion_tokens INTEGER, latency_s REAL, call_key TEXT,
        provenance TEXT, updated_at REAL NOT NULL
    );
    CREATE INDEX responses_speech ON responses(speech_id);
    CREATE TABLE judgments (
        response_id TEXT NOT NULL, judge TEXT NOT NULL, status TEXT NOT NULL, scores TEXT,
        rationale TEXT, overall REAL, error TEXT, attempts INTEGER NOT NULL, call_keys TEXT,
        updated_at REAL NOT NULL, PRIMARY KEY (response_id, judge)
    );
    CREATE TABLE pairs (
        chosen_id TEXT NOT NULL, rejected_id TEXT NOT NULL, speech_id TEXT NOT NULL,
        split TEXT NOT NULL, gap REAL NOT NULL, plan TEXT NOT NULL,
        PRIMARY KEY (plan, chosen_id, rejected_id)
    );
    """,
]


def connect(path: str | Path) -> sqlite3.Connection:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    con = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    con.execute("PRAGMA journal_mode=WAL")
    con.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL: durable across process crashes (kill -9)
    con.execute("PRAGMA busy_timeout=10000")
    version = con.execute("PRAGMA user_version").fetchone()[0]
    for i, sql in enumerate(MIGRATIONS[version:], start=version + 1):
        con.execute("BEGIN")
        _apply(con, sql)
        con.execute(f"PRAGMA user_version={i}")
        con.execute("COMMIT")
    return con


def _apply(con: sqlite3.Connection, sql: str) -> None:
    for stmt in sql.split(";"):
        if stmt.strip():
            con.execute(stmt)


class Store:
    """Typed access to one run's database. Not thread-safe: use it from the event-loop thread."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.con = connect(self.path)

    def close(self) -> None:
        self.con.close()

    # -- meta -------------------------------------------------------------------------------
    def get_meta(self, key: str) -> Any:
        row = self.con.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
        return json.loads(row[0]) if row else None

    def set_meta(self, key: str, value: Any) -> None:
        self.con.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, json.dumps(value)))

    # -- speeches ---------------------------------------------------------------------------
    def replace_speeches(self, rows: Iterable[SpeechRow], meta: Callable[[], dict[str, Any]] | None = None,
                         batch: int = 2000) -> int:
        """Replace the speech list, and set the meta keys ``meta()`` returns once every row is read (a report
        counted as the rows stream), in one transaction; returns how many speeches.

        All or nothing: an error while ``rows`` streams, or no row at all, leaves the store as it was (0 is
        returned for the latter). An ingest that kept no speech must not wipe the run it failed on, and its
        meta (the ingest key) must not mark the failure as done."""
        n = 0
        con = self.con
        con.execute("BEGIN IMMEDIATE")
        try:
            con.execute("DELETE FROM speeches")
            buf: list[tuple] = []
            for row in rows:
                buf.append(row)
                if len(buf) >= batch:
                    con.executemany("INSERT OR IGNORE INTO speeches VALUES (?,?,?,?,?,?,?)", buf)
                    n += len(buf)
                    buf.clear()
            con.executemany("INSERT OR IGNORE INTO speeches VALUES (?,?,?,?,?,?,?)", buf)
            n += len(buf)
            if n == 0:
                con.execute("ROLLBACK")
                return 0
            for key, value in (meta() if meta else {}).items():
                self.set_meta(key, value)
            con.execute("COMMIT")
        except BaseException:
            con.execute("ROLLBACK")
            raise
        return n

    def count_speeches(self) -> int:
        return self.con.execute("SELECT count(*) FROM speeches").fetchone()[0]

    def iter_speeches(self, chunk: int = 1000) -> Iterator[list[StoredSpeech]]:
        """Speeches in ingest order, in chunks (bounded memory for any run size)."""
        last = -1
        while True:
            rows = [StoredSpeech(*r) for r in self.con.execute(
                "SELECT id, seq, text, topic, split FROM speeches WHERE seq > ? ORDER BY seq LIMIT ?",
                (last, chunk),
            )]
            if not rows:
                return
            last = rows[-1].seq
            yield rows

    # -- calls cache ------------------------------------------------------------------------
    def get_call(self, key: str) -> StoredCall | None:
        row = self.con.execute(
            "SELECT text, raw, prompt_tokens, completion_tokens, latency_s FROM calls WHERE key=?", (key,)
        ).fetchone()
        return None if row is None else StoredCall(*row)

    def call_stats(self) -> dict[str, Any]:
        n, pt, ct = self.con.execute(
            "SELECT count(*), coalesce(sum(prompt_tokens),0), coalesce(sum(completion_tokens),0) FROM calls"
        ).fetchone()
        return {"calls": n, "prompt_tokens": pt, "completion_tokens": ct}

    # -- responses / judgments --------------------------------------------------------------
    def responses_by_id(self, ids: list[str]) -> dict[str, StoredResponse]:
        """id -> the stored response, for the given ids that have one."""
        out: dict[str, StoredResponse] = {}
        for i in range(0, len(ids), 900):  # SQLite's default bound on host parameters is 999
            part = ids[i : i + 900]
            q = f"SELECT id, status, text, model, profile FROM responses WHERE id IN ({','.join('?' * len(part))})"
            for row in self.con.execute(q, part):
                out[row[0]] = StoredResponse(*row[1:])
        return out

    def judgments_by_id(self, ids: list[str], judge: str) -> dict[str, StoredJudgment]:
        """response_id -> its judgment by ``judge`` (scores decoded), for the given ids that have one."""
        out: dict[str, StoredJudgment] = {}
        for i in range(0, len(ids), 900):
            part = ids[i : i + 900]
            q = (
                "SELECT response_id, status, scores, overall, rationale, error FROM judgments "
                f"WHERE judge=? AND response_id IN ({','.join('?' * len(part))})"
            )
            for row in self.con.execute(q, [judge, *part]):
                out[row[0]] = StoredJudgment(row[1], json.loads(row[2]) if row[2] else None, row[3], row[4], row[5])
        return out


class Writer:
    """Batches inserts into few transactions, committed on a thread of its own.

    Why a thread: at 256 calls in flight, commits (and WAL checkpoints) on the event loop took up to 15% of
    its time, and SQLite does that work with the GIL released. Rows gather in ``buf``; every ``max_rows``
    rows or ``max_age_s`` seconds the whole buffer goes to one commit thread, which writes it in one
    transaction on its own connection (WAL: the store's connection keeps reading meanwhile). Batches
    commit in order, tables in ``SQL`` order (calls first: a response row never exists without its call).

    What a crash can lose: one batch commits while the next fills, and a buffer that reaches ``max_rows``
    while the batch before it still commits waits for that commit. A row is handed over at most
    ``max_age_s`` after it was added, also when no row follows (a timer on the event loop), and is
    committed once the batch before it and its own are (each ~5-15 ms at 500 rows). A crash or SIGKILL
    therefore loses the answers of the last ``max_age_s`` + two commits, and never more than two batches,
    2 x ``max_rows`` rows (1,000 by default: ~500 calls, each with its response or judgment row); those
    calls are made again on resume. A committed row is never lost nor paid twice.

    Reading your own writes: ``buffered_call`` finds calls in both batches (the cache lookup asks it before
    the store). ``commit()`` hands over what is left and returns once everything is committed and the
    thread has stopped, so every reader sees it: each stage calls it before anything reads what it wrote.
    An error on the commit thread is raised by the next ``add`` or ``commit``.
    """

    SQL = {
        "calls": "INSERT OR REPLACE INTO calls VALUES (?,?,?,?,?,?,?,?,?,?)",
        "responses": "INSERT OR REPLACE INTO responses VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
        "judgments": "INSERT OR REPLACE INTO judgments VALUES (?,?,?,?,?,?,?,?,?,?)",
        "pairs": "INSERT OR REPLACE INTO pairs VALUES (?,?,?,?,?,?)",
    }

    def __init__(self, store: Store, max_rows: int = 500, max_age_s: float = 0.2):
        self.store, self.max_rows, self.max_age_s = store, max_rows, max_age_s
        self.buf: dict[str, list[tuple]] = {k: [] for k in self.SQL}
        self.pending = 0
        self.last = time.monotonic()
        self.calls: dict[str, CallRow] = {}  # key -> buffered calls row, so a lookup sees uncommitted answers
        self.committing: dict[str, CallRow] = {}  # the same for the batch on the commit thread
        self._batch: Future | None = None  # the batch on the commit thread
        self._pool: ThreadPoolExecutor | None = None
        self._con: sqlite3.Connection | None = None  # the commit thread's connection
        # the file the store has open, whatever the working directory is now; "" for an in-memory database,
        # which exists only on its own connection: then commit there, on the caller's thread
        self._file = store.con.execute("PRAGMA database_list").fetchone()[2]
        self._threaded = bool(self._file)
        self._timer: asyncio.TimerHandle | None = None  # the age flush when no row follows (``_arm``)

    def add(self, table: str, row: tuple) -> None:
        self.buf[table].append(row)
        self.pending += 1
        if self.pending >= self.max_rows or time.monotonic() - self.last >= self.max_age_s:
            self.flush()
        elif self._timer is None:
            self._arm(self.max_age_s)

    def _arm(self, delay: float) -> None:
        """Hand the buffer over after ``delay`` even if no row follows: the last answers before a long quiet
        spell (every worker waiting on a hung request) would otherwise wait in memory for the next row, and
        a kill meanwhile would pay for them again. Only on an event loop (the stages); a caller without one
        commits itself."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        self._timer = loop.call_later(delay, self._due)

    def _due(self) -> None:
        self._timer = None
        if self.pending:
            self.flush()
            if self.pending:  # the batch before still commits (milliseconds): look again soon
                self._arm(min(self.max_age_s, 0.01))

    def call(self, key: str, backend: str, model: str, request: str, completion: Any) -> None:
        c = completion
        row = CallRow(key, backend, model, request, c.text, c.raw, c.prompt_tokens, c.completion_tokens,
                      c.latency_s, time.time())
        self.calls[key] = row
        self.add("calls", row)

    def buffered_call(self, key: str) -> CallRow | None:
        """A call answered but perhaps not committed yet: buffered, or in the batch being committed."""
        return self.calls.get(key) or self.committing.get(key)

    def flush(self, wait: bool = False) -> None:
        """Hand the buffer to the commit thread. While the previous batch still commits, keep filling (or,
        at ``max_rows`` or with ``wait``, wait for it): at most one batch is ever in flight."""
        batch = self._batch
        if batch is not None:
            if not batch.done() and not wait and self.pending < self.max_rows:
                return
            self._batch = None
            self.committing = {}
            batch.result()  # waits if need be; raises the commit thread's error here
        self.last = time.monotonic()
        if not self.pending:
            return
        rows = {table: r for table, r in self.buf.items() if r}
        self.buf = {k: [] for k in self.SQL}
        self.pending = 0
        if not self._threaded:
            self.calls = {}
            _write_batch(self.store.con, self.SQL, rows)
            return
        self.committing, self.calls = self.calls, {}
        if self._pool is None:
            self._pool = ThreadPoolExecutor(1, thread_name_prefix="psychocounsel-writer")
        self._batch = self._pool.submit(self._commit_batch, rows)

    def commit(self) -> None:
        """Commit everything added so far and wait for it; then stop the commit thread (a later ``add``
        starts it again). On return, every connection to the store sees every row."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        try:
            self.flush(wait=True)
            self.flush(wait=True)  # the batch just handed over
        finally:
            if self._pool is not None:
                self._pool.submit(self._close_connection).result()
                self._pool.shutdown()
                self._pool = None

    def _commit_batch(self, rows: dict[str, list[tuple]]) -> None:
        if self._con is None:
            self._con = sqlite3.connect(self._file, isolation_level=None, check_same_thread=False)
            self._con.execute("PRAGMA synchronous=NORMAL")  # as ``connect``: durable across process crashes
            self._con.execute("PRAGMA busy_timeout=10000")
        _write_batch(self._con, self.SQL, rows)

    def _close_connection(self) -> None:
        if self._con is not None:
            self._con.close()
            self._con = None


# Rows per INSERT statement on the commit thread. sqlite3 lets go of the GIL for every statement it steps
# and must win it back from the busy event loop each time; 50 rows a statement halved a batch's time on the
# thread (judge rows at 256 in flight: 12 -> 7 ms for 500 rows). 50 x 14 columns stays far below SQLite's
# 32,766 parameters per statement.
ROWS_PER_INSERT = 50


def _write_batch(con: sqlite3.Connection, sql: dict[str, str], rows: dict[str, list[tuple]]) -> None:
    """One transaction, tables in ``sql`` order, rows in order (a later row replaces an earlier one)."""
    con.execute("BEGIN IMMEDIATE")  # take the write lock first: a waiting writer then just waits (busy_timeout)
    try:
        for table, statement in sql.items():
            batch = rows.get(table)
            if not batch:
                continue
            whole = len(batch) - len(batch) % ROWS_PER_INSERT
            if whole:
                values = statement[statement.rindex("("):]  # "(?,?,...)"
                many = statement + ("," + values) * (ROWS_PER_INSERT - 1)
                con.executemany(many, (tuple(chain.from_iterable(batch[i:i + ROWS_PER_INSERT]))
                                       for i in range(0, whole, ROWS_PER_INSERT)))
            if whole < len(batch):
                con.executemany(statement, batch[whole:])
        con.execute("COMMIT")
    except BaseException:
        con.execute("ROLLBACK")
        raise
