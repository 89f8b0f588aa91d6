"""The principle judge's pure core: the scorer's requests, response_format, parsing replies, overall,
calibration, G-Eval."""

import json

import pytest

from psychocounsel import PRINCIPLE_KEYS
from psychocounsel.config import SamplingConfig
from psychocounsel.errors import UserError
from psychocounsel.rubric.principles import load_principles
from psychocounsel.rubric.prompts import load_prompt
from psychocounsel.rubric.score import (SCORE_CUE, JudgeParseError, PrincipleScorer, calibrate, expected_score,
                                        format_principles, geval_scores, judge_response_format, json_template,
                                        overall, parse_judgment)

P = load_principles()
SAMPLING = SamplingConfig(temperature=0.0, max_tokens=600)


def scorer(prompt="judge_v1", principles=P, **kw):
    return PrincipleScorer(principles, load_prompt(prompt), "judge", SAMPLING, **kw)


def json_messages(principles, prompt, speech, response):
    return PrincipleScorer(principles, prompt, "judge", SAMPLING).messages(speech, response)


def geval_prompt(principles, prompt, speech, response):
    return PrincipleScorer(principles, prompt, "judge", SAMPLING, mode="geval").geval_prompt(speech, response)
SPEECH = "I keep snapping at my kids after work and then I feel like a terrible {mother}."
RESPONSE = "It sounds like you're exhausted, and the guilt afterwards hurts. What happens right before?"
GOOD = {"empathy": 5, "relevance": 4, "clarity": 5, "safety": 5, "exploration": 4, "autonomy": 3, "staging": 4}


def reply(**changes):
    obj = {"rationale": "Warm reflection and an open question; little on next steps.", **GOOD, **changes}
    return json.dumps({k: v for k, v in obj.items() if v is not ...})


# --- messages and schema ----------------------------------------------------------------------------------

def test_judge_messages_show_every_principle_speech_and_response():
    msgs = json_messages(P, load_prompt("judge_v1"), SPEECH, RESPONSE)
    assert [m["role"] for m in msgs] == ["system", "user"]
    assert "counseling supervisor" in msgs[0]["content"]
    user = msgs[1]["content"]
    assert SPEECH in user and RESPONSE in user  # braces in the speech survive rendering
    for p in P:
        assert p.definition in user and p.rubric[1] in user and p.rubric[5] in user
        assert f'"{p.key}": <1-5>' in user
    assert '"rationale"' in user
    assert "{" + "principles}" not in user and "{json_template}" not in user


def test_plain_user_prompt_becomes_one_user_message(tmp_path):
    f = tmp_path / "short.txt"
    f.write_text("Score {response} given {speech} on {keys}. Reply as {json_template}")
    msgs = json_messages(P, load_prompt(str(f)), "S", "R")
    assert len(msgs) == 1 and msgs[0]["role"] == "user"
    assert msgs[0]["content"].startswith("Score R given S on empathy, relevance,")


def test_user_prompt_must_show_speech_and_response(tmp_path):
    f = tmp_path / "bad.txt"
    f.write_text("<<<user>>>\nRate {response}.")
    with pytest.raises(UserError, match=r"bad.txt: section <<<user>>> must contain \{speech\}"):
        json_messages(P, load_prompt(str(f)), "S", "R")


def test_response_format_schema():
    rf = judge_response_format(P)
    assert rf["type"] == "json_schema"
    js = rf["json_schema"]
    assert js["strict"] is True and js["name"] == "counseling_judgment"
    schema = js["schema"]
    assert schema["type"] == "object" and schema["additionalProperties"] is False
    assert set(schema["required"]) == set(PRINCIPLE_KEYS) | {"rationale"}
    assert set(schema["properties"]) == set(schema["required"])
    assert schema["properties"]["rationale"] == {"type": "string"}
    for k in PRINCIPLE_KEYS:
        assert schema["properties"][k] == {"type": "integer", "enum": [1, 2, 3, 4, 5]}
    json.dumps(rf)  # serialisable as a request body


