"""Reading pair files: ours (``<run>/pairs/*.parquet|jsonl``) and the published PsychoCounsel-Preference
parquet, into one in-memory shape (``normalize_pair_table``). Training, evaluation, stats and the
annotation app read pairs through here; ``pairs.py`` builds and writes them.

The published files lack our provenance columns: they are derived (``speech_id`` from the question
as ingest does, ``crisis_tier`` from the crisis screen), and a split comes from the hub's file naming
(``train-00000-of-00001.parquet``) when the file has no ``split`` column. Files without the flag columns
(the published data, pair files from before them) read with ``chosen_flags`` / ``rejected_flags`` null: the
reply checks run about 2,400 replies a second, too slow to add to every training load; a reader that needs
them (the stats report) computes the missing ones.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from .. import PRINCIPLE_KEYS
from ..errors import InputError
from ..safety.screen import screen
from .jsonl import iter_json_objects
from .pairs import (
    DEFAULT_BATCH,
    FLAG_COLUMNS,
    HEAD_COLUMNS,
    PROVENANCE_COLUMNS,
    SAFETY_COLUMNS,
    SPLITS,
    rating_columns,
)
from .records import text_id


def detect_principles(names: Sequence[str], path: Any) -> list[str]:
    """Principles from ``chosen_<p>_rating`` columns, in file order; each needs its rejected twin."""
    found = [n[len("chosen_"):-len("_rating")] for n in names if n.startswith("chosen_") and n.endswith("_rating")]
    if not found:
        raise InputError(path, "missing required column (no chosen_<principle>_rating columns)",
                         column=f"chosen_{PRINCIPLE_KEYS[0]}_rating")
    for p in found:
        if f"rejected_{p}_rating" not in names:
            raise InputError(path, "missing required column", column=f"rejected_{p}_rating")
    return found


def _split_from_name(path: Path) -> str:
    """``train-00000-of-00001.parquet`` (the hub's naming) and ``train.parquet`` both say train."""
    stem = path.name.split(".")[0].split("-")[0].lower()
    return {"validation": "dev", "valid": "dev", "val": "dev"}.get(stem, stem if stem in SPLITS else "unknown")


def normalize_pair_table(table: pa.Table, source: Any = "<table>", principles: Sequence[str] | None = None,
                         split: str | None = None) -> pa.Table:
    """One in-memory shape for our files and the published PsychoCounsel-Preference files.

    Required: the five text columns and both ratings of every principle (``principles=None``:
    detected from the columns). Columns missing in the published data are derived: crisis_tier =
    the crisis screen's tier of the question, speech_id = text_id(question) (ingest's Speech.id rule),
    response ids = text_id(speech_id, model) (the paper draws 4 distinct models per speech), split
    from ``split`` or the file name, scores = mean of the ratings (the paper's overall). Ratings
    become float64 so int and float files mix. Extra columns (the published ``ID``, ``prefID``) are
    kept after ours.
    """
    names = table.column_names
    principles = list(principles) if principles is not None else detect_principles(names, source)
    rcols = rating_columns(principles)
    for col in (*HEAD_COLUMNS, *rcols):
        if col not in names:
            raise InputError(source, "missing required column", column=col)
    cols: dict[str, pa.ChunkedArray] = {}
    for col in HEAD_COLUMNS:
        if not (pa.types.is_string(table[col].type) or pa.types.is_large_string(table[col].type)):
            raise InputError(source, f"expected text, found {table[col].type}", column=col)
        cols[col] = table[col].cast(pa.string())
        if cols[col].null_count:
            raise InputError(source, f"{cols[col].null_count} missing values", column=col)
    for col in rcols:
        if not (pa.types.is_integer(table[col].type) or pa.types.is_floating(table[col].type)):
            raise InputError(source, f"expected numeric ratings, found {table[col].type}", column=col)
        cols[col] = table[col].cast(pa.float64())
        if cols[col].null_count:
            raise InputError(source, f"{cols[col].null_count} missing ratings", column=col)
    n = table.num_rows
    if "crisis_tier" in names:
        cols["crisis_tier"] = table["crisis_tier"].cast(pa.string())
    else:
        tiers: dict[str, str] = {}  # a speech has up to 6 pairs: screen each question once
        cols["crisis_tier"] = pa.chunked_array([pa.array(
            [tiers.get(q) or tiers.setdefault(q, screen(q, learned=False).tier) for q in cols["question"].to_pylist()],
            pa.string())])
    for col in FLAG_COLUMNS:
        cols[col] = _flag_column(table, col, source) if col in names else pa.chunked_array(
            [pa.nulls(n, pa.list_(pa.string()))])
    if "speech_id" in names:
        cols["speech_id"] = table["speech_id"].cast(pa.string())
    else:
        sids = [text_id(q) for q in cols["question"].to_pylist()]
        cols["speech_id"] = pa.chunked_array([pa.array(sids, pa.string())])
    for side in ("chosen", "rejected"):
        if f"{side}_id" in names:
            cols[f"{side}_id"] = table[f"{side}_id"].cast(pa.string())
        else:
            ids = [text_id(s, m) for s, m in zip(cols["speech_id"].to_pylist(), cols[f"{side}_model"].to_pylist())]
            cols[f"{side}_id"] = pa.chunked_array([pa.array(ids, pa.string())])
    if split is not None:
        cols["split"] = pa.chunked_array([pa.array([split] * n, pa.string())])
    elif "split" in names:
        cols["split"] = table["split"].cast(pa.string())
    else:
        guess = _split_from_name(Path(str(source)))
        cols["split"] = pa.chunked_array([pa.array([guess] * n, pa.string())])
    for side in ("chosen", "rejected"):
        if f"{side}_score" in names:
            cols[f"{side}_score"] = table[f"{side}_score"].cast(pa.float64())
        else:
            ratings = [cols[f"{side}_{p}_rating"] for p in principles]
            total = ratings[0]
            for r in ratings[1:]:
                total = pc.add(total, r)
            cols[f"{side}_score"] = pc.divide(total, float(len(principles)))
    ordered = [*HEAD_COLUMNS, *rcols, *SAFETY_COLUMNS, *PROVENANCE_COLUMNS]
    extras = [c for c in names if c not in ordered]
    return pa.table({**{c: cols[c] for c in ordered}, **{c: table[c] for c in extras}})


def _flag_column(table: pa.Table, col: str, source: Any) -> pa.ChunkedArray:
    """A flag column as lists of kinds; a JSONL column of empty lists reads as list<null>, cast like the rest."""
    typ = table[col].type
    if not (pa.types.is_list(typ) or pa.types.is_large_list(typ) or pa.types.is_null(typ)):
        raise InputError(source, f"expected a list of flag kinds, found {typ}", column=col)
    try:
        return table[col].cast(pa.list_(pa.string()))
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as e:
        raise InputError(source, f"expected a list of flag kinds: {e}", column=col) from None


def _jsonl_tables(path: Path, chunk: int = DEFAULT_BATCH) -> Iterator[pa.Table]:
    """JSONL in chunks of rows, each row checked against the first row's fields (line numbers kept)."""
    keys: list[str] | None = None
    rows: list[dict[str, Any]] = []
    for i, row in iter_json_objects(path):
        keys = keys or list(row)
        missing = next((k for k in keys if k not in row), None)
        if missing:
            raise InputError(path, "missing field", line=i, column=missing)
        for k, v in row.items():
            # 4 and 4.5 may share a column (G-Eval floats next to integral ones): read all as float.
            if isinstance(v, int) and not isinstance(v, bool) and k.endswith(("_rating", "_score")):
                row[k] = float(v)
        rows.append(row)
        if len(rows) >= chunk:
            yield _rows_table(rows, path, i)
            rows = []
    if keys is None:
        raise InputError(path, "no pairs in file")
    if rows:
        yield _rows_table(rows, path, None)


def _rows_table(rows: list[dict[str, Any]], path: Path, line: int | None) -> pa.Table:
    try:
        return pa.Table.from_pylist(rows)
    except (pa.ArrowInvalid, pa.ArrowTypeError) as e:
        raise InputError(path, f"inconsistent field types: {e}", line=line) from None


def _normalized_chunks(path: str | Path, principles: Sequence[str] | None,
                       split: str | None) -> Iterator[pa.Table]:
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "pair file not found")
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        try:
            pf = pq.ParquetFile(path)
        except (pa.ArrowInvalid, OSError) as e:
            raise InputError(path, f"not a readable parquet file: {e}") from None
        # Validate the schema up front, so an empty file with wrong columns still fails.
        yield normalize_pair_table(pf.schema_arrow.empty_table(), path, principles, split)
        for batch in pf.iter_batches(batch_size=DEFAULT_BATCH):
            yield normalize_pair_table(pa.Table.from_batches([batch]), path, principles, split)
    elif suffix in (".jsonl", ".json"):
        for table in _jsonl_tables(path):
            yield normalize_pair_table(table, path, principles, split)
    else:
        raise InputError(path, f"unknown pair file type {suffix!r} (expected .parquet or .jsonl)")


def load_pair_table(path: str | Path, principles: Sequence[str] | None = None,
                    split: str | None = None) -> pa.Table:
    """Read one pair file (ours or the published schema; parquet or jsonl) into the normalised shape."""
    chunks = list(_normalized_chunks(path, principles, split))
    try:
        return pa.concat_tables(chunks, promote_options="permissive")
    except (pa.ArrowInvalid, pa.ArrowTypeError) as e:
        raise InputError(path, f"inconsistent column types across rows: {e}") from None


def read_pairs(path: str | Path, principles: Sequence[str] | None = None,
               split: str | None = None) -> Iterator[dict[str, Any]]:
    """Rows of a pair file as dicts in the normalised shape, streamed in batches (bounded memory)."""
    for table in _normalized_chunks(path, principles, split):
        yield from table.to_pylist()
