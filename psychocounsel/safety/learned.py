"""The crisis screen's learned layer: the embedded SmolLM2 read as a classifier, offline, on CPU.

    layer = load_layer()                   # psychocounsel/data/crisis_layer.npz (scripts/train_crisis_layer.py)
    risk, high = layer.scores(texts)       # risk >= layer.threshold raises none to possible,
                                           # high >= layer.high_threshold raises possible to high
    layer.checked_threshold                # lower: where a capable model reviews each flag the layer raises

Why a learned layer next to the rules: real clients say the same wish in more ways than patterns can list. On
messages by authors who never saw the rules, the rules found 0.28-0.43 of those at risk.

What it is: the first ``HIDDEN_LAYER`` (20) of SmolLM2-135M's 30 layers. Layers 13-20 carry low-rank adapters
(LoRA, rank 8, on every attention and MLP projection), fine-tuned for this task and merged into the weights when
the layer loads, so a text costs what the plain model costs. The mean over tokens of layer 20's output feeds two
linear heads: any risk, and high against possible. The adapters and heads weigh ~2.6 MB; the model itself is
the one the package already embeds.

Why fine-tuned adapters and not a probe: a linear probe on frozen states (``crisis-learned-4``, with hashed word
n-grams stacked) could not tell a denial, a fear of dying or someone else's story from a wish, and at 0.90
recall flagged one message in eight in cross-validation. On one validation fold, at 0.90 recall, its
precision was 0.77; adapters on layers 17-20 reached 0.89 and on layers 13-20 0.92. The adapters are trained on
layer-12 states cached once (scripts/train_crisis_layer.py), so a training run takes ~30 minutes on 2 cores.

Reading speed is the plain model's: ~20 speeches a second on 2 cores (`bench/bench_screen.py --learned`), and
only texts the rules do not screen high are read: 26k speeches, the paper's scale, take about 20 minutes. It
runs in fp32 on purpose: bf16 was 2.7x faster on a CPU with native bf16 but flipped decisions, and a screen
should read a text the same on every machine.

Two any-risk thresholds: ``threshold`` for the screen on its own, and a lower ``checked_threshold`` for when a
capable model reviews every flag this layer raises and may clear it (``screen --check-overrules``): the
layer then flags more for recall, and the model's reading removes its false alarms (docs/CRISIS_SCREEN.md).

The screen only lets this layer RAISE a tier (signal kinds ``learned`` and ``learned_high``, the score as
evidence), never lower one, so every rule's evidence span stays.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cached_property, lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import UserError

LAYER_PATH = Path(__file__).resolve().parents[1] / "data" / "crisis_layer.npz"
HIDDEN_LAYER = 20  # of SmolLM2-135M's 30: probes on layers 16-20 were best when layers 1-30 were swept
ADAPTED_FROM = 12  # layers 13-20 (indices 12-19) carry adapters; the cached training inputs are layer 12's output
RANK, ALPHA = 8, 16  # LoRA's usual defaults; rank 8 over 8 layers is 651k parameters
ADAPTED = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
           "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj")
MAX_TOKENS = 320  # ~1,300 characters; the paper's speeches are at most 1,000 characters
HIDDEN_SIZE = 576

# name ("layers.16.self_attn.q_proj") -> (A: rank x in, B: out x rank); the update is (ALPHA / RANK) * B @ A
Adapters = dict[str, tuple[np.ndarray, np.ndarray]]


def adapter_names(first: int = ADAPTED_FROM, stop: int = HIDDEN_LAYER) -> list[str]:
    return [f"layers.{i}.{m}" for i in range(first, stop) for m in ADAPTED]


def merge_adapters(body: Any, adapters: Adapters, scale: float = ALPHA / RANK) -> None:
    """Add each adapter's low-rank update to its linear layer's weight, in place: the merged model computes
    exactly what the base model plus the adapters computes, at the base model's cost."""
    import torch

    with torch.no_grad():
        for name, (a, b) in adapters.items():
            linear = body.get_submodule(name)
            update = torch.from_numpy(np.asarray(b, np.float32)) @ torch.from_numpy(np.asarray(a, np.float32))
            if update.shape != linear.weight.shape:
                raise UserError(f"crisis screen: adapter {name} has shape {tuple(update.shape)}, "
                                f"the model's weight {tuple(linear.weight.shape)}: retrain the learned layer")
            linear.weight += scale * update


def mean_pool(h: Any, mask: Any) -> Any:
    """The mean over a batch's real tokens (``mask`` 1) of hidden states ``h`` (batch x tokens x size)."""
    m = mask.unsqueeze(-1).to(h.dtype)
    return (h * m).sum(1) / m.sum(1).clamp(min=1)


