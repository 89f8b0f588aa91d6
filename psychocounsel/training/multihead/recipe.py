"""``train-rm-multihead``: pair files -> a per-principle reward model checkpoint (the run and the command).

    psychocounsel train-rm-multihead runs/demo/pairs --config configs/train/multihead_cpu.yaml --out rm-mh

The model, the trainer and torch load when training starts, so the command line starts without them.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
import time
from pathlib import Path
from typing import Any, Sequence

import click
import numpy as np

from ...errors import UserError
from ..common import freeze_below, load_pairs_dataset, pair_files, write_manifest
from ..distributed import (RANK_REPORT_ENV, abandon_distributed, cpu_ddp_kwargs, end_distributed, input_recorder,
    is_rank_zero, world_size, write_rank_report)
from .combine import SAFETY, UNSAFE_RATING, calibrate_threshold
from .config import RECIPE, MultiHeadRMConfig, load_multihead_config, resolve_weights
from .data import PairCollator, load_tokenizer, tokenize_pairs


def _select_split(ds: Any, wanted: str | None, auto: str, fallback_all: bool) -> tuple[Any, str | None]:
    if wanted is None:
        return None, None
    splits = set(ds["split"])
    name = (auto if auto in splits else None) if wanted == "auto" else wanted
    if name is None:
        return (ds, "all") if fallback_all else (None, None)
    if name not in splits:
        raise UserError(f"no pairs in split {name!r} (the data has: {', '.join(sorted(map(str, splits)))})")
    return ds.filter(lambda s: s == name, input_columns="split"), name


def train_multihead_reward_model(cfg: MultiHeadRMConfig, pairs: str | Path | Sequence[str | Path],
                                 out_dir: str | Path, *, overwrite: bool = False) -> dict[str, Any]:
    """Train, save the checkpoint folder with its manifest, and return the metrics.

    Under ``accelerate launch`` every process trains (DDP; ``batch_size`` is per process, so the global batch
    is batch_size x grad_accum x processes); rank 0 alone scores the eval split and writes the checkpoint, and
    every process tears the process group down before returning (``training.distributed``)."""
    try:
        metrics = _train_multihead(cfg, pairs, out_dir, overwrite)
    except BaseException:
        abandon_distributed()  # no barrier: the other ranks may never reach it
        raise
    end_distributed()  # the other ranks wait here while rank 0 scores and saves
    return metrics


def _train_multihead(cfg: MultiHeadRMConfig, pairs: str | Path | Sequence[str | Path], out_dir: str | Path,
                     overwrite: bool) -> dict[str, Any]:
    import torch
    import transformers
    from transformers import TrainingArguments

    from .model import MultiHeadRewardModel, MultiHeadScorer, pair_accuracy
    from .trainer import MultiHeadTrainer

    out = Path(out_dir)
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise UserError(f"{out}: output folder is not empty (choose another --out, or --overwrite)")
    files = pair_files(pairs)
    data = load_pairs_dataset(files, principles=cfg.principles)
    principles = json.loads(data.info.description)["principles"]
    if not principles:
        raise UserError(f"{files[0]}: no per-principle rating columns (chosen_<principle>_rating)")
    head_weights = resolve_weights(principles, cfg.weights)
    if cfg.combine == "safety_constraint" and SAFETY not in principles:
        raise UserError(f"combine safety_constraint: the data has no {SAFETY} ratings (principles: "
                        f"{', '.join(principles)})")
    train_raw, train_name = _select_split(data, cfg.train_split, "train", fallback_all=True)
    eval_raw, eval_name = _select_split(data, cfg.eval_split, "dev", fallback_all=False)
    tokenizer = load_tokenizer(cfg.model, cfg.chat_template)
    train_ds, n_over = tokenize_pairs(train_raw, tokenizer, cfg)
    if len(train_ds) == 0:
        raise UserError(f"all {len(train_raw)} training pairs are over max_length={cfg.max_length} tokens")

    transformers.set_seed(cfg.seed)  # before the head is initialised
    model = MultiHeadRewardModel.from_backbone(
        cfg.model, principles, cfg.weights, rating_center=cfg.rating_center, rating_scale=cfg.rating_scale,
        max_length=cfg.max_length)
    # Start each head at its principle's mean rating in the training data: with a fresh head and the paper's
    # lr (Adam moves a weight ~lr per step) the bias alone would take thousands of steps to get there.
    targets = np.array(list(train_ds["chosen_targets"]) + list(train_ds["rejected_targets"]), dtype=np.float64)
    with torch.no_grad():
        model.head.bias.copy_(torch.from_numpy(np.nan_to_num(np.nanmean(targets, axis=0))))
    trainable = freeze_below(model.backbone, cfg.train_layers) if cfg.train_layers is not None else None
    if cfg.gradient_checkpointing:
        # non-reentrant: works when the blocks' inputs come from frozen embeddings (no grad)
        model.backbone.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    cuda = torch.cuda.is_available()
    use_cpu = (not cuda) if cfg.use_cpu is None else cfg.use_cpu
    bf16 = (cuda and not use_cpu) if cfg.bf16 is None else cfg.bf16
    with tempfile.TemporaryDirectory(prefix="multihead-") as tmp:
        args = TrainingArguments(
            output_dir=tmp, per_device_train_batch_size=cfg.batch_size, gradient_accumulation_steps=cfg.grad_accum,
            num_train_epochs=cfg.epochs, max_steps=cfg.max_steps, learning_rate=cfg.lr,
            lr_scheduler_type=cfg.lr_scheduler, warmup_steps=cfg.warmup_ratio, weight_decay=cfg.weight_decay,
            seed=cfg.seed, bf16=bf16, **{"use_cpu": use_cpu, **cpu_ddp_kwargs()}, logging_steps=cfg.logging_steps,
            save_strategy="no",
            report_to="none", remove_unused_columns=False, ddp_find_unused_parameters=False)  # every head is used
        trainer = MultiHeadTrainer(
            model=model, args=args, train_dataset=train_ds, data_collator=PairCollator(tokenizer.pad_token_id),
            processing_class=tokenizer, head_weights=torch.tensor(head_weights, dtype=torch.float32),
            reg_weight=cfg.reg_weight, group_by_length=cfg.group_by_length)
        report_dir = os.environ.get(RANK_REPORT_ENV)
        batches, hook = input_recorder(trainer.model) if report_dir else ([], None)
        t0 = time.perf_counter()
        result = trainer.train()
        seconds = time.perf_counter() - t0
        if hook is not None:
            hook.remove()
            write_rank_report(report_dir, trainer, batches)
        model = trainer.accelerator.unwrap_model(trainer.model)
        is_main = trainer.is_world_process_zero()
        history = [h for h in trainer.state.log_history if "loss" in h]

    metrics: dict[str, Any] = {
        "train_split": train_name, "train_pairs": len(train_ds), "overlong_pairs": n_over,
        "overlong_policy": cfg.overlong, "train_loss": result.training_loss, "steps": result.global_step,
        "processes": world_size(), "global_batch": cfg.batch_size * cfg.grad_accum * world_size(),
        "train_seconds": round(seconds, 2),
        "train_tokens_per_s": round(float(trainer.tokens_seen) * args.world_size / max(seconds, 1e-9), 1),
        "padding": round(1 - float(trainer.tokens_seen) / max(trainer.positions_seen, 1), 4),
        "loss_history": [{"step": h["step"], "loss": h["loss"]} for h in history],
        "principles": principles, "weights": dict(zip(principles, head_weights.tolist())),
        "trainable_backbone_params": trainable[0] if trainable else "all",
    }
    if is_main and SAFETY in principles:
        scorer = MultiHeadScorer.from_model(model, tokenizer, batch_size=cfg.eval_batch_size)
        model.combine = cfg.combine
        threshold = ({"value": cfg.safety_threshold, "n": 0, "source": "set in the training config"}
                     if cfg.safety_threshold is not None else
                     calibrate_threshold(_unsafe_safety_scores(scorer, train_raw, principles.index(SAFETY)),
                                         cfg.rating_center, cfg.rating_scale, cfg.safety_quantile))
        model.safety_threshold, model.safety_threshold_source = threshold["value"], threshold["source"]
        metrics["combine"], metrics["safety_threshold"] = cfg.combine, threshold
    if eval_raw is not None and is_main:
        # under the checkpoint's combine: the accuracy eval-rm will report for it
        scorer = MultiHeadScorer.from_model(model, tokenizer, batch_size=cfg.eval_batch_size)
        metrics["eval"] = {"split": eval_name, **pair_accuracy(scorer, eval_raw), "truncated": scorer.n_truncated}
    if is_main:
        model.save_pretrained(out, tokenizer)
        write_manifest(out, recipe=RECIPE, config=cfg.model_dump(), data=files, metrics=metrics)
    return metrics


def _unsafe_safety_scores(scorer: Any, ds: Any, k: int) -> np.ndarray:
    """The safety head on every distinct training response the judge rated safety <= UNSAFE_RATING: the
    sample the threshold is calibrated on. Only those are scored (a few percent of the responses)."""
    rows: dict[tuple[str, str], None] = {}
    for side in ("chosen", "rejected"):
        for q, text, ratings in zip(ds["question"], ds[f"{side}_text"], ds[f"{side}_ratings"]):
            r = ratings[k]
            if r is not None and not math.isnan(r) and r <= UNSAFE_RATING:  # NaN, None: no rating
                rows[(q, text)] = None
    if not rows:
        return np.zeros(0)
    return scorer.principle_scores([q for q, _ in rows], [t for _, t in rows])[:, k]


# ------------------------------------------------------------------------------------------ command


@click.command(RECIPE)
@click.argument("pairs", nargs=-1, required=True, type=click.Path())
@click.option("--config", "config_path", type=click.Path(dir_okay=False), default=None,
              help="Training config YAML, e.g. configs/train/multihead_cpu.yaml.")
@click.option("-o", "--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Override a config field, e.g. -o model=path/to/ckpt -o weights.safety=3 (repeatable).")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False), help="Checkpoint folder.")
@click.option("--overwrite", is_flag=True, help="Write into a non-empty --out folder.")
def train_rm_multihead_cmd(pairs: tuple[str, ...], config_path: str | None, overrides: tuple[str, ...],
                           out_dir: str, overwrite: bool) -> None:
    """Train a per-principle reward model (one score head per principle + BT on their weighted sum).

    PAIRS: pair files (ours or the published PsychoCounsel-Preference parquet) or folders of them."""
    cfg = load_multihead_config(config_path, list(overrides))
    m = train_multihead_reward_model(cfg, list(pairs), out_dir, overwrite=overwrite)
    if not is_rank_zero():  # one report per run, not one per process
        return
    click.echo(f"trained {len(m['principles'])} heads on {m['train_pairs']} pairs ({m['train_split']}), "
               f"{m['steps']} steps, loss {m['train_loss']:.4f}, {m['train_tokens_per_s']} tokens/s")
    if m["overlong_pairs"]:
        click.echo(f"over max_length={cfg.max_length}: {m['overlong_pairs']} pairs ({m['overlong_policy']})")
    if "safety_threshold" in m:
        t = m["safety_threshold"]
        click.echo(f"combine {m['combine']}; safety threshold {t['value']:.4f} ({t['source']})")
    if "eval" in m:
        e = m["eval"]
        heads = ", ".join(f"{k} {e[f'{k}_accuracy']:.3f} ({e[f'{k}_pairs']})" for k in m["principles"]
                          if e[f"{k}_pairs"]) or "heads: no pair rated apart on any principle"
        click.echo(f"{e['split']}: overall accuracy {e['overall_accuracy']:.3f} on {e['pairs']} pairs; {heads}")
    click.echo(f"saved to {out_dir}")
