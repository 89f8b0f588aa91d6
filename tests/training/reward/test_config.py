"""train-rm's config: the presets load, typos and a LoRA that would not be merged are one-line errors."""

from pathlib import Path

import pytest

from psychocounsel.errors import UserError
from psychocounsel.training.reward.config import load_reward_config

CONFIGS = Path(__file__).resolve().parents[3] / "configs" / "train"


def test_presets_load_and_typos_are_errors(tmp_path):
    paper = load_reward_config(CONFIGS / "rm_paper.yaml")
    assert (paper.epochs, paper.batch_size, paper.learning_rate, paper.max_length) == (2, 128, 9e-6, 2048)
    cpu = load_reward_config(CONFIGS / "rm_cpu.yaml", ["max_steps=3"])
    assert cpu.max_steps == 3 and cpu.model == "embedded"
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: x\ntrain_pairs: y\noutput_dir: z\nlearning_rat: 1\n")
    with pytest.raises(UserError, match="learning_rat"):
        load_reward_config(bad)


def test_lora_is_always_merged(tmp_path):
    cfg = load_reward_config(CONFIGS / "rm_cpu.yaml", ["lora.r=4"])
    assert cfg.lora.r == 4 and cfg.lora.merge  # the saved folder loads without PEFT
    with pytest.raises(UserError, match="lora: .*merge must be true for train-rm") as e:
        load_reward_config(CONFIGS / "rm_cpu.yaml", ["lora.r=4", "lora.merge=false"])
    assert "\n" not in str(e.value)
