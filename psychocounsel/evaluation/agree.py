"""``psychocounsel agree A B``: agreement between two label files (two judges, or a judge and human labels);
``agree --sessions`` the session judges' rubric scores against experts' ratings of the same sessions.

Files are JSONL, JSON, CSV or Parquet, matched by an id column; the numbers come from ``measures.agreement``.
Ordinal alpha ranks the labels: numbers rank themselves, text labels need ``--order low,mid,high``
(alphabetical order would put "high" below "low"), and a label outside a given order is an error at its line.
"""

from __future__ import annotations

import csv
import json
import numbers
from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import click

from ..dataset import atomic
from ..dataset.jsonl import iter_json_objects
from ..errors import InputError, UserError
from ..measures.agreement import (
    LEVELS,
    MISSING_TEXT,
    Level,
    agreement_report,
    is_missing,
    unranked_labels,
)
from ..measures.bootstrap import DEFAULT_N_BOOT


def _norm_label(v: Any, path: Path, line: int | str, column: str) -> Hashable | None:
    """A cell as a label: numbers stay numbers (3, 3.0 and "3" are one label), blanks are missing."""
    if is_missing(v):
        return None
    if isinstance(v, bool):
        return v
    if isinstance(v, (numbers.Real, Decimal)):  # a parquet decimal column reads as Decimal
        return int(v) if float(v).is_integer() else float(v)
    if isinstance(v, str):
        s = v.strip()
        if s.lower() in MISSING_TEXT:
            return None
        try:
            f = float(s)
        except ValueError:
            return s
        return int(f) if f.is_integer() else f
    where = line if isinstance(line, int) else None
    msg = f"expected a label (text or number), found {type(v).__name__}" + ("" if where else f" in {line}")
    raise InputError(path, msg, line=where, column=column)


@dataclass
class LabelFile:
    """Labels read from one file: id -> label (None = missing) per column, and the line of each id."""

    path: Path
    key: str
    columns: list[str]
    labels: dict[str, dict[str, Hashable | None]] = field(default_factory=dict)
    lines: dict[str, int | str] = field(default_factory=dict)


def _get(row: dict[str, Any], column: str) -> tuple[bool, Any]:
    """A top-level field, or a dotted path into nested objects (``scores.empathy`` in a judgments file)."""
    if column in row:
        return True, row[column]
    cur: Any = row
    for part in column.split("."):
        if not isinstance(cur, dict) or part not in cur:
            return False, None
        cur = cur[part]
    return True, cur


def _rows(path: Path):
    """(line or 'row N', dict) for every row of a jsonl/json, csv or parquet file, plus its columns."""
    suffix = path.suffix.lower()
    if not path.is_file():
        raise InputError(path, "file not found")
    if suffix == ".csv":
        with open(path, encoding="utf-8-sig", newline="") as f:
            reader = csv.DictReader(f)
            if not reader.fieldnames:
                raise InputError(path, "empty CSV file (no header line)", line=1)
            cols = list(reader.fieldnames)
            for row in reader:
                yield reader.line_num, row, cols
        return
    if suffix == ".parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        try:
            table = pq.read_table(path)
        except (pa.ArrowInvalid, OSError) as e:
            raise InputError(path, f"not a readable parquet file: {str(e).splitlines()[0]}") from None
        for i, row in enumerate(table.to_pylist(), 1):
            yield f"row {i}", row, table.column_names
        return
    if suffix == ".json" and path.read_text(encoding="utf-8").lstrip().startswith("["):
        try:
            rows = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as e:
            raise InputError(path, f"invalid JSON: {e.msg}", line=e.lineno) from None
        for i, row in enumerate(rows, 1):
            if not isinstance(row, dict):
                raise InputError(path, f"item {i} of the JSON list is not an object")
            yield f"item {i}", row, list(row)
        return
    if suffix not in (".jsonl", ".json"):
        raise InputError(path, f"unknown file type {suffix!r} (expected .jsonl, .json, .csv or .parquet)")
    for line, row in iter_json_objects(path):
        yield line, row, list(row)


def _err(path: Path, where: int | str, msg: str, column: str) -> InputError:
    if isinstance(where, int):
        return InputError(path, msg, line=where, column=column)
    return InputError(path, f"{where}: {msg}", column=column)


