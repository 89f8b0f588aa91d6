"""The drafting assistant under load: 32 clinicians at once against the fake server (50 ms a call).

    .venv/bin/python bench/bench_serve.py [--seconds 10] [--clinicians 32] [--n 3] [--latency 0.05]

Three runs of the same length, side by side, each with ``--clinicians`` workers asking for N drafts of a message
back to back (every fourth message a crisis message):
  direct   the N backend calls alone (what drafting costs without us)
  service  DraftService.draft in this process: gate, N calls, reply checks, ranking (a hand-checkable scorer),
           the store's rows
  http     the same through the JSON API of a server in its own process (uvicorn, as ``psychocounsel serve``
           runs it), the load generator (httpx) staying in this one
The fake server is a process of its own in every run, so each line pays for the same backend. Prints p50/p95
time to ranked drafts, throughput, the overhead against direct, RSS of this process and of the server process,
and checks nothing was lost (every request answered, one draft-set row per answer).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests" / "serve"))

from helpers import ADMIN, CALM, CRISIS, WordScorer, config

from psychocounsel.backends.base import ChatRequest, Sampling
from psychocounsel.backends.openai_http import OpenAIBackend
from psychocounsel.serve.app import create_app
from psychocounsel.serve.config import ServeConfig
from psychocounsel.serve.store import ServeStore
from psychocounsel.testing.fakeserver import fake_server


def rss_mb(pid: int | str = "self") -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
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


def report(name: str, lat: list[float], sent: int, answered: int, seconds: float) -> tuple[float, float]:
    p50, p95 = pct(lat, 0.5) * 1000, pct(lat, 0.95) * 1000
    print(f"{name:8s} p50 {p50:7.1f} ms  p95 {p95:7.1f} ms  mean {statistics.mean(lat) * 1000:7.1f} ms"
          f"  {answered / seconds:7.1f} sets/s  sent {sent} answered {answered}")
    return p50, p95


def serve_child(cfg_json: str) -> None:
    """The server process of the http run: the app with the bench's scorer, under uvicorn on a free port."""
    import uvicorn

    cfg = ServeConfig.model_validate_json(Path(cfg_json).read_text())
    app = create_app(cfg, ADMIN, scorer=WordScorer())
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    print(f"LISTENING {sock.getsockname()[1]}", flush=True)
    uvicorn.Server(uvicorn.Config(app, log_level="warning")).run(sockets=[sock])


def start_server(cfg: ServeConfig, tmp: Path) -> tuple[subprocess.Popen, str]:
    (tmp / "child.json").write_text(cfg.model_dump_json())
    proc = subprocess.Popen([sys.executable, __file__, "--serve-child", str(tmp / "child.json")],
                            stdout=subprocess.PIPE, text=True, env=dict(os.environ, PYTHONUNBUFFERED="1"))
    line = proc.stdout.readline()
    if not line.startswith("LISTENING "):
        proc.kill()
        raise SystemExit(f"the server process did not start: {line!r}")
    return proc, f"http://127.0.0.1:{int(line.split()[1])}"


def draft_sets(db: Path) -> int:
    with sqlite3.connect(db) as con:  # WAL: a reader sees the other process's commits
        return con.execute("SELECT COUNT(*) FROM draft_sets").fetchone()[0]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--clinicians", type=int, default=32)
    ap.add_argument("--n", type=int, default=3)
    ap.add_argument("--latency", type=float, default=0.05)
    ap.add_argument("--serve-child", default=None, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.serve_child:
        serve_child(a.serve_child)
        return
    rss0 = rss_mb()
    print(f"{a.clinicians} clinicians, N={a.n}, fake server latency {a.latency * 1000:.0f} ms, "
          f"{a.seconds:.0f} s per run, {os.cpu_count()} CPUs visible")
    with fake_server(latency=a.latency) as fake, tempfile.TemporaryDirectory() as tmp_dir:
        tmp = Path(tmp_dir)
        cfg = config(tmp, fake.base_url, n_max=max(8, a.n))
        app = create_app(cfg, ADMIN, scorer=WordScorer())
        service, store = app.state.service, app.state.store
        clinicians = [store.add_clinician(f"Dr. {i}")[1] for i in range(a.clinicians)]
        people = [store.clinician_by_token(t) for t in clinicians]
        # The server process has a database of its own, so the two runs never wait on each other's locks.
        child_cfg = cfg.model_copy(update={"db": str(tmp / "child.sqlite")})
        child_store = ServeStore(child_cfg.db)
        child_tokens = [child_store.add_clinician(f"Dr. {i}")[1] for i in range(a.clinicians)]
        child_store.close()
        proc, url = start_server(child_cfg, tmp)
        rss_child0 = rss_mb(proc.pid)

        async def run_all():
            import httpx

            backend = OpenAIBackend(cfg.backend)
            s = cfg.sampling

            async def direct(i: int) -> bool:
                reqs = [ChatRequest(cfg.model, (("system", service.prompt.text), ("user", message(i))),
                                    sampling=Sampling(s.temperature, s.top_p, s.max_tokens, j)) for j in range(a.n)]
                got = await asyncio.gather(*(backend.complete(r) for r in reqs))
                return len(got) == a.n

            async def in_service(i: int) -> bool:
                view = await service.draft(people[i % len(people)], message(i), n=a.n)
                return len(view["drafts"]) == a.n

            async with httpx.AsyncClient(base_url=url, timeout=60,
                                         limits=httpx.Limits(max_connections=a.clinicians * 2)) as http:
                async def over_http(i: int) -> bool:
                    r = await http.post("/drafts", json={"message": message(i), "n": a.n},
                                        headers={"authorization": f"Bearer {child_tokens[i % len(child_tokens)]}"})
                    return r.status_code == 200 and len(r.json()["drafts"]) == a.n

                results = {}
                for name, fn, db in (("direct", direct, None), ("service", in_service, Path(cfg.db)),
                                     ("http", over_http, Path(child_cfg.db))):
                    before = draft_sets(db) if db else 0
                    lat, sent, answered = await workers(a.clinicians, a.seconds, fn)
                    rows = draft_sets(db) - before if db else answered
                    results[name] = report(name, lat, sent, answered, a.seconds)
                    lost = sent - answered + abs(rows - answered)
                    print(f"{'':8s} lost {lost}" + (f", draft-set rows {rows}" if db else ""))
            await backend.aclose()
            return results

        res = asyncio.run(run_all())
        rss_child = rss_mb(proc.pid)
        proc.terminate()
        proc.wait(timeout=30)
    d50, d95 = res["direct"]
    print("overhead against the backend alone (direct):")
    for name in ("service", "http"):
        p50, p95 = res[name]
        print(f"  {name:8s} p50 {p50 - d50:+7.1f} ms ({p50 / d50 - 1:+.1%})   p95 {p95 - d95:+7.1f} ms ({p95 / d95 - 1:+.1%})")
    print(f"RSS: bench process {rss0:.0f} MB at start, {rss_mb():.0f} MB at end (draft pages held: "
          f"{len(service.memory)}); server process {rss_child0:.0f} MB at start, {rss_child:.0f} MB at end")


if __name__ == "__main__":
    main()
