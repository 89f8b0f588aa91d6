"""Scoring token sequences with a saved Bradley-Terry reward model: held-out accuracy after ``train-rm``.

Sequences go longest first, so each batch pads little (``rm_eval`` does the same for text)."""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any, Sequence

from .reward_data import TokenizedPairs

def score_token_ids(model, seqs: Sequence[Sequence[int]], pad_token_id: int, batch_size: int = 8) -> list[float]:
    """Reward of each token sequence; longest first and right-padded, so batches waste little padding."""
    import torch

    device = next(model.parameters()).device
    out = [0.0] * len(seqs)
    order = sorted(range(len(seqs)), key=lambda i: -len(seqs[i]))
    model.eval()
    with torch.inference_mode():
        for start in range(0, len(order), batch_size):
            idx = order[start:start + batch_size]
            width = max(len(seqs[i]) for i in idx)
            ids = torch.full((len(idx), width), pad_token_id, dtype=torch.long)
            mask = torch.zeros((len(idx), width), dtype=torch.long)
            for row, i in enumerate(idx):
                ids[row, :len(seqs[i])] = torch.tensor(list(seqs[i]))
                mask[row, :len(seqs[i])] = 1
            logits = model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits[:, 0].float().cpu()
            for row, i in enumerate(idx):
                out[i] = float(logits[row])
    return out


def pair_metrics(model, pairs: TokenizedPairs, pad_token_id: int, batch_size: int = 8) -> dict[str, Any]:
    """Accuracy (chosen scored strictly higher) and mean reward gap over held-out pairs."""
    n = len(pairs.chosen_ids)
    if n == 0:
        return {"pairs": 0, "accuracy": None, "mean_gap": None}
    scores = score_token_ids(model, pairs.chosen_ids + pairs.rejected_ids, pad_token_id, batch_size)
    gaps = [c - r for c, r in zip(scores[:n], scores[n:])]
    return {"pairs": n, "accuracy": sum(g > 0 for g in gaps) / n, "mean_gap": statistics.fmean(gaps)}


def load_reward_model(path: str | Path, dtype: str = "float32"):
    """(model, tokenizer) of a saved reward checkpoint, on the GPU when there is one."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    model = AutoModelForSequenceClassification.from_pretrained(path, dtype=getattr(torch, dtype))
    if torch.cuda.is_available():
        model = model.to("cuda")
    return model, AutoTokenizer.from_pretrained(path)
