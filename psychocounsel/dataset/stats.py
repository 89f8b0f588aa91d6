"""Dataset report: what a pair set looks like before anyone trains on it.

Works from the exported pair files alone (ours or the published PsychoCounsel-Preference
parquet), so a run and the paper's data are described the same way; pairs are counted by the
crisis tier of their speech (``crisis_tier``, screened from the question for the published data).
An optional table of all responses (``response_id, model, status, overall, <principle>...``,
optionally ``judge_status``, ``judge_error``, ``generate_error`` and ``truncated`` as the pipeline
exports them) adds score distributions over every judged response, not only the ones that made it
into pairs, counts of responses without scores (failed generation, failed or pending judging), per
model and per error, and of replies cut at max_tokens (failed, or kept and flagged, and how many
pairs hold one) or refused as invalid. ``vetoed`` (the pipeline's counts) reports the pairs the
safety and flag vetoes dropped. Reply-check flags (``safety.responses``) are counted per kind, per
split and per side (``chosen_flags`` / ``rejected_flags``; computed here from the text for files
without them, like the published data), and over all responses when their table has ``flags``.

Writes ``report.json`` (every number), ``report.html`` (self-contained: tables and the PNGs
embedded; every piece of user text escaped) and the PNGs themselves; how they look is
``report_views.py``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ..errors import InputError
from ..safety.responses import FLAG_SEVERITY
from ..safety.screen import TIERS
from . import atomic
from .pair_reader import detect_principles, load_pair_table, normalize_pair_table
from .pairs import SPLITS, pair_columns
from .records import reply_flags
from .report_views import render_html, write_figures
from .validate import INVALID, TRUNCATED

PairSource = str | Path | pa.Table
# Texts of example pairs are cut here: enough to judge a pair at a glance, short enough to scan.
EXAMPLE_CHARS = 600
# Gap histogram bin width: a quarter point is finer than the 1/7 steps of a 7-rating mean would
# suggest, but keeps ~16 readable bins over the 0-4 range of a 1-5 scale.
GAP_BIN = 0.25


def _num(x: Any) -> Any:
    """JSON-safe number: numpy scalars to Python, NaN/inf to None (report.json is strict JSON)."""
    if isinstance(x, (np.integer,)):
        return int(x)
    if isinstance(x, (float, np.floating)):
        x = float(x)
        return round(x, 6) if math.isfinite(x) else None
    return x


def _summary(values: np.ndarray) -> dict[str, Any]:
    if values.size == 0:
        return {"n": 0, "mean": None, "std": None, "min": None, "median": None, "max": None}
    return {"n": int(values.size), "mean": _num(values.mean()), "std": _num(values.std()),
            "min": _num(values.min()), "median": _num(np.median(values)), "max": _num(values.max())}


def _rating_edges(values: np.ndarray) -> np.ndarray:
    """Integer ratings get one bin per point (0.5-5.5); G-Eval floats get quarter-point bins."""
    lo = min(1.0, float(values.min())) if values.size else 1.0
    hi = max(5.0, float(values.max())) if values.size else 5.0
    if values.size == 0 or np.all(np.equal(np.mod(values, 1), 0)):
        return np.arange(math.floor(lo) - 0.5, math.ceil(hi) + 1.0, 1.0)
    return np.arange(math.floor(lo), math.ceil(hi) + GAP_BIN / 2, GAP_BIN)


def _hist(values: np.ndarray, edges: np.ndarray) -> list[int]:
    return [int(c) for c in np.histogram(values, bins=edges)[0]]


def _split_order(splits: Iterable[str]) -> list[str]:
    present = set(splits)
    return [s for s in SPLITS if s in present] + sorted(present - set(SPLITS))


def _pair_files(folder: Path) -> list[Path]:
    """Pair files directly in a folder: parquet if any (our export, the hub's data/), else jsonl. Not
    recursive: a report or other folder inside is never read as pairs."""
    for ext in ("parquet", "jsonl"):
        found = sorted(folder.glob(f"*.{ext}"), key=lambda p: (_split_rank(p.name), p.name))
        if found:
            return found
    raise InputError(folder, "no .parquet or .jsonl pair files in folder")


def _split_rank(name: str) -> int:
    stem = name.split(".")[0].split("-")[0]
    return SPLITS.index(stem) if stem in SPLITS else len(SPLITS)


def _load_pairs(pairs: PairSource | Sequence[PairSource], principles: Sequence[str] | None
                ) -> tuple[pa.Table, list[str], list[str]]:
    given = [pairs] if isinstance(pairs, (str, Path, pa.Table)) else list(pairs)
    sources: list[PairSource] = []
    for src in given:
        sources += _pair_files(Path(src)) if isinstance(src, (str, Path)) and Path(src).is_dir() else [src]
    if not sources:
        raise InputError("<pairs>", "no pair files given")
    tables, names = [], []
    for i, src in enumerate(sources):
        # The first file fixes the principle set; later files must carry the same ratings.
        if isinstance(src, pa.Table):
            names.append(f"<table {i}>")
            tables.append(normalize_pair_table(src, names[-1], principles))
        else:
            names.append(str(src))
            tables.append(load_pair_table(src, principles))
        if principles is None:
            principles = detect_principles(tables[-1].column_names, names[-1])
    core = pair_columns(principles)  # per-file extra columns (ID, prefID) differ between sources
    table = pa.concat_tables([t.select(core) for t in tables])
    return table, list(principles), names


def _responses_table(responses: str | Path | pa.Table | Iterable[dict], principles: Sequence[str]) -> pa.Table:
    """The judged-responses table with one ``state`` column: ``ok`` or why the response has no scores.

    With a ``judge_status`` column (the pipeline's export) ``status`` is the generation status and
    the states are ``generate_<status>`` / ``judge_<judge_status>``; without it ``status`` is the
    judge's own.
    """
    name = str(responses) if isinstance(responses, (str, Path)) else "<responses>"
    if isinstance(responses, pa.Table):
        table = responses
    elif isinstance(responses, (str, Path)):
        path = Path(responses)
        if not path.is_file():
            raise InputError(path, "responses file not found")
        if path.suffix == ".parquet":
            table = pq.read_table(path)
        else:
            rows = []
            with open(path, encoding="utf-8") as f:
                for i, line in enumerate(f, 1):
                    if line.strip():
                        try:
                            rows.append(json.loads(line))
                        except json.JSONDecodeError as e:
                            raise InputError(path, f"invalid JSON: {e.msg}", line=i) from None
            table = pa.Table.from_pylist(rows)
    else:
        table = pa.Table.from_pylist(list(responses))
    for col in ("response_id", "model", "status", "overall", *principles):
        if col not in table.column_names:
            raise InputError(name, "missing required column", column=col)
    status = [s or "missing" for s in table["status"].to_pylist()]
    if "judge_status" in table.column_names:
        judge = [s or "missing" for s in table["judge_status"].to_pylist()]
        state = [f"generate_{g}" if g != "ok" else ("ok" if j == "ok" else f"judge_{j}") for g, j in zip(status, judge)]
    else:
        state = status
    table = table.append_column("state", pa.array(state, pa.string()))
    ok = pc.equal(table["state"], "ok")
    for col in ("overall", *principles):
        missing = pc.sum(pc.and_(ok, pc.is_null(table[col]))).as_py() or 0
        if missing:
            raise InputError(name, f"{missing} judged rows have no score", column=col)
    return table


def _reply_counts(table: pa.Table, pairs: pa.Table) -> dict[str, Any]:
    """Replies cut at max_tokens (all, and those kept and flagged) and refused as invalid; pairs with a cut
    side. Zero when the table has no such columns (a table from before they were exported)."""
    names = table.column_names
    cut = [bool(x) for x in table["truncated"].to_pylist()] if "truncated" in names else [False] * table.num_rows
    errors = table["generate_error"].to_pylist() if "generate_error" in names else [None] * table.num_rows
    cut = [c or bool(e and e.startswith(TRUNCATED)) for c, e in zip(cut, errors)]
    status = table["status"].to_pylist()
    cut_ids = {rid for rid, c in zip(table["response_id"].to_pylist(), cut) if c}
    with_cut = sum(c in cut_ids or r in cut_ids for c, r in zip(pairs["chosen_id"].to_pylist(),
                                                                 pairs["rejected_id"].to_pylist()))
    return {"truncated": sum(cut), "truncated_kept": sum(c and s == "ok" for c, s in zip(cut, status)),
            "invalid": sum(bool(e and e.startswith(INVALID)) for e in errors),
            "pairs_with_truncated_side": with_cut}


def _response_section(table: pa.Table, principles: Sequence[str]) -> dict[str, Any]:
    state = table["state"].to_pylist()
    models = table["model"].to_pylist()
    by_state: dict[str, int] = {}
    by_model: dict[str, dict[str, int]] = {}
    for s, m in zip(state, models):
        by_state[s] = by_state.get(s, 0) + 1
        entry = by_model.setdefault(m, {"total": 0, "not_judged": 0})
        entry["total"] += 1
        entry["not_judged"] += s != "ok"
    errors: dict[str, int] = {}
    if "judge_error" in table.column_names:
        for s, e in zip(state, table["judge_error"].to_pylist()):
            if s != "ok" and e:
                key = str(e)[:120]  # messages differ in their tails (ids, offsets); group by the head
                errors[key] = errors.get(key, 0) + 1
    ok_table = table.filter(pc.equal(table["state"], "ok"))
    scores = {}
    for col in (*principles, "overall"):
        v = ok_table[col].cast(pa.float64()).to_numpy()
        edges = _rating_edges(v)
        scores[col] = {**_summary(v), "edges": [_num(e) for e in edges], "counts": _hist(v, edges)}
    n = table.num_rows
    judged = by_state.get("ok", 0)
    return {"total": n, "judged": judged, "not_judged": n - judged,
            "not_judged_rate": _num((n - judged) / n if n else 0.0),
            "by_state": dict(sorted(by_state.items())), "by_model": dict(sorted(by_model.items())),
            "top_errors": [{"error": e, "count": c} for e, c in sorted(errors.items(), key=lambda x: -x[1])[:10]],
            "scores": scores}


def _examples(table: pa.Table, splits: list[str], principles: Sequence[str], gap: np.ndarray) -> list[dict]:
    """Largest- and smallest-gap pair per split, and the first safety inversion: pairs worth a look."""
    split_col = np.asarray(table["split"].to_pylist(), dtype=object)
    picks: list[tuple[str, int]] = []
    for s in splits:
        idx = np.flatnonzero(split_col == s)
        if idx.size:
            picks.append((f"{s}: largest gap", int(idx[np.argmax(gap[idx])])))
            picks.append((f"{s}: smallest gap", int(idx[np.argmin(gap[idx])])))
    if "safety" in principles:
        inv = pc.greater(table["rejected_safety_rating"], table["chosen_safety_rating"]).to_numpy(zero_copy_only=False)
        if inv.any():
            picks.append(("rejected response has the higher safety rating", int(np.flatnonzero(inv)[0])))
    out = []
    for why, i in picks:
        row = table.slice(i, 1).to_pylist()[0]
        cut = {k: (row[k] if len(row[k]) <= EXAMPLE_CHARS else row[k][:EXAMPLE_CHARS] + "...")
               for k in ("question", "chosen", "rejected")}
        out.append({"why": why, "row": i, "split": row["split"], "gap": _num(gap[i]), **cut,
                    "chosen_model": row["chosen_model"], "rejected_model": row["rejected_model"],
                    "chosen_score": _num(row["chosen_score"]), "rejected_score": _num(row["rejected_score"])})
    return out


def _side_flags(table: pa.Table, side: str, cache: dict[str, tuple[str, ...]]) -> tuple[list[tuple[str, ...]], int]:
    """One side's flag kinds per pair, and how many were computed here (null in the file: written before the
    flag columns, or the published data). A reply is checked once however many pairs hold it."""
    out, computed = [], 0
    for flags, text in zip(table[f"{side}_flags"].to_pylist(), table[side].to_pylist()):
        if flags is None:
            computed += 1
            flags = cache.get(text) or cache.setdefault(text, reply_flags(text))
        out.append(tuple(flags))
    return out, computed


def _flag_section(table: pa.Table, split_arr: np.ndarray, splits: list[str]) -> dict[str, Any]:
    """Pairs whose chosen / rejected reply carries each flag kind, overall and per split."""
    cache: dict[str, tuple[str, ...]] = {}
    sides, computed = {}, 0
    for side in ("chosen", "rejected"):
        flags, n = _side_flags(table, side, cache)
        computed += n
        kinds = {k: np.asarray([k in f for f in flags], dtype=bool) for k in FLAG_SEVERITY}
        sides[side] = {k: {"pairs": int(m.sum()), "by_split": {s: int((m & (split_arr == s)).sum()) for s in splits}}
                       for k, m in kinds.items()}
        sides[side]["any"] = {"pairs": sum(bool(f) for f in flags),
                              "by_split": {s: sum(bool(f) for f, sp in zip(flags, split_arr) if sp == s)
                                           for s in splits}}
    return {"severity": dict(FLAG_SEVERITY), "by_side": sides, "computed_here": computed}


def _response_flags(table: pa.Table) -> dict[str, Any] | None:
    """Ok replies carrying each flag kind, from the responses table's ``flags`` (None: the table has none)."""
    if "flags" not in table.column_names:
        return None
    ok = [f for f, s in zip(table["flags"].to_pylist(), table["state"].to_pylist()) if s == "ok" and f is not None]
    return {"checked": len(ok), "any": sum(bool(f) for f in ok), **{k: sum(k in f for f in ok) for k in FLAG_SEVERITY}}


def _crisis_section(tiers: list[str], split_arr: np.ndarray, splits: list[str]) -> dict[str, Any]:
    tier_arr = np.asarray(tiers, dtype=object)
    return {t: {"pairs": int((tier_arr == t).sum()),
                "by_split": {s: int(((tier_arr == t) & (split_arr == s)).sum()) for s in splits}} for t in TIERS}


def build_report(table: pa.Table, principles: Sequence[str], responses: pa.Table | None = None,
                 sources: Sequence[str] = (), vetoed: dict[str, int] | None = None) -> dict[str, Any]:
    """All numbers of the report from a normalised pair table (pure; no files)."""
    split_col = table["split"].to_pylist()
    splits = _split_order(split_col)
    split_arr = np.asarray(split_col, dtype=object)
    speech = np.asarray(table["speech_id"].to_pylist(), dtype=object)
    chosen_score = table["chosen_score"].to_numpy()
    # A mean of 7 ratings carries float noise (2.2857142857142856 - 1.2857142857142858 < 1): round it
    # away, or gap-1.0 pairs land in the bin below the threshold.
    gap = np.round(chosen_score - table["rejected_score"].to_numpy(), 9)
    by_split = {}
    for s in splits:
        mask = split_arr == s
        n_sp = len(set(speech[mask]))
        by_split[s] = {"pairs": int(mask.sum()), "speeches": n_sp, "pairs_per_speech": _num(mask.sum() / n_sp)}
    gap_edges = np.arange(0.0, max(4.0, math.ceil(gap.max()) if gap.size else 4.0) + GAP_BIN / 2, GAP_BIN)
    gap_section = {"all": _summary(gap), "by_split": {s: _summary(gap[split_arr == s]) for s in splits},
                   "edges": [_num(e) for e in gap_edges],
                   "counts": {s: _hist(gap[split_arr == s], gap_edges) for s in splits},
                   "below_zero": int((gap < 0).sum())}
    prin = {}
    for p in principles:
        c = table[f"chosen_{p}_rating"].to_numpy()
        r = table[f"rejected_{p}_rating"].to_numpy()
        edges = _rating_edges(np.concatenate([c, r]))
        prin[p] = {"chosen_mean": _num(c.mean() if c.size else float("nan")),
                   "rejected_mean": _num(r.mean() if r.size else float("nan")),
                   "chosen_higher": int((c > r).sum()), "tied": int((c == r).sum()),
                   "rejected_higher": int((r > c).sum()),
                   "rejected_higher_by_split": {s: int(((r > c) & (split_arr == s)).sum()) for s in splits},
                   "edges": [_num(e) for e in edges], "chosen_counts": _hist(c, edges),
                   "rejected_counts": _hist(r, edges)}
    counts: dict[str, dict[str, int]] = {}
    for side in ("chosen", "rejected"):
        for m in table[f"{side}_model"].to_pylist():
            counts.setdefault(m, {"chosen": 0, "rejected": 0})[side] += 1
    models = [{"model": m, **c, "chosen_rate": _num(c["chosen"] / (c["chosen"] + c["rejected"]))}
              for m, c in counts.items()]
    models.sort(key=lambda d: (-d["chosen_rate"], d["model"]))
    len_c = pc.utf8_length(table["chosen"]).to_numpy().astype(float)
    len_r = pc.utf8_length(table["rejected"]).to_numpy().astype(float)
    length = {"chosen_mean_chars": _num(len_c.mean() if len_c.size else float("nan")),
              "rejected_mean_chars": _num(len_r.mean() if len_r.size else float("nan")),
              "chosen_longer_frac": _num((len_c > len_r).mean() if len_c.size else float("nan"))}
    resp = None
    if responses is not None:
        resp = _response_section(responses, principles) | _reply_counts(responses, table) | {
            "flags": _response_flags(responses)}
    return {"sources": list(sources), "principles": list(principles),
            "pairs": {"total": table.num_rows, "speeches": len(set(speech)), "by_split": by_split},
            "crisis_tiers": _crisis_section(table["crisis_tier"].to_pylist(), split_arr, splits),
            "vetoed": dict(vetoed) if vetoed is not None else None,
            "flags": _flag_section(table, split_arr, splits),
            "gap": gap_section, "principle_ratings": prin, "models": models, "length": length,
            "responses": resp, "examples": _examples(table, splits, principles, gap)}


def dataset_report(pairs: PairSource | Sequence[PairSource], out_dir: str | Path,
                   responses: str | Path | pa.Table | Iterable[dict] | None = None,
                   principles: Sequence[str] | None = None,
                   title: str = "psychocounsel dataset report",
                   vetoed: dict[str, int] | None = None) -> dict[str, Any]:
    """Describe a pair set: writes report.json, report.html and PNGs into ``out_dir``; returns the report.
    ``vetoed``: pairs the safety veto dropped, by reason (the pipeline's counts; None: not known)."""
    table, principles, names = _load_pairs(pairs, principles)
    resp = _responses_table(responses, principles) if responses is not None else None
    report = build_report(table, principles, resp, names, vetoed)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    report["figures"] = write_figures(report, out)
    atomic.write_text(out / "report.json", json.dumps(report, indent=2, ensure_ascii=False, allow_nan=False) + "\n")
    atomic.write_text(out / "report.html", render_html(report, out, title))
    return report
