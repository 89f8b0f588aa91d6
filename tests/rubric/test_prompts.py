"""Prompt files: built-ins, user files, versions, sections and placeholder rendering."""

import pytest

from psychocounsel.errors import UserError
from psychocounsel.rubric.prompts import builtin_names, load_prompt, render


def test_builtins_load_with_versions():
    assert {"therapist_v1", "judge_v1", "geval_v1"} <= set(builtin_names())
    for name in ("therapist_v1", "judge_v1", "geval_v1"):
        p = load_prompt(name)
        assert p.name == name
        assert p.version.startswith(name + "@") and len(p.version) == len(name) + 9


def test_therapist_prompt_is_plain_short_and_safe():
    p = load_prompt("therapist_v1")
    assert p.sections == {} and p.placeholders == set()
    assert len(p.text.split()) < 250  # small models follow short system prompts
    assert "988" in p.text and "diagnose" in p.text and "AI" in p.text


def test_judge_and_geval_sections():
    judge = load_prompt("judge_v1")
    assert set(judge.sections) == {"system", "user"}
    assert "Judge prompt" not in judge.sections["system"] + judge.sections["user"]  # the note is not sent
    geval = load_prompt("geval_v1")
    assert set(geval.sections) == {"system", "user", "suffix"}
    assert geval.sections["suffix"].endswith("Score (1-5):")


def test_user_file_version_follows_content(tmp_path):
    f = tmp_path / "my_judge.txt"
    f.write_text("Rate {response} for {speech}.\n")
    a = load_prompt(str(f))
    assert a.name == "my_judge" and a.version.startswith("my_judge@")
    f.write_text("Rate {response} for {speech}!\n")
    assert load_prompt(str(f)).version != a.version


def test_render_fills_placeholders_and_leaves_other_braces():
    out = render('Say {greeting}. JSON: {"a": {"b": 1}} and {not a placeholder}', {"greeting": "hi"})
    assert out == 'Say hi. JSON: {"a": {"b": 1}} and {not a placeholder}'


def test_braces_in_values_are_never_rendered():
    out = render("Client: {speech} / {response}", {"speech": "I said {response} {x}", "response": "ok"})
    assert out == "Client: I said {response} {x} / ok"


def test_compiled_template_fills_as_one_pass_render(tmp_path):
    f = tmp_path / "c.txt"
    f.write_text("<<<user>>>\nRubric: {rubric}\nClient: {speech}\nReply: {response}. JSON {\"a\": 1} {other}")
    p = load_prompt(str(f))
    t = p.compile("user", ("speech", "response"), rubric="score {speech} kindly", other="x")
    # a fixed value that spells a placeholder stays literal, as do a speech's braces
    values = {"speech": "I said {response}", "response": "ok"}
    assert t.fill(**values) == p.render("user", rubric="score {speech} kindly", other="x", **values)
    assert t.fixed_chars == len(t.fill(speech="", response=""))
    with pytest.raises(UserError, match=r"c.txt: placeholder \{other\} has no value"):
        p.compile("user", ("speech", "response"), rubric="r")


def test_missing_placeholder_is_an_error(tmp_path):
    f = tmp_path / "p.txt"
    f.write_text("Hello {name}, about {topic}.")
    p = load_prompt(str(f))
    assert p.placeholders == {"name", "topic"}
    with pytest.raises(UserError, match=r"p.txt: placeholder \{topic\} has no value \(available: name\)"):
        p.render(name="Ana")
    assert p.render(name="Ana", topic="sleep", unused="fine") == "Hello Ana, about sleep."


def test_require_and_section_errors(tmp_path):
    f = tmp_path / "j.txt"
    f.write_text("note\n<<<system>>>\nYou judge.\n<<<user>>>\nRate {response}.\n")
    p = load_prompt(str(f))
    assert p.sections == {"system": "You judge.", "user": "Rate {response}."}
    with pytest.raises(UserError, match=r"j.txt: section <<<user>>> must contain \{speech\}"):
        p.require("user", "speech", "response")
    with pytest.raises(UserError, match=r"has no <<<suffix>>> section \(has: <<<system>>>, <<<user>>>\)"):
        p.section("suffix")
    f.write_text("<<<user>>>\na\n<<<user>>>\nb\n")
    with pytest.raises(UserError, match=r"j.txt:3: section <<<user>>> appears twice"):
        load_prompt(str(f))


def test_missing_and_empty_files(tmp_path):
    with pytest.raises(UserError, match=r"nope_v9: no such prompt file, and not a built-in prompt \(.*judge_v1"):
        load_prompt("nope_v9")
    (tmp_path / "empty.txt").write_text("  \n")
    with pytest.raises(UserError, match="empty.txt: prompt file is empty"):
        load_prompt(str(tmp_path / "empty.txt"))