def read_labels(path: str | Path, columns: Sequence[str] = ("label",), key: str = "id") -> LabelFile:
    """Read id -> label for each of ``columns`` from a .jsonl/.json/.csv/.parquet file.

    Errors name the file, line (or row) and column: a missing key, a column no row has, a duplicate id,
    a cell that is not a label. A blank cell (or NA/null), or a field absent from some JSON rows (a
    failed judgment often has none), is a missing label: kept and counted, never guessed.
    """
    p = Path(path)
    out = LabelFile(p, key, list(columns))
    for c in columns:
        out.labels[c] = {}
    seen = dict.fromkeys(columns, 0)
    first_where: int | str = 1
    all_cols: list[str] = []
    for where, row, cols in _rows(p):
        header = 1 if p.suffix.lower() == ".csv" else where  # a CSV column is missing from its header line
        if not out.lines:
            first_where = header
        all_cols = list(dict.fromkeys(all_cols + list(map(str, cols))))
        ok, rid = _get(row, key)
        if not ok or is_missing(rid) or str(rid).strip() == "":
            raise _err(p, header if not ok else where, f"no id in key column {key!r} "
                       f"(columns: {', '.join(map(str, cols))}); name it with --key", key)
        rid = str(rid).strip()
        if rid in out.lines:
            first = out.lines[rid]
            raise _err(p, where, f"duplicate id {rid!r} (first at {'line ' if isinstance(first, int) else ''}"
                                 f"{first})", key)
        out.lines[rid] = where
        for c in columns:
            ok, v = _get(row, c)
            seen[c] += ok
            out.labels[c][rid] = _norm_label(v, p, where, c) if ok else None
    if not out.lines:
        raise InputError(p, "no rows")
    for c, k in seen.items():
        if k == 0:
            raise _err(p, first_where, f"no row has column {c!r} (columns: {', '.join(all_cols)}); "
                                       "name it with --column", c)
    return out


def parse_order(text: str) -> list[str]:
    """``--order low,mid,high`` as a list; each item is read as a file's cell is in ``compare_files``."""
    return [part.strip() for part in text.split(",")]


def _check_order(order: Sequence[Any]) -> list[Hashable]:
    """Order items normalised as cells are ("3" is the number 3 of a 1-5 column); no blanks, no repeats."""
    if not order:
        raise UserError("--order is empty: give the labels, lowest first, e.g. --order low,mid,high")
    out: list[Hashable] = []
    for i, item in enumerate(order, 1):
        v = _norm_label(item, Path("--order"), f"item {i}", "order")
        if v is None:
            raise UserError(f"--order: item {i} ({item!r}) is empty or reads as a missing label")
        if v in out:
            raise UserError(f"--order: {item!r} is given twice")
        out.append(v)
    return out


def _check_labels_in_order(f: LabelFile, column: str, ids: Sequence[str], order: list[Hashable]) -> None:
    known = set(order)
    for i in ids:
        v = f.labels[column][i]
        if v is not None and v not in known:
            raise _err(f.path, f.lines[i], f"label {v!r} is not in --order ({', '.join(map(str, order))})", column)


def compare_files(path_a: str | Path, path_b: str | Path, *, columns: Sequence[str] = ("label",),
                  key: str = "id", key_b: str | None = None, column_b: str | None = None,
                  level: Level = "nominal", order: Sequence[Any] | None = None, n_boot: int = DEFAULT_N_BOOT,
                  seed: int = 0) -> dict[str, Any]:
    """Agreement of file A and file B on the ids both hold, one report per column.

    ``column_b`` names B's column when it differs (one column only, e.g. a judge's ``verdict`` against a
    human CSV's ``label``); ``key_b`` likewise for the id. ``order`` ranks the labels, lowest first
    (items read as cells are, so "3" matches a numeric 3): ordinal alpha needs it when any label is
    text; every label of the shared ids must be in it.
    """
    ranks = _check_order(order) if order is not None else None
    cols = list(columns)
    if not cols:
        raise UserError("name at least one column to compare (--column)")
    if column_b is not None and len(cols) != 1:
        raise UserError("--column-b works with exactly one --column")
    fa = read_labels(path_a, cols, key)
    fb = read_labels(path_b, [column_b] if column_b else cols, key_b or key)
    ids = [i for i in fa.lines if i in fb.lines]
    if not ids:
        ex_a, ex_b = next(iter(fa.lines)), next(iter(fb.lines))
        raise UserError(f"{fa.path} and {fb.path} share no id (key {key!r}{'/' + repr(key_b) if key_b else ''}; "
                        f"e.g. {ex_a!r} vs {ex_b!r})")
    res: dict[str, Any] = {"file_a": str(fa.path), "file_b": str(fb.path), "key": key, "key_b": key_b or key,
                           "n_ids_a": len(fa.lines), "n_ids_b": len(fb.lines), "n_shared": len(ids),
                           "order": ranks, "columns": {}}
    for c in cols:
        cb = column_b or c
        la = [fa.labels[c][i] for i in ids]
        lb = [fb.labels[cb][i] for i in ids]
        if ranks is not None:
            _check_labels_in_order(fa, c, ids, ranks)
            _check_labels_in_order(fb, cb, ids, ranks)
        elif level == "ordinal" and (text := unranked_labels(la + lb)):
            raise UserError(f"{fa.path} vs {fb.path} (column {c!r}): ordinal alpha ranks the labels, and {text} "
                            "are not numbers: give their order, lowest first, with --order (e.g. --order low,mid,high)")
        try:
            res["columns"][c] = agreement_report(la, lb, level=level, labels=ranks, n_boot=n_boot, seed=seed)
        except ValueError as e:
            raise UserError(f"{fa.path} vs {fb.path} (column {c!r}): {e}") from None
        res["columns"][c]["column_b"] = cb
    return res


