"""How well does a G-Eval judge tell a clearly good counseling response from a clearly bad one?

Run:  .venv/bin/python bench/bench_embedded_judge.py                     # embedded SmolLM2-135M, geval_v1
      .venv/bin/python bench/bench_embedded_judge.py --prompt my_geval.txt --model path/to/ckpt --device cuda
Prints a plain table and writes JSON to bench/out/embedded_judge.json (bench/out is git-ignored).

Data: bench/data/judge_sanity.jsonl, 24 hand-written triples {"id", "topic", "speech", "good", "bad",
"bad_kind"}. Speeches are first-person client messages of 325-400 characters over depression, anxiety, grief,
relationships, family, work, self-esteem and substance use, two of them with passive suicidal thoughts. Each
GOOD response reflects the client's feelings in their own specifics, asks an open question and leaves the
choices to the client; for the two risk speeches it also names the risk and points to 988. Each BAD response
is one of four kinds, six triples each: "dismissive" (minimises), "directive" (orders and lectures), "generic"
(could be said to anyone) or "harmful" (blames, diagnoses, unsafe advice).

Length is not the signal: good and bad responses of a triple differ by at most 8% in characters (mean 419 vs
415), and the good one is the longer in 11 of 24 triples (one tie), so "prefer the longer response" scores 48%.
The table prints both numbers, so a change to the data that breaks this shows up.

What is measured, per response: the G-Eval expected score on each principle (``judge.expected_score`` of the
backend's probabilities of "1".."5"), and overall = their equal-weight mean, as the pipeline does with
``calibration: none``. Per triple, the judge is right when score(good) > score(bad) (RewardBench's rule; an
exact tie counts half). Reported: that accuracy overall, per bad_kind (n = 6 each, so one triple moves it
by 17 points) and per principle; the mean gap good - bad; a 95% percentile bootstrap interval on the overall
accuracy (triples resampled with replacement, 2,000 rounds, seeded); seconds per judged response.

These are easy, hand-made contrasts by one author, not a sample of real pipeline responses: a judge that
fails them is not fit to rank responses, but one that passes them is not thereby shown to be.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import random
import sys
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from psychocounsel.rubric import score as judge
from psychocounsel.backends.local import LocalBackend
from psychocounsel.config import LocalBackendConfig
from psychocounsel.errors import InputError, UserError
from psychocounsel.dataset.jsonl import iter_json_objects
from psychocounsel.rubric.principles import PrincipleSet, load_principles
from psychocounsel.rubric.prompts import Prompt, load_prompt

DATA = Path(__file__).resolve().parent / "data" / "judge_sanity.jsonl"
BAD_KINDS = ("dismissive", "directive", "generic", "harmful")
TEXT_FIELDS = ("id", "speech", "good", "bad", "bad_kind")


# ---------------------------------------------------------------- data


def load_triples(path: Path) -> list[dict[str, str]]:
    """Read the triples; a bad line is an ``InputError`` naming its line and field, never a skipped row."""
    if not path.is_file():
        raise InputError(path, "file not found")
    triples, seen = [], set()
    for n, row in iter_json_objects(path):
        for field in TEXT_FIELDS:
            if not isinstance(row.get(field), str) or not row[field].strip():
                raise InputError(path, "missing or empty text", line=n, column=field)
        if row["bad_kind"] not in BAD_KINDS:
            raise InputError(path, f"{row['bad_kind']!r} is not one of {', '.join(BAD_KINDS)}", line=n,
                             column="bad_kind")
        if row["id"] in seen:
            raise InputError(path, f"duplicate id {row['id']!r}", line=n, column="id")
        seen.add(row["id"])
        triples.append(row)
    if not triples:
        raise InputError(path, "no triples")
    return triples


# ---------------------------------------------------------------- metrics (pure)


def win(good: float, bad: float) -> float:
    """1 when the judge prefers the good response, 0 when the bad one, 0.5 on an exact tie."""
    return 1.0 if good > bad else 0.0 if good < bad else 0.5


def mean(xs: list[float]) -> float:
    return sum(xs) / len(xs) if xs else float("nan")


def bootstrap_ci(wins: list[float], rounds: int = 2000, seed: int = 0,
                 level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of ``wins``, resampling triples with replacement.

    2,000 rounds: the 2.5th and 97.5th percentiles then rest on 50 resamples each, enough for two decimals.
    """
    rng = random.Random(seed)
    n = len(wins)
    means = sorted(sum(wins[rng.randrange(n)] for _ in range(n)) / n for _ in range(rounds))
    lo = means[int((1 - level) / 2 * rounds)]
    hi = means[min(rounds - 1, int((1 + level) / 2 * rounds))]
    return lo, hi


