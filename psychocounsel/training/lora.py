"""LoRA settings shared by ``train-rm`` and ``train-dpo``: PEFT adapters instead of full fine-tuning.

By default the adapters are merged into the weights before saving, so every output is a plain checkpoint that
``eval-rm``, ``score``, ``evaluate`` and the local backend load without PEFT. ``merge: false`` keeps the adapter
alone (a few MB instead of the whole model), which only ``train-dpo`` offers: a reward model is graded and served
from its saved folder, which must load as a sequence classifier.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from ..errors import UserError
from .distributed import sharded_weights


class LoraSettings(BaseModel):
    """LoRA adapters (PEFT); ``merge`` decides what is saved."""

    model_config = ConfigDict(extra="forbid")

    r: int = Field(16, ge=1, description="Adapter rank (16: PEFT's and TRL's usual starting point for 1B-8B "
                                         "models).")
    alpha: int = Field(32, ge=1, description="LoRA scaling numerator; alpha = 2r is the common choice.")
    dropout: float = Field(0.05, ge=0.0, lt=1.0, description="Dropout on the adapter input.")
    target_modules: str | list[str] = Field("all-linear", description="Modules to adapt ('all-linear': every "
                                            "linear layer but the output head).")
    merge: bool = Field(True, description="Save the merged full model (loads without PEFT); false saves the "
                                          "adapter alone (train-dpo only).")

    def peft_config(self, task_type: str) -> Any:
        """PEFT's ``LoraConfig``. ``SEQ_CLS`` makes PEFT train a reward model's new score head in full
        (``modules_to_save``), not through adapters; ``CAUSAL_LM`` leaves the LM head frozen."""
        from peft import LoraConfig

        return LoraConfig(task_type=task_type, r=self.r, lora_alpha=self.alpha, lora_dropout=self.dropout,
                          target_modules=self.target_modules)

    def check_mergeable(self) -> None:
        """Merging needs every process to hold whole weights: refuse it under FSDP or DeepSpeed ZeRO-3."""
        if self.merge and sharded_weights():
            raise UserError("lora with FSDP or DeepSpeed ZeRO-3 is not supported (the adapters cannot be merged "
                            "into sharded weights); use configs/accelerate/ddp.yaml or zero2.yaml, or "
                            "lora.merge: false (train-dpo)")
