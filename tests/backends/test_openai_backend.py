"""The openai backend against the fake server (a real subprocess speaking HTTP on localhost)."""

from __future__ import annotations

import asyncio
import email.utils
import gc
import json
import shutil
import socket
import subprocess
import time

import pytest

from psychocounsel import PRINCIPLE_KEYS
from psychocounsel.backends.base import Backend, ChatRequest, Sampling
from psychocounsel.backends.openai_http import OpenAIBackend, _retry_after
from psychocounsel.config import OpenAIBackendConfig
from psychocounsel.errors import BackendError, UserError
from psychocounsel.testing.fakeserver import fake_server, therapist_reply

pytestmark = pytest.mark.timeout(60)

MESSAGES = [{"role": "system", "content": "You are a therapist."},
            {"role": "user", "content": "I keep worrying about my exams and can't sleep."}]
REQ = ChatRequest.chat("fake-model", MESSAGES,
                       sampling=Sampling(temperature=0.3, top_p=0.9, max_tokens=50, seed=7))


@pytest.fixture(autouse=True)
def _no_proxy(monkeypatch):
    """A proxy in the runner's environment would route localhost calls through aiohttp."""
    for var in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy",
                "PSYCHOCOUNSEL_HTTP_CLIENT"):
        monkeypatch.delenv(var, raising=False)


def backend(*urls: str, **kw) -> OpenAIBackend:
    kw = {"api_key_env": None, "backoff_base_s": 0.01, "timeout_s": 5.0, **kw}
    return OpenAIBackend(OpenAIBackendConfig(base_urls=list(urls), **kw))


def run(b: OpenAIBackend, *requests: ChatRequest):
    """Complete the requests concurrently on a fresh loop, then close the backend."""
    async def go():
        try:
            return await asyncio.gather(*(b.complete(r) for r in requests))
        finally:
            await b.aclose()
    return asyncio.run(go())


