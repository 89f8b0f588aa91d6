"""``psychocounsel screen FILE``: tag each client speech none / possible / high, with its evidence.

    psychocounsel screen FILE --out screened.jsonl [--rules-only] [--check-model MODEL --base-url URL]
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import click

from .model_check import make_check_backend, run_model_check
from .learned import load_layer
from .screen import RULES_VERSION, TIER_RANK, TIERS, Screen, screen_many


@click.command("screen")
@click.argument("file", type=click.Path(exists=True, dir_okay=False))
@click.option("--column", default="text", show_default=True, help="Column (or JSON key) holding the client speech.")
@click.option("--id-column", default=None, help="Column holding row ids (default: 'id' when present, else the line).")
@click.option("--out", type=click.Path(dir_okay=False), default=None,
              help="Output JSONL: id, source, tier, signals, evidence (default: <FILE stem>.screen.jsonl here).")
@click.option("--rules-only", is_flag=True, help=(
    "The rules alone, without the learned layer (~8,700 speeches/s instead of ~20/s; it misses far more: "
    "docs/CRISIS_SCREEN.md)."))
@click.option("--show", default=10, show_default=True, help="Print this many flagged speeches with their evidence.")
@click.option("--check-model", default=None, help=(
    "Also ask this model for each flagged speech's tier (crisis_check_v4 prompt); it may raise a tier, never "
    "lower one (but see --check-overrules). Its answer goes in `model_check`, the combined tier in "
    "`final_tier`."))
@click.option("--check-backend", type=click.Choice(["openai", "local"]), default="openai", show_default=True,
              help="openai: any OpenAI-compatible server (--base-url); local: transformers ('embedded' etc.).")
@click.option("--base-url", default=None, help="OpenAI-compatible server for --check-model (default: OpenAI's).")
@click.option("--api-key-env", default="OPENAI_API_KEY", show_default=True,
              help="Env var holding the server's API key ('' for none, e.g. a local vLLM).")
@click.option("--check-all", is_flag=True, help="Send every speech to the model, not only the flagged ones.")
@click.option("--check-overrules", is_flag=True, help=(
    "Let the model's tier replace what the screen reads least well: the learned layer's raises and the rules' "
    "suicidal thoughts or wishes to die read from words alone (possible tier). Such a flag is cleared when the "
    "model answers none, its reason kept as evidence; attempts, self-harm, methods, plans and intent the rules "
    "found always stand. The layer then flags at its lower checked threshold, for recall, as the model reviews "
    "each flag. Only with a capable model (the embedded one is at chance as a judge)."))
@click.option("--concurrency", default=8, show_default=True, help="Model calls in flight.")
@click.option("--cache", type=click.Path(dir_okay=False), default=None,
              help="Call cache (SQLite) for --check-model; default: <out>.cache.sqlite. Reruns pay nothing twice.")
def screen_cmd(file: str, column: str, id_column: str | None, out: str | None, rules_only: bool, show: int,
               check_model: str | None,
               check_backend: str, base_url: str | None, api_key_env: str, check_all: bool,
               check_overrules: bool, concurrency: int, cache: str | None) -> None:
    """Tag each client speech in FILE (.jsonl, .csv, .parquet) none / possible / high crisis risk.

    A triage aid with the evidence for each tag, never a clinical decision (docs/CRISIS_SCREEN.md).
    """
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
    from rich.table import Table

    from ..config import SpeechesConfig
    from ..dataset.ingest import iter_raw_rows

    if check_overrules and not check_model:
        raise click.UsageError("--check-overrules needs --check-model: it is that model's tier that overrules")
    cfg = SpeechesConfig(path=file, text_column=column, id_column=id_column)
    out_path = Path(out) if out else Path(f"{Path(file).name.split('.')[0]}.screen.jsonl")
    counts: Counter[str] = Counter()
    flagged: list[tuple[str, Screen]] = []
    rows: list[dict] = []
    texts: list[str] = []
    screens: list[Screen] = []
    raw = list(iter_raw_rows(cfg, base_dir=None))  # a bad row stops here, before any output is written
    screened: list[Screen] = []
    chunk = 256  # the learned layer batches its model calls; a chunk keeps the progress bar moving
    with Progress(TextColumn("screening"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                  console=Console(stderr=True), transient=True, disable=rules_only or len(raw) <= chunk) as bar:
        task = bar.add_task("screen", total=len(raw))
        for i in range(0, len(raw), chunk):
            screened += screen_many((r.text for r in raw[i:i + chunk]), learned=not rules_only,
                                    checked=check_overrules)
            bar.advance(task, len(raw[i:i + chunk]))
    for row, s in zip(raw, screened):
        rid = row.meta.get("orig_id") or row.source.rsplit(":", 1)[-1]
        counts[s.tier] += 1
        if s.tier != "none" or s.concerns:  # a concern has no tier but its reply must still point to help
            flagged.append((rid, s))
        rows.append({"id": rid, "source": row.source, **s.to_dict()})
        if check_model:
            texts.append(row.text)
            screens.append(s)
    final: Counter[str] = Counter()
    failed = overruled = 0
    if check_model:
        backend = make_check_backend(check_backend, base_url, api_key_env, concurrency)
        checks = run_model_check(texts, screens, backend, check_model,
                                 Path(cache) if cache else out_path.with_name(out_path.name + ".cache.sqlite"),
                                 check_all, concurrency, overrule=check_overrules)
        for r, c, s in zip(rows, checks, screens):
            r["model_check"] = None if c is None else {"model": check_model, "tier": c.model_tier,
                                                       "reason": c.reason, "error": c.error,
                                                       "prompt_version": c.prompt_version,
                                                       "overruled": c.overruled}
            overruled += c is not None and c.overruled
            r["final_tier"] = s.tier if c is None else c.tier
            final[r["final_tier"]] += 1
            failed += c is not None and c.model_tier is None
    tmp = out_path.with_name(out_path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
    tmp.replace(out_path)
    console = Console()
    total = sum(counts.values())
    layer = None if rules_only else load_layer()
    version = RULES_VERSION + (f" + {layer.version}" if layer is not None else "")
    t = Table(title=f"crisis screen ({version}): {total:,} speeches")
    cols = ("tier", "speeches", "share") + ((f"after {check_model}",) if check_model else ())
    for c in cols:
        t.add_column(c, justify="left" if c == "tier" else "right")
    for tier in TIERS:
        t.add_row(tier, f"{counts[tier]:,}", f"{counts[tier] / total:.1%}" if total else "-",
                  *((f"{final[tier]:,}",) if check_model else ()))
    console.print(t)
    concerns = sum(1 for _, s in flagged if s.tier == "none")
    if concerns:
        console.print(f"{concerns:,} speech(es) with tier none carry a concern (another adult at risk, or danger "
                      "from someone else): listed below, tier none")
    if failed:
        console.print(f"[yellow]{failed} model check(s) failed (error in `model_check`); their rules tier stands"
                      "[/yellow]")
    if check_overrules and layer is not None:
        console.print(f"the learned layer flagged at its checked threshold ({layer.checked_threshold:.2f}, below its "
                      f"own {layer.threshold:.2f}) for {check_model} to review: the tier column counts those flags")
    if overruled:
        console.print(f"{overruled} flag(s) of the learned layer or of ideation the rules read were lowered by "
                      f"{check_model} (`model_check.overruled`, its reason as evidence)")
    flagged.sort(key=lambda x: -TIER_RANK[x[1].tier])
    for rid, s in flagged[:show]:
        console.print(f"[bold]{s.tier}[/bold] {rid}: {s.evidence()}", highlight=False, soft_wrap=True)
    console.print(f"written: {out_path}  (a triage aid: read the flagged speeches, do not act on the tier alone)")