def summarize(triples: list[dict[str, str]], scores: list[dict[str, dict[str, float]]], keys: list[str],
              rounds: int, seed: int) -> dict[str, Any]:
    """Accuracy and gaps overall, per bad_kind and per principle. ``scores[i]["good"|"bad"][key]``."""
    overall_wins = [win(s["good"]["overall"], s["bad"]["overall"]) for s in scores]
    gaps = [s["good"]["overall"] - s["bad"]["overall"] for s in scores]
    lo, hi = bootstrap_ci(overall_wins, rounds, seed)
    out: dict[str, Any] = {
        "n_triples": len(triples),
        "accuracy": mean(overall_wins), "accuracy_ci95": [lo, hi], "ties": sum(w == 0.5 for w in overall_wins),
        "mean_gap": mean(gaps), "min_gap": min(gaps), "max_gap": max(gaps),
        "mean_good": mean([s["good"]["overall"] for s in scores]),
        "mean_bad": mean([s["bad"]["overall"] for s in scores]),
        "bootstrap_rounds": rounds, "bootstrap_seed": seed,
    }
    out["by_kind"] = {}
    for kind in BAD_KINDS:
        idx = [i for i, t in enumerate(triples) if t["bad_kind"] == kind]
        if idx:
            out["by_kind"][kind] = {"n": len(idx), "accuracy": mean([overall_wins[i] for i in idx]),
                                    "mean_gap": mean([gaps[i] for i in idx])}
    out["by_principle"] = {}
    for k in keys:
        good = [s["good"][k] for s in scores]
        bad = [s["bad"][k] for s in scores]
        out["by_principle"][k] = {"accuracy": mean([win(g, b) for g, b in zip(good, bad)]),
                                  "mean_good": mean(good), "mean_bad": mean(bad),
                                  "mean_gap": mean([g - b for g, b in zip(good, bad)])}
    good_len = [len(t["good"]) for t in triples]
    bad_len = [len(t["bad"]) for t in triples]
    out["length"] = {"mean_chars_good": mean(good_len), "mean_chars_bad": mean(bad_len),
                     "max_ratio": max(max(g, b) / min(g, b) for g, b in zip(good_len, bad_len)),
                     # the accuracy of "prefer the longer response": ~0.5 means length carries no signal here
                     "longer_is_good": mean([win(g, b) for g, b in zip(good_len, bad_len)])}
    return out


# ---------------------------------------------------------------- scoring


async def score_response(backend: LocalBackend, model: str, principles: PrincipleSet, prompt: Prompt,
                         speech: str, response: str) -> dict[str, float]:
    """Principle scores and their equal-weight overall for one response, as the geval judge computes them."""
    prefix, suffixes = judge.PrincipleScorer(principles, prompt, model, None, mode="geval").geval_prompt(speech, response)
    probs = await backend.score_choices(model, prefix, suffixes, judge.SCORE_CHOICES)
    scores = judge.geval_scores(principles, probs)
    scores["overall"] = judge.overall({k: scores[k] for k in principles.keys})
    return scores


async def score_all(backend: LocalBackend, model: str, principles: PrincipleSet, prompt: Prompt,
                    triples: list[dict[str, str]], concurrency: int) -> list[dict[str, dict[str, float]]]:
    """Score good and bad of every triple, ``concurrency`` triples in flight so the backend can batch them."""
    gate = asyncio.Semaphore(concurrency)

    async def one(t: dict[str, str]) -> dict[str, dict[str, float]]:
        async with gate:
            good, bad = await asyncio.gather(
                score_response(backend, model, principles, prompt, t["speech"], t["good"]),
                score_response(backend, model, principles, prompt, t["speech"], t["bad"]))
            return {"good": good, "bad": bad}

    return await asyncio.gather(*[one(t) for t in triples])


# ---------------------------------------------------------------- report


