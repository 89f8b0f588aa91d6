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
"""

from __future__ import annotations

import contextlib
import os
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Literal, Sequence

import click
from pydantic import BaseModel, ConfigDict, Field

from ..config import load_yaml_config
from ..errors import UserError
from .common import pair_files, trainable_gguf_kwargs, write_manifest

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


# ---------------------------------------------------------------- data


@dataclass
class TokenizedPairs:
    """Token ids ready for ``RewardTrainer`` plus the over-long accounting for one split."""

    chosen_ids: list[list[int]]
    rejected_ids: list[list[int]]
    margins: list[float]
    stats: dict[str, Any] = field(default_factory=dict)

    def to_dataset(self, with_margin: bool):
        import datasets

        cols: dict[str, Any] = {"chosen_ids": self.chosen_ids, "rejected_ids": self.rejected_ids}
        if with_margin:  # TRL subtracts a "margin" column whenever the batch has one
            cols["margin"] = self.margins
        return datasets.Dataset.from_dict(cols)


def tokenize_pairs(ds, tokenizer, max_length: int, overlong: str = "truncate", margin_scale: float = 1.0,
                   chunk: int = 1000) -> TokenizedPairs:
    """Chat-template each (speech, response) of a ``load_pairs_dataset`` table; count and handle over-long pairs.

    ``overlong='truncate'``: keep the first ``max_length - 1`` tokens and the last one; ``'drop'``: drop the pair.
    """
    chosen: list[list[int]] = []
    rejected: list[list[int]] = []
    for start in range(0, len(ds), chunk):
        part = ds[start:start + chunk]
        convs_c = [p + c for p, c in zip(part["prompt"], part["chosen"])]
        convs_r = [p + r for p, r in zip(part["prompt"], part["rejected"])]
        try:
            chosen += tokenizer.apply_chat_template(convs_c, tokenize=True, return_dict=True)["input_ids"]
            rejected += tokenizer.apply_chat_template(convs_r, tokenize=True, return_dict=True)["input_ids"]
        except Exception as e:  # jinja errors ("System role not supported", ...): one line for the user
            raise UserError(f"chat template failed: {(str(e).splitlines() or [type(e).__name__])[0]}") from None
    margins = [float(m) * margin_scale for m in ds["margin"]]
    out = TokenizedPairs([], [], [])
    n_over = n_identical = 0
    longest = 0
    for c, r, m in zip(chosen, rejected, margins):
        longest = max(longest, len(c), len(r))
        if max(len(c), len(r)) > max_length:
            n_over += 1
            if overlong == "drop":
                continue
            c, r = _truncate(c, max_length), _truncate(r, max_length)
            if c == r:  # the prompt alone filled max_length: both responses are gone
                n_identical += 1
                continue
        out.chosen_ids.append(c)
        out.rejected_ids.append(r)
        out.margins.append(m)
    out.stats = {"pairs": len(chosen), "overlong": n_over, "action": overlong,
                 "dropped": len(chosen) - len(out.chosen_ids), "no_response_left": n_identical,
                 "kept": len(out.chosen_ids), "max_length": max_length, "longest_tokens": longest}
    return out


def _truncate(ids: list[int], max_length: int) -> list[int]:
    return ids if len(ids) <= max_length else ids[:max_length - 1] + ids[-1:]


def describe_overlong(name: str, s: dict[str, Any]) -> str:
    line = f"{name}: {s['overlong']} of {s['pairs']} pairs longer than {s['max_length']} tokens"
    if not s["overlong"]:
        return line + f" (longest {s['longest_tokens']})"
    if s["action"] == "drop":
        return line + f": dropped ({s['kept']} kept)"
    extra = f", {s['no_response_left']} dropped (prompt alone fills max_length)" if s["no_response_left"] else ""
    return line + f": truncated{extra}"


def _split_rows(labels: list[str], train_split: str | None) -> list[bool]:
    if train_split is None:
        train_split = "train" if "train" in labels else None
    return [train_split is None or s == train_split for s in labels]


def _select(ds, keep: Sequence[bool]):
    return ds.select([i for i, k in enumerate(keep) if k])


def load_training_data(cfg: RewardModelConfig) -> tuple[Any, dict[str, Any], list[Path]]:
    """(train rows, {eval split: rows}, every data file): the split rules in the module docstring."""
    from .common import load_pairs_dataset

    train_files = pair_files(cfg.train_pairs)
    ds = load_pairs_dataset(train_files)
    is_train = _split_rows(ds["split"], cfg.train_split)
    train = _select(ds, is_train)
    if len(train) == 0:
        raise UserError(f"{cfg.train_pairs}: no pairs in split {cfg.train_split!r} (splits: "
                        f"{sorted(set(ds['split']))})")
    files = list(train_files)
    if cfg.eval_pairs is not None:
        eval_files = pair_files(cfg.eval_pairs)
        held = load_pairs_dataset(eval_files)
        files += [f for f in eval_files if f not in files]
    else:
        held = _select(ds, [not t for t in is_train])
    labels = held["split"] if len(held) else []
    wanted = cfg.eval_splits if cfg.eval_splits is not None else sorted(set(labels))
    evals = {s: _select(held, [x == s for x in labels]) for s in wanted if s in labels}
    if cfg.eval_pairs is not None and not evals:
        raise UserError(f"{cfg.eval_pairs}: no pairs in splits {wanted} (found {sorted(set(labels))}); "
                        "set eval_splits")
    return train, evals, files


# ---------------------------------------------------------------- model


def load_base_model(cfg: RewardModelConfig):
    """(model with a 1-output score head, tokenizer, ModelSource) from any causal-LM checkpoint name."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer, set_seed

    from ..backends.local_models import resolve_model

    src = resolve_model(cfg.model)
    kw = trainable_gguf_kwargs(src)
    set_seed(cfg.seed)  # the score head is initialised at random on load
    try:
        from trl.trainer.reward_trainer import suppress_seqcls_warning  # "score.weight newly initialised": expected
    except ImportError:  # pragma: no cover - older/newer TRL without it
        suppress_seqcls_warning = contextlib.nullcontext
    try:
        tokenizer = AutoTokenizer.from_pretrained(src.location, trust_remote_code=cfg.trust_remote_code,
                                                  **({"gguf_file": src.gguf_file} if src.gguf_file else {}))
        with suppress_seqcls_warning():
            model = AutoModelForSequenceClassification.from_pretrained(
                src.location, num_labels=1, dtype=getattr(torch, cfg.dtype),
                trust_remote_code=cfg.trust_remote_code, **kw)
    except Exception as e:  # hub unreachable, unknown architecture, corrupt file: one line
        where = "from the Hugging Face hub" if src.kind == "hub" else f"from {src.location}"
        raise UserError(f"model {cfg.model!r}: cannot load {where}: "
                        f"{(str(e).strip().splitlines() or [type(e).__name__])[0]}") from None
    if cfg.chat_template:
        p = Path(cfg.chat_template)
        if not p.is_file():
            raise UserError(f"chat_template {cfg.chat_template!r}: file not found")
        tokenizer.chat_template = p.read_text(encoding="utf-8")
    if not getattr(tokenizer, "chat_template", None):
        raise UserError(f"model {cfg.model!r}: tokenizer has no chat template; set chat_template to a .jinja file")
    if tokenizer.pad_token is None:  # TRL's rule too: the score is read at the last token that is not padding
        tokenizer.pad_token = tokenizer.eos_token
    model.config.pad_token_id = tokenizer.pad_token_id
    return model, tokenizer, src


