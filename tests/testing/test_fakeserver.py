"""The fake OpenAI-compatible server plays every model the toolkit asks for, from one process.

It is how users try the toolkit without a key (configs/fake.yaml, configs/eval/fake.yaml), so each role's
reply must parse with the toolkit's own parsers, and one server must carry a whole run and evaluation.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from psychocounsel.cli import main
from psychocounsel.rubric.pairwise import pairwise_response_format, parse_verdict
from psychocounsel.rubric.principles import load_principles
from psychocounsel.rubric.score import judge_response_format, parse_judgment
from psychocounsel.safety.model_check import CHECK_FORMAT, parse_check_reply
from psychocounsel.testing.fakeserver import fake_server, judge_scores, schema_reply

ROOT = Path(__file__).resolve().parents[2]


def _schema(fmt: dict) -> dict:
    return fmt["json_schema"]["schema"]


@pytest.mark.parametrize("text", ["I feel anxious every morning.", "Mi madre no me habla.", ""])
def test_each_role_gets_a_reply_its_parser_accepts(text):
    principles = load_principles("default")
    judged = parse_judgment(json.dumps(schema_reply(_schema(judge_response_format(principles)), text)), principles)
    assert judged.scores == judge_scores(text)  # the same scores as the plain judge prompt gets
    position, _ = parse_verdict(json.dumps(schema_reply(_schema(pairwise_response_format()), text)))
    assert position in ("A", "B", "tie")
    tier, _ = parse_check_reply(json.dumps(schema_reply(_schema(CHECK_FORMAT), text)))
    assert tier in ("none", "possible", "high")


def test_verdicts_vary_with_the_text_and_repeat_for_the_same_text():
    schema = _schema(pairwise_response_format())
    winners = {schema_reply(schema, f"speech {i}")["winner"] for i in range(40)}
    assert winners == {"A", "B", "tie"}
    assert schema_reply(schema, "same") == schema_reply(schema, "same")


def test_one_server_carries_a_run_and_an_evaluation(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with fake_server(latency=0.0) as srv:
        url = f'backends.fake.base_urls=["{srv.base_url}"]'
        run = CliRunner().invoke(main, ["run", str(ROOT / "configs" / "fake.yaml"), "-o", url,
                                        "-o", "speeches.limit=12", "--no-progress"])
        assert run.exit_code == 0, run.output
        status = CliRunner().invoke(main, ["status", str(ROOT / "configs" / "fake.yaml"), "-o", url,
                                           "-o", "speeches.limit=12", "--json"])
        s = json.loads(status.output)
        assert s["judge"]["ok"] == 48 and s["judge"]["failed"] == 0
        ev = CliRunner().invoke(main, ["evaluate", str(ROOT / "configs" / "eval" / "fake.yaml"), "-o", url,
                                       "-o", "speeches.n=6", "--no-progress"])
        assert ev.exit_code == 0, ev.output
    results = json.loads((tmp_path / "runs" / "eval" / "fake" / "results.json").read_text())
    pw = results["pairwise"]
    assert pw["n_failed"] == 0 and pw["n"] == 6  # every verdict parsed, in both orders


def test_recorded_answers_replay_through_the_screen_and_a_missing_one_is_a_failed_check(tmp_path):
    from psychocounsel.rubric.prompts import load_prompt
    from psychocounsel.testing.fakeserver import answer_key

    answered, unanswered = "I want to kill myself.", "I cut myself last night."
    src = tmp_path / "speeches.jsonl"
    src.write_text("".join(json.dumps({"id": i, "text": t}) + "\n" for i, t in (("a", answered), ("b", unanswered))))
    user = load_prompt("crisis_check_v4").render("user", speech=answered)
    reply = json.dumps({"tier": "high", "reason": "recorded: 'kill myself'"})
    answers = tmp_path / "answers.jsonl"
    answers.write_text(json.dumps({"key": answer_key(user), "reply": reply}) + "\n")
    out = tmp_path / "screened.jsonl"
    with fake_server(latency=0.0, answers=str(answers)) as srv:
        res = CliRunner().invoke(main, ["screen", str(src), "--rules-only", "--out", str(out), "--check-model", "m",
                                        "--base-url", srv.base_url, "--api-key-env", ""])
        assert srv.stats()["requests"] == 2
    assert res.exit_code == 0, res.output
    rows = {r["id"]: r for r in map(json.loads, out.read_text().splitlines())}
    assert rows["a"]["tier"] == "possible" and rows["a"]["model_check"]["tier"] == "high"
    assert rows["a"]["final_tier"] == "high" and "recorded" in rows["a"]["model_check"]["reason"]
    assert rows["b"]["model_check"]["tier"] is None and "no recorded answer" in rows["b"]["model_check"]["error"]
    assert rows["b"]["final_tier"] == rows["b"]["tier"] and "1 model check(s) failed" in res.output


def test_a_malformed_answers_file_stops_the_server_with_its_line(tmp_path):
    from psychocounsel.testing.fakeserver import load_answers

    bad = tmp_path / "answers.jsonl"
    bad.write_text('{"key": "k", "reply": "r"}\n{"key": "k2"}\n')
    with pytest.raises(SystemExit, match=r"answers.jsonl:2: expected"):
        load_answers(str(bad))
