"""`psychocounsel serve`: adding a clinician from the shell, and one-line errors for a bad deployment file."""

from __future__ import annotations

from click.testing import CliRunner

from psychocounsel.cli import main
from psychocounsel.serve.store import ServeStore


def test_add_clinician_prints_a_working_link_once(tmp_path):
    cfg = tmp_path / "serve.yaml"
    cfg.write_text(f"db: {tmp_path / 'serve.sqlite'}\nport: 8123\n")
    got = CliRunner().invoke(main, ["serve", str(cfg), "--add-clinician", "Dr. Shell"])
    assert got.exit_code == 0, got.output
    link = got.output.strip()
    assert link.startswith("http://127.0.0.1:8123/c/")
    store = ServeStore(tmp_path / "serve.sqlite")
    assert store.clinician_by_token(link.rsplit("/", 1)[1]).name == "Dr. Shell"
    assert [r["action"] for r in store.audit_rows()] == ["clinician_added"]


def test_policy_mistakes_are_one_line_errors(tmp_path):
    cfg = tmp_path / "serve.yaml"
    for text, words in [("policy: {storag: true}\n", "policy.storag"),
                        ("policy: {export_pairs: true}\n", "need policy.storage"),
                        ("locale: XX\n", "no crisis resources")]:
        cfg.write_text(text)
        got = CliRunner().invoke(main, ["serve", str(cfg), "--add-clinician", "x"])
        assert got.exit_code == 2 and words in got.output and len(got.output.strip().splitlines()) == 1, got.output