def compare_session_ratings(sessions_path: str | Path, ratings_path: str | Path, *, level: Level = "ordinal",
                            n_boot: int = DEFAULT_N_BOOT, seed: int = 0) -> dict[str, Any]:
    """The session judges against experts on the session rubric: ``sessions_path`` is a judging's
    ``sessions.jsonl`` (``judge-sessions``), ``ratings_path`` an ``annotate export`` of a session study of it.

    A unit is one session as one expert rated it: per criterion, the judge's score against that expert's
    rating (``<policy>_<criterion>_rating``; the export's ``source_key`` names the two sessions). A session two
    experts rated is two units, resampled apart, so with several experts the interval is somewhat narrow. A
    criterion an expert left blank, or a judgment that failed, is missing: counted, never guessed. Same
    report shape as ``compare_files``."""
    pa, pb = Path(sessions_path), Path(ratings_path)
    judged: dict[str, tuple[str, dict[str, Any] | None]] = {}
    criteria: list[str] = []
    for where, row, _ in _rows(pa):
        sid, policy = row.get("session_id"), row.get("policy")
        if not isinstance(sid, str) or not isinstance(policy, str):
            raise _err(pa, where, "not a session judging's row (no session_id and policy; expected sessions.jsonl "
                                  "from judge-sessions)", "session_id")
        rubric = row.get("rubric")
        scores = rubric.get("scores") if isinstance(rubric, dict) else None
        judged[sid] = (policy, scores)
        criteria += [c for c in (scores or {}) if c not in criteria]
    if not criteria:
        raise InputError(pa, "no session has rubric scores (was the rubric judge on?)")
    pairs: dict[str, tuple[list, list]] = {c: ([], []) for c in criteria}
    n_rows, sessions = 0, set()
    for where, row, cols in _rows(pb):
        n_rows += 1
        key = row.get("source_key")
        sids = str(key).split("/") if isinstance(key, str) else []
        if len(sids) != 2:
            raise _err(pb, where, f"not an export of a session study (source_key {key!r} does not name two "
                                  "sessions)", "source_key")
        for sid in sids:
            if sid not in judged:
                raise _err(pb, where, f"session {sid!r} is not in {pa}: a study of another judging?", "source_key")
            policy, scores = judged[sid]
            sessions.add(sid)
            for c in criteria:
                col = f"{policy}_{c}_rating"
                if col not in row:
                    raise _err(pb, where, f"no column {col!r} (columns: {', '.join(map(str, cols))})", col)
                pairs[c][0].append(None if scores is None else _norm_label(scores.get(c), pa, "rubric", c))
                pairs[c][1].append(_norm_label(row[col], pb, where, col))
    if not n_rows:
        raise InputError(pb, "no rows")
    res: dict[str, Any] = {"file_a": str(pa), "file_b": str(pb), "key": "session_id", "key_b": "source_key",
                           "n_ids_a": len(judged), "n_ids_b": n_rows, "n_shared": len(sessions), "order": None,
                           "unit": "session x expert", "columns": {}}
    for c, (la, lb) in pairs.items():
        try:
            res["columns"][c] = agreement_report(la, lb, level=level, n_boot=n_boot, seed=seed)
        except ValueError as e:
            raise UserError(f"{pa} vs {pb} (criterion {c!r}): {e}") from None
        res["columns"][c]["column_b"] = "experts"  # the table reads "risk vs experts"
    return res


