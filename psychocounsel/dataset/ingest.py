"""Stage 1: read client speeches, clean them as the paper did, and say what was dropped and why.

    speeches file --iter_raw_rows--> RawRow --clean_speeches--> Speech      (ingest() = both, lazily)

Sources: JSONL, CSV/TSV (optionally .gz), Parquet, a Hugging Face ``save_to_disk`` directory, or a hub id
(streamed; needs a network). JSONL and CSV are read one line at a time and Parquet one record batch at a
time, so a million-row file costs the memory of one batch plus the dedup index.

Cleaning, in this order (the paper keeps speeches of 100-1,000 characters, then deduplicates):
1. normalise: Unicode NFC, drop zero-width characters, collapse whitespace runs to one space, strip;
2. length bounds on the normalised text, before PII masking, so the kept set does not depend on
   ``scrub_pii``;
3. PII masking (``scrub_pii``), before the id is computed and before anything could be sent to a model;
4. exact duplicates (same cleaned text, hence same ``text_id``);
5. near duplicates: Jaccard >= ``near_dup_threshold`` on word 3-gram shingles (``dedup.NearDupIndex``).
   The first speech seen is kept.

Bad input raises ``InputError`` naming file and line, or with ``on_bad_row: skip`` the row is counted as
``bad_row``. A missing column or an empty file is always an error: skipping every row would hide it.
"""

from __future__ import annotations

import csv
import gzip
import importlib.resources
import json
import math
import re
import unicodedata
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..config import SpeechesConfig
from .dedup import NearDupIndex
from ..errors import InputError, UserError
from .pii.scrub import scrub
from .pii.spans import KINDS as PII_KINDS
from .records import Speech, text_id

DROP_REASONS = ("bad_row", "too_short", "too_long", "duplicate", "near_duplicate")
EXAMPLES_PER_REASON = 3  # enough to see the pattern in a report without flooding it
SNIPPET_CHARS = 160
PARQUET_BATCH_ROWS = 1024  # ~1 MB of 1,000-char speeches per batch
_SUFFIXES = {".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "jsonl", ".csv": "csv", ".tsv": "csv",
             ".parquet": "parquet", ".pq": "parquet"}
_HUB_ID = re.compile(r"^[\w.-]+(/[\w.-]+)?$")


@dataclass
class IngestReport:
    """What happened to every row read. Invariant once iteration ends: read == kept + sum(dropped)."""

    read: int = 0
    kept: int = 0
    dropped: dict[str, int] = field(default_factory=lambda: dict.fromkeys(DROP_REASONS, 0))
    pii: dict[str, int] = field(default_factory=lambda: dict.fromkeys(PII_KINDS, 0))
    examples: dict[str, list[dict]] = field(default_factory=dict)
    pii_scrubbed: bool = False  # so a report with pii all zero can say "not scrubbed" rather than "none found"

    def drop(self, reason: str, source: str, **detail: Any) -> None:
        self.dropped[reason] = self.dropped.get(reason, 0) + 1
        shown = self.examples.setdefault(reason, [])
        if len(shown) < EXAMPLES_PER_REASON:
            shown.append({"source": source, **detail})

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def summary_lines(self) -> list[str]:
        lines = [f"read {self.read:,} rows, kept {self.kept:,} speeches"]
        dropped = ", ".join(f"{r} {n:,}" for r, n in self.dropped.items() if n)
        lines.append(f"dropped: {dropped or 'none'}")
        for reason, shown in self.examples.items():
            for ex in shown:
                extra = {k: v for k, v in ex.items() if k not in ("source", "text")}
                detail = ", ".join(f"{k}={v}" for k, v in extra.items())
                text = f' "{ex["text"]}"' if "text" in ex else ""
                lines.append(f"  {reason} at {ex['source']}" + (f" ({detail})" if detail else "") + text)
        if self.pii_scrubbed:
            lines.append("pii masked in kept speeches: " + ", ".join(f"[{k}] {n:,}" for k, n in self.pii.items()))
        else:
            lines.append("pii: not scrubbed (set speeches.scrub_pii: true to mask names, places, addresses, contacts, IDs)")
        return lines


