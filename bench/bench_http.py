"""HTTP client speed: the official ``openai`` client vs psychocounsel's ``openai`` backend.

Setup: a local fake server (psychocounsel/testing/fakeserver.py, its own process) answers
every chat completion after a fixed 50 ms, so with F requests in flight the bound is F / 0.05
req/s. Each row sends N requests through a semaphore of F after a warm-up of F requests, and
reports req/s, % of that bound, and the client process's CPU time per request
(time.process_time; the server's CPU is not counted).

Rows: (a) a bare loop over ``openai.AsyncOpenAI`` (max_retries=0, nothing else);
(b) ``OpenAIBackend`` (lean HTTP/1.1 client; retries, limits and accounting all switched on
as in a real run); ``--all`` adds (c) the backend over aiohttp (its proxy path) and (d) the
backend on a uvloop event loop.

    .venv/bin/python bench/bench_http.py            # N=5000 at 64 and 256 in flight
    .venv/bin/python bench/bench_http.py --all --n 3000

Measured on the project's 2-core AMD EPYC box (other jobs running, load ~1.5), Python 3.11.7,
openai 3.57, aiohttp 3.14.5, orjson 3.13, uvloop 0.23 (server only, except row d), N=5000-8000:

    client                     in flight  req/s  % bound  CPU ms/req
    (a) openai.AsyncOpenAI            64    593-615   46-48%   1.56-1.61
    (b) OpenAIBackend                 64  1195-1232   93-96%   0.058-0.076
    (c) OpenAIBackend/aiohttp         64       1164      91%   0.480
    (d) OpenAIBackend+uvloop          64       1197      94%   0.057
    (a) openai.AsyncOpenAI           256    425-462      8-9%  2.16-2.31
    (b) OpenAIBackend                256  4315-4318      84%   0.053-0.054
    (c) OpenAIBackend/aiohttp        256       2232      44%   0.444
    (d) OpenAIBackend+uvloop         256       4338      85%   0.059

The fake server spent 0.03-0.06 ms of CPU per request: it is not the bottleneck.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from psychocounsel.backends.base import ChatRequest, Sampling
from psychocounsel.backends.openai_http import OpenAIBackend
from psychocounsel.config import OpenAIBackendConfig
from psychocounsel.testing.fakeserver import fake_server

LATENCY = 0.05  # a fixed added latency: a model "thinking" for 50 ms
MESSAGES = [
    {"role": "system", "content": "You are a licensed therapist. Reply with empathy and one open question."},
    {"role": "user", "content": "I've been feeling anxious about work for weeks. I lie awake replaying "
                                "conversations with my manager and I can't focus during the day. " * 3},
]


async def _drive(call, inflight: int, n: int) -> tuple[float, float]:
    """Warm up, then time n calls at `inflight` concurrency: (wall seconds, client CPU seconds)."""
    sem = asyncio.Semaphore(inflight)

    async def one():
        async with sem:
            await call()

    await asyncio.gather(*(one() for _ in range(inflight)))
    t0, c0 = time.perf_counter(), time.process_time()
    await asyncio.gather(*(one() for _ in range(n)))
    return time.perf_counter() - t0, time.process_time() - c0


async def run_openai(url: str, inflight: int, n: int) -> tuple[float, float]:
    import openai

    # Defaults, as a user would write it (a plain httpx.AsyncClient here is 10x slower still).
    client = openai.AsyncOpenAI(base_url=url, api_key="unused", max_retries=0)

    async def call():
        await client.chat.completions.create(model="fake", messages=MESSAGES, max_tokens=128,
                                             temperature=0.7, top_p=1.0)

    try:
        return await _drive(call, inflight, n)
    finally:
        await client.close()


async def run_ours(url: str, inflight: int, n: int) -> tuple[float, float]:
    cfg = OpenAIBackendConfig(base_urls=[url], api_key_env=None, concurrency=inflight,
                              rpm=10**9, tpm=10**12,  # limiters on (never binding) to count their cost
                              price_input_per_mtok=0.15, price_output_per_mtok=0.6)
    backend = OpenAIBackend(cfg)
    request = ChatRequest.chat("fake", MESSAGES, sampling=Sampling(max_tokens=128))

    async def call():
        await backend.complete(request)

    try:
        return await _drive(call, inflight, n)
    finally:
        await backend.aclose()


def server_cpu_s(pid: int) -> float | None:
    """User+system CPU seconds of the server process (Linux /proc), to show it is not the bottleneck."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=5000, help="timed requests per row")
    ap.add_argument("--inflight", type=int, nargs="+", default=[64, 256])
    ap.add_argument("--all", action="store_true", help="add the aiohttp and uvloop rows")
    args = ap.parse_args()

    rows = [("(a) openai.AsyncOpenAI", run_openai, None), ("(b) OpenAIBackend", run_ours, None)]
    if args.all:
        rows.append(("(c) OpenAIBackend/aiohttp", run_ours, "aiohttp"))
        rows.append(("(d) OpenAIBackend+uvloop", run_ours, "uvloop"))
    print(f"fake server latency {LATENCY * 1000:.0f} ms, N={args.n}, {os.cpu_count()} CPUs, "
          f"Python {sys.version.split()[0]}")
    print(f"{'client':28s} {'in flight':>9s} {'req/s':>8s} {'% bound':>8s} {'CPU ms/req':>11s} "
          f"{'server ms/req':>13s}")
    with fake_server(latency=LATENCY) as srv:
        for inflight in args.inflight:
            bound = inflight / LATENCY
            for name, fn, variant in rows:
                os.environ.pop("PSYCHOCOUNSEL_HTTP_CLIENT", None)
                if variant == "aiohttp":
                    os.environ["PSYCHOCOUNSEL_HTTP_CLIENT"] = "aiohttp"
                s0 = server_cpu_s(srv.proc.pid)
                if variant == "uvloop":
                    import uvloop

                    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as r:
                        wall, cpu = r.run(fn(srv.base_url, inflight, args.n))
                else:
                    wall, cpu = asyncio.run(fn(srv.base_url, inflight, args.n))
                s1 = server_cpu_s(srv.proc.pid)
                # the server's figure includes the warm-up requests, so it slightly overstates
                server = "n/a" if s0 is None else f"{1000 * (s1 - s0) / (args.n + inflight):.3f}"
                rate = args.n / wall
                print(f"{name:28s} {inflight:9d} {rate:8.0f} {100 * rate / bound:7.0f}% "
                      f"{1000 * cpu / args.n:11.3f} {server:>13s}", flush=True)
        os.environ.pop("PSYCHOCOUNSEL_HTTP_CLIENT", None)


if __name__ == "__main__":
    main()
