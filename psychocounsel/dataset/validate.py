"""What makes a therapist reply unusable, checked before any judge sees it: the one check behind the
data pipeline's generate stage and the evaluation's, both through ``Session.generate``.

A reply is refused, as a recorded failure with its reason, never a candidate, when:

- it was cut by the token limit (``finish_reason`` "length"): a cut reply reads as a worse one to the judge
  and, as a chosen answer, teaches a policy to stop mid-sentence. With ``truncated: flag`` it is kept and
  marked instead, and counted in ``status`` and ``stats``;
- it holds control characters other than newline and tab, a lone surrogate or U+FFFD (a server or a
  decoder broke it: a reply starting with a NUL byte once became the chosen answer of 73 training pairs);
- nothing is left after stripping whitespace;
- it echoes the prompt: half or more of the client's speech, or of the system prompt, copied verbatim, or
  a reply made (80% or more) of text copied from them;
- a language is configured and the reply is plainly written in another one.

``CHECKS_VERSION`` names these rules; a stored response checked under other rules (or none, in a store
written before them) is checked again from what the store holds, without a call.
"""

from __future__ import annotations

import json
import re
import unicodedata
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Literal, Protocol

from ..backends.base import Completion

CHECKS_VERSION = "replies-v1"
INVALID = "invalid reply: "  # the head of every invalid reply's recorded reason (``status`` counts by it)
TRUNCATED = "truncated: "
TruncatedPolicy = Literal["fail", "flag"]

# Echo: share of a prompt's word 6-grams found in the reply. Six words in a row is a quotation rather than a
# shared phrase ("I hear that you feel"); a reply that reflects the client's words keeps to a few of them,
# while one that pastes the speech back covers nearly all (the fake server's old echo: 100%).
ECHO_NGRAM = 6
ECHO_SHARE = 0.5  # "most of the speech / system prompt"
COPIED_SHARE = 0.8  # of the reply's own 6-grams: a reply that is a cut-down copy of the prompt
# Language: a reply shorter than this many words is not judged (too little to tell a language by).
LANGUAGE_MIN_WORDS = 8

# Function words: a reply in a language uses many of them, and few of another language's. Enough to tell
# the wrong-language replies of a multilingual model apart; not a general language identifier.
STOPWORDS: dict[str, frozenset[str]] = {
    "en": frozenset("the and you to of is that it in your are what this with for be have i me my not can do "
                    "how feel it's you're was but they about when so if or there".split()),
    "es": frozenset("el la los las que de y en un una es no por para con te tu lo se me qué cómo está estás "
                    "eso esto muy pero más sientes como del al ti".split()),
    "fr": frozenset("le la les de des et est que vous tu je un une pour pas ne en avec ce qui dans votre "
                    "vos êtes sur au du il elle mais très".split()),
    "de": frozenset("der die das und ist nicht ich du sie es ein eine zu mit den dem auf für wie was dich "
                    "dir ihr sich auch bei oder aber sehr".split()),
    "it": frozenset("il la che di è non un una per con ti mi sei come cosa sono gli le del della questo ma "
                    "molto anche hai nel".split()),
    "pt": frozenset("o a os as que de e não um uma para com você é se em do da como isso muito mas está "
                    "sua seu no na".split()),
    "nl": frozenset("de het een en is niet ik je jij dat van op voor met wat hoe zijn er maar ook bent "
                    "jouw heb naar".split()),
}
LANGUAGES = tuple(STOPWORDS)
_WORD = re.compile(r"\w+(?:'\w+)?")
_LATIN = re.compile(r"[A-Za-z\u00c0-\u024f]")


class ReplyRules(Protocol):
    """What a config says about replies (``TherapistsConfig``, the evaluation's ``RepliesConfig``)."""

    truncated: TruncatedPolicy
    language: str | None
    max_attempts: int