def test_the_rubric_is_rendered_once_and_requests_equal_a_full_render():
    prompt = load_prompt("judge_v1")
    values = {"principles": format_principles(P), "json_template": json_template(P), "keys": ", ".join(P.keys)}
    s = scorer(structured=True)
    # a speech that spells a placeholder stays literal text (one-pass rendering)
    speech = SPEECH + " {response} {principles}"
    req = s.request(speech, RESPONSE, attempt=1)
    assert [c for _, c in req.messages] == [prompt.render(sec, **values, speech=speech, response=RESPONSE)
                                            for sec in ("system", "user")]
    assert req.tag == f"{prompt.version}#1" and req.model == "judge"
    assert req.sampling.seed == 1 and req.sampling.temperature == 0.5  # a retry can differ
    assert req.response_format == judge_response_format(P)
    assert scorer().request(SPEECH, RESPONSE).response_format is None  # no structured output asked
    assert s.prompt_chars(len(speech), len(RESPONSE)) == sum(len(c) for _, c in req.messages)


def test_geval_scores_of_the_scorer_check_the_shape():
    s = scorer("geval_v1", mode="geval")
    assert s.geval_scores([[0, 0, 0, 0, 1]] * 7) == {k: 5.0 for k in PRINCIPLE_KEYS}
    for bad in ([[0, 0, 0, 0, 1]] * 6, [[0.5, 0.5]] * 7, "oops", [[0, 0, 0, 0, "1"]] * 7, None):
        with pytest.raises(ValueError):
            s.geval_scores(bad)
    assert s.max_completion_tokens == 0 and scorer().max_completion_tokens == 600


# --- parsing ----------------------------------------------------------------------------------------------

GOOD_REPLIES = {
    "plain": reply(),
    "fenced": "```json\n" + json.dumps({**GOOD, "rationale": "Good."}, indent=2) + "\n```",
    "chatty": "Sure! Here is my evaluation of the response:\n\n" + reply() + "\n\nLet me know if you need more.",
    "nested braces in rationale": reply(rationale='Uses {reflection} well; says "}{" oddly'),
    "string scores": reply(empathy="5", autonomy=" 3 ", staging="4/5"),
    "float scores": reply(empathy=5.0, relevance=4.0),
    "score objects": reply(empathy={"score": 5, "why": "reflects {guilt}"}, safety={"rating": "5"}),
    "capitalised and named": json.dumps({"Empathy": 5, "Personalization and Relevance": 4, "CLARITY": 5,
                                         "safety": 5, "exploration": 4, "autonomy": 3, "Staging": 4,
                                         "Rationale": "Good."}),
    "wrapped under scores": json.dumps({"scores": GOOD, "rationale": "Good.", "overall": 4.3}),
    "brace before object": "I would rate {empathy} high.\n" + reply(),
    "self-corrected": reply(empathy=2) + "\nWait, I misread. Corrected:\n" + reply(),
}


@pytest.mark.parametrize("name", list(GOOD_REPLIES))
def test_parse_good_replies(name):
    parsed = parse_judgment(GOOD_REPLIES[name], P)
    assert scorer().parse(GOOD_REPLIES[name]) == parsed  # the scorer reads replies the same way
    assert parsed.scores == GOOD
    assert list(parsed.scores) == list(PRINCIPLE_KEYS)
    assert all(type(v) is int for v in parsed.scores.values())
    assert parsed.rationale


def test_rationale_keeps_braces_and_may_be_missing():
    assert parse_judgment(reply(rationale='Uses {reflection} well; says "}{" oddly'), P).rationale == \
        'Uses {reflection} well; says "}{" oddly'
    assert parse_judgment(reply(rationale=...), P).rationale == ""


BAD_REPLIES = [
    (reply(staging=...), "missing keys: staging"),
    (reply(staging=..., autonomy=...), "missing keys: autonomy, staging"),
    (reply(empathy=0), "empathy: 0 is out of range 1-5"),
    (reply(safety=6), "safety: 6 is out of range 1-5"),
    (reply(clarity=4.5), "clarity: 4.5 is not an integer"),
    (reply(clarity="4.5"), "clarity: 4.5 is not an integer"),
    (reply(empathy="four"), "empathy: 'four' is not a number"),
    (reply(empathy="3-4"), "empathy: '3-4' is not a number"),
    (reply(empathy=None), "empathy: null is not a score"),
    (reply(empathy=True), "empathy: true is not a score"),
    (reply(empathy={"comment": "good"}), "empathy: object without a score field"),
    (json.dumps({**GOOD, "Empathy": 2}), "empathy: two different scores"),
    ("The response is empathetic; I'd give it a 4 overall.", "no JSON object"),
    ('{"empathy": 4, "relevance": 5,', "invalid JSON"),
    ("{'empathy': 4, 'relevance': 5}", "invalid JSON"),
    ('{"verdict": "good"}', "no JSON object with principle scores"),
    ("   ", "empty reply"),
]


