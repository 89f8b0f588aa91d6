"""Evaluation outputs: results.json, comparisons.jsonl, report.html (self-contained), PNG charts, the
terminal summary, and the leaderboard of several evaluations (rebuilt from stored results, no model call).

Figures are drawn on ``matplotlib.figure.Figure`` without pyplot (as stats.py), so importing this module
never changes the caller's matplotlib backend. Every piece of text from a speech, a response or a judge is
HTML-escaped: client speeches are user data and may hold markup.
"""

from __future__ import annotations

import base64
import html
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Sequence

import numpy as np
from matplotlib.figure import Figure
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from ..dataset import atomic
from ..errors import UserError
from .results import SAFETY_CHECKS, SIDES, compute_results

if TYPE_CHECKING:
    from .session import Evaluation

EXAMPLES = 6  # comparisons shown in full in the HTML report (all of them are in comparisons.jsonl)
COLORS = {"policy": "#4c72b0", "reference": "#dd8452"}


def _describe_side(c: Any) -> dict[str, Any]:
    if c.responses:
        return {"name": c.name, "responses_file": c.responses}
    return {"name": c.name, "backend": c.backend, "model": c.model, "custom_system_prompt": c.system_prompt is not None,
            "sampling": c.sampling.model_dump()}


def build_results(ev: "Evaluation", counts: dict[str, Any]) -> tuple[dict[str, Any], list[dict]]:
    cfg = ev.cfg
    rows = ev.collect()
    caps = None
    if cfg.mode == "length_cap":
        caps = {s: (None if c.responses else min(c.sampling.max_tokens, cfg.length_cap.max_tokens))
                for s, c in ev.sides()}
    res = compute_results(rows, names={"policy": cfg.policy.name, "reference": cfg.reference.name},
                          principles=ev.principles.keys, low_score=cfg.safety.low_score,
                          n_boot=cfg.bootstrap.n_boot, seed=cfg.bootstrap.seed, has_scores=cfg.scores is not None,
                          max_tokens=caps, weights=cfg.scores.weights if cfg.scores else None)
    pc = cfg.pairwise
    meta = {
        "name": cfg.full_name, "mode": cfg.mode,
        "length_cap": cfg.length_cap.model_dump() if cfg.mode == "length_cap" else None,
        "policy": _describe_side(cfg.policy), "reference": _describe_side(cfg.reference),
        "judge": {"backend": pc.backend, "type": cfg.backends[pc.backend].type, "model": pc.model, "mode": pc.mode,
                  "prompt": ev.pairwise_prompt.version, "max_attempts": pc.max_attempts},
        "scorer": None if cfg.scores is None else {"backend": cfg.scores.backend, "model": cfg.scores.model,
                                                     "mode": cfg.scores.mode, "prompt": ev.score_prompt.version},
        "principles": ev.principles.version, "speech_source": cfg.speeches.model_dump(),
        "bootstrap": cfg.bootstrap.model_dump(), "this_run": counts,
        "calls": {"made_this_run": ev.budget.used, "refused_by_cap": ev.budget.refused, "cap": ev.budget.limit,
                  "cached_total": ev.store.call_stats()},
    }
    return meta | res, rows


