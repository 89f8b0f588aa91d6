"""Reward-model scorers: anything with
``score_batch(questions, responses, on_batch=None) -> np.ndarray | dict[str, np.ndarray]`` (``Scorer``),
and ``load_scorer``, which turns a checkpoint folder of either kind into one (``eval-rm``, ``score``,
``train-online-dpo``). ``on_batch(k)`` after each batch of k rows drives the commands' progress bars.

* ``RewardScorer`` serves a Hugging Face sequence-classification checkpoint (what ``train-rm`` writes, or any
  such reward model): the chat the reward model was trained on (user = speech, assistant = response,
  ``training.common.chat``), tokenized exactly as TRL's ``RewardTrainer`` does.
* A checkpoint with its own inference code (the per-principle model, ``training.multihead.model``) names it in
  its ``manifest.json``, or is known by its recipe, and is loaded through it.

Both run token sequences through ``score_ids``: longest first, right-padded, scores back in input order. So do
``train-rm``'s held-out accuracy and the per-principle recipe's, so a number a recipe reports is the number
``eval-rm`` gives on the same checkpoint and tokens.
"""

from __future__ import annotations

import importlib
import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from ..errors import UserError
from .batching import pad_right
from .common import chat
from .multihead.config import META_FILE as MULTIHEAD_META_FILE
from .multihead.config import RECIPE as MULTIHEAD_RECIPE

Scores = np.ndarray | dict[str, np.ndarray]
OVERALL = "overall"
# Sequences per forward pass. 16 is a middling default that fits a 8B model in bf16 at the paper's 2,048
# tokens on an 80 GB GPU; on a CPU larger batches buy little. Length sorting keeps padding small at any size.
DEFAULT_BATCH_SIZE = 16


class Scorer(Protocol):
    """Scores (speech, response) rows; ``on_batch(k)`` after each batch of k rows drives a progress bar."""

    def score_batch(self, questions: Sequence[str], responses: Sequence[str],
                    on_batch: Callable[[int], None] | None = None) -> Scores: ...


def pick_device(device: str) -> str:
    """``auto``: the GPU when torch sees one. Asking for CUDA without one is an error, not a silent CPU run."""
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"device {device!r} asked for, but torch sees no CUDA GPU")
    return device


def pick_dtype(dtype: str, device: str):
    import torch

    if dtype == "auto":
        if device.startswith("cuda"):
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        # CPU: float32 even where bf16 is native. bf16 keeps ~3 significant digits, so close rewards would
        # tie, and a tie counts as a wrong pair.
        return torch.float32
    table = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
    if dtype not in table:
        raise UserError(f"dtype must be auto, float32, bfloat16 or float16, got {dtype!r}")
    return table[dtype]


def score_ids(model: Any, seqs: Sequence[Sequence[int]], pad_id: int, n_out: int, batch_size: int = DEFAULT_BATCH_SIZE,
              on_batch: Callable[[int], None] | None = None) -> np.ndarray:
    """(N, ``n_out``) float32 outputs of a reward model for token sequences, in input order.

    ``model(input_ids=, attention_mask=)`` returns the scores, or an output whose ``logits`` are. Batches are
    length-sorted: a padded batch costs (longest sequence x batch size), so grouping similar lengths wastes
    little compute on padding (responses range from one line to pages). Longest first, so a batch that does not
    fit in memory fails at once rather than at the end. Right padding keeps each sequence's last real token,
    where the score is read, at a known place."""
    import torch

    device = next(model.parameters()).device
    order = sorted(range(len(seqs)), key=lambda i: -len(seqs[i]))
    out = np.zeros((len(seqs), n_out), dtype=np.float32)
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            for start in range(0, len(order), batch_size):
                idx = order[start:start + batch_size]
                ids, mask = pad_right([seqs[i] for i in idx], pad_id)
                res = model(input_ids=ids.to(device), attention_mask=mask.to(device))
                out[idx] = getattr(res, "logits", res).float().cpu().numpy().reshape(len(idx), n_out)
                if on_batch:
                    on_batch(len(idx))
    finally:
        model.train(was_training)
    return out


