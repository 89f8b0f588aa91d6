"""Session A against session B with the same simulated client: a pairwise judge, both orders.

Sessions of two runs face each other when they share the client (profile), and by default the seed and budget
too, a paired design: the client simulator meets both policies with the same persona and randomness. Each pair
is judged twice, A's session shown first and then second; ``measures.winrate.combine_orders`` counts a win
only when both orders agree, and an inconsistent pair (the verdict follows the position) is a tie. A reply
without a readable winner is a recorded failure, left out of the rate and counted. Verdicts are items in
``<out_dir>/compare.sqlite`` beside the call cache, so a rerun costs no call.
"""

from __future__ import annotations

import asyncio
import json
import math
import time
from pathlib import Path
from typing import Any

from ..backends import in_flight
from ..backends.base import ChatRequest
from ..dataset import atomic
from ..dataset.session import EVAL_KEYS, CallBudget, OverBudget, Session
from ..errors import UserError
from ..measures.bootstrap import bootstrap_by_group, weighted_mean
from ..measures.winrate import combine_orders, flip_rate
from ..rubric import pairwise
from ..rubric.score import retry_sampling
from ..runner import StageProgress, call_until_parsed, run_pool
from .judge_config import CompareSessionsConfig
from .judges import ITEMS_SQL, ItemRow, JudgeWriter
from .rubric import builtin_path, load_session_rubric
from .transcripts import Transcript, format_conversation, read_transcripts

ORDERS = ("a_first", "b_first")


class SessionComparison(Session):
    """The folder of one comparison: store, judge prompt, both runs' transcripts and the matched pairs."""

    cfg: CompareSessionsConfig

    def __init__(self, cfg: CompareSessionsConfig, base_dir: Path = Path("."), progress: StageProgress | None = None,
                 budget: CallBudget | None = None):
        super().__init__(cfg, Path(cfg.out_dir), "compare.sqlite", base_dir=base_dir,
                         progress=progress or StageProgress(enabled=False), budget=budget or CallBudget(),
                         keys=EVAL_KEYS)
        self.store.con.execute(ITEMS_SQL)
        self.prompt_ = self.prompt(cfg.judge.prompt or str(builtin_path("compare_v1.txt")))
        self.rubric = load_session_rubric(cfg.rubric_file if cfg.rubric_file == "default" else self.path(cfg.rubric_file))
        runs = [self.base_dir / r if not Path(r).is_absolute() else Path(r) for r in (cfg.run_a, cfg.run_b)]
        self.pairs = match_sessions(read_transcripts(runs[0]), read_transcripts(runs[1]), cfg.match)
        if not self.pairs:
            raise UserError(f"{cfg.run_a} and {cfg.run_b}: no complete sessions with the same client to compare "
                            f"(match: {cfg.match})")
        j = cfg.judge
        self.judge_fp = self.fingerprint({"b": self.identity(j.backend, j.model), "m": j.model, "kind": "compare",
                                          "prompt": self.prompt_.version, "rubric": self.rubric.version,
                                          "s": j.sampling.model_dump(), "n": j.max_attempts})

    def key(self, first: Transcript, second: Transcript) -> str:
        return "compare:" + self.fingerprint([self.judge_fp, format_conversation(first.turns),
                                              format_conversation(second.turns)])

    def messages(self, first: Transcript, second: Transcript) -> list[dict[str, str]]:
        values = {"criteria": self.rubric.one_line_each(), "transcript_a": format_conversation(first.turns),
                  "transcript_b": format_conversation(second.turns)}
        return [{"role": r, "content": self.prompt_.render(r, **values)}
                for r in ("system", "user") if r in self.prompt_.sections]

    def work(self) -> list[tuple[str, str, Transcript, Transcript]]:
        """(key, pair id, session shown first, session shown second) for both orders of every pair."""
        out = []
        for a, b in self.pairs:
            out += [(self.key(a, b), a.session_id, a, b), (self.key(b, a), a.session_id, b, a)]
        return out

    def verdicts(self) -> dict[str, dict[str, Any]]:
        keys = [k for k, *_ in self.work()]
        out = {}
        for i in range(0, len(keys), 900):
            part = keys[i:i + 900]
            q = f"SELECT key, status, value, error FROM session_items WHERE key IN ({','.join('?' * len(part))})"
            for k, st, v, e in self.store.con.execute(q, part):
                out[k] = {"status": st, "value": json.loads(v) if v else None, "error": e}
        return out


def match_sessions(run_a: list[Transcript], run_b: list[Transcript], match: str) -> list[tuple[Transcript, Transcript]]:
    """Complete sessions of A and B with the same client (and seed and budget, for ``profile_seed_budget``)."""
    def key(t: Transcript) -> tuple:
        return (t.profile_id, t.seed, t.budget) if match == "profile_seed_budget" else (t.profile_id,)

    b_by: dict[tuple, Transcript] = {}
    for t in run_b:
        if t.status == "complete":
            b_by.setdefault(key(t), t)
    out, seen = [], set()
    for t in run_a:
        k = key(t)
        if t.status == "complete" and k in b_by and k not in seen:
            seen.add(k)
            out.append((t, b_by[k]))
    return out


