"""The ``psychocounsel`` command line. It routes and prints; the stages compute (``dataset/pipeline.py``).

    psychocounsel run configs/demo.yaml            # every data stage, resumable
    psychocounsel run configs/paper.yaml --dry-run # calls, tokens and cost before spending
    psychocounsel status configs/demo.yaml
"""

from __future__ import annotations

import functools
import json
import sys
from pathlib import Path
from typing import Any, Callable

import click
from rich.console import Console
from rich.markup import escape
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
            # escape: a message is text; "[...]" in a path or value would be read as markup (eaten, or a crash)
            err_console.print(f"[red]error:[/red] {escape(str(e))}", highlight=False, soft_wrap=True)
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


class _OneLineErrors(click.Group):
    """Click's usage errors as one line, like every other user mistake here (click prints three: the usage,
    a hint and the error)."""

    def main(self, args: Any = None, prog_name: str | None = None, complete_var: str | None = None,
             standalone_mode: bool = True, **extra: Any) -> Any:
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode, **extra)
        try:
            rv = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except click.UsageError as e:
            where = f" (see {e.ctx.command_path} --help)" if e.ctx is not None else ""
            err_console.print(f"[red]error:[/red] {escape(e.format_message())}{where}", highlight=False,
                              soft_wrap=True)
            sys.exit(e.exit_code)
        except click.ClickException as e:
            err_console.print(f"[red]error:[/red] {escape(e.format_message())}", highlight=False, soft_wrap=True)
            sys.exit(e.exit_code)
        except click.Abort:
            err_console.print("aborted")
            sys.exit(1)
        sys.exit(rv if isinstance(rv, int) else 0)


@click.group(cls=_OneLineErrors, context_settings={"help_option_names": ["-h", "--help"]})
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
@click.option("--allow-empty", is_flag=True,
              help="Let an empty pair set replace existing pair files (refused otherwise: it deletes a dataset).")
@_friendly
def run(config: str, overrides: tuple[str, ...], progress: bool, dry_run: bool, allow_empty: bool) -> None:
    """Run every data stage: ingest, generate, judge, pairs, stats."""
    from .dataset import pipeline

    r = _open_run(config, overrides, progress)
    try:
        pipeline.run_all(r, _print_stage, estimate_only=dry_run, allow_empty=allow_empty)
        if not dry_run:
            console.print(f"\n[bold green]done.[/bold green] dataset: {r.dir / 'pairs'}/")
    finally:
        r.close()


def _print_stage(name: str, result: Any) -> None:
    """What each stage of ``pipeline.run_all`` / ``call_stages`` says, as it finishes."""
    if name == "ingest":
        _print_ingest(result)
    elif name == "dry_run":
        _print_dry(result)
    elif name == "usage":
        for backend, usage in result.items():
            console.print(f"{backend}: {usage}")
    elif name == "pairs":
        console.print(_table("pairs", result["counts"]))
    elif name == "report":
        console.print(f"report: {result}" if result is not None else
                      "no pairs (every speech's responses tied or were too close): no report")
    else:
        console.print(_table(name, result))


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
        pipeline.call_stages(r, {"generate": pipeline.stage_generate}, _print_stage)
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
        pipeline.call_stages(r, {"judge": pipeline.stage_judge}, _print_stage)
    finally:
        r.close()


@main.command()
@config_arg
@override_opt
@click.option("--allow-empty", is_flag=True,
              help="Let an empty pair set replace existing pair files (refused otherwise: it deletes a dataset).")
@_friendly
def pairs(config: str, overrides: tuple[str, ...], allow_empty: bool) -> None:
    """Split by speech and export preference pairs (Parquet + JSONL, released schema)."""
    from .dataset import pipeline

    r = _open_run(config, overrides)
    try:
        res = pipeline.stage_pairs(r, allow_empty=allow_empty)
        console.print(_table("pairs", res["counts"]))
        for split, files in res["files"].items():
            console.print(f"{split}: {', '.join(files)}")
    finally:
        r.close()


@main.command()
@click.argument("target", type=click.Path(exists=True))
@override_opt
@click.option("--out", type=click.Path(file_okay=False), default=None,
              help="Report folder (default: beside the input: <run_dir>/report for a config or a pairs folder, "
                   "<folder>/report for a pair file).")
@_friendly
def stats(target: str, overrides: tuple[str, ...], out: str | None) -> None:
    """Write the dataset report (JSON, HTML, PNG) for a run CONFIG, a pair file or a folder of them."""
    from .dataset import pipeline
    from .dataset import stats as stats_mod

    if target.endswith((".yaml", ".yml")):
        r = _open_run(target, overrides)
        try:
            path = pipeline.stage_stats(r)
        finally:
            r.close()
    else:
        src = Path(target)
        # beside the input, never the current folder: a pairs folder's report goes to its parent (as a run's
        # does: runs/demo/pairs -> runs/demo/report), a pair file's into its own folder
        out_dir = Path(out) if out else src.parent / "report"
        stats_mod.dataset_report(src, out_dir=out_dir)
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
    columns = ("planned", "ok", "failed", "pending", "truncated", "invalid")
    for c in ("stage", *columns):
        t.add_column(c, justify="right" if c != "stage" else "left")
    for stage in ("generate", "judge"):
        t.add_row(stage, *(f"{s[stage][k]:,}" if k in s[stage] else "" for k in columns))
    console.print(t)
    g = s["generate"]
    if g["truncated"] or g["invalid"]:
        console.print(f"replies: {g['truncated']:,} cut at max_tokens (truncated: failed, or kept and flagged), "
                      f"{g['invalid']:,} refused as invalid (garbled, empty, an echo, wrong language)")
    pairs = ", ".join(f"{k} {v:,}" for k, v in sorted(s["pairs"].items())) or "none yet"
    vetoed = ", ".join(f"{k} {v:,}" for k, v in s["pairs_vetoed"].items())
    c = s["calls"]
    console.print(f"pairs: {pairs} (vetoed on safety: {vetoed})\ncached calls: {c['calls']:,} "
                  f"({c['prompt_tokens']:,} prompt + {c['completion_tokens']:,} completion tokens)")


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
    (".training.reward.recipe", "train_rm_cmd"),
    (".training.multihead.recipe", "train_rm_multihead_cmd"),
    (".training.dpo.recipe", "train_dpo_cmd"),
    (".training.online_dpo.recipe", "train_online_dpo_cmd"),
    (".evaluation.agree", "agree_cmd"),
    (".evaluation.evaluate", "evaluate_cmd"),
    (".evaluation.evaluate", "leaderboard_cmd"),
    (".evaluation.suite", "suite_cmd"),
    (".annotate.cli", "annotate_cmd"),
    (".safety.command", "screen_cmd"),
    (".serve.command", "serve_cmd"),
    (".sessions.judge_command", "judge_sessions_cmd"),
    (".sessions.judge_command", "compare_sessions_cmd"),
    (".sessions.judge_command", "session_report_cmd"),
    (".sessions.judge_command", "session_leaderboard_cmd"),
    (".sessions.command", "simulate_cmd"),
]:
    _register(_module, _name)


if __name__ == "__main__":
    main()
