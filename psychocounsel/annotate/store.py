"""The annotation store: one SQLite file (WAL) holding studies, items, annotators and their answers.

Design:
- Items are stored in a canonical order, ``first`` and ``second``: for a pair file first = chosen,
  for an evaluation first = the policy. What an annotator sees as A and B is decided per
  (item, annotator) by ``swapped``, drawn from a hash of (study seed, annotator, item) when the
  annotator is added and stored, so a reload, a restart or a new server shows the same order.
- Annotator tokens are never stored: only their SHA-256. A 256-bit random token needs no slow
  hash (there is nothing to brute-force), and a stolen database opens no one's page.
- One row per assignment in ``annotations``, written by an upsert inside ``BEGIN IMMEDIATE``, so
  two browsers submitting at once serialise instead of losing an answer; every submission is
  also appended to ``submissions`` (an audit log: nothing an annotator sent is ever lost).
- One connection per thread, kept open: the web server runs handlers in a thread pool, and
  sqlite3 connections are not meant to be shared between threads.
- Schema changes are numbered migrations in ``PRAGMA user_version`` (as the run store does).
- Only ``create=True`` (``annotate create-study``) makes a database. Every other opening refuses a
  path that is not already one of ours, before SQLite touches it: ``sqlite3.connect`` creates any
  missing file, so a mistyped ``--db`` would otherwise show an empty study and export nothing, and
  migrating someone else's SQLite file would write our tables into it.
"""

from __future__ import annotations

import hashlib
import json
import random
import secrets
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import UserError
from ..web import hash_token

CHOICES = ("A", "B", "tie")
SIDES = ("first", "second")

MIGRATIONS: list[str] = [
    # 1: initial schema
    """
    CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
    CREATE TABLE studies (
        id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE, source TEXT NOT NULL,
        source_kind TEXT NOT NULL, label_name TEXT NOT NULL, side_names TEXT NOT NULL,
        principles TEXT NOT NULL, seed INTEGER NOT NULL, created_at REAL NOT NULL
    );
    CREATE TABLE items (
        id INTEGER PRIMARY KEY, study_id INTEGER NOT NULL REFERENCES studies(id),
        position INTEGER NOT NULL, source_key TEXT NOT NULL, question TEXT NOT NULL,
        first_text TEXT NOT NULL, second_text TEXT NOT NULL, first_model TEXT, second_model TEXT,
        label TEXT CHECK (label IN ('first', 'second', 'tie')),
        first_ratings TEXT, second_ratings TEXT, UNIQUE (study_id, position)
    );
    CREATE TABLE annotators (
        id INTEGER PRIMARY KEY, study_id INTEGER NOT NULL REFERENCES studies(id),
        name TEXT NOT NULL, token_hash TEXT NOT NULL UNIQUE, created_at REAL NOT NULL,
        UNIQUE (study_id, name)
    );
    CREATE TABLE assignments (
        id INTEGER PRIMARY KEY, annotator_id INTEGER NOT NULL REFERENCES annotators(id),
        item_id INTEGER NOT NULL REFERENCES items(id), position INTEGER NOT NULL,
        swapped INTEGER NOT NULL, UNIQUE (annotator_id, item_id), UNIQUE (annotator_id, position)
    );
    CREATE TABLE annotations (
        assignment_id INTEGER PRIMARY KEY REFERENCES assignments(id),
        choice TEXT NOT NULL CHECK (choice IN ('A', 'B', 'tie')),
        preferred TEXT NOT NULL CHECK (preferred IN ('first', 'second', 'tie')),
        ratings TEXT NOT NULL, comment TEXT NOT NULL, revision INTEGER NOT NULL,
        created_at REAL NOT NULL, updated_at REAL NOT NULL
    );
    CREATE TABLE submissions (
        id INTEGER PRIMARY KEY, assignment_id INTEGER NOT NULL REFERENCES assignments(id),
        payload TEXT NOT NULL, at REAL NOT NULL
    );
    """,
    # 2: a study's rating scale (a session study rates the session rubric's 1-6; pairs and evaluations 1-5)
    """
    ALTER TABLE studies ADD COLUMN scale TEXT NOT NULL DEFAULT '[1, 5]';
    """,
]
TABLES = ("meta", "studies", "items", "annotators", "assignments", "annotations", "submissions")
SQLITE_HEADER = b"SQLite format 3\x00"  # the first 16 bytes of every SQLite 3 database file


