"""The command line: help everywhere, one-line errors, and the commands that need no model."""

import json

import pytest
import yaml
from click.testing import CliRunner

from psychocounsel.cli import main

COMMANDS = ["run", "ingest", "generate", "judge", "pairs", "stats", "status", "principles", "eval-rm", "score", "train-rm",
            "train-online-dpo", "train-rm-multihead", "train-dpo"]


def invoke(*args):
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


@pytest.mark.parametrize("cmd", COMMANDS)
def test_every_command_has_help(cmd):
    res = invoke(cmd, "--help")
    assert res.exit_code == 0 and "Usage:" in res.output


def write_cfg(tmp_path, **over):
    cfg = {
        "pairs": {},
        "run_dir": str(tmp_path / "run"),
        "speeches": {"path": "demo", "limit": 12},
        "backends": {"api": {"type": "openai", "base_urls": ["http://127.0.0.1:9/v1"], "api_key_env": None,
                             "price_input_per_mtok": 2.5, "price_output_per_mtok": 10.0}},
        "therapists": {"k": 2, "profiles": [{"name": "a", "backend": "api", "model": "m1"},
                                            {"name": "b", "backend": "api", "model": "m2"}]},
        "judge": {"backend": "api", "model": "gpt-4o"},
    }
    cfg.update(over)
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_dry_run_prints_calls_tokens_and_cost_without_calling(tmp_path):
    res = invoke("run", str(write_cfg(tmp_path)), "--dry-run", "--no-progress")
    assert res.exit_code == 0, res.output
    assert "dry run" in res.output and "api" in res.output
    # 12 speeches x 2 responses, each generated and judged: 48 calls
    assert " 48 " in res.output
    assert (tmp_path / "run" / "ingest_report.json").exists()


def test_status_reports_stages_as_json(tmp_path):
    path = write_cfg(tmp_path)
    invoke("ingest", str(path))
    res = invoke("status", str(path), "--json")
    data = json.loads(res.output)
    assert data["speeches"] == 12
    assert data["generate"] == {"planned": 24, "ok": 0, "failed": 0, "pending": 24, "truncated": 0, "invalid": 0}
    assert data["judge"]["planned"] == 0 and data["pairs"] == {}
    assert data["pairs_vetoed"] == {"unsafe_chosen": 0, "less_safe": 0, "flagged_chosen": 0}


@pytest.mark.parametrize("mutate, needle", [
    (lambda c: c.update(therapists={"k": 2, "profiles": [{"name": "a", "backend": "nope", "model": "m"},
                                                         {"name": "b", "backend": "api", "model": "m"}]}),
     "unknown backend 'nope'"),
    (lambda c: c.update(speling="x"), "speling"),
    (lambda c: c["speeches"].update(path="missing.jsonl"), "missing.jsonl"),
    (lambda c: c["judge"].update(weights={"empathy": 1, "safty": 2}), "judge.weights: unknown principle 'safty'"),
    (lambda c: c["judge"].update(weights={"empathy": -1}), "judge.weights.empathy"),
    (lambda c: c["therapists"].update(truncated="ignore"), "therapists.truncated"),
    (lambda c: c["pairs"].update(safety_floor=7), "pairs.safety_floor"),
])
def test_user_mistakes_are_one_line_errors(tmp_path, mutate, needle):
    path = write_cfg(tmp_path)
    cfg = yaml.safe_load(path.read_text())
    mutate(cfg)
    path.write_text(yaml.safe_dump(cfg))
    res = CliRunner().invoke(main, ["run", str(path), "--no-progress"])
    assert res.exit_code == 2
    assert needle in res.output and "Traceback" not in res.output
    assert len([ln for ln in res.output.splitlines() if ln.startswith("error:")]) == 1


def test_missing_config_and_bad_yaml(tmp_path):
    res = CliRunner().invoke(main, ["status", str(tmp_path / "nope.yaml")])
    assert res.exit_code == 2 and "not found" in res.output
    bad = tmp_path / "bad.yaml"
    bad.write_text("run_dir: [unclosed\n")
    res = CliRunner().invoke(main, ["status", str(bad)])
    assert res.exit_code == 2 and "bad.yaml:" in res.output and "invalid YAML" in res.output


def test_principles_command_prints_the_rubric():
    res = invoke("principles")
    assert res.exit_code == 0
    for key in ("empathy", "relevance", "clarity", "safety", "exploration", "autonomy", "staging"):
        assert key in res.output


