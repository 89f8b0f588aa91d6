"""``psychocounsel simulate CONFIG``: simulated counseling sessions, every profile x policy x budget.

    psychocounsel simulate configs/sessions/demo.yaml              # the embedded SmolLM2 plays both sides
    psychocounsel simulate configs/sessions/fake.yaml              # the fake server, two therapist behaviours
    psychocounsel simulate configs/sessions/benchmark.yaml --max-calls 1000

Rerun the same command to continue a stopped run: stored messages replay from the call cache for free.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import click
from rich.console import Console

from ..dataset.session import CallBudget
from ..runner import StageProgress
from .config import load_simulate_config
from .simulate import Simulation, simulate

console = Console()


@click.command("simulate")
@click.argument("config", type=click.Path(dir_okay=False))
@click.option("-o", "--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Override a config field, e.g. -o limit=2 -o budgets=[4] (repeatable).")
@click.option("--max-calls", type=click.IntRange(min=1), default=None,
              help="Stop after this many model calls (cache hits are free); sessions left are incomplete.")
@click.option("--progress/--no-progress", default=True, help="Show progress bars.")
def simulate_cmd(config: str, overrides: tuple[str, ...], max_calls: int | None, progress: bool) -> None:
    """Simulate counseling sessions between client profiles and therapist policies; write transcripts."""
    cfg = load_simulate_config(config, overrides)
    sim = Simulation(cfg, base_dir=Path.cwd(), progress=StageProgress(Console(stderr=True), enabled=progress),
                     budget=CallBudget(max_calls))

    async def go() -> dict:
        try:
            return await simulate(sim)
        finally:
            await sim.aclose()

    try:
        counts = asyncio.run(go())
    finally:
        sim.close()
    console.print(f"sessions: {counts['sessions']} planned, {counts['done_before']} done before, "
                  f"{counts['complete']} complete, {counts['failed']} failed, {counts['incomplete']} incomplete; "
                  f"{counts['calls']} model calls")
    console.print(f"transcripts: {counts['transcripts']}")
    if counts["failed"] or counts["incomplete"]:
        console.print("rerun the same command to retry failed and continue incomplete sessions")
