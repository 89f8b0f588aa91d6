"""Bradley-Terry reward model: pair files -> a sequence-classification checkpoint, via TRL's ``RewardTrainer``.

    psychocounsel train-rm configs/train/rm_cpu.yaml -o train_pairs=runs/demo/pairs
    accelerate launch --num_processes 8 -m psychocounsel.cli train-rm configs/train/rm_paper.yaml

The loss is TRL's: ``-logsigmoid(r_chosen - r_rejected [- margin])`` plus an optional centring term
``c * mean((r_chosen + r_rejected)^2)``. This module is the thin adapter around it; the choices it makes:

* **We tokenize, not TRL.** The chat (user = client speech, assistant = response; the paper's reward-model
  input) goes through the tokenizer's chat template exactly as TRL would (``apply_chat_template(prompt +
  completion, tokenize=True)``), but here, so that pairs longer than ``max_length`` are counted and reported.
  TRL drops them silently; we hand it token ids it has nothing left to filter.
* **Over-long pairs** are truncated by default, as the paper's trainer (OpenRLHF) does: the first
  ``max_length - 1`` tokens plus the sequence's own last token, so the reward is still read at the
  end-of-turn position it is read at for short inputs. A pair whose prompt alone fills ``max_length``
  truncates to two identical sequences with no label left in them; those are dropped and counted apart.
  ``overlong: drop`` drops every over-long pair instead (TRL's behaviour). Either way the counts go to the
  console and the manifest, for train and for each eval split.
* **Batch size is global.** ``batch_size`` (the paper's 128) = ``per_device_batch_size`` x accumulation x
  processes, so one preset gives the paper's optimisation on 1 GPU or 8; an indivisible combination is an
  error, not a silently different batch.
* **Eval scores the checkpoint on disk**: after saving, the saved folder is reloaded and every held-out
  pair is scored (accuracy = share of pairs with ``score(chosen) > score(rejected)``; ties count wrong).
  The number describes exactly the artifact a user gets, whatever sharding training used.
* **LoRA** (PEFT, task SEQ_CLS: the score head trains fully) is merged before saving, so the output is
  always a plain checkpoint that ``AutoModelForSequenceClassification.from_pretrained`` loads.
* **Held-out rows never train.** Without ``train_split``, training takes the rows labelled ``train`` if
  there are any, else every row; eval rows from the same files are only rows training did not take.
* **Cheaper steps, the same loss** (``reward_trainer``): length-grouped batches, and each pair packed into one
  row so the speech it shares runs once (``group_by_length``, ``share_prompt``). bench/bench_train.py: 2.4x the
  tokens/s of plain ``RewardTrainer`` on a CPU, per-step losses equal to 3e-7 on the same batches.

Layout: the config, the recipe and the command are here; data and over-long accounting in ``reward_data``,
the trainer in ``reward_trainer``, held-out scoring in ``reward_scoring``. Multi-process plumbing (CPU + gloo,
teardown, rank reports) is ``distributed``.
"""

from __future__ import annotations

import os
import statistics
from pathlib import Path
from typing import Any, Callable, Literal, Sequence

import click
from pydantic import BaseModel, ConfigDict, Field

from ..config import load_yaml_config
from ..errors import UserError
from .common import write_manifest
from .distributed import (RANK_REPORT_ENV, abandon_distributed, end_distributed, input_recorder, sharded_weights,
    world_size, write_rank_report)
# The pieces live in reward_data / reward_trainer / reward_scoring; their names stay importable from here.
from .reward_data import TokenizedPairs, describe_overlong, load_training_data, tokenize_pairs
from .reward_scoring import load_reward_model, pair_metrics, score_token_ids
from .reward_trainer import (PreparedRewardRun, SharedPromptCollator, load_base_model, prepare_reward_training,
    trl_args)
from .reward_trainer import _accumulation

RECIPE = "reward_bt"
Log = Callable[[str], None]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class LoraSettings(_Strict):
    """LoRA adapters (PEFT) instead of full fine-tuning; merged into the weights before saving."""

    r: int = Field(16, ge=1, description="Adapter rank (16: PEFT's and TRL's usual starting point).")
    alpha: int = Field(32, ge=1, description="LoRA scaling numerator; alpha = 2r is the common choice.")
    dropout: float = Field(0.05, ge=0.0, lt=1.0, description="Dropout on the adapter input.")
    target_modules: str | list[str] = Field("all-linear", description="Modules to adapt ('all-linear': every "
                                            "linear layer but the head, which trains fully).")


