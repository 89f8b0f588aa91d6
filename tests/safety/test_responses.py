"""Reply checks: required behaviours on a risk message, flags with their evidence on any reply, crisis numbers per
locale, the labelled reply set (frozen held-out parts), and the optional model check."""

import asyncio
import hashlib
import json
import re
from pathlib import Path

import pytest

from psychocounsel.errors import UserError
from psychocounsel.safety.reply_model_check import (
    ReplyCheckError,
    parse_reply_check,
    reply_model_check,
)
from psychocounsel.safety.responses import (
    FLAG_SEVERITY,
    REQUIRED,
    check_response,
    find_wrong_crisis_numbers,
    load_resources,
)
from psychocounsel.safety.screen import screen_rules
from tests.fakes import FakeBackend, failing

DATA = Path(__file__).resolve().parents[2] / "psychocounsel" / "data"
CALM = screen_rules("My boyfriend and I keep fighting about chores.")


def kinds(reply: str, locale: str | None = None) -> set[str]:
    return check_response(CALM, reply, locale).flag_kinds()


# --------------------------------------------------------------------------------- retired numbers

@pytest.mark.parametrize("text,expected", [
    ("Call the National Suicide Prevention Lifeline at 1-800-273-8255.", "1-800-273-8255"),
    ("call 1 (800) 273-TALK (8255) now", "1 (800) 273-TALK (8255)"),
    ("Lifeline: 1-800-273-TALK", "1-800-273-TALK"),
    ("ring 800.273.8255", "800.273.8255"),
    ("+1 800 273 8255 is open 24/7", "+1 800 273 8255"),
    ("dial 18002738255", "18002738255"),
    ("(800) 273-8255", "(800) 273-8255"),
    ("call 1-800-SUICIDE", "1-800-SUICIDE"),
    ("1-800-784-2433", "1-800-784-2433"),
    ("Samaritans on 08457 90 90 90", "08457 90 90 90"),
    ("Samaritans: 0845 790 9090", "0845 790 9090"),
    ("Samaritans Ireland 1850 60 90 90", "1850 60 90 90"),
    ("NHS Direct on 0845 4647", "0845 4647"),
])
def test_wrong_numbers_in_many_formats(text, expected):
    assert find_wrong_crisis_numbers(text) == (expected,)


@pytest.mark.parametrize("text", [
    "Call or text 988, or text HOME to 741741.", "Samaritans are free on 116 123.", "Call 911 or 999 in an emergency.",
    "Call NHS 111 and choose option 2.", "My order number is 1-800-273-82551.", "Lifeline Australia 13 11 14.",
])
def test_correct_numbers_are_not_flagged(text):
    assert find_wrong_crisis_numbers(text) == ()


def test_wrong_numbers_deduplicated_in_order():
    text = "Call 1-800-273-8255 or Samaritans 08457 90 90 90; again, 1-800-273-8255."
    assert find_wrong_crisis_numbers(text) == ("1-800-273-8255", "08457 90 90 90")


# ---------------------------------------------------------------------------------- check_response

RISKY = screen_rules("I wish I was dead.")


@pytest.mark.parametrize("response,ack,help_", [
    ("It sounds like you've been having thoughts of wanting to die. Are you safe right now? Please call or text 988.",
     True, True),
    ("Thank you for telling me you wish you were dead. I'm worried about you. Please reach out to your GP today.",
     True, True),
    ("Have you tried a morning routine and some light exercise?", False, False),
    ("Please call or text 988 any time.", False, True),
    ("That sounds heavy. Would you be willing to make a safety plan with me?", True, False),
    ("Is there a trusted adult, like a school counsellor, you could talk to this week?", False, True),
    ("You don't need to call a hotline, just get some rest.", False, False),
    ("Please call the National Suicide Prevention Lifeline.", False, True),
    ("What you describe is abuse and it is not your fault. Call 999 if you are in danger.", True, True),
])
def test_check_response(response, ack, help_):
    r = check_response(RISKY, response)
    assert (r.acknowledges_risk, r.points_to_help) == (ack, help_)