@dataclass
class Item:
    """One comparison, canonical order (first = chosen / policy). ``label`` is the reference answer."""

    source_key: str
    question: str
    first_text: str
    second_text: str
    first_model: str | None = None
    second_model: str | None = None
    label: str | None = None  # 'first' | 'second' | 'tie' | None (no reference answer)
    first_ratings: dict[str, float] | None = None  # the judge's principle scores, where known
    second_ratings: dict[str, float] | None = None


@dataclass
class StudySpec:
    name: str
    source: str
    source_kind: str  # 'pairs' | 'evaluation' | 'sessions'
    label_name: str  # what `label` is, for the dashboard: 'dataset label' | 'LLM judge' | 'session judges'
    side_names: tuple[str, str]  # ('chosen', 'rejected') | ('policy', 'reference') | the two session policies
    principles: list[tuple[str, str]]  # (key, display name): what is rated (principles, or rubric criteria)
    seed: int
    items: list[Item] = field(default_factory=list)
    scale: tuple[int, int] = (1, 5)  # lowest and highest rating (the principles' 1-5; the session rubric's 1-6)


def _unit(*parts: Any) -> int:
    """A stable 64-bit integer from the parts (same on every machine and Python run)."""
    h = hashlib.blake2b("\x1f".join(map(str, parts)).encode(), digest_size=8)
    return int.from_bytes(h.digest(), "big")


def display_plan(seed: int, study_id: int, annotator_id: int, item_ids: Sequence[int]) -> list[tuple[int, bool]]:
    """(item id, swapped) in this annotator's order: items shuffled and sides flipped per annotator.

    Shuffling the item order per annotator spreads fatigue and order effects over items; flipping
    sides per (item, annotator) keeps position bias (a preference for A) out of the agreement.
    """
    order = list(item_ids)
    random.Random(_unit("order", seed, study_id, annotator_id)).shuffle(order)
    return [(i, bool(_unit("swap", seed, study_id, annotator_id, i) & 1)) for i in order]


def check_database(path: str | Path, *, create: bool) -> None:
    """Refuse a path that cannot be (or, with ``create``, become) an annotation database: a UserError naming it.

    Reads only, and creates nothing: a caller checks every path it was given before any work starts.
    """
    path = Path(path)
    try:
        if path.is_dir():
            raise UserError(f"{path}: is a folder, not a database file")
        if not path.exists():
            if not create:
                raise UserError(f"{path}: no annotation database here (make one with "
                                f"`psychocounsel annotate create-study SOURCE --db {path}`)")
            if not path.parent.is_dir():
                raise UserError(f"{path}: cannot create the database: folder {path.parent} does not exist")
            return
        with open(path, "rb") as f:
            head = f.read(len(SQLITE_HEADER))
    except OSError as e:
        raise UserError(f"{path}: cannot read ({e.strerror or e})") from None
    if not head:
        if create:
            return  # an empty file is an empty SQLite database (`touch annotate.sqlite`)
        raise UserError(f"{path}: an empty file, not an annotation database")
    if head != SQLITE_HEADER:
        raise UserError(f"{path}: not an SQLite database (is this the right file?)")
    try:
        con = sqlite3.connect(path)
        try:
            version = con.execute("PRAGMA user_version").fetchone()[0]
            tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        finally:
            con.close()
    except sqlite3.Error as e:
        raise UserError(f"{path}: cannot open as an SQLite database ({e})") from None
    if version > len(MIGRATIONS):
        raise UserError(f"{path}: written by a newer psychocounsel (schema {version}; this one reads up to "
                        f"{len(MIGRATIONS)})")
    if version == 0 and tables:
        shown = ", ".join(sorted(tables)[:5]) + (", ..." if len(tables) > 5 else "")
        raise UserError(f"{path}: an SQLite database of something else (tables: {shown}), "
                        "not an annotation database")
    if version == 0 and not create:
        raise UserError(f"{path}: an empty SQLite database, not an annotation database")
    missing = [t for t in TABLES if t not in tables]
    if version > 0 and missing:
        raise UserError(f"{path}: not an annotation database (no {missing[0]!r} table)")


