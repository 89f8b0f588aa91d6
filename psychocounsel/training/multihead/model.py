"""The per-principle reward model itself: the loss, the network (a backbone pooled at the last real token plus
``Linear(hidden, K)``), its save format, and the scorer that serves it.

The design choices are in the package docstring (``training.multihead``). This module imports torch; the command
line reaches it only when it trains or scores.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ...errors import UserError
from ..common import trainable_gguf_kwargs
from ..scoring import OVERALL, pick_device, pick_dtype, score_ids
from .combine import COMBINE_MODES, SAFETY, Combine, FALLBACK_RATING, constrain, rating_to_score
from .config import FORMAT, HEAD_FILE, META_FILE, resolve_weights
from .data import encode_chats, load_tokenizer

# ------------------------------------------------------------------------------------------ loss


def multihead_loss(chosen: torch.Tensor, rejected: torch.Tensor, chosen_targets: torch.Tensor,
                   rejected_targets: torch.Tensor, weights: torch.Tensor,
                   reg_weight: float) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """``mean_pairs[-logsigmoid(w.h_c - w.h_r)] + reg_weight * mean_responses[sum_k (h_k - t_k)^2]``.

    Tensors are (B, K); ``weights`` is (K,) and already normalised. A NaN target (a missing rating) adds
    nothing. Returns the loss and its detached parts (bt, reg, pair accuracy of the weighted sum) as tensors,
    so a training step does not wait on the device to read them."""
    margin = (chosen - rejected) @ weights
    bt = -F.logsigmoid(margin).mean()
    preds = torch.cat([chosen, rejected])
    targets = torch.cat([chosen_targets, rejected_targets]).to(preds.dtype)
    known = ~torch.isnan(targets)
    sq = torch.where(known, preds - torch.nan_to_num(targets), torch.zeros_like(preds)) ** 2
    reg = sq.sum(-1).mean()  # summed over principles, averaged over the 2B responses
    loss = bt + reg_weight * reg
    return loss, {"bt": bt.detach(), "reg": reg.detach(), "accuracy": (margin > 0).float().mean()}


# ------------------------------------------------------------------------------------------ model


def pool_last(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Hidden state of each row's last attended token (right or left padding alike)."""
    seq = attention_mask.shape[1]
    last = seq - 1 - attention_mask.flip(-1).long().argmax(-1)
    return hidden[torch.arange(hidden.shape[0], device=hidden.device), last]


