"""Batch order for training: pairs of similar length share a batch, so less of each forward pass is padding.

Used by ``train-dpo``, ``train-rm`` and ``train-rm-multihead`` (each pads a batch to its longest sequence). The
Trainer drops dataset columns its model does not take, so a trainer that wants this sampler keeps a ``length``
column (``keep_length_column`` for TRL's trainers, ``remove_unused_columns=False`` otherwise) and returns
``grouped_sampler(...)`` from ``_get_train_sampler`` when it is not None.
"""

from __future__ import annotations

from typing import Sequence


class LengthGroupedBatches:
    """Indices for batches of similar length: shuffle, cut into megabatches of 50 batches, sort each by length,
    cut into batches, shuffle the batch order (a partial batch last, so later batches stay aligned).

    transformers' LengthGroupedSampler shrinks its megabatch to len(data) // (4 x batch) batches, which on a
    few hundred pairs is one batch: no grouping at all (measured: 33.7% padding, the same as random order).
    50 batches per megabatch is its cap, kept here as the bound on how far order departs from random.
    The order is a function of (seed, epoch), so a resumed run replays it, and every process of a data-parallel
    run draws the same order (accelerate then hands each process every N-th batch)."""

    def __init__(self, lengths: Sequence[int], batch_size: int, seed: int, megabatch: int = 50):
        self.lengths, self.batch_size, self.seed, self.megabatch = list(lengths), batch_size, seed, megabatch
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:  # the Trainer calls this at every epoch
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.lengths)

    def __iter__(self):
        import torch

        g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        perm = torch.randperm(len(self.lengths), generator=g).tolist()
        size = self.batch_size * self.megabatch
        batches = []
        for start in range(0, len(perm), size):
            chunk = sorted(perm[start:start + size], key=lambda i: -self.lengths[i])
            batches += [chunk[i:i + self.batch_size] for i in range(0, len(chunk), self.batch_size)]
        full = [b for b in batches if len(b) == self.batch_size]
        tail = [b for b in batches if len(b) < self.batch_size]
        order = torch.randperm(len(full), generator=g).tolist()
        return iter([i for b in [full[j] for j in order] + tail for i in b])


def keep_length_column(signature_columns: list[str] | None) -> list[str] | None:
    """The Trainer's kept columns plus ``length`` (it strips every column the model's forward does not name)."""
    if signature_columns is None or "length" in signature_columns:
        return signature_columns
    return [*signature_columns, "length"]


def pad_right(seqs: Sequence[Sequence[int]], pad_id: int):
    """(ids, attention mask) of right-padded rows: how the reward models read a batch (the score sits at the
    last real token, which right padding keeps at a known place)."""
    import torch

    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, :len(s)] = torch.as_tensor(s, dtype=torch.long)
        mask[i, :len(s)] = 1
    return ids, mask


def grouped_sampler(args, dataset, enabled: bool) -> "LengthGroupedBatches | None":
    """The sampler a Trainer's ``_get_train_sampler`` returns for length-grouped batches, seeded as the Trainer
    seeds its own (``data_seed``, else ``seed``); None when grouping is off or the dataset has no ``length``."""
    if not enabled or "length" not in dataset.column_names:
        return None
    seed = args.data_seed if args.data_seed is not None else args.seed
    return LengthGroupedBatches(dataset["length"], args.per_device_train_batch_size, seed)
