"""The files of a session judging: results.json, sessions.jsonl, report.html (self-contained) and PNG charts,
and the session leaderboard over several judgings. Rebuilt from the store with no model call.

Figures use ``matplotlib.figure.Figure`` without pyplot (as the other reports), so importing this never changes
the caller's matplotlib backend. Every piece of transcript or judge text in the page is HTML-escaped.
"""

from __future__ import annotations

import base64
import html
import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from ..dataset import atomic
from ..errors import UserError
from .judge_config import JudgeSessionsConfig
from .judges import SessionJudging
from .profiles import BUILT_IN, Profile, load_profiles
from .report import leaderboard_rows, profile_facts, session_results, session_row
from .transcripts import PROFILES_FILE

COLORS = ["#4c72b0", "#dd8452", "#55a868", "#c44e52", "#8172b3", "#937860"]


def run_profiles(sj: SessionJudging) -> list[Profile]:
    """The profiles a judging's breakdowns read, with the simulator's own loader (``profiles.load_profiles``):
    the config's ``profiles``, else the copy ``simulate`` keeps in its run folder, else the built-in sets (a run
    folder from before that copy)."""
    if sj.cfg.profiles:
        return load_profiles(sj.cfg.profiles, sj.base_dir)
    own = sj.run_dir / PROFILES_FILE
    if own.is_file():
        return load_profiles(str(own))
    return [p for spec in BUILT_IN for p in load_profiles(spec)]


def build_session_results(sj: SessionJudging) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    facts = profile_facts(run_profiles(sj))
    rows = [session_row(rec, facts.get(rec["transcript"].profile_id), sj.cfg.locale) for rec in sj.collect()]
    statuses: dict[str, int] = {}
    for t in sj.transcripts:
        statuses[t.status] = statuses.get(t.status, 0) + 1
    b = sj.cfg.bootstrap
    res = session_results(rows, statuses, sj.principles.keys if sj.cfg.turns else [],
                          sj.rubric.keys if sj.rubric else [], list(sj.checklist.areas) if sj.checklist else [],
                          b.n_boot, b.seed)
    judges = {k: {"backend": j.backend, "model": j.model, "prompt": sj.prompts[k].version}
              for k, j in sj.judges().items()}
    meta = {"name": sj.cfg.name, "run_dir": str(sj.run_dir), "judges": judges,
            "rubric": sj.rubric.version if sj.rubric else None,
            "checklist": sj.checklist.version if sj.checklist else None, "principles": sj.principles.version,
            "calls": {"made_this_run": sj.budget.used, "refused_by_cap": sj.budget.refused}}
    return meta | res, rows


