"""The counseling principles the judge scores, loaded from versioned YAML.

The built-in set (``data/principles/v1.yaml``) holds the paper's seven principles. A user file either
REPLACES the set (it lists its own principles) or EXTENDS it (``extends: default``, then new principles,
or existing keys whose given fields override the built-in ones)::

    extends: default
    principles:
      - key: cultural
        name: Cultural Humility
        definition: Respects the client's culture, identity and values ...
        rubric: {1: "...", 3: "...", 5: "..."}

Every rubric anchors at least 1, 3 and 5 (the judge uses 2 and 4 for in-between answers). Keys name the
judge's JSON fields and the exported columns ``chosen_<key>_rating``, so they are short snake_case words.

``PrincipleSet.version`` goes into judge cache keys: "v1" for the built-in set, and for a user file
``<name>@<sha256[:8]>`` of the resolved principles, so a cached verdict is never reused after the
principles change (editing only comments or whitespace keeps the version).
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import asdict, dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from ..errors import UserError

BUILTIN = {"default": "v1.yaml", "v1": "v1.yaml"}
# snake_case, 32 chars: it becomes a JSON key and part of a parquet column name.
KEY_RE = re.compile(r"^[a-z][a-z0-9_]{0,31}$")
# Fields of the judge's JSON reply that a principle key must not shadow.
RESERVED_KEYS = frozenset({"rationale", "overall"})
REQUIRED_ANCHORS = (1, 3, 5)
_FILE_FIELDS = {"version", "name", "extends", "principles"}
_PRINCIPLE_FIELDS = {"key", "name", "definition", "rubric"}


@dataclass
class Principle:
    key: str
    name: str
    definition: str
    rubric: dict[int, str]  # anchor score (1..5) -> what a response at that score looks like


@dataclass
class PrincipleSet:
    version: str
    principles: list[Principle]

    @property
    def keys(self) -> list[str]:
        return [p.key for p in self.principles]

    def __iter__(self):
        return iter(self.principles)

    def __len__(self) -> int:
        return len(self.principles)

    def __getitem__(self, key: str) -> Principle:
        for p in self.principles:
            if p.key == key:
                return p
        raise KeyError(key)


# --- YAML with line numbers -------------------------------------------------------------------------------


class _Map(dict):
    """A dict that remembers the YAML line it started on, so errors can point at it."""

    line: int = 0


class _DuplicateKey(Exception):
    def __init__(self, key: Any, line: int):
        super().__init__(key)
        self.key, self.line = key, line


class _LineLoader(yaml.SafeLoader):
    pass


def _construct_map(loader: _LineLoader, node: yaml.MappingNode) -> _Map:
    seen: set = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=True)
        # PyYAML keeps the last of two equal keys silently; a repeated rubric anchor is a user mistake.
        if key in seen:
            raise _DuplicateKey(key, key_node.start_mark.line + 1)
        seen.add(key)
    out = _Map(loader.construct_mapping(node, deep=True))
    out.line = node.start_mark.line + 1
    return out


_LineLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_map)


def _read_yaml(path: Path, text: str) -> Any:
    try:
        return yaml.load(text, Loader=_LineLoader)  # noqa: S506 - SafeLoader subclass
    except _DuplicateKey as e:
        raise UserError(f"{path}:{e.line}: duplicate key {e.key!r}") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        raise UserError(f"{where}: invalid YAML: {getattr(e, 'problem', None) or e}") from None


# --- loading ----------------------------------------------------------------------------------------------


def load_principles(spec: str = "default") -> PrincipleSet:
    """Load the built-in set ("default") or a user YAML file (replacing or extending the built-in set)."""
    if spec in BUILTIN:
        return _load_builtin(BUILTIN[spec])
    path = Path(spec)
    try:
        raw = path.read_bytes()
    except (FileNotFoundError, IsADirectoryError):
        raise UserError(
            f"{path}: principles file not found (use 'default' or a YAML path)") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise UserError(f"{path}: not UTF-8 text (byte {e.start})") from None
    data = _read_yaml(path, text)
    doc = _check_doc(path, data)
    own = _parse_principles(path, doc, partial_ok=doc.get("extends") is not None)
    if doc.get("extends") is not None:
        base_name = doc["extends"]
        if base_name not in BUILTIN:
            raise UserError(f"{path}:{doc.line}: extends: unknown base {base_name!r} (expected 'default')")
        principles = _merge(path, load_principles(base_name).principles, own)
    else:
        principles = [_complete(path, p, line) for p, line in own]
    name = doc.get("name") or path.stem
    if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9_.-]+", name):
        raise UserError(f"{path}:{doc.line}: name: must be letters, digits, '_', '.' or '-' (got {name!r})")
    return PrincipleSet(version=f"{name}@{_content_hash(principles)}", principles=principles)


def _load_builtin(filename: str) -> PrincipleSet:
    ref = resources.files("psychocounsel") / "data" / "principles" / filename
    path = Path(str(ref))
    doc = _check_doc(path, _read_yaml(path, ref.read_text(encoding="utf-8")))
    principles = [_complete(path, p, line) for p, line in _parse_principles(path, doc, partial_ok=False)]
    version = doc.get("version")
    if not isinstance(version, int):
        raise UserError(f"{path}:{doc.line}: version: built-in principle files need an integer version")
    return PrincipleSet(version=f"v{version}", principles=principles)


def _content_hash(principles: list[Principle]) -> str:
    """sha256 of the resolved principles: the version changes exactly when what the judge reads changes."""
    blob = json.dumps([asdict(p) for p in principles], sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:8]


def _check_doc(path: Path, data: Any) -> _Map:
    if not isinstance(data, dict):
        raise UserError(f"{path}: a principles file must be a YAML mapping with a 'principles' list")
    line = getattr(data, "line", 1)
    unknown = sorted(set(map(str, data)) - _FILE_FIELDS)
    if unknown:
        raise UserError(f"{path}:{line}: {unknown[0]}: unknown field (expected one of "
                        f"{', '.join(sorted(_FILE_FIELDS))})")
    items = data.get("principles")
    if not isinstance(items, list) or (not items and data.get("extends") is None):
        raise UserError(f"{path}:{line}: principles: must be a non-empty list")
    return data


def _parse_principles(path: Path, doc: _Map, partial_ok: bool) -> list[tuple[dict, int]]:
    """Validate each entry; with ``partial_ok`` (extending) name/definition/rubric may be left out."""
    out: list[tuple[dict, int]] = []
    seen: dict[str, int] = {}
    for i, item in enumerate(doc["principles"]):
        where = f"principles[{i}]"
        if not isinstance(item, dict):
            raise UserError(f"{path}:{doc.line}: {where}: must be a mapping with key, name, definition, rubric")
        line = getattr(item, "line", doc.line)
        unknown = sorted(set(map(str, item)) - _PRINCIPLE_FIELDS)
        if unknown:
            raise UserError(f"{path}:{line}: {where}.{unknown[0]}: unknown field (expected one of "
                            f"{', '.join(sorted(_PRINCIPLE_FIELDS))})")
        key = item.get("key")
        if key is None:
            raise UserError(f"{path}:{line}: {where}.key: missing")
        if not isinstance(key, str) or not KEY_RE.match(key):
            raise UserError(f"{path}:{line}: {where}.key: {key!r} is not a valid key "
                            "(lowercase letters, digits and '_', starting with a letter, at most 32 chars)")
        if key in RESERVED_KEYS:
            raise UserError(f"{path}:{line}: {where}.key: {key!r} is reserved for the judge's reply")
        if key in seen:
            raise UserError(f"{path}:{line}: {where}.key: duplicate key {key!r} "
                            f"(first at principles[{seen[key]}])")
        seen[key] = i
        entry: dict[str, Any] = {"key": key}
        for field in ("name", "definition"):
            value = item.get(field)
            if value is None:
                if not partial_ok:
                    raise UserError(f"{path}:{line}: {where}.{field}: missing")
                continue
            if not isinstance(value, str) or not value.strip():
                raise UserError(f"{path}:{line}: {where}.{field}: must be non-empty text")
            entry[field] = " ".join(value.split())
        if "rubric" in item:
            entry["rubric"] = _parse_rubric(path, line, f"{where}.rubric", item["rubric"])
        elif not partial_ok:
            raise UserError(f"{path}:{line}: {where}.rubric: missing (anchors 1, 3 and 5 are required)")
        out.append((entry, line))
    return out


def _parse_rubric(path: Path, line: int, where: str, rubric: Any) -> dict[int, str]:
    if not isinstance(rubric, dict):
        raise UserError(f"{path}:{line}: {where}: must be a mapping of scores 1-5 to descriptions")
    line = getattr(rubric, "line", line)
    out: dict[int, str] = {}
    for anchor, text in rubric.items():
        score = anchor
        if isinstance(anchor, str) and anchor.strip().isdigit():
            score = int(anchor)
        if isinstance(score, bool) or not isinstance(score, int) or not 1 <= score <= 5:
            raise UserError(f"{path}:{line}: {where}.{anchor}: anchors must be scores 1 to 5")
        if score in out:
            raise UserError(f"{path}:{line}: {where}.{anchor}: duplicate anchor {score}")
        if not isinstance(text, str) or not text.strip():
            raise UserError(f"{path}:{line}: {where}.{score}: must be non-empty text")
        out[score] = " ".join(text.split())
    for need in REQUIRED_ANCHORS:
        if need not in out:
            raise UserError(f"{path}:{line}: {where}: missing anchor {need} (anchors 1, 3 and 5 are required)")
    return dict(sorted(out.items()))


def _complete(path: Path, entry: dict, line: int) -> Principle:
    for field in ("name", "definition", "rubric"):
        if field not in entry:
            raise UserError(f"{path}:{line}: principle {entry['key']!r}.{field}: missing")
    return Principle(**entry)


def _merge(path: Path, base: list[Principle], own: list[tuple[dict, int]]) -> list[Principle]:
    """Overriding keys keep their place (and any field not given); new keys follow in file order."""
    merged = {p.key: p for p in base}
    for entry, line in own:
        if entry["key"] in merged:
            merged[entry["key"]] = Principle(**{**asdict(merged[entry["key"]]), **entry})
        else:
            merged[entry["key"]] = _complete(path, entry, line)
    return list(merged.values())
