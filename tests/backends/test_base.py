"""Cache keys: stores written by earlier versions must keep hitting their cached answers.

The hex digests below were computed by the original ``cache_key`` (one ``json.dumps(sort_keys=True,
ensure_ascii=False, separators=(",", ":"))`` of the whole payload, then blake2b-128). Any change to how a
request is encoded must reproduce them byte for byte, or come with a numbered migration of the calls table.
"""

from __future__ import annotations

import hashlib
import json
import random
from dataclasses import asdict

import pytest
from request_cases import CASES, SCHEMA, random_text, random_value

from psychocounsel.backends.base import ChatRequest, Sampling, cache_key, json_string

PINNED = {
    "plain": "b01041b15a6f370ef4923c77945a6806",
    "non_ascii": "522945895a9e26ea387f30bb06df803a",
    "escapes": "2cf5de779eee67ea8934155f6c77ace1",
    "floats": "3f57a32bad94302e0a1f276c1e054c05",
    "schema": "98c0fbac781b00097f6319360240412b",
    "empty": "4234933a40b255e537e3bf7595f639f6",
}


def original_cache_key(identity: dict, request: ChatRequest) -> str:
    """The first implementation, verbatim: the reference every later encoding must equal."""
    payload = {"backend": identity, "model": request.model, "messages": request.messages,
               "sampling": asdict(request.sampling), "response_format": request.response_format, "tag": request.tag}
    blob = json.dumps(payload, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.blake2b(blob.encode(), digest_size=16).hexdigest()


@pytest.mark.parametrize("name", sorted(CASES))
def test_cache_key_is_pinned_for_stores_written_before(name):
    identity, request = CASES[name]
    assert cache_key(identity, request) == PINNED[name]


@pytest.mark.parametrize("name", sorted(CASES))
def test_cache_key_is_stable_when_the_request_is_asked_again(name):
    # the second call reads the request's cached encoding and the memo of its settings
    identity, request = CASES[name]
    assert cache_key(identity, request) == cache_key(identity, request) == PINNED[name]


def test_every_code_point_is_escaped_as_json_dumps_does():
    """JSON string escaping is per character, so equality on every code point proves it for every string."""
    for start in range(0, 0x110000, 4096):
        chars = [chr(c) for c in range(start, min(start + 4096, 0x110000)) if not 0xD800 <= c <= 0xDFFF]
        for ch in chars:
            want = json.dumps(ch, ensure_ascii=False).encode()
            if json_string(ch) != want:
                raise AssertionError(f"U+{ord(ch):04X}: {json_string(ch)!r} != {want!r}")
        joined = "".join(chars)
        assert json_string(joined) == json.dumps(joined, ensure_ascii=False).encode()


def test_a_lone_surrogate_fails_as_before():
    # json.dumps(...).encode() refused it; the key must not quietly become something new
    request = ChatRequest.chat("m", [{"role": "user", "content": "bad \ud800 half"}])
    with pytest.raises(UnicodeEncodeError):
        original_cache_key({}, request)
    with pytest.raises(UnicodeEncodeError):
        cache_key({}, request)


def test_cache_key_equals_the_original_on_a_random_corpus():
    """Non-ASCII text, control characters, floats json and orjson write differently, NaN and infinities
    (which orjson writes as null), integers past 64 bits and nested dicts in every part of the key."""
    rng = random.Random(0)
    for _ in range(3000):
        messages = [{"role": rng.choice(["system", "user", "assistant", random_text(rng)]), "content": random_text(rng)}
                    for _ in range(rng.randint(0, 3))]
        sampling = Sampling(rng.choice([0.0, 0.7, 1, 1e-05, 2.0, float("nan")]), rng.choice([1.0, 0.95, 1e-7]),
                            rng.choice([64, 256, 2**70]), rng.choice([None, 0, 7, 2**63 - 1, 2**64]))
        fmt = rng.choice([None, SCHEMA, random_value(rng)])
        identity = rng.choice([{"type": "openai", "family": "self-hosted"}, {1: "int keys", 2: "json allows"},
                               random_value(rng)])
        request = ChatRequest.chat(random_text(rng), messages, sampling=sampling, response_format=fmt,
                                   tag=random_text(rng))
        assert cache_key(identity, request) == original_cache_key(identity, request), (identity, request)


def test_nan_and_null_settings_never_share_a_memoised_text():
    # orjson writes both as null; json wrote NaN and null, so the keys always differed
    request = ChatRequest.chat("m", [{"role": "user", "content": "x"}])
    for first, second in [(None, float("nan")), (float("inf"), None)]:
        a, b = cache_key({"x": first}, request), cache_key({"x": second}, request)
        assert a != b
        assert a == original_cache_key({"x": first}, request) and b == original_cache_key({"x": second}, request)


def test_values_json_cannot_encode_fail_as_before():
    request = ChatRequest.chat("m", [{"role": "user", "content": "x"}], response_format={"when": object()})
    with pytest.raises(TypeError):
        cache_key({}, request)