class AnnotationStore:
    def __init__(self, path: str | Path, *, create: bool = True):
        """Open the database at ``path``; ``create`` allows a new one there (``check_database`` says why not)."""
        self.path = Path(path)
        check_database(self.path, create=create)
        self._local = threading.local()
        self._lock = threading.Lock()
        self._all: list[sqlite3.Connection] = []
        try:
            self._migrate()
        except sqlite3.Error as e:
            self.close()
            raise UserError(f"{self.path}: cannot open the annotation database ({e})") from None

    def _migrate(self) -> None:
        with self.connect() as con:
            version = con.execute("PRAGMA user_version").fetchone()[0]
            for i, sql in enumerate(MIGRATIONS[version:], start=version + 1):
                con.execute("BEGIN IMMEDIATE")
                for stmt in sql.split(";"):
                    if stmt.strip():
                        con.execute(stmt)
                con.execute(f"PRAGMA user_version={i}")
                con.execute("COMMIT")
            if con.execute("SELECT 1 FROM meta WHERE key='csrf_secret'").fetchone() is None:
                # Signs CSRF tokens; kept in the database so open forms stay valid across restarts.
                con.execute("INSERT OR IGNORE INTO meta VALUES ('csrf_secret', ?)", (secrets.token_hex(32),))

    @contextmanager
    def connect(self) -> Iterator[sqlite3.Connection]:
        """This thread's connection, opened once and kept.

        Kept open because closing the last connection to a WAL database checkpoints and removes
        the WAL file: one open-write-close per answer measured 21 ms, a kept connection ~1 ms.
        One per thread because sqlite3 connections are not shared between threads safely.
        """
        con = getattr(self._local, "con", None)
        if con is None:
            con = sqlite3.connect(self.path, isolation_level=None, timeout=30)
            con.row_factory = sqlite3.Row
            con.execute("PRAGMA journal_mode=WAL")
            con.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL: durable across process crashes
            con.execute("PRAGMA foreign_keys=ON")
            con.execute("PRAGMA busy_timeout=30000")
            self._local.con = con
            with self._lock:
                self._all.append(con)
        yield con

    def close(self) -> None:
        """Close every connection this store opened (tests, and a server shutting down)."""
        with self._lock:
            for con in self._all:
                try:
                    con.close()
                except sqlite3.ProgrammingError:
                    pass  # made in another thread that is gone; the interpreter closes it
            self._all.clear()
        self._local = threading.local()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """A write transaction that takes the lock up front (no deadlock between two upgraders)."""
        with self.connect() as con:
            con.execute("BEGIN IMMEDIATE")
            try:
                yield con
            except BaseException:
                con.execute("ROLLBACK")
                raise
            con.execute("COMMIT")

    def meta(self, key: str) -> str | None:
        with self.connect() as con:
            row = con.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
        return row[0] if row else None

    # ------------------------------------------------------------------ studies

    def create_study(self, spec: StudySpec) -> int:
        if not spec.items:
            raise UserError(f"{spec.source}: no items to annotate")
        with self.transaction() as con:
            if con.execute("SELECT 1 FROM studies WHERE name=?", (spec.name,)).fetchone():
                raise UserError(f"study {spec.name!r} already exists (choose another --name)")
            cur = con.execute(
                "INSERT INTO studies (name, source, source_kind, label_name, side_names, principles, seed, "
                "created_at, scale) VALUES (?,?,?,?,?,?,?,?,?)",
                (spec.name, spec.source, spec.source_kind, spec.label_name, json.dumps(list(spec.side_names)),
                 json.dumps([list(p) for p in spec.principles]), spec.seed, time.time(), json.dumps(list(spec.scale))))
            sid = cur.lastrowid
            con.executemany(
                "INSERT INTO items (study_id, position, source_key, question, first_text, second_text, "
                "first_model, second_model, label, first_ratings, second_ratings) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                [(sid, pos, it.source_key, it.question, it.first_text, it.second_text, it.first_model,
                  it.second_model, it.label, _json_or_none(it.first_ratings), _json_or_none(it.second_ratings))
                 for pos, it in enumerate(spec.items, start=1)])
        return sid

    def studies(self) -> list[dict[str, Any]]:
        with self.connect() as con:
            rows = con.execute("SELECT * FROM studies ORDER BY id").fetchall()
            counts = dict(con.execute("SELECT study_id, COUNT(*) FROM items GROUP BY study_id").fetchall())
        return [_study(r, counts.get(r["id"], 0)) for r in rows]

    def study(self, ref: int | str) -> dict[str, Any] | None:
        """A study by id or by name."""
        with self.connect() as con:
            row = con.execute("SELECT * FROM studies WHERE id=? OR name=? ORDER BY id LIMIT 1",
                              (_as_int(ref), str(ref))).fetchone()
            if row is None:
                return None
            n = con.execute("SELECT COUNT(*) FROM items WHERE study_id=?", (row["id"],)).fetchone()[0]
        return _study(row, n)

    # ------------------------------------------------------------------ annotators

    def add_annotator(self, study_id: int, name: str) -> tuple[int, str]:
        """Register an annotator and their assignments; returns (id, token). The token is shown once."""
        name = " ".join(name.split())
        if not name or len(name) > 200:
            raise UserError("annotator name must be 1 to 200 characters")
        token = secrets.token_urlsafe(32)  # 256 bits: unguessable, so a plain hash is enough
        with self.transaction() as con:
            study = con.execute("SELECT seed FROM studies WHERE id=?", (study_id,)).fetchone()
            if study is None:
                raise UserError(f"no study with id {study_id}")
            if con.execute("SELECT 1 FROM annotators WHERE study_id=? AND name=?", (study_id, name)).fetchone():
                raise UserError(f"study {study_id} already has an annotator named {name!r}")
            aid = con.execute("INSERT INTO annotators (study_id, name, token_hash, created_at) VALUES (?,?,?,?)",
                              (study_id, name, hash_token(token), time.time())).lastrowid
            item_ids = [r[0] for r in con.execute("SELECT id FROM items WHERE study_id=? ORDER BY position",
                                                  (study_id,))]
            plan = display_plan(study["seed"], study_id, aid, item_ids)
            con.executemany("INSERT INTO assignments (annotator_id, item_id, position, swapped) VALUES (?,?,?,?)",
                            [(aid, item, pos, int(sw)) for pos, (item, sw) in enumerate(plan, start=1)])
        return aid, token

    def new_token(self, study_id: int, annotator_id: int) -> str:
        """A new private link for an annotator (lost or leaked link): the old one stops working, answers stay."""
        token = secrets.token_urlsafe(32)
        with self.transaction() as con:
            cur = con.execute("UPDATE annotators SET token_hash=? WHERE id=? AND study_id=?",
                              (hash_token(token), annotator_id, study_id))
            if cur.rowcount != 1:
                raise UserError(f"study {study_id} has no annotator {annotator_id}")
        return token

    def annotator_by_token(self, token: str) -> dict[str, Any] | None:
        if not token:
            return None
        with self.connect() as con:
            row = con.execute("SELECT * FROM annotators WHERE token_hash=?", (hash_token(token),)).fetchone()
        return dict(row) if row else None

    def annotators(self, study_id: int) -> list[dict[str, Any]]:
        with self.connect() as con:
            return [dict(r) for r in con.execute(
                "SELECT id, study_id, name, created_at FROM annotators WHERE study_id=? ORDER BY id", (study_id,))]

    # ------------------------------------------------------------------ assignments

    _ASSIGNMENT_SQL = """
        SELECT s.id AS assignment_id, s.position, s.swapped, s.annotator_id, i.id AS item_id,
               i.question, i.first_text, i.second_text, a.choice, a.ratings, a.comment, a.revision,
               a.updated_at
        FROM assignments s JOIN items i ON i.id = s.item_id
        LEFT JOIN annotations a ON a.assignment_id = s.id
        WHERE s.annotator_id = ?"""

    def assignments(self, annotator_id: int) -> list[dict[str, Any]]:
        """This annotator's queue, in their order, with their answers (and only theirs)."""
        with self.connect() as con:
            rows = con.execute(self._ASSIGNMENT_SQL + " ORDER BY s.position", (annotator_id,)).fetchall()
        return [_shown(r) for r in rows]

    def queue(self, annotator_id: int) -> list[dict[str, Any]]:
        """The annotator's order with what each answer is, without texts (progress, next, navigation)."""
        with self.connect() as con:
            rows = con.execute(
                "SELECT s.id AS assignment_id, s.position, a.choice FROM assignments s "
                "LEFT JOIN annotations a ON a.assignment_id = s.id WHERE s.annotator_id=? ORDER BY s.position",
                (annotator_id,)).fetchall()
        return [{"assignment_id": r[0], "position": r[1], "choice": r[2], "done": r[2] is not None} for r in rows]

    def assignment(self, annotator_id: int, assignment_id: int) -> dict[str, Any] | None:
        """One assignment, or None when it is not this annotator's (the caller answers 404)."""
        with self.connect() as con:
            row = con.execute(self._ASSIGNMENT_SQL + " AND s.id = ?", (annotator_id, assignment_id)).fetchone()
        return _shown(row) if row else None

    def submit(self, annotator_id: int, assignment_id: int, choice: str,
               ratings: dict[str, dict[str, int]] | None = None, comment: str = "") -> dict[str, Any]:
        """Store (or replace) this annotator's answer for one assignment; returns the stored answer.

        ``choice`` and ``ratings`` are in shown terms (A, B); they are stored in canonical terms too,
        so the dashboard never has to know who saw which order.
        """
        if choice not in CHOICES:
            raise ValueError(f"choice must be one of {CHOICES}, got {choice!r}")
        if not isinstance(comment, str):
            raise ValueError(f"comment must be text, got {type(comment).__name__}")
        ratings = ratings or {}
        now = time.time()
        with self.transaction() as con:
            row = con.execute("SELECT s.swapped, st.scale FROM assignments s JOIN annotators n ON n.id = s.annotator_id "
                              "JOIN studies st ON st.id = n.study_id WHERE s.id=? AND s.annotator_id=?",
                              (assignment_id, annotator_id)).fetchone()
            if row is None:
                raise LookupError(assignment_id)
            swapped = bool(row[0])
            low, high = json.loads(row[1])
            for shown, scores in ratings.items():
                _side(shown, False)  # an unknown side is an error, never dropped
                for p, v in scores.items():
                    # bool is an int subclass: True would be stored as the rating 1
                    if isinstance(v, bool) or not isinstance(v, int) or not low <= v <= high:
                        raise ValueError(f"rating of {p} for {shown} must be a whole number {low} to {high}, got {v!r}")
            canonical = {_side(shown, swapped): scores for shown, scores in ratings.items() if scores}
            preferred = "tie" if choice == "tie" else _side(choice, swapped)
            payload = json.dumps({"choice": choice, "ratings": ratings, "comment": comment})
            con.execute("INSERT INTO submissions (assignment_id, payload, at) VALUES (?,?,?)",
                        (assignment_id, payload, now))
            con.execute(
                "INSERT INTO annotations (assignment_id, choice, preferred, ratings, comment, revision, created_at, "
                "updated_at) VALUES (?,?,?,?,?,1,?,?) ON CONFLICT (assignment_id) DO UPDATE SET "
                "choice=excluded.choice, preferred=excluded.preferred, ratings=excluded.ratings, "
                "comment=excluded.comment, revision=annotations.revision+1, updated_at=excluded.updated_at",
                (assignment_id, choice, preferred, json.dumps(canonical), comment, now, now))
            rev = con.execute("SELECT revision FROM annotations WHERE assignment_id=?", (assignment_id,)).fetchone()[0]
        return {"assignment_id": assignment_id, "choice": choice, "preferred": preferred, "revision": rev}

    # ------------------------------------------------------------------ admin views

    def progress(self, study_id: int) -> list[dict[str, Any]]:
        with self.connect() as con:
            rows = con.execute(
                "SELECT n.id, n.name, COUNT(s.id) AS total, COUNT(a.assignment_id) AS done, "
                "MAX(a.updated_at) AS last_at FROM annotators n "
                "LEFT JOIN assignments s ON s.annotator_id = n.id "
                "LEFT JOIN annotations a ON a.assignment_id = s.id "
                "WHERE n.study_id=? GROUP BY n.id ORDER BY n.id", (study_id,)).fetchall()
        return [dict(r) for r in rows]

    def annotation_rows(self, study_id: int) -> list[dict[str, Any]]:
        """Every answer of a study with its item, in canonical terms (the export and the dashboard)."""
        with self.connect() as con:
            rows = con.execute(
                "SELECT i.position AS item, i.source_key, i.question, i.first_text, i.second_text, i.first_model, "
                "i.second_model, i.label, i.first_ratings, i.second_ratings, n.id AS annotator_id, "
                "n.name AS annotator, s.position AS shown_position, s.swapped, a.choice, a.preferred, a.ratings, "
                "a.comment, a.revision, a.created_at, a.updated_at "
                "FROM annotations a JOIN assignments s ON s.id = a.assignment_id "
                "JOIN annotators n ON n.id = s.annotator_id JOIN items i ON i.id = s.item_id "
                "WHERE n.study_id=? ORDER BY i.position, n.id", (study_id,)).fetchall()
        out = []
        for r in rows:
            d = dict(r)
            d["swapped"] = bool(d["swapped"])
            for k in ("ratings", "first_ratings", "second_ratings"):
                d[k] = json.loads(d[k]) if d[k] else {}
            out.append(d)
        return out

    def submission_count(self, study_id: int) -> int:
        with self.connect() as con:
            return con.execute(
                "SELECT COUNT(*) FROM submissions u JOIN assignments s ON s.id = u.assignment_id "
                "JOIN annotators n ON n.id = s.annotator_id WHERE n.study_id=?", (study_id,)).fetchone()[0]


