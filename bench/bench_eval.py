"""Evaluation benchmarks: pairwise-judge throughput against a 50 ms server, and the cost of a rerun.

    python bench/bench_eval.py --speeches 3000 --inflight 64 256

throughput: the real evaluate stages (requests built from the pairwise prompt, sent over HTTP to a local
  OpenAI-compatible fake server that adds 50 ms per request, verdicts parsed and stored in SQLite with the
  call cache). Generation runs first through the same server; the judge stage (2 verdicts per speech: both
  orders) is timed on its own. Bound = in_flight / 0.05 s. Client CPU = this process's CPU time (the server
  is another process).
rerun: the same evaluation opened again and run to the end: every call is a cache hit (the server's request
  count must not move), then results.json, report.html and the charts are rebuilt. Wall time is reported.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from psychocounsel.evaluation.config import EvalConfig
from psychocounsel.dataset.session import CallBudget
from psychocounsel.evaluation.evaluate import evaluate
from psychocounsel.evaluation.session import Evaluation
from psychocounsel.evaluation.stages import stage_generate, stage_judge
from psychocounsel.testing.fakeserver import fake_server
from psychocounsel.runner import StageProgress

WORDS = ("feel tired anxious work partner mother father school sleep money friends lonely angry sad worried "
         "future job family night morning weekend panic heart chest breathe cry talk listen hope afraid stuck "
         "lost careful better worse always never sometimes today yesterday week month year").split()
VERDICT = '{"rationale": "fake judge", "winner": "A"}'


def synthetic_speeches(path: Path, n: int, seed: int = 0) -> Path:
    rng = random.Random(seed)
    with path.open("w") as f:
        for i in range(n):
            words = ["I"] + [rng.choice(WORDS) for _ in range(rng.randint(40, 100))]
            f.write(json.dumps({"text": " ".join(words) + f" ({i})."}) + "\n")
    return path


def config(out: Path, speeches: Path, base_url: str, inflight: int) -> EvalConfig:
    return EvalConfig.model_validate({
        "name": f"bench-{inflight}", "out_dir": str(out),
        "speeches": {"source": "file", "path": str(speeches), "min_chars": 0, "max_chars": 5000},
        "backends": {"srv": {"type": "openai", "base_urls": [base_url], "api_key_env": None,
                             "concurrency": inflight, "max_retries": 2}},
        "policy": {"name": "policy", "backend": "srv", "model": "policy-model", "sampling": {"max_tokens": 64}},
        "reference": {"name": "reference", "backend": "srv", "model": "reference-model",
                      "sampling": {"max_tokens": 64}},
        "pairwise": {"backend": "srv", "model": "judge"},
        "bootstrap": {"n_boot": 1000},
    })


def served(base_url: str) -> int:
    with urllib.request.urlopen(base_url.rsplit("/v1", 1)[0] + "/stats") as r:
        return json.loads(r.read())["requests"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--speeches", type=int, default=3000)
    ap.add_argument("--inflight", type=int, nargs="+", default=[64, 256])
    args = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp, fake_server(latency=0.05, judge_reply=VERDICT) as srv:
        speeches = synthetic_speeches(Path(tmp) / "s.jsonl", args.speeches)
        for inflight in args.inflight:
            cfg = config(Path(tmp) / f"eval{inflight}", speeches, srv.base_url, inflight)
            ev = Evaluation(cfg, progress=StageProgress(enabled=False), budget=CallBudget())

            async def stages():
                try:
                    gen = await stage_generate(ev)
                    c0, t0 = time.process_time(), time.perf_counter()
                    jud = await stage_judge(ev)
                    return gen, jud, time.perf_counter() - t0, time.process_time() - c0
                finally:
                    await ev.aclose()

            gen, jud, wall, cpu = asyncio.run(stages())
            calls = jud["verdicts_judged"] + jud["verdicts_failed"]
            assert jud["verdicts_judged"] == 2 * args.speeches, jud
            t0 = time.perf_counter()
            first = evaluate(ev, calls=False)
            report_s = time.perf_counter() - t0
            ev.close()
            rows.append((inflight, calls, calls / wall, 100 * calls / wall / (inflight / 0.05), cpu / calls * 1e3))
            # rerun: a fresh process state, the whole command path, zero calls expected
            before = served(srv.base_url)
            t0 = time.perf_counter()
            ev2 = Evaluation(cfg, progress=StageProgress(enabled=False), budget=CallBudget())
            again = evaluate(ev2)
            rerun_s = time.perf_counter() - t0
            ev2.close()
            new_requests = served(srv.base_url) - before
            assert again["pairwise"]["win_rate"] == first["pairwise"]["win_rate"] == 0.5
            print(f"in flight {inflight}: judge {calls} verdicts in {wall:.2f} s; report build {report_s:.2f} s; "
                  f"rerun of the finished evaluation {rerun_s:.2f} s with {new_requests} requests to the server "
                  f"({again['calls']['made_this_run']} model calls)")
    print(f"\n{'pairwise judge (both orders, stored)':38} {'in flight':>9} {'requests':>9} {'req/s':>8} "
          f"{'% bound':>8} {'CPU ms/req':>10}")
    for inflight, n, rps, pct, cpu in rows:
        print(f"{'':38} {inflight:>9} {n:>9} {rps:>8.0f} {pct:>7.0f}% {cpu:>10.3f}")


if __name__ == "__main__":
    main()
