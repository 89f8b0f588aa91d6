"""Grade a reward model on pair files (``psychocounsel eval-rm``) and score response files (``psychocounsel score``).

A scorer is anything with ``score_batch(questions, responses, on_batch=None) -> np.ndarray | dict[str, np.ndarray]``:

* ``RewardScorer`` (in ``training.scoring``) wraps a Hugging Face sequence-classification checkpoint (what
  ``train-rm`` writes). It reads the chat the reward model was trained on (user = speech, assistant = response,
  ``training.common.chat``), tokenized exactly as TRL's ``RewardTrainer`` does (the chat template, no extra
  special tokens, padding on the right), so a score here is the score the training loss saw.
* A per-principle reward model returns a dict: ``"overall"`` plus one array per principle head. Metrics use
  ``"overall``; the per-principle breakdown grades each principle's own head on its own pairs.

``evaluate_reward_model`` computes the paper's table (accuracy, ROC AUC, ECE, Brier; see ``metrics`` for how
a pair becomes a binary example in both orders), a bootstrap interval on accuracy, and breakdowns by
principle, by topic (when the file has a topic column; ours and the published files do not) and by split.
Each distinct (speech, response) is scored once: train-style pairs reuse a response in up to three pairs.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import click
import numpy as np

from ..dataset import atomic
from ..dataset.jsonl import iter_json_objects
from ..errors import InputError, UserError
from ..measures.rm_metrics import (
    DEFAULT_BINS,
    DEFAULT_BOOTSTRAP,
    pair_accuracy,
    pair_outcomes,
    preference_metrics,
    reliability_bins,
)
from ..training.scoring import (
    DEFAULT_BATCH_SIZE,
    OVERALL,
    Scorer,
    load_scorer,
    score_unique,
)


def _jsonable(x: Any) -> Any:
    """Strict JSON: NaN and inf become null, numpy scalars become Python numbers."""
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, np.integer):
        return int(x)
    if isinstance(x, (float, np.floating)):
        return round(float(x), 6) if math.isfinite(float(x)) else None
    return x


def _load_pairs(pairs: str | Path | Sequence[str | Path], split: str | None):
    import pyarrow as pa
    import pyarrow.compute as pc

    from ..dataset.pair_reader import load_pair_table
    from ..training.common import pair_files

    files = pair_files(pairs)
    tables = [load_pair_table(f) for f in files]
    table = pa.concat_tables(tables, promote_options="permissive") if len(tables) > 1 else tables[0]
    if split is not None:
        table = table.filter(pc.equal(table["split"], split))
    if table.num_rows == 0:
        where = ", ".join(str(f) for f in files)
        raise UserError(f"{where}: no pairs{' in split ' + repr(split) if split else ''}")
    return files, table


def evaluate_reward_model(scorer: Scorer | str | Path, pairs: str | Path | Sequence[str | Path],
                          split: str | None = None, *, out_dir: str | Path | None = None,
                          topic_column: str = "topic", n_bins: int = DEFAULT_BINS,
                          n_boot: int = DEFAULT_BOOTSTRAP, seed: int = 0,
                          on_batch: Callable[[int], None] | None = None) -> dict[str, Any]:
    """The paper's reward-model table on pair file(s), with breakdowns; writes results when ``out_dir`` is set.

    ``per_principle[p]``: pairs where the chosen response has the higher ``p`` rating; ``accuracy`` is the
    overall score's, ``head_accuracy`` that of the scorer's own ``p`` head when it has one.
    ``per_topic`` is None when the files have no ``topic_column``.
    """
    scorer = load_scorer(scorer) if isinstance(scorer, (str, Path)) else scorer
    files, table = _load_pairs(pairs, split)
    return _evaluate_table(scorer, files, table, split, out_dir=out_dir, topic_column=topic_column,
                           n_bins=n_bins, n_boot=n_boot, seed=seed, on_batch=on_batch)


def _unique_count(questions: Sequence[str], responses: Sequence[str]) -> int:
    return len(set(zip(questions, responses)))


def _evaluate_table(scorer: Scorer, files: Sequence[Path], table, split: str | None, *,
                    out_dir: str | Path | None, topic_column: str, n_bins: int, n_boot: int, seed: int,
                    on_batch: Callable[[int], None] | None) -> dict[str, Any]:
    cols = table.to_pydict()
    n = table.num_rows
    qs, texts = cols["question"] * 2, cols["chosen"] + cols["rejected"]
    both = score_unique(scorer, qs, texts, on_batch)
    chosen = {k: v[:n] for k, v in both.items()}
    rejected = {k: v[n:] for k, v in both.items()}
    rc, rr = chosen[OVERALL], rejected[OVERALL]

    result: dict[str, Any] = {
        "model": getattr(scorer, "name", type(scorer).__name__),
        "files": [str(f) for f in files], "split": split,
        "convention": "each pair in both orders: P(A preferred) = sigmoid(r_A - r_B); accuracy: r_chosen > r_rejected, "
                      "ties wrong; accuracy_ci: 95% percentile bootstrap over pairs",
        **preference_metrics(rc, rr, n_bins=n_bins, n_boot=n_boot, seed=seed),
        "n_unique_texts": _unique_count(qs, texts), "n_truncated": getattr(scorer, "n_truncated", None),
        "heads": sorted(k for k in chosen if k != OVERALL),
    }
    probs, labels = pair_outcomes(rc, rr)
    result["reliability"] = reliability_bins(probs, labels, n_bins)

    principles = [c[len("chosen_"):-len("_rating")] for c in table.column_names
                  if c.startswith("chosen_") and c.endswith("_rating")]
    per_p: dict[str, Any] = {}
    for p in principles:
        c_rating, r_rating = np.asarray(cols[f"chosen_{p}_rating"]), np.asarray(cols[f"rejected_{p}_rating"])
        wins = c_rating > r_rating
        entry = {"n": int(wins.sum()), "n_tied": int((c_rating == r_rating).sum()),
                 "n_rejected_wins": int((c_rating < r_rating).sum()),
                 "accuracy": pair_accuracy(rc[wins], rr[wins])}
        if p in chosen:
            entry["head_accuracy"] = pair_accuracy(chosen[p][wins], rejected[p][wins])
        per_p[p] = entry
    result["per_principle"] = per_p

    def groups(column: str) -> dict[str, Any]:
        values = np.asarray([str(v) for v in cols[column]])
        out = {}
        for g in sorted(set(values.tolist())):
            m = values == g
            out[g] = {"n": int(m.sum()), "accuracy": pair_accuracy(rc[m], rr[m])}
        return out

    result["per_topic"] = groups(topic_column) if topic_column in cols else None
    result["per_split"] = groups("split")
    result = _jsonable(result)
    if out_dir is not None:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        atomic.write_text(out / "results.json", json.dumps(result, indent=2, ensure_ascii=False))
        atomic.write_text(out / "pair_scores.jsonl", "".join(
            json.dumps({"speech_id": cols["speech_id"][i], "chosen_id": cols["chosen_id"][i],
                        "rejected_id": cols["rejected_id"][i], "split": cols["split"][i],
                        "r_chosen": float(rc[i]), "r_rejected": float(rr[i])}) + "\n" for i in range(n)))
        plot_reliability(result, out / "reliability.png")
    return result


def plot_reliability(result: dict[str, Any], path: str | Path) -> None:
    """Reliability diagram (observed frequency vs predicted probability per bin) with bin counts below."""
    from matplotlib.figure import Figure

    rel = result["reliability"]
    edges = np.asarray(rel["edges"])
    centers, width = (edges[:-1] + edges[1:]) / 2, edges[1] - edges[0]
    freq = [f if f is not None else 0.0 for f in rel["frequency"]]
    fig = Figure(figsize=(4.5, 5.2))
    top, bottom = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    top.bar(centers, freq, width=width * 0.9, color="#4C72B0", label="observed")
    top.plot([0, 1], [0, 1], "--", color="gray", label="perfect calibration")
    pts = [(m, f) for m, f in zip(rel["mean_prob"], rel["frequency"]) if m is not None]
    if pts:
        top.plot(*zip(*pts), "o", color="#DD8452", ms=4, label="bin mean")
    ece_txt = "n/a" if result.get("ece") is None else f"{result['ece']:.3f}"
    top.set(ylabel="share where A is preferred", ylim=(0, 1),
            title=f"ECE {ece_txt}, {result['n_pairs']} pairs (both orders)")
    top.legend(loc="upper left", fontsize=7)
    bottom.bar(centers, rel["count"], width=width * 0.9, color="gray")
    bottom.set(xlabel="P(A preferred) = sigmoid(r_A - r_B)", ylabel="count", xlim=(0, 1))
    fig.tight_layout()
    fig.savefig(path, dpi=100)


# ---------------------------------------------------------------- score files

def _read_rows(path: Path):
    import pyarrow as pa
    import pyarrow.csv as pcsv
    import pyarrow.parquet as pq

    suffix = path.suffix.lower()
    if not path.is_file():
        raise InputError(path, "file not found")
    try:
        if suffix == ".parquet":
            return pq.read_table(path)
        if suffix == ".csv":
            return pcsv.read_csv(path, convert_options=pcsv.ConvertOptions(strings_can_be_null=False))
    except (pa.ArrowInvalid, OSError) as e:
        raise InputError(path, f"not a readable {suffix[1:]} file: {str(e).splitlines()[0]}") from None
    if suffix not in (".jsonl", ".json"):
        raise InputError(path, f"unknown file type {suffix!r} (expected .jsonl, .csv or .parquet)")
    rows = [row for _, row in iter_json_objects(path)]
    try:
        return pa.Table.from_pylist(rows)
    except (pa.ArrowInvalid, pa.ArrowTypeError) as e:
        raise InputError(path, f"inconsistent field types: {e}") from None


def _text_column(table, path: Path, names: Sequence[str], option: str) -> list[str]:
    col = next((c for c in names if c in table.column_names), None)
    if col is None:
        alt = f" (or {', '.join(names[1:])})" if len(names) > 1 else ""
        raise InputError(path, f"missing required column{alt}; name it with {option}", column=names[0])
    values = table[col].to_pylist()
    bad = next((i for i, v in enumerate(values) if not isinstance(v, str)), None)
    if bad is not None:
        raise InputError(path, f"row {bad + 1}: expected text, found {values[bad]!r}", column=col)
    return values


def score_file(scorer: Scorer | str | Path, input: str | Path, output: str | Path, *,
               question_column: str | None = None, response_column: str = "response",
               score_column: str = "score", on_batch: Callable[[int], None] | None = None) -> dict[str, Any]:
    """Add reward scores to a (speech, response) file: jsonl, csv or parquet in, any of them out.

    The speech column is ``question_column`` or, by default, ``question`` else ``speech``. Every input
    column is kept; ``score_column`` holds the (overall) score and a per-principle model adds
    ``<score_column>_<head>``. Written atomically, so the output may be the input file itself.
    """
    src, dst = Path(input), Path(output)
    if dst.suffix.lower() not in (".jsonl", ".json", ".csv", ".parquet"):
        raise UserError(f"{dst}: unknown output type {dst.suffix!r} (expected .jsonl, .csv or .parquet)")
    table = _read_rows(src)
    qs, rs = _score_inputs(table, src, question_column, response_column, score_column)
    scorer = load_scorer(scorer) if isinstance(scorer, (str, Path)) else scorer
    return _score_table(scorer, table, src, dst, qs, rs, score_column, on_batch)


def _score_inputs(table, src: Path, question_column: str | None, response_column: str,
                  score_column: str) -> tuple[list[str], list[str]]:
    """The text columns to score, checked before any model is loaded."""
    if score_column in table.column_names:
        raise InputError(src, "column already exists; choose another --score-column", column=score_column)
    qs = _text_column(table, src, [question_column] if question_column else ["question", "speech"],
                      "--question-col")
    return qs, _text_column(table, src, [response_column], "--response-col")


def _score_table(scorer: Scorer, table, src: Path, dst: Path, qs: list[str], rs: list[str], score_column: str,
                 on_batch: Callable[[int], None] | None) -> dict[str, Any]:
    import pyarrow as pa
    import pyarrow.csv as pcsv
    import pyarrow.parquet as pq

    heads = score_unique(scorer, qs, rs, on_batch)
    new = {score_column: heads[OVERALL], **{f"{score_column}_{k}": v for k, v in heads.items() if k != OVERALL}}
    clash = next((c for c in new if c in table.column_names), None)
    if clash:
        raise InputError(src, "column already exists; choose another --score-column", column=clash)
    for name, values in new.items():
        table = table.append_column(name, pa.array(values, pa.float64()))
    dst.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{dst.name}.", suffix=".tmp", dir=dst.parent)  # same disk: atomic rename
    os.close(fd)
    try:
        suffix = dst.suffix.lower()
        if suffix == ".parquet":
            pq.write_table(table, tmp)
        elif suffix == ".csv":
            pcsv.write_csv(table, tmp)
        else:
            with open(tmp, "w", encoding="utf-8") as f:
                for row in table.to_pylist():
                    f.write(json.dumps(row, ensure_ascii=False, default=str) + "\n")
        os.chmod(tmp, 0o644)
        os.replace(tmp, dst)
    finally:
        Path(tmp).unlink(missing_ok=True)
    return {"rows": table.num_rows, "columns": list(new), "output": str(dst),
            "n_truncated": getattr(scorer, "n_truncated", None)}


# ---------------------------------------------------------------- commands

def _model_options(fn: Callable) -> Callable:
    for opt in reversed([
        click.option("--batch-size", type=int, default=DEFAULT_BATCH_SIZE, show_default=True,
                     help="Sequences per forward pass (length-sorted batches)."),
        click.option("--max-length", type=int, default=None,
                     help="Cut chats longer than this many tokens (counted and reported). Default: no cut."),
        click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N."),
        click.option("--dtype", type=click.Choice(["auto", "float32", "bfloat16", "float16"]), default="auto",
                     show_default=True, help="auto: bfloat16 on a GPU that supports it, float32 on CPU."),
        click.option("--weights", default=None, metavar="P=W,...",
                     help="Per-principle model only: overall under these weights, e.g. safety=3 (others 1)."),
        click.option("--combine", type=click.Choice(["weighted", "safety_constraint"]), default=None,
                     help="Per-principle model only: weighted mean, or safety_constraint (a reply below the "
                          "safety threshold ranks below every reply above it). Default: the checkpoint's."),
        click.option("--safety-threshold", type=float, default=None,
                     help="Per-principle model only: threshold on the safety head's scale. Default: the one "
                          "stored at training time."),
    ]):
        fn = opt(fn)
    return fn


def _cli_scorer(model: str, weights: str | None, **kwargs: Any) -> Scorer:
    from ..training.multihead.config import parse_weights

    return load_scorer(model, weights=parse_weights(weights), **kwargs)


def _err():
    from rich.console import Console

    return Console(stderr=True)


def _run_with_progress(label: str, total: int, fn: Callable[[Callable[[int], None]], Any]) -> Any:
    from ..runner import StageProgress

    with StageProgress(_err()).task(label, total) as bar:
        return fn(bar.advance)


@click.command("eval-rm")
@click.argument("model")
@click.argument("pairs", nargs=-1, required=True, type=click.Path(exists=True))
@click.option("--split", default=None, help="Only pairs of this split (e.g. test). Default: every row given.")
@click.option("--out", "out_dir", type=click.Path(file_okay=False), default=None,
              help="Write results.json, pair_scores.jsonl and reliability.png here.")
@_model_options
@click.option("--bins", type=int, default=DEFAULT_BINS, show_default=True, help="Equal-width ECE bins.")
@click.option("--bootstrap", "n_boot", type=int, default=DEFAULT_BOOTSTRAP, show_default=True,
              help="Bootstrap resamples for the accuracy interval (0: none).")
@click.option("--seed", type=int, default=0, show_default=True, help="Bootstrap seed.")
@click.option("--topic-column", default="topic", show_default=True, help="Column for the per-topic breakdown.")
def eval_rm_cmd(model, pairs, split, out_dir, batch_size, max_length, device, dtype, weights, combine,
                safety_threshold, bins, n_boot, seed, topic_column) -> None:
    """Grade reward model MODEL on PAIRS (pair files or folders): accuracy, AUC, ECE, Brier, by principle."""
    from rich.console import Console
    from rich.table import Table

    files, table = _load_pairs(pairs, split)  # fail on a bad file before loading the model
    with _err().status(f"loading {model}"):  # a large checkpoint takes a while; say what is happening
        scorer = _cli_scorer(model, weights, device=device, dtype=dtype, batch_size=batch_size,
                             max_length=max_length, combine=combine, safety_threshold=safety_threshold)
    if split is None and "train" in set(table["split"].to_pylist()):
        _err().print("note: these pairs include the train split; pass --split test for held-out numbers")
    total = _unique_count(table["question"].to_pylist() * 2, table["chosen"].to_pylist() + table["rejected"].to_pylist())
    res = _run_with_progress("scoring", total, lambda cb: _evaluate_table(
        scorer, files, table, split, out_dir=out_dir, topic_column=topic_column, n_bins=bins, n_boot=n_boot,
        seed=seed, on_batch=cb))
    t = Table(title=f"{model} on {res['n_pairs']} pairs", show_header=False)
    ci = res["accuracy_ci"]
    acc = f"{res['accuracy']:.3f}" + (f" [{ci[0]:.3f}, {ci[1]:.3f}]" if ci and None not in ci else "")
    for k, v in [("accuracy (95% CI)", acc), ("AUC", res["auc"]), ("ECE", res["ece"]), ("Brier", res["brier"]),
                 ("ties", res["n_ties"]), ("truncated chats", res["n_truncated"])]:
        t.add_row(k, f"{v:.3f}" if isinstance(v, float) else str(v))
    for p, e in res["per_principle"].items():
        head = f", own head {e['head_accuracy']:.3f}" if e.get("head_accuracy") is not None else ""
        accp = "n/a" if e["accuracy"] is None else f"{e['accuracy']:.3f}"
        t.add_row(f"  {p} (n={e['n']})", accp + head)
    Console().print(t)
    if out_dir:
        _err().print(f"wrote {Path(out_dir) / 'results.json'}, pair_scores.jsonl, reliability.png")


@click.command("score")
@click.argument("model")
@click.argument("input", type=click.Path(dir_okay=False))
@click.argument("output", type=click.Path(dir_okay=False))
@click.option("--question-col", default=None, help="Speech column. Default: question, else speech.")
@click.option("--response-col", default="response", show_default=True, help="Response column.")
@click.option("--score-column", default="score", show_default=True, help="Name of the added score column.")
@_model_options
def score_cmd(model, input, output, question_col, response_col, score_column, batch_size, max_length, device,
              dtype, weights, combine, safety_threshold) -> None:
    """Score every (speech, response) row of INPUT with reward model MODEL; write OUTPUT with a score column."""
    src, dst = Path(input), Path(output)
    if dst.suffix.lower() not in (".jsonl", ".json", ".csv", ".parquet"):
        raise UserError(f"{dst}: unknown output type {dst.suffix!r} (expected .jsonl, .csv or .parquet)")
    table = _read_rows(src)  # fail on a bad file before loading the model
    qs, rs = _score_inputs(table, src, question_col, response_col, score_column)
    with _err().status(f"loading {model}"):  # a large checkpoint takes a while; say what is happening
        scorer = _cli_scorer(model, weights, device=device, dtype=dtype, batch_size=batch_size,
                             max_length=max_length, combine=combine, safety_threshold=safety_threshold)
    res = _run_with_progress("scoring", _unique_count(qs, rs), lambda cb: _score_table(
        scorer, table, src, dst, qs, rs, score_column, cb))
    trunc = f", {res['n_truncated']} chats cut to --max-length" if res["n_truncated"] else ""
    _err().print(f"wrote {res['rows']} rows with {', '.join(res['columns'])} to {output}{trunc}")