class RewardModelConfig(_Strict):
    """Everything ``train-rm`` needs; the resolved copy goes into manifest.json."""

    model: str = Field(..., description="Base model: a checkpoint folder, a .gguf file, 'embedded' (SmolLM2-135M) "
                                        "or a hub id (needs a network).")
    train_pairs: str | list[str] = Field(..., description="Pair file(s) or a folder of them: ours or the published "
                                                          "PsychoCounsel-Preference parquet.")
    output_dir: str = Field(..., description="Checkpoints (checkpoint-N/), the final model and manifest.json.")
    train_split: str | None = Field(None, description="Rows to train on. None: rows labelled 'train' if any, "
                                                      "else all rows.")
    eval_pairs: str | list[str] | None = Field(None, description="Held-out pair file(s). None: the rows of "
                                                                 "train_pairs that training did not take.")
    eval_splits: list[str] | None = Field(["dev", "test"], description="Splits to score after training (absent "
                                                                       "ones are skipped). None: every split.")
    max_length: int = Field(2048, ge=8, description="Tokens per chat (prompt + response); the paper's 2048.")
    overlong: Literal["truncate", "drop"] = Field("truncate", description="What happens to a pair longer than "
                                                  "max_length (always counted): truncate (OpenRLHF, the paper's "
                                                  "trainer) or drop (TRL).")
    epochs: float = Field(2.0, gt=0, description="Passes over the training pairs (paper: 2).")
    max_steps: int | None = Field(None, ge=1, description="Stop after this many optimizer steps (overrides epochs).")
    batch_size: int = Field(128, ge=1, description="Pairs per optimizer step over all processes (paper: 128).")
    per_device_batch_size: int = Field(4, ge=1, description="Pairs per forward pass per process; accumulation "
                                                            "makes up the rest of batch_size.")
    eval_batch_size: int = Field(8, ge=1, description="Sequences per forward pass when scoring held-out pairs.")
    learning_rate: float = Field(9e-6, gt=0, description="Peak learning rate (paper: 9e-6).")
    lr_scheduler: str = Field("cosine_with_min_lr", description="transformers scheduler name (OpenRLHF's default).")
    min_lr_rate: float | None = Field(0.1, ge=0, le=1, description="Final lr / peak lr for cosine_with_min_lr "
                                                                   "(OpenRLHF: 0.1).")
    warmup_ratio: float = Field(0.03, ge=0, lt=1, description="Share of steps with linear warmup (OpenRLHF: 0.03).")
    weight_decay: float = Field(0.0, ge=0, description="AdamW weight decay (OpenRLHF: 0).")
    adam_beta2: float = Field(0.95, gt=0, lt=1, description="AdamW beta2 (OpenRLHF: 0.95).")
    max_grad_norm: float = Field(1.0, gt=0, description="Gradient clipping norm (OpenRLHF: 1.0).")
    margin: bool = Field(False, description="Subtract the judge's overall score gap from the reward gap in the "
                                            "loss (Llama 2's margin loss).")
    margin_scale: float = Field(1.0, gt=0, description="Multiplier on the score gap (1-5 scale) when margin is on.")
    center_rewards_coefficient: float | None = Field(None, ge=0, description="Weight of the mean-zero reward "
                                                     "penalty (Eisenstein et al. 2023; TRL suggests 0.01).")
    lora: LoraSettings | None = Field(None, description="LoRA settings; None trains every weight.")
    dtype: Literal["float32", "bfloat16"] = Field("float32", description="Weight dtype when loading.")
    bf16_mixed: bool | None = Field(None, description="bf16 autocast. None: on where a CUDA GPU supports bf16.")
    gradient_checkpointing: bool = Field(False, description="Recompute activations in backward: memory for time.")
    group_by_length: bool = Field(True, description="Batch pairs of similar length together: less padding, the "
                                  "same loss per pair (reward_trainer's docstring).")
    share_prompt: bool = Field(True, description="Pack each pair into one row so the tokens chosen and rejected "
                               "share (the speech) run once, not twice: the same rewards for less compute. Needs "
                               "SDPA or eager attention (else TRL's batches).")
    seed: int = Field(42, description="Seeds the score-head init, data order and dropout.")
    logging_steps: int = Field(10, ge=1, description="Optimizer steps between loss logs.")
    save_steps: int | None = Field(None, ge=1, description="Optimizer steps between checkpoints. None: each epoch.")
    save_total_limit: int | None = Field(2, ge=1, description="Checkpoints kept (oldest deleted first).")
    eval_steps: int | None = Field(None, ge=1, description="Also evaluate the first eval split every N steps "
                                                           "(TRL's loss and accuracy). None: only at the end.")
    resume_from_checkpoint: str | None = Field(None, description="A checkpoint-N folder, or 'latest' for the "
                                                                 "newest one in output_dir.")
    chat_template: str | None = Field(None, description="Jinja file for a tokenizer without a chat template.")
    trust_remote_code: bool = Field(False, description="Allow model code from the hub (off: safer).")
    progress: bool = Field(True, description="Show progress bars.")


