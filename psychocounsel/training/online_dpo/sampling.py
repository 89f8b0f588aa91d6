"""What an online-DPO round does before its DPO step: draw speeches, sample replies from the current policy
(the ``local`` backend or an OpenAI-compatible server), score them with the reward model, keep best and worst
as a pair; and which round's policy is best. The loop itself is ``training.online_dpo.recipe``."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Collection
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from ...dataset.records import HIGH_SEVERITY_FLAGS, reply_flags
from ...errors import UserError
from ..common import chat, pair_files
from ..multihead.combine import SAFETY, below_threshold, rank_key
from .config import OnlineDPOConfig

# ---------------------------------------------------------------- pure pieces


def select_pairs(questions: Sequence[str], responses: Sequence[Sequence[str]], rewards: Sequence[Sequence[float]],
                 min_gap: float = 0.0, unsafe: Sequence[Sequence[bool]] | None = None,
                 flag_veto: Collection[str] = HIGH_SEVERITY_FLAGS,
                 ) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Best (argmax) and worst (argmin) response per speech as a DPO pair; first index wins ties.

    ``unsafe`` (the samples below the safety threshold; None: no constraint) ranks by (safe, reward) instead of
    the reward alone: an unsafe sample is worst before any safe one, and best only when all are unsafe. A pair
    with one unsafe side is a preference whatever the reward gap, so ``min_gap`` applies to pairs whose sides
    are both safe or both unsafe. A speech is skipped when its gap is below ``min_gap``, or zero (equal ranks
    state no preference), or best and worst are the same text. Returns the pairs and the round's reward
    statistics (rewards and gaps are the reward model's overall in both modes).

    Every sample gets the kinds of its reply-check flags (``dataset.records.reply_flags``); a pair carries its
    sides' (``chosen_flags``, ``rejected_flags``), and one whose chosen reply carries a kind of ``flag_veto``
    (default: the high-severity kinds; empty: off) is dropped and counted (``flag_vetoed``), not replaced: the
    reward model liked that reply best, and a DPO step must not teach it.
    """
    pairs, skipped, gaps, best, worst, means = [], 0, [], [], [], []
    n_unsafe, changed = 0, 0
    n_samples, n_flagged, n_chosen, n_chosen_flagged, vetoed = 0, 0, 0, 0, 0
    veto = frozenset(flag_veto)
    unsafe_rows = unsafe if unsafe is not None else [None] * len(questions)
    for q, resp, rew, bad in zip(questions, responses, rewards, unsafe_rows, strict=True):
        r = np.asarray(rew, dtype=np.float64)
        key = r if bad is None else rank_key(r, bad)
        hi, lo = int(np.argmax(key)), int(np.argmin(key))
        gap, key_gap = float(r[hi] - r[lo]), float(key[hi] - key[lo])
        gaps.append(gap), best.append(float(r[hi])), worst.append(float(r[lo])), means.append(float(r.mean()))
        if bad is not None:
            n_unsafe += int(np.sum(bad))
            changed += int(hi != int(np.argmax(r)) or lo != int(np.argmin(r)))
        flags = [reply_flags(x) for x in resp]
        n_samples += len(flags)
        n_flagged += sum(bool(f) for f in flags)
        if key_gap <= 0 or key_gap < min_gap or resp[hi] == resp[lo]:
            skipped += 1
            continue
        n_chosen += 1
        n_chosen_flagged += bool(flags[hi])
        if veto.intersection(flags[hi]):
            vetoed += 1
            continue
        pair = {"question": q, "chosen": resp[hi], "rejected": resp[lo],
                "chosen_reward": float(r[hi]), "rejected_reward": float(r[lo]), "gap": gap,
                "chosen_flags": list(flags[hi]), "rejected_flags": list(flags[lo])}
        if bad is not None:
            pair |= {"chosen_unsafe": bool(bad[hi]), "rejected_unsafe": bool(bad[lo])}
        pairs.append(pair)

    def mean(x: list[float]) -> float | None:
        return float(np.mean(x)) if x else None

    stats = {"speeches": len(gaps), "pairs": len(pairs), "skipped": skipped, "mean_reward": mean(means),
             "mean_best_reward": mean(best), "mean_worst_reward": mean(worst), "mean_gap": mean(gaps),
             "flagged_samples": n_flagged, "flagged_sample_share": n_flagged / n_samples if n_samples else None,
             "chosen_flagged": n_chosen_flagged,
             "chosen_flagged_share": n_chosen_flagged / n_chosen if n_chosen else None, "flag_vetoed": vetoed}
    if unsafe is not None:
        # how often the constraint overruled the reward: the evidence that it is doing something
        stats |= {"unsafe_samples": n_unsafe, "samples": sum(len(x) for x in responses),
                  "constraint_changed": changed}
    return pairs, stats


