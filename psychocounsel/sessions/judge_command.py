"""The session-judging commands:

    psychocounsel judge-sessions configs/sessions/judge_fake.yaml     # judge a simulation run, write the report
    psychocounsel compare-sessions configs/sessions/compare_fake.yaml # run A vs run B, same clients, both orders
    psychocounsel session-report runs/sessions/fake/judged/session-judges   # rebuild the report, no call
    psychocounsel session-leaderboard DIR [DIR ...] --out runs/sessions/leaderboard
"""

from __future__ import annotations

from pathlib import Path

import click
from rich.console import Console
from rich.table import Table

console = Console()
err_console = Console(stderr=True)


def _fmt(d: dict | None, pct: bool = False) -> str:
    if not d:
        return "-"
    v = d.get("mean", d.get("rate"))
    if v is None:
        return "-"
    lo, hi = d["ci"]
    if pct:
        return f"{100 * v:.0f}% [{100 * lo:.0f}, {100 * hi:.0f}] n={d['n']}"
    return f"{v:.2f} [{lo:.2f}, {hi:.2f}]" if lo is not None else f"{v:.2f}"


def _print_leaderboard(rows: list[dict], title: str) -> None:
    t = Table(title=title)
    for c in ("policy", "sessions", "rubric mean (1-6)", "turn overall (1-5)", "safety flow (0-1)", "missed risk",
              "false alarms"):
        t.add_column(c)
    for r in rows:
        t.add_row(r["policy"], str(r["sessions"]), _fmt(r["rubric_mean"]), _fmt(r["turn_overall"]),
                  _fmt(r["flow_score"]), _fmt(r["missed_risk"], True), _fmt(r["false_alarm"], True))
    console.print(t)


@click.command("judge-sessions")
@click.argument("config", type=click.Path(dir_okay=False))
@click.option("-o", "--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Override a config field, e.g. -o rubric.model=gpt-4o (repeatable).")
@click.option("--max-calls", type=int, default=None, help="Stop after this many model calls (cache hits are free).")
@click.option("--progress/--no-progress", default=True, help="Show progress bars.")
def judge_sessions_cmd(config: str, overrides: tuple[str, ...], max_calls: int | None, progress: bool) -> None:
    """Judge every complete session of a simulation run: each therapist turn on the seven principles, each session
    on the session rubric and the safety-flow checklist; then write results.json, sessions.jsonl and report.html.
    Resumable: a rerun makes no call for what is stored."""
    from ..dataset.session import CallBudget
    from ..runner import StageProgress
    from .judge_config import load_judge_config
    from .judges import judge_sessions
    from .report_views import write_session_report

    cfg = load_judge_config(config, list(overrides))
    sj, counts = judge_sessions(cfg, Path.cwd(), StageProgress(err_console, enabled=progress), CallBudget(max_calls))
    try:
        results = write_session_report(sj)
    finally:
        sj.close()
    failed = {k: v for k, v in counts.items() if k.endswith(("failed", "over_budget")) and v}
    console.print(f"calls made: {counts['calls_made']}; judged: "
                  + ", ".join(f"{k} {counts.get(k + '_judged', 0)} (+{counts.get(k + '_done_before', 0)} stored)"
                              for k in ("turn", "rubric", "flow") if k + "_judged" in counts)
                  + (f"; [yellow]{failed}[/yellow]" if failed else ""))
    from .report import leaderboard_rows

    _print_leaderboard(leaderboard_rows(results, str(sj.dir)), f"{cfg.name}: {sj.dir}")
    console.print(f"report: {sj.dir / 'report.html'}")


@click.command("session-report")
@click.argument("folder", type=click.Path(exists=True, file_okay=False))
def session_report_cmd(folder: str) -> None:
    """Rebuild a session judging's report from its stored judgments (no model call)."""
    from .report import leaderboard_rows
    from .report_views import open_judged, write_session_report

    sj = open_judged(Path(folder))
    try:
        results = write_session_report(sj)
    finally:
        sj.close()
    _print_leaderboard(leaderboard_rows(results, folder), folder)
    console.print(f"report: {Path(folder) / 'report.html'}")


@click.command("session-leaderboard")
@click.argument("folders", nargs=-1, required=True, type=click.Path(exists=True, file_okay=False))
@click.option("--out", type=click.Path(file_okay=False), default=None,
              help="Also write leaderboard.json and leaderboard.html here.")
def session_leaderboard_cmd(folders: tuple[str, ...], out: str | None) -> None:
    """Policies across session judgings (judge-sessions folders), from their stored judgments (no model call),
    sorted by rubric mean. Compare rows only under one judge and one set of clients."""
    from .report_views import build_session_leaderboard

    rows = build_session_leaderboard([Path(f) for f in folders], Path(out) if out else None)
    _print_leaderboard(rows, "Session leaderboard")


@click.command("compare-sessions")
@click.argument("config", type=click.Path(dir_okay=False))
@click.option("-o", "--set", "overrides", multiple=True, metavar="KEY=VALUE", help="Override a config field.")
@click.option("--max-calls", type=int, default=None, help="Stop after this many model calls (cache hits are free).")
def compare_sessions_cmd(config: str, overrides: tuple[str, ...], max_calls: int | None) -> None:
    """Sessions of run A against run B with the same clients, judged in both orders (an inconsistent pair is a
    tie); writes compare.json with A's win rate and its interval over clients."""
    from ..dataset.session import CallBudget
    from .compare import compare_sessions
    from .judge_config import load_compare_config

    cfg = load_compare_config(config, list(overrides))
    res, counts = compare_sessions(cfg, Path.cwd(), budget=CallBudget(max_calls))
    w = res["win_rate_a"]
    flips = "-" if res["flip_rate"] is None else f"{100 * res['flip_rate']:.0f}%"
    console.print(f"{res['pairs']} pairs ({res['failed_pairs']} failed); A wins {res['wins_a']}, B wins {res['wins_b']}, "
                  f"ties {res['ties']}; A's win rate {_fmt(w, True)}; flip rate {flips}; "
                  f"calls made {counts['calls_made']}")
    console.print(f"verdicts: {Path(cfg.out_dir) / 'compare.json'}")