class RewardScorer:
    """Scores (speech, response) pairs with a sequence-classification reward model.

    ``max_length`` (default: no limit) cuts longer chats to their first tokens; every cut is counted in
    ``n_truncated`` and reported, never hidden.
    """

    def __init__(self, model_path: str | Path, *, device: str = "auto", dtype: str = "auto",
                 batch_size: int = DEFAULT_BATCH_SIZE, max_length: int | None = None):
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        if batch_size < 1:
            raise UserError(f"batch size must be >= 1, got {batch_size}")
        if max_length is not None and max_length < 1:
            raise UserError(f"max length must be >= 1, got {max_length}")
        self.name = str(model_path)
        local = Path(model_path).is_absolute() or self.name.startswith(".") or self.name.count("/") != 1
        if local and not Path(model_path).is_dir():  # not a hub id ("owner/name") either
            raise UserError(f"{model_path}: model folder not found")
        if local and not (Path(model_path) / "config.json").is_file():
            raise UserError(f"{model_path}: not a model folder (no config.json)")
        self.batch_size, self.max_length, self.n_truncated = batch_size, max_length, 0
        self.device = pick_device(device)
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(model_path)
            model, info = AutoModelForSequenceClassification.from_pretrained(
                model_path, dtype=pick_dtype(dtype, self.device), output_loading_info=True)
        except (OSError, ValueError) as e:
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise UserError(f"{model_path}: cannot load a sequence-classification checkpoint: {first}") from None
        # A causal LM loads here too, with a freshly drawn random head: scores would be noise.
        head_missing = [k for k in info.get("missing_keys", []) if k.split(".")[0] in ("score", "classifier")]
        if head_missing:
            raise UserError(f"{model_path}: no trained score head ({head_missing[0]} missing); "
                            "this looks like a base model, not a reward model (train one with train-rm)")
        if not self.tokenizer.chat_template:
            raise UserError(f"{model_path}: tokenizer has no chat template; the reward model reads a chat")
        # The model pools the last token that is not config.pad_token_id, so pad with exactly that id.
        text_cfg = model.config.get_text_config()
        pad = text_cfg.pad_token_id
        if pad is None:  # what TRL does at training time: the tokenizer's pad token, else its eos
            tok = self.tokenizer
            pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
            text_cfg.pad_token_id = pad
        if pad is None:
            raise UserError(f"{model_path}: neither the model nor the tokenizer names a pad or eos token")
        self.pad_id = int(pad)
        self.model = model.to(self.device).eval()
        self.heads = self._heads(model.config)

    def _heads(self, config) -> list[str] | None:
        """None for a single score; else the name of every output (a per-principle model's heads)."""
        from .. import PRINCIPLE_KEYS

        if config.num_labels == 1:
            return None
        names = [config.id2label[i] for i in range(config.num_labels)]
        if OVERALL not in names and not any(n in PRINCIPLE_KEYS for n in names):
            raise UserError(f"{self.name}: {config.num_labels} outputs labelled {names}; a reward model has "
                            f"one output, or one per principle ({', '.join(PRINCIPLE_KEYS)})")
        return names

    def tokenize(self, questions: Sequence[str], responses: Sequence[str]) -> list[list[int]]:
        """Token ids of each chat, as TRL's RewardTrainer builds them (template only, no added specials)."""
        if not questions:
            return []
        enc = self.tokenizer.apply_chat_template([chat(q, r) for q, r in zip(questions, responses)],
                                                 tokenize=True, return_dict=True)
        return [list(ids) for ids in enc["input_ids"]]

    def score_ids(self, seqs: Sequence[Sequence[int]], on_batch: Callable[[int], None] | None = None) -> np.ndarray:
        """(N, outputs) scores of token sequences already made (``train-rm``'s held-out pairs); no cut."""
        return score_ids(self.model, seqs, self.pad_id, 1 if self.heads is None else len(self.heads),
                         self.batch_size, on_batch)

    def score_batch(self, questions: Sequence[str], responses: Sequence[str],
                    on_batch: Callable[[int], None] | None = None) -> Scores:
        """Scores in input order: one float32 array, or one per head plus ``overall`` (mean of the
        principle heads when the checkpoint has no ``overall`` output: the paper's equal weights)."""
        from .. import PRINCIPLE_KEYS

        if len(questions) != len(responses):
            raise ValueError(f"{len(questions)} questions but {len(responses)} responses")
        ids = self.tokenize(questions, responses)
        if self.max_length is not None:
            self.n_truncated += sum(len(x) > self.max_length for x in ids)
            ids = [x[: self.max_length] for x in ids]
        out = self.score_ids(ids, on_batch)
        if self.heads is None:
            return out[:, 0]
        res = {name: out[:, j] for j, name in enumerate(self.heads)}
        if OVERALL not in res:
            res[OVERALL] = np.mean([res[h] for h in self.heads if h in PRINCIPLE_KEYS], axis=0).astype(np.float32)
        return res