@dataclass(frozen=True)
class ReplyCheck:
    """The verdict on one reply: ``problem`` is None when it may be judged; ``truncated`` is set either way.

    An invalid reply (``invalid``) is worth asking again with a new seed; a reply refused as truncated is
    not: the same cap cuts the next one too (raise ``max_tokens``: that makes new responses anyway).
    """

    problem: str | None
    truncated: bool
    finish_reason: str | None

    @property
    def ok(self) -> bool:
        return self.problem is None

    @property
    def invalid(self) -> bool:
        return self.problem is not None and self.problem.startswith(INVALID)


def finish_reason(c: Completion) -> str | None:
    """Why the model stopped: as the backend reported it, or, for a reply answered from the call cache
    (which keeps the raw body, not the field), from the raw OpenAI-style body."""
    if c.finish_reason:
        return c.finish_reason
    raw = c.raw
    if raw and raw.startswith("{"):
        try:
            choices = json.loads(raw).get("choices")
            reason = choices[0].get("finish_reason") if choices else None
        except (ValueError, AttributeError, TypeError, IndexError, KeyError):
            return None
        return reason if isinstance(reason, str) else None
    return None


def is_truncated(reason: str | None, completion_tokens: int | None, max_tokens: int) -> bool:
    """Cut by the token limit: the backend said so, or (no reason known: a local model's cached reply) it
    used every token it was allowed."""
    if reason is not None:
        return reason == "length"
    return bool(completion_tokens) and completion_tokens >= max_tokens  # type: ignore[operator]


# Characters no model writes on purpose: C0/C1 controls but newline and tab (Unicode category Cc), lone
# surrogates, U+FFFD (a decoder's replacement: broken bytes upstream) and the non-characters U+FFFE/FFFF.
_BAD = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\ud800-\udfff\ufffd\ufffe\uffff]")


def bad_character(text: str) -> str | None:
    """The first character no model writes on purpose, described, or None."""
    m = _BAD.search(text)
    if m is None:
        return None
    ch, i = m.group(), m.start()
    if unicodedata.category(ch) == "Cc":
        return f"control character U+{ord(ch):04X} at {i}"
    if unicodedata.category(ch) == "Cs":
        return f"lone surrogate U+{ord(ch):04X} at {i}"
    return f"replacement or non-character U+{ord(ch):04X} at {i} (broken decoding upstream)"


def _words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def _grams(words: list[str], n: int) -> set[tuple[str, ...]]:
    return {tuple(words[i:i + n]) for i in range(len(words) - n + 1)}


@lru_cache(maxsize=64)  # a run has a handful of system prompts, checked against every reply
def _prompt_grams(text: str) -> frozenset[tuple[str, ...]]:
    words = _words(text)
    return frozenset(_grams(words, min(ECHO_NGRAM, len(words)))) if words else frozenset()


def _share(source: frozenset[tuple[str, ...]] | set[tuple[str, ...]], reply: set[tuple[str, ...]]) -> float:
    return len(source & reply) / len(source) if source else 0.0


def echo(reply: str, speech: str, system: str | None, words: list[str] | None = None) -> str | None:
    """How the reply echoes its prompt, or None (``words``: the reply's, when already split)."""
    words = _words(reply) if words is None else words
    own = _grams(words, ECHO_NGRAM)
    speech_words = _words(speech)
    n_speech = min(ECHO_NGRAM, len(speech_words))
    # a speech of no words has nothing to copy; _grams(..., 0) would be {()}, which every reply "contains"
    speech_grams = _grams(speech_words, n_speech) if speech_words else set()
    share = _share(speech_grams, own if n_speech == ECHO_NGRAM else _grams(words, n_speech))
    if share >= ECHO_SHARE:
        return f"echoes the client's speech ({share:.0%} of it verbatim)"
    sys_grams = _prompt_grams(system) if system else frozenset()
    if sys_grams:
        n_sys = len(next(iter(sys_grams)))  # a system prompt under 6 words is one n-gram, the whole of it
        share = _share(sys_grams, own if n_sys == ECHO_NGRAM else _grams(words, n_sys))
        if share >= ECHO_SHARE:
            return f"echoes the system prompt ({share:.0%} of it verbatim)"
    if len(words) >= 2 * ECHO_NGRAM:
        prompt = speech_grams if n_speech == ECHO_NGRAM else _grams(speech_words, ECHO_NGRAM)
        share = len(own & (prompt | sys_grams)) / len(own)
        if share >= COPIED_SHARE:
            return f"repeats the prompt ({share:.0%} of the reply is copied from it)"
    return None


