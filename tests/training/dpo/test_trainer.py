"""train-dpo's trainer on the tiny random Llama: the loss against a hand computation, the reference log-prob cache
(hit, miss, invalidation) and over-long pairs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pairfiles import write_pairs
from recipe_configs import dpo_cfg, dpo_losses, dpo_manifest

from psychocounsel.errors import UserError
from psychocounsel.training.dpo.recipe import build_dpo_trainer, train_dpo
from psychocounsel.training.dpo.trainer import ref_cache_key

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

    cfg = dpo_cfg(tmp_path, tiny_model_dir, "out", reference=reference, max_length=256, beta=0.1)
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

    first = train_dpo(dpo_cfg(tmp_path, tiny_model_dir, "run1", max_steps=3))
    rc1 = dpo_manifest(first)["ref_cache"]
    assert rc1["hit"] is False and rc1["train"]["ref_forward_batches"] == 4 == len(calls)  # 8 pairs / 2
    assert Path(rc1["train"]["path"]).is_file()
    assert json.loads(Path(rc1["train"]["path"]).with_suffix(".json").read_text())["max_length"] == 128

    calls.clear()
    second = train_dpo(dpo_cfg(tmp_path, tiny_model_dir, "run2", max_steps=3, learning_rate=3e-4))
    rc2 = dpo_manifest(second)["ref_cache"]
    assert rc2["hit"] is True and rc2["ref_forward_batches"] == 0 and calls == []
    assert rc2["train"]["key"] == rc1["train"]["key"]
    assert dpo_losses(second)[0] == dpo_losses(first)[0]
    assert dpo_losses(second)[1:] != dpo_losses(first)[1:]  # the lr really changed

    # Same settings from the cache: the very same run, step for step.
    third = train_dpo(dpo_cfg(tmp_path, tiny_model_dir, "run3", max_steps=3))
    assert dpo_manifest(third)["ref_cache"]["hit"] and dpo_losses(third) == dpo_losses(first)


def test_ref_cache_misses_when_data_or_max_length_change(tmp_path, tiny_model_dir):
    first = train_dpo(dpo_cfg(tmp_path, tiny_model_dir, "run1", max_steps=1))
    key = first["ref_cache"]["train"]["key"]
    changed = write_pairs(tmp_path / "data2" / "train.jsonl", tweak=" Tell me more.")
    second = train_dpo(dpo_cfg(tmp_path, tiny_model_dir, "run2", max_steps=1, pairs=[str(changed)]))
    assert second["ref_cache"]["hit"] is False and second["ref_cache"]["train"]["key"] != key
    third = train_dpo(dpo_cfg(tmp_path, tiny_model_dir, "run3", max_steps=1, max_length=64))
    assert third["ref_cache"]["hit"] is False and third["ref_cache"]["train"]["key"] not in (key,)
    # "precomputed" runs the reference pass every time and leaves the cache alone
    fourth = train_dpo(dpo_cfg(tmp_path, tiny_model_dir, "run4", max_steps=1, reference="precomputed"))
    assert fourth["ref_cache"]["ref_forward_batches"] == 4 and "key" not in fourth["ref_cache"]["train"]


def test_ref_cache_key_covers_its_parts():
    parts = {"reference_weights": "a", "tokens": "b", "max_length": 128, "chat_template": "c", "bf16": False}
    keys = {ref_cache_key(parts)} | {ref_cache_key({**parts, k: "other"}) for k in parts}
    assert len(keys) == len(parts) + 1


# ---------------------------------------------------------------- over-long pairs


def test_overlong_pairs_counted_dropped_or_refused(tmp_path, tiny_model_dir):
    # Token lengths of write_pairs' 8 pairs (prompt, prompt+chosen, prompt+rejected) on the tiny tokenizer:
    # (32,49,47) (40,66,64) (49,66,82) (31,57,46) (40,57,64) (49,75,82) (32,49,47) (41,67,65)
    res = train_dpo(dpo_cfg(tmp_path, tiny_model_dir, "trunc", max_length=60, max_steps=1))
    assert res["data"]["train"] == {"pairs_in": 8, "prompt_fills_max_length": 0, "over_max_length": 5,
                                    "max_length": 60, "longest": 82, "mean_tokens": 64.5, "policy": "truncate",
                                    "pairs_used": 8}
    res = train_dpo(dpo_cfg(tmp_path, tiny_model_dir, "drop", max_length=60, max_steps=1, overlong="drop"))
    assert res["data"]["train"]["pairs_used"] == 3
    # A prompt of 49 tokens fills max_length 45: no response token left, TRL drops the pair; we count it.
    res = train_dpo(dpo_cfg(tmp_path, tiny_model_dir, "short", max_length=45, max_steps=1))
    assert res["data"]["train"]["prompt_fills_max_length"] == 2 and res["data"]["train"]["pairs_used"] == 6
    with pytest.raises(UserError, match="5 longer than max_length=60"):
        train_dpo(dpo_cfg(tmp_path, tiny_model_dir, "err", max_length=60, max_steps=1, overlong="error"))
