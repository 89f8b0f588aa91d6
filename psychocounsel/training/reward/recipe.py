"""``train-rm``: the run (train, save a plain checkpoint, score its held-out pairs, write the manifest) and the
command. The recipe's choices are in the package docstring (``training.reward``).

    psychocounsel train-rm configs/train/rm_cpu.yaml -o train_pairs=runs/demo/pairs
    accelerate launch --num_processes 8 -m psychocounsel.cli train-rm configs/train/rm_paper.yaml

The trainer (and with it torch and TRL) loads when training starts, so the command line starts without it.
"""

from __future__ import annotations

import os
import statistics
from pathlib import Path
from typing import Any, Callable, Sequence

import click

from ...errors import UserError
from ...runner import StageProgress
from ..common import write_manifest
from ..distributed import (RANK_REPORT_ENV, abandon_distributed, end_distributed, input_recorder, world_size,
    write_rank_report)
from ..scoring import RewardScorer
from .config import RECIPE, RewardModelConfig, accumulation, load_reward_config
from .data import TokenizedPairs

Log = Callable[[str], None]


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

    from .trainer import prepare_reward_training

    resume = resolve_resume(cfg)
    if cfg.lora is not None:
        cfg.lora.check_mergeable()
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
    scorer = RewardScorer(out, dtype=cfg.dtype, batch_size=cfg.eval_batch_size)
    progress = StageProgress(enabled=bool(cfg.progress))
    metrics["eval"] = {}
    for name, pairs in run.evals.items():
        with progress.task(f"scoring {name} pairs", 2 * len(pairs.chosen_ids)) as bar:
            metrics["eval"][name] = pair_metrics(scorer, pairs, bar.advance)
    for name, m in metrics["eval"].items():
        if m["accuracy"] is not None:
            log(f"eval {name}: accuracy {m['accuracy']:.3f} on {m['pairs']} pairs")
    from ...backends.local_models import fingerprint_files, model_files

    path = write_manifest(out, recipe=RECIPE, config=cfg.model_dump(mode="json"), data=run.files, metrics=metrics,
                          extra={"overlong": {"train": run.train.stats,
                                              **{k: v.stats for k, v in run.evals.items()}},
                                 "base_model": {"name": cfg.model, "kind": run.source.kind,
                                                "fingerprint": fingerprint_files(run.source.kind,
                                                                                 model_files(run.source))},
                                 "batch": {"global": cfg.batch_size, "per_device": cfg.per_device_batch_size,
                                           "processes": world_size(), "accumulation": accumulation(cfg)},
                                 "resumed_from": resume,
                                 "log_history": history})
    log(f"reward model: {out} (manifest {path.name})")
    return json.loads(path.read_text())


def pair_metrics(scorer: RewardScorer, pairs: TokenizedPairs,
                 on_batch: Callable[[int], None] | None = None) -> dict[str, Any]:
    """Accuracy (chosen scored strictly higher; a tie counts wrong) and mean reward gap over held-out pairs,
    scored from the token ids training saw (truncated as training truncated them)."""
    n = len(pairs.chosen_ids)
    if n == 0:
        return {"pairs": 0, "accuracy": None, "mean_gap": None}
    scores = scorer.score_ids(pairs.chosen_ids + pairs.rejected_ids, on_batch)[:, 0].tolist()
    gaps = [c - r for c, r in zip(scores[:n], scores[n:])]
    return {"pairs": n, "accuracy": sum(g > 0 for g in gaps) / n, "mean_gap": statistics.fmean(gaps)}


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
