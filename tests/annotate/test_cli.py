"""``psychocounsel annotate`` from the shell: the happy path, and every path argument given wrong.

A wrong path is the commonest mistake at a terminal (a typo, a folder, someone else's file). Each must be
one line naming the path and exit 2, with nothing created: a mistyped ``--db`` that silently made an empty
database would show an empty study and export nothing, with no error anywhere.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner
from pairfiles import write_pairs

from psychocounsel.annotate.sources import study_spec
from psychocounsel.annotate.store import AnnotationStore
from psychocounsel.cli import main as cli_main
from psychocounsel.errors import UserError


def run(*args: str):
    return CliRunner().invoke(cli_main, ["annotate", *args])


def test_create_add_export_status(tmp_path):
    db = str(tmp_path / "a.sqlite")
    pairs = write_pairs(tmp_path / "pairs.jsonl", 5)
    r = run("create-study", str(pairs), "--n", "3", "--db", db, "--name", "cli")
    assert r.exit_code == 0 and "study 1 (cli): 3 items" in r.output
    r = run("add-annotator", "cli", "Dr. Ng", "--db", db, "--base-url", "https://x.org/")
    assert r.exit_code == 0
    link = r.output.strip().splitlines()[-1]
    assert link.startswith("https://x.org/a/") and len(link) > len("https://x.org/a/") + 40
    store = AnnotationStore(db)
    ann = store.annotator_by_token(link.rsplit("/", 1)[1])
    assert ann["name"] == "Dr. Ng"
    for a in store.assignments(ann["id"]):
        store.submit(ann["id"], a["assignment_id"], "A")
    out = tmp_path / "out.parquet"
    r = run("export", "1", "--db", db, "--out", str(out))
    assert r.exit_code == 0 and pq.read_table(out).num_rows == 3
    r = run("status", "cli", "--db", db, "--bootstrap", "50")
    assert r.exit_code == 0 and "Dr. Ng: 3/3 answered" in r.output
    # 3 items is below the minimum for an agreement figure: the count, and why there is no number.
    assert "Dr. Ng vs dataset label: not enough ratings (n=3; at least 10)" in r.output
    r = run("status", "nope", "--db", db)
    assert r.exit_code == 2 and "no study 'nope'" in r.output
    r = run("status", "9" * 30, "--db", db)  # an id no SQLite row can have: not found, not a crash
    assert r.exit_code == 2 and f"no study '{'9' * 30}'" in r.stderr
    r = run("export", "1", "--db", db, "--out", str(tmp_path / "x.xlsx"))
    assert r.exit_code == 2 and "unknown export type" in r.output
    with pytest.raises(UserError, match="already exists"):
        store.create_study(study_spec(pairs, n=2, name="cli"))


def test_status_shows_n_and_intervals_beside_every_figure(tmp_path):
    db = tmp_path / "a.sqlite"
    store = AnnotationStore(db)
    sid = store.create_study(study_spec(write_pairs(tmp_path / "p.jsonl", 12), n=12, seed=0, name="s"))
    for i, name in enumerate(("ann", "ben")):
        aid = store.add_annotator(sid, name)[0]
        for k, a in enumerate(store.assignments(aid)):
            store.submit(aid, a["assignment_id"], "AB"[(k * (i + 2)) % 3 == 0])
    r = run("status", "s", "--db", str(db), "--bootstrap", "50")
    assert r.exit_code == 0, r.output
    lines = {ln.split(":")[0].strip(): ln for ln in r.output.splitlines() if " vs " in ln or "all annotators" in ln}
    assert "n=12" in lines["ann vs ben"] and "95% CI" in lines["ann vs ben"]
    assert "kappa" in lines["ann vs ben"] and "alpha" in lines["ann vs ben"]
    assert lines["ann vs ben"].count("[") == 3  # an interval beside percent, kappa and alpha
    assert "n=12" in lines["alpha, all annotators"] and "[" in lines["alpha, all annotators"]
    as_json = json.loads(run("status", "s", "--db", str(db), "--json", "--bootstrap", "50").output)
    assert as_json["agreement"]["between_annotators"][0]["report"]["n"] == 12


def test_a_missing_database_is_refused_not_created(tmp_path):
    """Only create-study makes a database; a typo anywhere else must not produce an empty study."""
    db = tmp_path / "anotate.sqlite"  # the typo
    for args in (["status", "1"], ["export", "1", "--out", str(tmp_path / "o.csv")], ["add-annotator", "1", "x"],
                 ["new-link", "1", "x"]):
        r = run(*args, "--db", str(db))
        assert r.exit_code == 2, r.output
        assert r.stderr.strip() == (f"error: {db}: no annotation database here (make one with "
                                    f"`psychocounsel annotate create-study SOURCE --db {db}`)")
        assert list(tmp_path.iterdir()) == []


def test_invalid_utf8_in_a_pair_file_names_file_and_line(tmp_path):
    pairs = write_pairs(tmp_path / "p.jsonl", 3)
    lines = pairs.read_bytes().splitlines(keepends=True)
    pairs.write_bytes(lines[0] + lines[1].replace(b"Just stop", b"Just st\xf6p") + lines[2])
    r = run("create-study", str(pairs), "--db", str(tmp_path / "a.sqlite"))
    assert r.exit_code == 2 and "Traceback" not in r.output
    assert r.stderr.strip().startswith(f"error: {pairs}:2: not valid UTF-8 (byte 0xf6")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.jsonl"]
    # A BOM at the start (Notepad, Excel) is fine.
    pairs.write_bytes(b"\xef\xbb\xbf" + lines[0] + lines[1] + lines[2])
    r = run("create-study", str(pairs), "--db", str(tmp_path / "a.sqlite"))
    assert r.exit_code == 0 and "3 items" in r.output


def test_brackets_in_a_message_are_printed_as_typed(tmp_path):
    """Error lines are printed through rich: a path like ``runs[1]/[/x]`` is text, not markup to crash on."""
    db = tmp_path / "runs[1]" / "[/x].sqlite"
    r = run("status", "1", "--db", str(db))
    assert r.exit_code == 2 and "Traceback" not in r.output
    assert str(db) in r.stderr and len(r.stderr.splitlines()) == 1


# ------------------------------------------------------------------ every path argument, given wrong


def _sqlite_with(path: Path, sql: str, version: int = 0) -> None:
    con = sqlite3.connect(path)
    con.executescript(sql)
    con.execute(f"PRAGMA user_version={version}")
    con.commit()
    con.close()


def _unreadable(path: Path) -> Path:
    path.write_text("x\n")
    path.chmod(0)
    if os.access(path, os.R_OK):
        path.chmod(0o644)
        pytest.skip("running as root: chmod 000 does not stop reading")
    return path


def _unwritable(path: Path) -> Path:
    path.write_text("x\n")
    path.chmod(0o444)
    if os.access(path, os.W_OK):
        path.chmod(0o644)
        pytest.skip("running as root: a read-only file is still writable")
    return path


# What each kind of path argument can wrongly be. Each makes the wrong path under `tmp` and returns it.
DB_WRONG = {
    "missing": lambda tmp: tmp / "nope.sqlite",
    "no-parent": lambda tmp: tmp / "no" / "such" / "a.sqlite",
    "directory": lambda tmp: (tmp / "dir.sqlite").mkdir() or tmp / "dir.sqlite",
    "unreadable": lambda tmp: _unreadable(tmp / "locked.sqlite"),
    "text": lambda tmp: (tmp / "notes.sqlite").write_text("not a database\n") and tmp / "notes.sqlite",
    "sqlite-of-something-else": lambda tmp: _sqlite_with(tmp / "other.sqlite",
                                                          "CREATE TABLE runs (id INTEGER);") or tmp / "other.sqlite",
    "sqlite-with-a-version-but-not-our-tables": lambda tmp: _sqlite_with(
        tmp / "runs.sqlite", "CREATE TABLE stages (name TEXT);", version=3) or tmp / "runs.sqlite",
    "empty-sqlite": lambda tmp: (tmp / "empty.sqlite").write_bytes(b"") or tmp / "empty.sqlite",
}
SOURCE_WRONG = {
    "missing": lambda tmp: tmp / "nope.jsonl",
    "directory": lambda tmp: (tmp / "eval").mkdir() or tmp / "eval",  # a folder without comparisons
    "unreadable": lambda tmp: _unreadable(tmp / "locked.jsonl"),
    "text-named-parquet": lambda tmp: (tmp / "p.parquet").write_text("question,chosen\n") and tmp / "p.parquet",
    "not-utf8": lambda tmp: (tmp / "p.jsonl").write_bytes(b'{"question": "caf\xe9"}\n') and tmp / "p.jsonl",
    "unknown-type": lambda tmp: (tmp / "p.xlsx").write_bytes(b"PK\x03\x04") and tmp / "p.xlsx",
}
OUT_WRONG = {
    "no-parent": lambda tmp: tmp / "no" / "such" / "out.csv",
    "directory": lambda tmp: (tmp / "out.csv").mkdir() or tmp / "out.csv",
    "unwritable": lambda tmp: _unwritable(tmp / "out.csv"),
    "unknown-type": lambda tmp: tmp / "out.xlsx",
}

# command -> (its arguments with {db}, {source}, {out} placeholders, the path arguments it takes)
COMMANDS = {
    "serve": ["serve", "--db", "{db}", "--port", "1"],
    "create-study": ["create-study", "{source}", "--db", "{db}", "--n", "2"],
    "add-annotator": ["add-annotator", "s", "new person", "--db", "{db}"],
    "new-link": ["new-link", "s", "ann", "--db", "{db}"],
    "status": ["status", "s", "--db", "{db}", "--bootstrap", "10"],
    "export": ["export", "s", "--db", "{db}", "--out", "{out}"],
}
WRONG = {"db": DB_WRONG, "source": SOURCE_WRONG, "out": OUT_WRONG}
CASES = [(cmd, arg, kind) for cmd, args in COMMANDS.items() for arg in WRONG if "{" + arg + "}" in args
         for kind in WRONG[arg] if not (cmd == "create-study" and arg == "db" and kind in ("missing", "empty-sqlite"))]


def _snapshot(root: Path) -> dict[str, str]:
    """Every path under root, with a hash of each readable file's bytes: what "nothing changed" means."""
    out = {}
    for p in sorted(root.rglob("*")):
        rel = str(p.relative_to(root))
        out[rel] = "dir" if p.is_dir() else (hashlib.sha256(p.read_bytes()).hexdigest()
                                             if os.access(p, os.R_OK) else "unreadable")
    return out