def _side(shown: str, swapped: bool) -> str:
    """The canonical side behind a shown letter: A is the first response unless swapped."""
    if shown not in ("A", "B"):
        raise ValueError(f"ratings side must be A or B, got {shown!r}")
    return "first" if (shown == "A") != swapped else "second"


def _shown(row: sqlite3.Row) -> dict[str, Any]:
    """An assignment as the annotator sees it: A and B texts, no model names, no label."""
    swapped = bool(row["swapped"])
    a, b = (row["second_text"], row["first_text"]) if swapped else (row["first_text"], row["second_text"])
    ratings = json.loads(row["ratings"]) if row["ratings"] else {}
    shown_ratings = {("A" if _side("A", swapped) == side else "B"): v for side, v in ratings.items()}
    return {"assignment_id": row["assignment_id"], "position": row["position"], "question": row["question"],
            "response_a": a, "response_b": b, "choice": row["choice"], "ratings": shown_ratings,
            "comment": row["comment"] or "", "revision": row["revision"] or 0, "done": row["choice"] is not None,
            "updated_at": row["updated_at"]}


def _study(row: sqlite3.Row, n_items: int) -> dict[str, Any]:
    d = dict(row)
    d["side_names"] = json.loads(d["side_names"])
    d["principles"] = [tuple(p) for p in json.loads(d["principles"])]
    d["scale"] = tuple(json.loads(d["scale"]))
    d["n_items"] = n_items
    return d


def _json_or_none(value: Any) -> str | None:
    return None if value is None else json.dumps(value)


def _as_int(ref: int | str) -> int:
    """A study reference as a row id; -1 (no row) when it is not a number or beyond SQLite's 64-bit range."""
    try:
        value = int(ref)
    except (TypeError, ValueError):
        return -1
    return value if -(2**63) <= value < 2**63 else -1
