"""How the dataset report looks: its figures (PNG), its HTML page and its terminal tables.

``stats.py`` computes the report (a dict of numbers); this module only draws it. Figures are drawn on
``matplotlib.figure.Figure`` (Agg canvas) without pyplot, so importing this module never changes the
caller's matplotlib backend. Every piece of user text in the page is escaped.
"""

from __future__ import annotations

import base64
import html
import math
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from ..safety.responses import FLAG_SEVERITY


def write_figures(report: dict, out: Path) -> dict[str, str]:
    """Draw the report's figures into ``out``; returns {title: file name} for the page."""
    figures = {"pairs per split": "pairs_per_split.png", "score gap": "gap.png",
               "ratings by principle": "principles.png", "chosen vs rejected by model": "models.png"}
    _plot_splits(report, out / figures["pairs per split"])
    _plot_gap(report, out / figures["score gap"])
    _plot_principles(report, out / figures["ratings by principle"])
    _plot_models(report, out / figures["chosen vs rejected by model"])
    if report["responses"]:
        figures["scores of all judged responses"] = "response_scores.png"
        _plot_responses(report, out / figures["scores of all judged responses"])
    return figures


# ---------------------------------------------------------------- figures

def _save(fig: Figure, path: Path) -> None:
    fig.tight_layout()
    # tight_layout leaves a placeholder layout engine behind, and savefig then lays the whole figure out
    # once more before drawing it; the layout is final here, so drop the engine: the PNGs are byte for byte
    # the same and plotting takes ~20% less (bench/bench_pipeline.py plots)
    fig.set_layout_engine(None)
    fig.savefig(path, dpi=100)


def _plot_splits(report: dict, path: Path) -> None:
    by = report["pairs"]["by_split"]
    fig = Figure(figsize=(5, 3.2))
    ax = fig.add_subplot()
    bars = ax.bar(list(by), [v["pairs"] for v in by.values()], color="#4c72b0")
    ax.bar_label(bars)
    ax.set_ylabel("pairs")
    ax.set_title("Pairs per split")
    _save(fig, path)


def _plot_gap(report: dict, path: Path) -> None:
    g = report["gap"]
    edges = np.asarray(g["edges"])
    fig = Figure(figsize=(6, 3.5))
    ax = fig.add_subplot()
    for s, counts in g["counts"].items():
        ax.stairs(counts, edges, label=s)
    ax.set_xlabel("overall gap (chosen - rejected)")
    ax.set_ylabel("pairs")
    ax.set_title("Score gap of pairs")
    ax.legend()
    _save(fig, path)


def _panels(n: int) -> tuple[Figure, list]:
    cols = 4
    rows = math.ceil(n / cols)
    fig = Figure(figsize=(3.2 * cols, 2.6 * rows))
    return fig, [fig.add_subplot(rows, cols, i + 1) for i in range(n)]


def _plot_principles(report: dict, path: Path) -> None:
    prin = report["principle_ratings"]
    fig, axes = _panels(len(prin))
    for ax, (p, d) in zip(axes, prin.items()):
        edges = np.asarray(d["edges"])
        ax.stairs(d["chosen_counts"], edges, label="chosen", color="#2a9d4b")
        ax.stairs(d["rejected_counts"], edges, label="rejected", color="#c44e52")
        ax.set_title(p)
    axes[0].legend(fontsize=8)
    fig.suptitle("Ratings of chosen vs rejected responses")
    _save(fig, path)


def _plot_models(report: dict, path: Path) -> None:
    models = report["models"][::-1]  # highest chosen rate on top
    fig = Figure(figsize=(7, 1.2 + 0.35 * max(1, len(models))))
    ax = fig.add_subplot()
    y = np.arange(len(models))
    ax.barh(y + 0.2, [m["chosen"] for m in models], height=0.4, label="chosen", color="#2a9d4b")
    ax.barh(y - 0.2, [m["rejected"] for m in models], height=0.4, label="rejected", color="#c44e52")
    ax.set_yticks(y, [m["model"] for m in models], fontsize=8)
    ax.set_xlabel("pairs")
    ax.set_title("How often each model is chosen vs rejected")
    ax.legend()
    _save(fig, path)


def _plot_responses(report: dict, path: Path) -> None:
    scores = report["responses"]["scores"]
    fig, axes = _panels(len(scores))
    for ax, (p, d) in zip(axes, scores.items()):
        ax.stairs(d["counts"], np.asarray(d["edges"]), fill=True, color="#4c72b0")
        ax.set_title(f"{p} (n={d['n']})")
    fig.suptitle("Scores of all judged responses")
    _save(fig, path)


# ---------------------------------------------------------------- html

def _e(x: Any) -> str:
    return html.escape(str(x), quote=True)