@dataclass(slots=True)
class RawRow:
    """One row as read, before cleaning. ``source`` is "file:line" (JSONL/CSV) or "file:row" (Parquet/HF)."""

    text: str
    source: str
    topic: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)


# ---------------------------------------------------------------------------------------------- reading


def resolve_path(path: str, base_dir: Path | None = None) -> str:
    """Where ``speeches.path`` points. "demo" is the packaged demo file; a relative path is taken from
    ``base_dir`` (the config file's folder) so a config works from any working directory. A string that is
    not a local path is returned unchanged: it may be a Hugging Face hub id."""
    if path == "demo":
        return str(importlib.resources.files("psychocounsel") / "data" / "demo_speeches.jsonl")
    p = Path(path).expanduser()
    if p.is_absolute() or base_dir is None:
        return str(p) if p.exists() or not _looks_like_hub_id(path) else path
    joined = Path(base_dir) / p
    if joined.exists():
        return str(joined)
    if p.exists():  # relative to the working directory, e.g. a --set override typed at the shell
        return str(p)
    return path if _looks_like_hub_id(path) else str(joined)


def _looks_like_hub_id(path: str) -> bool:
    return bool(_HUB_ID.match(path)) and not path.startswith(".") and _suffix_format(Path(path)) is None


def _suffix_format(p: Path) -> str | None:
    suffixes = [s.lower() for s in p.suffixes]
    if suffixes and suffixes[-1] == ".gz":
        suffixes.pop()
    return _SUFFIXES.get(suffixes[-1]) if suffixes else None


def _detect_format(cfg: SpeechesConfig, path: str) -> str:
    """jsonl | csv | parquet | hf | hub; raises for a missing local file or an unknown extension."""
    p = Path(path)
    if cfg.format == "hf":
        return "hf" if p.is_dir() else "hub"
    if cfg.format != "auto":
        if not p.is_file():
            raise InputError(path, "file not found" if not p.exists() else "not a file")
        return cfg.format
    if p.is_dir():
        return "hf"
    if p.is_file():
        fmt = _suffix_format(p)
        if fmt is None:
            raise InputError(path, f"unknown extension {''.join(p.suffixes) or '(none)'!r}: expected .jsonl, "
                                   ".csv, .tsv, .parquet (optionally .gz for jsonl/csv), a dataset folder, "
                                   "or set speeches.format")
        return fmt
    if _looks_like_hub_id(path):
        return "hub"
    raise InputError(path, "file not found")


def iter_raw_rows(cfg: SpeechesConfig, base_dir: Path | None = None,
                  report: IngestReport | None = None) -> Iterator[RawRow]:
    """Stream the rows of ``cfg.path``. The path and format are checked now; the file is read lazily.

    Bad rows raise ``InputError`` (``on_bad_row: error``) or are counted in ``report`` as ``bad_row``.
    """
    path = resolve_path(cfg.path, base_dir)
    fmt = _detect_format(cfg, path)
    report = report if report is not None else IngestReport()

    def bad(line: int | None, msg: str, column: str | None = None) -> None:
        if cfg.on_bad_row == "error":
            raise InputError(path, msg, line=line, column=column)
        report.read += 1
        where = f"{path}:{line}" if line is not None else path
        report.drop("bad_row", where, error=msg + (f" (column {column!r})" if column else ""))

    reader = {"jsonl": _iter_jsonl, "csv": _iter_csv, "parquet": _iter_parquet,
              "hf": _iter_hf_disk, "hub": _iter_hf_hub}[fmt]
    return reader(path, cfg, bad)


