"""The shared JSON-lines reader: every stage that takes a .jsonl file (pairs, comparisons, labels, studies)
reads it here, so its errors must name the file and line, and what Windows editors write (a BOM) must read."""

from __future__ import annotations

import os

import pytest

from psychocounsel.dataset.jsonl import iter_json_objects
from psychocounsel.errors import InputError


def test_objects_with_their_line_numbers_blank_lines_skipped(tmp_path):
    p = tmp_path / "a.jsonl"
    p.write_text('{"a": 1}\n\n  \n{"b": "é"}\r\n', encoding="utf-8")
    assert list(iter_json_objects(p)) == [(1, {"a": 1}), (4, {"b": "é"})]


def test_a_utf8_bom_at_the_start_is_not_text(tmp_path):
    """Notepad and Excel write a BOM; speech ingestion accepts it, and so must every other .jsonl reader."""
    p = tmp_path / "bom.jsonl"
    p.write_bytes(b"\xef\xbb\xbf" + b'{"question": "q"}\n{"question": "r"}\n')
    assert list(iter_json_objects(p)) == [(1, {"question": "q"}), (2, {"question": "r"})]
    # Only at the start of the file: a BOM inside line 2 is a character JSON does not allow there.
    p.write_bytes(b'{"a": 1}\n\xef\xbb\xbf{"a": 2}\n')
    with pytest.raises(InputError, match=r"bom\.jsonl:2: invalid JSON"):
        list(iter_json_objects(p))


def test_invalid_utf8_names_file_line_and_byte(tmp_path):
    p = tmp_path / "latin1.jsonl"
    p.write_bytes('{"a": 1}\n{"q": "caf\xe9"}\n'.encode("latin-1"))
    rows = iter_json_objects(p)
    assert next(rows) == (1, {"a": 1})  # lines before the bad one were fine
    with pytest.raises(InputError) as e:
        next(rows)
    msg = str(e.value)
    assert msg.startswith(f"{p}:2: not valid UTF-8 (byte 0xe9 at offset 10)") and "\n" not in msg
    assert e.value.line == 2


@pytest.mark.parametrize("case", ["missing", "directory", "unreadable"])
def test_unreadable_paths_are_one_line_input_errors(tmp_path, case):
    p = tmp_path / "x.jsonl"
    if case == "directory":
        p.mkdir()
    elif case == "unreadable":
        p.write_text('{"a": 1}\n')
        p.chmod(0)
        if os.access(p, os.R_OK):
            pytest.skip("running as root: chmod 000 does not stop reading")
    with pytest.raises(InputError, match=rf"^{p}: cannot read"):
        list(iter_json_objects(p))


def test_malformed_lines_name_their_line(tmp_path):
    p = tmp_path / "bad.jsonl"
    p.write_text('{"a": 1}\n{"a": \n[1, 2]\n')
    with pytest.raises(InputError, match=r"bad\.jsonl:2: invalid JSON"):
        list(iter_json_objects(p))
    p.write_text('{"a": 1}\n[1, 2]\n')
    with pytest.raises(InputError, match=r"bad\.jsonl:2: expected a JSON object per line"):
        list(iter_json_objects(p))
