"""Where a study's items come from: a pair file, the comparisons of an evaluation folder, or the judged
sessions of a session judging (``session_items``: two policies' whole sessions with one client, rated on the
session rubric).

Both become ``Item``s in canonical order (first = chosen / policy) with the reference answer in
``label``: for a pair file the dataset's label (always ``first``, the chosen response); for an
evaluation the LLM judge's order-checked verdict (``first`` = policy won, ``second`` = reference
won, ``tie``; unknown when the judge failed).

Sampling is a seeded reservoir (Algorithm R) over the rows in file order: the same file and seed
give the same N items on every machine, memory holds N rows, not the file.

Evaluation folders: ``comparisons.jsonl`` as ``psychocounsel evaluate`` writes it (one record per
speech: ``speech_id``, ``speech``, ``policy`` and ``reference`` objects with ``text`` and ``scores``,
``policy_first`` and ``reference_first`` objects with the judge's positional ``verdict``). The label
is ``winrate.combine_orders`` of the two verdicts: a win only when both orders agree, a tie when
they disagree, unknown when a verdict failed. Model names come from ``results.json``. A speech whose
policy or reference response failed to generate has nothing to compare and is skipped.
A flat file (``comparisons.jsonl`` or ``.parquet`` from another tool) may instead give per row:
``question``|``speech``, ``policy_response``, ``reference_response``, optional ``policy_model``,
``reference_model``, ``id``, ``policy_<p>_rating``/``reference_<p>_rating``, and the judge's
answer as ``score`` (1 policy won, 0 lost, 0.5 tie, null failed) or ``verdict`` (policy |
reference | tie | null).
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from .. import PRINCIPLE_KEYS
from ..dataset.jsonl import iter_json_objects
from ..dataset.pair_reader import read_pairs
from ..errors import InputError, UserError
from .store import Item, StudySpec

COMPARISON_FILES = ("comparisons.jsonl", "comparisons.parquet")
_ALIASES = {
    "question": ("question", "speech"),
    "policy": ("policy_response", "policy"),
    "reference": ("reference_response", "reference"),
}


def reservoir(rows: Iterable[Any], n: int, seed: int) -> list[tuple[int, Any]]:
    """A uniform seeded sample of n rows as (index, row), in file order."""
    if n < 1:
        raise UserError(f"sample size must be at least 1, got {n}")
    rng = random.Random(seed)
    sample: list[tuple[int, Any]] = []
    for i, row in enumerate(rows):
        if i < n:
            sample.append((i, row))
        else:
            j = rng.randrange(i + 1)
            if j < n:
                sample[j] = (i, row)
    return sorted(sample, key=lambda t: t[0])


def pair_items(path: str | Path, split: str | None = None) -> Iterator[Item]:
    """Items of a pair file (ours or the published parquet), optionally one split only."""
    for row in read_pairs(path):
        if split is not None and row["split"] != split:
            continue
        principles = [c[len("chosen_"):-len("_rating")] for c in row if c.startswith("chosen_") and
                      c.endswith("_rating")]
        yield Item(source_key=f"{row['speech_id']}/{row['chosen_id']}/{row['rejected_id']}",
                   question=row["question"], first_text=row["chosen"], second_text=row["rejected"],
                   first_model=row["chosen_model"], second_model=row["rejected_model"], label="first",
                   first_ratings={p: row[f"chosen_{p}_rating"] for p in principles},
                   second_ratings={p: row[f"rejected_{p}_rating"] for p in principles})


def _pick(row: dict[str, Any], names: Sequence[str], path: Path, line: int | None, required: bool = True) -> Any:
    for name in names:
        if name in row and row[name] is not None:
            return row[name]
    if required:
        raise InputError(path, "missing field", line=line, column=names[0])
    return None


def _label(row: dict[str, Any], path: Path, line: int | None) -> str | None:
    score = _pick(row, ("score", "policy_score"), path, line, required=False)
    if score is not None:
        try:
            value = float(score)
        except (TypeError, ValueError):
            raise InputError(path, f"score must be 0, 0.5 or 1, got {score!r}", line=line, column="score") from None
        if value not in (0.0, 0.5, 1.0):
            raise InputError(path, f"score must be 0, 0.5 or 1, got {score!r}", line=line, column="score")
        return {1.0: "first", 0.0: "second", 0.5: "tie"}[value]
    verdict = _pick(row, ("verdict", "winner"), path, line, required=False)
    if verdict is None:
        return None  # a failed judgment: the item is still worth a human look, with no reference answer
    label = {"policy": "first", "reference": "second", "tie": "tie"}.get(str(verdict).lower())
    if label is None:
        raise InputError(path, f"verdict must be policy, reference or tie, got {verdict!r}", line=line,
                         column="verdict")
    return label


def _comparison_rows(path: Path) -> Iterator[tuple[int | None, dict[str, Any]]]:
    if path.suffix == ".jsonl":
        yield from iter_json_objects(path)
        return
    try:
        pf = pq.ParquetFile(path)
    except Exception as e:  # noqa: BLE001 - pyarrow raises several types for a bad file
        raise InputError(path, f"not a readable parquet file: {e}") from None
    for batch in pf.iter_batches(batch_size=1000):
        for row in batch.to_pylist():
            yield None, row


def evaluation_items(folder: str | Path) -> Iterator[Item]:
    """Items of an evaluation folder's comparisons file (formats in the module docstring)."""
    folder = Path(folder)
    try:
        path = next((folder / f for f in COMPARISON_FILES if (folder / f).is_file()), None)
    except OSError as e:
        raise InputError(folder, f"cannot read this folder ({e.strerror or e})") from None
    if path is None:
        raise InputError(folder, f"no {' or '.join(COMPARISON_FILES)} in this evaluation folder "
                                 "(run `psychocounsel evaluate` first, or pass a pair file)")
    names = _side_names(folder)
    for n, (line, row) in enumerate(_comparison_rows(path)):
        if isinstance(row.get("policy"), dict):
            item = _nested_item(row, names, path, line)
            if item is not None:
                yield item
            continue
        q = _pick(row, _ALIASES["question"], path, line)
        pol = _pick(row, _ALIASES["policy"], path, line)
        ref = _pick(row, _ALIASES["reference"], path, line)
        ratings = {side: {p: row[f"{side}_{p}_rating"] for p in PRINCIPLE_KEYS
                          if row.get(f"{side}_{p}_rating") is not None} or None
                   for side in ("policy", "reference")}
        key = str(row.get("id") or row.get("speech_id") or f"row{line if line is not None else n + 1}")
        yield Item(source_key=key, question=str(q), first_text=str(pol), second_text=str(ref),
                   first_model=row.get("policy_model") or names[0], second_model=row.get("reference_model") or names[1],
                   label=_label(row, path, line), first_ratings=ratings["policy"],
                   second_ratings=ratings["reference"])