def free_port() -> int:
    """A port nothing listens on (bound, then released): connections to it are refused."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_success_fields_and_request_body():
    with fake_server(latency=0.02) as srv:
        b = backend(srv.base_url)
        assert isinstance(b, Backend)
        (c,) = run(b, REQ)
        head, body = srv.last_request()
    assert c.text == therapist_reply(MESSAGES[1]["content"], "fake-model")
    assert c.finish_reason == "stop" and c.base_url == srv.base_url
    assert c.latency_s >= 0.02
    raw = json.loads(c.raw)
    assert raw["usage"]["prompt_tokens"] == c.prompt_tokens > 0
    assert raw["usage"]["completion_tokens"] == c.completion_tokens > 0
    assert head.startswith("POST /v1/chat/completions HTTP/1.1")
    assert "authorization" not in head.lower()  # no key configured: no header at all
    assert body == {"model": "fake-model", "messages": MESSAGES, "temperature": 0.3, "top_p": 0.9,
                    "max_tokens": 50, "seed": 7}


def test_body_reuses_the_cache_keys_message_json_and_reads_back_exactly():
    # the messages are spliced in from their shared JSON; the body must be the same bytes as encoding it whole
    import orjson

    messages = [{"role": "system", "content": 'Judge "this" \\ fairly.\n\x00\x1f'},
                {"role": "user", "content": "Je me sens épuisée… 我很累 😔 \u2028"}]
    req = ChatRequest.chat("judge", messages, sampling=Sampling(0.0, 1.0, 300, 3),
                           response_format={"type": "json_object"})
    body = backend("http://127.0.0.1:9/v1")._encode(req)
    assert body == orjson.dumps({"model": "judge", "messages": messages, "temperature": 0.0, "top_p": 1.0,
                                 "max_tokens": 300, "seed": 3, "response_format": {"type": "json_object"}})
    assert json.loads(body)["messages"] == messages
    assert backend("http://127.0.0.1:9/v1")._encode(ChatRequest("m", ())).startswith(b'{"model":"m","messages":[],')


def test_judge_reply_with_response_format_and_structured_output_switch():
    fmt = {"type": "json_schema", "json_schema": {"name": "verdict", "schema": {"type": "object"}}}
    req = ChatRequest.chat("judge", MESSAGES, response_format=fmt)
    with fake_server(latency=0.0) as srv:
        (c,) = run(backend(srv.base_url), req)
        assert srv.last_request()[1]["response_format"] == fmt
        (c2,) = run(backend(srv.base_url, structured_output=False), req)
        assert "response_format" not in srv.last_request()[1]
    verdict = json.loads(c.text)
    assert set(PRINCIPLE_KEYS) <= set(verdict) and all(1 <= verdict[k] <= 5 for k in PRINCIPLE_KEYS)
    assert "rationale" in verdict
    assert not c2.text.startswith("{")  # without response_format nor a judge prompt: an echo


def test_retry_on_500_then_success():
    with fake_server(latency=0.0, script="500,500,ok") as srv:
        b = backend(srv.base_url)
        (c,) = run(b, REQ)
        stats = srv.stats()
    assert c.text and stats == {"requests": 3, "500": 2, "ok": 1}
    assert (b.usage.requests, b.usage.retries, b.usage.failures) == (1, 2, 0)


def test_retries_exhausted_raise_retryable_error():
    with fake_server(latency=0.0, p500=1.0) as srv:
        b = backend(srv.base_url, max_retries=2)
        with pytest.raises(BackendError) as e:
            run(b, REQ)
        assert srv.stats()["requests"] == 3
    assert e.value.status == 500 and e.value.retryable
    assert "fake internal error" in str(e.value) and "3 attempts" in str(e.value)
    assert (b.usage.requests, b.usage.retries, b.usage.failures) == (0, 2, 1)


def test_429_retry_after_is_honoured():
    with fake_server(latency=0.0, script="429,ok", retry_after=0.4) as srv:
        b = backend(srv.base_url, backoff_base_s=0.001)
        t0 = time.perf_counter()
        (c,) = run(b, REQ)
        elapsed = time.perf_counter() - t0
    assert c.text and b.usage.retries == 1
    assert elapsed >= 0.4  # the jittered backoff alone would be ~1 ms


def test_retry_after_capped_by_backoff_max():
    with fake_server(latency=0.0, script="429,ok", retry_after=30) as srv:
        t0 = time.perf_counter()
        run(backend(srv.base_url, backoff_max_s=0.2), REQ)
    assert time.perf_counter() - t0 < 5


def test_retry_after_forms():
    assert _retry_after({"retry-after": "2"}) == 2.0
    assert _retry_after({"retry-after": "1.5", "retry-after-ms": "250"}) == 0.25
    date = email.utils.formatdate(time.time() + 10, usegmt=True)
    assert 8 <= _retry_after({"retry-after": date}) <= 10
    assert _retry_after({"retry-after": "soon"}) is None and _retry_after({}) is None


def test_timeout_then_retry():
    with fake_server(latency=0.0, script="hang,ok") as srv:
        b = backend(srv.base_url, timeout_s=0.3)
        t0 = time.perf_counter()
        (c,) = run(b, REQ)
        elapsed = time.perf_counter() - t0
    assert c.text and b.usage.retries == 1 and elapsed >= 0.3


@pytest.mark.parametrize("fault", ["drop", "cut"])
def test_dropped_and_truncated_replies_are_retried(fault):
    with fake_server(latency=0.0, script=f"{fault},ok") as srv:
        b = backend(srv.base_url)
        (c,) = run(b, REQ)
    assert c.text.startswith("I hear you") and b.usage.retries == 1


def test_pooled_connection_closed_by_server_is_resent_at_once():
    async def go(b: OpenAIBackend):
        out = [await b.complete(REQ) for _ in range(2)]  # one after the other: the 2nd reuses a connection
        await b.aclose()
        return out

    with fake_server(latency=0.0, script="ok,drop,ok") as srv:
        b = backend(srv.base_url, backoff_base_s=5.0)  # a counted retry would sleep; a resend does not
        t0 = time.perf_counter()
        done = asyncio.run(go(b))
        assert srv.stats()["requests"] == 3
    assert len(done) == 2 and b.usage.retries == 0 and time.perf_counter() - t0 < 2


def test_non_retryable_400_raises_without_retry():
    with fake_server(latency=0.0, script="400,ok") as srv:
        b = backend(srv.base_url)
        with pytest.raises(BackendError) as e:
            run(b, REQ)
        assert srv.stats()["requests"] == 1
    assert e.value.status == 400 and not e.value.retryable and "fake bad request" in str(e.value)
    assert (b.usage.retries, b.usage.failures) == (0, 1)


def test_max_tokens_renamed_for_models_that_reject_it():
    with fake_server(latency=0.0, reject_max_tokens=True) as srv:
        b = backend(srv.base_url)
        (c,) = run(b, REQ)
        assert srv.last_request()[1]["max_completion_tokens"] == 50
    assert c.text and b.usage.retries == 0


def test_chunked_replies_and_garbled_content_pass_through():
    with fake_server(latency=0.0, chunked=True, script="ok,garble") as srv:
        b = backend(srv.base_url, concurrency=1)
        ok, garbled = run(b, REQ, REQ)
    assert ok.text.startswith("I hear you")
    assert garbled.text.startswith("\x00garbled")  # the backend returns it; the judge parser rejects it
    assert json.loads(garbled.raw)["choices"][0]["message"]["content"] == garbled.text


def test_replicas_share_load_and_dead_one_is_skipped():
    with fake_server(latency=0.02) as a, fake_server(latency=0.02) as b:
        run(backend(a.base_url, b.base_url, concurrency=8), *[REQ] * 40)
        na, nb = a.stats()["requests"], b.stats()["requests"]
        assert na + nb == 40 and min(na, nb) >= 10
        dead = f"http://127.0.0.1:{free_port()}/v1"
        be = backend(dead, a.base_url, concurrency=4)
        done = run(be, *[REQ] * 20)
    assert all(c.base_url == a.base_url for c in done)
    assert be.usage.failures == 0 and be.usage.retries >= 1


def test_cancelled_request_does_not_poison_the_pool():
    async def go(b: OpenAIBackend):
        task = asyncio.ensure_future(b.complete(REQ))
        await asyncio.sleep(0.2)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        out = await b.complete(REQ)
        await b.aclose()
        return out

    with fake_server(latency=0.0, script="hang,ok") as srv:
        b = backend(srv.base_url)
        c = asyncio.run(go(b))
    assert c.text and b.usage.requests == 1


@pytest.mark.filterwarnings("ignore::ResourceWarning")
def test_backend_survives_a_new_event_loop():
    with fake_server(latency=0.0) as srv:
        b = backend(srv.base_url)
        asyncio.run(b.complete(REQ))  # leaves a pooled connection bound to a closed loop
        (c,) = run(b, REQ)
    assert c.text and b.usage.requests == 2
    gc.collect()  # that orphaned socket is closed when collected: warn here, not in a later test


def test_rpm_limit_paces_requests():
    with fake_server(latency=0.0) as srv:
        b = backend(srv.base_url, rpm=600)  # 10/s, bucket of 10: 15 requests need >= 0.5 s
        t0 = time.perf_counter()
        run(b, *[REQ] * 15)
    assert time.perf_counter() - t0 >= 0.45


def test_usage_and_cost():
    with fake_server(latency=0.0) as srv:
        b = backend(srv.base_url, price_input_per_mtok=2.5, price_output_per_mtok=10.0)
        done = run(b, REQ, REQ, REQ)
    u = b.usage
    assert u.prompt_tokens == sum(c.prompt_tokens for c in done) and u.requests == 3
    assert u.completion_tokens == sum(c.completion_tokens for c in done)
    assert u.cost_usd == pytest.approx((u.prompt_tokens * 2.5 + u.completion_tokens * 10.0) / 1e6)
    assert "$" in str(u) and u.as_dict()["requests"] == 3
    assert backend("http://127.0.0.1:1/v1").usage.cost_usd is None  # no prices: no made-up cost


def test_key_sent_but_never_shown(monkeypatch):
    secret = "sk-test-DO-NOT-LEAK-1234567890"
    monkeypatch.setenv("PC_TEST_KEY", secret)
    with fake_server(latency=0.0, script="400") as srv:
        b = backend(srv.base_url, api_key_env="PC_TEST_KEY")
        with pytest.raises(BackendError) as e:
            run(b, REQ)
        head, _ = srv.last_request()
    assert f"Authorization: Bearer {secret}" in head
    for shown in (repr(b), str(b.identity()), str(b.usage), str(e.value), repr(b.cfg), str(vars(b))):
        assert secret not in shown


def test_missing_key_for_openai_is_one_line_user_error(monkeypatch):
    monkeypatch.delenv("PC_MISSING_KEY", raising=False)
    with pytest.raises(UserError, match="PC_MISSING_KEY") as e:
        OpenAIBackend(OpenAIBackendConfig(api_key_env="PC_MISSING_KEY"))
    assert "\n" not in str(e.value)


def test_identity_names_the_family_not_the_replica():
    local = backend("http://127.0.0.1:8000/v1", "http://10.0.0.7:8000/v1").identity()
    assert local == {"type": "openai", "family": "self-hosted"}
    assert backend("http://localhost:9/v1").identity() == local  # adding a replica keeps cache keys
    public = backend("https://api.together.xyz/v1").identity()
    assert public == {"type": "openai", "family": "api.together.xyz"}


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl CLI for a test certificate")
def test_https_with_certificate_verification(tmp_path, monkeypatch):
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                    "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "1", "-subj", "/CN=localhost",
                    "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"], check=True, capture_output=True)
    with fake_server(latency=0.0, certfile=str(cert), keyfile=str(key)) as srv:
        assert srv.base_url.startswith("https://")
        with pytest.raises(BackendError) as e:  # an untrusted certificate is refused, not retried
            run(backend(srv.base_url), REQ)
        assert not e.value.retryable and "certificate" in str(e.value).lower()
        monkeypatch.setenv("SSL_CERT_FILE", str(cert))  # trust it, as a user with a private CA would
        (c,) = run(backend(srv.base_url), REQ)
    assert c.text.startswith("I hear you")


def test_aiohttp_path_retries_and_times_out_alike(monkeypatch):
    monkeypatch.setenv("PSYCHOCOUNSEL_HTTP_CLIENT", "aiohttp")  # the path taken behind an HTTP proxy
    with fake_server(latency=0.0, script="500,hang,ok,400") as srv:
        b = backend(srv.base_url, timeout_s=0.3, concurrency=1)
        (c,) = run(b, REQ)
        assert c.text.startswith("I hear you") and b.usage.retries == 2
        with pytest.raises(BackendError) as e:
            run(b, REQ)
    assert e.value.status == 400 and not e.value.retryable


def test_concurrency_limit_holds():
    with fake_server(latency=0.1) as srv:
        t0 = time.perf_counter()
        run(backend(srv.base_url, concurrency=3), *[REQ] * 12)
    assert time.perf_counter() - t0 >= 0.4  # 12 calls, 3 at a time, 0.1 s each


def test_mixed_faults_over_two_replicas_all_succeed():
    faults = dict(latency=0.005, p500=0.1, p429=0.05, retry_after=0.05, p_drop=0.05, p_cut=0.05,
                  p_hang=0.02)
    with fake_server(seed=1, **faults) as a, fake_server(seed=2, **faults) as b:
        # ~27% of attempts fail: with the default 6 retries one of 300 requests fails every attempt in ~3% of
        # runs (0.27^7 x 300); 12 retries make that ~1e-5, so the test checks retrying, not luck
        be = backend(a.base_url, b.base_url, concurrency=32, timeout_s=0.3, backoff_max_s=0.2, max_retries=12)
        done = run(be, *[REQ] * 300)
        served = a.stats()["ok"] + b.stats()["ok"]
    assert len(done) == 300 and all(c.text.startswith("I hear you") for c in done)
    assert served == 300 and be.usage.failures == 0 and be.usage.retries >= 30