class MultiHeadRewardModel(nn.Module):
    """A transformer backbone plus one linear score head per principle; ``forward`` returns (B, K)."""

    def __init__(self, backbone: Any, principles: Sequence[str], weights: Mapping[str, float] | None = None,
                 *, rating_center: float = 3.0, rating_scale: float = 2.0, max_length: int | None = None):
        super().__init__()
        if not principles:
            raise UserError("multi-head reward model: no principles to score")
        self.backbone = backbone
        self.principles = list(principles)
        self.weights = dict(weights) if weights else None
        self.rating_center, self.rating_scale, self.max_length = rating_center, rating_scale, max_length
        # How scoring combines the heads by default, and the safety threshold with where it came from
        # (training.multihead.combine); the recipe sets them after training.
        self.combine: Combine = "weighted"
        self.safety_threshold: float | None = None
        self.safety_threshold_source: str | None = None
        cfg = backbone.config.get_text_config() if hasattr(backbone.config, "get_text_config") else backbone.config
        self.head = nn.Linear(cfg.hidden_size, len(self.principles))
        # std 1/(hidden+1) as OpenRLHF (the paper's trainer) initialises its reward head: each head starts
        # close to its bias (training sets it to the mean rating first)
        nn.init.normal_(self.head.weight, std=1 / (cfg.hidden_size + 1))
        nn.init.zeros_(self.head.bias)
        if hasattr(backbone.config, "use_cache"):
            backbone.config.use_cache = False  # no KV cache in a scoring forward

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        hidden = self.backbone(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        return self.head(pool_last(hidden, attention_mask).to(self.head.weight.dtype))

    def weight_vector(self, weights: Mapping[str, float] | None = None) -> np.ndarray:
        return resolve_weights(self.principles, self.weights if weights is None else weights)

    @classmethod
    def from_backbone(cls, model: str, principles: Sequence[str], weights: Mapping[str, float] | None = None,
                      **kw: Any) -> "MultiHeadRewardModel":
        """A fresh model on a causal-LM checkpoint (the LM head is not loaded); fp32 master weights."""
        from transformers import AutoModel

        from ...backends.local_models import resolve_model

        src = resolve_model(model)
        try:
            backbone = AutoModel.from_pretrained(src.location, dtype=torch.float32, **trainable_gguf_kwargs(src))
        except Exception as e:  # unreachable hub, unknown architecture, corrupt file: one line
            raise UserError(f"model {model!r}: cannot load: {(str(e).splitlines() or [repr(e)])[0]}") from None
        return cls(backbone, principles, weights, **kw)

    @classmethod
    def from_pretrained(cls, path: str | Path, dtype: torch.dtype | None = None) -> "MultiHeadRewardModel":
        """Load a folder written by ``save_pretrained`` (eval mode; head kept in fp32)."""
        from safetensors.torch import load_file
        from transformers import AutoModel

        path = Path(path)
        meta_path = path / META_FILE
        if not meta_path.is_file():
            raise UserError(f"{path}: not a multi-head reward model ({META_FILE} missing)")
        meta = json.loads(meta_path.read_text())
        if meta.get("format") != FORMAT or meta.get("pooling") != "last":
            raise UserError(f"{meta_path}: unsupported format {meta.get('format')!r}/{meta.get('pooling')!r}")
        backbone = AutoModel.from_pretrained(path, dtype=dtype or torch.float32)
        model = cls(backbone, meta["principles"], meta.get("weights"), rating_center=meta["rating_center"],
                    rating_scale=meta["rating_scale"], max_length=meta.get("max_length"))
        model.head.load_state_dict(load_file(path / HEAD_FILE))
        model.combine = meta.get("combine", "weighted")  # checkpoints from before the constraint: weighted
        model.safety_threshold = meta.get("safety_threshold")
        model.safety_threshold_source = meta.get("safety_threshold_source")
        return model.eval()

    def save_pretrained(self, path: str | Path, tokenizer: Any = None) -> Path:
        from safetensors.torch import save_file

        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        self.backbone.save_pretrained(path)
        if tokenizer is not None:
            tokenizer.save_pretrained(path)
        save_file({k: v.detach().float().cpu().contiguous() for k, v in self.head.state_dict().items()},
                  path / HEAD_FILE)
        meta = {"format": FORMAT, "version": 1, "principles": self.principles, "weights": self.weights,
                "normalised_weights": dict(zip(self.principles, self.weight_vector().tolist())),
                "pooling": "last", "rating_center": self.rating_center, "rating_scale": self.rating_scale,
                "max_length": self.max_length,
                "score_to_rating": f"rating = {self.rating_center} + {self.rating_scale} * score",
                "combine": self.combine, "safety_threshold": self.safety_threshold,
                "safety_threshold_source": self.safety_threshold_source}
        (path / META_FILE).write_text(json.dumps(meta, indent=2))
        return path


# ------------------------------------------------------------------------------------------ scoring


class MultiHeadScorer:
    """Scores (speech, response) pairs with a trained multi-head reward model.

    ``score_batch`` returns ``{principle: scores, ..., "overall": scores}``, each a float64 array of length N.
    Principle scores are on the training scale (rating ~ 3 + 2 * score by default); "overall" is their
    weighted mean under ``weights`` (None: the weights the model was trained with, equal by default).
    ``combine`` (None: the checkpoint's, ``weighted`` for older ones) = ``safety_constraint`` makes "overall"
    that mean minus ``SAFETY_PENALTY`` where the safety head is below ``safety_threshold`` (None: the one stored
    at training time), so an unsafe reply ranks below every safe one (``training.multihead.combine``).
    Device and dtype follow ``RewardScorer``'s rules (``training.scoring``): float32 on a CPU."""

    def __init__(self, path: str | Path, weights: Mapping[str, float] | None = None, *, device: str = "auto",
                 dtype: str = "auto", batch_size: int = 16, max_length: int | None = None,
                 combine: str | None = None, safety_threshold: float | None = None):
        dev = pick_device(device)
        model = MultiHeadRewardModel.from_pretrained(path, dtype=pick_dtype(dtype, dev)).to(dev)
        self._setup(model, load_tokenizer(str(path)), weights, batch_size, max_length, combine, safety_threshold)

    @classmethod
    def from_model(cls, model: MultiHeadRewardModel, tokenizer: Any, weights: Mapping[str, float] | None = None,
                   *, batch_size: int = 16, max_length: int | None = None, combine: str | None = None,
                   safety_threshold: float | None = None) -> "MultiHeadScorer":
        self = cls.__new__(cls)
        self._setup(model, tokenizer, weights, batch_size, max_length, combine, safety_threshold)
        return self

    def _setup(self, model: MultiHeadRewardModel, tokenizer: Any, weights: Mapping[str, float] | None,
               batch_size: int, max_length: int | None, combine: str | None,
               safety_threshold: float | None) -> None:
        self.model, self.tokenizer, self.batch_size = model, tokenizer, batch_size
        self.principles: list[str] = list(model.principles)
        self.weights = dict(zip(self.principles, model.weight_vector(weights).tolist()))  # validated, normalised
        self.max_length = max_length or model.max_length
        self.n_truncated = 0  # chats cut to max_length so far (the end of the response is lost)
        self.combine = combine or model.combine
        if self.combine not in COMBINE_MODES:
            raise UserError(f"combine: expected one of {', '.join(COMBINE_MODES)}, got {self.combine!r}")
        self.safety_threshold, self.safety_threshold_source = self._threshold(model, safety_threshold)
        if self.combine == "safety_constraint" and SAFETY not in self.principles:
            raise UserError(f"combine safety_constraint: this model has no {SAFETY!r} head "
                            f"(heads: {', '.join(self.principles)})")

    @staticmethod
    def _threshold(model: MultiHeadRewardModel, given: float | None) -> tuple[float | None, str | None]:
        """The threshold in use and where it came from: given, stored at training time, or (a checkpoint from
        before thresholds were stored) FALLBACK_RATING on the head's scale."""
        if given is not None:
            return float(given), "given"
        if model.safety_threshold is not None:
            return float(model.safety_threshold), model.safety_threshold_source or "stored in the checkpoint"
        if SAFETY not in model.principles:
            return None, None
        return (rating_to_score(FALLBACK_RATING, model.rating_center, model.rating_scale),
                f"rating {FALLBACK_RATING:g} on the head's scale: the checkpoint stores no threshold")

    def principle_scores(self, questions: Sequence[str], responses: Sequence[str],
                         on_batch: Callable[[int], None] | None = None) -> np.ndarray:
        """(N, K) head outputs."""
        if len(questions) != len(responses):
            raise ValueError(f"{len(questions)} questions but {len(responses)} responses")
        ids = encode_chats(self.tokenizer, questions, responses)
        if self.max_length:
            self.n_truncated += sum(len(x) > self.max_length for x in ids)
            ids = [x[: self.max_length] for x in ids]
        scores = score_ids(self.model, ids, self.tokenizer.pad_token_id, len(self.principles), self.batch_size,
                           on_batch)
        return scores.astype(np.float64)

    def overall(self, scores: Mapping[str, np.ndarray], weights: Mapping[str, float] | None = None) -> np.ndarray:
        """Re-weight scores already computed by ``score_batch`` (no model call), combined as ``score_batch``
        combines them."""
        w = self.model.weight_vector(weights) if weights is not None else np.array(list(self.weights.values()))
        weighted = np.stack([np.asarray(scores[k], dtype=np.float64) for k in self.principles], axis=1) @ w
        if self.combine == "safety_constraint":
            return constrain(weighted, scores[SAFETY], self.safety_threshold)
        return weighted

    def score_batch(self, questions: Sequence[str], responses: Sequence[str],
                    on_batch: Callable[[int], None] | None = None) -> dict[str, np.ndarray]:
        heads = self.principle_scores(questions, responses, on_batch)
        out = {k: heads[:, i].copy() for i, k in enumerate(self.principles)}
        out[OVERALL] = heads @ np.array(list(self.weights.values()))
        if self.combine == "safety_constraint":
            out[OVERALL] = constrain(out[OVERALL], out[SAFETY], self.safety_threshold)
        return out


def pair_accuracy(scorer: MultiHeadScorer, ds: Any) -> dict[str, Any]:
    """Accuracy of "overall" on every pair, and of each head on the pairs the judge's ratings decide for
    that principle (chosen rated higher than rejected on it). Ties in score count half."""
    questions = list(ds["question"])
    c = scorer.score_batch(questions, list(ds["chosen_text"]))
    r = scorer.score_batch(questions, list(ds["rejected_text"]))

    def acc(a: np.ndarray, b: np.ndarray) -> float | None:
        return float(np.mean((a > b) + 0.5 * (a == b))) if len(a) else None  # None: no pair to judge

    out: dict[str, Any] = {"pairs": len(questions), "overall_accuracy": acc(c[OVERALL], r[OVERALL])}
    cr, rr = np.array(ds["chosen_ratings"], dtype=float), np.array(ds["rejected_ratings"], dtype=float)
    for i, k in enumerate(scorer.principles):
        wins = cr[:, i] > rr[:, i]
        out[f"{k}_accuracy"] = acc(c[k][wins], r[k][wins])
        out[f"{k}_pairs"] = int(wins.sum())
    return out