class _Columns:
    """Turns one record (a mapping) into a RawRow; knows which columns the config asks for."""

    def __init__(self, path: str, cfg: SpeechesConfig, bad: Callable):
        self.path, self.cfg, self.bad = path, cfg, bad
        self.checked = False

    def check(self, names: Iterable[str], line: int | None) -> None:
        """A configured column absent from the header (or the first JSONL object) is a config mistake."""
        names = list(names)
        for col in (self.cfg.text_column, self.cfg.id_column, self.cfg.topic_column):
            if col is not None and col not in names:
                shown = ", ".join(names[:12]) + (", ..." if len(names) > 12 else "")
                raise InputError(self.path, f"no such column; columns are: {shown or '(none)'}",
                                 line=line, column=col)
        self.checked = True

    def wanted(self, names: list[str]) -> list[str]:
        """Columns worth reading from a columnar file: the rest are never decoded."""
        cfg = self.cfg
        return [c for c in dict.fromkeys([cfg.text_column, cfg.id_column or "id", cfg.topic_column or "topic",
                                          "subtopic"]) if c in names]

    def row(self, rec: Mapping[str, Any], line: int, source: str) -> RawRow | None:
        cfg = self.cfg
        if cfg.text_column not in rec:
            return self.bad(line, "row has no text", cfg.text_column)
        text = rec[cfg.text_column]
        if not isinstance(text, str):
            what = "empty (null)" if text is None or (isinstance(text, float) and math.isnan(text)) \
                else f"of type {type(text).__name__}, expected a string"
            return self.bad(line, f"text is {what}", cfg.text_column)
        if not text.strip():
            return self.bad(line, "text is empty", cfg.text_column)
        topic = rec.get(cfg.topic_column or "topic")
        meta: dict[str, Any] = {}
        orig_id = rec.get(cfg.id_column or "id")
        if orig_id is not None and orig_id != "":
            meta["orig_id"] = str(orig_id)
        subtopic = rec.get("subtopic")
        if isinstance(subtopic, str) and subtopic:
            meta["subtopic"] = subtopic
        return RawRow(text=text, source=source, topic=str(topic) if topic not in (None, "") else None, meta=meta)


def _open_binary(path: str):
    return gzip.open(path, "rb") if path.lower().endswith(".gz") else open(path, "rb")


def _decode(raw: bytes, line: int) -> str:
    s = raw.decode("utf-8")
    return s.removeprefix("\ufeff") if line == 1 else s  # a BOM from Excel or Notepad is not text


def _utf8_error(e: UnicodeDecodeError) -> str:
    return f"not valid UTF-8 (byte 0x{e.object[e.start]:02x} at offset {e.start}); re-save the file as UTF-8"


def _iter_jsonl(path: str, cfg: SpeechesConfig, bad: Callable) -> Iterator[RawRow]:
    cols = _Columns(path, cfg, bad)
    any_line = False
    with _open_binary(path) as fh:
        for line_no, raw in enumerate(fh, 1):
            try:
                s = _decode(raw, line_no)
            except UnicodeDecodeError as e:
                bad(line_no, _utf8_error(e))
                any_line = True
                continue
            if not s.strip():
                continue  # blank lines (often a trailing newline) are not rows
            any_line = True
            try:
                rec = json.loads(s.rstrip("\r\n"))  # else an unclosed string reports the newline
            except json.JSONDecodeError as e:
                bad(line_no, f"malformed JSON: {e.msg} (char {e.pos + 1})")
                continue
            if not isinstance(rec, dict):
                bad(line_no, f"expected a JSON object, got {type(rec).__name__}")
                continue
            if not cols.checked:
                cols.check(rec.keys(), line_no)
            row = cols.row(rec, line_no, f"{path}:{line_no}")
            if row is not None:
                yield row
    if not any_line:
        raise InputError(path, "empty file: no rows")