def write_report(ev: "Evaluation", counts: dict[str, Any]) -> dict[str, Any]:
    """Write every output into the evaluation folder; returns the results (what results.json holds)."""
    results, rows = build_results(ev, counts)
    out = ev.dir
    figures = {"win rates": "winrates.png", "judge biases": "biases.png", "lengths": "lengths.png"}
    _plot_winrates(results, out / figures["win rates"])
    _plot_biases(results, out / figures["judge biases"])
    _plot_lengths(results, out / figures["lengths"])
    if results["scores"]:
        figures["principle scores"] = "principles.png"
        _plot_principles(results, out / figures["principle scores"])
    results["figures"] = figures
    atomic.write_text(out / "results.json", json.dumps(results, indent=2, ensure_ascii=False, allow_nan=False) + "\n")
    atomic.write_text(out / "comparisons.jsonl", "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    atomic.write_text(out / "report.html", render_html(results, rows, out))
    return results


# ---------------------------------------------------------------- charts
def _save(fig: Figure, path: Path) -> None:
    fig.savefig(path, dpi=100)  # constrained layout: one draw (tight_layout would draw twice)


def _err(v: float | None, ci: Sequence[float | None]) -> list[float]:
    if v is None or ci is None or ci[0] is None:
        return [0.0, 0.0]
    return [max(0.0, v - ci[0]), max(0.0, ci[1] - v)]


def _bars(ax: Any, items: list[tuple[str, float | None, Sequence[float | None]]], color: str) -> None:
    y = np.arange(len(items))
    vals = [100 * (v or 0) for _, v, _ in items]
    errs = np.array([[100 * e for e in _err(v, ci)] for _, v, ci in items]).T
    ax.barh(y, vals, xerr=errs, color=color, capsize=4)
    ax.set_yticks(y, [n for n, _, _ in items])
    ax.set_xlim(0, 100)
    for i, (_, v, ci) in enumerate(items):
        label = "-" if v is None else f"{100 * v:.1f}%"
        right = 100 * (ci[1] if ci and ci[1] is not None else (v or 0))
        if right > 85:  # no room right of the bar: write inside it
            ax.text(2, i, label, va="center", color="white", fontsize=9)
        else:
            ax.text(right + 1.5, i, label, va="center", color="black", fontsize=9)


def _plot_winrates(r: dict, path: Path) -> None:
    pw = r["pairwise"]
    fig = Figure(figsize=(7, 2.4), layout="constrained")
    ax = fig.add_subplot()
    _bars(ax, [("length-controlled", pw.get("lc_win_rate"), pw.get("lc_win_rate_ci")),
               ("win rate", pw.get("win_rate"), pw.get("win_rate_ci"))], COLORS["policy"])
    ax.axvline(50, color="grey", ls="--", lw=1)
    ax.set_xlabel("policy's win rate against the reference, % (95% CI over speeches)")
    ax.set_title(f"{r['names']['policy']} vs {r['names']['reference']} (n={pw.get('n', 0)})")
    _save(fig, path)


def _plot_biases(r: dict, path: Path) -> None:
    pw = r["pairwise"]
    fig = Figure(figsize=(7, 2.6), layout="constrained")
    ax = fig.add_subplot()
    _bars(ax, [("longer response wins", pw.get("longer_wins_rate"), None),
               ("judge picks position A", pw.get("position_a_rate"), None),
               ("flip rate (orders disagree)", pw.get("flip_rate"), pw.get("flip_rate_ci"))], "#8172b3")
    ax.axvline(50, color="grey", ls="--", lw=1)
    ax.set_xlabel("% (dashed: 50%, no position or length preference)")
    ax.set_title("Judge biases, measured on this evaluation")
    _save(fig, path)


def _plot_lengths(r: dict, path: Path) -> None:
    fig = Figure(figsize=(7, 3), layout="constrained")
    ax = fig.add_subplot()
    allc = [c for s in SIDES for c in r["lengths"][s]["chars"]]
    bins = np.histogram_bin_edges(allc or [0, 1], bins=20)
    for s in SIDES:
        ax.hist(r["lengths"][s]["chars"], bins=bins, alpha=0.6, label=r["names"][s], color=COLORS[s])
    ax.set_xlabel("response length (characters)")
    ax.set_ylabel("responses")
    ax.set_title("Response lengths")
    ax.legend()
    _save(fig, path)


def _plot_principles(r: dict, path: Path) -> None:
    sc = r["scores"]
    keys = list(sc["policy"]["principles"]) + ["overall"]
    fig = Figure(figsize=(9, 3.2), layout="constrained")
    ax = fig.add_subplot()
    x = np.arange(len(keys))
    for i, s in enumerate(SIDES):
        d = [sc[s]["principles"][k] if k != "overall" else sc[s]["overall"] for k in keys]
        vals = [v["mean"] or 0 for v in d]
        errs = np.array([_err(v["mean"], v["ci"]) for v in d]).T
        ax.bar(x + (i - 0.5) * 0.38, vals, width=0.38, yerr=errs, capsize=3, label=r["names"][s], color=COLORS[s])
    ax.set_xticks(x, keys, rotation=20)
    ax.set_ylim(0, 5.4)
    ax.set_ylabel("mean score 1-5")
    ax.set_title("Absolute scores per principle (95% CI over speeches)")
    ax.legend(fontsize=8)
    _save(fig, path)


# ---------------------------------------------------------------- html
def _e(x: Any) -> str:
    return html.escape("" if x is None else str(x), quote=True)


def _p(x: Any) -> str:
    return "-" if x is None else f"{100 * x:.1f}%"


def _ci(ci: Any) -> str:
    return "" if not ci or ci[0] is None else f"[{100 * ci[0]:.1f}, {100 * ci[1]:.1f}]"


def _f(x: Any) -> str:
    return "-" if x is None else f"{x:.2f}"


def _table(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    head = "".join(f"<th>{_e(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{_e(v)}</td>" for v in r) + "</tr>" for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def render_html(r: dict, rows: list[dict], out_dir: Path) -> str:
    pw, s = r["pairwise"], r["safety"]
    warn = ' class="warn"' if s["policy_worse"] else ""
    parts = [f"<h1>Evaluation: {_e(r['name'])}</h1>",
             "".join(f"<p{warn if 'SAFETY' in line else ''}>{_e(line)}</p>" for line in r["headline"]),
             "<p>Judged by an LLM; read it as a screening signal, not a clinical assessment. psychocounsel helps "
             "therapists draft and assess responses; it is never an unsupervised therapist.</p>",
             "<h2>Setup</h2>",
             _table(["", "value"], [("policy", json.dumps(r["policy"])), ("reference", json.dumps(r["reference"])),
                                    ("pairwise judge", json.dumps(r["judge"])), ("score judge", json.dumps(r["scorer"])),
                                    ("mode", r["mode"]), ("principles", r["principles"]),
                                    ("speeches", r["speeches"]["n"]), ("calls this run", json.dumps(r["calls"]))]),
             "<h2>Pairwise (both orders)</h2>",
             _table(["number", "value", "95% CI"],
                    [("win rate", _p(pw.get("win_rate")), _ci(pw.get("win_rate_ci"))),
                     ("length-controlled win rate", _p(pw.get("lc_win_rate")), _ci(pw.get("lc_win_rate_ci"))),
                     ("flip rate (orders disagree)", _p(pw.get("flip_rate")), _ci(pw.get("flip_rate_ci"))),
                     ("wins / ties / losses", f"{pw.get('wins', 0)} / {pw.get('ties', 0)} / {pw.get('losses', 0)}", ""),
                     ("comparisons (both orders read)", pw.get("n", 0), ""),
                     ("comparisons left out (a verdict failed)", pw.get("n_failed", 0), ""),
                     ("verdicts ok / failed / pending", "{ok} / {failed} / {pending}".format(**pw["verdicts"]), ""),
                     ("judge picks position A", _p(pw.get("position_a_rate")), "50% = no position bias"),
                     ("same position both orders", _p(pw.get("same_position_rate")), ""),
                     ("longer response wins (decided)", _p(pw.get("longer_wins_rate")), f"n={pw.get('n_longer_decided')}"),
                     ("length coefficient (LC fit)", _f(pw.get("length_coef")), "> 0: the judge favours longer")]),
             "".join(f"<p>note: {_e(n)}</p>" for n in pw.get("notes", []))]
    if pw["failures"]:
        parts += ["<h3>Failed verdicts</h3>",
                  _table(["speech", "order", "attempts", "error"],
                         [(f["speech_id"], f["order"], f["attempts"], f["error"]) for f in pw["failures"]])]
    if r["scores"]:
        sc = r["scores"]
        keys = list(sc["policy"]["principles"])
        parts += ["<h2>Absolute scores (1-5)</h2>",
                  _table(["principle", r["names"]["policy"], "95% CI", r["names"]["reference"], "95% CI"],
                         [(k, _f(sc["policy"]["principles"][k]["mean"]), _cis(sc["policy"]["principles"][k]["ci"]),
                           _f(sc["reference"]["principles"][k]["mean"]), _cis(sc["reference"]["principles"][k]["ci"]))
                          for k in keys] + [("overall", _f(sc["policy"]["overall"]["mean"]), _cis(sc["policy"]["overall"]["ci"]),
                                             _f(sc["reference"]["overall"]["mean"]), _cis(sc["reference"]["overall"]["ci"]))]),
                  f"<p>scored: policy {sc['policy']['n']} (failed {sc['policy']['failed']}), reference "
                  f"{sc['reference']['n']} (failed {sc['reference']['failed']})</p>"]
    parts.append(_safety_html(r))
    parts.append("<h2>Figures</h2>")
    for name, fname in r["figures"].items():
        data = base64.b64encode((out_dir / fname).read_bytes()).decode("ascii")
        parts.append(f'<figure><img alt="{_e(name)}" src="data:image/png;base64,{data}">'
                     f"<figcaption>{_e(fname)}</figcaption></figure>")
    parts.append(f"<h2>Examples (first {EXAMPLES}; all in comparisons.jsonl)</h2>")
    for row in rows[:EXAMPLES]:
        parts.append(_table(["", "text"], [
            ("speech", row["speech"]), (r["names"]["policy"], row["policy"]["text"] or row["policy"]["status"]),
            (r["names"]["reference"], row["reference"]["text"] or row["reference"]["status"]),
            ("policy shown as A", f"{row['policy_first'].get('verdict')}: {row['policy_first'].get('rationale', '')}"),
            ("reference shown as A", f"{row['reference_first'].get('verdict')}: "
                                     f"{row['reference_first'].get('rationale', '')}")]))
    style = ("body{font-family:sans-serif;max-width:1100px;margin:2em auto}table{border-collapse:collapse;margin:.5em 0}"
             "td,th{border:1px solid #ccc;padding:3px 8px;vertical-align:top;white-space:pre-wrap}"
             "img{max-width:100%}.warn{background:#fde2e1;border-left:4px solid #c0392b;padding:.4em}")
    return (f'<!DOCTYPE html>\n<html><head><meta charset="utf-8"><title>{_e(r["name"])}</title>'
            f"<style>{style}</style></head><body>{''.join(parts)}</body></html>\n")


def _cis(ci: Any) -> str:
    return "" if not ci or ci[0] is None else f"[{ci[0]:.2f}, {ci[1]:.2f}]"


def _safety_html(r: dict) -> str:
    s, names = r["safety"], r["names"]
    parts = ["<h2>Safety (reported apart from the win rate)</h2>"]
    if s.get("low_share"):
        lo = s["low_share"]
        parts.append(_table(["", names["policy"], "95% CI", names["reference"], "95% CI"],
                            [(f"responses with safety <= {s['low_score']}", _p(lo["policy"]["mean"]),
                              _ci(lo["policy"]["ci"]), _p(lo["reference"]["mean"]), _ci(lo["reference"]["ci"]))]))
    c = s["crisis"]
    if not c.get("available"):
        parts.append(f"<p>{_e(c.get('note'))}</p>")
    else:
        parts.append(f"<p>Crisis screen ({_e(c['rules_version'])}): {c['n_risk']} "
                     f"speech{'es show' if c['n_risk'] != 1 else ' shows'} risk "
                     f"({c['tiers']['high']} high, {c['tiers']['possible']} possible).</p>")
        if c["n_risk"]:
            parts.append(_table(["on risk speeches", names["policy"], "95% CI (Wilson)", names["reference"],
                                 "95% CI (Wilson)"],
                                [(k.replace("_", " "), *(v for side in SIDES for v in (
                                    _p(c[side][k + "_rate"]), _ci(c[side].get(k + "_rate_ci")))))
                                 for k in ("acknowledges", "points_to_help", "both")]))
            missed = [(side, m["speech_id"], m["tier"], m["acknowledges"], m["points_to_help"], m["evidence"], m["excerpt"])
                      for side in SIDES for m in c[side]["missed"]]
            if missed:
                parts += ["<h3>Risk speeches where a response missed the risk or gave no help</h3>",
                          _table(["side", "speech", "tier", "acknowledges", "points to help", "evidence", "response"],
                                 missed)]
    if s["wrong_numbers"]:
        parts += ["<h3 class=\"warn\">Responses citing a retired or wrong crisis number</h3>",
                  _table(["side", "speech", "number", "response"],
                         [(w["side"], w["speech_id"], w["number"], w["excerpt"]) for w in s["wrong_numbers"]])]
    elif s.get("measured", {}).get("crisis_numbers", True):
        parts.append("<p>No response cites a retired or wrong crisis number.</p>")
    else:
        parts.append("<p>Crisis numbers: not measured (no response from both sides yet).</p>")
    parts += _flags_html(s.get("flags"), names)
    idle = [SAFETY_CHECKS[k] for k, v in s.get("measured", {}).items() if not v]
    if idle:
        parts.append(f"<p>Not measured (nothing to check yet): {_e(', '.join(idle))}.</p>")
    return "".join(parts)


def _flags_html(fl: dict[str, Any] | None, names: dict[str, str]) -> list[str]:
    """Share of each side's replies carrying each reply-check flag, and the words of every high-severity one."""
    if not fl or not (fl["policy"]["n"] and fl["reference"]["n"]):
        return []
    rows = [(k, fl["severity"].get(k, "high: any kind"), *(v for side in SIDES for v in (
        f"{fl[side][k]['count']} ({_p(fl[side][k]['rate'])})", _ci(fl[side][k]["rate_ci"]))))
            for k in [*fl["severity"], "high"]]
    parts = ["<h3>Reply-check flags</h3>",
             "<p>Replies the rules of the reply checks flag (the words of every flag are in comparisons.jsonl, "
             "under each side's <code>flags</code>). A triage aid: a reply no rule flags is not thereby safe.</p>",
             _table(["flag", "severity", names["policy"], "95% CI (Wilson)", names["reference"], "95% CI (Wilson)"],
                    rows)]
    high = [(side, ex["speech_id"], f["kind"], f["text"], f["detail"])
            for side in SIDES for ex in fl[side]["high_examples"] for f in ex["flags"]]
    if high:
        parts += ["<h3 class=\"warn\">High-severity flags</h3>",
                  _table(["side", "speech", "flag", "words", "detail"], high)]
    return parts


# ---------------------------------------------------------------- terminal
def print_summary(console: Console, r: dict) -> None:
    for line in r["headline"]:
        style = "bold red" if line.startswith("SAFETY") else "yellow" if line.startswith("INCOMPLETE") else ""
        console.print(escape(line), style=style, soft_wrap=True)
    pw = r["pairwise"]
    t = Table(title="pairwise (both orders)")
    for h in ("number", "value", "95% CI"):
        t.add_column(h)
    for name, v, ci in (("win rate", pw.get("win_rate"), pw.get("win_rate_ci")),
                        ("LC win rate", pw.get("lc_win_rate"), pw.get("lc_win_rate_ci")),
                        ("flip rate", pw.get("flip_rate"), pw.get("flip_rate_ci")),
                        ("judge picks A", pw.get("position_a_rate"), None)):
        t.add_row(name, _p(v), _ci(ci))
    console.print(t)
    c = r["calls"]
    console.print(f"model calls this run: {c['made_this_run']}" + (f" (cap {c['cap']}, {c['refused_by_cap']} refused)"
                                                                     if c["cap"] is not None else ""))


def print_dry_run(console: Console, est: dict[str, Any]) -> None:
    t = Table(title=f"dry run: what evaluating {est['speeches']} speeches would spend (upper bounds)")
    for c in ("backend", "calls", "prompt tokens", "completion tokens", "cost (USD)"):
        t.add_column(c)
    for name, e in est["backends"].items():
        cost = "-" if e["cost_usd"] is None else f"{e['cost_usd']:.2f}"
        t.add_row(escape(name), f"{e['calls']:,}", f"{e['prompt_tokens']:,}", f"{e['completion_tokens']:,}", cost)
    console.print(t)
    if est["max_calls"] is not None:
        console.print(f"--max-calls {est['max_calls']}: the run would stop after that many calls")


# ---------------------------------------------------------------- leaderboard
LEADERBOARD_COLUMNS = ("evaluation", "policy", "reference", "judge", "n", "win rate", "95% CI", "LC win rate",
                       "95% CI ", "flip rate", "failed", "policy overall", "reference overall",
                       "policy safety<=2", "reference safety<=2", "risk handled (policy/ref)", "wrong numbers",
                       "safety", "complete")


def leaderboard_row(r: dict) -> dict[str, Any]:
    pw, s, sc = r["pairwise"], r["safety"], r.get("scores")
    c = s.get("crisis", {})
    lo = s.get("low_share") or {}
    return {
        "evaluation": r["name"], "policy": r["names"]["policy"], "reference": r["names"]["reference"],
        "judge": r["judge"]["model"], "n": pw.get("n", 0),
        "win_rate": pw.get("win_rate"), "win_rate_ci": pw.get("win_rate_ci"),
        "lc_win_rate": pw.get("lc_win_rate"), "lc_win_rate_ci": pw.get("lc_win_rate_ci"),
        "flip_rate": pw.get("flip_rate"), "failed": pw.get("n_failed", 0),
        "policy_overall": sc["policy"]["overall"]["mean"] if sc else None,
        "reference_overall": sc["reference"]["overall"]["mean"] if sc else None,
        "policy_low_safety": (lo.get("policy") or {}).get("mean"),
        "reference_low_safety": (lo.get("reference") or {}).get("mean"),
        "policy_risk_handled": (c.get("policy") or {}).get("both_rate") if c.get("available") else None,
        "reference_risk_handled": (c.get("reference") or {}).get("both_rate") if c.get("available") else None,
        "policy_wrong_numbers": sum(w["side"] == "policy" for w in s.get("wrong_numbers", [])),
        "policy_safety_worse": s["policy_worse"], "safety": safety_verdict(s), "complete": r["complete"],
    }


def safety_verdict(s: dict[str, Any]) -> str:
    """WORSE, ok (no loss on the checks that ran) or "not measured" (no check had anything to check)."""
    if s["policy_worse"]:
        return "WORSE"
    measured = s.get("measured")  # results written before it was kept: as they were read then
    return "ok" if measured is None or any(measured.values()) else "not measured"


def _cells(row: dict) -> list[str]:
    return [row["evaluation"], row["policy"], row["reference"], row["judge"], str(row["n"]), _p(row["win_rate"]),
            _ci(row["win_rate_ci"]), _p(row["lc_win_rate"]), _ci(row["lc_win_rate_ci"]), _p(row["flip_rate"]),
            str(row["failed"]), _f(row["policy_overall"]), _f(row["reference_overall"]), _p(row["policy_low_safety"]),
            _p(row["reference_low_safety"]), f"{_p(row['policy_risk_handled'])} / {_p(row['reference_risk_handled'])}",
            str(row["policy_wrong_numbers"]), row["safety"], "yes" if row["complete"] else "no"]


def build_leaderboard(dirs: Sequence[Path], out_dir: Path, console: Console | None = None) -> list[dict[str, Any]]:
    """Rows from each folder's results.json, sorted by LC win rate; writes leaderboard.json and
    leaderboard.html into ``out_dir`` (``evaluate.leaderboard`` rebuilds the results first when asked)."""
    rows = []
    for d in dirs:
        path = d / "results.json"
        if not path.is_file():
            raise UserError(f"{d}: no results.json (run `psychocounsel evaluate` for it first)")
        try:
            rows.append(leaderboard_row(json.loads(path.read_text(encoding="utf-8"))))
        except (ValueError, KeyError) as e:
            raise UserError(f"{path}: not an evaluation's results.json ({e})") from None
    rows.sort(key=lambda x: (-(x["lc_win_rate"] if x["lc_win_rate"] is not None else -1),
                             -(x["win_rate"] if x["win_rate"] is not None else -1)))
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic.write_text(out_dir / "leaderboard.json", json.dumps(rows, indent=2, ensure_ascii=False) + "\n")
    # 19 columns: their cells wrap at spaces, so the table fits a 1,280 px screen; what still does not fit
    # (long model names) scrolls sideways in its own box rather than running off the page
    style = ("body{font-family:sans-serif;margin:1.5em}.scroll{overflow-x:auto;max-width:100%}"
             "table{border-collapse:collapse;font-size:14px}"
             "td,th{border:1px solid #ccc;padding:3px 5px;vertical-align:top}")
    page = (f'<!DOCTYPE html>\n<html><head><meta charset="utf-8"><title>leaderboard</title><style>{style}</style>'
            f'</head><body><h1>Leaderboard</h1><p>Sorted by length-controlled win rate. "safety WORSE": the policy '
            f'lost to its reference on a safety check, whatever its win rate; "not measured": no safety check had '
            f'anything to check yet.</p><div class="scroll">{_table(LEADERBOARD_COLUMNS, [_cells(r) for r in rows])}'
            f'</div></body></html>\n')
    atomic.write_text(out_dir / "leaderboard.html", page)
    if console is not None:
        t = Table(title="leaderboard (sorted by LC win rate; intervals: 95% over speeches)")
        for h in ("evaluation", "n", "win rate", "LC win rate", "flip", "failed", "unsafe pol/ref", "safety"):
            t.add_column(h, overflow="fold")
        for r in rows:
            t.add_row(escape(r["evaluation"]), str(r["n"]), f"{_p(r['win_rate'])} {_ci(r['win_rate_ci'])}",
                      f"{_p(r['lc_win_rate'])} {_ci(r['lc_win_rate_ci'])}", _p(r["flip_rate"]), str(r["failed"]),
                      f"{_p(r['policy_low_safety'])}/{_p(r['reference_low_safety'])}",
                      r["safety"], style="red" if r["policy_safety_worse"] else None)
        console.print(t)
        console.print(f"leaderboard: {out_dir / 'leaderboard.html'}")
    return rows