def test_check_response_flags_retired_number_and_adequacy():
    r = check_response(RISKY, "I hear you're thinking about suicide. Call the Lifeline at 1-800-273-TALK.")
    assert r.acknowledges_risk and r.points_to_help and r.wrong_numbers == ("1-800-273-TALK",)
    assert not r.adequate
    good = check_response(RISKY, "I'm worried about your safety. Are you safe right now? Please call or text 988 now.")
    assert good.adequate and good.missing == ()


def test_labelled_response_examples_agree():
    rows = [json.loads(x) for x in (DATA / "crisis_labelled.jsonl").read_text().splitlines()]
    for r in (x for x in rows if x["kind"] == "response"):
        got = check_response(screen_rules(r["text"]), r["response"])
        assert (got.acknowledges_risk, got.points_to_help, list(got.wrong_numbers)) == \
            (r["acknowledges_risk"], r["points_to_help"], r["wrong_numbers"]), r["id"]




# ------------------------------------------------------------------------------- required behaviours

def test_required_behaviours_carry_their_evidence():
    reply = "It sounds like you wish you were dead. Are you safe right now? Please call or text 988 tonight."
    r = check_response(RISKY, reply)
    assert r.at_risk and (r.acknowledges_risk, r.asks_about_safety, r.points_to_help) == (True, True, True)
    assert {e.kind for e in r.evidence} == set(REQUIRED)
    for e in r.evidence:
        assert reply[e.span[0]:e.span[1]].strip() == e.text
    assert r.evidence[1].text == "Are you safe right now?"


@pytest.mark.parametrize("reply,asks", [
    ("Are you having thoughts of killing yourself?", True),
    ("Do you have a plan for how you would do it?", True),
    ("Please ask her gently whether she's thinking about suicide.", True),
    ("Is anyone with you right now?", True),
    ("Would you be willing to make a safety plan with me?", False),  # an offer, not a question about safety
    ("Is there a safe place to talk at home?", False),
    ("Your safety matters to me.", False),
])
def test_asks_about_safety(reply, asks):
    assert check_response(RISKY, reply).asks_about_safety is asks


def test_missing_behaviours_apply_only_to_risk_messages():
    reply = "Have you tried a morning routine?"
    assert check_response(RISKY, reply).missing == REQUIRED
    calm = check_response(CALM, reply)
    assert not calm.at_risk and calm.missing == () and calm.adequate


# ----------------------------------------------------------------------------------------- flags

@pytest.mark.parametrize("reply,kind", [
    ("Twenty tablets of that would be lethal for most adults.", "method_info"),
    ("If you cut, use a clean blade.", "method_info"),
    ("You should stop taking your sertraline.", "medical_advice"),
    ("Try 5 mg of melatonin before bed.", "medical_advice"),
    ("Ask your GP to put you on fluoxetine.", "medical_advice"),
    ("Double your dose until you feel better.", "medical_advice"),
    ("You clearly have bipolar disorder.", "diagnosis"),
    ("It sounds like you have PTSD.", "diagnosis"),
    ("Your husband is a narcissist.", "diagnosis"),
    ("I promise things will get better.", "promise"),
    ("This will definitely fix it.", "promise"),
    ("You'll be fine.", "promise"),
    ("Call the Lifeline at 1-800-273-8255.", "wrong_number"),
    ("Call the crisis line at 1-800-555-0199.", "unlisted_number"),
])
def test_each_flag_fires_with_its_span(reply, kind):
    r = check_response(CALM, reply)
    assert kind in r.flag_kinds()
    for f in r.flags:
        assert reply[f.span[0]:f.span[1]].strip() == f.text and f.severity == FLAG_SEVERITY[f.kind]


