"""Pairs stage: judged responses -> preference pairs in the PsychoCounsel-Preference schema.

Design choices (each one a place where the paper leaves room):

* Splits are by speech, never by response, so no client speech is seen in training and in test.
  ``split_of`` draws a speech's split from a hash of (seed, speech_id), not from a shuffle of the
  whole list: a speech keeps its split when more speeches are added later, so a grown run never
  leaks old test speeches into train. The price is that split sizes are binomial, not exact
  (10% of 26,483 speeches: 2,648 +- 49). The test interval is drawn first, so changing
  ``dev_frac`` never moves a test speech.
* Train and dev get the paper's train-style pairs: every response pair of a speech with an overall
  gap >= ``min_gap`` (paper: 1.0 on the 1-5 mean, up to 6 pairs from 4 responses). Dev is carved
  from the training speeches to pick checkpoints (paper: 10%), so it must look like train.
* Test gets one pair per speech, best vs worst (paper). It uses the same ``min_gap``: a best-worst
  pair a fraction of a point apart is mostly judge noise, and a reward model's test accuracy on it
  would measure that noise. Call with another ``min_gap`` for test if you want harder pairs.
* Ties (equal overall) are never pairs, whatever ``min_gap`` is: there is no label to learn.
* Safety veto (``safety_floor``, ``safety_margin``): a response whose safety score is at or below
  the floor is never chosen, and a pair whose chosen side scores ``margin`` or more below its
  rejected side on safety is dropped; both are counted. The score is the one that orders the run:
  the judge's own, or the calibrated one when calibration is on. The overall score averages safety with six
  other principles, so without this a warm but unsafe reply can win (an outside check found 662
  published train pairs, 1.9%, whose rejected response has the higher safety rating).
* Flag veto (``flag_veto``): a pair whose chosen response carries one of these reply-check flags
  (``safety.responses``: a retired crisis number, method information, medication advice, ...) is
  dropped and counted (``flagged_chosen``), like the safety veto. The judge's safety score averages
  many things; a flag names the words, so a warm reply that says "take 50mg of sertraline" never wins.
* Every pair carries the crisis screen's tier of its question (``crisis_tier``), so a user can see
  and filter the pairs on speeches that show risk, and the kinds of each side's reply-check flags
  (``chosen_flags``, ``rejected_flags``: lists of kinds, empty when no rule fired).
* Ratings are written as integers when every rating in the run is integral (a JSON judge, like
  the published data), else as floats rounded to 3 decimals (G-Eval expectations; 3 decimals is
  far below the judge's own noise). ``ratings="int"|"float"`` forces one.

Files: ``out_dir/{split}.{parquet,jsonl}`` in the released schema, then ``crisis_tier``, the two flag
columns and the provenance columns; ``datasets.load_dataset(out_dir)`` reads the folder as one dataset. TRL's copies
go beside it, in ``<out_dir>-trl/{split}.{parquet,jsonl}`` (other columns: inside the folder they
would break that load), with only ``prompt, chosen, rejected`` in TRL's conversational preference
format (``prompt=[{"role": "user", ...}]``, ``chosen=[{"role": "assistant", ...}]``), which
DPOTrainer and RewardTrainer read directly.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections import Counter
from collections.abc import Iterable, Sequence
from itertools import combinations
from pathlib import Path
from typing import Any, Literal

import pyarrow as pa
import pyarrow.parquet as pq

from .. import PRINCIPLE_KEYS
from ..errors import UserError
from ..safety.screen import screen
from . import atomic
from .records import Pair, ScoredResponse, reply_flags

SPLITS = ("train", "dev", "test")
HEAD_COLUMNS = ("question", "chosen", "rejected", "chosen_model", "rejected_model")
# right after the released schema (head + ratings), so a filter finds them; the flag columns are lists of kinds
SAFETY_COLUMNS = ("crisis_tier", "chosen_flags", "rejected_flags")
FLAG_COLUMNS = ("chosen_flags", "rejected_flags")
PROVENANCE_COLUMNS = ("speech_id", "chosen_id", "rejected_id", "split", "chosen_score", "rejected_score")
# Overall is a mean of 7 ratings: 4.142857... - 3.142857... can land a hair under 1.0 in floats.
_EPS = 1e-9
# Rows per parquet row group / per flush: bounds memory to a few MB of text per split.
DEFAULT_BATCH = 1000


def rating_columns(principles: Sequence[str]) -> list[str]:
    return [c for p in principles for c in (f"chosen_{p}_rating", f"rejected_{p}_rating")]


def pair_columns(principles: Sequence[str] = PRINCIPLE_KEYS) -> list[str]:
    """Column order of our pair files: released schema first, the crisis tier and flags, provenance after it."""
    return [*HEAD_COLUMNS, *rating_columns(principles), *SAFETY_COLUMNS, *PROVENANCE_COLUMNS]


def pair_schema(principles: Sequence[str] = PRINCIPLE_KEYS, integer_ratings: bool = True) -> pa.Schema:
    rating_type = pa.int64() if integer_ratings else pa.float64()
    fields = [pa.field(c, pa.string()) for c in HEAD_COLUMNS]
    fields += [pa.field(c, rating_type) for c in rating_columns(principles)]
    fields += [pa.field(c, pa.list_(pa.string()) if c in FLAG_COLUMNS else pa.string()) for c in SAFETY_COLUMNS]
    fields += [pa.field(c, pa.string()) for c in PROVENANCE_COLUMNS[:4]]
    fields += [pa.field(c, pa.float64()) for c in PROVENANCE_COLUMNS[4:]]
    return pa.schema(fields)


_MESSAGE = pa.list_(pa.struct([pa.field("role", pa.string()), pa.field("content", pa.string())]))
TRL_SCHEMA = pa.schema([pa.field("prompt", _MESSAGE), pa.field("chosen", _MESSAGE), pa.field("rejected", _MESSAGE)])
TRL_STANDARD_SCHEMA = pa.schema([pa.field(c, pa.string()) for c in ("prompt", "chosen", "rejected")])


# ---------------------------------------------------------------- splits

def split_of(speech_id: str, seed: int, dev_frac: float = 0.1, test_frac: float = 0.1) -> str:
    """The split of one speech, from a hash: stable under adding speeches (see module docstring).

    Defaults: the paper holds out test speeches and carves a 10% dev split from train.
    """
    if dev_frac < 0 or test_frac < 0 or dev_frac + test_frac > 1:
        raise UserError(f"pairs: dev_frac={dev_frac} and test_frac={test_frac} must be >= 0 and sum to <= 1")
    digest = hashlib.blake2b(f"{seed}\x1f{speech_id}".encode(), digest_size=8).digest()
    u = int.from_bytes(digest, "big") / 2**64  # uniform in [0, 1)
    if u < test_frac:
        return "test"
    if u < test_frac + dev_frac:
        return "dev"
    return "train"


def split_sizes(speech_ids: Iterable[str], seed: int, dev_frac: float = 0.1,
                test_frac: float = 0.1) -> dict[str, int]:
    """Speeches per split, every split listed (0 when empty), for logs and reports."""
    counts = Counter(split_of(sid, seed, dev_frac, test_frac) for sid in speech_ids)
    return {s: counts.get(s, 0) for s in SPLITS}


# ---------------------------------------------------------------- pairs

VETO_REASONS = ("unsafe_chosen", "less_safe", "flagged_chosen")


def safety_veto(hi: ScoredResponse, lo: ScoredResponse, floor: float | None, margin: float | None) -> str | None:
    """Why ``hi`` may not be chosen over ``lo`` (``VETO_REASONS``), or None. Reads each response's
    ``safety`` (the calibrated score when calibration orders the run), else the judge's own."""
    if floor is None and margin is None:
        return None
    safety = []
    for r in (hi, lo):
        s = r.safety if r.safety is not None else r.scores.get("safety")
        if s is None:
            raise ValueError(f"response {r.response_id} has no safety score; the safety veto needs one "
                             "(pairs.safety_floor and pairs.safety_margin: null turn it off)")
        safety.append(s)
    if floor is not None and safety[0] <= floor + _EPS:
        return "unsafe_chosen"
    if margin is not None and safety[1] - safety[0] >= margin - _EPS:
        return "less_safe"
    return None


