"""The evaluation's inputs: the speech set (held-out questions of pair files, or a speeches file; a seeded
sample of N) and responses files (speech -> response) for a policy or reference that is not a model.

A speech's id is ``text_id`` of its normalised text, the ingest stage's rule, so the same speech has the same
id whether it came from our pair files, the published parquet or a speeches file.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Iterable

from ..config import SpeechesConfig
from ..errors import InputError, UserError
from .config import EvalConfig, SideConfig
from ..dataset.records import text_id


def _norm(text: str) -> str:
    """The ingest stage's normal form (NFC, no zero-width characters, single spaces): a speech typed
    slightly differently in a responses file still finds its response."""
    from ..dataset.ingest import normalise

    return normalise(str(text))


def _pair_files(path: Path) -> list[Path]:
    if path.is_file():
        return [path]
    for ext in ("parquet", "jsonl"):
        found = sorted(path.glob(f"*.{ext}"))
        if found:
            return found
    raise InputError(path, "no .parquet or .jsonl pair files in folder")


def sample_ids(ids: Iterable[str], n: int | None, seed: int) -> list[str]:
    """A seeded sample: speeches ordered by a hash of (seed, id), first n. Growing n keeps the old ones."""
    ordered = sorted(ids, key=lambda i: hashlib.blake2b(f"{seed}:{i}".encode(), digest_size=8).digest())
    return ordered if n is None else ordered[:n]


def load_speech_set(cfg: EvalConfig, base_dir: Path) -> list[tuple[str, str]]:
    """(speech id, text) of the evaluation's speeches, in sample order. id = text_id(normalised text)."""
    from ..dataset.ingest import ingest, resolve_path

    sc = cfg.speeches
    texts: dict[str, str] = {}
    if sc.source == "pairs":
        from ..dataset.pair_reader import read_pairs

        path = Path(resolve_path(sc.path, base_dir))
        if not path.exists():
            raise InputError(path, "pair file or folder not found (speeches.path)")
        for f in _pair_files(path):
            for row in read_pairs(f):
                if sc.split is None or row["split"] == sc.split:
                    t = _norm(row["question"])
                    texts.setdefault(text_id(t), t)
    else:
        it, _ = ingest(SpeechesConfig(path=sc.path, text_column=sc.text_column, min_chars=sc.min_chars,
                                      max_chars=sc.max_chars), base_dir)
        for s in it:
            texts.setdefault(text_id(s.text), s.text)
    if not texts:
        raise UserError(f"{sc.path}: no speeches" + (f" of split {sc.split!r}" if sc.source == "pairs" else ""))
    return [(i, texts[i]) for i in sample_ids(texts, sc.n, sc.seed)]


def read_responses_file(side: SideConfig, base_dir: Path) -> dict[str, str]:
    """speech id -> response, from a reference/policy responses file (jsonl, csv or parquet)."""
    from ..dataset.ingest import resolve_path

    path = Path(resolve_path(side.responses or "", base_dir))
    if not path.is_file():
        raise InputError(path, f"responses file of {side.name!r} not found")
    rows: list[tuple[int, dict]] = []
    if path.suffix.lower() == ".parquet":
        import pyarrow.parquet as pq

        rows = list(enumerate(pq.read_table(path).to_pylist(), 2))
    elif path.suffix.lower() == ".csv":
        import csv

        with open(path, encoding="utf-8", newline="") as f:
            rows = list(enumerate(csv.DictReader(f), 2))
    else:
        from ..dataset.jsonl import iter_json_objects

        rows = list(iter_json_objects(path))
    out: dict[str, str] = {}
    for line, row in rows:
        for col in (side.speech_column, side.response_column):
            if not isinstance(row.get(col), str):
                raise InputError(path, "missing or not text", line=line, column=col)
        out[text_id(_norm(row[side.speech_column]))] = row[side.response_column].strip()
    return out
