"""JSON-lines reading shared by every stage that takes .jsonl files.

Read as bytes and decoded line by line, so a byte that is not UTF-8 is reported with its line (a text-mode
read raises UnicodeDecodeError from deep inside the iterator, with no line at all), and so a UTF-8 BOM, which
Notepad and Excel put at the start of a file, is dropped as speech ingestion drops it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterator

from ..errors import InputError

BOM = "\ufeff"


def decode_utf8_line(raw: bytes, path: str | Path, line: int) -> str:
    """One line of a UTF-8 file as text; a BOM on line 1 is dropped, a byte that is not UTF-8 is an InputError."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise InputError(path, f"not valid UTF-8 (byte 0x{e.object[e.start]:02x} at offset {e.start}); "
                               "re-save the file as UTF-8", line=line) from None
    return text.removeprefix(BOM) if line == 1 else text


def iter_json_objects(path: str | Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, object) for each non-blank line; a malformed line is an InputError naming it."""
    try:
        f = open(path, "rb")
    except OSError as e:
        raise InputError(path, f"cannot read ({e.strerror or e})") from None
    with f:
        for i, raw in enumerate(f, 1):
            line = decode_utf8_line(raw, path, i)
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise InputError(path, f"invalid JSON: {e.msg}", line=i) from None
            if not isinstance(row, dict):
                raise InputError(path, "expected a JSON object per line", line=i)
            yield i, row
