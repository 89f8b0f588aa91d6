"""``train-rm-multihead``'s trainer: ``transformers.Trainer`` with ``multihead_loss`` as its loss, so accelerate
launch, DDP and DeepSpeed work as for any Trainer."""

from __future__ import annotations

from typing import Any

import torch
from transformers import Trainer

from ..batching import grouped_sampler
from .model import multihead_loss


class MultiHeadTrainer(Trainer):
    """Trainer whose loss is ``multihead_loss`` on a batch of [chosen..., rejected...] sequences."""

    loss_is_scaled_for_ga = False  # a per-batch mean: Trainer divides it by the accumulation steps

    def __init__(self, *a: Any, head_weights: torch.Tensor, reg_weight: float, group_by_length: bool = False,
                 **kw: Any):
        super().__init__(*a, **kw)
        self.head_weights, self.reg_weight, self.tokens_seen = head_weights, reg_weight, 0
        self.positions_seen, self.pc_group_by_length = 0, group_by_length

    def _get_train_sampler(self, train_dataset=None):
        """Length-grouped batches (``batching.LengthGroupedBatches``, as train-rm's): transformers' own
        grouping degenerates to random order on a few hundred pairs."""
        ds = train_dataset if train_dataset is not None else self.train_dataset
        sampler = grouped_sampler(self.args, ds, self.pc_group_by_length)
        return sampler if sampler is not None else super()._get_train_sampler(train_dataset)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        scores = model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"])
        n = inputs["chosen_targets"].shape[0]
        loss, _ = multihead_loss(scores[:n], scores[n:], inputs["chosen_targets"], inputs["rejected_targets"],
                                 self.head_weights.to(scores.device, scores.dtype), self.reg_weight)
        if model.training:  # a tensor sum: no device sync per step
            self.tokens_seen = self.tokens_seen + inputs["attention_mask"].sum().detach()
            self.positions_seen += inputs["attention_mask"].numel()  # padding included: what a step pays for
        return (loss, {"scores": scores}) if return_outputs else loss
