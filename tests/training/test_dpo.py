"""Offline DPO (training/dpo.py) on the tiny random Llama: the loss against a hand computation, the reference
log-prob cache (hit, miss, invalidation), over-long pairs, LoRA output, resume, the command and presets."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pairfiles import write_pairs

from psychocounsel.errors import UserError
from psychocounsel.training.dpo import (
    DPOTrainConfig,
    build_dpo_trainer,
    load_dpo_config,
    train_dpo,
    train_dpo_cmd,
)
from psychocounsel.training.dpo_trainer import ref_cache_key

ROOT = Path(__file__).resolve().parents[2]


def cfg_for(tmp_path: Path, model: Path, out: str, **kw) -> DPOTrainConfig:
    pairs = kw.pop("pairs", None) or [str(write_pairs(tmp_path / "data" / "train.jsonl"))]
    base = dict(pairs=pairs, out=str(tmp_path / out), model=str(model), batch_size=2, per_device_batch_size=2,
                max_length=128, max_steps=2, logging_steps=1, learning_rate=1e-3, warmup=0,
                ref_cache_dir=str(tmp_path / "ref_cache"))
    return DPOTrainConfig(**{**base, **kw})


def losses(res: dict) -> list[float]:
    return [h["loss"] for h in res["metrics"]["history"]]


def manifest(res: dict) -> dict:
    return json.loads((Path(res["out"]) / "manifest.json").read_text())


# ---------------------------------------------------------------- the loss, by hand


def response_logp(model, tok, prompt, response) -> float:
    """Sum of the response tokens' log-probs, computed here without TRL."""
    import torch

    p_ids = tok.apply_chat_template(prompt, add_generation_prompt=True, tokenize=True)["input_ids"]
    ids = tok.apply_chat_template(prompt + response, tokenize=True)["input_ids"]
    assert ids[:len(p_ids)] == p_ids  # the ChatML prompt is a prefix of prompt + response
    x = torch.tensor([ids])
    with torch.no_grad():
        logp = model(input_ids=x).logits[0, :-1].float().log_softmax(-1)
    token_logp = logp.gather(-1, x[0, 1:, None])[:, 0]
    return float(token_logp[len(p_ids) - 1:].sum())


@pytest.mark.parametrize("reference", ["cached", "live"])
def test_dpo_loss_equals_hand_computed(tmp_path, tiny_model_dir, reference):
    import torch
    import torch.nn.functional as F
    from transformers import AutoModelForCausalLM, AutoTokenizer

    cfg = cfg_for(tmp_path, tiny_model_dir, "out", reference=reference, max_length=256, beta=0.1)
    trainer = build_dpo_trainer(cfg)
    torch.manual_seed(1)
    with torch.no_grad():  # move the policy away from the reference, so the loss is not log 2
        for p in trainer.model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    rows = [trainer.train_dataset[i] for i in range(2)]
    batch = trainer.data_collator(rows)
    trl_loss = float(trainer.compute_loss(trainer.model, batch))

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    ref = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    policy = trainer.model.eval()
    by_hand = []
    for row in rows:
        pc, pr = (response_logp(policy, tok, row["prompt"], row[k]) for k in ("chosen", "rejected"))
        rc, rr = (response_logp(ref, tok, row["prompt"], row[k]) for k in ("chosen", "rejected"))
        if reference == "cached":  # the precomputed columns are the reference's log-probs
            assert row["ref_chosen_logps"] == pytest.approx(rc, abs=1e-3)
            assert row["ref_rejected_logps"] == pytest.approx(rr, abs=1e-3)
        by_hand.append(float(-F.logsigmoid(torch.tensor(0.1 * ((pc - rc) - (pr - rr))))))
    expected = sum(by_hand) / len(by_hand)
    assert abs(expected - 0.6931) > 0.01  # a real test: the policy differs from the reference
    assert trl_loss == pytest.approx(expected, abs=1e-4)


# ---------------------------------------------------------------- reference log-prob cache


