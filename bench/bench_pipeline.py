"""Pipeline benchmarks: throughput, memory, and resume after kill -9.

    python bench/bench_pipeline.py throughput --speeches 3000 --inflight 64 256
    python bench/bench_pipeline.py memory --speeches 100000
    python bench/bench_pipeline.py resume --speeches 2000
    python bench/bench_pipeline.py plots --speeches 1000

throughput: generate + judge through the real stages (requests built, sent over HTTP to a local
  OpenAI-compatible server adding 50 ms per request, replies parsed and stored in SQLite), beside a
  bare loop over the official `openai` async client on the same server. The bound is
  in_flight / 0.05 s; client CPU is this process's CPU time, all threads (the server runs in another
  process). "steady" leaves out each stage's first round (opening connections) and last (in flight
  falls to zero as the plan runs out): the rate between the 10th and 90th percentile of completion
  times, per stage, so it does not depend on how many requests the bench sends.
memory: a 100k-speech run through a zero-latency in-process fake backend; peak RSS.
resume: a run in a subprocess is killed with SIGKILL about half way; the rerun's server-side
  request count shows how many calls were repeated.
plots: the dataset report's figures for a judged synthetic run (zero-latency fake backend), timed
  best of 5 (interleaved), beside saving them as the report did before (savefig laying the figure
  out again after tight_layout); the PNGs must be byte-identical.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import resource
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from psychocounsel import PRINCIPLE_KEYS
from psychocounsel.dataset import pipeline
from psychocounsel.backends.base import Completion
from psychocounsel.config import RunConfig
from psychocounsel.testing.fakeserver import fake_server

WORDS = ("feel tired anxious work partner mother father school sleep money friends lonely angry sad "
         "worried future job family night morning weekend panic heart chest breathe cry talk listen "
         "hope afraid stuck lost careful better worse always never sometimes today yesterday week "
         "month year brother sister child boss team exam grade house move city therapy doctor").split()


def synthetic_speeches(path: Path, n: int, seed: int = 0) -> Path:
    """n distinct speeches of 200-600 characters (random words: no two are near duplicates)."""
    rng = random.Random(seed)
    with path.open("w") as f:
        for i in range(n):
            words, size = ["I"], 0
            target = rng.randint(200, 600)
            while size < target:
                w = rng.choice(WORDS)
                words.append(w)
                size += len(w) + 1
            f.write(json.dumps({"text": " ".join(words) + f" ({i}).", "topic": "synthetic"}) + "\n")
    return path


def config(run_dir: Path, speeches: Path, base_urls: list[str], inflight: int, k: int = 2) -> RunConfig:
    return RunConfig.model_validate({
        "run_dir": str(run_dir),
        "speeches": {"path": str(speeches), "min_chars": 0, "max_chars": 5000, "near_dup_threshold": 1.0},
        "backends": {"srv": {"type": "openai", "base_urls": base_urls, "api_key_env": None,
                             "concurrency": inflight, "max_retries": 2}},
        "therapists": {"k": k, "profiles": [
            {"name": f"t{i}", "backend": "srv", "model": f"model-{i}", "sampling": {"max_tokens": 64}}
            for i in range(k)]},
        "judge": {"backend": "srv", "model": "judge", "mode": "json"},
    })


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


async def official_client(base_url: str, n: int, inflight: int) -> tuple[float, list[float]]:
    """Wall time and each request's completion time (time.time())."""
    from openai import AsyncOpenAI

    client = AsyncOpenAI(base_url=base_url, api_key="unused", max_retries=0)
    it = iter(range(n))
    done: list[float] = []

    async def worker():
        for i in it:
            await client.chat.completions.create(model="m", max_tokens=64,
                                                 messages=[{"role": "user", "content": f"hello {i}"}])
            done.append(time.time())

    t0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(inflight)))
    await client.close()
    return time.perf_counter() - t0, done


