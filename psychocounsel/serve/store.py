"""The drafting assistant's SQLite file: clinicians, draft sets, decisions, the audit log, consent, gate counts.

What is kept, and why:
- Clinicians: a name, the SHA-256 of their token (never the token: ``web.hash_token``), style controls.
- Draft sets and drafts: ids, the gate's tier, scores, flag kinds, who drafted them. Client text (the message,
  the conversation, the drafts, the clinician's final words) only when the policy turns storage on, only for a
  client id with a consent record, and only for ``retention_days``; ``purge`` erases it after that.
- Decisions: accept / edit / reject, the edit distance in characters, whether a safety override was used.
- The audit log: who, what action, when, which ids. Never any text a client or clinician wrote.
- Gate counts: per month and tier, how many messages were screened. No ids, no text.
One connection behind a lock: every statement is a few milliseconds, so the event loop can call it directly.
"""

from __future__ import annotations

import json
import secrets
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ..errors import UserError
from ..web import hash_token

MIGRATIONS = [
    """
    CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
    CREATE TABLE clinicians (id INTEGER PRIMARY KEY, name TEXT NOT NULL, token_hash TEXT NOT NULL UNIQUE,
        created_at REAL NOT NULL, style TEXT NOT NULL DEFAULT '{}');
    CREATE TABLE draft_sets (id INTEGER PRIMARY KEY, clinician_id INTEGER NOT NULL REFERENCES clinicians(id),
        created_at REAL NOT NULL, tier TEXT NOT NULL, n INTEGER NOT NULL, ranked INTEGER NOT NULL,
        client_id TEXT, message TEXT, history TEXT);
    CREATE INDEX draft_sets_by_clinician ON draft_sets (clinician_id, id);
    CREATE TABLE drafts (set_id INTEGER NOT NULL REFERENCES draft_sets(id), idx INTEGER NOT NULL,
        overall REAL, flags TEXT NOT NULL, blocked INTEGER NOT NULL, text TEXT, PRIMARY KEY (set_id, idx));
    CREATE TABLE decisions (id INTEGER PRIMARY KEY, set_id INTEGER NOT NULL, idx INTEGER NOT NULL,
        clinician_id INTEGER NOT NULL, action TEXT NOT NULL, edit_distance INTEGER, override INTEGER NOT NULL,
        created_at REAL NOT NULL, final_text TEXT);
    CREATE TABLE audit (id INTEGER PRIMARY KEY, at REAL NOT NULL, actor TEXT NOT NULL, action TEXT NOT NULL,
        ids TEXT NOT NULL);
    CREATE TABLE consents (client_id TEXT PRIMARY KEY, clinician_id INTEGER NOT NULL, recorded_at REAL NOT NULL);
    CREATE TABLE gate_counts (month TEXT NOT NULL, tier TEXT NOT NULL, n INTEGER NOT NULL,
        PRIMARY KEY (month, tier));
    """,
    # What the first draft page showed, so a reopened page shows it too: the reward model's per-principle
    # scores, the one-line reason, the backend's finish reason. Scores and reasons hold no client text.
    """
    ALTER TABLE drafts ADD COLUMN principles TEXT NOT NULL DEFAULT '{}';
    ALTER TABLE drafts ADD COLUMN reason TEXT NOT NULL DEFAULT '';
    ALTER TABLE drafts ADD COLUMN finish_reason TEXT;
    """,
    # The drafts the backend failed to write, as the first page listed them, so a page rebuilt after a restart
    # lists them too. Kept only with the text (storage on): a backend's error line may quote the request.
    """
    ALTER TABLE draft_sets ADD COLUMN failed TEXT NOT NULL DEFAULT '[]';
    """,
]
ACTIONS = ("accept", "edit", "reject")


@dataclass(frozen=True)
class Clinician:
    id: int
    name: str
    token_hash: str
    style: dict[str, Any]