def _side_names(folder: Path) -> tuple[str | None, str | None]:
    """The policy's and reference's names from results.json (kept hidden from annotators)."""
    try:
        res = json.loads((folder / "results.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None, None
    return tuple((res.get(s) or {}).get("name") if isinstance(res.get(s), dict) else None
                 for s in ("policy", "reference"))  # type: ignore[return-value]


def _nested_item(row: dict[str, Any], names: tuple, path: Path, line: int | None) -> Item | None:
    """One record of ``psychocounsel evaluate``'s comparisons.jsonl; None when a response is missing."""
    from ..measures.winrate import combine_orders

    pol, ref = row["policy"], row.get("reference")
    if not isinstance(ref, dict):
        raise InputError(path, "expected an object with the reference's text", line=line, column="reference")
    if not pol.get("text") or not ref.get("text"):
        return None
    speech = _pick(row, _ALIASES["question"], path, line)
    verdicts = [(row.get(o) or {}).get("verdict") if (row.get(o) or {}).get("status", "ok") == "ok" else None
                for o in ("policy_first", "reference_first")]
    score = combine_orders(*verdicts).score
    label = None if score is None else {1.0: "first", 0.0: "second", 0.5: "tie"}[float(score)]
    return Item(source_key=str(row.get("speech_id") or f"line{line}"), question=str(speech),
                first_text=str(pol["text"]), second_text=str(ref["text"]), first_model=names[0],
                second_model=names[1], label=label, first_ratings=pol.get("scores") or None,
                second_ratings=ref.get("scores") or None)


SESSION_FILES = ("sessions.jsonl", "config.resolved.json")  # what judge-sessions leaves in a judging folder
SPEAKERS = {"client": "Client", "therapist": "Counselor"}


def is_session_judging(folder: Path) -> bool:
    return all((folder / f).is_file() for f in SESSION_FILES)


def session_transcript(turns: Iterable[Any]) -> str:
    """A whole session as an expert reads it: each turn under its speaker, nothing else (no policy, no model)."""
    return "\n\n".join(f"{SPEAKERS.get(t.role, t.role)}:\n{t.text.strip()}" for t in turns)


def session_items(folder: str | Path) -> tuple[list[Item], tuple[str, str], list[tuple[str, str]], tuple[int, int]]:
    """Items of a session judging (``judge-sessions``' folder): the two policies' sessions with one client (same
    profile, budget and seed) face each other, first = the policy first by name. The question is the client's
    intake summary (all the counselor knew), each side the whole transcript, the ratings the session rubric's
    criteria; the judge's rubric scores are the reference ratings, and its label prefers the session with the
    higher rubric mean (unknown when either judgment failed).

    Returns (items, the two policies, the criteria as (key, name), the rubric's scale)."""
    from ..sessions.report_views import open_judged, run_profiles

    sj = open_judged(Path(folder))
    try:
        if sj.rubric is None:
            raise InputError(folder, "this judging has no rubric judge: nothing to compare expert ratings with")
        records = sj.collect()
        intake = {p.id: p.intake_summary for p in run_profiles(sj)}
        rubric = sj.rubric
    finally:
        sj.close()
    policies = sorted({r["transcript"].policy for r in records})
    if len(policies) != 2:
        raise InputError(folder, f"a session study compares two policies; this judging has {len(policies)} "
                                 f"({', '.join(policies) or 'no complete session'}): judge two policies' runs")
    by_client: dict[tuple, dict[str, dict[str, Any]]] = {}
    for r in records:
        t = r["transcript"]
        by_client.setdefault((t.profile_id, t.budget, t.seed), {})[t.policy] = r
    items = []
    for (profile, budget, seed), pair in by_client.items():
        if len(pair) < 2:
            continue  # a client only one policy finished with has nothing to compare
        a, b = (pair[p] for p in policies)
        scores = [r["rubric"]["scores"] if r["rubric"] else None for r in (a, b)]
        label = None
        if scores[0] is not None and scores[1] is not None:
            ma, mb = (sum(s.values()) / len(s) for s in scores)  # type: ignore[union-attr]
            label = "first" if ma > mb else "second" if mb > ma else "tie"
        items.append(Item(source_key=f"{a['transcript'].session_id}/{b['transcript'].session_id}",
                          question=intake.get(profile) or f"(client {profile}: no intake summary on file)",
                          first_text=session_transcript(a["transcript"].turns),
                          second_text=session_transcript(b["transcript"].turns),
                          first_model=policies[0], second_model=policies[1], label=label,
                          first_ratings=scores[0], second_ratings=scores[1]))
    criteria = [(c.key, c.name) for c in rubric.criteria]
    return items, (policies[0], policies[1]), criteria, (rubric.low, rubric.high)


def study_spec(source: str | Path, *, n: int, seed: int = 0, name: str | None = None,
               split: str | None = None, principles: Sequence[tuple[str, str]] | None = None) -> StudySpec:
    """A study from a pair file, an evaluation folder or a session judging: N items drawn with the seed."""
    source = Path(source)
    try:
        is_dir, is_file = source.is_dir(), source.is_file()
    except OSError as e:
        raise InputError(source, f"cannot read ({e.strerror or e})") from None
    scale = (1, 5)
    rows: Iterable[Item]
    if is_dir and is_session_judging(source):
        kind, label_name = "sessions", "session judges"
        rows, sides, principles, scale = session_items(source)
    elif is_dir:
        kind, label_name, sides = "evaluation", "LLM judge", ("policy", "reference")
        rows = evaluation_items(source)
    elif is_file:
        kind, label_name, sides = "pairs", "dataset label", ("chosen", "rejected")
        rows = pair_items(source, split)
    else:
        raise InputError(source, "not found (expected a pair file, an evaluation folder or a session judging)")
    items = [it for _, it in reservoir(rows, n, seed)]
    if not items:
        where = f" in split {split!r}" if split else ""
        raise InputError(source, f"no items{where}")
    if principles is None:
        from ..rubric.principles import load_principles

        principles = [(p.key, p.name) for p in load_principles("default")]
    return StudySpec(name=name or f"{source.stem}-n{len(items)}-seed{seed}", source=str(source), source_kind=kind,
                     label_name=label_name, side_names=sides, principles=list(principles), seed=seed, items=items,
                     scale=scale)
