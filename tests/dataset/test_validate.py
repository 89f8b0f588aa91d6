"""The reply checks every generated reply passes before a judge sees it, on replies worked by hand."""

from types import SimpleNamespace
from typing import get_args

import pytest

from psychocounsel.backends.base import Completion
from psychocounsel.config import Language
from psychocounsel.dataset.validate import (LANGUAGES, bad_character, check_reply, echo, finish_reason, is_truncated,
                                            language_of, wrong_language)

SPEECH = ("I have been feeling so low for months now. I can't get out of bed and nothing I used to love feels "
          "worth it anymore.")
SYSTEM = "You are a licensed counselor. Reflect what the client feels, then ask one open question."
GOOD = "It sounds like these months have worn you down. What used to bring you joy that feels far away now?"


def rules(truncated="fail", language=None):
    return SimpleNamespace(truncated=truncated, language=language, max_attempts=2)


def check(text, finish="stop", tokens=20, max_tokens=256, **kw):
    return check_reply(text, speech=SPEECH, system=SYSTEM, finish=finish, completion_tokens=tokens,
                       max_tokens=max_tokens, rules=rules(**kw))


def test_a_good_reply_passes():
    c = check(GOOD)
    assert c.ok and not c.truncated and c.finish_reason == "stop"


@pytest.mark.parametrize("text, reason", [
    ("\x00" + GOOD, "control character U+0000 at 0"),
    (GOOD + "\x1b[0m", "control character U+001B"),
    (GOOD.replace("joy", "jo\ufffd"), "U+FFFD"),
    ("  \n\t ", "empty"),
    ("", "empty"),
])
def test_garbled_and_empty_replies_are_invalid(text, reason):
    c = check(text)
    assert not c.ok and c.invalid and c.problem.startswith("invalid reply: ") and reason in c.problem


def test_newlines_tabs_and_emoji_are_fine():
    assert bad_character("Para one.\n\n\tPara two 🙂 — é") is None


def test_echoes_of_the_speech_or_the_system_prompt():
    assert echo("You said: " + SPEECH, SPEECH, SYSTEM).startswith("echoes the client's speech (100%")
    assert echo(SPEECH.upper(), SPEECH, SYSTEM).startswith("echoes the client's speech")  # case aside
    assert echo("Sure. " + SYSTEM + " Hello!", SPEECH, SYSTEM).startswith("echoes the system prompt")
    # a reflection that quotes a few of the client's words is a reply, not an echo
    assert echo('You said "nothing I used to love feels worth it". That sounds lonely. What changed?',
                SPEECH, SYSTEM) is None


def test_an_empty_or_wordless_speech_is_echoed_by_no_reply():
    # nothing to copy: a reply to an empty opening (a session's first therapist turn may have none) is no echo
    for speech in ("", "   ", "...!?"):
        assert echo(GOOD, speech, SYSTEM) is None
        assert echo(GOOD, speech, None) is None
        assert echo(GOOD, SPEECH, speech) is None  # nor a wordless system prompt
    assert check_reply(GOOD, speech="", system=SYSTEM, finish="stop", completion_tokens=20, max_tokens=256,
                       rules=rules()).ok


def test_a_reply_copied_from_part_of_the_prompt_is_an_echo():
    half = " ".join(SPEECH.split()[:12])  # under half of the speech, but all of the reply
    assert echo(half, SPEECH, SYSTEM).startswith("repeats the prompt (100%")


def test_truncation_fails_by_default_and_is_flagged_on_request():
    c = check(GOOD, finish="length")
    assert not c.ok and not c.invalid and c.truncated and c.problem.startswith("truncated: cut at max_tokens=256")
    c = check(GOOD, finish="length", truncated="flag")
    assert c.ok and c.truncated


def test_finish_reason_from_the_backend_or_the_cached_raw_body():
    assert finish_reason(Completion("x", finish_reason="length")) == "length"
    raw = '{"choices": [{"message": {"content": "x"}, "finish_reason": "length"}]}'
    assert finish_reason(Completion("x", raw=raw)) == "length"  # a cache hit keeps only the raw body
    assert finish_reason(Completion("x", raw="x")) is None  # a local model's cached text
    assert is_truncated(None, 96, 96) and not is_truncated(None, 40, 96) and not is_truncated("stop", 96, 96)


def test_language_is_checked_only_when_configured():
    spanish = "Entiendo que te sientes muy cansado y que no es fácil para ti. ¿Qué es lo que más te pesa hoy?"
    assert language_of(spanish) == "es" and language_of(GOOD) == "en"
    assert check(spanish).ok
    assert check(spanish, language="en").problem == "invalid reply: written in es, not en"
    assert wrong_language("我最近睡不好，工作压力很大，每天晚上都在想明天的事情，感觉自己快要撑不住了。", "en") == "non-latin"
    assert wrong_language("Okay.", "en") is None  # too short to tell
    assert wrong_language(GOOD + " Gracias.", "en") is None  # a word of another language is not a language


def test_every_configurable_language_has_function_words():
    assert set(get_args(Language)) == set(LANGUAGES)
