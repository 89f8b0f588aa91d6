"""Token and tensor helpers of the ``local`` backend: chat encoding, choice tokens and their probabilities,
left padding, shared-prefix KV-cache reuse, and the per-row sampling logits processor (``RowDecoding``).
Pure functions over a tokenizer and tensors; ``local.py`` holds the backend that batches requests."""

from __future__ import annotations

import copy
import secrets
from typing import Any

import torch

from ..errors import UserError


def encode_chat(tokenizer: Any, messages: list[dict[str, str]], model: str) -> list[int]:
    """Token ids of the chat template applied to ``messages``, plus the assistant generation prompt."""
    if not getattr(tokenizer, "chat_template", None):
        raise UserError(f"model {model!r}: tokenizer has no chat template (use an instruct/chat checkpoint)")
    try:
        text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    except Exception as e:  # jinja raises e.g. "System role not supported" for some templates
        raise UserError(f"model {model!r}: chat template failed: {str(e).splitlines()[0]}") from None
    # The template writes BOS itself where the model wants one; adding special tokens would double it.
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def choice_token_ids(tokenizer: Any, choices: list[str]) -> list[tuple[int, ...]]:
    """For each choice, the token ids that stand for it as the next token ("3" and " 3" where both exist).

    A variant counts when, after dropping leading whitespace-only tokens (SentencePiece's "▁"), it is one
    token. A longer choice ("10") falls back to its first token; choices sharing a token are an error, since
    their probabilities could not be told apart.
    """
    out: list[tuple[int, ...]] = []
    owner: dict[int, str] = {}
    for choice in choices:
        ids: set[int] = set()
        first: int | None = None
        for variant in (choice, " " + choice):
            enc = tokenizer.encode(variant, add_special_tokens=False)
            while len(enc) > 1 and not tokenizer.decode(enc[:1]).strip():
                enc = enc[1:]
            if len(enc) == 1:
                ids.add(enc[0])
            elif enc and first is None:
                first = enc[0]
        if not ids and first is None:
            raise UserError(f"choice {choice!r} encodes to no token")
        for t in ids or {first}:
            if t in owner:
                raise UserError(f"choices {owner[t]!r} and {choice!r} map to the same token; G-Eval needs "
                                "choices that differ in their first token")
            owner[t] = choice
        out.append(tuple(sorted(ids or {first})))
    return out


def choice_probs(logits: torch.Tensor, token_ids: list[tuple[int, ...]]) -> list[list[float]]:
    """Sum each choice's variants and renormalise over the choices, in log space: a model that puts almost no
    mass on any choice still gives a distribution, never 0/0."""
    logp = torch.log_softmax(logits.float(), dim=-1)
    per_choice = torch.stack([torch.logsumexp(logp[:, list(ids)], dim=-1) for ids in token_ids], dim=-1)
    return torch.softmax(per_choice, dim=-1).cpu().tolist()


def common_prefix_len(rows: list[list[int]]) -> int:
    """Longest token prefix shared by all rows (in tokens, so BPE merges across the join are respected)."""
    for k in range(min(len(r) for r in rows)):
        if any(r[k] != rows[0][k] for r in rows[1:]):
            return k
    return min(len(r) for r in rows)


def left_pad(rows: list[list[int]], pad_id: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, width - len(r):] = torch.tensor(r, dtype=torch.long)
        mask[i, width - len(r):] = 1
    return ids.to(device), mask.to(device)


def positions(mask: torch.Tensor, offset: int = 0) -> torch.Tensor:
    """Position ids that skip left padding, so a padded row sees the positions it would see alone."""
    return (mask.cumsum(-1) - 1).clamp(min=0) + offset


def expand_cache(cache: Any, n: int) -> Any:
    """A batch-1 KV cache repeated to ``n`` rows; the original stays intact for the next chunk."""
    new = copy.copy(cache)
    new.layers = [copy.copy(layer) for layer in cache.layers]
    new.batch_repeat_interleave(n)
    return new


class RowDecoding:
    """Logits processor giving every row of a batch its own sampling settings and random stream.

    ``generate`` runs greedy; for a sampled row this processor draws the token itself (temperature, top_p,
    the row's generator) and leaves only that token finite, so argmax picks it. A row past its own
    max_tokens gets EOS forced; the caller cuts it back and reports finish_reason "length".
    """

    def __init__(self, width: int, samplings: list[Any], eos_id: int):
        self.width, self.eos_id, self.samplings = width, eos_id, samplings
        # CPU generators: a seed draws the same tokens whether the model runs on CPU or GPU.
        self.gens = [torch.Generator().manual_seed(s.seed if s.seed is not None else secrets.randbits(63))
                     for s in samplings]

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        step = input_ids.shape[1] - self.width
        cpu = scores.float().cpu() if any(s.temperature > 0 for s in self.samplings) else None
        for i, s in enumerate(self.samplings):
            if step >= s.max_tokens:
                token = self.eos_id
            elif s.temperature > 0:
                probs = torch.softmax(cpu[i] / s.temperature, dim=-1)
                if s.top_p < 1.0:  # keep the smallest head whose mass reaches top_p
                    sorted_p, order = probs.sort(descending=True)
                    sorted_p[sorted_p.cumsum(-1) - sorted_p >= s.top_p] = 0.0
                    probs = torch.zeros_like(probs).scatter_(0, order, sorted_p)
                token = int(torch.multinomial(probs, 1, generator=self.gens[i]))
            else:
                continue
            scores[i] = float("-inf")
            scores[i, token] = 0.0
        return scores
