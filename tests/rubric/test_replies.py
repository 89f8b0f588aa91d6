"""Reading JSON out of a model's reply: one reader for every judge, strict about duplicated keys.

A key given twice with different values is a reply that says two things; json.loads keeps the last one
silently, which stored ``{"empathy": 1, ..., "empathy": 5}`` as an ok 5. Every parser of model replies (the
principle judge, the pairwise verdict, the crisis model check) must refuse it the same way.
"""

import json

import pytest

from psychocounsel import PRINCIPLE_KEYS
from psychocounsel.rubric.pairwise import VerdictParseError, parse_verdict
from psychocounsel.rubric.principles import load_principles
from psychocounsel.rubric.replies import ConflictingKeys, json_objects
from psychocounsel.rubric.score import JudgeParseError, parse_judgment
from psychocounsel.safety.model_check import CheckReplyError, parse_check_reply

P = load_principles()
SCORES = ", ".join(f'"{k}": 4' for k in PRINCIPLE_KEYS)


def test_objects_found_in_chatter_and_fences():
    found, error = json_objects('Sure!\n```json\n{"a": 1, "b": {"c": "}"}}\n```\nand {"d": 2}')
    assert found == [{"a": 1, "b": {"c": "}"}}, {"d": 2}] and error is None


def test_a_key_given_twice_with_different_values_is_an_error_not_the_last_value():
    with pytest.raises(ConflictingKeys) as err:
        json_objects('{"empathy": 1, "clarity": 3, "empathy": 5}')
    assert str(err.value) == "key 'empathy' given twice with different values (1, 5)"


def test_a_key_repeated_with_the_same_value_is_read():
    found, error = json_objects('{"empathy": 4, "empathy": 4.0}')
    assert found == [{"empathy": 4}] and error is None


def test_a_conflict_inside_a_nested_object_is_found_too():
    with pytest.raises(ConflictingKeys, match="key 'safety' given twice with different values"):
        json_objects('{"scores": {"safety": 2, "safety": 5}, "rationale": "x"}')


@pytest.mark.parametrize("parse, reply, failure", [
    (lambda t: parse_judgment(t, P), '{"rationale": "x", ' + SCORES + ', "empathy": 5}', JudgeParseError),
    (lambda t: parse_judgment(t, P), '{"scores": {' + SCORES + ', "safety": 1}}', JudgeParseError),
    (parse_verdict, '{"rationale": "x", "winner": "A", "winner": "B"}', VerdictParseError),
    (parse_check_reply, '{"tier": "none", "reason": "fine", "tier": "high"}', CheckReplyError),
])
def test_every_reply_parser_refuses_conflicting_duplicates(parse, reply, failure):
    with pytest.raises(failure, match="given twice"):
        parse(reply)


def test_duplicates_that_agree_still_parse_everywhere():
    assert parse_judgment('{"rationale": "x", ' + SCORES + ', "empathy": 4}', P).scores["empathy"] == 4
    assert parse_verdict('{"winner": "A", "winner": "A"}')[0] == "A"
    assert parse_check_reply('{"tier": "high", "tier": "high", "reason": "r"}') == ("high", "r")


def test_a_conflicting_correction_later_in_the_reply_is_not_skipped():
    # the judge wrote a clean object, then a second one that contradicts itself: the reply is unreadable,
    # never "the first object that parsed"
    first = json.dumps({"rationale": "x", **{k: 4 for k in PRINCIPLE_KEYS}})
    with pytest.raises(JudgeParseError, match="given twice"):
        parse_judgment(first + ' Correction: {"rationale": "y", ' + SCORES + ', "safety": 2, "safety": 1}', P)