def _iter_csv(path: str, cfg: SpeechesConfig, bad: Callable) -> Iterator[RawRow]:
    cols = _Columns(path, cfg, bad)
    # csv.reader pulls one line at a time with no read-ahead, so the first line it pulls after a record
    # is the next record's first line: that is how a multi-line quoted cell still gets its own line number.
    state = {"line": 0, "start": None}

    def lines(fh) -> Iterator[str]:
        for raw in fh:
            state["line"] += 1
            try:
                s = _decode(raw, state["line"])
            except UnicodeDecodeError as e:
                if not cols.checked:  # without a header nothing after it can be read
                    raise InputError(path, _utf8_error(e), line=state["line"]) from None
                bad(state["line"], _utf8_error(e))
                continue
            if state["start"] is None:
                state["start"] = state["line"]
            yield s

    delimiter = "\t" if Path(path.removesuffix(".gz")).suffix.lower() == ".tsv" else ","
    n_rows = 0
    with _open_binary(path) as fh:
        reader = csv.reader(lines(fh), delimiter=delimiter)
        try:
            header = next(reader)
        except StopIteration:
            raise InputError(path, "empty file: no header") from None
        except csv.Error as e:
            raise InputError(path, f"unreadable CSV header: {e}", line=state["start"]) from None
        cols.check(header, 1)
        state["start"] = None
        while True:
            try:
                fields = next(reader)
            except StopIteration:
                break
            except csv.Error as e:
                line, state["start"] = state["start"], None
                n_rows += 1
                bad(line, f"unreadable CSV row: {e}")
                continue
            line, state["start"] = state["start"], None
            if not fields or fields == [""]:
                continue
            n_rows += 1
            if len(fields) != len(header):
                bad(line, f"row has {len(fields)} fields, the header has {len(header)}")
                continue
            row = cols.row(dict(zip(header, fields)), line, f"{path}:{line}")
            if row is not None:
                yield row
    if n_rows == 0:
        raise InputError(path, "empty file: a header but no rows")


def _iter_parquet(path: str, cfg: SpeechesConfig, bad: Callable) -> Iterator[RawRow]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(path)
    except (pa.ArrowException, OSError) as e:
        raise InputError(path, f"not a readable Parquet file: {str(e).splitlines()[0]}") from None
    with pf:
        cols = _Columns(path, cfg, bad)
        names = pf.schema_arrow.names
        cols.check(names, None)
        if pf.metadata.num_rows == 0:
            raise InputError(path, "empty file: no rows")
        batches = pf.iter_batches(batch_size=PARQUET_BATCH_ROWS, columns=cols.wanted(names))
        yield from _iter_batches(path, batches, cols)


def _iter_batches(label: str, batches: Iterable[Any], cols: _Columns) -> Iterator[RawRow]:
    """Rows of Arrow record batches (or HF batch dicts); row numbers are 1-based like file lines."""
    n = 0
    for batch in batches:
        data = batch if isinstance(batch, dict) else batch.to_pydict()
        keys = list(data)
        for values in zip(*(data[k] for k in keys)):
            n += 1
            row = cols.row(dict(zip(keys, values)), n, f"{label}:{n}")
            if row is not None:
                yield row


def _iter_hf_disk(path: str, cfg: SpeechesConfig, bad: Callable) -> Iterator[RawRow]:
    import datasets

    try:
        ds = datasets.load_from_disk(path)
    except Exception as e:  # datasets raises FileNotFoundError, ValueError or its own types
        raise InputError(path, f"not a Hugging Face dataset folder (save_to_disk): {_first_line(e)}") from None
    label = path
    if isinstance(ds, datasets.DatasetDict):
        if cfg.split not in ds:
            raise InputError(path, f"no split {cfg.split!r}; splits are: {', '.join(ds)}", column="split")
        ds, label = ds[cfg.split], f"{path}[{cfg.split}]"
    cols = _Columns(path, cfg, bad)
    cols.check(ds.column_names, None)
    if len(ds) == 0:
        raise InputError(path, "empty dataset: no rows")
    # Arrow-backed and memory-mapped: iterating in batches reads from disk, it does not load the table.
    batches = ds.select_columns(cols.wanted(ds.column_names)).iter(batch_size=PARQUET_BATCH_ROWS)
    yield from _iter_batches(label, batches, cols)