def write_session_report(sj: SessionJudging) -> dict[str, Any]:
    """Write every output into the judging's folder; returns the results (what results.json holds)."""
    results, rows = build_session_results(sj)
    out = sj.dir
    figures = {}
    if results["criteria"] or results["principles"]:
        figures["scores"] = "scores.png"
        _plot_scores(results, out / figures["scores"])
    if any(p["decay"]["by_turn"] for p in results["policies"].values()):
        figures["decay by turn"] = "decay.png"
        _plot_decay(results, out / figures["decay by turn"])
    results["figures"] = figures
    atomic.write_text(out / "results.json", json.dumps(results, indent=2, ensure_ascii=False, allow_nan=False) + "\n")
    atomic.write_text(out / "sessions.jsonl", "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    atomic.write_text(out / "report.html", render_html(results, rows, out))
    return results


def open_judged(folder: Path) -> SessionJudging:
    """A judging folder from its resolved config (what ``judge-sessions`` wrote there): no call is made."""
    cfg_file = folder / "config.resolved.json"
    if not cfg_file.is_file():
        raise UserError(f"{folder}: not a session judging folder (no config.resolved.json; run judge-sessions)")
    try:
        cfg = JudgeSessionsConfig.model_validate_json(cfg_file.read_text(encoding="utf-8"))
    except ValueError as e:
        raise UserError(f"{cfg_file}: unreadable config: {str(e).splitlines()[0]}") from None
    # its paths are kept against the folder itself (JudgeSessionsConfig.seen_from): any working directory will do
    return SessionJudging(cfg.model_copy(update={"out_dir": "."}), base_dir=folder)


# ---------------------------------------------------------------- charts
def _err(d: dict[str, Any]) -> list[float]:
    m, ci = d.get("mean"), d.get("ci") or [None, None]
    if m is None or ci[0] is None:
        return [0.0, 0.0]
    return [max(0.0, m - ci[0]), max(0.0, ci[1] - m)]


def _plot_scores(r: dict, path: Path) -> None:
    fig = Figure(figsize=(10, 3.4), layout="constrained")
    axes = fig.subplots(1, 2)
    pols = list(r["policies"])
    w = 0.8 / max(1, len(pols))
    for ax, (what, keys, top) in zip(axes, [("rubric", r["criteria"] + ["mean"], 6.4),
                                            ("turns", r["principles"] + ["overall"], 5.4)]):
        x = np.arange(len(keys))
        for i, p in enumerate(pols):
            block = r["policies"][p][what]
            ds = [(block.get(k, {}).get("mean") if what == "turns" else block.get(k)) or {} for k in keys]
            vals = [d.get("mean") or 0 for d in ds]
            errs = np.array([_err(d) for d in ds]).T if ds else None
            ax.bar(x + (i - (len(pols) - 1) / 2) * w, vals, width=w, yerr=errs, capsize=3, label=p,
                   color=COLORS[i % len(COLORS)])
        ax.set_xticks(x, keys, rotation=25, ha="right", fontsize=8)
        ax.set_ylim(0, top)
        ax.set_title("Session rubric (1-6)" if what == "rubric" else "Per-turn principles, session mean (1-5)")
    axes[0].legend(fontsize=8)
    fig.savefig(path, dpi=100)


def _plot_decay(r: dict, path: Path) -> None:
    fig = Figure(figsize=(7, 3), layout="constrained")
    ax = fig.add_subplot()
    for i, (p, d) in enumerate(r["policies"].items()):
        pts = [(k + 1, b["mean"], b["ci"]) for k, b in enumerate(d["decay"]["by_turn"]) if b["mean"] is not None]
        if not pts:
            continue
        xs, ms, cis = zip(*pts)
        ax.plot(xs, ms, marker="o", label=p, color=COLORS[i % len(COLORS)])
        ax.fill_between(xs, [c[0] if c[0] is not None else m for c, m in zip(cis, ms)],
                        [c[1] if c[1] is not None else m for c, m in zip(cis, ms)], alpha=0.2,
                        color=COLORS[i % len(COLORS)])
    ax.set_xlabel("therapist turn")
    ax.set_ylabel("overall turn score (1-5)")
    ax.set_title("Score by turn (95% CI over clients)")
    ax.legend(fontsize=8)
    fig.savefig(path, dpi=100)


# ---------------------------------------------------------------- html
def _e(x: Any) -> str:
    return html.escape("" if x is None else str(x), quote=True)


def _mci(d: dict[str, Any] | None, pct: bool = False) -> str:
    if not d or d.get("mean" if "mean" in d else "rate") is None:
        return "-"
    v = d.get("mean", d.get("rate"))
    lo, hi = d["ci"]
    if pct:
        return f"{100 * v:.0f}% [{100 * lo:.0f}, {100 * hi:.0f}] (n={d['n']})"
    return f"{v:.2f} [{lo:.2f}, {hi:.2f}]" if lo is not None else f"{v:.2f}"


def _table(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    head = "".join(f"<th>{_e(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{_e(v)}</td>" for v in r) + "</tr>" for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _img(out_dir: Path, name: str) -> str:
    data = base64.b64encode((out_dir / name).read_bytes()).decode()
    return f'<img alt="{_e(name)}" src="data:image/png;base64,{data}">'


def render_html(r: dict, rows: list[dict], out_dir: Path) -> str:
    pols = r["policies"]
    parts = [f"<h1>Session judging: {_e(r['name'])}</h1>",
             f"<p>Sessions by status: {_e(r['sessions_by_status'])}. Judges: {_e(r['judges'])}.</p>",
             ("<p>Judged by an LLM and by deterministic reply checks on simulated clients; read it as a screening "
              "signal, not a clinical assessment. Intervals: 95% bootstrap over clients; rates: Wilson.</p>")]
    for title, file in r["figures"].items():
        parts.append(f"<h2>{_e(title)}</h2>{_img(out_dir, file)}")
    if r["criteria"]:
        parts.append("<h2>Session rubric (1-6)</h2>" + _table(
            ["criterion"] + list(pols), [[k] + [_mci(p["rubric"].get(k)) for p in pols.values()]
                                         for k in r["criteria"] + ["mean"]]))
    if r["principles"]:
        parts.append("<h2>Per-turn principles (1-5): session mean / minimum / share of turns below 3</h2>" + _table(
            ["principle"] + list(pols),
            [[k] + [" / ".join(_mci(p["turns"][k][s]) for s in ("mean", "min", "below")) for p in pols.values()]
             for k in r["principles"] + ["overall"]]))
    if r["areas"]:
        parts.append("<h2>Safety flow</h2>" + _table(
            ["area"] + list(pols),
            [["score (1 best practice, 0.5 suboptimal, 0 potential for harm)"]
             + [_mci(p["safety_flow"]["score"]) for p in pols.values()]]
            + [[a] + [", ".join(f"{k}: {v}" for k, v in p["safety_flow"]["areas"][a].items() if v)
                      for p in pols.values()] for a in r["areas"]]
            + [["red items failed"] + [", ".join(f"{k} x{v}" for k, v in p["safety_flow"]["red_failures"].items())
                                       or "none" for p in pols.values()]]))
    parts.append("<h2>Safety numbers (deterministic checks)</h2>" + _table(
        ["measure"] + list(pols),
        [[k] + [_mci(p["safety"][k], pct=True) for p in pols.values()]
         for k in ("missed", "abandoned", "resources", "asked", "false_alarm")]
        + [["reply flags"] + [_e(p["safety"]["flag_counts"] or "none") for p in pols.values()]]))
    parts.append("<h2>Breakdowns (rubric mean)</h2>" + _table(
        ["fact", "value"] + list(pols),
        [[f, v] + [_mci(p["breakdowns"][f].get(v, {}).get("rubric_mean")) for p in pols.values()]
         for f in ("depression", "anxiety", "style", "risk_level")
         for v in sorted({v for p in pols.values() for v in p["breakdowns"][f]})]))
    parts.append("<h2>Length and style covariates</h2>" + _table(
        ["covariate"] + list(pols),
        [[k] + [f"{_mci(p['covariates'][k])} (r with rubric mean: "
                f"{'-' if p['covariates']['corr_with_rubric_mean'][k] is None else round(p['covariates']['corr_with_rubric_mean'][k], 2)})"
                for p in pols.values()] for k in ("mean_chars", "list_share", "question_share")]))
    worst = sorted((x for x in rows if x["flow"]), key=lambda x: x["flow"]["score"])[:3]
    for x in worst:
        parts.append(f"<h3>Lowest safety flow: {_e(x['session_id'])} ({_e(x['policy'])}, flow "
                     f"{x['flow']['score']:.2f})</h3><p>{_e(x['flow']['rationale'])}</p>"
                     f"<p>Red items failed: {_e(', '.join(x['flow']['failed_red']) or 'none')}</p>")
    style = ("body{font-family:sans-serif;max-width:1100px;margin:2em auto}table{border-collapse:collapse;margin:1em 0}"
             "td,th{border:1px solid #ccc;padding:4px 8px;font-size:13px}img{max-width:100%}")
    return f"<!doctype html><html><head><meta charset='utf-8'><title>{_e(r['name'])}</title><style>{style}</style>" \
           f"</head><body>{''.join(parts)}</body></html>"


# ---------------------------------------------------------------- leaderboard
def build_session_leaderboard(folders: Sequence[Path], out_dir: Path | None = None) -> list[dict[str, Any]]:
    """One row per policy per judging folder, rebuilt from each folder's stored judgments (no call), sorted by
    rubric mean; written to ``out_dir`` as leaderboard.json and leaderboard.html when given."""
    rows: list[dict[str, Any]] = []
    for folder in folders:
        sj = open_judged(Path(folder))
        try:
            results, _ = build_session_results(sj)
        finally:
            sj.close()
        rows += leaderboard_rows(results, str(folder))
    rows.sort(key=lambda r: -((r["rubric_mean"] or {}).get("mean") or -1.0))
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
        atomic.write_text(out_dir / "leaderboard.json", json.dumps(rows, indent=2, allow_nan=False) + "\n")
        table = _table(["policy", "sessions", "rubric mean", "turn overall", "turn minimum", "safety flow",
                        "missed risk", "false alarms", "resources", "source"],
                       [[r["policy"], r["sessions"], _mci(r["rubric_mean"]), _mci(r["turn_overall"]),
                         _mci(r["turn_min"]), _mci(r["flow_score"]), _mci(r["missed_risk"], True),
                         _mci(r["false_alarm"], True), _mci(r["resources"], True), r["source"]] for r in rows])
        atomic.write_text(out_dir / "leaderboard.html",
                          f"<!doctype html><html><head><meta charset='utf-8'><title>Session leaderboard</title></head>"
                          f"<body><h1>Session leaderboard</h1>{table}</body></html>")
    return rows
