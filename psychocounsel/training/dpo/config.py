"""``train-dpo``'s config: every field a run reads, with its source, and which of them a resumed run may change."""

from __future__ import annotations

from pathlib import Path
from typing import Literal, Sequence

from pydantic import BaseModel, ConfigDict, Field

from ...config import load_yaml_config
from ..lora import LoraSettings


class DPOTrainConfig(BaseModel):
    """Everything that shapes a DPO run. Defaults are the paper's offline DPO where it gives a number."""

    model_config = ConfigDict(extra="forbid")

    pairs: list[str] = Field(default_factory=list, description="Pair files or folders (the command's PAIRS).")
    out: str | None = Field(None, description="Output folder (the command's --out).")
    model: str = Field("embedded", description=(
        "Policy (and reference) model: a checkpoint folder, a .gguf file, 'embedded' (SmolLM2-135M), or a hub id."))
    chat_template: str | None = Field(None, description=(
        "Jinja chat template (text, or a path to a file) used instead of the tokenizer's; needed for base models."))
    split: str | None = Field("train", description=(
        "Train only on pairs of this split (files named train-*/train.* carry it); null = every row."))
    eval_split: str | None = Field(None, description="Also evaluate on this split of PAIRS (e.g. dev); null = none.")
    beta: float = Field(0.1, gt=0, description="DPO beta, the KL strength (paper: 0.1).")
    loss_type: Literal["sigmoid", "ipo", "hinge"] = Field("sigmoid", description="sigmoid = the DPO paper's loss.")
    sft_weight: float = Field(0.0, ge=0, description=(
        "Add this times the chosen responses' token NLL to the loss (RPO, Pang et al. 2024). Offline pairs from "
        "other models pull a small policy off its own distribution: on SmolLM2 plain DPO drove greedy replies "
        "into repetition (docs/TRAINING.md); the NLL term keeps the chosen likely. 0 = plain DPO."))
    learning_rate: float = Field(5e-7, gt=0, description="Peak learning rate (paper's DPO-Iter: 5e-7).")
    epochs: float = Field(1.0, gt=0, description="Passes over the pairs.")
    max_steps: int = Field(-1, description="Stop after this many optimizer steps; -1 = use epochs.")
    batch_size: int = Field(64, ge=1, description="Pairs per optimizer step over all devices (paper: 64).")
    per_device_batch_size: int = Field(8, ge=1, description=(
        "Pairs per forward pass on one device; gradient accumulation makes up batch_size."))
    max_length: int = Field(2048, ge=8, description="Tokens of prompt + response (paper's reward-model length).")
    overlong: Literal["truncate", "drop", "error"] = Field("truncate", description=(
        "Pairs longer than max_length: truncate the response end (TRL), drop the pair, or stop with an error."))
    reference: Literal["cached", "precomputed", "live"] = Field("cached", description=(
        "Reference log-probs: cached = computed once and stored on disk for later runs; precomputed = once per "
        "run; live = a reference forward on every step (plain TRL)."))
    ref_cache_dir: str | None = Field(None, description=(
        "Where cached reference log-probs live; null = $XDG_CACHE_HOME/psychocounsel/ref_logps."))
    ref_batch_size: int | None = Field(None, ge=1, description=(
        "Pairs per reference forward when precomputing; null = per_device_batch_size."))
    group_by_length: bool = Field(True, description="Batch pairs of similar length together (less padding).")
    lr_scheduler: Literal["linear", "cosine", "constant", "constant_with_warmup"] = Field(
        "linear", description="Learning-rate schedule after warmup.")
    warmup: float = Field(0.1, ge=0, description=(
        "Warmup: a fraction of the steps if < 1, else a step count (0.1: the alignment-handbook DPO recipes)."))
    weight_decay: float = Field(0.0, ge=0, description="AdamW weight decay.")
    max_grad_norm: float = Field(1.0, gt=0, description="Gradient clipping norm (transformers' default).")
    gradient_checkpointing: bool = Field(False, description="Recompute activations: less memory, ~20% slower.")
    precision: Literal["auto", "fp32", "bf16"] = Field("auto", description=(
        "auto = bf16 on a GPU, fp32 on a CPU (bf16 training is slower than fp32 on most CPUs)."))
    device: Literal["auto", "cpu"] = Field("auto", description="auto = the GPU when there is one.")
    lora: LoraSettings | None = Field(None, description=(
        "Train LoRA adapters instead of every weight (merged into the saved model unless lora.merge: false); "
        "null = full."))
    train_layers: int | None = Field(None, ge=1, description=(
        "Train only the top N transformer blocks (embeddings frozen); ~4x faster on CPU for SmolLM2 with N=4. "
        "null = every weight. Not with lora."))
    seed: int = Field(0, description="Seeds data order, LoRA init and dropout.")
    logging_steps: int = Field(10, ge=1, description="Log TRL's metrics every this many steps.")
    save_steps: int = Field(500, ge=1, description="Checkpoint every this many steps (for resume).")
    save_total_limit: int | None = Field(2, ge=1, description="Checkpoints kept in out/checkpoints.")
    eval_steps: int | None = Field(None, ge=1, description="Evaluate every this many steps; null = only at the end.")
    resume: bool = Field(True, description="Continue from the last checkpoint in out/checkpoints if there is one.")
    keep_checkpoints: bool = Field(False, description="Keep out/checkpoints after a finished run.")


# Fields a resumed run may change without changing what it trains.
RESUME_FREE = {"resume", "keep_checkpoints", "ref_cache_dir", "ref_batch_size", "logging_steps", "save_total_limit"}


def load_dpo_config(path: str | Path | None, overrides: Sequence[str] = ()) -> DPOTrainConfig:
    """YAML (or nothing: the defaults) plus dotted ``key=value`` overrides (values parsed as YAML)."""
    return load_yaml_config(DPOTrainConfig, path, overrides)
