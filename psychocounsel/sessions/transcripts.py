"""Reading a simulation's ``transcripts.jsonl`` and showing a session to a judge.

One JSON object per session (docs/SESSIONS.md, "Transcripts"): session_id, profile_id, policy, budget, seed,
status (complete | failed | incomplete), failure, turns [{index, role, text, injection, finish_reason}],
provenance. The client speaks first. Judges read complete sessions only; the report counts the others apart.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import InputError, UserError

TRANSCRIPTS_FILE = "transcripts.jsonl"
PROFILES_FILE = "profiles.jsonl"  # the profiles a run simulated, as simulate wrote them (its judges read them)
ROLES = ("client", "therapist")
STATUSES = ("complete", "failed", "incomplete")


@dataclass(frozen=True)
class Turn:
    index: int
    role: str  # client | therapist
    text: str
    injection: str | None = None  # escalation | method_question | no_hotlines | false_alarm (client turns)
    finish_reason: str | None = None


@dataclass(frozen=True)
class Transcript:
    session_id: str
    profile_id: str
    policy: str
    budget: int
    seed: int
    status: str
    turns: tuple[Turn, ...]
    failure: str | None = None
    policy_model: str = ""
    simulator_model: str = ""
    provenance: dict[str, Any] = field(default_factory=dict, compare=False)

    def therapist_turns(self) -> list[tuple[int, Turn]]:
        """(position in ``turns``, turn) of each therapist turn, in order."""
        return [(i, t) for i, t in enumerate(self.turns) if t.role == "therapist"]


def _need(obj: dict, key: str, kind: type | tuple[type, ...], where: str) -> Any:
    if key not in obj:
        raise UserError(f"{where}: missing field {key!r}")
    v = obj[key]
    if not isinstance(v, kind) or isinstance(v, bool) and kind is int:
        raise UserError(f"{where}: field {key!r} must be {getattr(kind, '__name__', kind)}, got {type(v).__name__}")
    return v


def parse_transcript(obj: Any, where: str) -> Transcript:
    """One transcript from its JSON object; ``where`` ("file:line") names it in a one-line error."""
    if not isinstance(obj, dict):
        raise UserError(f"{where}: a transcript must be a JSON object")
    status = _need(obj, "status", str, where)
    if status not in STATUSES:
        raise UserError(f"{where}: field 'status': {status!r} is not one of {', '.join(STATUSES)}")
    turns = []
    for j, t in enumerate(_need(obj, "turns", list, where)):
        tw = f"{where}: turns[{j}]"
        if not isinstance(t, dict):
            raise UserError(f"{tw}: a turn must be a JSON object")
        role = _need(t, "role", str, tw)
        if role not in ROLES:
            raise UserError(f"{tw}: field 'role': {role!r} is not client or therapist")
        turns.append(Turn(int(t.get("index", j)), role, _need(t, "text", str, tw), t.get("injection"),
                          t.get("finish_reason")))
    return Transcript(session_id=str(_need(obj, "session_id", str, where)),
                      profile_id=str(_need(obj, "profile_id", str, where)), policy=_need(obj, "policy", str, where),
                      budget=_need(obj, "budget", int, where), seed=int(obj.get("seed") or 0), status=status,
                      turns=tuple(turns), failure=obj.get("failure"), policy_model=str(obj.get("policy_model") or ""),
                      simulator_model=str(obj.get("simulator_model") or ""),
                      provenance=obj.get("provenance") or {})


def read_transcripts(run_dir: str | Path) -> list[Transcript]:
    """Every transcript of a simulation run folder, in file order; a bad line is a ``UserError`` naming its file and line."""
    path = Path(run_dir) / TRANSCRIPTS_FILE
    if not path.is_file():
        raise UserError(f"{path}: no transcripts here (run `psychocounsel simulate` first, or name the run folder)")
    out = []
    seen: set[str] = set()
    with path.open(encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise InputError(path, f"invalid JSON at column {e.colno}: {e.msg}", line=n) from None
            t = parse_transcript(obj, f"{path}:{n}")
            if t.session_id in seen:  # a resumed simulation appends; the last record of a session is its state
                out = [x for x in out if x.session_id != t.session_id]
            seen.add(t.session_id)
            out.append(t)
    return out


def format_conversation(turns: tuple[Turn, ...] | list[Turn]) -> str:
    """The turns as a judge reads them: one tagged block per turn. Tags rather than "Client:" prefixes, so a
    turn that itself contains "Therapist:" cannot pass for a new speaker."""
    return "\n\n".join(f"<{t.role}>\n{t.text.strip()}\n</{t.role}>" for t in turns)