async def run_comparison(sc: SessionComparison) -> dict[str, int]:
    j = sc.cfg.judge
    writer = JudgeWriter(sc.store)
    caller = sc.callers(writer)[j.backend]
    stored = sc.verdicts()
    counts = {"done_before": 0, "judged": 0, "failed": 0, "over_budget": 0}
    todo = []
    for item in sc.work():
        if (stored.get(item[0]) or {}).get("status") == "ok":
            counts["done_before"] += 1
        else:
            todo.append(item)
    structured = getattr(sc.cfg.backends[j.backend], "structured_output", False)
    fmt = pairwise.pairwise_response_format() if structured else None

    async def one(item: tuple[str, str, Transcript, Transcript]) -> None:
        key, pair_id, first, second = item
        base = sc.messages(first, second)
        try:
            t = await call_until_parsed(
                lambda req: sc.call(caller, req),
                lambda attempt: ChatRequest.chat(j.model, base, sampling=retry_sampling(j.sampling, attempt),
                                                 response_format=fmt, tag=f"{sc.prompt_.version}#{attempt}"),
                pairwise.parse_verdict, (pairwise.VerdictParseError,), j.max_attempts)
        except OverBudget:
            counts["over_budget"] += 1
            return
        counts["judged" if t.ok else "failed"] += 1
        value = {"winner": t.value[0], "rationale": t.value[1]} if t.ok else None
        writer.add("session_items", ItemRow(key, "compare", pair_id, "ok" if t.ok else "failed",
                                            json.dumps(value) if value else None,
                                            "; ".join(t.errors)[:2000] or None, t.attempts, json.dumps(t.call_keys),
                                            time.time()))

    try:
        await run_pool(iter(todo), one, in_flight(sc.cfg.backends[j.backend]))
    finally:
        writer.commit()
    counts["calls_made"] = sc.budget.used
    return counts


def comparison_results(sc: SessionComparison) -> dict[str, Any]:
    """A's win rate against B (ties half), with a bootstrap interval over clients, the flip rate and failures."""
    stored = sc.verdicts()
    rows = []
    for a, b in sc.pairs:
        va, vb = (stored.get(sc.key(x, y)) for x, y in ((a, b), (b, a)))
        wa = va["value"]["winner"] if va and va["status"] == "ok" else None
        wb = vb["value"]["winner"] if vb and vb["status"] == "ok" else None
        o = combine_orders(wa, wb)  # A is the "policy": shown first in a_first, second in b_first
        rows.append({"profile_id": a.profile_id, "session_a": a.session_id, "session_b": b.session_id,
                     "a_first": wa, "b_first": wb, "score_a": o.score, "flipped": o.flipped, "outcome": o})
    ok = [r for r in rows if r["score_a"] is not None]
    b = sc.cfg.bootstrap
    if ok:
        scores = [r["score_a"] for r in ok]
        lo, hi = bootstrap_by_group(weighted_mean, [r["profile_id"] for r in ok], scores, n_boot=b.n_boot,
                                    seed=b.seed, vectorized=True)
        win = {"rate": sum(scores) / len(scores), "ci": [lo, hi], "n": len(ok)}
    else:
        win = {"rate": None, "ci": [None, None], "n": 0}
    flips = flip_rate([r["outcome"] for r in rows])
    return {"name": sc.cfg.name, "run_a": sc.cfg.run_a, "run_b": sc.cfg.run_b, "match": sc.cfg.match,
            "judge": {"backend": sc.cfg.judge.backend, "model": sc.cfg.judge.model, "prompt": sc.prompt_.version},
            "pairs": len(rows), "failed_pairs": len(rows) - len(ok), "win_rate_a": win,
            "wins_a": sum(r["score_a"] == 1.0 for r in ok), "wins_b": sum(r["score_a"] == 0.0 for r in ok),
            "ties": sum(r["score_a"] == 0.5 for r in ok), "flip_rate": None if math.isnan(flips) else flips,
            "verdicts": [{k: v for k, v in r.items() if k != "outcome"} for r in rows]}


def compare_sessions(cfg: CompareSessionsConfig, base_dir: Path = Path("."), progress: StageProgress | None = None,
                     budget: CallBudget | None = None) -> tuple[dict[str, Any], dict[str, int]]:
    """Judge every pair in both orders, write ``compare.json`` into the folder; (results, counts)."""
    sc = SessionComparison(cfg, base_dir, progress, budget)
    try:
        async def go() -> dict[str, int]:
            try:
                return await run_comparison(sc)
            finally:
                await sc.aclose()
        counts = asyncio.run(go())
        res = comparison_results(sc)
        atomic.write_text(sc.dir / "compare.json", json.dumps(res, indent=2, allow_nan=False) + "\n")
        return res, counts
    finally:
        sc.close()
