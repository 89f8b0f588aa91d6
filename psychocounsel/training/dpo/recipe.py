"""``train-dpo``: the run (reference log-probs, DPO steps, the saved policy and its manifest) and the command. The
recipe's choices are in the package docstring (``training.dpo``).

    psychocounsel train-dpo runs/demo/pairs --config configs/train/dpo_cpu.yaml --out runs/dpo-cpu

The trainer (and with it torch and TRL) loads when training starts, so the command line starts without it.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path
from typing import Any, Sequence

import click

from ...errors import UserError
from ..common import (check_same_run, data_hash, freeze_below, load_causal_lm, load_pairs_dataset, pair_files,
    write_manifest)
from ..distributed import (RANK_REPORT_ENV, abandon_distributed, cpu_ddp_kwargs, end_distributed, input_recorder,
    is_rank_zero, world_size, write_rank_report)
from .config import RESUME_FREE, DPOTrainConfig, load_dpo_config


def _precision(cfg: DPOTrainConfig):
    import torch

    gpu = cfg.device == "auto" and torch.cuda.is_available()
    bf16 = cfg.precision == "bf16" or (cfg.precision == "auto" and gpu)
    return (torch.bfloat16 if bf16 else torch.float32), bf16, not gpu


# ---------------------------------------------------------------- core


def build_dpo_trainer(cfg: DPOTrainConfig, callbacks: Sequence[Any] = ()):
    """The configured trainer (reference log-probs already precomputed or read from the cache).

    Split from ``train_dpo`` so tests and the online-DPO loop can take one step or compute a loss."""
    from transformers import set_seed
    from trl import DPOConfig

    from .trainer import RefCachingDPOTrainer

    if not cfg.pairs:
        raise UserError("train-dpo: no pair files given")
    if not cfg.out:
        raise UserError("train-dpo: no output folder (--out)")
    files = pair_files(cfg.pairs)
    per_step = cfg.per_device_batch_size * world_size()  # batch_size is global: the same optimisation on 1 or N
    if cfg.batch_size % per_step:
        raise UserError(f"batch_size {cfg.batch_size} is not a multiple of per_device_batch_size x processes "
                        f"= {per_step}")
    train_ds = _pairs(cfg.pairs, cfg.split)
    eval_ds = _pairs(cfg.pairs, cfg.eval_split) if cfg.eval_split else None
    dtype, bf16, use_cpu = _precision(cfg)
    set_seed(cfg.seed)  # before LoRA init, which TRL does before Trainer seeds
    src, model, tokenizer = load_causal_lm(cfg.model, dtype, cfg.chat_template)
    if cfg.train_layers is not None:
        if cfg.lora is not None:
            raise UserError("train_layers and lora: choose one way to limit what trains")
        freeze_below(model, cfg.train_layers)
    ref_model = None
    if cfg.reference == "live" and cfg.lora is None:
        # TRL would reload the reference from config._name_or_path, which misses a GGUF's file name.
        ref_model = load_causal_lm(cfg.model, dtype, cfg.chat_template)[1]
    peft_config = None
    if cfg.lora is not None:
        cfg.lora.check_mergeable()
        peft_config = cfg.lora.peft_config("CAUSAL_LM")
    out = Path(cfg.out)
    args = DPOConfig(
        output_dir=str(out / "checkpoints"), seed=cfg.seed, data_seed=cfg.seed,
        beta=cfg.beta, loss_type=[cfg.loss_type] + (["sft"] if cfg.sft_weight else []),
        loss_weights=[1.0, cfg.sft_weight] if cfg.sft_weight else None, learning_rate=cfg.learning_rate,
        num_train_epochs=cfg.epochs, max_steps=cfg.max_steps,
        per_device_train_batch_size=cfg.per_device_batch_size, per_device_eval_batch_size=cfg.per_device_batch_size,
        gradient_accumulation_steps=cfg.batch_size // per_step,
        max_length=cfg.max_length, truncation_mode="keep_start",
        precompute_ref_log_probs=cfg.reference != "live", precompute_ref_batch_size=cfg.ref_batch_size,
        train_sampling_strategy="random",  # group_by_length: our sampler (see LengthGroupedBatches)
        lr_scheduler_type=cfg.lr_scheduler, warmup_steps=cfg.warmup, weight_decay=cfg.weight_decay,
        max_grad_norm=cfg.max_grad_norm, gradient_checkpointing=cfg.gradient_checkpointing,
        bf16=bf16, fp16=False, **{"use_cpu": use_cpu, **cpu_ddp_kwargs()}, logging_steps=cfg.logging_steps,
        ddp_find_unused_parameters=False,  # every trainable weight (all, top blocks or adapters) is used
        save_strategy="steps", save_steps=cfg.save_steps, save_total_limit=cfg.save_total_limit,
        eval_strategy="steps" if (eval_ds is not None and cfg.eval_steps) else "no", eval_steps=cfg.eval_steps,
        report_to="none", dataloader_num_workers=0,
    )
    trainer = RefCachingDPOTrainer(model=model, ref_model=ref_model, args=args, train_dataset=train_ds,
                          eval_dataset=eval_ds, processing_class=tokenizer, peft_config=peft_config,
                          callbacks=[_log_last_step(), *callbacks], pc_cfg=cfg, pc_data_files=files)
    trainer.pc_source = src
    return trainer


def _log_last_step():
    """Log at the final step too, so the manifest's metrics cover the end of training even when the step
    count is not a multiple of logging_steps."""
    from transformers import TrainerCallback

    class LogLastStep(TrainerCallback):
        def on_step_end(self, args, state, control, **kw):
            if state.global_step >= state.max_steps:
                control.should_log = True

    return LogLastStep()


def _pairs(spec: Sequence[str], split: str | None):
    try:
        ds = load_pairs_dataset(spec, split=split)
    except UserError as e:
        if split and "no pairs" in str(e):
            raise UserError(f"{e} (files named train-*/dev-*/test-* carry a split; set split: null to use "
                            "every row)") from None
        raise
    return ds.select_columns(["prompt", "chosen", "rejected"])


def _check_out(cfg: DPOTrainConfig, files: list[Path]) -> bool:
    """Refuse to overwrite a finished run; on resume, refuse a changed config. Returns: resume now?"""
    out = Path(cfg.out)
    if (out / "manifest.json").exists():
        raise UserError(f"{out}: already holds a trained model (manifest.json): pick another --out or delete it")
    ckpt = out / "checkpoints"
    state = ckpt / "psychocounsel_dpo.json"
    has = any(ckpt.glob("checkpoint-*")) if ckpt.is_dir() else False
    now = json.loads(json.dumps({"config": {k: v for k, v in cfg.model_dump().items() if k not in RESUME_FREE},
                                 "data_hash": data_hash(files)}, default=str))
    if has and not cfg.resume:
        raise UserError(f"{ckpt}: holds checkpoints of an unfinished run: set resume: true to continue it, "
                        "or pick another --out")
    if has and state.is_file():
        check_same_run(ckpt, json.loads(state.read_text()), now)
    if is_rank_zero():  # under accelerate/torchrun every rank runs this
        ckpt.mkdir(parents=True, exist_ok=True)
        tmp = state.with_suffix(f".tmp{os.getpid()}")
        tmp.write_text(json.dumps(now, indent=2))
        os.replace(tmp, state)  # whole or absent: another rank may be reading it
    return has


def train_dpo(cfg: DPOTrainConfig, callbacks: Sequence[Any] = ()) -> dict[str, Any]:
    """Train, save the policy (full model, LoRA adapter, or merged LoRA) and ``manifest.json``; return the
    manifest's metrics, the over-long report and the reference-cache report.

    Under ``accelerate launch`` every process runs this; rank 0 alone writes the manifest and the policy, and
    every process tears the process group down before returning (``training.distributed``)."""
    try:
        result = _train_dpo(cfg, callbacks)
    except BaseException:
        abandon_distributed()  # no barrier: the other ranks may never reach it
        raise
    end_distributed()
    return result


def _train_dpo(cfg: DPOTrainConfig, callbacks: Sequence[Any]) -> dict[str, Any]:
    if not cfg.pairs or not cfg.out:
        raise UserError("train-dpo: needs pair files and --out")
    files = pair_files(cfg.pairs)
    _pairs(cfg.pairs, cfg.split)  # a bad pair file is one line before anything is written under --out
    resume = _check_out(cfg, files)
    trainer = build_dpo_trainer(cfg, callbacks)
    report_dir = os.environ.get(RANK_REPORT_ENV)
    batches, hook = input_recorder(trainer.model) if report_dir else ([], None)  # after the reference pass
    t0 = time.time()
    result = trainer.train(resume_from_checkpoint=True if resume else None)
    train_seconds = time.time() - t0
    if hook is not None:
        hook.remove()
        write_rank_report(report_dir, trainer, batches)
    out = Path(cfg.out)
    metrics = _train_metrics(trainer, result, train_seconds)
    if trainer.eval_dataset is not None:
        metrics["eval"] = dict(trainer.evaluate())
    output = _save_policy(trainer, cfg, out)
    trainer.accelerator.wait_for_everyone()
    report = {
        "metrics": metrics, "data": trainer.length_report, "output": output,
        "ref_cache": {"mode": cfg.reference, "ref_forward_batches": trainer.ref_forward_batches,
                      "hit": bool(trainer.ref_cache_report)
                      and all(r.get("hit") for r in trainer.ref_cache_report.values()),
                      **trainer.ref_cache_report},
    }
    if trainer.is_world_process_zero():
        write_manifest(out, recipe="dpo", config=cfg.model_dump(), data=files, metrics=metrics,
                       extra={k: v for k, v in report.items() if k != "metrics"})
        if not cfg.keep_checkpoints:
            shutil.rmtree(out / "checkpoints", ignore_errors=True)
    return {"out": str(out), **report}


_LOGGED = ("loss", "rewards/accuracies", "rewards/margins", "rewards/chosen", "rewards/rejected",
           "logps/chosen", "logps/rejected", "grad_norm", "learning_rate", "num_tokens")


def _train_metrics(trainer, result, seconds: float) -> dict[str, Any]:
    """TRL's logged metrics: the last logged values, the full per-log history, tokens/s."""
    logs = [h for h in trainer.state.log_history if "loss" in h]
    last = logs[-1] if logs else {}
    tokens = last.get("num_tokens", 0.0)
    return {
        "train_loss": result.training_loss, "steps": result.global_step, "epoch": trainer.state.epoch,
        "processes": world_size(),
        "train_seconds": round(seconds, 3), "tokens": tokens,
        "tokens_per_second": round(tokens / seconds, 1) if seconds and tokens else None,
        "last": {k: last[k] for k in _LOGGED if k in last},
        "history": [{"step": h["step"], **{k: h[k] for k in _LOGGED if k in h}} for h in logs],
    }