def load_reward_config(path: str | Path, overrides: Sequence[str] = (),
                       updates: dict[str, Any] | None = None) -> RewardModelConfig:
    """A YAML preset plus dotted ``key=value`` overrides (values parsed as YAML, as ``load_config`` does) and
    ``updates`` (field values taken as they are: command-line flags)."""
    return load_yaml_config(RewardModelConfig, path, overrides, updates)


# ---------------------------------------------------------------- the recipe


def resolve_resume(cfg: RewardModelConfig) -> str | None:
    """The checkpoint folder to resume from: ``'latest'`` is the newest checkpoint-N in output_dir."""
    if cfg.resume_from_checkpoint is None:
        return None
    if cfg.resume_from_checkpoint == "latest":
        from transformers.trainer_utils import get_last_checkpoint

        last = get_last_checkpoint(cfg.output_dir) if Path(cfg.output_dir).is_dir() else None
        if last is None:
            raise UserError(f"resume_from_checkpoint latest: no checkpoint-N folder in {cfg.output_dir}")
        return last
    if not (Path(cfg.resume_from_checkpoint) / "trainer_state.json").is_file():
        raise UserError(f"resume_from_checkpoint {cfg.resume_from_checkpoint!r}: not a checkpoint folder "
                        "(no trainer_state.json)")
    return cfg.resume_from_checkpoint


def train_reward_model(cfg: RewardModelConfig, callbacks: Sequence[Any] = (), log: Log | None = None) -> dict:
    """Train, save a plain HF checkpoint, score the held-out splits with it, write manifest.json; return it."""
    from transformers.utils import logging as hf_logging

    was_on = hf_logging.is_progress_bar_enabled()
    if not cfg.progress:  # also the "Loading weights" / "Writing model shards" bars
        hf_logging.disable_progress_bar()
    try:
        quiet = log is None or int(os.environ.get("RANK", "0")) != 0  # one console line per run, not per process
        try:
            result = _train(cfg, callbacks, (lambda msg: None) if quiet else log)
        except BaseException:
            abandon_distributed()  # no barrier: the other ranks may never reach it
            raise
        end_distributed()  # the other ranks wait here while rank 0 scores and writes the manifest
        return result
    finally:
        if was_on:
            hf_logging.enable_progress_bar()


