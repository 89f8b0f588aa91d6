"""Run simulated sessions: every profile x policy x budget, async and batched across sessions, resumable.

``<run_dir>/sessions.sqlite`` is a run store (``store.Store``): the call cache of every client and therapist
message, plus ``sim_turns`` (each message as it is had) and ``sim_sessions`` (each session's outcome). A
session is driven from its first message on every run; the messages a run already had replay from the call
cache, so a killed run resumes with no repeated call for a stored message, and a changed prompt, model or
profile asks anew (its calls have other keys). ``<run_dir>/transcripts.jsonl`` is rewritten whole (atomically)
every few seconds as sessions finish, and at the end; it is always rebuilt from the store, so a kill loses
nothing but the last fraction of a second of answers (store.Writer).

A session ends ``complete``; ``failed`` with its reason (a call that failed for good, replies that stayed
invalid, a reply cut by max_tokens under ``truncated: fail``), asked again on the next run; or ``incomplete``
(stopped at the --max-calls budget, or killed), continued on the next run.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar, NamedTuple

from .. import __version__
from ..backends import in_flight
from ..backends.base import ChatRequest
from ..dataset.atomic import remove_stale_temps, write_text
from ..dataset.session import (
    MAX_ERROR_CHARS,
    RUN_KEYS,
    CallBudget,
    OverBudget,
    Session,
    retry_request,
)
from ..dataset.validate import INVALID, TRUNCATED, check_reply, echo, finish_reason
from ..errors import BackendError, UserError
from ..runner import StageProgress, run_pool
from ..store import Writer
from .config import PolicyConfig, SimulateConfig
from .profiles import Profile, dump_jsonl, load_profiles
from .simulator import (
    CLIENT_PROMPT_VERSION,
    OPENING_CUE,
    THERAPIST_PROMPT_VERSION,
    SessionPlan,
    Speaker,
    Turn,
    TurnFailed,
    run_session,
    without_direction,
)
from .transcripts import PROFILES_FILE

TRANSCRIPTS = "transcripts.jsonl"
STORE = "sessions.sqlite"
# How often transcripts.jsonl is rewritten while sessions finish: the whole file is written each time, so
# at least every 5 s, and never more than 1/20 of the run's time (a benchmark's file is ~20 MB, ~50 ms).
REWRITE_EVERY_S = 5.0
REWRITE_SHARE = 20
SIM_SQL = [
    """CREATE TABLE IF NOT EXISTS sim_sessions (
        session_id TEXT PRIMARY KEY, profile_id TEXT NOT NULL, policy TEXT NOT NULL, budget INTEGER NOT NULL,
        seed INTEGER NOT NULL, fingerprint TEXT NOT NULL, status TEXT NOT NULL, failure TEXT,
        n_turns INTEGER NOT NULL, updated_at REAL NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS sim_turns (
        session_id TEXT NOT NULL, idx INTEGER NOT NULL, role TEXT NOT NULL, text TEXT NOT NULL, injection TEXT,
        finish_reason TEXT NOT NULL, flags TEXT NOT NULL, call_key TEXT, fingerprint TEXT NOT NULL,
        updated_at REAL NOT NULL,
        PRIMARY KEY (session_id, idx))""",
]
INCOMPLETE_BUDGET = "stopped at the call budget (--max-calls); rerun to continue"


class SessionRow(NamedTuple):
    session_id: str
    profile_id: str
    policy: str
    budget: int
    seed: int
    fingerprint: str
    status: str  # complete | failed | incomplete
    failure: str | None
    n_turns: int
    updated_at: float


class TurnRow(NamedTuple):
    session_id: str
    idx: int
    role: str
    text: str
    injection: str | None
    finish_reason: str
    flags: str  # JSON list
    call_key: str | None
    fingerprint: str
    updated_at: float


class SimWriter(Writer):
    SQL: ClassVar[dict[str, str]] = {
        **Writer.SQL,
        "sim_turns": "INSERT OR REPLACE INTO sim_turns VALUES (?,?,?,?,?,?,?,?,?,?)",
        "sim_sessions": "INSERT OR REPLACE INTO sim_sessions VALUES (?,?,?,?,?,?,?,?,?,?)",
    }


@dataclass
class Planned:
    """One session of the plan: its id, the fingerprint of everything it depends on, and what it runs."""

    session_id: str
    fingerprint: str
    plan: SessionPlan
    policy: PolicyConfig


class Simulation(Session):
    """A simulate run folder: the store, the profiles and the plan (profile x policy x budget)."""

    cfg: SimulateConfig

    def __init__(self, cfg: SimulateConfig, base_dir: Path = Path("."), progress: StageProgress | None = None,
                 budget: CallBudget | None = None):
        self.profiles = select_profiles(cfg, Path(base_dir))  # before the folder exists: a typo makes none
        super().__init__(cfg, Path(cfg.run_dir), STORE, base_dir=base_dir,
                         progress=progress or StageProgress(enabled=False), budget=budget or CallBudget(),
                         keys=RUN_KEYS)
        for sql in SIM_SQL:
            self.store.con.execute(sql)
        self.config_sha256 = hashlib.sha256(cfg.model_dump_json().encode()).hexdigest()

    def plan(self) -> list[Planned]:
        cfg = self.cfg
        sim = cfg.simulator
        out = []
        for p in self.profiles:
            events = p.events(cfg.injections)
            for pol in cfg.policies:
                for b in cfg.budgets:
                    plan = SessionPlan(p, Speaker(pol.model, pol.sampling, pol.system_prompt),
                                       Speaker(sim.model, sim.sampling), b, cfg.seed, events)
                    fp = self.fingerprint({
                        "profile": p.model_dump(mode="json"), "events": [e.model_dump() for e in events.values()],
                        "policy": [self.identity(pol.backend, pol.model), pol.model_dump(exclude={"name"})],
                        "simulator": [self.identity(sim.backend, sim.model), sim.model_dump()],
                        "prompts": [CLIENT_PROMPT_VERSION, THERAPIST_PROMPT_VERSION], "truncated": cfg.truncated,
                        "echo": cfg.echo, "attempts": cfg.max_attempts, "budget": b, "seed": cfg.seed})
                    out.append(Planned(session_id(p.id, pol.name, b, cfg.seed), fp, plan, pol))
        return out

    # -- reading the store --------------------------------------------------------------------------------
    def stored_sessions(self) -> dict[str, SessionRow]:
        return {r[0]: SessionRow(*r) for r in self.store.con.execute("SELECT * FROM sim_sessions")}

    def stored_turns(self, sid: str, fingerprint: str) -> list[Turn]:
        rows = self.store.con.execute(
            "SELECT idx, role, text, injection, finish_reason, flags FROM sim_turns WHERE session_id=? AND "
            "fingerprint=? ORDER BY idx", (sid, fingerprint))
        return [Turn(*r[:5], tuple(json.loads(r[5]))) for r in rows]

    def forget(self, sid: str) -> None:
        """Drop a session's rows written under another plan (its profile, policy or models changed)."""
        self.store.con.execute("DELETE FROM sim_turns WHERE session_id=?", (sid,))
        self.store.con.execute("DELETE FROM sim_sessions WHERE session_id=?", (sid,))

    def transcript(self, s: Planned, status: str, failure: str | None, turns: list[Turn], created: float) -> dict:
        """One line of transcripts.jsonl (the format the session judges read)."""
        return {"session_id": s.session_id, "profile_id": s.plan.profile.id, "policy": s.policy.name,
                "policy_model": s.policy.model, "simulator_model": self.cfg.simulator.model,
                "budget": s.plan.budget, "seed": s.plan.seed, "status": status, "failure": failure,
                "turns": [t.as_json() for t in turns],
                "provenance": {"toolkit_version": __version__, "config_sha256": self.config_sha256,
                               "created": datetime.fromtimestamp(created, UTC).isoformat(timespec="seconds")}}

    def stored_transcript(self, s: Planned, row: SessionRow | None) -> dict | None:
        """What the store holds of a planned session (None: it never started under this plan)."""
        turns = self.stored_turns(s.session_id, s.fingerprint)
        if row is not None and row.fingerprint == s.fingerprint:
            return self.transcript(s, row.status, row.failure, turns[: row.n_turns], row.updated_at)
        if not turns:
            return None
        return self.transcript(s, "incomplete", "stopped before the session ended (killed?); rerun to continue",
                               turns, time.time())

    def write_transcripts(self, plan: list[Planned], transcripts: dict[str, dict]) -> Path:
        path = self.dir / TRANSCRIPTS
        lines = [json.dumps(transcripts[s.session_id], ensure_ascii=False) + "\n" for s in plan
                 if s.session_id in transcripts]
        write_text(path, "".join(lines))
        return path


def session_id(profile_id: str, policy: str, budget: int, seed: int) -> str:
    """A session's id: a hash of what names it (profile, policy, budget, seed), stable across runs."""
    return RUN_KEYS({"profile": profile_id, "policy": policy, "budget": budget, "seed": seed})


def select_profiles(cfg: SimulateConfig, base_dir: Path) -> list[Profile]:
    """The config's profiles: its file, then ``profile_ids`` (in that order), then ``limit``."""
    profiles = load_profiles(cfg.profiles, base_dir)
    if cfg.profile_ids is not None:
        by_id = {p.id: p for p in profiles}
        missing = [i for i in cfg.profile_ids if i not in by_id]
        if missing:
            raise UserError(f"profile_ids: {missing[0]!r} is not in {cfg.profiles}")
        profiles = [by_id[i] for i in cfg.profile_ids]
    return profiles[: cfg.limit] if cfg.limit is not None else profiles


async def simulate(sim: Simulation) -> dict[str, Any]:
    """Run every planned session not complete under its current plan; returns counts and the transcripts path."""
    cfg = sim.cfg
    plan = sim.plan()
    remove_stale_temps(sim.dir, [TRANSCRIPTS, PROFILES_FILE])
    # the run folder keeps the profiles it simulates, so its judges read the same ones from anywhere
    write_text(sim.dir / PROFILES_FILE, dump_jsonl(sim.profiles))
    stored = sim.stored_sessions()
    transcripts: dict[str, dict] = {}
    work: list[Planned] = []
    counts = {"sessions": len(plan), "done_before": 0, "complete": 0, "failed": 0, "incomplete": 0}
    for s in plan:
        row = stored.get(s.session_id)
        if row is not None and row.fingerprint != s.fingerprint:
            sim.forget(s.session_id)
            row = None
        t = sim.stored_transcript(s, row)
        if t is not None:
            transcripts[s.session_id] = t
        if row is not None and row.status == "complete":
            counts["done_before"] += 1
        else:
            work.append(s)
    writer = SimWriter(sim.store)
    callers = sim.callers(writer)
    backends = {cfg.simulator.backend, *(p.backend for p in cfg.policies)}
    concurrency = cfg.concurrency or max(1, sum(in_flight(cfg.backends[b]) for b in backends))
    last_write = [time.monotonic(), 0.0]  # when, and how long the last rewrite took

    def maybe_rewrite() -> None:
        now = time.monotonic()
        if now - last_write[0] >= max(REWRITE_EVERY_S, REWRITE_SHARE * last_write[1]):
            sim.write_transcripts(plan, transcripts)
            last_write[:] = [time.monotonic(), time.monotonic() - now]

    async def one(s: Planned) -> None:
        backend = {"client": cfg.simulator.backend, "therapist": s.policy.backend}
        keys: list[str | None] = [None]
        turns: list[Turn] = []

        async def call(role: str, req: ChatRequest) -> tuple[str, str, tuple[str, ...]]:
            text, finish, flags, keys[0] = await call_turn(sim, callers[backend[role]], role, req)
            return text, finish, flags

        def on_turn(t: Turn) -> None:
            turns.append(t)
            writer.add("sim_turns", TurnRow(s.session_id, t.index, t.role, t.text, t.injection, t.finish_reason,
                                            json.dumps(list(t.flags)),
                                            keys[0] if t.finish_reason != "scripted" else None, s.fingerprint,
                                            time.time()))
            keys[0] = None
            bar.advance()

        status, failure = "complete", None
        try:
            await run_session(s.plan, call, sim.fingerprint, on_turn)
        except TurnFailed as e:
            status, failure = "failed", str(e)[:MAX_ERROR_CHARS]
        except OverBudget:
            status, failure = "incomplete", INCOMPLETE_BUDGET
        counts[status] += 1
        now = time.time()
        writer.add("sim_sessions", SessionRow(s.session_id, s.plan.profile.id, s.policy.name, s.plan.budget,
                                              s.plan.seed, s.fingerprint, status, failure, len(turns), now))
        transcripts[s.session_id] = sim.transcript(s, status, failure, turns, now)
        maybe_rewrite()

    with sim.progress.task("simulate (messages)", total=sum(2 * s.plan.budget for s in work)) as bar:
        try:
            await run_pool(iter(work), one, concurrency)
        finally:
            writer.commit()
            path = sim.write_transcripts(plan, transcripts)
    counts["calls"] = sim.budget.used
    counts["transcripts"] = str(path)
    return counts


async def call_turn(sim: Session, caller: Any, role: str, req: ChatRequest) -> tuple[str, str, tuple[str, ...], str]:
    """One message through the call cache: (text, finish_reason, flags, call key), checked as every generated
    reply is (``dataset/validate.py``: garbled, empty, an echo of the last message; cut, by the config's rule;
    an echo kept and flagged under ``echo: flag``).

    An invalid reply is asked again with a new seed, ``max_attempts`` calls in all; then ``TurnFailed``, as
    for a call that failed after the backend's retries. The client is not checked for echoing its system
    prompt: words of its own profile are in character (its prompt asks it not to recite them)."""
    rules = sim.cfg
    other = without_direction(next((c for r, c in reversed(req.messages) if r == "user"), OPENING_CUE))
    system = req.messages[0][1] if role == "therapist" else None
    problem = "no attempt"
    for attempt in range(rules.max_attempts):
        r = req if attempt == 0 else retry_request(req, attempt)
        try:
            c, key, _ = await sim.call(caller, r)
        except BackendError as e:
            raise TurnFailed(f"call: {e}") from None
        check = check_reply(c.text, speech=other, system=system, finish=finish_reason(c),
                            completion_tokens=c.completion_tokens, max_tokens=r.sampling.max_tokens, rules=rules)
        if check.problem is None:
            return c.text.strip(), check.finish_reason or "stop", (), key
        # an echo is the first problem check_reply finds after broken text; sessions check no language, so
        # only the cut is left to judge when the echo is kept
        if rules.echo == "flag" and check.problem == f"{INVALID}{echo(c.text.strip(), other, system)}":
            if not (check.truncated and rules.truncated == "fail"):
                return c.text.strip(), check.finish_reason or "stop", ("echo",), key
            problem = f"{TRUNCATED}cut at max_tokens={r.sampling.max_tokens} (an echo, kept by `echo: flag`)"
            break
        problem = check.problem
        if not check.invalid:  # cut at max_tokens under `truncated: fail`: the same cap cuts the next one
            break
    raise TurnFailed(problem)
