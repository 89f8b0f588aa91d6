"""The drafting assistant under load: 32 clinicians at once against the fake server (50 ms a call).

    .venv/bin/python bench/bench_serve.py [--seconds 10] [--clinicians 32] [--n 3] [--latency 0.05]

Three runs of the same length, side by side, each with ``--clinicians`` workers asking for N drafts of a message
back to back (every fourth message a crisis message):
  direct   the N backend calls alone (what drafting costs without us)
  service  DraftService.draft: gate, N calls, reply checks, ranking (a hand-checkable scorer), the store's rows
  http     the same through uvicorn and the JSON API (httpx), as a script or the pages would call it
Prints p50/p95 time to ranked drafts, throughput, the overhead of gate + checks + ranking against direct, RSS
before and after, and checks nothing was lost (every request answered, one draft set row per answer).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "serve"))

from helpers import ADMIN, CALM, CRISIS, WordScorer, config, run_uvicorn

from psychocounsel.backends.base import ChatRequest, Sampling
from psychocounsel.backends.openai_http import OpenAIBackend
from psychocounsel.serve.app import create_app
from psychocounsel.testing.fakeserver import fake_server


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))] if xs else float("nan")


async def workers(k: int, seconds: float, one) -> tuple[list[float], int, int]:
    """``k`` workers calling ``one(i)`` back to back for ``seconds``; (latencies, sent, answered)."""
    lat: list[float] = []
    sent = answered = 0
    stop = time.monotonic() + seconds

    async def worker(w: int):
        nonlocal sent, answered
        i = w
        while time.monotonic() < stop:
            sent += 1
            t = time.perf_counter()
            if await one(i):
                answered += 1
                lat.append(time.perf_counter() - t)
            i += k

    await asyncio.gather(*(worker(w) for w in range(k)))
    return lat, sent, answered


def message(i: int) -> str:
    return (CRISIS if i % 4 == 0 else CALM) + f" (message {i})"


def report(name: str, lat: list[float], sent: int, answered: int, seconds: float) -> float:
    p50 = pct(lat, 0.5) * 1000
    print(f"{name:8s} p50 {p50:7.1f} ms  p95 {pct(lat, 0.95) * 1000:7.1f} ms  mean {statistics.mean(lat) * 1000:7.1f} ms"
          f"  {answered / seconds:7.1f} sets/s  sent {sent} answered {answered}")
    return p50


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--clinicians", type=int, default=32)
    ap.add_argument("--n", type=int, default=3)
    ap.add_argument("--latency", type=float, default=0.05)
    a = ap.parse_args()
    rss0 = rss_mb()
    with fake_server(latency=a.latency) as fake, tempfile.TemporaryDirectory() as tmp:
        cfg = config(Path(tmp), fake.base_url, n_max=max(8, a.n))
        app = create_app(cfg, ADMIN, scorer=WordScorer())
        service, store = app.state.service, app.state.store
        clinicians = [store.add_clinician(f"Dr. {i}")[1] for i in range(a.clinicians)]
        url, stop = run_uvicorn(app)
        print(f"{a.clinicians} clinicians, N={a.n}, fake server latency {a.latency * 1000:.0f} ms, "
              f"{a.seconds:.0f} s per run")

        async def run_all():
            backend = OpenAIBackend(cfg.backend)
            s = cfg.sampling

            async def direct(i: int) -> bool:
                reqs = [ChatRequest(cfg.model, (("system", service.prompt.text), ("user", message(i))),
                                    sampling=Sampling(s.temperature, s.top_p, s.max_tokens, j)) for j in range(a.n)]
                got = await asyncio.gather(*(backend.complete(r) for r in reqs))
                return len(got) == a.n

            people = [store.clinician_by_token(t) for t in clinicians]

            async def in_service(i: int) -> bool:
                view = await service.draft(people[i % len(people)], message(i), n=a.n)
                return len(view["drafts"]) == a.n

            import httpx

            async with httpx.AsyncClient(base_url=url, timeout=60,
                                         limits=httpx.Limits(max_connections=a.clinicians * 2)) as http:
                async def over_http(i: int) -> bool:
                    r = await http.post("/drafts", json={"message": message(i), "n": a.n},
                                        headers={"authorization": f"Bearer {clinicians[i % len(clinicians)]}"})
                    return r.status_code == 200 and len(r.json()["drafts"]) == a.n

                results = {}
                for name, fn in (("direct", direct), ("service", in_service), ("http", over_http)):
                    before = store.rows("SELECT COUNT(*) AS n FROM draft_sets")[0]["n"]
                    lat, sent, answered = await workers(a.clinicians, a.seconds, fn)
                    rows = store.rows("SELECT COUNT(*) AS n FROM draft_sets")[0]["n"] - before
                    results[name] = report(name, lat, sent, answered, a.seconds)
                    lost = sent - answered
                    if name != "direct" and rows != answered:
                        lost += abs(rows - answered)
                    print(f"{'':8s} lost {lost}" + (f", draft-set rows {rows}" if name != "direct" else ""))
            await backend.aclose()
            return results

        res = asyncio.run(run_all())
        stop()
    print(f"overhead of gate + checks + ranking + store vs direct (p50): service {res['service'] / res['direct'] - 1:+.1%}, "
          f"http {res['http'] / res['direct'] - 1:+.1%}")
    print(f"RSS {rss0:.0f} MB at start, {rss_mb():.0f} MB at end; draft pages held in memory: {len(service.memory)}")


if __name__ == "__main__":
    main()