def _train(cfg: RewardModelConfig, callbacks: Sequence[Any], log: Log) -> dict:
    import gc
    import json

    resume = resolve_resume(cfg)
    if cfg.lora is not None and sharded_weights():
        raise UserError("lora with FSDP or DeepSpeed ZeRO-3 is not supported (the adapters cannot be merged into "
                        "sharded weights); use configs/accelerate/ddp.yaml or zero2.yaml")
    run = prepare_reward_training(cfg, callbacks, log)
    trainer = run.trainer
    if resume:
        log(f"resuming from {resume}")
    report_dir = os.environ.get(RANK_REPORT_ENV)
    batches, hook = input_recorder(trainer.model) if report_dir else ([], None)
    result = trainer.train(resume_from_checkpoint=resume)
    if hook is not None:
        hook.remove()
        write_rank_report(report_dir, trainer, batches)
    out = Path(cfg.output_dir)
    if cfg.lora is not None:
        # Merge so the output loads without PEFT; the unmerged adapters stay in the checkpoint-N folders.
        merged = trainer.model.merge_and_unload()
        if trainer.accelerator.is_main_process:
            merged.save_pretrained(out)
            run.tokenizer.save_pretrained(out)
        del merged
    else:
        trainer.save_model(str(out))
    is_main = trainer.accelerator.is_main_process
    history = [h for h in trainer.state.log_history if "loss" in h or "eval_loss" in h]
    step_times = run.timer.times[1:] or run.timer.times  # the first step pays for warm-up
    metrics: dict[str, Any] = {
        # train_loss is the Trainer's mean over the steps this invocation ran (after a resume: only those)
        "train_loss": result.training_loss, "steps": trainer.state.global_step, "steps_run": len(run.timer.times),
        "epochs": trainer.state.epoch, "train_runtime_s": result.metrics.get("train_runtime"),
        "step_time_s": statistics.median(step_times) if step_times else None,
        "last_logged_loss": next((h["loss"] for h in reversed(history) if "loss" in h), None),
    }
    run.trainer = trainer = None  # free the training copy before loading the saved one
    gc.collect()
    if not is_main:
        return {"metrics": metrics}
    model, tokenizer = load_reward_model(out, cfg.dtype)
    metrics["eval"] = {name: pair_metrics(model, pairs, tokenizer.pad_token_id, cfg.eval_batch_size)
                       for name, pairs in run.evals.items()}
    for name, m in metrics["eval"].items():
        if m["accuracy"] is not None:
            log(f"eval {name}: accuracy {m['accuracy']:.3f} on {m['pairs']} pairs")
    from ..backends.local_models import fingerprint_files, model_files

    path = write_manifest(out, recipe=RECIPE, config=cfg.model_dump(mode="json"), data=run.files, metrics=metrics,
                          extra={"overlong": {"train": run.train.stats,
                                              **{k: v.stats for k, v in run.evals.items()}},
                                 "base_model": {"name": cfg.model, "kind": run.source.kind,
                                                "fingerprint": fingerprint_files(run.source.kind,
                                                                                 model_files(run.source))},
                                 "batch": {"global": cfg.batch_size, "per_device": cfg.per_device_batch_size,
                                           "processes": world_size(), "accumulation": _accumulation(cfg)},
                                 "resumed_from": resume,
                                 "log_history": history})
    log(f"reward model: {out} (manifest {path.name})")
    return json.loads(path.read_text())


# ---------------------------------------------------------------- command line


@click.argument("config", type=click.Path(dir_okay=False))
@click.option("-o", "--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Override a config field, e.g. -o max_steps=20 (repeatable).")
@click.option("--model", help="Base model: checkpoint folder, .gguf file, 'embedded' or hub id.")
@click.option("--train", "train_pairs", help="Training pair file or folder.")
@click.option("--eval", "eval_pairs", help="Held-out pair file or folder.")
@click.option("--out", "output_dir", help="Output folder.")
@click.option("--resume", "resume_from_checkpoint", help="A checkpoint-N folder, or 'latest'.")
@click.option("--progress/--no-progress", default=None, help="Show progress bars (default: the config's).")
def _train_rm(config: str, overrides: tuple[str, ...], **flags: Any) -> None:
    """Train a Bradley-Terry reward model on preference pairs (TRL RewardTrainer).

    CONFIG is a YAML preset, e.g. configs/train/rm_cpu.yaml or configs/train/rm_paper.yaml. Over-long pairs
    are counted and printed; the output folder holds a standard sequence-classification checkpoint and
    manifest.json (versions, data hash, resolved config, train loss, held-out accuracy).
    """
    cfg = load_reward_config(config, overrides, updates=flags)
    manifest = train_reward_model(cfg, log=lambda m: click.echo(m, err=True))
    m = manifest.get("metrics", {})
    if "eval" in m:  # rank 0 only: the others return before scoring
        step = f"; median step {m['step_time_s']:.3f} s" if m["step_time_s"] is not None else ""
        click.echo(f"train loss {m['train_loss']:.4f} at step {m['steps']}{step}; output {cfg.output_dir}")


train_rm_cmd = click.command("train-rm")(_train_rm)
