"""The stage runner's pieces: the stored request summary, the cached caller and the worker pool."""

from __future__ import annotations

import asyncio
import hashlib
import json
import random

import pytest
from request_cases import CASES, SCHEMA, random_text

from psychocounsel.backends.base import ChatRequest, Completion, Sampling
from psychocounsel.runner import CachedCaller, request_summary, run_pool
from psychocounsel.store import Store, Writer

# What the first implementation stored for the cases of tests/request_cases.py.
PINNED_SUMMARIES = {
    "plain": '{"tag": "therapist_v1", "last": "I feel tired all the time.", "messages_sha": "b82ecd5a84ae28c4", '
             '"sampling": [0.7, 1.0, 256, null], "structured": false}',
    "non_ascii": '{"tag": "v2", "last": "Je me sens épuisée… 我很累 😔 \u2028 «ok»", "messages_sha": "edc0c10f2c374e41", '
                 '"sampling": [1.0, 0.95, 512, 7], "structured": false}',
    "escapes": '{"tag": "", "last": "quote \\" back \\\\ slash / tab\\t nl\\n cr\\r bell\\u0007 nul\\u0000 del\x7f '
               'esc\\u001b", "messages_sha": "545b38370bd00c36", "sampling": [0.7, 1.0, 256, null], '
               '"structured": false}',
    "floats": '{"tag": "t", "last": "x", "messages_sha": "0f75bc7fdae44579", '
              '"sampling": [1e-05, 0.30000000000000004, 64, 1099511627776], "structured": false}',
    "schema": '{"tag": "judge_v3#1", "last": "Speech: …\\nResponse: ok", "messages_sha": "00b7da2e8a5904a6", '
              '"sampling": [0.0, 1.0, 400, 3], "structured": true}',
    "empty": '{"tag": "", "last": "", "messages_sha": "71857576257465c7", '
             '"sampling": [0.7, 1.0, 256, null], "structured": false}',
}


def original_summary(req: ChatRequest) -> str:
    """The first implementation, verbatim."""
    msgs = json.dumps(req.messages, ensure_ascii=False)
    return json.dumps({
        "tag": req.tag,
        "last": req.messages[-1][1] if req.messages else "",
        "messages_sha": hashlib.blake2b(msgs.encode(), digest_size=8).hexdigest(),
        "sampling": [req.sampling.temperature, req.sampling.top_p, req.sampling.max_tokens, req.sampling.seed],
        "structured": req.response_format is not None,
    }, ensure_ascii=False)


@pytest.mark.parametrize("name", sorted(CASES))
def test_request_summary_is_what_earlier_versions_stored(name):
    assert request_summary(CASES[name][1]) == PINNED_SUMMARIES[name]


def test_request_summary_equals_the_original_on_a_random_corpus():
    rng = random.Random(1)
    for _ in range(2000):
        messages = [{"role": rng.choice(["system", "user"]), "content": random_text(rng)}
                    for _ in range(rng.randint(0, 3))]
        req = ChatRequest.chat("m", messages, tag=random_text(rng), response_format=rng.choice([None, SCHEMA]),
                               sampling=Sampling(rng.choice([0.7, 1e-05, float("nan")]), 1.0, 64,
                                                 rng.choice([None, 3, 2**70])))
        assert request_summary(req) == original_summary(req)
        assert json.loads(request_summary(req).replace("NaN", "null"))["last"] == (messages[-1]["content"]
                                                                                  if messages else "")


class CountingBackend:
    """Answers every call with its last message reversed, counting calls."""

    def __init__(self) -> None:
        self.calls = 0

    def identity(self, model=None):
        return {"type": "counting"}

    async def complete(self, req: ChatRequest) -> Completion:
        self.calls += 1
        await asyncio.sleep(0)
        return Completion(text=req.messages[-1][1][::-1], raw="{}", prompt_tokens=3, completion_tokens=2)

    async def aclose(self) -> None:
        pass