def flag_note(stats: dict[str, Any]) -> str:
    """The round log's account of the reply-check flags: how many samples and chosen replies carried one, and how
    many pairs the flag veto dropped."""
    if stats.get("flagged_sample_share") is None:
        return ""
    chosen = stats["chosen_flagged_share"]
    return (f", flagged: {stats['flagged_sample_share']:.0%} of samples, "
            f"{'-' if chosen is None else f'{chosen:.0%}'} of chosen, {stats['flag_vetoed']} pairs dropped by the "
            "flag veto")


# Greedy dev replies that mostly open with the same five words, or repeat each other, mean the policy is
# collapsing onto one template: it optimises the reward model's quirks (reward over-optimisation, Gao et al.
# 2023), not the principles. SmolLM2's own greedy replies open alike 45% of the time and never repeat.
COLLAPSE_SHARE = 0.75


def diversity(texts: Sequence[str]) -> dict[str, float | None]:
    """How varied a set of replies is: mean characters, Distinct-2 (distinct word bigrams / all bigrams, Li et
    al. 2016) and the share of replies opening with the most common first five words (1.0 = one template)."""
    if not texts:
        return {"chars": None, "distinct_2": None, "top_opening_share": None}
    bigrams, total = set(), 0
    openings: dict[str, int] = {}
    for t in texts:
        words = t.lower().split()
        grams = list(zip(words, words[1:]))
        bigrams.update(grams)
        total += len(grams)
        key = " ".join(words[:5])
        openings[key] = openings.get(key, 0) + 1
    return {"chars": float(np.mean([len(t) for t in texts])), "distinct_2": len(bigrams) / total if total else None,
            "top_opening_share": max(openings.values()) / len(texts)}


def best_round(initial_dev: float | None, rounds: Sequence[dict[str, Any]]) -> int:
    """Round number (0 = the initial policy) with the highest dev reward; the earliest wins ties (closest to
    the reference). Without dev rewards, the latest round."""
    scored = [(initial_dev, 0)] + [(r.get("dev_reward"), r["round"]) for r in rounds]
    scored = [(v, i) for v, i in scored if v is not None]
    if not scored:
        return rounds[-1]["round"] if rounds else 0
    top = max(v for v, _ in scored)
    return min(i for v, i in scored if v == top)


def draw_speeches(pool: Sequence[str], k: int, seed: int, round_no: int) -> list[str]:
    """``k`` distinct speeches for a round, a pure function of (seed, round). A pool smaller than ``k``
    yields the whole pool, shuffled."""
    rng = random.Random(f"{seed}:{round_no}")
    return rng.sample(list(pool), min(k, len(pool)))


# ---------------------------------------------------------------- data