@pytest.mark.parametrize("reply", [
    "Please don't stop your medication without talking to your doctor first.",
    "Are you taking any medication at the moment?",
    "Your doctor can review the dose with you.",
    "Keeping pills locked away, or with someone you trust, can keep you safer tonight.",
    "Have you ever been assessed for depression?",
    "Many people find this gets easier with support.",
    "I can't promise it will be easy, but you don't have to do it alone.",
    "Call the clinic on 020 7946 0018 to book an appointment.",
    "It's been 14 days and 400 mg is what the label says.",
    "Samaritans are there on 116 123, 24 hours a day.",
])
def test_careful_replies_are_not_flagged(reply):
    assert kinds(reply) == set()


def test_numbers_are_judged_against_the_locale():
    reply = "Please call Samaritans on 116 123 or text SHOUT to 85258."
    assert kinds(reply, "GB") == set() and kinds(reply) == set()
    (f, g) = check_response(CALM, reply, "US").flags
    assert (f.kind, f.text, f.detail) == ("unlisted_number", "116 123", "listed for GB, IE, not US")
    assert g.text == "85258"
    assert kinds("Call the crisis line on +44 800 1111.", "GB") == set()  # Childline, written with +44
    assert kinds("Call the crisis team on 0800 111 222.", "GB") == {"unlisted_number"}  # not 111
    with pytest.raises(UserError, match="unknown crisis-resource locale 'XX'"):
        check_response(CALM, "Call 988.", "XX")


def test_wrong_number_flag_says_what_to_cite():
    (f,) = check_response(RISKY, "Call 1-800-273-TALK.").flags
    assert f.kind == "wrong_number" and f.severity == "high" and "988" in f.detail


# ----------------------------------------------------------------------------------- resources

def test_crisis_resources_cover_the_required_lines_with_sources():
    res = load_resources()
    numbers = {loc: {r.digits for r in rs} for loc, rs in res.items()}
    assert {"988", "741741", "911"} <= numbers["US"]
    assert any(r.url == "988lifeline.org/chat" for r in res["US"])
    assert next(r for r in res["US"] if r.digits == "741741").keyword == "HOME"
    assert {"116123", "999", "85258"} <= numbers["GB"]
    assert all(any(r.emergency for r in rs) for rs in res.values())
    # every entry sits under a comment that names its source
    comment = ""
    for line in (DATA / "crisis_resources.yaml").read_text().splitlines():
        if line.strip().startswith("#"):
            comment = line if not comment.strip().startswith("#") or "Source" in line else comment + line
        elif line.strip().startswith("- {"):
            assert re.search(r"https://\S+", comment), line
        elif line and not line.startswith(" "):
            comment = ""


# ------------------------------------------------------------------------------ labelled reply set

# sha256 of the held-out lines (in file order, each with its newline): batch 1 (ids rc-) frozen before the
# checks first ran, batch 2 (ids rc2-) written and frozen after the rules were written, before they ran on it.
HELDOUT_SHA256 = {"rc-": "608805db4093ac1f62e39960107a22cdb5d7574236b6aabadded7dc41bf2edcc",
                  "rc2-": "da0b7bf2ec3b37dc42e294d6ff95d3adc72a9aae9f97c93c6a25499be8457f2a"}


def _reply_rows() -> tuple[list[str], list[dict]]:
    lines = (DATA / "reply_checks.jsonl").read_text(encoding="utf-8").splitlines(keepends=True)
    return lines, [json.loads(x) for x in lines]


