"""Every file the package reads at run time ships in the wheel: each non-Python file under psychocounsel/ is
matched by a pattern of pyproject.toml's package-data (a file added without a pattern is missing from an
installed toolkit, and only an install from the wheel would notice)."""

import glob
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "psychocounsel"


def shipped_patterns() -> list[str]:
    data = tomllib.loads((ROOT / "pyproject.toml").read_text())
    return data["tool"]["setuptools"]["package-data"]["psychocounsel"]


def test_every_data_file_is_matched_by_a_package_data_pattern():
    # setuptools expands each pattern with glob relative to the package folder ('*' stops at '/')
    matched = {m for p in shipped_patterns() for m in glob.glob(p, root_dir=PACKAGE)}
    files = [f.relative_to(PACKAGE).as_posix() for f in PACKAGE.rglob("*")
             if f.is_file() and f.suffix not in (".py", ".pyc") and "__pycache__" not in f.parts]
    assert any(f.startswith("data/") for f in files)
    assert [f for f in files if f not in matched] == []


def test_every_package_data_pattern_matches_a_file():
    # a pattern left behind by a moved folder hides nothing, but says something untrue about the package
    assert [p for p in shipped_patterns() if not glob.glob(p, root_dir=PACKAGE)] == []