def _world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def cpu_ddp_kwargs() -> dict[str, Any]:
    """``TrainingArguments`` fields for data-parallel training on CPU processes (torchrun + gloo).

    Without them a CPU-only ``accelerate launch --multi_gpu`` starts N processes that each train alone on all
    the data: accelerate only picks its MULTI_CPU mode when asked for the CPU, so the Trainer sees no
    distributed setup, never wraps the model in DDP and never shards the data (transformers just warns).
    Single-process runs get nothing, so a Mac keeps MPS.
    """
    import torch

    if _world_size() > 1 and not torch.cuda.is_available():
        return {"use_cpu": True, "ddp_backend": "gloo"}
    return {}


def end_distributed() -> None:
    """Wait for every rank, then tear the process group down: gloo otherwise sometimes aborts (SIGABRT) at exit."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def _sharded_weights() -> bool:
    """Whether ``accelerate launch`` asked for parameter sharding (FSDP, or DeepSpeed ZeRO stage 3)."""
    return (os.environ.get("ACCELERATE_USE_FSDP", "false").lower() == "true"
            or os.environ.get("ACCELERATE_DEEPSPEED_ZERO_STAGE") == "3")


def _abandon_distributed() -> None:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        with contextlib.suppress(Exception):
            dist.destroy_process_group()


def weights_digest(model) -> str:
    """sha256 over a model's state dict (sorted names, dtype, shape, bytes): equal digests mean equal weights."""
    import hashlib

    import torch

    h = hashlib.sha256()
    for name, t in sorted(model.state_dict().items()):
        t = t.detach().to("cpu").contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


RANK_REPORT_ENV = "PSYCHOCOUNSEL_RANK_REPORT"


def _input_recorder(model) -> tuple[list[list[int]], Any]:
    """A forward pre-hook noting (rows, tokens, id sum) of each training batch, so ranks can show their data."""
    seen: list[list[int]] = []

    def hook(module, args, kwargs):
        ids = kwargs.get("input_ids", args[0] if args else None)
        if ids is not None and module.training:
            seen.append([int(ids.shape[0]), int(ids.numel()), int(ids.sum())])

    return seen, model.register_forward_pre_hook(hook, with_kwargs=True)