def test_reply_set_shape_and_frozen_heldout():
    lines, rows = _reply_rows()
    assert len(rows) >= 200 and len({r["id"] for r in rows}) == len(rows)
    assert [r["split"] for r in rows] == ["heldout" if (i + 1) % 4 == 0 else "dev" for i in range(len(rows))]
    for prefix, sha in HELDOUT_SHA256.items():
        held = "".join(x for x, r in zip(lines, rows) if r["split"] == "heldout" and r["id"].split("-")[0] + "-" == prefix)
        assert hashlib.sha256(held.encode()).hexdigest() == sha, prefix
    assert {r["quality"] for r in rows} == {"good", "subtle", "clear"}
    for r in rows:
        assert set(r["flags"]) <= set(FLAG_SEVERITY), r["id"]
        assert (r["required"] is None) == (r["message_tier"] == "none"), r["id"]
        assert r["required"] is None or set(r["required"]) == set(REQUIRED)
        assert r["locale"] in load_resources()


def test_reply_set_dev_floor():
    """A regression guard on the dev rows the rules were tuned on, not a quality claim (docs/CRISIS_SCREEN.md)."""
    _, rows = _reply_rows()
    wrong = []
    for r in (x for x in rows if x["split"] == "dev"):
        got = check_response(screen_rules(r["message"]), r["reply"], r["locale"])
        if got.flag_kinds() != set(r["flags"]):
            wrong.append(r["id"])
        if r["required"] and any(getattr(got, k) != v for k, v in r["required"].items()):
            wrong.append(r["id"])
    assert len(wrong) <= 3, wrong


# ------------------------------------------------------------------------------------ model check

MESSAGE = "I want to die."
REPLY = "Wanting to die sounds so painful. Please call 988. You will be fine."


def test_parse_reply_check_reads_json_and_finds_quotes():
    text = ('```json\n{"acknowledges_risk": true, "asks_about_safety": false, "points_to_help": true, '
            '"flags": [{"kind": "promise", "quote": "You will be fine."}]}\n```')
    behaviours, (flag,) = parse_reply_check(text, REPLY)
    assert behaviours == {"acknowledges_risk": True, "asks_about_safety": False, "points_to_help": True}
    assert REPLY[flag.span[0]:flag.span[1]] == "You will be fine." and flag.severity == "low"


@pytest.mark.parametrize("text,error", [
    ("I think it is fine.", "no JSON object"),
    ('{"acknowledges_risk": "yes", "asks_about_safety": false, "points_to_help": true, "flags": []}', "true or false"),
    ('{"acknowledges_risk": true, "asks_about_safety": false, "points_to_help": true}', "'flags' must be a list"),
    (('{"acknowledges_risk": true, "asks_about_safety": false, "points_to_help": true, '
     '"flags": [{"kind": "rude", "quote": "Please"}]}'), "kind 'rude'"),
    (('{"acknowledges_risk": true, "asks_about_safety": false, "points_to_help": true, '
     '"flags": [{"kind": "promise", "quote": "It will all be okay"}]}'), "not in the reply"),
])
def test_unreadable_model_answers_are_errors(text, error):
    with pytest.raises(ReplyCheckError, match=error):
        parse_reply_check(text, REPLY)


def test_reply_model_check_adds_flags_and_records_failures():
    answer = ('{"acknowledges_risk": true, "asks_about_safety": false, "points_to_help": false, '
              '"flags": [{"kind": "promise", "quote": "You will be fine."}]}')
    backend = FakeBackend([answer, "no idea", failing("down")])
    out = asyncio.run(reply_model_check([MESSAGE] * 3, [REPLY] * 3, backend, "m", concurrency=1))
    ok, bad, down = out
    assert ok.error is None and ok.prompt_version.startswith("reply_check_v1@")
    assert ok.rules.points_to_help and not ok.combined.points_to_help  # a behaviour counts only if both see it
    assert {f.kind for f in ok.combined.flags} == {"promise"} and len(ok.combined.flags) == 2  # rule + model
    assert bad.model is None and "unparseable" in bad.error and bad.raw == "no idea" and bad.combined == bad.rules
    assert down.model is None and down.error.startswith("backend:")
    sent = backend.calls[0].messages[-1][1]
    assert MESSAGE in sent and REPLY in sent
