"""The chat API with the official openai SDK against a running server (uvicorn in a thread, port 0), streaming
and not; the gate's reply is a ChatCompletion the SDK parses."""

from __future__ import annotations

import pytest

from helpers import ADMIN, CALM, CRISIS, config, run_uvicorn
from psychocounsel.safety.responses import check_response
from psychocounsel.safety.screen import screen
from psychocounsel.serve.app import create_app
from psychocounsel.testing.fakeserver import fake_server


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    with fake_server(latency=0.0) as fake:
        app = create_app(config(tmp_path_factory.mktemp("api"), fake.base_url), ADMIN)
        token = app.state.store.add_clinician("Dr. API")[1]
        url, stop = run_uvicorn(app)
        yield url, token, fake
        stop()


def client(served, token=None):
    from openai import OpenAI

    url, clinician, _ = served
    return OpenAI(base_url=f"{url}/v1", api_key=token or clinician, max_retries=0)


def test_models_and_a_plain_completion(served):
    c = client(served)
    assert [m.id for m in c.models.list().data] == ["fake-policy"]
    got = c.chat.completions.create(model="fake-policy", messages=[{"role": "user", "content": CALM}])
    assert got.object == "chat.completion" and got.choices[0].finish_reason == "stop"
    assert got.choices[0].message.content.startswith("I hear you.")
    assert got.model_extra["psychocounsel"]["tier"] == "none"


def test_the_gate_replaces_an_unsafe_reply_with_a_valid_completion(served):
    c = client(served, ADMIN)  # the admin token works too
    got = c.chat.completions.create(model="fake-policy", messages=[{"role": "user", "content": CRISIS}], n=2)
    assert len(got.choices) == 2
    for ch in got.choices:
        assert ch.finish_reason == "content_filter" and ch.message.role == "assistant"
        assert check_response(screen(CRISIS), ch.message.content, "US").adequate  # the gate's reply does what it must
    extra = got.model_extra["psychocounsel"]
    assert extra["tier"] == "high" and extra["sent_to_client"] is False
    assert "missing_points_to_help" in extra["withheld"][0]
    # the model was told the safety instruction
    _, body = served[2].last_request()
    assert any(m["role"] == "system" and "SAFETY FIRST" in m["content"] for m in body["messages"])


def test_streaming_both_ways(served):
    c = client(served)
    for text, finish in ((CALM, "stop"), (CRISIS, "content_filter")):
        stream = c.chat.completions.create(model="fake-policy", messages=[{"role": "user", "content": text}],
                                           stream=True)
        pieces, reasons = [], []
        for chunk in stream:
            assert chunk.object == "chat.completion.chunk"
            pieces.append(chunk.choices[0].delta.content or "")
            reasons.append(chunk.choices[0].finish_reason)
        whole = c.chat.completions.create(model="fake-policy", messages=[{"role": "user", "content": text}])
        assert "".join(pieces) == whole.choices[0].message.content
        assert reasons[-1] == finish and all(r is None for r in reasons[:-1])


def test_errors_in_openai_shape(served):
    from openai import AuthenticationError, BadRequestError, NotFoundError

    with pytest.raises(AuthenticationError):
        client(served, "wrong-token").models.list()
    with pytest.raises(NotFoundError):
        client(served).chat.completions.create(model="other", messages=[{"role": "user", "content": CALM}])
    with pytest.raises(BadRequestError):
        client(served).chat.completions.create(model="fake-policy", messages=[{"role": "assistant", "content": "hi"}])


def test_a_streamed_refusal_is_a_valid_stream_for_the_sdk(served):
    """n=2 withheld choices, streamed: the raw stream says it was checked first, the SDK's create(stream=True)
    reads every chunk, its .stream() helper accumulates them into the same completion as the non-streamed call
    (raising ContentFilterFinishReasonError, as for OpenAI's own filter), and include_usage adds the usage chunk."""
    import httpx
    from openai import ContentFilterFinishReasonError

    url, token, _ = served
    c = client(served)
    messages = [{"role": "user", "content": CRISIS}]
    whole = c.chat.completions.create(model="fake-policy", messages=messages, n=2)
    raw = httpx.post(f"{url}/v1/chat/completions", headers={"authorization": f"Bearer {token}"},
                     json={"model": "fake-policy", "messages": messages, "stream": True, "n": 2}).text
    assert raw.startswith(": psychocounsel: every reply is checked whole") and raw.endswith("data: [DONE]\n\n")

    chunks = list(c.chat.completions.create(model="fake-policy", messages=messages, n=2, stream=True,
                                            stream_options={"include_usage": True}))
    texts = {0: "", 1: ""}
    for ch in chunks[:-1]:
        (choice,) = ch.choices
        texts[choice.index] += choice.delta.content or ""
        assert ch.usage is None
    assert [texts[0], texts[1]] == [ch.message.content for ch in whole.choices]
    firsts = [ch for ch in chunks if ch.choices and ch.choices[0].delta.role == "assistant"]
    assert len(firsts) == 2 and all(ch.model_extra["psychocounsel"]["checked_before_sending"] for ch in firsts)
    assert chunks[-1].choices == [] and chunks[-1].usage.total_tokens == whole.usage.total_tokens

    with pytest.raises(ContentFilterFinishReasonError) as e:
        with c.chat.completions.stream(model="fake-policy", messages=messages, n=2) as stream:
            stream.get_final_completion()
    got = e.value.completion
    assert [ch.finish_reason for ch in got.choices] == ["content_filter"] * 2
    assert [ch.message.content for ch in got.choices] == [ch.message.content for ch in whole.choices]
    assert all(check_response(screen(CRISIS), ch.message.content, "US").adequate for ch in got.choices)
