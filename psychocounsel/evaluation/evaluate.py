"""``psychocounsel evaluate CONFIG``: a counseling policy against a reference, judged by principles.

    psychocounsel evaluate configs/eval/demo.yaml              # embedded SmolLM2, a few minutes on a CPU
    psychocounsel evaluate configs/eval/paper.yaml --dry-run   # calls and tokens before spending
    psychocounsel evaluate configs/eval/paper.yaml --max-calls 500   # spend at most 500 calls; rerun continues
    psychocounsel leaderboard runs/eval/*                      # one table, zero model calls

Steps, each content-keyed and resumable (a rerun of a finished evaluation makes zero calls):
1. speeches (``data.py``): held-out questions of pair files (the test split), or a speeches file; a seeded
   sample of N.
2. generate: each model side answers each speech (a file side is read instead). In ``length_cap`` mode
   a word-limit instruction and a token cap apply to every generated side (the paper's second setting).
3. judge (``stages.py``): every comparison twice, policy shown as A then as B (``rubric/pairwise.py``); each
   1-5 principle score set by the data pipeline's own scorer (``rubric/score.py``). Bad replies are
   retried, then recorded as failures: counted and shown, never ties or scores.
4. results (``results.py``) and report (``report.py``): win rate, length-controlled win rate, flip rate,
   per-principle scores, safety apart, bootstrap intervals over speeches.

Storage and keys: ``session.py`` (``<out_dir>/eval.sqlite``: the call cache and one row per finished item).
``--max-calls`` counts only calls that reach a model; cached answers are free. This module only runs the
steps in order and holds the two commands.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any, Iterable, Sequence

import click

from ..config import load_yaml_config
from ..dataset.session import CallBudget
from ..errors import UserError
from ..runner import StageProgress
from .config import EvalConfig
from .session import Evaluation
from .stages import dry_run as estimate
from .stages import stage_generate, stage_judge


def open_evaluation(config: str | Path | EvalConfig, overrides: Iterable[str] = (), base_dir: Path | None = None,
                    max_calls: int | None = None, progress: bool = False) -> Evaluation:
    cfg = config if isinstance(config, EvalConfig) else load_yaml_config(EvalConfig, config, list(overrides))
    return Evaluation(cfg, base_dir or Path.cwd(), StageProgress(enabled=progress), CallBudget(max_calls))


async def run_stages(ev: Evaluation) -> dict[str, Any]:
    t0 = time.perf_counter()
    try:
        gen = await stage_generate(ev)
        t1 = time.perf_counter()
        jud = await stage_judge(ev)
    finally:
        await ev.aclose()
    return {"generate": gen, "judge": jud,
            "wall_s": {"generate": round(t1 - t0, 2), "judge": round(time.perf_counter() - t1, 2)}}


def evaluate(ev: Evaluation, calls: bool = True) -> dict[str, Any]:
    """Run what is missing (``calls=False``: nothing) and rebuild results.json, report.html and charts."""
    from .report import write_report  # matplotlib: loaded when a report is written, not for every command

    t0 = time.perf_counter()
    counts = asyncio.run(run_stages(ev)) if calls else {}
    results = write_report(ev, counts)
    results["timing"] = {"wall_s": round(time.perf_counter() - t0, 3)}
    return results


def rebuild_results(d: Path) -> dict[str, Any]:
    """Recompute one folder's outputs from its store with a call cap of 0: no model can be called."""
    cfg_path = d / "config.resolved.json"
    if not cfg_path.is_file():
        raise UserError(f"{d}: no config.resolved.json (not an evaluation folder)")
    cfg = EvalConfig.model_validate_json(cfg_path.read_text(encoding="utf-8"))
    cfg.out_dir = str(d.resolve())
    ev = open_evaluation(cfg, max_calls=0)
    try:
        return evaluate(ev, calls=False)
    finally:
        ev.close()


def leaderboard(dirs: Sequence[Path], out_dir: Path, rebuild: bool = False, console: Any = None) -> list[dict[str, Any]]:
    """The leaderboard of evaluation folders (``rebuild``: each results.json recomputed from its store first,
    with zero calls)."""
    from .report import build_leaderboard

    if rebuild:
        for d in dirs:
            rebuild_results(d)
    return build_leaderboard(dirs, out_dir, console=console)


# -- CLI ------------------------------------------------------------------------------------------------------
@click.command("evaluate")
@click.argument("config", type=click.Path(dir_okay=False))
@click.option("-o", "--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Override a config field, e.g. -o speeches.n=20 (repeatable).")
@click.option("--dry-run", is_flag=True, help="Print calls and tokens the run would spend; call nothing.")
@click.option("--max-calls", type=click.IntRange(min=0), default=None,
              help="Stop after N model calls (cached answers are free); rerun to continue.")
@click.option("--progress/--no-progress", default=True, help="Show progress bars.")
def evaluate_cmd(config: str, overrides: tuple[str, ...], dry_run: bool, max_calls: int | None, progress: bool) -> None:
    """Compare a policy with a reference: win rates in both orders, LC win rate, principle scores, safety."""
    from rich.console import Console

    from .report import print_dry_run, print_summary

    console = Console()
    ev = open_evaluation(config, overrides, max_calls=max_calls, progress=progress)
    try:
        if dry_run:
            print_dry_run(console, estimate(ev))
            return
        results = evaluate(ev)
        print_summary(console, results)
        console.print(f"report: {ev.dir / 'report.html'}")
    finally:
        ev.close()


@click.command("leaderboard")
@click.argument("dirs", nargs=-1, required=True, type=click.Path(exists=True, file_okay=False))
@click.option("--out", "out_dir", type=click.Path(file_okay=False), default="leaderboard", show_default=True,
              help="Folder for leaderboard.json and leaderboard.html.")
@click.option("--rebuild", is_flag=True, help="Recompute each results.json from its cache first (no model calls).")
def leaderboard_cmd(dirs: tuple[str, ...], out_dir: str, rebuild: bool) -> None:
    """One table of several evaluations, from their stored results: no model is called."""
    from rich.console import Console

    leaderboard([Path(d) for d in dirs], Path(out_dir), rebuild=rebuild, console=Console())