def test_cached_caller_pays_each_request_once_across_commits(tmp_path):
    # 7 rows a batch: the second pass finds answers committed, handed to the commit thread, and still buffered
    store = Store(tmp_path / "run.sqlite")
    writer = Writer(store, max_rows=7, max_age_s=3600)
    backend = CountingBackend()
    caller = CachedCaller(store, writer, "b", backend)

    async def one(req: ChatRequest) -> None:
        c, key, _ = await caller.complete(req)
        assert c.text == req.messages[-1][1][::-1] and key == caller.key(req)

    def requests(n: int) -> list[ChatRequest]:
        return [ChatRequest.chat("m", [{"role": "user", "content": f"speech {i % 40}"}]) for i in range(n)]

    asyncio.run(run_pool(iter(requests(40)), one, 16))
    assert backend.calls == 40 and caller.misses == 40
    asyncio.run(run_pool(iter(requests(200)), one, 16))
    assert backend.calls == 40 and caller.hits == 200
    writer.commit()
    rows = store.con.execute("SELECT key, request FROM calls").fetchall()
    assert len(rows) == 40
    assert {json.loads(r[1])["last"] for r in rows} == {f"speech {i}" for i in range(40)}
    store.close()


def test_run_pool_reports_a_bug_once():
    async def boom(item: int) -> None:
        raise RuntimeError(f"bug on {item}")

    with pytest.raises(RuntimeError, match="bug on"):
        asyncio.run(run_pool(iter(range(100)), boom, 8))


class SlowRandomBackend:
    """A sampling model: every call answers differently, after a pause that keeps identical calls in flight
    together."""

    def __init__(self, fail: bool = False) -> None:
        self.calls = 0
        self.fail = fail

    def identity(self, model=None):
        return {"type": "slow-random"}

    async def complete(self, req: ChatRequest) -> Completion:
        self.calls += 1
        n = self.calls
        await asyncio.sleep(0.01)
        if self.fail:
            from psychocounsel.errors import BackendError
            raise BackendError(f"down {n}", status=500, retryable=True)
        return Completion(text=f"answer {n}", raw=json.dumps({"n": n}))

    async def aclose(self) -> None:
        pass


def test_identical_calls_in_flight_are_paid_once_and_all_get_the_cached_reply(tmp_path):
    store = Store(tmp_path / "run.sqlite")
    writer = Writer(store)
    backend = SlowRandomBackend()
    caller = CachedCaller(store, writer, "b", backend)
    reqs = [ChatRequest.chat("m", [{"role": "user", "content": f"speech {i % 5}"}]) for i in range(20)]
    got: list[tuple[str, str]] = []

    async def one(req: ChatRequest) -> None:
        c, key, _ = await caller.complete(req)
        got.append((key, c.text))

    asyncio.run(run_pool(iter(reqs), one, 20))
    writer.commit()
    assert backend.calls == 5 and caller.misses == 5 and caller.hits == 15
    for key, text in got:  # every caller scored the reply the cache keeps
        assert store.get_call(key).text == text
    store.close()


def test_a_failed_call_in_flight_fails_every_caller_waiting_on_it_and_is_not_cached(tmp_path):
    from psychocounsel.errors import BackendError

    store = Store(tmp_path / "run.sqlite")
    writer = Writer(store)
    caller = CachedCaller(store, writer, "b", SlowRandomBackend(fail=True))
    req = ChatRequest.chat("m", [{"role": "user", "content": "speech"}])

    async def both():
        return await asyncio.gather(caller.complete(req), caller.complete(req), return_exceptions=True)

    errors = asyncio.run(both())
    assert [str(e) for e in errors] == ["down 1", "down 1"] and all(isinstance(e, BackendError) for e in errors)
    assert caller.backend.calls == 1
    caller.backend.fail = False  # a later call is made again: failures are never cached
    c, _, cached = asyncio.run(caller.complete(req))
    assert c.text == "answer 2" and not cached
    writer.commit()
    store.close()
