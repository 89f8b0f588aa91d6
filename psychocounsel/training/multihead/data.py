"""Per-principle reward model data: chats -> token ids (once, before training, so over-long pairs are counted
before the first step), rating targets, a ``length`` column, and the collator that only pads."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from ...errors import UserError
from ..batching import pad_right
from ..common import chat
from .config import MultiHeadRMConfig


# ------------------------------------------------------------------------------------------ tokens


def load_tokenizer(model: str, chat_template: str | None = None) -> Any:
    """The tokenizer of a backbone or checkpoint (a folder, a .gguf file, 'embedded' or a hub id), with a chat
    template (``chat_template``: a .jinja file for one that has none) and a pad token."""
    from transformers import AutoTokenizer

    from ...backends.local_models import resolve_model

    src = resolve_model(model)
    try:
        tok = AutoTokenizer.from_pretrained(src.location, **({"gguf_file": src.gguf_file} if src.gguf_file else {}))
    except Exception as e:  # unreachable hub, unknown format: one line
        first = (str(e).splitlines() or [repr(e)])[0]
        raise UserError(f"model {model!r}: cannot load its tokenizer: {first}") from None
    if chat_template:
        if not Path(chat_template).is_file():
            raise UserError(f"chat_template {chat_template!r}: file not found")
        tok.chat_template = Path(chat_template).read_text(encoding="utf-8")
    if not getattr(tok, "chat_template", None):
        raise UserError(f"model {model!r}: tokenizer has no chat template; set chat_template to a .jinja file")
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token  # padding is masked out; any id will do
    return tok


def encode_chats(tokenizer: Any, questions: Sequence[str], responses: Sequence[str]) -> list[list[int]]:
    """Token ids of chat(speech, response) under the tokenizer's chat template.

    The template already holds any BOS token, so the tokenizer must not add special tokens again."""
    texts = [tokenizer.apply_chat_template(chat(q, r), tokenize=False) for q, r in zip(questions, responses)]
    return tokenizer(texts, add_special_tokens=False)["input_ids"]


def tokenize_pairs(ds: Any, tokenizer: Any, cfg: MultiHeadRMConfig) -> tuple[Any, int]:
    """Add token ids, rating targets and a length column; apply ``cfg.overlong``. Returns (dataset, overlong)."""

    def enc(batch: dict[str, list]) -> dict[str, list]:
        out = {"chosen_input_ids": encode_chats(tokenizer, batch["question"], batch["chosen_text"]),
               "rejected_input_ids": encode_chats(tokenizer, batch["question"], batch["rejected_text"])}
        for side in ("chosen", "rejected"):
            out[f"{side}_targets"] = [[(r - cfg.rating_center) / cfg.rating_scale for r in row]
                                      for row in batch[f"{side}_ratings"]]
        out["length"] = [len(c) + len(r) for c, r in zip(out["chosen_input_ids"], out["rejected_input_ids"])]
        return out

    ds = ds.map(enc, batched=True, desc="tokenizing pairs")
    too_long = [max(len(c), len(r)) > cfg.max_length for c, r in zip(ds["chosen_input_ids"], ds["rejected_input_ids"])]
    n_over = int(sum(too_long))
    if n_over and cfg.overlong == "error":
        raise UserError(f"{n_over} of {len(ds)} pairs have a side over max_length={cfg.max_length} tokens "
                        "(set overlong: drop or truncate, or raise max_length)")
    if n_over and cfg.overlong == "drop":
        ds = ds.select([i for i, t in enumerate(too_long) if not t])
    elif n_over:
        m = cfg.max_length
        ds = ds.map(lambda b: {"chosen_input_ids": [x[:m] for x in b["chosen_input_ids"]],
                               "rejected_input_ids": [x[:m] for x in b["rejected_input_ids"]]}, batched=True)
    return ds, n_over


class PairCollator:
    """Rows of ``tokenize_pairs`` -> one right-padded batch [chosen..., rejected...] plus (B, K) targets."""

    def __init__(self, pad_id: int):
        self.pad_id = pad_id

    def __call__(self, rows: list[dict[str, Any]]) -> dict[str, Any]:
        import torch

        seqs = [r["chosen_input_ids"] for r in rows] + [r["rejected_input_ids"] for r in rows]
        ids, mask = pad_right(seqs, self.pad_id)
        return {"input_ids": ids, "attention_mask": mask,
                "chosen_targets": torch.tensor([r["chosen_targets"] for r in rows], dtype=torch.float32),
                "rejected_targets": torch.tensor([r["rejected_targets"] for r in rows], dtype=torch.float32)}