MULTIHEAD_SCORER = "psychocounsel.training.multihead.model:MultiHeadScorer"
# Checkpoints with their own inference code, by the recipe in their manifest.json.
RECIPE_SCORERS = {MULTIHEAD_RECIPE: MULTIHEAD_SCORER}
# Where scorers that a manifest may name by an older module path live now (each recipe got its own folder):
# a checkpoint keeps loading whatever its manifest says.
MOVED_SCORERS = {
    "psychocounsel.training.multihead:MultiHeadScorer": MULTIHEAD_SCORER,
    "psychocounsel.training.multihead_model:MultiHeadScorer": MULTIHEAD_SCORER,
}


def load_scorer(model: str | Path | Scorer, weights: dict[str, float] | None = None, **kwargs: Any) -> Scorer:
    """A scorer from a checkpoint (or an object that already is one); ``kwargs``: device, dtype, batch_size,
    max_length.

    A checkpoint whose ``manifest.json`` names ``"scorer": "psychocounsel.<module>:<callable>"``, or a recipe
    in ``RECIPE_SCORERS``, is loaded by that callable (``callable(path, weights=..., **kwargs)``): how a reward
    model with its own inference code (the per-principle model) plugs in. ``weights`` (principle -> weight)
    and ``combine``/``safety_threshold`` (``training.multihead.combine``) only mean something to such a model. Only psychocounsel's own modules are imported this way.
    """
    if hasattr(model, "score_batch"):
        return model  # type: ignore[return-value]
    path = Path(model)
    manifest, spec = path / "manifest.json", None
    if manifest.is_file():
        try:
            meta = json.loads(manifest.read_text())
            spec = meta.get("scorer") or RECIPE_SCORERS.get(meta.get("recipe"))
        except (json.JSONDecodeError, AttributeError):
            spec = None
    if spec is None and (path / MULTIHEAD_META_FILE).is_file():  # a multi-head folder copied without its manifest
        spec = MULTIHEAD_SCORER
    if spec:
        spec = MOVED_SCORERS.get(str(spec), str(spec))
        mod, _, fn = spec.partition(":")
        if not (mod == "psychocounsel" or mod.startswith("psychocounsel.")) or not fn:
            raise UserError(f"{manifest}: scorer must be 'psychocounsel.<module>:<callable>', got {spec!r}")
        try:
            factory = getattr(importlib.import_module(mod), fn, None)
        except ModuleNotFoundError as e:
            if not e.name or not mod.startswith(e.name):
                raise  # the module exists but lacks a dependency: that error says which
            factory = None
        if factory is None:
            raise UserError(f"{manifest}: scorer {spec!r} does not exist in this version of psychocounsel")
        scorer = factory(path, weights=weights, **kwargs)
        if not getattr(scorer, "name", None):
            scorer.name = str(path)  # results.json says which checkpoint was graded
        return scorer
    if weights:
        raise UserError(f"{model}: principle weights need a per-principle reward model; this one has one score")
    if kwargs.pop("combine", None) not in (None, "weighted") or kwargs.pop("safety_threshold", None) is not None:
        raise UserError(f"{model}: combine safety_constraint needs a per-principle reward model with a safety head")
    return RewardScorer(path, **kwargs)


def as_heads(scores: Scores, n: int, source: str) -> dict[str, np.ndarray]:
    """A scorer's output as ``{"overall": ..., <head>: ...}`` of float64 arrays of length n, checked."""
    heads = {OVERALL: scores} if not isinstance(scores, dict) else dict(scores)
    if OVERALL not in heads:
        raise ValueError(f"{source}: scorer returned heads {sorted(heads)} without {OVERALL!r}")
    out = {}
    for k, v in heads.items():
        arr = np.asarray(v, dtype=np.float64).reshape(-1)
        if arr.size != n:
            raise ValueError(f"{source}: head {k!r} has {arr.size} scores for {n} inputs")
        if not np.all(np.isfinite(arr)):
            raise ValueError(f"{source}: head {k!r} has non-finite scores")
        out[k] = arr
    return out


def score_unique(scorer: Scorer, questions: Sequence[str], responses: Sequence[str],
                 on_batch: Callable[[int], None] | None = None) -> dict[str, np.ndarray]:
    """Score each distinct (question, response) once; return per-row arrays (train-style pairs reuse a
    response in up to three pairs)."""
    keys: dict[tuple[str, str], int] = {}
    rows = [keys.setdefault((q, r), len(keys)) for q, r in zip(questions, responses)]
    uq, ur = [k[0] for k in keys], [k[1] for k in keys]
    name = getattr(scorer, "name", type(scorer).__name__)
    if not keys:
        return {OVERALL: np.zeros(0)}
    raw = scorer.score_batch(uq, ur, on_batch=on_batch)
    heads = as_heads(raw, len(keys), name)
    idx = np.asarray(rows)
    return {k: v[idx] for k, v in heads.items()}