def _save_policy(trainer, cfg: DPOTrainConfig, out: Path) -> dict[str, Any]:
    src = trainer.pc_source
    base = {"base_model": cfg.model, "base_location": src.location, "base_gguf_file": src.gguf_file}
    kind = "full" if cfg.lora is None else "merged_lora" if cfg.lora.merge else "lora_adapter"
    if kind == "merged_lora":
        if trainer.is_world_process_zero():
            trainer.accelerator.unwrap_model(trainer.model).merge_and_unload().save_pretrained(out)
    else:
        trainer.save_model(str(out))  # full model, or the adapter alone for a PEFT model (rank 0 writes)
    if trainer.is_world_process_zero():
        trainer.processing_class.save_pretrained(out)
    return {"kind": kind, **base}


# ---------------------------------------------------------------- command


def _print_report(res: dict[str, Any]) -> None:
    m = res["metrics"]
    last = m.get("last", {})
    click.echo(f"trained {m['steps']} steps in {m['train_seconds']:.1f} s "
               f"({m['tokens_per_second'] or 0:.0f} tokens/s): loss {m['train_loss']:.4f}, "
               f"reward accuracy {last.get('rewards/accuracies', float('nan')):.3f}, "
               f"reward margin {last.get('rewards/margins', float('nan')):.4f}")
    for name, d in res["data"].items():
        click.echo(f"{name} pairs: {d['pairs_used']} used of {d['pairs_in']}; {d['over_max_length']} over "
                   f"max_length={d['max_length']} ({d['policy']}), {d['prompt_fills_max_length']} dropped "
                   f"(prompt fills max_length); longest {d['longest']} tokens")
    rc = res["ref_cache"]
    if rc["mode"] == "cached":
        click.echo(f"reference log-probs: {'cache hit' if rc['hit'] else 'computed and cached'} "
                   f"({rc['ref_forward_batches']} reference batches run)")
    if "eval" in m:
        click.echo("eval: " + ", ".join(f"{k}={v:.4g}" for k, v in m["eval"].items()
                                         if isinstance(v, float) and ("reward" in k or k.endswith("loss"))))
    click.echo(f"{res['output']['kind']} saved to {res['out']}/ (manifest.json beside it)")


@click.command("train-dpo")
@click.argument("pairs", nargs=-1, type=click.Path())
@click.option("--config", "config_path", type=click.Path(dir_okay=False),
              help="YAML preset, e.g. configs/train/dpo_cpu.yaml (default: the built-in defaults).")
@click.option("-o", "--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Override a config field, e.g. -o beta=0.2 -o lora.r=8 (repeatable).")
@click.option("--out", type=click.Path(file_okay=False), help="Output folder for the policy and manifest.json.")
def train_dpo_cmd(pairs: tuple[str, ...], config_path: str | None, overrides: tuple[str, ...],
                  out: str | None) -> None:
    """Offline DPO on preference pairs (ours or the published parquet) through TRL's DPOTrainer.

    Presets: configs/train/dpo_cpu.yaml (SmolLM2-135M on a CPU), configs/train/dpo_paper.yaml (beta 0.1).
    A second run on the same model and pairs reuses the cached reference log-probs.
    """
    cfg = load_dpo_config(config_path, overrides)
    update = {k: v for k, v in (("pairs", list(pairs)), ("out", out)) if v}
    report = train_dpo(cfg.model_copy(update=update))
    if is_rank_zero():  # one report per run, not one per process
        _print_report(report)
