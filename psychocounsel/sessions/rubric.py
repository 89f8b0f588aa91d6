"""The session rubric: criteria scored 1-6 on a whole session, as data (``data/sessions/judges/rubric.yaml``).

``load_session_rubric`` reads and checks the file (a mistake is one line naming the file and field);
``SessionRubric.parse`` reads a judge's reply strictly, with the project's one JSON reader
(``rubric/replies.py``): a criterion missing, out of range, not an integer or given twice differently is a
``JudgeParseError`` (a recorded failure after bounded retries), never a default score.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from ..errors import UserError
from ..rubric.replies import ConflictingKeys, json_objects
from ..rubric.score import RATIONALE_ALIASES, JudgeParseError

JUDGES_DATA = ("data", "sessions", "judges")


def builtin_path(name: str) -> Path:
    """A file shipped in ``psychocounsel/data/sessions/judges/``."""
    return Path(str(resources.files("psychocounsel").joinpath(*JUDGES_DATA, name)))


def read_yaml(spec: str, default: str) -> tuple[Any, str, bytes]:
    """(data, source path, raw bytes) of a YAML file, ``default`` naming the built-in one."""
    path = builtin_path(default) if spec == "default" else Path(spec)
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise UserError(f"{path}: cannot read: {e.strerror}") from None
    try:
        data = yaml.safe_load(raw.decode("utf-8"))
    except (UnicodeDecodeError, yaml.YAMLError) as e:
        mark = getattr(e, "problem_mark", None)
        raise UserError(f"{path}{f':{mark.line + 1}' if mark else ''}: not a readable YAML file") from None
    if not isinstance(data, dict):
        raise UserError(f"{path}: must be a YAML mapping")
    return data, str(path), raw


@dataclass(frozen=True)
class Criterion:
    key: str
    name: str
    definition: str
    anchors: dict[int, str]  # every level of the scale


@dataclass(frozen=True)
class RubricJudgment:
    scores: dict[str, int]  # criterion key -> score, in the rubric's order
    rationale: str


@dataclass(frozen=True)
class SessionRubric:
    version: str  # <file stem>@sha256[:8]: part of every rubric judgment's key
    low: int
    high: int
    criteria: tuple[Criterion, ...]

    @property
    def keys(self) -> list[str]:
        return [c.key for c in self.criteria]

    def describe(self) -> str:
        """The criteria as a judge reads them: key, name, definition, every anchor."""
        blocks = []
        for i, c in enumerate(self.criteria, 1):
            anchors = "\n".join(f"   {s} = {c.anchors[s]}" for s in range(self.low, self.high + 1))
            blocks.append(f"{i}. {c.key} ({c.name})\n   Definition: {c.definition}\n{anchors}")
        return "\n\n".join(blocks)

    def one_line_each(self) -> str:
        return "\n".join(f"- {c.name}: {c.definition}" for c in self.criteria)

    def json_template(self) -> str:
        lines = ['  "rationale": "<two or three sentences>"'] + [f'  "{k}": <{self.low}-{self.high}>' for k in self.keys]
        return "{\n" + ",\n".join(lines) + "\n}"

    def response_format(self) -> dict[str, Any]:
        """OpenAI structured output: the reply can only be the object ``parse`` expects."""
        props: dict[str, Any] = {"rationale": {"type": "string"}}
        props.update({k: {"type": "integer", "enum": list(range(self.low, self.high + 1))} for k in self.keys})
        return {"type": "json_schema", "json_schema": {"name": "session_rubric", "strict": True, "schema": {
            "type": "object", "properties": props, "required": list(props), "additionalProperties": False}}}

    def parse(self, text: str) -> RubricJudgment:
        """The scores of a reply; ``JudgeParseError`` unless every criterion has one integer in range. When the
        reply holds several objects the last one naming criteria counts (judges correct themselves last)."""
        if not isinstance(text, str) or not text.strip():
            raise JudgeParseError("empty reply")
        try:
            objects, error = json_objects(text)
        except ConflictingKeys as e:
            raise JudgeParseError(str(e)) from None
        best = None
        for obj in objects:
            if any(k in obj for k in self.keys):
                best = obj
        if best is None:
            raise JudgeParseError(f"invalid JSON: {error}" if error and not objects else "no object with criteria")
        scores = {}
        for k in self.keys:
            if k not in best:
                raise JudgeParseError(f"missing key: {k}")
            scores[k] = self._score(k, best[k])
        rationale = next((str(best[a]).strip() for a in RATIONALE_ALIASES if best.get(a) is not None), "")
        return RubricJudgment(scores, rationale)

    def _score(self, key: str, v: Any) -> int:
        if isinstance(v, str) and v.strip().isdigit():
            v = int(v.strip())
        if isinstance(v, float) and math.isfinite(v) and v.is_integer():
            v = int(v)
        if isinstance(v, bool) or not isinstance(v, int):
            raise JudgeParseError(f"{key}: {json.dumps(v)[:20]} is not an integer score")
        if not self.low <= v <= self.high:
            raise JudgeParseError(f"{key}: {v} is out of range {self.low}-{self.high}")
        return v


def load_session_rubric(spec: str = "default") -> SessionRubric:
    """The built-in session rubric ("default") or a YAML file of the same shape."""
    data, source, raw = read_yaml(spec, "rubric.yaml")
    scale = data.get("scale", [1, 6])
    if (not isinstance(scale, list) or len(scale) != 2 or not all(isinstance(x, int) for x in scale)
            or scale[0] >= scale[1]):
        raise UserError(f"{source}: scale: must be [low, high] integers, low < high")
    low, high = scale
    items = data.get("criteria")
    if not isinstance(items, list) or not items:
        raise UserError(f"{source}: criteria: a non-empty list is required")
    criteria = []
    for i, c in enumerate(items):
        where = f"{source}: criteria[{i}]"
        if not isinstance(c, dict):
            raise UserError(f"{where}: must be a mapping")
        for f in ("key", "name", "definition", "anchors"):
            if f not in c:
                raise UserError(f"{where}: missing field {f!r}")
        key = str(c["key"])
        if not key.isidentifier() or key == "rationale":
            raise UserError(f"{where}.key: {key!r} must be an identifier other than 'rationale'")
        anchors = c["anchors"]
        if not isinstance(anchors, dict) or sorted(anchors) != list(range(low, high + 1)):
            raise UserError(f"{where}.anchors: need one anchor for each level {low}-{high}")
        criteria.append(Criterion(key, str(c["name"]), " ".join(str(c["definition"]).split()),
                                  {int(s): " ".join(str(t).split()) for s, t in anchors.items()}))
    keys = [c.key for c in criteria]
    if len(set(keys)) != len(keys):
        raise UserError(f"{source}: criteria: keys must be unique")
    version = f"{Path(source).stem}@{hashlib.sha256(raw).hexdigest()[:8]}"
    return SessionRubric(version, low, high, tuple(criteria))
