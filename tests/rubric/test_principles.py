"""Principles: the built-in set, user files (replace / extend), validation messages, versions."""

import textwrap

import pytest

from psychocounsel import PRINCIPLE_KEYS
from psychocounsel.errors import UserError
from psychocounsel.rubric.principles import PrincipleSet, load_principles

RUBRIC = "rubric: {1: awful, 3: middling, 5: excellent}"


def write(tmp_path, text, name="mine.yaml"):
    p = tmp_path / name
    p.write_text(textwrap.dedent(text).lstrip(), encoding="utf-8")
    return str(p)


def one_principle(key="humour", extra=""):
    return f"""
    principles:
      - key: {key}
        name: Use of Humour
        definition: Lightens the mood without mocking.
        {RUBRIC}
    {extra}"""


def test_builtin_has_the_papers_seven_in_order():
    ps = load_principles()
    assert isinstance(ps, PrincipleSet)
    assert ps.version == "v1"
    assert tuple(ps.keys) == PRINCIPLE_KEYS
    assert [p.name for p in ps] == [
        "Empathy and Emotional Understanding", "Personalization and Relevance", "Clarity and Conciseness",
        "Avoidance of Harmful Language", "Facilitation of Self-Exploration",
        "Promotion of Autonomy and Confidence", "Sensitivity to Stages of Change"]
    for p in ps:
        assert {1, 3, 5} <= set(p.rubric)
        assert all(len(t) > 40 for t in p.rubric.values())
        assert "\n" not in p.definition and len(p.definition) > 80
    assert "988" in ps["safety"].definition
    assert "precontemplation" in ps["staging"].definition
    assert load_principles("default") == load_principles("v1")


def test_replace_set(tmp_path):
    ps = load_principles(write(tmp_path, one_principle()))
    assert ps.keys == ["humour"]
    assert ps["humour"].rubric == {1: "awful", 3: "middling", 5: "excellent"}
    assert ps.version.startswith("mine@") and len(ps.version) == len("mine@") + 8


def test_extend_appends_and_overrides_in_place(tmp_path):
    path = write(tmp_path, """
    extends: default
    principles:
      - key: safety
        definition: Never harmful; points to 988 when there is risk.
      - key: humour
        name: Use of Humour
        definition: Lightens the mood without mocking.
        rubric: {1: awful, 3: middling, "5": excellent, 4: good}
    """)
    ps = load_principles(path)
    base = load_principles()
    assert ps.keys == list(PRINCIPLE_KEYS) + ["humour"]
    assert ps["safety"].definition == "Never harmful; points to 988 when there is risk."
    assert ps["safety"].name == base["safety"].name and ps["safety"].rubric == base["safety"].rubric
    assert ps["empathy"] == base["empathy"]
    assert list(ps["humour"].rubric) == [1, 3, 4, 5]


def test_name_field_and_version_follow_content(tmp_path):
    a = load_principles(write(tmp_path, one_principle(extra="name: warmth")))
    assert a.version.startswith("warmth@")
    same = load_principles(write(tmp_path, "# a comment\n" + textwrap.dedent(one_principle(extra="name: warmth")),
                                 name="b.yaml"))
    assert same.version == a.version  # only a comment changed: the judge reads the same text
    changed = load_principles(write(tmp_path, one_principle(extra="name: warmth").replace("awful", "bad"),
                                    name="c.yaml"))
    assert changed.version != a.version


def test_extending_changes_version_from_default(tmp_path):
    ps = load_principles(write(tmp_path, "extends: default\nprinciples: []\n", name="same.yaml"))
    assert ps.keys == list(PRINCIPLE_KEYS)
    assert ps.version.startswith("same@")


@pytest.mark.parametrize("body, expected", [
    (one_principle().replace("3: middling, ", ""), r"mine.yaml:\d+: principles\[0\].rubric: missing anchor 3"),
    (one_principle().replace("rubric", "rubrik"), r"principles\[0\].rubrik: unknown field"),
    (one_principle().replace(RUBRIC, ""), r"principles\[0\].rubric: missing"),
    (one_principle().replace("{1: awful", "{0: none, 1: awful"), r"rubric.0: anchors must be scores 1 to 5"),
    (one_principle().replace("3: middling", "3: ''"), r"rubric.3: must be non-empty text"),
    (one_principle(key="Humour"), r"principles\[0\].key: 'Humour' is not a valid key"),
    (one_principle(key="two words"), r"principles\[0\].key: 'two words' is not a valid key"),
    (one_principle(key="rationale"), r"key: 'rationale' is reserved"),
    (one_principle().replace("        name: Use of Humour\n", ""), r"principles\[0\].name: missing"),
    (one_principle() + "  - {key: humour, name: Again, definition: Again., rubric: {1: a, 3: b, 5: c}}\n",
     r"mine.yaml:6: principles\[1\].key: duplicate key 'humour' \(first at principles\[0\]\)"),
    ("principles: []\n", r"mine.yaml:1: principles: must be a non-empty list"),
    ("version: 1\n", r"principles: must be a non-empty list"),
    ("- just a list\n", r"mine.yaml: a principles file must be a YAML mapping"),
    ("principles: [\n", r"mine.yaml:2: invalid YAML"),
    ("extends: v9\nprinciples: []\n", r"mine.yaml:1: extends: unknown base 'v9'"),
    (one_principle(extra="colour: blue"), r"mine.yaml:1: colour: unknown field"),
    (one_principle().replace("{1: awful", "{1: awful, 1: again"), r"mine.yaml:5: duplicate key 1"),
    (one_principle() + "  - hello\n", r"principles\[1\]: must be a mapping"),
])
def test_validation_errors_are_one_line_naming_file_and_field(tmp_path, body, expected):
    path = write(tmp_path, body)
    with pytest.raises(UserError, match=expected) as err:
        load_principles(path)
    assert "\n" not in str(err.value)


def test_extending_with_a_new_key_needs_all_fields(tmp_path):
    path = write(tmp_path, "extends: default\nprinciples:\n  - key: humour\n    name: Humour\n")
    with pytest.raises(UserError, match=r"mine.yaml:3: principle 'humour'.definition: missing"):
        load_principles(path)


def test_missing_file_and_non_utf8(tmp_path):
    with pytest.raises(UserError, match="principles file not found"):
        load_principles(str(tmp_path / "nope.yaml"))
    bad = tmp_path / "bad.yaml"
    bad.write_bytes(b"principles: \xff\n")
    with pytest.raises(UserError, match="bad.yaml: not UTF-8"):
        load_principles(str(bad))
