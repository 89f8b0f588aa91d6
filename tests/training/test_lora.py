"""LoRA settings shared by train-rm and train-dpo: merged by default, PEFT's config per task, no merge of
sharded weights."""

import pytest

from psychocounsel.errors import UserError
from psychocounsel.training.lora import LoraSettings


def test_defaults_merge_and_give_peft_the_task():
    lora = LoraSettings(r=4)
    assert (lora.r, lora.alpha, lora.dropout, lora.target_modules, lora.merge) == (4, 32, 0.05, "all-linear", True)
    seq = lora.peft_config("SEQ_CLS")
    assert seq.task_type == "SEQ_CLS" and seq.r == 4 and seq.lora_alpha == 32
    assert LoraSettings(target_modules=["q_proj"]).peft_config("CAUSAL_LM").target_modules == {"q_proj"}


def test_merging_sharded_weights_is_refused(monkeypatch):
    monkeypatch.setenv("ACCELERATE_DEEPSPEED_ZERO_STAGE", "3")
    with pytest.raises(UserError, match="cannot be merged into sharded weights") as e:
        LoraSettings().check_mergeable()
    assert "\n" not in str(e.value)
    LoraSettings(merge=False).check_mergeable()  # the adapter alone saves from shards
    monkeypatch.delenv("ACCELERATE_DEEPSPEED_ZERO_STAGE")
    LoraSettings().check_mergeable()