def month_of(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m")


class ServeStore:
    """The one database of a deployment (created when missing: the deployment file names it)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        try:
            self.con = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        except sqlite3.OperationalError as e:
            raise UserError(f"{self.path}: cannot open the database: {e}") from None
        self.con.row_factory = sqlite3.Row
        self.lock = threading.RLock()
        with self.lock:
            self.con.execute("PRAGMA journal_mode=WAL")
            self.con.execute("PRAGMA synchronous=NORMAL")
            self.con.execute("PRAGMA foreign_keys=ON")
            self._migrate()

    def _migrate(self) -> None:
        version = self.con.execute("PRAGMA user_version").fetchone()[0]
        for i, sql in enumerate(MIGRATIONS[version:], start=version + 1):
            with self.tx() as con:
                for statement in sql.split(";"):  # executescript would commit our transaction first
                    if statement.strip():
                        con.execute(statement)
                con.execute(f"PRAGMA user_version={i}")
        with self.tx() as con:
            # Signs CSRF tokens; kept in the database so open forms stay valid across restarts.
            con.execute("INSERT OR IGNORE INTO meta VALUES ('csrf_secret', ?)", (secrets.token_hex(32),))

    @contextmanager
    def tx(self) -> Iterator[sqlite3.Connection]:
        with self.lock:
            self.con.execute("BEGIN IMMEDIATE")
            try:
                yield self.con
            except BaseException:
                self.con.execute("ROLLBACK")
                raise
            self.con.execute("COMMIT")

    def rows(self, sql: str, args: tuple = ()) -> list[dict[str, Any]]:
        with self.lock:
            return [dict(r) for r in self.con.execute(sql, args).fetchall()]

    def close(self) -> None:
        with self.lock:
            self.con.close()

    def meta(self, key: str) -> str | None:
        got = self.rows("SELECT value FROM meta WHERE key=?", (key,))
        return got[0]["value"] if got else None

    # ------------------------------------------------------------------ clinicians

    def add_clinician(self, name: str) -> tuple[int, str]:
        """(id, token); the token is shown once and only its hash is kept."""
        name = " ".join(name.split())
        if not name:
            raise UserError("a clinician needs a name")
        token = secrets.token_urlsafe(32)  # 256 bits: unguessable, so a plain hash is enough
        with self.tx() as con:
            cid = con.execute("INSERT INTO clinicians (name, token_hash, created_at) VALUES (?,?,?)",
                              (name, hash_token(token), time.time())).lastrowid
        return int(cid), token

    def new_token(self, clinician_id: int) -> str:
        """A new token for a clinician; the old one stops working at once."""
        token = secrets.token_urlsafe(32)
        with self.tx() as con:
            if con.execute("UPDATE clinicians SET token_hash=? WHERE id=?",
                           (hash_token(token), clinician_id)).rowcount != 1:
                raise UserError(f"no clinician with id {clinician_id}")
        return token

    def clinician_by_token(self, token: str) -> Clinician | None:
        if not token:
            return None
        got = self.rows("SELECT * FROM clinicians WHERE token_hash=?", (hash_token(token),))
        if not got:
            return None
        r = got[0]
        return Clinician(r["id"], r["name"], r["token_hash"], json.loads(r["style"]))

    def clinicians(self) -> list[dict[str, Any]]:
        return self.rows("SELECT c.id, c.name, c.created_at, (SELECT COUNT(*) FROM draft_sets d WHERE "
                         "d.clinician_id=c.id) AS draft_sets, (SELECT COUNT(*) FROM decisions x WHERE "
                         "x.clinician_id=c.id) AS decisions FROM clinicians c ORDER BY c.id")

    def set_style(self, clinician_id: int, style: dict[str, Any]) -> None:
        with self.tx() as con:
            con.execute("UPDATE clinicians SET style=? WHERE id=?", (json.dumps(style), clinician_id))

    # ------------------------------------------------------------------ drafts and decisions

    def add_draft_set(self, clinician_id: int, tier: str, drafts: list[dict[str, Any]], ranked: bool, *,
                      client_id: str | None = None, message: str | None = None, history: str | None = None,
                      failed: list[str] | None = None) -> int:
        """One draft set and its drafts. ``drafts``: {overall, flags, blocked, text} and optionally {principles,
        reason, finish_reason}; text None unless stored. ``failed``: the backend's error lines for drafts it
        could not write, kept only with the message (storage on)."""
        now = time.time()
        with self.tx() as con:
            if message is not None and not con.execute("SELECT 1 FROM consents WHERE client_id=?",
                                                       (client_id,)).fetchone():
                raise UserError(f"no consent recorded for client {client_id!r}: record it before text is stored")
            kept_failed = json.dumps(failed or []) if message is not None else "[]"
            sid = con.execute("INSERT INTO draft_sets (clinician_id, created_at, tier, n, ranked, client_id, message, "
                              "history, failed) VALUES (?,?,?,?,?,?,?,?,?)",
                              (clinician_id, now, tier, len(drafts), int(ranked), client_id, message, history,
                               kept_failed)).lastrowid
            con.executemany("INSERT INTO drafts (set_id, idx, overall, flags, blocked, text, principles, reason, "
                            "finish_reason) VALUES (?,?,?,?,?,?,?,?,?)",
                            [(sid, i, d["overall"], json.dumps(d["flags"]), int(d["blocked"]), d.get("text"),
                              json.dumps(d.get("principles") or {}), d.get("reason") or "", d.get("finish_reason"))
                             for i, d in enumerate(drafts)])
            con.execute("INSERT INTO gate_counts VALUES (?,?,1) ON CONFLICT (month, tier) DO UPDATE SET n=n+1",
                        (month_of(now), tier))
        return int(sid)

    def count_gate(self, tier: str) -> None:
        """A screened message that made no draft set (the chat API): counted all the same."""
        with self.tx() as con:
            con.execute("INSERT INTO gate_counts VALUES (?,?,1) ON CONFLICT (month, tier) DO UPDATE SET n=n+1",
                        (month_of(time.time()), tier))

    def draft_set(self, clinician_id: int, set_id: int) -> dict[str, Any] | None:
        """The set, scoped by its clinician: someone else's set is None, exactly like one that does not exist."""
        got = self.rows("SELECT * FROM draft_sets WHERE id=? AND clinician_id=?", (set_id, clinician_id))
        if not got:
            return None
        out = got[0]
        out["drafts"] = self.rows("SELECT * FROM drafts WHERE set_id=? ORDER BY idx", (set_id,))
        out["failed"] = json.loads(out["failed"])
        for d in out["drafts"]:
            d["flags"] = json.loads(d["flags"])
            d["principles"] = json.loads(d["principles"])
        out["decisions"] = self.rows("SELECT id, idx, action, edit_distance, override, created_at FROM decisions "
                                     "WHERE set_id=? ORDER BY id", (set_id,))
        return out

    def add_decision(self, clinician_id: int, set_id: int, idx: int, action: str, edit_distance: int | None,
                     override: bool, final_text: str | None) -> int:
        if action not in ACTIONS:
            raise ValueError(f"unknown action {action!r}")
        with self.tx() as con:
            did = con.execute("INSERT INTO decisions (set_id, idx, clinician_id, action, edit_distance, override, "
                              "created_at, final_text) VALUES (?,?,?,?,?,?,?,?)",
                              (set_id, idx, clinician_id, action, edit_distance, int(override), time.time(),
                               final_text)).lastrowid
        return int(did)

    # ------------------------------------------------------------------ audit, consent, counts

    def audit(self, actor: str, action: str, **ids: int | str | bool | None) -> None:
        """One audit row: who, what, when, which ids. Callers pass ids and flags only, never text."""
        for k, v in ids.items():
            if isinstance(v, str) and len(v) > 64:
                raise ValueError(f"audit field {k!r} looks like content, not an id")
        with self.tx() as con:
            con.execute("INSERT INTO audit (at, actor, action, ids) VALUES (?,?,?,?)",
                        (time.time(), actor, action, json.dumps(ids, sort_keys=True)))

    def audit_rows(self, limit: int = 500) -> list[dict[str, Any]]:
        rows = self.rows("SELECT * FROM audit ORDER BY id DESC LIMIT ?", (limit,))
        for r in rows:
            r["ids"] = json.loads(r["ids"])
        return rows

    def record_consent(self, client_id: str, clinician_id: int) -> None:
        with self.tx() as con:
            con.execute("INSERT INTO consents VALUES (?,?,?) ON CONFLICT (client_id) DO UPDATE SET "
                        "clinician_id=excluded.clinician_id, recorded_at=excluded.recorded_at",
                        (client_id, clinician_id, time.time()))

    def has_consent(self, client_id: str) -> bool:
        return bool(self.rows("SELECT 1 FROM consents WHERE client_id=?", (client_id,)))

    def withdraw_consent(self, client_id: str) -> int:
        """Remove the consent and erase that client's stored text now; returns the draft sets erased."""
        with self.tx() as con:
            con.execute("DELETE FROM consents WHERE client_id=?", (client_id,))
            return self._erase(con, "client_id=?", (client_id,))

    @staticmethod
    def _erase(con: sqlite3.Connection, where: str, args: tuple) -> int:
        ids = [r[0] for r in con.execute(f"SELECT id FROM draft_sets WHERE {where} AND message IS NOT NULL", args)]
        if ids:
            marks = ",".join("?" * len(ids))
            con.execute(f"UPDATE draft_sets SET message=NULL, history=NULL, failed='[]' WHERE id IN ({marks})", ids)
            con.execute(f"UPDATE drafts SET text=NULL WHERE set_id IN ({marks})", ids)
            con.execute(f"UPDATE decisions SET final_text=NULL WHERE set_id IN ({marks})", ids)
        return len(ids)

    def purge(self, retention_days: float, now: float | None = None) -> int:
        """Erase client text older than the retention period; ids, tiers and counts stay."""
        cutoff = (now if now is not None else time.time()) - retention_days * 86400
        with self.tx() as con:
            return self._erase(con, "created_at < ?", (cutoff,))

    def gate_counts(self) -> list[dict[str, Any]]:
        """Per month: messages screened per tier. Aggregates only: no ids, no text."""
        months: dict[str, dict[str, Any]] = {}
        for r in self.rows("SELECT month, tier, n FROM gate_counts ORDER BY month"):
            months.setdefault(r["month"], {"month": r["month"], "none": 0, "possible": 0, "high": 0})[r["tier"]] = r["n"]
        return list(months.values())

    def decision_counts(self) -> dict[str, Any]:
        got = self.rows("SELECT action, COUNT(*) AS n, AVG(edit_distance) AS mean_edit, SUM(override) AS overrides "
                        "FROM decisions GROUP BY action")
        return {r["action"]: {"n": r["n"], "mean_edit_distance": r["mean_edit"], "overrides": r["overrides"]}
                for r in got}

    def export_rows(self) -> list[dict[str, Any]]:
        """Decisions with their stored text (storage on), for the export; rows whose text was erased are left out."""
        return self.rows(
            "SELECT x.id AS decision_id, x.action, x.edit_distance, x.override, x.created_at, s.id AS set_id, "
            "s.tier, s.message AS prompt, d.text AS draft, x.final_text FROM decisions x "
            "JOIN draft_sets s ON s.id=x.set_id JOIN drafts d ON d.set_id=x.set_id AND d.idx=x.idx "
            "WHERE s.message IS NOT NULL AND d.text IS NOT NULL ORDER BY x.id")
