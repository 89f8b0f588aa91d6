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


def one_line_error(args: list[str], env: dict[str, str] | None = None) -> str:
    got = CliRunner().invoke(main, args, env=env)
    lines = got.output.strip().splitlines()
    assert got.exit_code == 2 and len(lines) == 1, got.output + repr(got.exception)
    return lines[0]


def test_a_misspelt_field_and_a_bad_backend_name_the_file_and_field(tmp_path):
    cfg = tmp_path / "serve.yaml"
    cfg.write_text("reward_modle: rm/\n")
    assert one_line_error(["serve", str(cfg)]).endswith(f"{cfg}: reward_modle: Extra inputs are not permitted")
    cfg.write_text("backend: {type: vllm}\n")
    assert f"{cfg}: backend" in one_line_error(["serve", str(cfg)])
    # an OpenAI backend whose key variable is not set: found at start, not at the first draft
    cfg.write_text(f"db: {tmp_path / 's.sqlite'}\nport: 0\nbackend: {{type: openai, api_key_env: PC_TEST_UNSET_KEY}}\n")
    line = one_line_error(["serve", str(cfg)], env={"PC_TEST_UNSET_KEY": ""})
    assert line.startswith(f"error: {cfg}: backend openai: environment variable PC_TEST_UNSET_KEY is not set")
    # a local model that is not there
    cfg.write_text(f"db: {tmp_path / 's.sqlite'}\nport: 0\nmodel: {tmp_path / 'no-such-model'}\n")
    assert f"{cfg}: model " in one_line_error(["serve", str(cfg)]) and "no such file" in one_line_error(["serve", str(cfg)])


def test_a_missing_reward_model_names_the_field(tmp_path):
    cfg = tmp_path / "serve.yaml"
    cfg.write_text(f"db: {tmp_path / 's.sqlite'}\nport: 0\nbackend: {{type: openai, base_urls: ['http://127.0.0.1:9/v1'], "
                   f"api_key_env: null}}\nreward_model: {tmp_path / 'rm'}\n")
    line = one_line_error(["serve", str(cfg)])
    assert f"{cfg}: reward_model: {tmp_path / 'rm'}: model folder not found" in line


def test_a_port_in_use_and_a_weak_admin_token_are_refused_before_anything_loads(tmp_path):
    import socket

    cfg = tmp_path / "serve.yaml"
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        cfg.write_text(f"db: {tmp_path / 's.sqlite'}\nport: {port}\n")
        line = one_line_error(["serve", str(cfg)])
    assert f"{cfg}: port: 127.0.0.1:{port} is already in use" in line
    cfg.write_text(f"db: {tmp_path / 's.sqlite'}\nport: 0\n")
    line = one_line_error(["serve", str(cfg)], env={"PSYCHOCOUNSEL_SERVE_ADMIN_TOKEN": "hunter2"})
    assert "$PSYCHOCOUNSEL_SERVE_ADMIN_TOKEN: the admin token must be at least 32 characters" in line
    assert "hunter2" not in line  # a secret is never echoed
