"""The ``psychocounsel`` command line. It routes; the stages compute (see pipeline.py).

    psychocounsel run configs/demo.yaml            # every data stage, resumable
    psychocounsel run configs/paper.yaml --dry-run # calls, tokens and cost before spending
    psychocounsel status configs/demo.yaml
"""

from __future__ import annotations

import asyncio
import functools
import json
import sys
from pathlib import Path
from typing import Any, Callable

import click
from rich.console import Console
from rich.table import Table

from .errors import UserError

console = Console()
err_console = Console(stderr=True)


def _friendly(fn: Callable) -> Callable:
    """User mistakes print one line (no traceback); Ctrl-C says how to continue."""

    @functools.wraps(fn)
    def wrapper(*a: Any, **kw: Any) -> Any:
        try:
            return fn(*a, **kw)
        except UserError as e:
            err_console.print(f"[red]error:[/red] {e}", highlight=False, soft_wrap=True)
            sys.exit(2)
        except KeyboardInterrupt:
            err_console.print("interrupted: everything finished so far is stored; rerun the same command to continue")
            sys.exit(130)

    return wrapper


def _open_run(config: str, overrides: tuple[str, ...], progress: bool = True):
    from .config import load_config
    from .dataset.pipeline import Run
    from .runner import StageProgress

    cfg = load_config(config, list(overrides))
    # Relative paths in a config (run_dir, speech files, principle files) resolve against the
    # current directory, as for every other command-line tool.
    return Run(cfg, base_dir=Path.cwd(), progress=StageProgress(err_console, enabled=progress))


config_arg = click.argument("config", type=click.Path(dir_okay=False))
override_opt = click.option("-o", "--set", "overrides", multiple=True, metavar="KEY=VALUE",
                            help="Override a config field, e.g. -o speeches.limit=20 (repeatable).")
progress_opt = click.option("--progress/--no-progress", default=True, help="Show progress bars.")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="psychocounsel")
def main() -> None:
    """Build therapist-aligned preference data for psycho-counseling responses.

    A draft-and-assess tool for therapists and researchers, never an unsupervised therapist.
    """


def _table(title: str, rows: dict[str, Any]) -> Table:
    t = Table(title=title, show_header=False)
    for k, v in rows.items():
        t.add_row(str(k), json.dumps(v) if isinstance(v, (dict, list)) else str(v))
    return t


@main.command()
@config_arg
@override_opt
@progress_opt
@click.option("--dry-run", is_flag=True, help="Ingest (free), then print calls, tokens and cost; call nothing.")
@_friendly
def run(config: str, overrides: tuple[str, ...], progress: bool, dry_run: bool) -> None:
    """Run every data stage: ingest, generate, judge, pairs, stats."""
    from .dataset import pipeline

    r = _open_run(config, overrides, progress)
    try:
        ing = pipeline.stage_ingest(r)
        _print_ingest(ing)
        if dry_run:
            _print_dry(pipeline.dry_run(r))
            return
        gen, jud = asyncio.run(_stage(r, pipeline.stage_generate, pipeline.stage_judge))
        console.print(_table("generate", gen))
        console.print(_table("judge", jud))
        res = pipeline.stage_pairs(r)
        console.print(_table("pairs", res["counts"]))
        if sum(res["counts"].get(s, 0) for s in ("train", "dev", "test")):
            report = f"report: {_stats(r)}"
        else:
            report = "no pairs (every speech's responses tied or were too close): no report"
        console.print(f"\n[bold green]done.[/bold green] dataset: {r.dir / 'pairs'}/  {report}")
    finally:
        r.close()


async def _stage(r, *fns):
    """Run async stages in one event loop, sharing loaded models; close backends at the end."""
    try:
        out = [await fn(r) for fn in fns]
        return out[0] if len(out) == 1 else out
    finally:
        for name, usage in r.usage().items():
            console.print(f"{name}: {usage}")
        await r.aclose()


def _print_ingest(ing: dict[str, Any]) -> None:
    if ing.get("skipped"):
        console.print(f"ingest: unchanged since last run ({ing.get('kept')} speeches)")
        return
    console.print(_table("ingest", {k: v for k, v in ing.items() if k != "examples"}))


def _print_dry(est: dict[str, Any]) -> None:
    t = Table(title="dry run: what the next run would spend (upper bounds)")
    for c in ("backend", "calls", "prompt tokens", "completion tokens", "cost (USD)"):
        t.add_column(c)
    for name, e in est.items():
        cost = "-" if e["cost_usd"] is None else f"{e['cost_usd']:.2f}"
        t.add_row(name, f"{e['calls']:,}", f"{e['prompt_tokens']:,}", f"{e['completion_tokens']:,}", cost)
    console.print(t)


def _stats(r) -> Path:
    from .dataset import pipeline, stats

    responses = pipeline.export_responses(r)
    out = r.dir / "report"
    stats.dataset_report(r.dir / "pairs", out_dir=out, responses=responses)
    return out / "report.html"


@main.command()
@config_arg
@override_opt
@click.option("--force", is_flag=True, help="Re-read the speeches even if the input is unchanged.")
@_friendly
def ingest(config: str, overrides: tuple[str, ...], force: bool) -> None:
    """Read, clean, scrub and deduplicate client speeches into the run store."""
    from .dataset import pipeline

    r = _open_run(config, overrides)
    try:
        _print_ingest(pipeline.stage_ingest(r, force=force))
    finally:
        r.close()