def _fmt(v: float | None, ci: list | None, pct: bool = False) -> str:
    if v is None:
        return "undefined"
    f = (lambda x: f"{100 * x:.1f}%") if pct else (lambda x: f"{x:.3f}")
    if ci and None not in ci:
        return f"{f(v)} [{f(ci[0])}, {f(ci[1])}]"
    return f(v)


@click.command("agree")
@click.argument("file_a", type=click.Path(dir_okay=False))
@click.argument("file_b", type=click.Path(dir_okay=False))
@click.option("--key", default="id", show_default=True, help="Id column that pairs rows of A and B.")
@click.option("--key-b", default=None, help="Id column in B when it differs from --key.")
@click.option("--column", "columns", multiple=True, default=("label",), show_default=True,
              help="Label column to compare (repeatable; dotted paths reach nested JSON, e.g. scores.safety).")
@click.option("--column-b", default=None, help="B's label column when it differs (one --column only).")
@click.option("--level", type=click.Choice(LEVELS), default="nominal", show_default=True,
              help="Krippendorff's alpha distance: nominal labels, ordinal ranks (1-5 scores), interval numbers. "
                   "Ordinal text labels need --order.")
@click.option("--order", default=None, metavar="LOW,...,HIGH",
              help="Rank of the labels, lowest first, comma-separated (e.g. low,mid,high). Needed for "
                   "--level ordinal when labels are text: their alphabetical order would be a wrong scale. "
                   "Every label in the data must be in it (a typo is an error at its line).")
@click.option("--bootstrap", "n_boot", type=int, default=DEFAULT_N_BOOT, show_default=True,
              help="Bootstrap resamples over items for the 95% intervals (0: none).")
@click.option("--seed", type=int, default=0, show_default=True, help="Bootstrap seed.")
@click.option("--out", type=click.Path(dir_okay=False), default=None, help="Also write the numbers as JSON.")
@click.option("--sessions", is_flag=True,
              help="FILE_A is a session judging's sessions.jsonl (judge-sessions), FILE_B an `annotate export` of a "
                   "session study of it: the judges' rubric scores against each expert's ratings, per criterion "
                   "(--level defaults to ordinal; --key, --column and --order do not apply).")
def agree_cmd(file_a, file_b, key, key_b, columns, column_b, level, order, n_boot, seed, out, sessions) -> None:
    """Agreement of FILE_A and FILE_B (two judges, or a judge and a human-label CSV), matched by id."""
    from rich.console import Console
    from rich.table import Table

    if sessions:
        level = level if click.get_current_context().get_parameter_source("level").name != "DEFAULT" else "ordinal"
        res = compare_session_ratings(file_a, file_b, level=level, n_boot=n_boot, seed=seed)
        title = (f"session judges vs experts: {res['n_shared']} sessions, {res['n_ids_b']} rated pairs; "
                 "unit = a session as one expert rated it; 95% bootstrap intervals")
    else:
        res = compare_files(file_a, file_b, columns=columns, key=key, key_b=key_b, column_b=column_b, level=level,
                            order=parse_order(order) if order is not None else None, n_boot=n_boot, seed=seed)
        title = (f"agreement on {res['n_shared']} shared ids "
                 f"({res['n_ids_a']} in A, {res['n_ids_b']} in B); 95% bootstrap intervals")
    t = Table(title=title)
    for h in ("column", "n", "missing", "agreement", "kappa", f"alpha ({level})"):
        t.add_column(h)
    notes = []
    for c, r in res["columns"].items():
        name = c if r["column_b"] == c else f"{c} vs {r['column_b']}"
        t.add_row(name, str(r["n"]), str(r["n_missing"]), _fmt(r["percent"], r["percent_ci"], pct=True),
                  _fmt(r["kappa"], r["kappa_ci"]), _fmt(r["alpha"], r["alpha_ci"]))
        notes += [f"{name}: {m}" for m in r["notes"]]
    con = Console()
    con.print(t)
    con.print("kappa = Cohen's kappa; alpha = Krippendorff's alpha; missing = shared ids without both labels",
              style="dim")
    if level == "ordinal" and not sessions:  # a session rubric's scores are numbers: they rank themselves
        ranks = res["order"] or next(iter(res["columns"].values()))["labels"]
        con.print(f"rank order: {' < '.join(map(str, ranks))}", style="dim", highlight=False)
    for m in notes:
        con.print(f"note: {m}", highlight=False)
    if out:
        atomic.write_text(Path(out), json.dumps(res, indent=2, default=str))
        Console(stderr=True).print(f"wrote {out}")
