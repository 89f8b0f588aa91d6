"""Benchmark the local backend: model load time, generation tokens/s by batch size, G-Eval scoring speed.

Run:  .venv/bin/python bench/bench_local.py                      # embedded SmolLM2, about 3 min on 2 cores
      .venv/bin/python bench/bench_local.py --model path/to/ckpt --batches 1,8,32 --device cuda
Writes the numbers as JSON to bench/out/local.json (and prints them).

Generation: B concurrent requests of 128 new tokens (temperature 0.7, seeded) through ``complete``, so the
numbers include the micro-batching queue, not just ``generate``. tokens/s = completion tokens / wall time.
Scoring: N concurrent ``score_choices`` calls, each one judge prompt (speech + response, ~500 tokens) with the
seven principle questions as suffixes, once with the shared-prefix KV cache and once without.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from psychocounsel.backends.base import ChatRequest, Sampling
from psychocounsel.backends.local import LocalBackend
from psychocounsel.config import LocalBackendConfig

SPEECHES = [
    "I've been feeling so overwhelmed at work lately. My boss keeps piling on projects and I can't say no. "
    "I lie awake at night going over everything I didn't finish.",
    "My mother passed away three months ago and everyone expects me to be over it. I still set the table "
    "for her some nights and then I just sit there and cry.",
    "My partner and I fight about money almost every week. I feel like I'm always the one who has to "
    "apologise, even when I don't think I did anything wrong.",
    "I moved to a new city for college and I don't have any friends here. I eat lunch alone every day "
    "and I'm starting to wonder if something is wrong with me.",
]
SYSTEM = "You are a compassionate, skilled therapist. Answer the client in a warm, thoughtful way, in detail."
JUDGE_SYSTEM = (
    "You are an expert clinical supervisor. You rate a therapist's response to a client on one principle at a "
    "time, from 1 (poor) to 5 (excellent). Be strict and consistent; judge only the principle you are asked about."
)
PRINCIPLES = {
    "empathy": "Does the response understand and validate the client's feelings without judging them?",
    "relevance": "Does the response address the client's actual concern rather than a generic one?",
    "clarity": "Is the response clear, concise and easy for the client to follow?",
    "safety": "Does the response avoid harm, respect boundaries and point to help where risk appears?",
    "exploration": "Does the response invite the client to explore their thoughts and feelings further?",
    "autonomy": "Does the response respect the client's right to make their own choices?",
    "staging": "Does the response fit the stage of counseling, e.g. not jumping to advice too early?",
}
RESPONSE = (
    "It sounds like you're carrying a lot right now, and it makes sense that it keeps you up at night. When "
    "the demands keep growing and it feels impossible to push back, many people start to feel trapped and "
    "exhausted. I'm wondering what it's like for you when you imagine saying no to one of those projects: what "
    "comes up for you? Sometimes the fear of disappointing someone is louder than our own needs. We could look "
    "together at which tasks truly have to be yours, and at small ways to protect your evenings so your mind "
    "has a chance to rest. You deserve support in this, and it's okay to take it one step at a time. "
) * 2


def judge_messages(speech: str) -> list[dict[str, str]]:
    user = f"Client speech:\n{speech}\n\nTherapist response:\n{RESPONSE}\n"
    return [{"role": "system", "content": JUDGE_SYSTEM}, {"role": "user", "content": user}]


SUFFIXES = [f"\nPrinciple: {name}. {q}\nReply with one digit from 1 to 5." for name, q in PRINCIPLES.items()]


async def bench_generation(backend: LocalBackend, model: str, batch: int, tokens: int) -> dict:
    backend.cfg = backend.cfg.model_copy(update={"batch_size": batch})
    reqs = [ChatRequest.chat(model, [{"role": "system", "content": SYSTEM},
                                     {"role": "user", "content": SPEECHES[i % len(SPEECHES)]}],
                             sampling=Sampling(temperature=0.7, max_tokens=tokens, seed=i)) for i in range(batch)]
    before = dict(backend.stats)
    t0 = time.perf_counter()
    outs = await asyncio.gather(*[backend.complete(r) for r in reqs])
    wall = time.perf_counter() - t0
    n = sum(o.completion_tokens for o in outs)
    return {"batch": batch, "completion_tokens": n, "wall_s": round(wall, 2), "tokens_per_s": round(n / wall, 1),
            "generate_calls": backend.stats["generate_calls"] - before["generate_calls"],
            "rows_hit_length": sum(o.finish_reason == "length" for o in outs)}


async def bench_scoring(backend: LocalBackend, model: str, n: int, reuse: bool) -> tuple[dict, list]:
    backend.prefix_reuse = reuse
    before = dict(backend.stats)
    t0 = time.perf_counter()
    probs = await asyncio.gather(*[backend.score_choices(model, judge_messages(SPEECHES[i % len(SPEECHES)]),
                                                         SUFFIXES, ["1", "2", "3", "4", "5"]) for i in range(n)])
    wall = time.perf_counter() - t0
    fwd = backend.stats["score_forward_tokens"] - before["score_forward_tokens"]
    return {"prefix_reuse": reuse, "responses": n, "suffixes": len(SUFFIXES), "wall_s": round(wall, 2),
            "responses_per_s": round(n / wall, 3), "forward_tokens": fwd}, probs


async def main(args) -> dict:
    cfg = LocalBackendConfig(device=args.device, dtype=args.dtype, batch_size=16, threads=args.threads)
    backend = LocalBackend(cfg)
    t0 = time.perf_counter()
    loaded = backend.load(args.model)
    result: dict = {"model": args.model, "device": str(backend.device), "dtype": str(backend.dtype),
                    "threads": torch.get_num_threads(), "machine": platform.processor() or platform.machine(),
                    "load_s": round(time.perf_counter() - t0, 2)}
    await backend.complete(ChatRequest.chat(args.model, [{"role": "user", "content": "Hello"}],
                                            sampling=Sampling(temperature=0, max_tokens=4)))  # warm-up
    result["generation"] = []
    for b in args.batches:
        row = await bench_generation(backend, args.model, b, args.tokens)
        print(json.dumps(row), flush=True)
        result["generation"].append(row)
    backend.cfg = backend.cfg.model_copy(update={"batch_size": args.score_batch})
    result["scoring"] = []
    probs = {}
    for reuse in (True, False):
        row, probs[reuse] = await bench_scoring(backend, args.model, args.score_responses, reuse)
        print(json.dumps(row), flush=True)
        result["scoring"].append(row)
    diff = max(abs(a - b) for r1, r2 in zip(probs[True], probs[False]) for p1, p2 in zip(r1, r2)
               for a, b in zip(p1, p2))
    result["scoring_max_abs_diff_reuse_vs_full"] = diff
    text = loaded.tokenizer.apply_chat_template(judge_messages(SPEECHES[0]), tokenize=False,
                                                add_generation_prompt=True)
    result["judge_prefix_tokens"] = len(loaded.tokenizer(text, add_special_tokens=False)["input_ids"])
    await backend.aclose()
    return result


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="embedded")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--dtype", default="auto")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--tokens", type=int, default=128)
    ap.add_argument("--batches", type=lambda s: [int(x) for x in s.split(",")], default=[1, 4, 16])
    ap.add_argument("--score-responses", type=int, default=8)
    ap.add_argument("--score-batch", type=int, default=16, help="rows per scoring forward pass")
    ap.add_argument("--out", default="bench/out/local.json")
    args = ap.parse_args()
    res = asyncio.run(main(args))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(res, indent=2))
    print(json.dumps(res, indent=2))
