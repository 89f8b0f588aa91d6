"""Versioned prompt files: built-in ones under ``data/prompts/``, or any text file the user points to.

A prompt is data, not code (as in alpaca_eval's judge folders), and its version goes into every cache key:
``version = <name>@<sha256[:8] of the file>``, so editing a prompt never reuses a stale reply.

File format:
- A plain file is one text (the therapist system prompt is one).
- A file with section markers, lines of the form ``<<<system>>>``, ``<<<user>>>``, ``<<<suffix>>>``, holds
  several texts (the judge's system and user messages, G-Eval's per-principle suffix). Anything before the
  first marker is a note for human readers and is never sent to a model.
- ``{name}`` (a Python identifier in braces) is a placeholder. Every other brace is literal text, so JSON
  examples need no escaping; values are substituted in one pass, so braces inside a client's speech are
  never read as placeholders.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from functools import cached_property
from importlib import resources
from pathlib import Path

from ..errors import UserError

PLACEHOLDER_RE = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")
SECTION_RE = re.compile(r"^<<<([a-z_]+)>>>[ \t]*$", re.MULTILINE)


@dataclass(frozen=True)
class Prompt:
    name: str  # "judge_v1" for a built-in, the file stem for a user file
    version: str  # name@sha256[:8] of the file's bytes
    text: str  # the file's text, trailing whitespace removed
    source: str = field(default="", compare=False)  # file path, for error messages

    @cached_property
    def sections(self) -> dict[str, str]:
        """Section name -> text; empty for a plain file (then ``text`` is the whole prompt)."""
        return parse_sections(self.text, self.source or self.name)

    @property
    def placeholders(self) -> set[str]:
        return set(PLACEHOLDER_RE.findall(self.text))

    def section(self, name: str) -> str:
        sections = self.sections
        if name not in sections:
            have = ", ".join(f"<<<{s}>>>" for s in sections) or "none"
            raise UserError(f"{self.source or self.name}: prompt has no <<<{name}>>> section (has: {have})")
        return sections[name]

    def render(self, section: str | None = None, **values: object) -> str:
        """Fill the placeholders of the whole text (``section=None``) or of one section."""
        template = self.text if section is None else self.section(section)
        return render(template, values, source=self.source or self.name)

    def compile(self, section: str | None, open_names: tuple[str, ...], **fixed: object) -> "Template":
        """The section with ``fixed`` values filled in now and ``open_names`` left for ``Template.fill``.

        For text that is the same in every request (a judge's rubric): rendering it once per judge instead
        of once per call. The result fills exactly as ``render`` with all values would, in one pass: a fixed
        value that happens to contain "{speech}" stays literal text.
        """
        template = self.text if section is None else self.section(section)
        source = self.source or self.name
        parts: list[str] = []
        names: list[str] = []
        literal: list[str] = []
        end = 0
        for m in PLACEHOLDER_RE.finditer(template):
            literal.append(template[end:m.start()])
            end = m.end()
            name = m.group(1)
            if name in open_names:
                parts.append("".join(literal))
                names.append(name)
                literal = []
            elif name in fixed:
                literal.append(str(fixed[name]))
            else:
                have = ", ".join(sorted({*fixed, *open_names})) or "none"
                raise UserError(f"{source}: placeholder {{{name}}} has no value (available: {have})")
        literal.append(template[end:])
        parts.append("".join(literal))
        return Template(tuple(parts), tuple(names))

    def require(self, section: str | None, *names: str) -> None:
        """Fail early when a (user) template leaves out a value the caller must show the model."""
        template = self.text if section is None else self.section(section)
        missing = [n for n in names if n not in PLACEHOLDER_RE.findall(template)]
        if missing:
            where = "" if section is None else f" section <<<{section}>>>"
            raise UserError(f"{self.source or self.name}:{where} must contain "
                            + ", ".join("{" + n + "}" for n in missing))


@dataclass(frozen=True)
class Template:
    """A prompt section compiled by ``Prompt.compile``: literal parts around the placeholders still open."""

    parts: tuple[str, ...]  # len(names) + 1 pieces of literal text
    names: tuple[str, ...]  # the open placeholder between parts[i] and parts[i + 1]

    def fill(self, **values: str) -> str:
        out = [self.parts[0]]
        for name, part in zip(self.names, self.parts[1:], strict=True):
            out.append(values[name])
            out.append(part)
        return "".join(out)

    @property
    def fixed_chars(self) -> int:
        """Characters of the text apart from the open values (for cost estimates)."""
        return sum(len(p) for p in self.parts)


def render(template: str, values: dict[str, object], *, source: str = "prompt") -> str:
    """Replace each ``{name}`` by ``str(values[name])``; a placeholder without a value is an error."""
    missing = sorted({n for n in PLACEHOLDER_RE.findall(template) if n not in values})
    if missing:
        have = ", ".join(sorted(values)) or "none"
        raise UserError(f"{source}: placeholder {{{missing[0]}}} has no value (available: {have})")
    return PLACEHOLDER_RE.sub(lambda m: str(values[m.group(1)]), template)


def parse_sections(text: str, source: str = "prompt") -> dict[str, str]:
    marks = list(SECTION_RE.finditer(text))
    out: dict[str, str] = {}
    for i, m in enumerate(marks):
        name = m.group(1)
        if name in out:
            line = text.count("\n", 0, m.start()) + 1
            raise UserError(f"{source}:{line}: section <<<{name}>>> appears twice")
        end = marks[i + 1].start() if i + 1 < len(marks) else len(text)
        out[name] = text[m.end():end].strip()
    return out


def builtin_names() -> list[str]:
    folder = resources.files("psychocounsel") / "data" / "prompts"
    return sorted(p.name[:-4] for p in folder.iterdir() if p.name.endswith(".txt"))


def load_prompt(spec: str) -> Prompt:
    """A built-in prompt by name ("judge_v1") or a text file by path."""
    folder = resources.files("psychocounsel") / "data" / "prompts"
    builtin = folder / f"{spec}.txt"
    if re.fullmatch(r"[A-Za-z0-9_]+", spec) and builtin.is_file():
        raw, name, source = builtin.read_bytes(), spec, str(builtin)
    else:
        path = Path(spec)
        try:
            raw = path.read_bytes()
        except (FileNotFoundError, IsADirectoryError):
            raise UserError(f"{spec}: no such prompt file, and not a built-in prompt "
                            f"({', '.join(builtin_names())})") from None
        name, source = path.stem, str(path)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise UserError(f"{source}: not UTF-8 text (byte {e.start})") from None
    text = text.replace("\r\n", "\n").rstrip()
    if not text:
        raise UserError(f"{source}: prompt file is empty")
    version = f"{name}@{hashlib.sha256(raw).hexdigest()[:8]}"
    parse_sections(text, source)  # duplicate sections fail at load, not at the first call
    return Prompt(name=name, version=version, text=text, source=source)