@pytest.mark.parametrize("cmd,arg,kind", CASES, ids=["-".join(c) for c in CASES])
def test_every_path_argument_given_wrong(tmp_path, monkeypatch, cmd, arg, kind):
    import uvicorn

    def no_server(*a, **k):  # a wrong path must stop `serve` before it listens
        raise AssertionError("serve started a server with a wrong path")

    monkeypatch.setattr(uvicorn.Server, "run", no_server)
    good = tmp_path / "good"
    good.mkdir()
    store = AnnotationStore(good / "annotate.sqlite")
    sid = store.create_study(study_spec(write_pairs(good / "pairs.jsonl", 4), n=4, seed=0, name="s"))
    store.add_annotator(sid, "ann")
    store.close()  # checkpoints the WAL: the folder holds only the database file
    paths = {"db": str(good / "annotate.sqlite"), "source": str(good / "pairs.jsonl"), "out": str(good / "out.csv")}
    wrong_dir = tmp_path / "wrong"
    wrong_dir.mkdir()
    bad = WRONG[arg][kind](wrong_dir)
    paths[arg] = str(bad)
    before = _snapshot(tmp_path)
    r = CliRunner().invoke(cli_main, ["annotate", *[a.format(**paths) for a in COMMANDS[cmd]]])
    assert r.exit_code == 2, r.output
    assert "Traceback" not in r.output
    assert r.exception is None or isinstance(r.exception, SystemExit), r.exception
    lines = r.stderr.splitlines()
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith("error: ") and str(bad) in lines[0], lines[0]
    assert _snapshot(tmp_path) == before  # nothing created, nothing changed
