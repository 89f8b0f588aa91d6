"""``train-rm``'s config: every field a run reads, with its source, and the accumulation a global batch needs."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, Sequence

from pydantic import BaseModel, ConfigDict, Field, field_validator

from ...config import load_yaml_config
from ...errors import UserError
from ..distributed import world_size
from ..lora import LoraSettings

RECIPE = "reward_bt"  # the manifest's "recipe"


class RewardModelConfig(BaseModel):
    """Everything ``train-rm`` needs; the resolved copy goes into manifest.json."""

    model_config = ConfigDict(extra="forbid")

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
    lora: LoraSettings | None = Field(None, description="LoRA settings; None trains every weight. The adapters "
                                      "are always merged before saving (eval-rm and score load the folder).")
    dtype: Literal["float32", "bfloat16"] = Field("float32", description="Weight dtype when loading.")
    bf16_mixed: bool | None = Field(None, description="bf16 autocast. None: on where a CUDA GPU supports bf16.")
    gradient_checkpointing: bool = Field(False, description="Recompute activations in backward: memory for time.")
    group_by_length: bool = Field(True, description="Batch pairs of similar length together: less padding, the "
                                  "same loss per pair (training.reward.trainer's docstring).")
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

    @field_validator("lora")
    @classmethod
    def _merged(cls, lora: LoraSettings | None) -> LoraSettings | None:
        if lora is not None and not lora.merge:
            raise ValueError("merge must be true for train-rm: eval-rm and score load the saved folder as a "
                             "sequence classifier, which an adapter alone is not")
        return lora


def load_reward_config(path: str | Path, overrides: Sequence[str] = (),
                       updates: dict[str, Any] | None = None) -> RewardModelConfig:
    """A YAML preset plus dotted ``key=value`` overrides (values parsed as YAML, as ``load_config`` does) and
    ``updates`` (field values taken as they are: command-line flags)."""
    return load_yaml_config(RewardModelConfig, path, overrides, updates)


def accumulation(cfg: RewardModelConfig) -> int:
    """Gradient accumulation steps that make ``batch_size`` global: batch_size / (per-device batch x processes).
    An indivisible combination is an error, not a silently different batch."""
    per_step = cfg.per_device_batch_size * world_size()
    if cfg.batch_size % per_step:
        raise UserError(f"batch_size {cfg.batch_size} is not a multiple of per_device_batch_size "
                        f"{cfg.per_device_batch_size} x {world_size()} processes")
    return cfg.batch_size // per_step
