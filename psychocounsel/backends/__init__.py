"""Model backends behind one small interface (see ``base.py``).

- ``openai``: any OpenAI-compatible chat-completions server (``openai_http.py``).
- ``local``: transformers on CPU/GPU, batched, GGUF or HF checkpoints, G-Eval scoring (``local.py``).

Backends are imported lazily: a user who only calls an API never imports torch.
"""

from __future__ import annotations

from ..config import LocalBackendConfig, OpenAIBackendConfig
from .base import Backend, ChatRequest, ChoiceScorer, Completion, Sampling, cache_key

__all__ = ["Backend", "ChatRequest", "ChoiceScorer", "Completion", "Sampling", "cache_key", "make_backend"]


def make_backend(cfg: OpenAIBackendConfig | LocalBackendConfig) -> Backend:
    if cfg.type == "openai":
        from .openai_http import OpenAIBackend

        return OpenAIBackend(cfg)
    if cfg.type == "local":
        from .local import LocalBackend

        return LocalBackend(cfg)
    raise ValueError(f"unknown backend type {cfg.type!r}")


def in_flight(cfg: OpenAIBackendConfig | LocalBackendConfig) -> int:
    """How many calls a stage should keep in flight for this backend."""
    if cfg.type == "openai":
        return cfg.concurrency
    return 2 * cfg.batch_size  # one batch running, one filling
