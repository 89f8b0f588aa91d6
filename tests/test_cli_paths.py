"""Every command, every path argument given wrong: one line naming the path, exit 2, nothing created.

A wrong path is the commonest mistake at a terminal (a typo, a folder, a file of the wrong kind, a file in
the wrong encoding). None of them may end in a traceback, and none may leave a half-made file behind.
The annotation commands have their own walk in tests/annotate/test_cli.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner
from pairfiles import write_pairs

from psychocounsel.cli import main

ROOT = Path(__file__).resolve().parents[1]
KINDS = ("missing", "directory", "not_utf8", "wrong_kind", "empty")


def _bad(tmp: Path, kind: str, suffix: str) -> Path:
    p = tmp / f"bad_{kind}{suffix}"
    if kind == "directory":
        p.mkdir()
    elif kind == "not_utf8":
        p.write_bytes(b'{"question": "caf\xe9 \xff\xfe"}\n')
    elif kind == "wrong_kind":
        p.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4)
    elif kind == "empty":
        p.write_bytes(b"")
    return p


def _labels(tmp: Path) -> Path:
    p = tmp / "good" / "labels.jsonl"
    p.write_text("".join(f'{{"id": {i}, "label": "A"}}\n' for i in range(3)))
    return p


def _good_pairs(tmp: Path) -> Path:
    return write_pairs(tmp / "good" / "train.jsonl")


# (command words with {bad} where the wrong path goes, the suffix the bad path carries)
CASES = {
    "run": (["run", "{bad}", "--dry-run"], ".yaml"),
    "ingest": (["ingest", "{bad}"], ".yaml"),
    "status": (["status", "{bad}"], ".yaml"),
    "pairs": (["pairs", "{bad}"], ".yaml"),
    "stats-file": (["stats", "{bad}"], ".jsonl"),
    "principles": (["principles", "--file", "{bad}"], ".yaml"),
    "evaluate": (["evaluate", "{bad}", "--dry-run"], ".yaml"),
    "leaderboard": (["leaderboard", "{bad}"], ""),
    "screen": (["screen", "{bad}"], ".jsonl"),
    "agree-a": (["agree", "{bad}", "{labels}"], ".jsonl"),
    "agree-b": (["agree", "{labels}", "{bad}"], ".jsonl"),
    "eval-rm-pairs": (["eval-rm", "{model}", "{bad}"], ".jsonl"),
    "eval-rm-model": (["eval-rm", "{bad}", "{good}"], ""),
    "score-input": (["score", "{model}", "{bad}", "{out}"], ".jsonl"),
    "train-rm-pairs": (["train-rm", "{rm_preset}", "--train", "{bad}", "--out", "{out_dir}"], ".jsonl"),
    "train-rm-preset": (["train-rm", "{bad}", "--train", "{good}", "--out", "{out_dir}"], ".yaml"),
    "train-rm-multihead": (["train-rm-multihead", "{bad}", "--config", "{mh_preset}", "-o", "model={model}",
                            "--out", "{out_dir}"], ".jsonl"),
    "train-dpo-pairs": (["train-dpo", "{bad}", "--out", "{out_dir}"], ".jsonl"),
    "train-dpo-config": (["train-dpo", "{good}", "--config", "{bad}", "--out", "{out_dir}"], ".yaml"),
    "train-online-dpo": (["train-online-dpo", "{bad}", "--out", "{out_dir}"], ".yaml"),
}


# every case with every kind of wrong path, except "not UTF-8" where the path is not a text file (a model folder)
WALK = [(case, kind) for case in sorted(CASES) for kind in KINDS
        if kind != "not_utf8" or CASES[case][1] in (".jsonl", ".yaml")]


@pytest.mark.parametrize("case, kind", WALK)
def test_a_wrong_path_is_one_line_and_exit_2(case, kind, tmp_path, monkeypatch, tiny_model_dir):
    words, suffix = CASES[case]
    monkeypatch.chdir(tmp_path)
    bad = _bad(tmp_path, kind, suffix)
    good = _good_pairs(tmp_path)
    fill = {"bad": str(bad), "good": str(good), "model": str(tiny_model_dir), "out": str(tmp_path / "o.jsonl"),
            "out_dir": str(tmp_path / "out"), "rm_preset": str(ROOT / "configs" / "train" / "rm_cpu.yaml"),
            "mh_preset": str(ROOT / "configs" / "train" / "multihead_cpu.yaml"), "labels": str(_labels(tmp_path))}
    args = [w.format(**fill) for w in words]
    before = {p for p in tmp_path.rglob("*")}
    r = CliRunner().invoke(main, args)
    assert r.exit_code == 2, f"{args}: exit {r.exit_code}\n{r.output}\n{r.exception!r}"
    err = [line for line in r.stderr.splitlines() if line.strip()]
    assert len(err) == 1, r.stderr
    assert "Traceback" not in r.output
    assert bad.name in err[0] or str(bad) in err[0], err[0]
    created = {p for p in tmp_path.rglob("*")} - before
    assert not created, sorted(str(p.relative_to(tmp_path)) for p in created)


@pytest.mark.parametrize("where", ["existing_file", "under_a_file"])
def test_a_run_dir_that_cannot_be_a_folder_is_one_line(where, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    blocker = tmp_path / "taken"
    blocker.write_text("not a folder")
    run_dir = blocker if where == "existing_file" else blocker / "run"
    r = CliRunner().invoke(main, ["status", str(ROOT / "configs" / "fake.yaml"), "-o", f"run_dir={run_dir}"])
    assert r.exit_code == 2, f"exit {r.exit_code}\n{r.output}\n{r.exception!r}"
    assert len([line for line in r.stderr.splitlines() if line.strip()]) == 1 and "taken" in r.stderr
