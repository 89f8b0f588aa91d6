"""Requests that exercise every corner of JSON encoding, shared by the cache-key and request-summary tests:
non-ASCII text, every kind of escape, floats that json and orjson write differently, nested dicts."""

from __future__ import annotations

import random

from psychocounsel.backends.base import ChatRequest, Sampling

SCHEMA = {"type": "json_schema", "json_schema": {"name": "verdict", "strict": True, "schema": {
    "type": "object", "required": ["empathy", "rationale"], "additionalProperties": False,
    "properties": {"rationale": {"type": "string"}, "empathy": {"type": "integer", "minimum": 1, "maximum": 5}}}}}

CASES = {
    "plain": ({"type": "openai", "family": "self-hosted"}, ChatRequest.chat(
        "gpt-4o", [{"role": "system", "content": "You are a therapist."},
                   {"role": "user", "content": "I feel tired all the time."}], tag="therapist_v1")),
    "non_ascii": ({"type": "openai", "family": "api.openai.com"}, ChatRequest.chat(
        "m", [{"role": "user", "content": "Je me sens épuisée… 我很累 😔 \u2028 «ok»"}],
        sampling=Sampling(1.0, 0.95, 512, 7), tag="v2")),
    "escapes": ({"type": "openai", "family": "self-hosted"}, ChatRequest.chat(
        "m", [{"role": "user", "content": 'quote " back \\ slash / tab\t nl\n cr\r bell\x07 nul\x00 del\x7f esc\x1b'}],
        tag="")),
    # 1e-05 is where orjson ("0.00001") and json ("1e-05") write the same float differently
    "floats": ({"type": "openai", "family": "self-hosted"}, ChatRequest.chat(
        "m", [{"role": "user", "content": "x"}], sampling=Sampling(1e-05, 0.1 + 0.2, 64, 2**40), tag="t")),
    "schema": ({"type": "local", "fingerprint": "ab12", "dtype": "bfloat16", "ünï": [1, 2.5, None, True]},
               ChatRequest.chat("judge", [{"role": "system", "content": "Rate the response."},
                                          {"role": "user", "content": "Speech: …\nResponse: ok"}],
                                sampling=Sampling(0.0, 1.0, 400, 3), response_format=SCHEMA, tag="judge_v3#1")),
    "empty": ({}, ChatRequest(model="", messages=())),
}

def random_text(rng: random.Random) -> str:
    pools = ["abc xyz", "\"\\/\b\f\n\r\t\x00\x1f\x7f", "éü…«»\u2028\u2029", "我很累", "😔🙂", "null true 1e-05"]
    return "".join(rng.choice(rng.choice(pools)) for _ in range(rng.randint(0, 40)))


def random_value(rng: random.Random, depth: int = 0):
    kinds = ["str", "int", "float", "bool", "none"] + (["dict", "list"] if depth < 3 else [])
    kind = rng.choice(kinds)
    if kind == "str":
        return random_text(rng)
    if kind == "int":
        return rng.choice([0, 1, -7, 2**40, 2**70, -(2**65)])  # past 64 bits orjson refuses: the key must not care
    if kind == "float":
        return rng.choice([0.0, -0.0, 0.5, 1e-05, 1e16, 1e-7, 0.1 + 0.2, 123456789.125, 1e300, float("inf"),
                           float("-inf"), float("nan")])
    if kind == "bool":
        return rng.choice([True, False])
    if kind == "none":
        return None
    if kind == "list":
        return [random_value(rng, depth + 1) for _ in range(rng.randint(0, 4))]
    return {random_text(rng) or "k": random_value(rng, depth + 1) for _ in range(rng.randint(0, 4))}