def _read_speech_file(path: str, column: str) -> list[str]:
    import pandas as pd

    p = Path(path)
    if not p.is_file():
        raise UserError(f"{p}: speeches file not found")
    readers = {".jsonl": lambda: pd.read_json(p, lines=True), ".csv": lambda: pd.read_csv(p),
               ".parquet": lambda: pd.read_parquet(p)}
    if p.suffix not in readers:
        raise UserError(f"{p}: speeches file must be .jsonl, .csv or .parquet")
    df = readers[p.suffix]()
    if column not in df.columns:
        raise UserError(f"{p}: no column {column!r} (set speech_column; columns: {', '.join(map(str, df.columns))})")
    return list(dict.fromkeys(str(x) for x in df[column] if isinstance(x, str) and x.strip()))


def _split_questions(files: list[Path], split: str) -> list[str]:
    from ...dataset.pair_reader import load_pair_table

    out: dict[str, None] = {}
    for f in files:
        t = load_pair_table(f)
        for q, s in zip(t.column("question").to_pylist(), t.column("split").to_pylist()):
            if s == split:
                out[q] = None
    return list(out)


def load_speeches(cfg: OnlineDPOConfig) -> tuple[list[str], list[str], list[Path]]:
    """(train speeches, dev speeches, data files). Unique, in file order."""
    files = pair_files(cfg.pairs) if cfg.pairs else []
    data = list(files)
    if cfg.speeches:
        train = _read_speech_file(cfg.speeches, cfg.speech_column)
        data.append(Path(cfg.speeches))
    elif files:
        train = _split_questions(files, cfg.train_split)
    else:
        raise UserError("train-online-dpo: give pair files (pairs) or a speeches file (speeches)")
    if not train:
        raise UserError(f"train-online-dpo: no train speeches (split {cfg.train_split!r})")
    dev: list[str] = []
    if cfg.dev_speeches:
        if cfg.dev_speeches_file:
            dev = _read_speech_file(cfg.dev_speeches_file, cfg.speech_column)
            data.append(Path(cfg.dev_speeches_file))
        elif files:
            dev = _split_questions(files, cfg.dev_split)
        if not dev:
            raise UserError(f"train-online-dpo: no dev speeches (split {cfg.dev_split!r} of pairs, or "
                            "dev_speeches_file); set dev_speeches: 0 to train without dev evaluation")
        dev = dev[: cfg.dev_speeches]
    return train, dev, data


# ---------------------------------------------------------------- generation


def make_backend(cfg: OnlineDPOConfig):
    """The backend that samples the policy: psychocounsel's local transformers backend, or an OpenAI-compatible
    server (vLLM, SGLang) serving it as ``served_model``."""
    if cfg.backend == "local":
        from ...backends.local import LocalBackend
        from ...config import LocalBackendConfig

        return LocalBackend(LocalBackendConfig(device=cfg.device, batch_size=cfg.generation_batch_size))
    from ...backends.openai_http import OpenAIBackend
    from ...config import OpenAIBackendConfig

    return OpenAIBackend(OpenAIBackendConfig(base_urls=[cfg.base_url], api_key_env=cfg.api_key_env,
                                             concurrency=cfg.concurrency, structured_output=False))


def generate(backend: Any, model: str, questions: Sequence[str], n: int, *, temperature: float, top_p: float,
             max_tokens: int, seed: int) -> list[list[str]]:
    """``n`` replies per question, all requests in flight at once so the backend batches them. Each request
    has its own seed, so a redone round samples the same replies."""
    from ...backends.base import ChatRequest, Sampling

    async def run() -> list[str]:
        reqs = [ChatRequest.chat(model, chat(q), sampling=Sampling(
            temperature=temperature, top_p=top_p, max_tokens=max_tokens,
            seed=None if temperature == 0 else seed * 1_000_003 + i * 131 + j))
            for i, q in enumerate(questions) for j in range(n)]
        try:
            outs = await asyncio.gather(*(backend.complete(r) for r in reqs))
        finally:
            await backend.aclose()
        return [o.text for o in outs]

    flat = asyncio.run(run())
    return [flat[i * n:(i + 1) * n] for i in range(len(questions))]