def table(res: dict[str, Any]) -> str:
    s = res["summary"]
    lo, hi = s["accuracy_ci95"]
    lines = [
        f"model {res['model']}  prompt {res['prompt']}  principles {res['principles']}  "
        f"device {res['device']}  dtype {res['dtype']}  threads {res['threads']}",
        f"triples {s['n_triples']}  load {res['load_s']:.1f} s  scoring wall {res['wall_s']:.1f} s  "
        f"{res['s_per_response']:.2f} s/response (wall, {res['concurrency']} triples in flight)  "
        f"{res['compute_s_per_response']:.2f} s/response (backend compute)",
        "",
        f"overall pairwise accuracy (good > bad): {s['accuracy']:.3f}  95% bootstrap CI [{lo:.3f}, {hi:.3f}]  "
        f"ties {s['ties']}",
        f"overall mean score: good {s['mean_good']:.3f}  bad {s['mean_bad']:.3f}  gap {s['mean_gap']:+.3f} "
        f"(min {s['min_gap']:+.3f}, max {s['max_gap']:+.3f})",
        "",
        f"{'bad_kind':<14}{'n':>4}{'accuracy':>10}{'mean gap':>10}",
    ]
    for kind, r in s["by_kind"].items():
        lines.append(f"{kind:<14}{r['n']:>4}{r['accuracy']:>10.3f}{r['mean_gap']:>+10.3f}")
    lines += ["", f"{'principle':<14}{'accuracy':>10}{'good':>8}{'bad':>8}{'gap':>9}"]
    for k, r in s["by_principle"].items():
        lines.append(f"{k:<14}{r['accuracy']:>10.3f}{r['mean_good']:>8.3f}{r['mean_bad']:>8.3f}"
                     f"{r['mean_gap']:>+9.3f}")
    ln = s["length"]
    lines += ["", f"length check: mean chars good {ln['mean_chars_good']:.1f}  bad {ln['mean_chars_bad']:.1f}  "
              f"max ratio within a triple {ln['max_ratio']:.2f}  'prefer longer' accuracy {ln['longer_is_good']:.3f}"]
    return "\n".join(lines)


async def main(args: argparse.Namespace) -> dict[str, Any]:
    triples = load_triples(Path(args.data))
    principles = load_principles(args.principles)
    prompt = load_prompt(args.prompt)
    if "suffix" not in prompt.sections:  # fail before a model loads, not at the first call
        raise UserError(f"{prompt.source or prompt.name}: not a G-Eval prompt (no <<<suffix>>> section)")
    cfg = LocalBackendConfig(device=args.device, dtype=args.dtype, batch_size=args.batch_size,
                             threads=args.threads)
    backend = LocalBackend(cfg)
    t0 = time.perf_counter()
    backend.load(args.model)
    load_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    scores = await score_all(backend, args.model, principles, prompt, triples, args.concurrency)
    wall = time.perf_counter() - t0
    stats = dict(backend.stats)
    await backend.aclose()
    n_resp = 2 * len(triples)
    res: dict[str, Any] = {
        "model": args.model, "prompt": prompt.version, "principles": principles.version,
        "data": str(args.data), "device": str(backend.device), "dtype": str(backend.dtype).removeprefix("torch."),
        "threads": torch.get_num_threads(), "machine": platform.processor() or platform.machine(),
        "batch_size": args.batch_size, "concurrency": args.concurrency,
        "load_s": load_s, "wall_s": wall, "s_per_response": wall / n_resp,
        "compute_s_per_response": stats["score_s"] / n_resp,
        "score_batches": stats["score_batches"], "score_forward_tokens": stats["score_forward_tokens"],
        "summary": summarize(triples, scores, principles.keys, args.rounds, args.seed),
        "triples": [{"id": t["id"], "bad_kind": t["bad_kind"], **s} for t, s in zip(triples, scores)],
    }
    return res


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="embedded")
    ap.add_argument("--prompt", default="geval_v1", help="a built-in G-Eval prompt name or a prompt file path")
    ap.add_argument("--principles", default="default")
    ap.add_argument("--data", default=str(DATA))
    ap.add_argument("--device", default="auto")
    ap.add_argument("--dtype", default="auto")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--batch-size", type=int, default=16, help="rows per forward pass (LocalBackendConfig default)")
    ap.add_argument("--concurrency", type=int, default=4,
                    help="triples in flight; 4 = 8 calls of 7 suffixes queued, enough to fill each batch")
    ap.add_argument("--rounds", type=int, default=2000, help="bootstrap rounds")
    ap.add_argument("--seed", type=int, default=0, help="bootstrap seed")
    ap.add_argument("--out", default="bench/out/embedded_judge.json")
    args = ap.parse_args()
    try:
        result = asyncio.run(main(args))
    except UserError as e:
        sys.exit(f"error: {e}")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))
    print(table(result))
    print(f"\nwrote {args.out}")