def steady_rate(done: list[float]) -> float:
    """Requests per second between the 10th and 90th percentile of completion times."""
    done = sorted(done)
    lo, hi = done[len(done) // 10], done[len(done) * 9 // 10]
    return (len(done) * 9 // 10 - len(done) // 10) / (hi - lo)


class Timed:
    """A backend that notes when each call completes (about 1 us a call), for the steady-state rate."""

    def __init__(self, backend):
        self.backend = backend
        self.done: list[tuple[str, float]] = []

    def identity(self, model=None):
        return self.backend.identity(model)

    async def complete(self, req):
        c = await self.backend.complete(req)
        self.done.append((req.model, time.time()))
        return c

    async def aclose(self):
        await self.backend.aclose()


def throughput(args) -> None:
    rows = []
    with tempfile.TemporaryDirectory() as tmp, fake_server(latency=0.05) as srv:
        speeches = synthetic_speeches(Path(tmp) / "s.jsonl", args.speeches)
        for inflight in args.inflight:
            # official client, bare loop: the baseline the speed goal is measured against
            n = min(args.speeches * 4, 20 * inflight * 5)
            c0 = time.process_time()
            wall, done = asyncio.run(official_client(srv.base_url, n, inflight))
            rows.append(("openai client (bare loop)", inflight, n, n / wall, steady_rate(done),
                         (time.process_time() - c0) / n * 1e3))
            # our pipeline: generate + judge, stored and parsed
            run = pipeline.Run(config(Path(tmp) / f"run{inflight}", speeches, [srv.base_url], inflight),
                               progress=pipeline.StageProgress(enabled=False))
            pipeline.stage_ingest(run)
            timed = Timed(run.backend("srv"))
            run.set_backend("srv", timed)
            c0, t0 = time.process_time(), time.perf_counter()

            async def both():
                try:
                    g = await pipeline.stage_generate(run)
                    j = await pipeline.stage_judge(run)
                    return g, j
                finally:
                    await run.aclose()

            g, j = asyncio.run(both())
            wall, cpu = time.perf_counter() - t0, time.process_time() - c0
            calls = g["generated"] + g["failed"] + j["judged"] + j["failed"]
            assert j["judged"] == g["generated"], (g, j)
            stages = [[t for model, t in timed.done if (model == "judge") == judge] for judge in (False, True)]
            steady = len(stages) / sum(1 / steady_rate(done) for done in stages)  # both stages, equal counts
            rows.append(("psychocounsel pipeline (gen+judge, stored)", inflight, calls, calls / wall, steady,
                         cpu / calls * 1e3))
            run.close()
    print(f"\n{'what':44} {'in flight':>9} {'requests':>9} {'req/s':>8} {'% bound':>8} {'steady':>7} "
          f"{'CPU ms/req':>10}")
    for what, inflight, n, rps, steady, cpu in rows:
        bound = inflight / 0.05
        print(f"{what:44} {inflight:>9} {n:>9} {rps:>8.0f} {100 * rps / bound:>7.1f}% {100 * steady / bound:>6.1f}% "
              f"{cpu:>10.3f}")


class InstantBackend:
    """Zero-latency in-process backend: measures the pipeline's own memory and CPU."""

    def identity(self, model=None):
        return {"type": "instant"}

    async def complete(self, req):
        if req.model == "judge":
            h = hash(req.messages[-1][1])
            text = json.dumps({**{k: 1 + (h >> (3 * i)) % 5 for i, k in enumerate(PRINCIPLE_KEYS)}, "rationale": "x"})
        else:
            text = f"({req.model}) It sounds like a lot to carry. What feels hardest right now? " * 2
        return Completion(text=text, prompt_tokens=100, completion_tokens=30, raw=text)

    async def aclose(self):
        pass


def memory(args) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        speeches = synthetic_speeches(Path(tmp) / "s.jsonl", args.speeches)
        run = pipeline.Run(config(Path(tmp) / "run", speeches, ["http://127.0.0.1:9/v1"], 256),
                           progress=pipeline.StageProgress(enabled=not args.quiet))
        run.set_backend("srv", InstantBackend())
        t0 = time.perf_counter()
        pipeline.stage_ingest(run)
        t1 = time.perf_counter()
        g = asyncio.run(pipeline.stage_generate(run))
        j = asyncio.run(pipeline.stage_judge(run))
        t2 = time.perf_counter()
        res = pipeline.stage_pairs(run)
        t3 = time.perf_counter()
        db = (Path(tmp) / "run" / "run.sqlite").stat().st_size / 1e6
        print(f"speeches {args.speeches:,}: ingest {t1 - t0:.1f}s, generate+judge {t2 - t1:.1f}s "
              f"({(g['generated'] + j['judged']) / (t2 - t1):,.0f} calls/s), pairs {t3 - t2:.1f}s, "
              f"pairs {res['counts']}, db {db:.0f} MB, peak RSS {rss_mb():.0f} MB")


def resume(args) -> None:
    with tempfile.TemporaryDirectory() as tmp, fake_server(latency=0.05) as srv:
        speeches = synthetic_speeches(Path(tmp) / "s.jsonl", args.speeches)
        cfg = config(Path(tmp) / "run", speeches, [srv.base_url], 64)
        cfg_path = Path(tmp) / "cfg.json"
        cfg_path.write_text(cfg.model_dump_json())
        total = args.speeches * 2 * 2
        child = subprocess.Popen([sys.executable, __file__, "_child", str(cfg_path)])
        while _served(srv.base_url) < total // 2:
            time.sleep(0.05)
        child.send_signal(signal.SIGKILL)
        child.wait()
        served_before = _served(srv.base_url)
        run = pipeline.Run(RunConfig.model_validate_json(cfg_path.read_text()),
                           progress=pipeline.StageProgress(enabled=False))
        stored = run.store.con.execute("SELECT count(*) FROM calls").fetchone()[0]
        run.close()
        subprocess.run([sys.executable, __file__, "_child", str(cfg_path)], check=True)
        served_after = _served(srv.base_url) - served_before
        repeats = served_after - (total - stored)
        print(f"killed after {served_before} served requests ({stored} stored); rerun made {served_after} "
              f"requests for {total - stored} missing answers: {repeats} repeats of stored answers")


def plots(args) -> None:
    from matplotlib.figure import Figure

    from psychocounsel.dataset import report_views, stats

    with tempfile.TemporaryDirectory() as tmp:
        speeches = synthetic_speeches(Path(tmp) / "s.jsonl", args.speeches)
        run = pipeline.Run(config(Path(tmp) / "run", speeches, ["http://127.0.0.1:9/v1"], 256, k=4),
                           progress=pipeline.StageProgress(enabled=False))
        run.set_backend("srv", InstantBackend())
        pipeline.stage_ingest(run)
        asyncio.run(pipeline.stage_generate(run))
        asyncio.run(pipeline.stage_judge(run))
        pipeline.stage_pairs(run)
        report = stats.dataset_report(run.dir / "pairs", Path(tmp) / "report", responses=pipeline.export_responses(run))
        run.close()
        figures = {"pairs_per_split": report_views._plot_splits, "gap": report_views._plot_gap,
                   "principles": report_views._plot_principles, "models": report_views._plot_models,
                   "response_scores": report_views._plot_responses}
        ours = report_views._save

        def before(fig: Figure, path: Path) -> None:
            fig.tight_layout()
            fig.savefig(path, dpi=100)

        times: dict[str, dict[str, float]] = {name: {"before": float("inf"), "now": float("inf")} for name in figures}
        for how in ("before", "now"):
            (Path(tmp) / how).mkdir()
        for _ in range(args.repeat):  # interleaved, best of: other load on the machine hits both alike
            for how, save in (("before", before), ("now", ours)):
                report_views._save = save
                for name, plot in figures.items():
                    t0 = time.perf_counter()
                    plot(report, Path(tmp) / how / f"{name}.png")
                    times[name][how] = min(times[name][how], time.perf_counter() - t0)
        report_views._save = ours
        same = all((Path(tmp) / "before" / f"{n}.png").read_bytes() == (Path(tmp) / "now" / f"{n}.png").read_bytes()
                   for n in figures)
    print(f"\n{'figure':18} {'before ms':>10} {'now ms':>8}")
    for name, t in times.items():
        print(f"{name:18} {t['before'] * 1e3:>10.0f} {t['now'] * 1e3:>8.0f}")
    total = {how: sum(t[how] for t in times.values()) for how in ("before", "now")}
    print(f"{'all five':18} {total['before'] * 1e3:>10.0f} {total['now'] * 1e3:>8.0f}   PNGs byte-identical: {same}")


def _served(base_url: str) -> int:
    with urllib.request.urlopen(base_url.rsplit("/v1", 1)[0] + "/stats") as r:
        return json.loads(r.read())["requests"]


def _child(cfg_path: str) -> None:
    run = pipeline.Run(RunConfig.model_validate_json(Path(cfg_path).read_text()),
                       progress=pipeline.StageProgress(enabled=False))
    pipeline.stage_ingest(run)

    async def both():
        try:
            await pipeline.stage_generate(run)
            await pipeline.stage_judge(run)
        finally:
            await run.aclose()

    asyncio.run(both())


def main() -> None:
    if len(sys.argv) > 2 and sys.argv[1] == "_child":
        return _child(sys.argv[2])
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("throughput")
    t.add_argument("--speeches", type=int, default=3000)
    t.add_argument("--inflight", type=int, nargs="+", default=[64, 256])
    m = sub.add_parser("memory")
    m.add_argument("--speeches", type=int, default=100_000)
    m.add_argument("--quiet", action="store_true")
    r = sub.add_parser("resume")
    r.add_argument("--speeches", type=int, default=2000)
    p = sub.add_parser("plots")
    p.add_argument("--speeches", type=int, default=1000)
    p.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    {"throughput": throughput, "memory": memory, "resume": resume, "plots": plots}[args.cmd](args)


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    main()