def test_stats_on_a_published_schema_file(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from psychocounsel import PRINCIPLE_KEYS

    cols = {"question": ["I feel lost since I moved."] * 3, "chosen": ["Tell me more."] * 3,
            "rejected": ["Get over it."] * 3, "chosen_model": ["a", "b", "a"], "rejected_model": ["c"] * 3}
    for p in PRINCIPLE_KEYS:
        cols[f"chosen_{p}_rating"] = [5, 4, 5]
        cols[f"rejected_{p}_rating"] = [2, 1, 3]
    path = tmp_path / "train-00000-of-00001.parquet"
    pq.write_table(pa.table(cols), path)
    res = invoke("stats", str(path), "--out", str(tmp_path / "rep"))
    assert res.exit_code == 0, res.output
    report = json.loads((tmp_path / "rep" / "report.json").read_text())
    assert "report.html" in res.output and (tmp_path / "rep" / "report.html").exists()
    assert json.dumps(report).count("train") >= 1


def test_stats_writes_beside_its_input_by_default(tmp_path, monkeypatch):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from psychocounsel import PRINCIPLE_KEYS

    monkeypatch.chdir(tmp_path)  # where ./report would have gone
    cols = {"question": ["I feel lost since I moved."] * 2, "chosen": ["Tell me more."] * 2,
            "rejected": ["Get over it."] * 2, "chosen_model": ["a", "b"], "rejected_model": ["c"] * 2}
    for p in PRINCIPLE_KEYS:
        cols[f"chosen_{p}_rating"] = [5, 4]
        cols[f"rejected_{p}_rating"] = [2, 1]
    folder = tmp_path / "runs" / "x" / "pairs"
    folder.mkdir(parents=True)
    pq.write_table(pa.table(cols), folder / "train.parquet")
    res = invoke("stats", str(folder))
    assert res.exit_code == 0, res.output
    assert (tmp_path / "runs" / "x" / "report" / "report.html").is_file()  # the pairs folder's parent
    single = tmp_path / "data" / "test-00000-of-00001.parquet"
    single.parent.mkdir()
    pq.write_table(pa.table(cols), single)
    assert invoke("stats", str(single)).exit_code == 0
    assert (tmp_path / "data" / "report" / "report.html").is_file()  # the pair file's folder
    assert not (tmp_path / "report").exists()


def test_status_counts_cut_replies_and_vetoed_pairs(tmp_path):
    from psychocounsel.testing.fakeserver import fake_server

    with fake_server(latency=0.0) as srv:
        cfg = yaml.safe_load(write_cfg(tmp_path).read_text())
        cfg["backends"]["api"]["base_urls"] = [srv.base_url]
        for p in cfg["therapists"]["profiles"]:
            p["sampling"] = {"max_tokens": 4}  # every fake reply is longer: cut ("length")
        path = tmp_path / "cfg.yaml"
        path.write_text(yaml.safe_dump(cfg))
        assert invoke("run", str(path), "--no-progress").exit_code == 0
    res = invoke("status", str(path))
    assert res.exit_code == 0
    assert "truncated" in res.output and "24" in res.output and "vetoed" in res.output


def test_run_end_to_end_against_a_local_server_then_rerun_is_free(tmp_path):
    from psychocounsel.testing.fakeserver import fake_server

    with fake_server(latency=0.0) as srv:
        cfg = yaml.safe_load(write_cfg(tmp_path).read_text())
        cfg["backends"]["api"]["base_urls"] = [srv.base_url]
        path = tmp_path / "cfg.yaml"
        path.write_text(yaml.safe_dump(cfg))
        res = invoke("run", str(path), "--no-progress")
        assert res.exit_code == 0, res.output
        assert "done." in res.output and str(tmp_path / "run" / "pairs") in res.output
        assert "48 requests" in res.output and "$" in res.output  # usage and cost, prices configured
        first = srv.stats()["requests"]
        res = invoke("run", str(path), "--no-progress")
        assert res.exit_code == 0 and srv.stats()["requests"] == first  # everything came from the store
    assert (tmp_path / "run" / "report" / "report.html").exists()
    assert (tmp_path / "run" / "pairs" / "train.parquet").exists()


def test_stage_commands_one_at_a_time_then_status(tmp_path):
    from psychocounsel.testing.fakeserver import fake_server

    with fake_server(latency=0.0) as srv:
        cfg = yaml.safe_load(write_cfg(tmp_path).read_text())
        cfg["backends"]["api"]["base_urls"] = [srv.base_url]
        path = tmp_path / "cfg.yaml"
        path.write_text(yaml.safe_dump(cfg))
        gen = invoke("generate", str(path), "--no-progress")
        assert gen.exit_code == 0 and "generate" in gen.output and "24 requests" in gen.output
        jud = invoke("judge", str(path), "--no-progress")
        assert jud.exit_code == 0 and "judge" in jud.output and srv.stats()["requests"] == 48
    assert invoke("pairs", str(path)).exit_code == 0
    data = json.loads(invoke("status", str(path), "--json").output)
    assert data["generate"]["ok"] == 24 and data["judge"]["ok"] == 24