def _write_rank_report(folder: str, trainer, batches: list[list[int]]) -> None:
    """Debug aid for multi-process runs (``PSYCHOCOUNSEL_RANK_REPORT=<folder>``): rank-N.json per process.

    Meant for DDP; under FSDP or ZeRO-3 each rank holds a shard, so the digests differ by design.
    """
    import json

    acc = trainer.accelerator
    model = acc.unwrap_model(trainer.model)  # with LoRA: base + adapters, unmerged (merging here would mutate it)
    report = {"rank": acc.process_index, "world_size": acc.num_processes,
              "env_rank": int(os.environ.get("RANK", "0")), "distributed_type": str(acc.distributed_type),
              "parallel_mode": str(trainer.args.parallel_mode), "wrapped": type(trainer.model_wrapped).__name__,
              "global_step": trainer.state.global_step, "batches": batches, "weights_sha256": weights_digest(model)}
    Path(folder).mkdir(parents=True, exist_ok=True)
    (Path(folder) / f"rank-{acc.process_index}.json").write_text(json.dumps(report, indent=1))


def _accumulation(cfg: RewardModelConfig) -> int:
    per_step = cfg.per_device_batch_size * _world_size()
    if cfg.batch_size % per_step:
        raise UserError(f"batch_size {cfg.batch_size} is not a multiple of per_device_batch_size "
                        f"{cfg.per_device_batch_size} x {_world_size()} processes")
    return cfg.batch_size // per_step


def trl_args(cfg: RewardModelConfig, has_eval: bool):
    """Our config -> TRL's ``RewardConfig`` (which is a ``TrainingArguments``)."""
    import torch
    from trl import RewardConfig

    bf16 = cfg.bf16_mixed
    if bf16 is None:
        bf16 = torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    sched_kw = {"min_lr_rate": cfg.min_lr_rate} if cfg.lr_scheduler == "cosine_with_min_lr" else None
    evaluating = cfg.eval_steps is not None and has_eval
    return RewardConfig(
        **cpu_ddp_kwargs(),
        ddp_find_unused_parameters=False,  # every trainable weight (body or adapters, and the head) is used
        output_dir=cfg.output_dir, seed=cfg.seed, report_to="none", disable_tqdm=not cfg.progress,
        per_device_train_batch_size=cfg.per_device_batch_size, gradient_accumulation_steps=_accumulation(cfg),
        per_device_eval_batch_size=cfg.per_device_batch_size,
        num_train_epochs=cfg.epochs, max_steps=cfg.max_steps or -1,
        learning_rate=cfg.learning_rate, lr_scheduler_type=cfg.lr_scheduler, lr_scheduler_kwargs=sched_kw,
        warmup_steps=cfg.warmup_ratio, weight_decay=cfg.weight_decay, adam_beta2=cfg.adam_beta2,
        max_grad_norm=cfg.max_grad_norm, bf16=bf16, fp16=False,
        activation_checkpointing=cfg.gradient_checkpointing,  # transformers 5's name for gradient checkpointing
        dataloader_pin_memory=torch.cuda.is_available(),
        logging_steps=cfg.logging_steps,
        save_strategy="steps" if cfg.save_steps else "epoch", save_steps=cfg.save_steps or 500,
        save_total_limit=cfg.save_total_limit,
        eval_strategy="steps" if evaluating else "no", eval_steps=cfg.eval_steps if evaluating else None,
        max_length=None,  # already enforced (and counted) by tokenize_pairs
        center_rewards_coefficient=cfg.center_rewards_coefficient,
    )


def _peft_config(lora: LoraSettings | None):
    if lora is None:
        return None
    from peft import LoraConfig, TaskType

    # SEQ_CLS makes PEFT train the new score head in full (modules_to_save), not through adapters.
    return LoraConfig(task_type=TaskType.SEQ_CLS, r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout,
                      target_modules=lora.target_modules)


def _step_timer():
    """A TrainerCallback recording the wall time of each optimizer step (built here so transformers loads late)."""
    from transformers import TrainerCallback

    class StepTimer(TrainerCallback):
        def __init__(self) -> None:
            self.times: list[float] = []
            self._t0 = 0.0

        def on_step_begin(self, args, state, control, **kw):
            self._t0 = time.perf_counter()

        def on_step_end(self, args, state, control, **kw):
            self.times.append(time.perf_counter() - self._t0)

    return StepTimer()


@dataclass
class PreparedRewardRun:
    """A ready ``RewardTrainer`` and what went into it (tests use it to check the loss before training)."""

    trainer: Any
    tokenizer: Any
    source: Any
    train: TokenizedPairs
    evals: dict[str, TokenizedPairs]
    files: list[Path]
    timer: Any