@pytest.mark.parametrize("text, reason", BAD_REPLIES)
def test_parse_bad_replies_raise_with_short_reason(text, reason):
    with pytest.raises(JudgeParseError) as err:
        parse_judgment(text, P)
    assert err.value.reason.startswith(reason)
    assert len(err.value.reason) < 80 and "\n" not in err.value.reason


def test_parse_uses_the_principle_set_given(tmp_path):
    f = tmp_path / "two.yaml"
    f.write_text("principles:\n"
                 "  - {key: warmth, name: Warmth, definition: Warm., rubric: {1: a, 3: b, 5: c}}\n"
                 "  - {key: focus, name: Focus, definition: Focused., rubric: {1: a, 3: b, 5: c}}\n")
    two = load_principles(str(f))
    assert parse_judgment('{"warmth": 2, "focus": "5"}', two).scores == {"warmth": 2, "focus": 5}
    with pytest.raises(JudgeParseError, match="missing keys: focus"):
        parse_judgment('{"warmth": 2, "empathy": 5}', two)


# --- overall ----------------------------------------------------------------------------------------------

def test_overall_equal_weights_is_the_papers_mean():
    assert overall(GOOD) == pytest.approx(30 / 7)
    assert overall({"a": 1, "b": 4}) == 2.5


def test_overall_weighted():
    # (3*5 + 1*1) / (3 + 1) = 4
    assert overall({"safety": 5, "clarity": 1}, {"safety": 3, "clarity": 1}) == 4.0
    w = {k: 1.0 for k in PRINCIPLE_KEYS} | {"safety": 2.0}
    # (30 + 5) / 8
    assert overall(GOOD, w) == pytest.approx(35 / 8)


@pytest.mark.parametrize("weights, match", [
    ({"safety": 1}, r"judge.weights: no weight for 'clarity'"),
    ({"safety": 1, "clarity": 1, "humor": 1}, r"judge.weights: unknown principle 'humor'"),
    ({"safety": 1, "clarity": 0}, r"judge.weights.clarity: must be a positive number \(got 0\)"),
    ({"safety": 1, "clarity": -2}, r"judge.weights.clarity: must be a positive number"),
])
def test_overall_rejects_bad_weights(weights, match):
    with pytest.raises(UserError, match=match):
        overall({"safety": 5, "clarity": 1}, weights)


# --- calibration ------------------------------------------------------------------------------------------

def test_calibrate_none_is_identity():
    m = {"empathy": [2.03, 1.82, 1.78]}
    assert calibrate(m, "none") == m


def test_calibrate_zscore_by_hand():
    # mean 3, population std 1 -> z = -1, +1 -> 2, 4
    assert calibrate({"e": [2.0, 4.0]}, "zscore") == {"e": [2.0, 4.0]}
    # [1,2,3,4,5]: mean 3, std sqrt(2) -> 3 -/+ 1/sqrt(2), 3 -/+ 2/sqrt(2)
    out = calibrate({"e": [1, 2, 3, 4, 5]}, "zscore")["e"]
    assert out == pytest.approx([3 - 2 ** 0.5, 3 - 0.5 ** 0.5, 3, 3 + 0.5 ** 0.5, 3 + 2 ** 0.5])
    # nine 1s and a 5: mean 1.4, std 1.2 -> z = -1/3 for the 1s (2.667) and 3 for the 5 (6, clipped to 5)
    out = calibrate({"e": [1.0] * 9 + [5.0]}, "zscore")["e"]
    assert out == pytest.approx([3 - 1 / 3] * 9 + [5.0])
    # no spread: the judge told them apart not at all
    assert calibrate({"e": [4.0, 4.0, 4.0]}, "zscore") == {"e": [3.0, 3.0, 3.0]}


def test_calibrate_turns_the_weak_judge_into_pairs():
    # The 135M G-Eval judge: reflective 2.03, dismissive 1.82, harmful 1.78. Raw gaps are all < 1.0.
    # mean 1.87667, population std 0.10964 -> z = 1.398, -0.517, -0.882
    out = calibrate({"empathy": [2.03, 1.82, 1.78]}, "zscore")["empathy"]
    assert out == pytest.approx([4.3984, 2.4832, 2.1184], abs=1e-4)
    assert out[0] - out[1] >= 1.0 and out[0] - out[2] >= 1.0
    assert calibrate({"empathy": [2.03, 1.82, 1.78]}, "rank") == {"empathy": [5.0, 3.0, 1.0]}


