"""The run store: one SQLite database per run directory (WAL), and the cache of every model call.

Design:
- Everything a stage produces is keyed by content, so the plan can always be recomputed from the
  config and the store only answers "is this done?": a response is keyed by (speech, profile
  fingerprint), a judgment by (response, judge fingerprint), a call by a hash of everything that
  shapes its answer (``backends.base.cache_key``). Changing a profile's sampling makes new
  responses; changing nothing makes zero calls.
- The raw reply of every successful call is kept in ``calls``, so a parser can be rerun for free.
- Writes are batched (``Writer``): one transaction per ~0.2 s or 500 rows keeps the store at a
  few microseconds per row. A kill -9 loses at most the last uncommitted batch, whose calls are
  then simply made again; nothing committed is ever paid for twice.
- Schema changes are numbered migrations tracked in ``PRAGMA user_version`` (as simonw/llm does).
"""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path
from typing import Any, Iterable, Iterator

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
    def replace_speeches(self, rows: Iterable[tuple], batch: int = 2000) -> int:
        """Replace the speech list in one transaction, streaming rows (id, seq, text, source, topic, meta, split)."""
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
            con.execute("COMMIT")
        except BaseException:
            con.execute("ROLLBACK")
            raise
        return n

    def count_speeches(self) -> int:
        return self.con.execute("SELECT count(*) FROM speeches").fetchone()[0]

    def iter_speeches(self, chunk: int = 1000) -> Iterator[list[sqlite3.Row]]:
        """Speeches in ingest order, in chunks (bounded memory for any run size)."""
        last = -1
        while True:
            rows = self.con.execute(
                "SELECT id, seq, text, topic, split FROM speeches WHERE seq > ? ORDER BY seq LIMIT ?",
                (last, chunk),
            ).fetchall()
            if not rows:
                return
            last = rows[-1][1]
            yield rows

    # -- calls cache ------------------------------------------------------------------------
    def get_call(self, key: str) -> sqlite3.Row | None:
        return self.con.execute(
            "SELECT text, raw, prompt_tokens, completion_tokens, latency_s FROM calls WHERE key=?", (key,)
        ).fetchone()

    def call_stats(self) -> dict[str, Any]:
        n, pt, ct = self.con.execute(
            "SELECT count(*), coalesce(sum(prompt_tokens),0), coalesce(sum(completion_tokens),0) FROM calls"
        ).fetchone()
        return {"calls": n, "prompt_tokens": pt, "completion_tokens": ct}

    # -- responses / judgments --------------------------------------------------------------
    def responses_by_id(self, ids: list[str]) -> dict[str, tuple]:
        """id -> (status, text, model, profile) for the given ids."""
        out: dict[str, tuple] = {}
        for i in range(0, len(ids), 900):  # SQLite's default bound on host parameters is 999
            part = ids[i : i + 900]
            q = f"SELECT id, status, text, model, profile FROM responses WHERE id IN ({','.join('?' * len(part))})"
            for row in self.con.execute(q, part):
                out[row[0]] = row[1:]
        return out

    def judgments_by_id(self, ids: list[str], judge: str) -> dict[str, tuple]:
        """response_id -> (status, scores dict | None, overall, rationale, error)."""
        out: dict[str, tuple] = {}
        for i in range(0, len(ids), 900):
            part = ids[i : i + 900]
            q = (
                "SELECT response_id, status, scores, overall, rationale, error FROM judgments "
                f"WHERE judge=? AND response_id IN ({','.join('?' * len(part))})"
            )
            for row in self.con.execute(q, [judge, *part]):
                out[row[0]] = (row[1], json.loads(row[2]) if row[2] else None, row[3], row[4], row[5])
        return out


class Writer:
    """Batches inserts into few transactions. ``flush()`` is cheap to call often; it commits by size or age."""

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
        self.calls: dict[str, tuple] = {}  # key -> buffered calls row, so a lookup sees uncommitted answers

    def add(self, table: str, row: tuple) -> None:
        self.buf[table].append(row)
        self.pending += 1
        if self.pending >= self.max_rows or time.monotonic() - self.last >= self.max_age_s:
            self.commit()

    def call(self, key: str, backend: str, model: str, request: str, completion: Any) -> None:
        c = completion
        row = (key, backend, model, request, c.text, c.raw, c.prompt_tokens, c.completion_tokens, c.latency_s,
               time.time())
        self.calls[key] = row
        self.add("calls", row)

    def commit(self) -> None:
        self.last = time.monotonic()
        if not self.pending:
            return
        con = self.store.con
        con.execute("BEGIN")
        try:
            # calls first: a response row must never exist without the call it came from
            for table, sql in self.SQL.items():
                rows = self.buf[table]
                if rows:
                    con.executemany(sql, rows)
                    rows.clear()
            con.execute("COMMIT")
        except BaseException:
            con.execute("ROLLBACK")
            raise
        self.pending = 0
        self.calls.clear()
