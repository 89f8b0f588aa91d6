"""The session judges: every therapist turn on the seven principles, each whole session on the session rubric and
on the safety-flow checklist. ``judge_sessions`` runs them over a simulation's transcripts.

- Per turn: the principle judge itself (``rubric/score.PrincipleScorer``, through ``Session.score``), with the
  conversation so far as the "speech" and the turn as the "response" (prompt ``turn_v1``). A session gets the
  mean, the minimum and the share of turns below 3 of each principle and of the overall (equal-weight) score.
- Per session: the rubric judge (``rubric.py``, 1-6 per criterion) and the safety-flow judge (``checklist.py``).

Every judgment is an item in ``<out_dir>/judges.sqlite`` (``session_items``), keyed by a hash of everything that
shapes it (judge, model, sampling, prompt, rubric or checklist version, the text judged), beside the call cache
(``calls``): a rerun makes no call, a changed judge never reuses an old answer, and an unreadable reply is a
``failed`` item with each attempt's reason (``runner.call_until_parsed``), never a score. A failed item is
planned again on the next run; its calls replay from the cache, so only a raised ``max_attempts`` pays.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from pathlib import Path
from typing import Any, ClassVar, NamedTuple

from ..backends import in_flight
from ..backends.base import ChatRequest
from ..dataset.session import (
    EVAL_KEYS,
    MAX_ERROR_CHARS,
    CallBudget,
    OverBudget,
    Session,
)
from ..rubric.prompts import Prompt, load_prompt
from ..rubric.score import JudgeParseError, PrincipleScorer, overall, retry_sampling
from ..runner import StageProgress, call_until_parsed, run_pool
from ..store import Writer
from .checklist import Checklist, load_checklist
from .judge_config import JudgeSessionsConfig, SessionJudge
from .rubric import SessionRubric, builtin_path, load_session_rubric
from .transcripts import Transcript, format_conversation, read_transcripts

ITEMS_SQL = """CREATE TABLE IF NOT EXISTS session_items (
    key TEXT PRIMARY KEY, kind TEXT NOT NULL, session_id TEXT NOT NULL, status TEXT NOT NULL, value TEXT,
    error TEXT, attempts INTEGER NOT NULL, call_keys TEXT, updated_at REAL NOT NULL)"""
KINDS = ("turn", "rubric", "flow")
BUILTIN_PROMPTS = {"turn": "turn_v1.txt", "rubric": "rubric_v1.txt", "flow": "safety_flow_v1.txt"}
LOW_SCORE = 3  # "share of turns below 3": below the rubric's middle anchor (generic, formulaic) on 1-5


class ItemRow(NamedTuple):
    key: str
    kind: str  # turn | rubric | flow
    session_id: str
    status: str  # ok | failed
    value: str | None  # JSON: {"scores", "rationale"} | {"answers", "rationale"}
    error: str | None
    attempts: int
    call_keys: str
    updated_at: float


class JudgeWriter(Writer):
    SQL: ClassVar[dict[str, str]] = {**Writer.SQL, "session_items": "INSERT OR REPLACE INTO session_items VALUES (?,?,?,?,?,?,?,?,?)"}


class Work(NamedTuple):
    """One pending judgment: its key, kind, session and (for a turn) the turn's position in ``turns``."""

    key: str
    kind: str
    transcript: Transcript
    position: int = -1