def test_ref_cache_written_then_hit_without_running_the_reference(tmp_path, tiny_model_dir, monkeypatch):
    from trl import DPOTrainer

    calls = []
    original = DPOTrainer.compute_ref_log_probs
    monkeypatch.setattr(DPOTrainer, "compute_ref_log_probs",
                        lambda self, *a, **kw: calls.append(1) or original(self, *a, **kw))

    first = train_dpo(cfg_for(tmp_path, tiny_model_dir, "run1", max_steps=3))
    rc1 = manifest(first)["ref_cache"]
    assert rc1["hit"] is False and rc1["train"]["ref_forward_batches"] == 4 == len(calls)  # 8 pairs / 2
    assert Path(rc1["train"]["path"]).is_file()
    assert json.loads(Path(rc1["train"]["path"]).with_suffix(".json").read_text())["max_length"] == 128

    calls.clear()
    second = train_dpo(cfg_for(tmp_path, tiny_model_dir, "run2", max_steps=3, learning_rate=3e-4))
    rc2 = manifest(second)["ref_cache"]
    assert rc2["hit"] is True and rc2["ref_forward_batches"] == 0 and calls == []
    assert rc2["train"]["key"] == rc1["train"]["key"]
    assert losses(second)[0] == losses(first)[0]
    assert losses(second)[1:] != losses(first)[1:]  # the lr really changed

    # Same settings from the cache: the very same run, step for step.
    third = train_dpo(cfg_for(tmp_path, tiny_model_dir, "run3", max_steps=3))
    assert manifest(third)["ref_cache"]["hit"] and losses(third) == losses(first)


def test_ref_cache_misses_when_data_or_max_length_change(tmp_path, tiny_model_dir):
    first = train_dpo(cfg_for(tmp_path, tiny_model_dir, "run1", max_steps=1))
    key = first["ref_cache"]["train"]["key"]
    changed = write_pairs(tmp_path / "data2" / "train.jsonl", tweak=" Tell me more.")
    second = train_dpo(cfg_for(tmp_path, tiny_model_dir, "run2", max_steps=1, pairs=[str(changed)]))
    assert second["ref_cache"]["hit"] is False and second["ref_cache"]["train"]["key"] != key
    third = train_dpo(cfg_for(tmp_path, tiny_model_dir, "run3", max_steps=1, max_length=64))
    assert third["ref_cache"]["hit"] is False and third["ref_cache"]["train"]["key"] not in (key,)
    # "precomputed" runs the reference pass every time and leaves the cache alone
    fourth = train_dpo(cfg_for(tmp_path, tiny_model_dir, "run4", max_steps=1, reference="precomputed"))
    assert fourth["ref_cache"]["ref_forward_batches"] == 4 and "key" not in fourth["ref_cache"]["train"]


def test_ref_cache_key_covers_its_parts():
    parts = {"reference_weights": "a", "tokens": "b", "max_length": 128, "chat_template": "c", "bf16": False}
    keys = {ref_cache_key(parts)} | {ref_cache_key({**parts, k: "other"}) for k in parts}
    assert len(keys) == len(parts) + 1


# ---------------------------------------------------------------- over-long pairs


def test_overlong_pairs_counted_dropped_or_refused(tmp_path, tiny_model_dir):
    # Token lengths of write_pairs' 8 pairs (prompt, prompt+chosen, prompt+rejected) on the tiny tokenizer:
    # (32,49,47) (40,66,64) (49,66,82) (31,57,46) (40,57,64) (49,75,82) (32,49,47) (41,67,65)
    res = train_dpo(cfg_for(tmp_path, tiny_model_dir, "trunc", max_length=60, max_steps=1))
    assert res["data"]["train"] == {"pairs_in": 8, "prompt_fills_max_length": 0, "over_max_length": 5,
                                    "max_length": 60, "longest": 82, "mean_tokens": 64.5, "policy": "truncate",
                                    "pairs_used": 8}
    res = train_dpo(cfg_for(tmp_path, tiny_model_dir, "drop", max_length=60, max_steps=1, overlong="drop"))
    assert res["data"]["train"]["pairs_used"] == 3
    # A prompt of 49 tokens fills max_length 45: no response token left, TRL drops the pair; we count it.
    res = train_dpo(cfg_for(tmp_path, tiny_model_dir, "short", max_length=45, max_steps=1))
    assert res["data"]["train"]["prompt_fills_max_length"] == 2 and res["data"]["train"]["pairs_used"] == 6
    with pytest.raises(UserError, match="5 longer than max_length=60"):
        train_dpo(cfg_for(tmp_path, tiny_model_dir, "err", max_length=60, max_steps=1, overlong="error"))


# ---------------------------------------------------------------- LoRA


def test_lora_adapter_loads_and_merged_model_loads(tmp_path, tiny_model_dir):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    res = train_dpo(cfg_for(tmp_path, tiny_model_dir, "lora", lora={"r": 4, "alpha": 8}, learning_rate=1e-2))
    out = Path(res["out"])
    assert res["output"]["kind"] == "lora_adapter" and (out / "adapter_config.json").is_file()
    assert not (out / "checkpoints").exists()  # removed after a finished run (keep_checkpoints: false)
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model_dir), out)
    lora_b = [p for n, p in model.named_parameters() if "lora_B" in n]
    assert lora_b and any(float(p.abs().sum()) > 0 for p in lora_b)  # trained (B starts at zero)

    res = train_dpo(cfg_for(tmp_path, tiny_model_dir, "merged", lora={"r": 4, "alpha": 8, "merge": True},
                            learning_rate=1e-2))
    merged = AutoModelForCausalLM.from_pretrained(res["out"])
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    assert res["output"]["kind"] == "merged_lora"
    diff = sum(float((a - b).abs().sum()) for a, b in zip(merged.parameters(), base.parameters()))
    assert diff > 0 and not any("lora" in n for n, _ in merged.named_parameters())