class HiddenStates:
    """Mean-pooled output of the embedded SmolLM2's layer ``HIDDEN_LAYER``, adapters merged; the layers above
    it never run.

    Loaded once per layer and process, on first use (~10 s; ~300 MB). Thread-safe: the serve gate calls it
    from worker threads."""

    def __init__(self, adapters: Adapters | None = None, layer: int = HIDDEN_LAYER, batch_size: int = 16):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from ..backends.local_models import resolve_model

        src = resolve_model("embedded")
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(src.location, gguf_file=src.gguf_file)
            model = AutoModelForCausalLM.from_pretrained(src.location, gguf_file=src.gguf_file, dtype=torch.float32)
        except Exception as e:  # noqa: BLE001 (a damaged install: one line, as for every model load)
            msg = (str(e).strip().splitlines() or [type(e).__name__])[0]
            raise UserError(f"crisis screen: cannot load the embedded model for the learned layer: {msg}") from None
        self.body = model.model
        self.body.layers = self.body.layers[:layer]
        self.body.norm = torch.nn.Identity()  # the final norm belongs to layer 30's output, not ours
        self.body.eval()
        merge_adapters(self.body, adapters or {})
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.tokenizer.padding_side = "right"
        self.batch_size = batch_size
        self._lock = threading.Lock()
        self._torch = torch

    def tokens(self, batch: Sequence[str]) -> tuple[Any, Any]:
        """(token states, attention mask) of one padded batch at the top layer, without gradients. The caller
        holds the order: the training script caches these per text, ``__call__`` pools them."""
        with self._lock, self._torch.inference_mode():
            enc = self.tokenizer(list(batch), return_tensors="pt", padding=True, truncation=True,
                                 max_length=MAX_TOKENS)
            h = self.body(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"]).last_hidden_state
        return h, enc["attention_mask"]

    def __call__(self, texts: Sequence[str]) -> np.ndarray:
        out = np.zeros((len(texts), self.body.config.hidden_size), dtype=np.float32)
        order = np.argsort([len(t) for t in texts])  # similar lengths together: less padding
        for i in range(0, len(texts), self.batch_size):
            idx = order[i:i + self.batch_size]
            h, mask = self.tokens([texts[j] for j in idx])
            out[idx] = mean_pool(h, mask).numpy()
        return out


_LOADING = threading.Lock()


@dataclass(frozen=True)
class LearnedLayer:
    """The adapters and the two heads as shipped. ``scores`` >= ``threshold`` raises a ``none`` to ``possible``
    (>= ``checked_threshold`` where a capable model reviews the raise); a ``possible`` whose high score reaches
    ``high_threshold`` is raised to ``high``."""

    adapters: Adapters
    risk_w: np.ndarray
    risk_b: float
    high_w: np.ndarray
    high_b: float
    threshold: float
    high_threshold: float
    checked_threshold: float
    version: str

    def states(self) -> Callable[[Sequence[str]], np.ndarray]:
        """The embedded model with this layer's adapters merged (loaded on first use, then kept; the serve gate
        asks from several threads at once, and the model loads once)."""
        with _LOADING:
            return self._reader

    @cached_property
    def _reader(self) -> HiddenStates:  # a frozen dataclass still has an instance dict for cached_property
        return HiddenStates(self.adapters)

    def heads(self, pooled: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        pooled = pooled.astype(np.float64)
        return pooled @ self.risk_w + self.risk_b, pooled @ self.high_w + self.high_b

    def scores(self, texts: Sequence[str], states: Callable[[Sequence[str]], np.ndarray] | None = None
               ) -> tuple[np.ndarray, np.ndarray]:
        """(any-risk, high) scores of ``texts``; ``states`` computes pooled states (default: the adapted model).
        Compare them with ``threshold`` and ``high_threshold``."""
        if not texts:
            return np.zeros(0), np.zeros(0)
        return self.heads((states or self.states())(list(texts)))


_SCALARS = ("risk_b", "high_b", "threshold", "high_threshold", "checked_threshold")


def save_layer(layer: LearnedLayer, path: Path = LAYER_PATH) -> None:
    arrays: dict[str, Any] = {f"adapter/{n}/{part}": np.asarray(m, np.float32)
                              for n, ab in layer.adapters.items() for part, m in zip("AB", ab)}
    arrays.update(risk_w=np.asarray(layer.risk_w, np.float32), high_w=np.asarray(layer.high_w, np.float32),
                  version=np.asarray(layer.version), **{k: np.float64(getattr(layer, k)) for k in _SCALARS})
    np.savez_compressed(path, **arrays)


@lru_cache(maxsize=1)
def load_layer(path: Path = LAYER_PATH) -> LearnedLayer | None:
    """The shipped layer, or None where the file is absent (then the screen is the rules alone)."""
    if not path.exists():
        return None
    z = np.load(path)
    missing = [k for k in ("risk_w", "high_w", "version", *_SCALARS) if k not in z.files]
    if missing:
        raise UserError(f"{path}: no {', '.join(missing)} in the crisis screen's learned layer; rebuild it with "
                        "scripts/train_crisis_layer.py (--rethreshold OOF sets the thresholds alone)")
    adapters = {n: (z[f"adapter/{n}/A"], z[f"adapter/{n}/B"])
                for n in dict.fromkeys(k.split("/")[1] for k in z.files if k.startswith("adapter/"))}
    return LearnedLayer(adapters=adapters, risk_w=z["risk_w"].astype(np.float64), high_w=z["high_w"].astype(np.float64),
                        version=str(z["version"]), **{k: float(z[k]) for k in _SCALARS})