def build_pairs(question: str, speech_id: str, split: str, responses: list[ScoredResponse],
                min_gap: float = 1.0, *, safety_floor: float | None = None, safety_margin: float | None = None,
                flag_veto: Iterable[str] = (), vetoed: Counter[str] | None = None) -> list[Pair]:
    """Preference pairs of one speech (rules in the module docstring); chosen = higher overall.

    Order is deterministic: responses ranked by (overall desc, response_id), then train/dev
    pairs in rank order (i < j). Failed judgments must be filtered out before this call; a
    NaN overall here is a bug upstream, so it raises instead of being silently skipped.
    ``safety_floor`` / ``safety_margin`` (None: off, the paper's rule alone; the pipeline passes the
    config's) veto pairs after the gap rule, then ``flag_veto`` (flag kinds; empty: off) drops a pair whose
    chosen side carries one of them; each vetoed pair is counted in ``vetoed`` by reason. The flags of every
    response that reaches a candidate pair are computed here (``ScoredResponse.flags``) unless given.
    A test speech whose best-vs-worst pair is vetoed has no pair (its best response is not replaced).
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    if min_gap < 0:
        raise ValueError(f"min_gap must be >= 0, got {min_gap}")
    seen: set[str] = set()
    for r in responses:
        if r.speech_id != speech_id:
            raise ValueError(f"response {r.response_id} belongs to speech {r.speech_id}, not {speech_id}")
        if r.response_id in seen:
            raise ValueError(f"response {r.response_id} appears twice for speech {speech_id}")
        if not math.isfinite(r.overall):
            raise ValueError(f"response {r.response_id} has overall={r.overall}; failed judgments never reach pairs")
        seen.add(r.response_id)
    ranked = sorted(responses, key=lambda r: (-r.overall, r.response_id))
    veto_kinds = frozenset(flag_veto)

    def flags(r: ScoredResponse) -> tuple[str, ...]:
        if r.flags is None:
            r.flags = reply_flags(r.text)
        return r.flags

    def keep(hi: ScoredResponse, lo: ScoredResponse) -> bool:
        gap = hi.overall - lo.overall
        if not (gap > _EPS and gap >= min_gap - _EPS):
            return False
        why = safety_veto(hi, lo, safety_floor, safety_margin)
        if why is None and veto_kinds.intersection(flags(hi)):
            why = "flagged_chosen"
        if why is not None and vetoed is not None:
            vetoed[why] += 1
        return why is None

    if split == "test":
        candidates = [(ranked[0], ranked[-1])] if len(ranked) >= 2 else []
    else:
        candidates = list(combinations(ranked, 2))
    kept = [(hi, lo) for hi, lo in candidates if keep(hi, lo)]
    for hi, lo in kept:  # both sides' flags go into the pair files
        flags(hi), flags(lo)
    # The rules' tier, not the learned layer's: `pairs` reruns on every `run` and must stay
    # seconds at 26k speeches; the learned layer reads ~40 speeches/s (`psychocounsel screen` runs it).
    tier = screen(question, learned=False).tier if kept else "none"
    return [Pair(split, speech_id, question, hi, lo, tier) for hi, lo in kept]


def _rating(value: float, where: str) -> float:
    if value is None or not math.isfinite(value):
        raise ValueError(f"{where}: rating is {value}; failed judgments never reach pairs")
    return round(float(value), 3)


def pair_row(pair: Pair, principles: Sequence[str] = PRINCIPLE_KEYS) -> dict[str, Any]:
    """One pair as a row of our schema (ratings as floats rounded to 3 decimals)."""
    row: dict[str, Any] = {
        "question": pair.question, "chosen": pair.chosen.text, "rejected": pair.rejected.text,
        "chosen_model": pair.chosen.model, "rejected_model": pair.rejected.model,
    }
    for p in principles:
        for side, resp in (("chosen", pair.chosen), ("rejected", pair.rejected)):
            if p not in resp.scores:
                raise ValueError(f"response {resp.response_id}: no score for principle {p!r}")
            row[f"{side}_{p}_rating"] = _rating(resp.scores[p], f"response {resp.response_id} {p}")
    row["crisis_tier"] = pair.crisis_tier
    for side, resp in (("chosen", pair.chosen), ("rejected", pair.rejected)):
        row[f"{side}_flags"] = list(resp.flags if resp.flags is not None else reply_flags(resp.text))
    row.update(speech_id=pair.speech_id, chosen_id=pair.chosen.response_id, rejected_id=pair.rejected.response_id,
               split=pair.split, chosen_score=float(pair.chosen.overall), rejected_score=float(pair.rejected.overall))
    return row


def trl_row(row: dict[str, Any], trl_format: str = "conversational") -> dict[str, Any]:
    """TRL preference row: explicit prompt, chosen/rejected as assistant turns (the paper's chat input)."""
    if trl_format == "standard":
        return {"prompt": row["question"], "chosen": row["chosen"], "rejected": row["rejected"]}
    return {"prompt": [{"role": "user", "content": row["question"]}],
            "chosen": [{"role": "assistant", "content": row["chosen"]}],
            "rejected": [{"role": "assistant", "content": row["rejected"]}]}


# ---------------------------------------------------------------- writing

class _SplitFiles:
    """Temp files of one split, written in batches; renamed into place only when everything succeeded."""

    def __init__(self, out_dir: Path, trl_dir: Path, split: str, formats: Sequence[str], schema: pa.Schema,
                 trl_format: str | None):
        self.split, self.formats, self.schema, self.trl_format = split, formats, schema, trl_format
        self.trl_schema = TRL_STANDARD_SCHEMA if trl_format == "standard" else TRL_SCHEMA
        self.temps: dict[str, Path] = {}  # key -> temp path
        self.finals: dict[str, Path] = {}
        self.writers: dict[str, Any] = {}
        self.buffer: list[dict[str, Any]] = []
        try:
            for fmt in formats:
                self._open(fmt, out_dir / f"{split}.{fmt}", fmt, schema)
                if trl_format:
                    self._open(f"trl_{fmt}", trl_dir / f"{split}.{fmt}", fmt, self.trl_schema)
        except BaseException:
            self.discard()
            raise

    def _open(self, key: str, final: Path, fmt: str, schema: pa.Schema) -> None:
        tmp = atomic.make_temp(final)
        self.temps[key], self.finals[key] = tmp, final
        self.writers[key] = pq.ParquetWriter(tmp, schema) if fmt == "parquet" else open(tmp, "w", encoding="utf-8")

    def flush(self) -> None:
        if not self.buffer:
            return
        trl_rows = [trl_row(r, self.trl_format) for r in self.buffer] if self.trl_format else []
        for key, w in self.writers.items():
            rows = trl_rows if key.startswith("trl_") else self.buffer
            if isinstance(w, pq.ParquetWriter):
                w.write_table(pa.Table.from_pylist(rows, schema=w.schema))
            else:
                w.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
        self.buffer = []

    def close(self) -> None:
        for w in self.writers.values():
            w.close()

    def discard(self) -> None:
        self.close()
        for tmp in self.temps.values():
            tmp.unlink(missing_ok=True)


def _ratings_to_int(tmp: Path, fmt: str, columns: list[str], schema: pa.Schema) -> None:
    """Rewrite a finished temp file with integer ratings, batch by batch (bounded memory)."""
    out = tmp.with_name(tmp.name + ".int")
    try:
        if fmt == "parquet":
            with pq.ParquetWriter(out, schema) as w:
                for batch in pq.ParquetFile(tmp).iter_batches(batch_size=DEFAULT_BATCH):
                    w.write_table(pa.Table.from_batches([batch]).cast(schema))
        else:
            with open(tmp, encoding="utf-8") as src, open(out, "w", encoding="utf-8") as dst:
                for line in src:
                    row = json.loads(line)
                    for c in columns:
                        row[c] = int(row[c])
                    dst.write(json.dumps(row, ensure_ascii=False) + "\n")
        os.replace(out, tmp)
    finally:
        out.unlink(missing_ok=True)


def trl_folder(out_dir: str | Path) -> Path:
    """Where TRL's copies of a pair folder go: beside it, ``<out_dir>-trl`` (runs/demo/pairs-trl)."""
    out_dir = Path(out_dir)
    return out_dir.with_name(out_dir.name + "-trl")


def write_pairs(pairs: Iterable[Pair], out_dir: str | Path, formats: Sequence[str] = ("parquet", "jsonl"),
                principles: Sequence[str] = PRINCIPLE_KEYS,
                trl_format: Literal["conversational", "standard"] | None = "conversational",
                ratings: Literal["auto", "int", "float"] = "auto",
                batch_size: int = DEFAULT_BATCH, trl_dir: str | Path | None = None,
                allow_empty: bool = False) -> dict[str, list[Path]]:
    """Stream pairs into one file per split and format; returns ``{split: [paths]}``.

    Atomic: everything goes to temp files beside the targets, fsynced and renamed into place only
    after the last pair was written (``atomic.py``), so an error or a kill midway leaves the previous
    files untouched; an error leaves no partial file behind, and the temp files a kill left are removed
    by the next call for the same folder. A split with no pairs gets no file; a stale file of ours for
    that split (from an earlier run in the same folder) is removed so no one trains on it. No pair at
    all while pair files exist is a ``UserError`` unless ``allow_empty``: an upstream failure that
    emptied the input must not delete a dataset.
    Paths per split: ours in ``formats`` order, then the TRL files (``trl_dir``, by default
    ``trl_folder(out_dir)``, ``{split}.{fmt}``). TRL files an earlier version wrote inside the folder
    (``out_dir/trl/``) are removed: they made ``load_dataset(out_dir)`` fail.
    """
    formats = list(dict.fromkeys(formats))
    bad = [f for f in formats if f not in ("parquet", "jsonl")]
    if bad or not formats:
        raise UserError(f"pairs: formats must be parquet and/or jsonl, got {list(formats)}")
    if trl_format not in (None, "conversational", "standard"):
        raise UserError(f"pairs: trl_format must be conversational, standard or none, got {trl_format!r}")
    if ratings not in ("auto", "int", "float"):
        raise UserError(f"pairs: ratings must be auto, int or float, got {ratings!r}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    trl_dir = Path(trl_dir) if trl_dir is not None else trl_folder(out_dir)
    ours = [f"{split}.{fmt}" for split in SPLITS for fmt in ("parquet", "jsonl")]
    for folder in (out_dir, trl_dir):
        atomic.remove_stale_temps(folder, ours)
    rcols = rating_columns(principles)
    float_schema = pair_schema(principles, integer_ratings=False)
    files: dict[str, _SplitFiles] = {}
    all_integral = True
    try:
        for pair in pairs:
            if pair.split not in SPLITS:
                raise ValueError(f"pair of speech {pair.speech_id}: split must be one of {SPLITS}, got {pair.split!r}")
            row = pair_row(pair, principles)
            if ratings == "int":
                bad_col = next((c for c in rcols if not float(row[c]).is_integer()), None)
                if bad_col:
                    raise UserError(f"pairs: ratings='int' but {bad_col}={row[bad_col]} "
                                    f"(pair of speech {pair.speech_id})")
            elif all_integral:
                all_integral = all(float(row[c]).is_integer() for c in rcols)
            sf = files.get(pair.split)
            if sf is None:
                sf = files[pair.split] = _SplitFiles(out_dir, trl_dir, pair.split, formats, float_schema, trl_format)
            sf.buffer.append(row)
            if len(sf.buffer) >= batch_size:
                sf.flush()
        for sf in files.values():
            sf.flush()
            sf.close()
        if ratings == "int" or (ratings == "auto" and all_integral):
            int_schema = pair_schema(principles, integer_ratings=True)
            for sf in files.values():
                for fmt in formats:
                    _ratings_to_int(sf.temps[fmt], fmt, rcols, int_schema)
        if not files and not allow_empty:
            existing = [p for d in (out_dir, trl_dir) for p in map(d.joinpath, ours) if p.exists()]
            if existing:
                raise UserError(f"{out_dir}: no pairs to write; the {len(existing)} pair files there are kept "
                                "(allow_empty=True, or --allow-empty on the command line, replaces them with none)")
    except BaseException:
        for sf in files.values():
            sf.discard()
        raise
    result: dict[str, list[Path]] = {}
    try:
        for split, sf in files.items():
            for key, tmp in sf.temps.items():
                atomic.replace(tmp, sf.finals[key], sync_dir=False)
            result[split] = [sf.finals[k] for k in sorted(sf.finals, key=lambda k: k.startswith("trl_"))]
    except BaseException:
        for sf in files.values():
            sf.discard()  # temps already renamed are gone from their temp name; unlink is a no-op
        raise
    old_trl = out_dir / "trl"
    for split in SPLITS:
        for fmt in ("parquet", "jsonl"):
            (old_trl / f"{split}.{fmt}").unlink(missing_ok=True)
            if split not in result:
                (out_dir / f"{split}.{fmt}").unlink(missing_ok=True)
            if split not in result or trl_format is None:
                (trl_dir / f"{split}.{fmt}").unlink(missing_ok=True)
    if old_trl.is_dir() and not any(old_trl.iterdir()):
        old_trl.rmdir()
    for folder in (out_dir, trl_dir):  # the renames and removals above, durable at once
        if folder.is_dir():
            atomic.fsync_dir(folder)
    return {s: result[s] for s in SPLITS if s in result}
