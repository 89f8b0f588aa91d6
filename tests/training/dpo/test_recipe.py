"""train-dpo end to end on the tiny random Llama: LoRA output (merged by default, or the adapter alone), training
only the top blocks, the chosen-NLL term, resume, the command, the presets and config errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pairfiles import write_pairs
from recipe_configs import dpo_cfg, dpo_losses

from psychocounsel.errors import UserError
from psychocounsel.training.dpo.config import DPOTrainConfig, load_dpo_config
from psychocounsel.training.dpo.recipe import build_dpo_trainer, train_dpo, train_dpo_cmd

ROOT = Path(__file__).resolve().parents[3]

# ---------------------------------------------------------------- LoRA


def test_lora_adapter_alone_loads_and_the_default_merged_model_loads(tmp_path, tiny_model_dir):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    res = train_dpo(dpo_cfg(tmp_path, tiny_model_dir, "lora", lora={"r": 4, "alpha": 8, "merge": False},
                            learning_rate=1e-2))
    out = Path(res["out"])
    assert res["output"]["kind"] == "lora_adapter" and (out / "adapter_config.json").is_file()
    assert not (out / "checkpoints").exists()  # removed after a finished run (keep_checkpoints: false)
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model_dir), out)
    lora_b = [p for n, p in model.named_parameters() if "lora_B" in n]
    assert lora_b and any(float(p.abs().sum()) > 0 for p in lora_b)  # trained (B starts at zero)

    res = train_dpo(dpo_cfg(tmp_path, tiny_model_dir, "merged", lora={"r": 4, "alpha": 8}, learning_rate=1e-2))
    merged = AutoModelForCausalLM.from_pretrained(res["out"])
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    assert res["output"]["kind"] == "merged_lora"
    diff = sum(float((a - b).abs().sum()) for a, b in zip(merged.parameters(), base.parameters()))
    assert diff > 0 and not any("lora" in n for n, _ in merged.named_parameters())


def test_train_layers_updates_only_the_top_blocks(tmp_path, tiny_model_dir):
    from transformers import AutoModelForCausalLM

    res = train_dpo(dpo_cfg(tmp_path, tiny_model_dir, "top1", train_layers=1, learning_rate=1e-2))
    trained = dict(AutoModelForCausalLM.from_pretrained(res["out"]).named_parameters())
    base = dict(AutoModelForCausalLM.from_pretrained(tiny_model_dir).named_parameters())
    changed = {n for n in base if not bool((trained[n] - base[n]).abs().max() == 0)}
    n_layers = 1 + max(int(n.split(".")[2]) for n in base if ".layers." in n)
    # the top block, the final norm and an untied output head train; nothing below the top block moves
    assert changed and all(f"layers.{n_layers - 1}." in n or n in ("model.norm.weight", "lm_head.weight")
                           for n in changed)
    assert any(f"layers.{n_layers - 1}." in n for n in changed)
    assert not any("embed" in n for n in changed)
    with pytest.raises(UserError, match="train_layers and lora"):
        train_dpo(dpo_cfg(tmp_path, tiny_model_dir, "both", train_layers=1, lora={"r": 4, "alpha": 8}))


def test_sft_weight_adds_the_chosen_nll_linearly(tmp_path, tiny_model_dir):
    """First-step loss = DPO loss + w * NLL(chosen): linear in w, and the NLL (the slope) is positive."""
    first = {}
    for w in (0.0, 1.0, 2.0):
        res = train_dpo(dpo_cfg(tmp_path, tiny_model_dir, f"sft{w}", sft_weight=w, max_steps=1))
        first[w] = res["metrics"]["train_loss"]
    slope = first[1.0] - first[0.0]
    assert slope > 0.5  # a random tiny model's token NLL is ~log(vocab)
    assert first[2.0] - first[1.0] == pytest.approx(slope, rel=1e-4)


# ---------------------------------------------------------------- resume


class Crash(Exception):
    pass


def test_resume_reproduces_dpo_losses(tmp_path, tiny_model_dir):
    from transformers import TrainerCallback

    class CrashAt(TrainerCallback):
        def on_step_end(self, args, state, control, **kw):
            if state.global_step == 3:
                raise Crash()

    common = dict(max_steps=4, save_steps=2, learning_rate=3e-3)
    whole = train_dpo(dpo_cfg(tmp_path, tiny_model_dir, "whole", **common))
    cfg = dpo_cfg(tmp_path, tiny_model_dir, "broken", **common)
    with pytest.raises(Crash):
        train_dpo(cfg, callbacks=[CrashAt()])
    assert (tmp_path / "broken" / "checkpoints" / "checkpoint-2").is_dir()
    with pytest.raises(UserError, match="'learning_rate' changed"):
        train_dpo(cfg.model_copy(update={"learning_rate": 1e-3}))
    with pytest.raises(UserError, match="unfinished run"):
        train_dpo(cfg.model_copy(update={"resume": False}))
    resumed = train_dpo(cfg)
    assert [h["step"] for h in resumed["metrics"]["history"]] == [1, 2, 3, 4]
    assert dpo_losses(resumed) == pytest.approx(dpo_losses(whole), abs=1e-6)
    with pytest.raises(UserError, match="already holds a trained model"):
        train_dpo(cfg)


# ---------------------------------------------------------------- command, presets, config errors


def test_command_with_preset_overrides_and_eval_split(tmp_path, tiny_model_dir):
    from click.testing import CliRunner

    data = tmp_path / "pairs"
    write_pairs(data / "train.jsonl")
    write_pairs(data / "dev.jsonl", n=4)
    out = tmp_path / "cli"
    args = [str(data), "--config", str(ROOT / "configs/train/dpo_cpu.yaml"), "--out", str(out),
            "-o", f"model={tiny_model_dir}", "-o", "max_steps=2", "-o", "batch_size=4",
            "-o", "per_device_batch_size=2", "-o", "max_length=128", "-o", f"ref_cache_dir={tmp_path / 'c'}"]
    result = CliRunner().invoke(train_dpo_cmd, args)
    assert result.exit_code == 0, result.output
    assert "trained 2 steps" in result.output and "computed and cached" in result.output
    m = json.loads((out / "manifest.json").read_text())
    assert m["recipe"] == "dpo" and m["config"]["beta"] == 0.1 and m["data_hash"]
    assert m["data"]["train"]["pairs_used"] == 8 and m["data"]["eval"]["pairs_used"] == 4
    assert m["ref_cache"]["train"]["hit"] is False and "eval" in m["ref_cache"]
    assert "eval_rewards/accuracies" in m["metrics"]["eval"] and "rewards/margins" in m["metrics"]["last"]
    assert (out / "model.safetensors").is_file() and (out / "tokenizer_config.json").is_file()


def test_presets_load_and_config_errors_are_one_line(tmp_path):
    paper = load_dpo_config(ROOT / "configs/train/dpo_paper.yaml")
    assert paper.beta == 0.1 and paper.batch_size == 64 and paper.learning_rate == 5e-7
    cpu = load_dpo_config(ROOT / "configs/train/dpo_cpu.yaml", ["lora.r=8", "beta=0.2"])
    assert cpu.lora.r == 8 and cpu.beta == 0.2 and cpu.model == "embedded"
    with pytest.raises(UserError, match="bta"):
        load_dpo_config(None, ["bta=0.1"])
    with pytest.raises(UserError, match="beta"):
        load_dpo_config(None, ["beta=-1"])
    bad = tmp_path / "bad.yaml"
    bad.write_text("beta: [0.1\n")
    with pytest.raises(UserError, match="invalid YAML"):
        load_dpo_config(bad)
    with pytest.raises(UserError, match="not a multiple"):
        build_dpo_trainer(DPOTrainConfig(pairs=[str(write_pairs(tmp_path / "train.jsonl"))], out=str(tmp_path / "o"),
                                         batch_size=6, per_device_batch_size=4))
    with pytest.raises(UserError, match="no pairs in split 'train'.*split: null"):
        build_dpo_trainer(DPOTrainConfig(pairs=[str(write_pairs(tmp_path / "mine.jsonl"))], out=str(tmp_path / "o")))


@pytest.mark.slow
def test_embedded_smollm2_lora_step(tmp_path):
    """The embedded GGUF (SmolLM2-135M, dequantised) through the whole path: two LoRA steps, adapter out."""
    pytest.importorskip("gguf")
    pairs = [str(write_pairs(tmp_path / "data" / "train.jsonl", n=2))]
    cfg = dpo_cfg(tmp_path, Path("unused"), "smol", pairs=pairs, lora={"r": 4, "merge": False}, max_length=64,
                  batch_size=2, max_steps=1)
    res = train_dpo(cfg.model_copy(update={"model": "embedded"}))  # ~1 min on 2 cores: mostly GGUF loading
    assert res["output"]["kind"] == "lora_adapter" and res["output"]["base_gguf_file"].endswith(".gguf")
    assert res["ref_cache"]["train"]["ref_forward_batches"] == 1
    assert dpo_losses(res) == [pytest.approx(0.6931, abs=1e-3)]