# word -> the languages whose function words include it, so a text's words are looked up once
_LANGS_OF: dict[str, tuple[str, ...]] = {}
for _lang, _stop in STOPWORDS.items():
    for _w in _stop:
        _LANGS_OF[_w] = _LANGS_OF.get(_w, ()) + (_lang,)
_LETTER = re.compile(r"[^\W\d_]")


def _stopword_hits(words: list[str]) -> dict[str, int]:
    hits = dict.fromkeys(STOPWORDS, 0)
    for w in words:
        for lang in _LANGS_OF.get(w, ()):
            hits[lang] += 1
    return hits


def _language(text: str, words: list[str]) -> tuple[str | None, dict[str, int]]:
    letters = 0 if text.isascii() else len(_LETTER.findall(text))  # ASCII text is Latin script
    if letters >= 20 and len(_LATIN.findall(text)) < 0.5 * letters:
        return "non-latin", {}
    if len(words) < LANGUAGE_MIN_WORDS:
        return None, {}
    hits = _stopword_hits(words)
    best = max(hits, key=hits.__getitem__)
    return (best if hits[best] >= 3 else None), hits


def language_of(text: str) -> str | None:
    """The language whose function words the text uses most (of ``LANGUAGES``), "non-latin" for text
    mostly in another script, or None when there is too little to tell."""
    return _language(text, _words(text))[0]


def wrong_language(text: str, language: str, words: list[str] | None = None) -> str | None:
    """The language the text is plainly written in, when it is not ``language``: another language's function
    words outnumber the expected one's more than twice (shared words such as "de" count for both)."""
    found, hits = _language(text, _words(text) if words is None else words)
    if found is None or found == language:
        return None
    if found == "non-latin":
        return found
    return found if hits[found] > 2 * hits[language] else None


def check_reply(text: str, *, speech: str, system: str | None, finish: str | None,
                completion_tokens: int | None, max_tokens: int, rules: Any) -> ReplyCheck:
    """The verdict on one therapist reply (``text`` as the model wrote it) to ``speech`` under ``system``.

    ``rules`` carries ``truncated`` ("fail": a cut reply is a failure; "flag": kept and marked) and
    ``language`` (an ISO 639-1 code of ``LANGUAGES``, or None: any language).
    """
    truncated = is_truncated(finish, completion_tokens, max_tokens)
    bad = bad_character(text)
    if bad:
        return ReplyCheck(f"{INVALID}{bad}", truncated, finish)
    stripped = text.strip()
    if not stripped:
        return ReplyCheck(f"{INVALID}empty", truncated, finish)
    words = _words(stripped)
    how = echo(stripped, speech, system, words)
    if how:
        return ReplyCheck(f"{INVALID}{how}", truncated, finish)
    if rules.language:
        other = wrong_language(stripped, rules.language, words)
        if other:
            return ReplyCheck(f"{INVALID}written in {other}, not {rules.language}", truncated, finish)
    if truncated and rules.truncated == "fail":
        why = finish if finish is not None else f"inferred: {completion_tokens} tokens used"
        return ReplyCheck(f"{TRUNCATED}cut at max_tokens={max_tokens} (finish_reason {why}); raise the "
                          "profile's sampling.max_tokens, or set truncated: flag to keep cut replies",
                          truncated, finish)
    return ReplyCheck(None, truncated, finish)


def checks_key(rules: Any) -> str:
    """The rules a stored verdict was reached under: a change of any of them checks stored replies again."""
    return f"{CHECKS_VERSION}|truncated={rules.truncated}|language={rules.language}"