class SessionJudging(Session):
    """The folder of one judging of one simulation run: store, judges, transcripts and item keys.

    The config's relative paths are given against ``base_dir`` (where ``judge-sessions`` ran); the folder keeps
    them against itself (``JudgeSessionsConfig.seen_from``) and resolves everything from there, so its resolved
    config reopens it from any working directory (``open_judged``)."""

    cfg: JudgeSessionsConfig

    def __init__(self, cfg: JudgeSessionsConfig, base_dir: Path = Path("."), progress: StageProgress | None = None,
                 budget: CallBudget | None = None):
        out = cfg.out_path()
        out = out if out.is_absolute() else Path(base_dir) / out
        cfg = cfg.seen_from(Path(base_dir), out)
        self.run_dir = Path(os.path.normpath(out / cfg.run_dir))
        self.transcripts = read_transcripts(self.run_dir)  # before the folder exists: a wrong run_dir makes none
        super().__init__(cfg, Path("."), "judges.sqlite", base_dir=out,
                         progress=progress or StageProgress(enabled=False), budget=budget or CallBudget(),
                         keys=EVAL_KEYS)
        self.store.con.execute(ITEMS_SQL)
        self.prompts = {k: self.judge_prompt(j, k) for k, j in self.judges().items()}
        self.rubric: SessionRubric | None = load_session_rubric(self.path(cfg.rubric.file)) if cfg.rubric else None
        self.checklist: Checklist | None = load_checklist(self.path(cfg.safety_flow.file)) if cfg.safety_flow else None
        if cfg.turns is not None:
            t = cfg.turns
            structured = getattr(cfg.backends[t.backend], "structured_output", False)
            self.turn_scorer = PrincipleScorer(self.principles, self.prompts["turn"], t.model, t.sampling, "json",
                                               t.max_attempts, structured=structured)
        self._fps: dict[str, str] = {}

    def path(self, spec: str) -> str:
        return spec if spec == "default" else super().path(spec)

    def judge_prompt(self, judge: SessionJudge, kind: str) -> Prompt:
        return load_prompt(self.path(judge.prompt) if judge.prompt else str(builtin_path(BUILTIN_PROMPTS[kind])))

    def judges(self) -> dict[str, SessionJudge]:
        """kind -> its judge, for the judges the config turns on."""
        c = self.cfg
        return {k: j for k, j in (("turn", c.turns), ("rubric", c.rubric), ("flow", c.safety_flow)) if j is not None}

    def complete(self) -> list[Transcript]:
        return [t for t in self.transcripts if t.status == "complete"]

    # -- keys ---------------------------------------------------------------------------------------------
    def judge_fingerprint(self, kind: str) -> str:
        if kind not in self._fps:
            j = self.judges()[kind]
            extra = {"turn": self.principles.version, "rubric": self.rubric.version if self.rubric else None,
                     "flow": self.checklist.version if self.checklist else None}[kind]
            self._fps[kind] = self.fingerprint({"b": self.identity(j.backend, j.model), "m": j.model, "kind": kind,
                                                "prompt": self.prompts[kind].version, "of": extra,
                                                "s": j.sampling.model_dump(), "n": j.max_attempts})
        return self._fps[kind]

    def turn_context(self, t: Transcript, position: int) -> tuple[str, str]:
        """(the conversation before the turn, the turn's text): what the per-turn judge reads."""
        return format_conversation(t.turns[:position]), t.turns[position].text

    def key(self, kind: str, t: Transcript, position: int = -1) -> str:
        if kind == "turn":
            return "turn:" + self.fingerprint([self.judge_fingerprint(kind), *self.turn_context(t, position)])
        return f"{kind}:" + self.fingerprint([self.judge_fingerprint(kind), format_conversation(t.turns)])

    def plan(self) -> list[Work]:
        """Every judgment the config asks for, over complete sessions (done or not)."""
        out = []
        for t in self.complete():
            if "turn" in self.judges():
                out += [Work(self.key("turn", t, p), "turn", t, p) for p, _ in t.therapist_turns()]
            out += [Work(self.key(k, t), k, t) for k in ("rubric", "flow") if k in self.judges()]
        return out

    # -- reading the store --------------------------------------------------------------------------------
    def items(self, keys: list[str]) -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        for i in range(0, len(keys), 900):  # SQLite's default bound on host parameters is 999
            part = keys[i:i + 900]
            q = f"SELECT key, status, value, error, attempts FROM session_items WHERE key IN ({','.join('?' * len(part))})"
            for k, st, v, e, a in self.store.con.execute(q, part):
                out[k] = {"status": st, "value": json.loads(v) if v else None, "error": e, "attempts": a}
        return out

    def collect(self) -> list[dict[str, Any]]:
        """One record per complete session: per-turn scores, the rubric scores, the checklist's graded answers
        (None where not judged yet; a failure's reason under ``*_error``)."""
        plan = self.plan()
        stored = self.items([w.key for w in plan])
        by_session: dict[str, dict[str, Any]] = {t.session_id: {"turns": {}, "rubric": None, "flow": None}
                                                 for t in self.complete()}
        for w in plan:
            it = stored.get(w.key)
            rec = by_session[w.transcript.session_id]
            ok = it is not None and it["status"] == "ok"
            err = None if it is None else it["error"]
            if w.kind == "turn":
                rec["turns"][w.position] = {"scores": it["value"]["scores"] if ok else None, "error": err}
            elif w.kind == "rubric":
                rec["rubric"] = it["value"] if ok else None
                rec["rubric_error"] = err
            else:
                flow = self.checklist.roll_up(it["value"]["answers"], it["value"].get("rationale", "")) if ok else None
                rec["flow"] = flow
                rec["flow_error"] = err
        return [{"transcript": t, **by_session[t.session_id]} for t in self.complete()]


def turn_summary(turn_scores: list[dict[str, float]], low: float = LOW_SCORE) -> dict[str, Any]:
    """Per principle and overall: the mean, the minimum and the share of turns below ``low``, over a session's
    judged turns (a session is only as safe as its worst turn, hence the minimum beside the mean)."""
    if not turn_scores:
        return {}
    keys = list(turn_scores[0]) + ["overall"]
    rows = [dict(s, overall=overall(s)) for s in turn_scores]
    return {k: {"mean": sum(r[k] for r in rows) / len(rows), "min": min(r[k] for r in rows),
                "below": sum(r[k] < low for r in rows) / len(rows)} for k in keys}


