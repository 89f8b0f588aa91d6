"""Small configs of the training recipes on the tiny random model, shared by each recipe's test files (a test
file cannot import another under --import-mode=importlib)."""

from __future__ import annotations

import json
from pathlib import Path

from pairfiles import write_pairs

from psychocounsel.training.dpo.config import DPOTrainConfig
from psychocounsel.training.reward.config import RewardModelConfig


def reward_cfg(tiny_model_dir, data, out, **kw) -> RewardModelConfig:
    """train-rm: 2 steps of batch 4 (2 pairs per forward), 64 tokens, a high lr so a step shows."""
    base = dict(model=str(tiny_model_dir), train_pairs=str(data), output_dir=str(out), max_length=64,
                batch_size=4, per_device_batch_size=2, max_steps=2, learning_rate=1e-3, warmup_ratio=0.0,
                logging_steps=1, save_steps=2, progress=False)
    return RewardModelConfig(**{**base, **kw})


def dpo_cfg(tmp_path: Path, model: Path, out: str, **kw) -> DPOTrainConfig:
    """train-dpo: 2 steps of batch 2 on write_pairs' 8 pairs, 128 tokens, the reference cache under tmp_path."""
    pairs = kw.pop("pairs", None) or [str(write_pairs(tmp_path / "data" / "train.jsonl"))]
    base = dict(pairs=pairs, out=str(tmp_path / out), model=str(model), batch_size=2, per_device_batch_size=2,
                max_length=128, max_steps=2, logging_steps=1, learning_rate=1e-3, warmup=0,
                ref_cache_dir=str(tmp_path / "ref_cache"))
    return DPOTrainConfig(**{**base, **kw})


def dpo_losses(res: dict) -> list[float]:
    """The logged loss of every step of a train_dpo result."""
    return [h["loss"] for h in res["metrics"]["history"]]


def dpo_manifest(res: dict) -> dict:
    return json.loads((Path(res["out"]) / "manifest.json").read_text())