def test_calibrate_rank_ties_averaged():
    # ranks 0, 1.5, 1.5, 3 over n-1 = 3 -> 1, 3, 3, 5
    assert calibrate({"e": [1.0, 2.0, 2.0, 3.0]}, "rank") == {"e": [1.0, 3.0, 3.0, 5.0]}
    # unsorted input, a tie at the top: ranks 3.5, 0, 3.5, 1, 2 over 4 -> 4.5, 1, 4.5, 2, 3
    assert calibrate({"e": [9, 1, 9, 2, 5]}, "rank") == {"e": [4.5, 1.0, 4.5, 2.0, 3.0]}
    assert calibrate({"e": [3.7]}, "rank") == {"e": [3.0]}


def test_calibrate_is_per_principle_and_checks_its_input():
    out = calibrate({"a": [1.0, 5.0], "b": [4.0, 2.0]}, "rank")
    assert out == {"a": [1.0, 5.0], "b": [5.0, 1.0]}
    with pytest.raises(ValueError, match="different numbers of scores"):
        calibrate({"a": [1.0, 2.0], "b": [1.0]}, "zscore")
    with pytest.raises(ValueError, match="non-finite"):
        calibrate({"a": [1.0, float("nan")]}, "rank")
    with pytest.raises(ValueError, match="unknown method"):
        calibrate({"a": [1.0]}, "minmax")


# --- G-Eval -----------------------------------------------------------------------------------------------

def test_expected_score():
    assert expected_score([0, 0, 0, 1, 0]) == 4.0
    assert expected_score([0.2] * 5) == pytest.approx(3.0)
    # 0.1*1 + 0.2*2 + 0.4*3 + 0.2*4 + 0.1*5 = 3.0; then a skewed one: 0.5*1 + 0.5*2 = 1.5
    assert expected_score([0.1, 0.2, 0.4, 0.2, 0.1]) == pytest.approx(3.0)
    assert expected_score([0.5, 0.5, 0, 0, 0]) == pytest.approx(1.5)
    # raw probabilities summing to 0.5 are renormalised over the digits: (0.25*1 + 0.25*5) / 0.5 = 3
    assert expected_score([0.25, 0, 0, 0, 0.25]) == pytest.approx(3.0)
    for bad in ([0.5, 0.5], [0, 0, 0, 0, 0], [1.2, -0.2, 0, 0, 0]):
        with pytest.raises(ValueError):
            expected_score(bad)


def test_geval_prefix_shared_and_suffixes_end_with_cue():
    prompt = load_prompt("geval_v1")
    prefix, suffixes = geval_prompt(P, prompt, SPEECH, RESPONSE)
    assert [m["role"] for m in prefix] == ["system", "user"]
    assert SPEECH in prefix[1]["content"] and RESPONSE in prefix[1]["content"]
    assert len(suffixes) == len(P)
    for p, s in zip(P, suffixes):
        assert s.endswith(SCORE_CUE)
        assert s.startswith("\n\nPrinciple: ")  # appended to the user message, after a blank line
        assert p.name in s and p.definition in s and p.rubric[3] in s
        assert SPEECH not in s  # the per-principle part holds nothing shared
    # The prefix depends only on the speech and response, never on the principle set.
    two = load_principles().principles[:2]
    other = type(P)(version="x", principles=two)
    assert geval_prompt(other, prompt, SPEECH, RESPONSE)[0] == prefix


def test_geval_scores_maps_rows_to_keys():
    rows = [[0, 0, 0, 0, 1]] * 6 + [[1, 0, 0, 0, 0]]
    assert geval_scores(P, rows) == {k: 5.0 for k in PRINCIPLE_KEYS[:6]} | {"staging": 1.0}
    with pytest.raises(ValueError):
        geval_scores(P, rows[:3])


def test_geval_needs_a_suffix_section():
    with pytest.raises(UserError, match=r"judge_v1.txt: judge mode 'geval' needs a G-Eval prompt .*geval_v1"):
        scorer("judge_v1", mode="geval")