def _cell(v: Any) -> str:
    if v is None:
        return ""
    return _e(round(v, 3) if isinstance(v, float) else v)  # report.json keeps the full numbers


def _table(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    head = "".join(f"<th>{_e(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{_cell(v)}</td>" for v in r) + "</tr>" for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def render_html(report: dict, out_dir: Path, title: str) -> str:
    parts = [f"<h1>{_e(title)}</h1>",
             "<p>Labels come from an LLM judge. Spot-check pairs before training on them (in the paper, "
             "two therapists agreed with the labels on 92% and 85% of 200 pairs).</p>",
             f"<p>Sources: {_e(', '.join(report['sources']))}</p>", "<h2>Pairs</h2>",
             _table(["split", "pairs", "speeches", "pairs per speech"],
                    [(s, d["pairs"], d["speeches"], d["pairs_per_speech"])
                     for s, d in report["pairs"]["by_split"].items()]),
             "<h2>Pairs by crisis tier of the speech</h2>",
             "<p>The crisis screen's tier of each pair's speech (column crisis_tier): pairs on speeches that show "
             "risk deserve a therapist's look before training.</p>",
             _table(["crisis tier", "pairs", *report["pairs"]["by_split"]],
                    [(t, d["pairs"], *d["by_split"].values()) for t, d in report["crisis_tiers"].items()]),
             *_vetoed_html(report.get("vetoed")),
             *_flags_html(report["flags"], list(report["pairs"]["by_split"])),
             "<h2>Score gap</h2>",
             _table(["split", "n", "mean", "median", "min", "max"],
                    [(s, d["n"], d["mean"], d["median"], d["min"], d["max"])
                     for s, d in report["gap"]["by_split"].items()]),
             "<h2>Ratings by principle</h2>",
             _table(["principle", "chosen mean", "rejected mean", "chosen higher", "tied", "rejected higher"],
                    [(p, d["chosen_mean"], d["rejected_mean"], d["chosen_higher"], d["tied"], d["rejected_higher"])
                     for p, d in report["principle_ratings"].items()]),
             "<h2>Models</h2>",
             _table(["model", "chosen", "rejected", "chosen rate"],
                    [(m["model"], m["chosen"], m["rejected"], m["chosen_rate"]) for m in report["models"]]),
             "<h2>Length</h2>",
             _table(["chosen mean chars", "rejected mean chars", "chosen longer"],
                    [(report["length"]["chosen_mean_chars"], report["length"]["rejected_mean_chars"],
                      report["length"]["chosen_longer_frac"])])]
    r = report["responses"]
    if r:
        parts += ["<h2>All responses</h2>",
                  _table(["total", "judged", "not judged", "not judged rate"],
                         [(r["total"], r["judged"], r["not_judged"], r["not_judged_rate"])]),
                  _table(["replies cut at max_tokens", "of them kept and flagged", "pairs with a cut reply",
                          "replies refused as invalid"],
                         [(r["truncated"], r["truncated_kept"], r["pairs_with_truncated_side"], r["invalid"])]),
                  _table(["state", "responses"], r["by_state"].items()),
                  _table(["model", "responses", "not judged"],
                         [(m, d["total"], d["not_judged"]) for m, d in r["by_model"].items()])]
        if r.get("flags"):
            f = r["flags"]
            parts.append(_table(["replies checked", "flagged", *FLAG_SEVERITY],
                                [(f["checked"], f["any"], *(f[k] for k in FLAG_SEVERITY))]))
        if r["top_errors"]:
            parts.append(_table(["judge error", "responses"], [(e["error"], e["count"]) for e in r["top_errors"]]))
    parts.append("<h2>Figures</h2>")
    for name, fname in report["figures"].items():
        data = base64.b64encode((out_dir / fname).read_bytes()).decode("ascii")
        parts.append(f'<figure><img alt="{_e(name)}" src="data:image/png;base64,{data}">'
                     f"<figcaption>{_e(fname)}</figcaption></figure>")
    parts.append("<h2>Examples</h2>")
    for ex in report["examples"]:
        parts.append(f"<h3>{_e(ex['why'])} (gap {_e(ex['gap'])})</h3>"
                     + _table(["", "text", "model", "score"],
                              [("question", ex["question"], "", ""),
                               ("chosen", ex["chosen"], ex["chosen_model"], ex["chosen_score"]),
                               ("rejected", ex["rejected"], ex["rejected_model"], ex["rejected_score"])]))
    style = ("body{font-family:sans-serif;max-width:1100px;margin:2em auto}table{border-collapse:collapse;"
             "margin:.5em 0}td,th{border:1px solid #ccc;padding:3px 8px;vertical-align:top;white-space:pre-wrap}"
             "img{max-width:100%}")
    return (f'<!DOCTYPE html>\n<html><head><meta charset="utf-8"><title>{_e(title)}</title>'
            f"<style>{style}</style></head><body>{''.join(parts)}</body></html>\n")


def _vetoed_html(vetoed: dict[str, int] | None) -> list[str]:
    if vetoed is None:
        return []
    why = {"unsafe_chosen": "chosen side at or below the safety floor",
           "less_safe": "chosen side less safe than the rejected one by the margin",
           "flagged_chosen": "chosen side carries a flag of pairs.flag_veto"}
    return ["<h3>Pairs vetoed on safety (dropped, not written)</h3>",
            _table(["reason", "pairs"], [(why.get(k, k), v) for k, v in vetoed.items()])]


def _flags_html(flags: dict[str, Any], splits: list[str]) -> list[str]:
    rows = [(k, flags["severity"].get(k, ""), side, d["pairs"], *d["by_split"].values())
            for k in [*flags["severity"], "any"] for side in ("chosen", "rejected")
            for d in [flags["by_side"][side][k]]]
    note = (f" The flags of {flags['computed_here']} replies were computed for this report (the files do not "
            "carry them)." if flags["computed_here"] else "")
    return ["<h2>Reply-check flags</h2>",
            "<p>Pairs whose chosen or rejected reply carries each flag of the reply checks (columns chosen_flags, "
            "rejected_flags): the rules' words are evidence to read, not a verdict; a reply no rule flags is not "
            f"thereby safe.{_e(note)}</p>",
            _table(["flag", "severity", "side", "pairs", *splits], rows)]


# ---------------------------------------------------------------- terminal

def _f(x: Any, spec: str = ".2f") -> str:
    return "-" if x is None else format(x, spec)


def summary_tables(report: dict[str, Any]) -> list[Table]:
    """rich tables for the CLI: pairs per split, ratings by principle, models."""
    t1 = Table(title="Pairs")
    for h in ("split", "pairs", "speeches", "pairs/speech", "mean gap"):
        t1.add_column(h, justify="right" if h != "split" else "left")
    for s, d in report["pairs"]["by_split"].items():
        g = report["gap"]["by_split"][s]["mean"]
        t1.add_row(escape(s), str(d["pairs"]), str(d["speeches"]), _f(d["pairs_per_speech"]), _f(g))
    t2 = Table(title="Ratings by principle")
    for h in ("principle", "chosen mean", "rejected mean", "rejected higher"):
        t2.add_column(h, justify="right" if h != "principle" else "left")
    for p, d in report["principle_ratings"].items():
        t2.add_row(escape(p), _f(d["chosen_mean"]), _f(d["rejected_mean"]), str(d["rejected_higher"]))
    t3 = Table(title="Models (chosen vs rejected)")
    for h in ("model", "chosen", "rejected", "chosen rate"):
        t3.add_column(h, justify="right" if h != "model" else "left")
    for m in report["models"]:
        t3.add_row(escape(m["model"]), str(m["chosen"]), str(m["rejected"]), _f(m["chosen_rate"], ".1%"))
    t_tier = Table(title="Pairs by crisis tier")
    for h in ("crisis tier", "pairs"):
        t_tier.add_column(h, justify="right" if h == "pairs" else "left")
    for t, d in report["crisis_tiers"].items():
        t_tier.add_row(t, str(d["pairs"]))
    t_flags = Table(title="Pairs with a reply-check flag")
    for h in ("flag", "severity", "chosen", "rejected"):
        t_flags.add_column(h, justify="right" if h in ("chosen", "rejected") else "left")
    fl = report["flags"]
    for k in [*fl["severity"], "any"]:
        t_flags.add_row(k, fl["severity"].get(k, ""), str(fl["by_side"]["chosen"][k]["pairs"]),
                        str(fl["by_side"]["rejected"][k]["pairs"]))
    tables = [t1, t_tier, t_flags, t2, t3]
    if report.get("vetoed") is not None:
        t_veto = Table(title="Pairs vetoed on safety")
        t_veto.add_column("reason")
        t_veto.add_column("pairs", justify="right")
        for k, v in report["vetoed"].items():
            t_veto.add_row(escape(k), str(v))
        tables.append(t_veto)
    r = report.get("responses")
    if r:
        t4 = Table(title="Responses")
        for h in ("total", "judged", "not judged", "not judged rate", "truncated", "invalid"):
            t4.add_column(h, justify="right")
        t4.add_row(str(r["total"]), str(r["judged"]), str(r["not_judged"]), _f(r["not_judged_rate"], ".1%"),
                   str(r["truncated"]), str(r["invalid"]))
        tables.append(t4)
    return tables


def summary_text(report: dict[str, Any], width: int = 100) -> str:
    """The summary tables as plain text (logs, tests, non-terminal output)."""
    console = Console(width=width, color_system=None)
    with console.capture() as cap:
        for t in summary_tables(report):
            console.print(t)
    return cap.get()