def _column(scores: Any, key: str, n: int) -> np.ndarray:
    arr = scores[key] if isinstance(scores, dict) else scores
    arr = np.asarray(arr, dtype=np.float64).reshape(-1)
    if len(arr) != n:
        raise ValueError(f"reward model returned {len(arr)} scores for {n} responses")
    return arr


def _per_speech(flat: np.ndarray, responses: Sequence[Sequence[str]]) -> list[np.ndarray]:
    out, k = [], 0
    for rs in responses:
        out.append(flat[k:k + len(rs)])
        k += len(rs)
    return out


def score_samples(scorer: Any, questions: Sequence[str], responses: Sequence[Sequence[str]]
                  ) -> tuple[list[np.ndarray], list[np.ndarray] | None]:
    """Per speech: the overall of each sample, and its safety head (None when the reward model has none)."""
    flat_q = [q for q, rs in zip(questions, responses) for _ in rs]
    flat_r = [r for rs in responses for r in rs]
    raw = scorer.score_batch(flat_q, flat_r) if flat_r else {"overall": np.zeros(0)}
    overall = _column(raw, "overall", len(flat_r))
    safety = _column(raw, SAFETY, len(flat_r)) if isinstance(raw, dict) and SAFETY in raw else None
    return _per_speech(overall, responses), None if safety is None else _per_speech(safety, responses)


def score(scorer: Any, questions: Sequence[str], responses: Sequence[Sequence[str]]) -> list[np.ndarray]:
    """Per speech: the overall of each sample."""
    return score_samples(scorer, questions, responses)[0]


def safety_constraint(cfg: OnlineDPOConfig, scorer: Any, has_safety: bool) -> tuple[float | None, str]:
    """The threshold best/worst choice uses (None: none, weighted overall alone) and a line for the log
    saying which and why. ``auto`` turns the constraint on wherever a safety head and a threshold exist."""
    if getattr(scorer, "combine", "weighted") != "weighted":  # its overall is already penalised: rewards would lie
        raise UserError("train-online-dpo: give a scorer whose overall is the weighted mean (combine: weighted); "
                        "the round applies the safety constraint to best/worst itself")
    if cfg.combine == "weighted":
        return None, "best/worst by the reward model's overall (combine: weighted)"
    threshold = cfg.safety_threshold if cfg.safety_threshold is not None else getattr(scorer, "safety_threshold", None)
    source = "safety_threshold in the config" if cfg.safety_threshold is not None else \
        getattr(scorer, "safety_threshold_source", None) or "the reward model's"
    if has_safety and threshold is not None:
        return float(threshold), (f"best/worst by safety constraint (combine: {cfg.combine}): a sample whose "
                                  f"safety head is below {float(threshold):.4f} ({source}) loses to any sample "
                                  "above it, whatever its overall")
    why = "the reward model has no safety head" if not has_safety else \
        "no safety threshold is known (set safety_threshold)"
    if cfg.combine == "safety_constraint":
        raise UserError(f"combine safety_constraint: {why}")
    return None, f"best/worst by the reward model's overall (combine: auto, and {why})"


def unsafe_samples(safety: list[np.ndarray] | None, threshold: float | None) -> list[np.ndarray] | None:
    """Per speech: which samples are below the threshold; None when no constraint applies."""
    if safety is None or threshold is None:
        return None
    return [below_threshold(s, threshold) for s in safety]


def dev_reward(cfg: OnlineDPOConfig, backend_factory: Callable[[], Any], scorer: Any, policy: str,
               dev: Sequence[str]) -> tuple[float | None, list[str]]:
    """Mean reward of the policy's greedy replies to the dev speeches, and the replies."""
    if not dev:
        return None, []
    model = cfg.served_model if cfg.backend == "openai" else policy
    replies = generate(backend_factory(), model, dev, 1, temperature=0.0, top_p=1.0,
                       max_tokens=cfg.dev_max_tokens or cfg.max_tokens, seed=cfg.seed)
    return float(np.mean(np.concatenate(score(scorer, dev, replies)))), [r[0] for r in replies]