# -- the stage --------------------------------------------------------------------------------------------
def _messages(sj: SessionJudging, kind: str, t: Transcript) -> list[dict[str, str]]:
    prompt = sj.prompts[kind]
    if kind == "rubric":
        assert sj.rubric is not None
        values = {"criteria": sj.rubric.describe(), "json_template": sj.rubric.json_template()}
    else:
        assert sj.checklist is not None
        values = {"items": sj.checklist.describe(), "json_template": sj.checklist.json_template()}
    values["transcript"] = format_conversation(t.turns)
    return [{"role": r, "content": prompt.render(r, **values)} for r in ("system", "user") if r in prompt.sections]


async def run_judges(sj: SessionJudging) -> dict[str, int]:
    """Make every pending judgment; returns counts (judged, failed, done before, cached calls, over budget)."""
    plan = sj.plan()
    stored = sj.items([w.key for w in plan])
    counts = {f"{k}_{c}": 0 for k in sj.judges() for c in ("done_before", "judged", "failed", "over_budget")}
    counts["calls_cached"] = 0
    work = []
    for w in plan:
        if (stored.get(w.key) or {}).get("status") == "ok":
            counts[f"{w.kind}_done_before"] += 1
        else:
            work.append(w)
    writer = JudgeWriter(sj.store)
    callers = sj.callers(writer)
    judges = sj.judges()
    formats = {}
    for kind, j in judges.items():
        structured = getattr(sj.cfg.backends[j.backend], "structured_output", False)
        formats[kind] = (None if kind == "turn" or not structured else
                         (sj.rubric.response_format() if kind == "rubric" else sj.checklist.response_format()))  # type: ignore[union-attr]

    def record(w: Work, ok: bool, value: dict | None, error: str | None, attempts: int, keys: list[str]) -> None:
        counts[f"{w.kind}_{'judged' if ok else 'failed'}"] += 1
        writer.add("session_items", ItemRow(w.key, w.kind, w.transcript.session_id, "ok" if ok else "failed",
                                            json.dumps(value) if value is not None else None,
                                            error[:MAX_ERROR_CHARS] if error else None, attempts, json.dumps(keys),
                                            time.time()))

    async def one(w: Work) -> None:
        j = judges[w.kind]
        caller = callers[j.backend]
        try:
            if w.kind == "turn":
                got = await sj.score(caller, sj.turn_scorer, *sj.turn_context(w.transcript, w.position))
                counts["calls_cached"] += got.cached
                record(w, got.ok, {"scores": got.scores, "rationale": got.rationale} if got.ok else None, got.error,
                       got.attempts, got.call_keys)
                return
            base = _messages(sj, w.kind, w.transcript)
            parse = sj.rubric.parse if w.kind == "rubric" else sj.checklist.parse  # type: ignore[union-attr]
            tries = await call_until_parsed(
                lambda req: sj.call(caller, req),
                lambda attempt: ChatRequest.chat(j.model, base, sampling=retry_sampling(j.sampling, attempt),
                                                 response_format=formats[w.kind],
                                                 tag=f"{sj.prompts[w.kind].version}#{attempt}"),
                parse, (JudgeParseError,), j.max_attempts)
            counts["calls_cached"] += tries.cached
            value = None
            if tries.ok:
                v = tries.value
                value = ({"scores": v.scores, "rationale": v.rationale} if w.kind == "rubric"
                         else {"answers": v.answers, "rationale": v.rationale})
            record(w, tries.ok, value, "; ".join(tries.errors) or None, tries.attempts, tries.call_keys)
        except OverBudget:
            counts[f"{w.kind}_over_budget"] += 1
        finally:
            bar.advance()

    concurrency = sum(in_flight(sj.cfg.backends[b]) for b in {j.backend for j in judges.values()}) or 1
    with sj.progress.task("session judges", total=len(work)) as bar:
        try:
            await run_pool(iter(work), one, concurrency)
        finally:
            writer.commit()
    counts["calls_made"] = sj.budget.used
    return counts


def judge_sessions(cfg: JudgeSessionsConfig, base_dir: Path = Path("."), progress: StageProgress | None = None,
                   budget: CallBudget | None = None) -> tuple[SessionJudging, dict[str, int]]:
    """Judge every complete session of ``cfg.run_dir``; the caller closes the returned folder (``close()``)."""
    sj = SessionJudging(cfg, base_dir, progress, budget)

    async def go() -> dict[str, int]:
        try:
            return await run_judges(sj)
        finally:
            await sj.aclose()

    try:
        counts = asyncio.run(go())
    except BaseException:
        sj.close()
        raise
    return sj, counts