def test_train_layers_updates_only_the_top_blocks(tmp_path, tiny_model_dir):
    from transformers import AutoModelForCausalLM

    res = train_dpo(cfg_for(tmp_path, tiny_model_dir, "top1", train_layers=1, learning_rate=1e-2))
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
        train_dpo(cfg_for(tmp_path, tiny_model_dir, "both", train_layers=1, lora={"r": 4, "alpha": 8}))


def test_sft_weight_adds_the_chosen_nll_linearly(tmp_path, tiny_model_dir):
    """First-step loss = DPO loss + w * NLL(chosen): linear in w, and the NLL (the slope) is positive."""
    first = {}
    for w in (0.0, 1.0, 2.0):
        res = train_dpo(cfg_for(tmp_path, tiny_model_dir, f"sft{w}", sft_weight=w, max_steps=1))
        first[w] = res["metrics"]["train_loss"]
    slope = first[1.0] - first[0.0]
    assert slope > 0.5  # a random tiny model's token NLL is ~log(vocab)
    assert first[2.0] - first[1.0] == pytest.approx(slope, rel=1e-4)


# ---------------------------------------------------------------- resume


class Crash(Exception):
    pass


def test_resume_reproduces_losses(tmp_path, tiny_model_dir):
    from transformers import TrainerCallback

    class CrashAt(TrainerCallback):
        def on_step_end(self, args, state, control, **kw):
            if state.global_step == 3:
                raise Crash()

    common = dict(max_steps=4, save_steps=2, learning_rate=3e-3)
    whole = train_dpo(cfg_for(tmp_path, tiny_model_dir, "whole", **common))
    cfg = cfg_for(tmp_path, tiny_model_dir, "broken", **common)
    with pytest.raises(Crash):
        train_dpo(cfg, callbacks=[CrashAt()])
    assert (tmp_path / "broken" / "checkpoints" / "checkpoint-2").is_dir()
    with pytest.raises(UserError, match="'learning_rate' changed"):
        train_dpo(cfg.model_copy(update={"learning_rate": 1e-3}))
    with pytest.raises(UserError, match="unfinished run"):
        train_dpo(cfg.model_copy(update={"resume": False}))
    resumed = train_dpo(cfg)
    assert [h["step"] for h in resumed["metrics"]["history"]] == [1, 2, 3, 4]
    assert losses(resumed) == pytest.approx(losses(whole), abs=1e-6)
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
    cfg = cfg_for(tmp_path, Path("unused"), "smol", pairs=pairs, lora={"r": 4}, max_length=64, batch_size=2,
                  max_steps=1)
    res = train_dpo(cfg.model_copy(update={"model": "embedded"}))  # ~1 min on 2 cores: mostly GGUF loading
    assert res["output"]["kind"] == "lora_adapter" and res["output"]["base_gguf_file"].endswith(".gguf")
    assert res["ref_cache"]["train"]["ref_forward_batches"] == 1
    assert losses(res) == [pytest.approx(0.6931, abs=1e-3)]


def test_length_grouped_batches_cover_every_pair_once_with_less_padding():
    import random

    from psychocounsel.training.batching import LengthGroupedBatches

    rng = random.Random(0)
    lengths = [rng.randint(20, 500) for _ in range(203)]
    sampler = LengthGroupedBatches(lengths, batch_size=8, seed=3, megabatch=5)
    order = list(sampler)
    assert sorted(order) == list(range(203))
    assert order == list(LengthGroupedBatches(lengths, 8, seed=3, megabatch=5))  # replayable on resume
    sampler.set_epoch(1)
    assert list(sampler) != order  # a new order each epoch

    def padded(idx):  # tensor cells when each batch pads to its longest
        return sum(8 * max(lengths[i] for i in idx[k:k + 8]) for k in range(0, len(idx), 8))

    shuffled = rng.sample(range(203), 203)
    assert padded(order) < 0.8 * padded(shuffled)
    # every full batch is one slice of a length-sorted megabatch (so aligned with the loader's cuts of 8);
    # the partial batch of 203 % 8 = 3 comes last
    batches = [order[k:k + 8] for k in range(0, 200, 8)]
    assert all([lengths[i] for i in b] == sorted((lengths[i] for i in b), reverse=True) for b in batches)
