"""Replacing a file so that a reader, or the next run after a kill -9 or a power cut, sees either the
old file or the whole new one, never a part.

The recipe: write a temp file beside the target (same folder, so the rename stays on one filesystem),
fsync it, ``os.replace`` it over the target, fsync the folder (the rename itself is a folder entry).
Without the first fsync a crash after the rename can leave the new name pointing at an empty file on
ext4/xfs; without the second the rename can be undone. A kill can still leave a temp file behind:
temp names follow ``temp_name`` so the next writer of that folder finds and removes them
(``remove_stale_temps``).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

TEMP_SUFFIX = ".tmp"


def temp_name(final: Path) -> str:
    """Prefix of a temp file for ``final``: hidden, and named after its target so a stale one is found."""
    return f".{final.name}."


def make_temp(final: Path) -> Path:
    """An empty temp file beside ``final`` (mode 0644: mkstemp's 0600 would make a dataset private by
    surprise)."""
    final.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=temp_name(final), suffix=TEMP_SUFFIX, dir=final.parent)
    os.close(fd)
    os.chmod(tmp, 0o644)
    return Path(tmp)


def fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(folder: Path) -> None:
    """Make the renames in ``folder`` durable (a no-op where folders cannot be opened, e.g. Windows)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some filesystems refuse fsync on a folder; the rename is then as durable as they make it
    finally:
        os.close(fd)


def replace(tmp: Path, final: Path, sync_dir: bool = True) -> None:
    """fsync ``tmp``, rename it over ``final``; then fsync the folder unless the caller does it once for many."""
    fsync_file(tmp)
    os.replace(tmp, final)
    if sync_dir:
        fsync_dir(final.parent)


def write_text(path: Path, text: str) -> None:
    """Replace ``path`` with ``text`` (UTF-8) atomically and durably."""
    tmp = make_temp(path)
    try:
        tmp.write_text(text, encoding="utf-8")
        replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def remove_stale_temps(folder: Path, names: list[str]) -> list[Path]:
    """Remove the temp files an earlier, killed writer of ``names`` (final file names) left in ``folder``;
    returns them. Call it only where no other writer of those names can be running."""
    if not folder.is_dir():
        return []
    prefixes = tuple(temp_name(folder / n) for n in names)
    stale = [p for p in folder.iterdir() if p.name.startswith(prefixes) and TEMP_SUFFIX in p.name]
    for p in stale:
        p.unlink(missing_ok=True)
    return stale