@main.command()
@config_arg
@override_opt
@progress_opt
@_friendly
def generate(config: str, overrides: tuple[str, ...], progress: bool) -> None:
    """Draw k therapist profiles per speech and store one response from each."""
    from .dataset import pipeline

    r = _open_run(config, overrides, progress)
    try:
        pipeline.stage_ingest(r)
        console.print(_table("generate", asyncio.run(_stage(r, pipeline.stage_generate))))
    finally:
        r.close()


@main.command()
@config_arg
@override_opt
@progress_opt
@_friendly
def judge(config: str, overrides: tuple[str, ...], progress: bool) -> None:
    """Score every stored response on the seven principles."""
    from .dataset import pipeline

    r = _open_run(config, overrides, progress)
    try:
        console.print(_table("judge", asyncio.run(_stage(r, pipeline.stage_judge))))
    finally:
        r.close()


@main.command()
@config_arg
@override_opt
@_friendly
def pairs(config: str, overrides: tuple[str, ...]) -> None:
    """Split by speech and export preference pairs (Parquet + JSONL, released schema)."""
    from .dataset import pipeline

    r = _open_run(config, overrides)
    try:
        res = pipeline.stage_pairs(r)
        console.print(_table("pairs", res["counts"]))
        for split, files in res["files"].items():
            console.print(f"{split}: {', '.join(files)}")
    finally:
        r.close()


@main.command()
@click.argument("target", type=click.Path(exists=True))
@override_opt
@click.option("--out", type=click.Path(file_okay=False), default=None,
              help="Report folder (default: <run_dir>/report, or ./report for a pair file).")
@_friendly
def stats(target: str, overrides: tuple[str, ...], out: str | None) -> None:
    """Write the dataset report (JSON, HTML, PNG) for a run CONFIG, a pair file or a folder of them."""
    from .dataset import stats as stats_mod

    if target.endswith((".yaml", ".yml")):
        r = _open_run(target, overrides)
        try:
            path = _stats(r)
        finally:
            r.close()
    else:
        out_dir = Path(out or "report")
        stats_mod.dataset_report(Path(target), out_dir=out_dir)
        path = out_dir / "report.html"
    console.print(f"report: {path}")


@main.command()
@config_arg
@override_opt
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@_friendly
def status(config: str, overrides: tuple[str, ...], as_json: bool) -> None:
    """Show progress per stage for a run."""
    from .dataset import pipeline

    r = _open_run(config, overrides)
    try:
        s = pipeline.status(r)
    finally:
        r.close()
    if as_json:
        console.print_json(json.dumps(s))
        return
    t = Table(title=f"{s['run_dir']}: {s['speeches']:,} speeches")
    for c in ("stage", "planned", "ok", "failed", "pending"):
        t.add_column(c, justify="right" if c != "stage" else "left")
    for stage in ("generate", "judge"):
        t.add_row(stage, *(f"{s[stage][k]:,}" for k in ("planned", "ok", "failed", "pending")))
    console.print(t)
    pairs = ", ".join(f"{k} {v:,}" for k, v in sorted(s["pairs"].items())) or "none yet"
    c = s["calls"]
    console.print(f"pairs: {pairs}\ncached calls: {c['calls']:,} ({c['prompt_tokens']:,} prompt + "
                  f"{c['completion_tokens']:,} completion tokens)")


@main.command()
@click.option("--file", "spec", default="default", help="A principles YAML file (default: the built-in set).")
@_friendly
def principles(spec: str) -> None:
    """Print the seven principles and their rubrics."""
    from .rubric.principles import load_principles

    ps = load_principles(spec)
    for p in ps.principles:
        console.print(f"[bold]{p.key}[/bold] - {p.name} ({ps.version})\n  {p.definition}")
        for score, text in sorted(p.rubric.items()):
            console.print(f"    {score}: {text}")


def _register(module: str, name: str) -> None:
    """Add a command defined in a stage module (training, evaluation), with the one-line error handling."""
    import importlib

    cmd = getattr(importlib.import_module(module, __package__), name)
    todo = [cmd]
    while todo:  # a group's subcommands too (psychocounsel annotate serve, ...)
        c = todo.pop()
        if c.callback is not None:
            c.callback = _friendly(c.callback)
        if isinstance(c, click.Group):
            todo += c.commands.values()
    main.add_command(cmd)


for _module, _name in [
    (".evaluation.rm_eval", "eval_rm_cmd"),
    (".evaluation.rm_eval", "score_cmd"),
    (".training.reward", "train_rm_cmd"),
    (".training.multihead", "train_rm_multihead_cmd"),
    (".training.dpo", "train_dpo_cmd"),
    (".training.online_dpo", "train_online_dpo_cmd"),
    (".evaluation.agree", "agree_cmd"),
    (".evaluation.evaluate", "evaluate_cmd"),
    (".evaluation.evaluate", "leaderboard_cmd"),
    (".annotate.cli", "annotate_cmd"),
    (".safety.command", "screen_cmd"),
]:
    _register(_module, _name)


if __name__ == "__main__":
    main()
