"""Benchmark training throughput against plain TRL on the same model, data and loss, side by side in one run:
the DPO step (``train-dpo``'s trainer vs ``DPOTrainer``) and the reward-model step (``train-rm``'s trainer vs
``RewardTrainer``).

Run:  .venv/bin/python bench/bench_train.py                    # DPO then RM, ~3 min on 2 CPU cores
      .venv/bin/python bench/bench_train.py --only rm           # one of them
      .venv/bin/python bench/bench_train.py --pairs runs/demo/pairs --rounds 2
      .venv/bin/python bench/bench_train.py --hidden 576 --layers 30 --vocab 49152   # ~SmolLM2-135M (slow)
      python3 bench/bench_train.py --device cuda --shape llama-3.2-1b --limit 181 --batch 16   # GPU + MFU
                                                                     # (how to run it there: bench/gpu/README.md)
Writes bench/out/train_dpo.json and bench/out/train_rm.json (and prints their summaries).

Model: a random Llama (hidden 256, 4 layers, 4.4M parameters) with a 4,096-token BPE trained on the bench's
text: real token counts (~4 characters a token), and the transformer body dominating the cost as in
SmolLM2-135M, small enough for 2 cores. Data: one pair per shipped demo speech (the first 48 of 181), the chosen
a reflective reply and the rejected a directive one, of varied length; or ``--pairs`` (our pair files or the
published parquet). Every variant trains one epoch (6 steps of 8 pairs) with the same seed, lr and schedule,
gradient checkpointing off in all (TRL's default is on; it would slow both alike).

tokens/s = real (unpadded) prompt+response tokens of chosen and rejected sequences trained on (as TRL counts
them) / wall time of ``trainer.train()`` (also per CPU-second of this process). Variants run in alternation
(``--rounds``) and the best round counts, since other processes on a shared machine only ever slow a run down.

DPO variants:
- plain: TRL DPOTrainer as documented (reference model kept in memory, live reference forward);
- ours (cache hit): ``psychocounsel train-dpo``'s trainer with the reference log-probs read from the disk cache;
- ours (first run): the same, computing and caching the reference log-probs (its init time is reported);
- ours, random batches: cache hit without length grouping: the same batches as plain, so its per-step losses
  must equal plain's (the check that the speed-up does not change the objective).

Reward-model variants (the score head seeded alike, so every variant starts from the same weights):
- plain: TRL RewardTrainer as documented (it tokenizes the conversational pairs itself; random batches);
- ours: ``psychocounsel train-rm``'s trainer: length-grouped batches + the shared speech run once per pair;
- ours, random batches: shared speech only, on plain's batches: per-step losses must equal plain's;
- ours, no sharing: length grouping only.

Measured (2-core shared CPU, best of 3; more in docs/TRAINING.md, "Measured on this project's CPU"):
- DPO, quiet machine: plain 2,371 tokens/s; ours 3,841 (1.62x); cached reference alone 1.28x; padding 33.7% ->
  18.7%. Per-step losses of ours-with-random-batches and plain differ by at most 3e-7.
- Both in one run on a loaded machine (load average 5-10): DPO 1.52x (492 vs 324 tokens/s); reward model 1.92x
  (1,276 vs 665; 2.40x in an earlier run), packed pairs alone 1.70x, grouping alone 1.24x, model positions per
  token trained 1.51 -> 0.69, per-step losses of ours-on-plain's-batches and plain equal to 2.7e-7.
- Reward model, ``--hidden 576 --layers 8 --vocab 8192`` (40M parameters), one round: 1.36x (176 vs 129).
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from psychocounsel import PRINCIPLE_KEYS
from psychocounsel.training.dpo.config import DPOTrainConfig
from psychocounsel.training.dpo.recipe import build_dpo_trainer
from psychocounsel.training.flops import mfu, peak_flops
from psychocounsel.training.reward.config import RewardModelConfig
from psychocounsel.training.reward.trainer import prepare_reward_training

GPU = False  # --device cuda: bf16 on the GPU for every variant (set in main)

REFLECT = ["It sounds like this has been weighing on you for a while.",
           "I hear how tired and alone you feel in this.",
           "What you describe makes a lot of sense given everything you are carrying.",
           "I wonder what it is like for you when you notice that feeling?",
           "Could you tell me more about the moments when it feels heaviest?",
           "What would feel like a small step that is right for you?"]
DIRECT = ["You should just try to think more positively.", "Everyone goes through this, it is normal.",
          "Make a to-do list and stick to it.", "Go for a run every morning.", "Stop overthinking it."]


def synthetic_pairs(path: Path, limit: int, seed: int = 0) -> Path:
    """One pair per demo speech (the first ``limit``), responses of 1-6 sentences (seeded), released schema."""
    rng = random.Random(seed)
    speeches = Path(__file__).resolve().parents[1] / "psychocounsel" / "data" / "demo_speeches.jsonl"
    rows = []
    for line in speeches.read_text().splitlines()[:limit]:
        q = json.loads(line)["text"]
        row = {"question": q, "chosen": " ".join(rng.sample(REFLECT, rng.randint(1, 6))),
               "rejected": " ".join(rng.sample(DIRECT, rng.randint(1, 5))), "chosen_model": "a",
               "rejected_model": "b"}
        for k in PRINCIPLE_KEYS:
            row[f"chosen_{k}_rating"], row[f"rejected_{k}_rating"] = 5, 2
        rows.append(row)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def make_tokenizer(texts: list[str], vocab: int):
    """A byte-level BPE trained on the bench's own text, with ChatML (SmolLM2's template): real token counts
    (~4 characters a token) with a vocabulary small enough that the transformer body, not the LM head,
    dominates the cost, as in SmolLM2-135M (body 104M parameters, head 28M)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(texts, trainer=trainers.BpeTrainer(
        vocab_size=vocab, special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    template = ("{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\\n' + m['content'] + '<|im_end|>\\n' }}"
                "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}")
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>",
                                   chat_template=template)


SHAPES = {  # named model shapes (random weights): the GPU bench uses Llama-3.2-1B's
    "llama-3.2-1b": dict(hidden=2048, layers=16, heads=32, kv_heads=8, intermediate=8192, model_vocab=128256),
}


def make_model(folder: Path, pairs: str, hidden: int, layers: int, vocab: int, heads: int | None = None,
               kv_heads: int | None = None, intermediate: int | None = None, model_vocab: int | None = None) -> Path:
    """A random Llama; ``model_vocab`` pads the embedding/LM head past the bench tokenizer's own vocabulary so the
    head costs what a real model's does (Llama-3.2: 128,256 rows)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from psychocounsel.training.common import load_pairs_dataset

    ds = load_pairs_dataset(pairs)
    tok = make_tokenizer([*ds["question"], *ds["chosen_text"], *ds["rejected_text"]], vocab)
    cfg = LlamaConfig(vocab_size=max(len(tok), model_vocab or 0), hidden_size=hidden,
                      intermediate_size=intermediate or hidden * 4, num_hidden_layers=layers,
                      num_attention_heads=heads or max(hidden // 64, 2),
                      num_key_value_heads=kv_heads or max(hidden // 192, 1), max_position_embeddings=2048,
                      tie_word_embeddings=True, pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)
    torch.manual_seed(0)
    LlamaForCausalLM(cfg).save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


def run_plain(cfg: DPOTrainConfig) -> dict:
    """TRL as its docs show it, with the same hyperparameters (and, on a GPU, the same bf16 weights as ours)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import DPOConfig, DPOTrainer

    from psychocounsel.training.common import load_pairs_dataset

    ds = load_pairs_dataset(cfg.pairs, split=cfg.split).select_columns(["prompt", "chosen", "rejected"])
    args = DPOConfig(output_dir=str(Path(cfg.out) / "ckpt"), seed=cfg.seed, data_seed=cfg.seed, beta=cfg.beta,
                     learning_rate=cfg.learning_rate, num_train_epochs=cfg.epochs, max_steps=cfg.max_steps,
                     per_device_train_batch_size=cfg.per_device_batch_size,
                     gradient_accumulation_steps=cfg.batch_size // cfg.per_device_batch_size,
                     max_length=cfg.max_length, lr_scheduler_type=cfg.lr_scheduler, warmup_steps=cfg.warmup,
                     gradient_checkpointing=False, bf16=GPU, use_cpu=not GPU, logging_steps=1, save_strategy="no",
                     report_to="none", disable_tqdm=True)
    t0 = time.time()
    model = AutoModelForCausalLM.from_pretrained(cfg.model, dtype=torch.bfloat16 if GPU else torch.float32)
    trainer = DPOTrainer(model=model, args=args, train_dataset=ds,
                         processing_class=AutoTokenizer.from_pretrained(cfg.model))
    return _timed(trainer, time.time() - t0)


def run_ours(cfg: DPOTrainConfig) -> dict:
    t0 = time.time()
    trainer = build_dpo_trainer(cfg)
    trainer.args.disable_tqdm = True
    out = _timed(trainer, time.time() - t0)
    out["ref_cache_hit"] = all(r.get("hit") for r in trainer.ref_cache_report.values())
    return out


def _timed(trainer, init_s: float) -> dict:
    padded = [0]
    collate = trainer.data_collator

    def counting(examples):  # token positions the model runs per batch, padding included: what a step pays for
        batch = collate(examples)
        padded[0] += sum(batch[k].numel() for k in ("input_ids", "prompt_ids", "completion_ids") if k in batch)
        return batch

    trainer.data_collator = counting
    sync()
    t0, c0 = time.time(), time.process_time()
    trainer.train()
    sync()
    wall, cpu = time.time() - t0, time.process_time() - c0
    logs = [h for h in trainer.state.log_history if "loss" in h]
    tokens = trainer._total_train_tokens  # real tokens (attention mask), chosen + rejected, as TRL counts them
    return {"init_s": round(init_s, 2), "train_s": round(wall, 2), "cpu_s": round(cpu, 2), "tokens": tokens,
            # positions run per token trained: 1 + padding share without prompt sharing; below 1 with it
            "padding": round(1 - tokens / padded[0], 3), "positions_per_token": round(padded[0] / tokens, 3),
            "tokens_per_s": round(tokens / wall, 1),
            "tokens_per_cpu_s": round(tokens / cpu, 1), "steps": trainer.state.global_step,
            "mean_loss": round(statistics.fmean(h["loss"] for h in logs), 6), "losses": [h["loss"] for h in logs]}


def sync() -> None:
    if GPU:
        torch.cuda.synchronize()


def rm_base(pairs: str, model: Path, work: Path, a) -> RewardModelConfig:
    return RewardModelConfig(
        model=str(model), train_pairs=pairs, output_dir=str(work / "rm"), train_split=None if not a.pairs else "train",
        eval_splits=[], max_length=a.max_length, overlong="truncate", epochs=1, batch_size=a.batch,
        per_device_batch_size=a.batch, learning_rate=1e-4, lr_scheduler="linear", min_lr_rate=None,
        warmup_ratio=0.0, logging_steps=1, save_steps=10_000, bf16_mixed=False, progress=False, seed=0)


def run_rm_plain(cfg: RewardModelConfig) -> dict:
    """TRL's RewardTrainer as its docs show it (it tokenizes the chats), with the same hyperparameters."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer, set_seed
    from trl import RewardConfig, RewardTrainer

    from psychocounsel.training.common import load_pairs_dataset

    ds = load_pairs_dataset(cfg.train_pairs, split=cfg.train_split).select_columns(["prompt", "chosen", "rejected"])
    args = RewardConfig(output_dir=cfg.output_dir, seed=cfg.seed, learning_rate=cfg.learning_rate,
                        num_train_epochs=cfg.epochs, per_device_train_batch_size=cfg.per_device_batch_size,
                        gradient_accumulation_steps=1, lr_scheduler_type=cfg.lr_scheduler, warmup_steps=0.0,
                        weight_decay=cfg.weight_decay, adam_beta2=cfg.adam_beta2, max_grad_norm=cfg.max_grad_norm,
                        max_length=cfg.max_length, activation_checkpointing=False, bf16=GPU, use_cpu=not GPU,
                        logging_steps=1, save_strategy="no", report_to="none", disable_tqdm=True)
    t0 = time.time()
    set_seed(cfg.seed)  # the score head's init, as train-rm seeds it
    model = AutoModelForSequenceClassification.from_pretrained(cfg.model, num_labels=1, dtype=torch.float32)
    trainer = RewardTrainer(model=model, args=args, train_dataset=ds,
                            processing_class=AutoTokenizer.from_pretrained(cfg.model))
    return _timed(trainer, time.time() - t0)


def run_rm_ours(cfg: RewardModelConfig) -> dict:
    t0 = time.time()
    trainer = prepare_reward_training(cfg).trainer
    trainer.args.save_strategy = "no"
    return _timed(trainer, time.time() - t0)


def rm_main(pairs: str, model: Path, work: Path, a) -> dict:
    base = rm_base(pairs, model, work, a)
    cfg = lambda name, **kw: base.model_copy(update={"output_dir": str(work / name), **kw})  # noqa: E731
    variants = {"plain": lambda r: run_rm_plain(cfg(f"rm_plain{r}")),
                "ours": lambda r: run_rm_ours(cfg(f"rm_ours{r}")),
                "ours_random_batches": lambda r: run_rm_ours(cfg(f"rm_random{r}", group_by_length=False)),
                "ours_no_sharing": lambda r: run_rm_ours(cfg(f"rm_noshare{r}", share_prompt=False))}
    results: dict[str, list[dict]] = {k: [] for k in variants}
    for r in range(a.rounds):
        for name, fn in variants.items():
            results[name].append(fn(r))
    best = {k: max(x["tokens_per_s"] for x in v) for k, v in results.items()}
    best_cpu = {k: max(x["tokens_per_cpu_s"] for x in v) for k, v in results.items()}
    plain_l, random_l = results["plain"][0]["losses"], results["ours_random_batches"][0]["losses"]
    assert len(plain_l) == len(random_l), "plain and ours logged a different number of steps"
    return {
        "tokens_per_s_best": best, "tokens_per_cpu_s_best": best_cpu,
        "speedup_ours_vs_plain": round(best["ours"] / best["plain"], 3),
        "speedup_ours_vs_plain_cpu_time": round(best_cpu["ours"] / best_cpu["plain"], 3),
        "speedup_sharing_only": round(best["ours_random_batches"] / best["plain"], 3),
        "speedup_grouping_only": round(best["ours_no_sharing"] / best["plain"], 3),
        "tokens_trained": {k: v[0]["tokens"] for k, v in results.items()},
        "positions_per_token": {k: v[0]["positions_per_token"] for k, v in results.items()},
        "max_abs_loss_diff_ours_random_batches_vs_plain": max(abs(x - y) for x, y in zip(plain_l, random_l)),
        "mean_loss": {k: v[0]["mean_loss"] for k, v in results.items()},
    }, results


def dpo_main(pairs: str, model: Path, work: Path, a) -> tuple[dict, dict]:
    base = DPOTrainConfig(pairs=[pairs], model=str(model), batch_size=a.batch, per_device_batch_size=a.batch,
                          max_length=a.max_length, learning_rate=1e-4, warmup=0, logging_steps=1,
                          save_steps=10_000, ref_cache_dir=str(work / "ref_cache"),
                          device="auto" if GPU else "cpu", precision="bf16" if GPU else "fp32",
                          split=None if not a.pairs else "train")
    cfg = lambda name, **kw: base.model_copy(update={"out": str(work / name), **kw})  # noqa: E731
    results: dict[str, list[dict]] = {"plain": [], "ours_first_run": [], "ours": [], "ours_random_batches": []}
    results["ours_first_run"].append(run_ours(cfg("first")))
    for r in range(a.rounds):
        results["plain"].append(run_plain(cfg(f"plain{r}")))
        results["ours"].append(run_ours(cfg(f"ours{r}")))
        results["ours_random_batches"].append(run_ours(cfg(f"ungrouped{r}", group_by_length=False)))
    # Best of the rounds: other processes on a shared machine only ever slow a run down.
    best = {k: max(x["tokens_per_s"] for x in v) for k, v in results.items()}
    best_cpu = {k: max(x["tokens_per_cpu_s"] for x in v) for k, v in results.items()}
    plain_l, ungrouped_l = results["plain"][0]["losses"], results["ours_random_batches"][0]["losses"]
    summary = {
        "tokens_per_s_best": best, "tokens_per_cpu_s_best": best_cpu,
        "speedup_ours_vs_plain": round(best["ours"] / best["plain"], 3),
        "speedup_ours_vs_plain_cpu_time": round(best_cpu["ours"] / best_cpu["plain"], 3),
        "speedup_first_run_vs_plain": round(best["ours_first_run"] / best["plain"], 3),
        # the first run pays the reference pass at init: end to end (init + train) against plain's
        "speedup_first_run_vs_plain_end_to_end": round(
            min(x["init_s"] + x["train_s"] for x in results["plain"])
            / (results["ours_first_run"][0]["init_s"] + results["ours_first_run"][0]["train_s"]), 3),
        "first_run_init_s": results["ours_first_run"][0]["init_s"],
        "padding": {k: v[0]["padding"] for k, v in results.items()},
        "max_abs_loss_diff_ours_random_batches_vs_plain": max(abs(x - y) for x, y in zip(plain_l, ungrouped_l)),
        "mean_loss": {k: v[0]["mean_loss"] for k, v in results.items()},
    }
    return summary, results


def utilisation(results: dict[str, list[dict]], mcfg, n_pairs: int, peak: float, lm_head: bool) -> dict:
    """MFU per variant (best round), PaLM's accounting (psychocounsel.training.flops): model FLOPs of the tokens
    trained (chosen and rejected sequences, as TRL counts them) per second over the device's peak. A live DPO
    reference forward is not model FLOPs; ours' packed reward-model pairs run the shared speech once, so its
    figure is the FLOPs the unpacked objective needs, per second (an effective MFU)."""
    out = {}
    for name, runs in results.items():
        best = max(runs, key=lambda r: r["tokens_per_s"])
        seq_len = best["tokens"] / (2 * n_pairs)  # one epoch: each pair is a chosen and a rejected sequence
        out[name] = round(mfu(best["tokens_per_s"], mcfg, seq_len, peak, lm_head), 4)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pairs", help="pair files/folder (default: synthetic pairs from the demo speeches)")
    ap.add_argument("--limit", type=int, default=48, help="synthetic pairs (demo speeches) to train on")
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--vocab", type=int, default=4096, help="the bench tokenizer's BPE vocabulary")
    ap.add_argument("--shape", choices=sorted(SHAPES), help="a named model shape (overrides --hidden/--layers)")
    ap.add_argument("--model-vocab", type=int, help="pad the model's vocabulary to this many rows")
    ap.add_argument("--device", choices=["cpu", "cuda"], default="cpu", help="cuda: bf16 on the GPU, with MFU")
    ap.add_argument("--peak-tflops", type=float, help="the device's dense bf16 peak (default: looked up by name)")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--max-length", type=int, default=512)
    ap.add_argument("--rounds", type=int, default=3, help="alternations of plain and ours")
    ap.add_argument("--only", choices=["dpo", "rm"], help="run one benchmark (default: both)")
    ap.add_argument("--out-dir", default=str(Path(__file__).parent / "out"))
    ap.add_argument("--out", help="the DPO report's path (the flag before --out-dir; default <out-dir>/train_dpo.json)")
    a = ap.parse_args()
    global GPU
    GPU = a.device == "cuda"
    if GPU and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device here")
    shape = dict(SHAPES[a.shape]) if a.shape else {"hidden": a.hidden, "layers": a.layers}
    shape.setdefault("model_vocab", a.model_vocab)
    work = Path(tempfile.mkdtemp(prefix="bench_train_"))
    try:
        pairs = a.pairs or str(synthetic_pairs(work / "train.jsonl", a.limit))
        model = make_model(work / "model", pairs, vocab=a.vocab, **shape)
        from transformers import AutoConfig

        from psychocounsel.training.common import load_pairs_dataset

        mcfg = AutoConfig.from_pretrained(model)
        n_pairs = len(load_pairs_dataset(pairs, split=None if not a.pairs else "train"))
        setup = {"pairs": pairs if a.pairs else f"synthetic ({a.limit} demo speeches)", "n_pairs": n_pairs,
                 "shape": a.shape or "custom", "hidden": mcfg.hidden_size, "layers": mcfg.num_hidden_layers,
                 "model_vocab": mcfg.vocab_size, "tokenizer_vocab": a.vocab, "batch": a.batch,
                 "max_length": a.max_length, "rounds": a.rounds,
                 "params": sum(p.numel() for p in __import__("transformers")
                               .AutoModelForCausalLM.from_pretrained(model).parameters())}
        machine = {"device": torch.cuda.get_device_name() if GPU else platform.processor() or "cpu",
                   "cpu_threads": torch.get_num_threads(), "python": platform.python_version(),
                   "torch": torch.__version__, "transformers": __import__("transformers").__version__,
                   "trl": __import__("trl").__version__}
        peak = a.peak_tflops * 1e12 if a.peak_tflops else (peak_flops(machine["device"]) if GPU else None)
        for name, fn in (("dpo", dpo_main), ("rm", rm_main)):
            if a.only and a.only != name:
                continue
            summary, results = fn(pairs, model, work, a)
            if peak:
                summary["mfu"] = utilisation(results, mcfg, n_pairs, peak, lm_head=name == "dpo")
            report = {"machine": machine, "setup": setup, "summary": summary, "runs": results}
            out = Path(a.out) if a.out and name == "dpo" else Path(a.out_dir) / f"train_{name}.json"
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(json.dumps(report, indent=2))
            print(json.dumps({"bench": name, "setup": setup, "summary": summary}, indent=2), flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