def _iter_hf_hub(path: str, cfg: SpeechesConfig, bad: Callable) -> Iterator[RawRow]:
    """A hub id, streamed (needs a network, so no test covers it here)."""
    import datasets

    try:
        ds = datasets.load_dataset(path, split=cfg.split, streaming=True)
    except Exception as e:  # offline, unknown id, gated, bad split: all are one line for the user
        raise UserError(f"{path}: could not load Hugging Face dataset (split {cfg.split!r}): "
                        f"{type(e).__name__}: {_first_line(e)}") from None
    cols = _Columns(path, cfg, bad)
    n = 0
    for rec in ds:
        n += 1
        if not cols.checked:
            cols.check(rec.keys(), n)
        row = cols.row(rec, n, f"{path}[{cfg.split}]:{n}")
        if row is not None:
            yield row
    if n == 0:
        raise InputError(path, "empty dataset: no rows")


def _first_line(e: BaseException) -> str:
    s = str(e).strip()
    return s.splitlines()[0] if s else type(e).__name__


# --------------------------------------------------------------------------------------------- cleaning

_ZERO_WIDTH = dict.fromkeys(map(ord, "\u200b\u200c\u200d\u2060\ufeff"))


def normalise(text: str) -> str:
    """NFC, no zero-width characters, single spaces: the same speech typed twice compares equal."""
    return " ".join(unicodedata.normalize("NFC", text).translate(_ZERO_WIDTH).split())


def _snippet(text: str, scrub_pii: bool) -> str:
    if scrub_pii:
        text = scrub(text)[0]  # examples land in reports and logs: mask them like kept speeches
    return text if len(text) <= SNIPPET_CHARS else text[: SNIPPET_CHARS - 3] + "..."


def clean_speeches(rows: Iterable[RawRow], cfg: SpeechesConfig, report: IngestReport) -> Iterator[Speech]:
    """Normalise, bound, mask, deduplicate; yield kept speeches and count every drop in ``report``."""
    if cfg.min_chars > cfg.max_chars:
        raise UserError(f"speeches.min_chars ({cfg.min_chars}) is above speeches.max_chars ({cfg.max_chars})")
    report.pii_scrubbed = cfg.scrub_pii
    index = NearDupIndex(cfg.near_dup_threshold)
    seen: dict[str, int] = {}  # text_id -> index of the kept speech it equals
    sources: list[str] = []
    for row in rows:
        report.read += 1
        text = normalise(row.text)
        n = len(text)
        if n < cfg.min_chars or n > cfg.max_chars:
            reason = "too_short" if n < cfg.min_chars else "too_long"
            report.drop(reason, row.source, chars=n, text=_snippet(text, cfg.scrub_pii))
            continue
        counts = None
        if cfg.scrub_pii:
            text, counts = scrub(text)
        sid = text_id(text)
        if sid in seen:
            report.drop("duplicate", row.source, duplicate_of=sources[seen[sid]], text=_snippet(text, False))
            continue
        keys = index.band_keys(text)
        hit = index.find(text, keys)
        if hit is not None:
            seen[sid] = hit[0]
            report.drop("near_duplicate", row.source, duplicate_of=sources[hit[0]], jaccard=round(hit[1], 3),
                        text=_snippet(text, False))
            continue
        seen[sid] = index.add(text, keys)
        sources.append(row.source)
        if counts:
            for kind, c in counts.items():
                report.pii[kind] += c
        report.kept += 1
        yield Speech(id=sid, text=text, source=row.source, topic=row.topic, meta=dict(row.meta))
        if cfg.limit is not None and report.kept >= cfg.limit:
            return


def ingest(cfg: SpeechesConfig, base_dir: Path | None = None) -> tuple[Iterator[Speech], IngestReport]:
    """Lazily read and clean ``cfg.path``. Path and format errors raise now; row errors as you iterate.
    The report is complete once the iterator is exhausted (or stops at ``limit``)."""
    report = IngestReport(pii_scrubbed=cfg.scrub_pii)
    rows = iter_raw_rows(cfg, base_dir, report)

    def run() -> Iterator[Speech]:
        try:
            yield from clean_speeches(rows, cfg, report)
        finally:
            rows.close()  # stopping at `limit` closes the file now, not at garbage collection

    return run(), report