def prepare_reward_training(cfg: RewardModelConfig, callbacks: Sequence[Any] = (),
                            log: Log | None = None) -> PreparedRewardRun:
    """Load data and model, tokenize (counting over-long pairs), and build TRL's ``RewardTrainer``."""
    from trl import RewardTrainer

    log = log or (lambda msg: None)
    train_rows, eval_rows, files = load_training_data(cfg)
    model, tokenizer, src = load_base_model(cfg)
    train = tokenize_pairs(train_rows, tokenizer, cfg.max_length, cfg.overlong, cfg.margin_scale)
    log(describe_overlong("train", train.stats))
    if not train.chosen_ids:
        raise UserError(f"no training pairs left after dropping over-long ones (max_length {cfg.max_length})")
    evals = {}
    for name, rows in eval_rows.items():
        evals[name] = tokenize_pairs(rows, tokenizer, cfg.max_length, cfg.overlong, cfg.margin_scale)
        log(describe_overlong(name, evals[name].stats))
    if not evals:
        log("eval: no held-out pairs (give eval_pairs, or pair files with dev/test rows)")
    args = trl_args(cfg, has_eval=bool(evals))
    first_eval = next(iter(evals.values()), None)
    timer = _step_timer()
    trainer = RewardTrainer(
        model=model, args=args, processing_class=tokenizer,
        train_dataset=train.to_dataset(cfg.margin),
        eval_dataset=first_eval.to_dataset(cfg.margin) if args.eval_strategy != "no" and first_eval else None,
        peft_config=_peft_config(cfg.lora), callbacks=[timer, *callbacks],
    )
    return PreparedRewardRun(trainer, tokenizer, src, train, evals, files, timer)


# ---------------------------------------------------------------- scoring and eval


def score_token_ids(model, seqs: Sequence[Sequence[int]], pad_token_id: int, batch_size: int = 8) -> list[float]:
    """Reward of each token sequence; longest first and right-padded, so batches waste little padding."""
    import torch

    device = next(model.parameters()).device
    out = [0.0] * len(seqs)
    order = sorted(range(len(seqs)), key=lambda i: -len(seqs[i]))
    model.eval()
    with torch.inference_mode():
        for start in range(0, len(order), batch_size):
            idx = order[start:start + batch_size]
            width = max(len(seqs[i]) for i in idx)
            ids = torch.full((len(idx), width), pad_token_id, dtype=torch.long)
            mask = torch.zeros((len(idx), width), dtype=torch.long)
            for row, i in enumerate(idx):
                ids[row, :len(seqs[i])] = torch.tensor(list(seqs[i]))
                mask[row, :len(seqs[i])] = 1
            logits = model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits[:, 0].float().cpu()
            for row, i in enumerate(idx):
                out[i] = float(logits[row])
    return out


def pair_metrics(model, pairs: TokenizedPairs, pad_token_id: int, batch_size: int = 8) -> dict[str, Any]:
    """Accuracy (chosen scored strictly higher) and mean reward gap over held-out pairs."""
    n = len(pairs.chosen_ids)
    if n == 0:
        return {"pairs": 0, "accuracy": None, "mean_gap": None}
    scores = score_token_ids(model, pairs.chosen_ids + pairs.rejected_ids, pad_token_id, batch_size)
    gaps = [c - r for c, r in zip(scores[:n], scores[n:])]
    return {"pairs": n, "accuracy": sum(g > 0 for g in gaps) / n, "mean_gap": statistics.fmean(gaps)}


def load_reward_model(path: str | Path, dtype: str = "float32"):
    """(model, tokenizer) of a saved reward checkpoint, on the GPU when there is one."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    model = AutoModelForSequenceClassification.from_pretrained(path, dtype=getattr(torch, dtype))
    if torch.cuda.is_available():
        model = model.to("cuda")
    return model, AutoTokenizer.from_pretrained(path)


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
            _abandon_distributed()  # no barrier: the other ranks may never reach it
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
    if cfg.lora is not None and _sharded_weights():
        raise UserError("lora with FSDP or DeepSpeed ZeRO-3 is not supported (the adapters cannot be merged into "
                        "sharded weights); use configs/accelerate/ddp.yaml or zero2.yaml")
    run = prepare_reward_training(cfg, callbacks, log)
    trainer = run.trainer
    if resume:
        log(f"resuming from {resume}")
    report_dir = os.environ.get(RANK_REPORT_ENV)
    batches, hook = _input_recorder(trainer.model) if report_dir else ([], None)
    result = trainer.train(resume_from_checkpoint=resume)
    if hook is not None:
        hook.remove()
        _write_rank_report(report_dir, trainer, batches)
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
                                           "processes": _world_size(), "accumulation": _accumulation(cfg)},
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
