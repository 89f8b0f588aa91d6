"""What the next run would spend, before it spends it: calls, tokens and cost per backend.

The one estimate behind ``psychocounsel run --dry-run`` and ``psychocounsel evaluate --dry-run``. Each
walks its own plan and adds what is still to do: a generation from the request it would send, a judgment
from the judge's prompt size. Upper bounds: every pending item counts as a cache miss, a response not
generated yet as ``max_tokens`` long, and retries (only on bad replies) are not counted ahead.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any, Mapping

from ..backends.base import ChatRequest

# English text with BPE tokenizers averages ~4 characters per token.
CHARS_PER_TOKEN = 4


class Estimate:
    """Calls, prompt characters and completion tokens per backend and model, added up item by item."""

    def __init__(self) -> None:
        self._rows: dict[tuple[str, str | None], list[float]] = defaultdict(lambda: [0, 0.0, 0.0])

    def add(self, backend: str, prompt_chars: float, completion_tokens: float, calls: int = 1,
            model: str | None = None) -> None:
        """``model``: priced by its own entry in the backend's ``prices`` when it has one (None: the backend's)."""
        row = self._rows[backend, model]
        row[0] += calls
        row[1] += prompt_chars
        row[2] += completion_tokens

    def generation(self, backend: str, request: ChatRequest) -> None:
        """One generation call: its messages in full, and at most ``max_tokens`` back."""
        self.add(backend, sum(len(content) for _, content in request.messages), request.sampling.max_tokens,
                 model=request.model)

    def by_model(self, backends: Mapping[str, Any]) -> dict[tuple[str, str | None], dict[str, Any]]:
        """(backend, model) -> calls, prompt tokens, completion tokens and USD at that model's price (None
        where no price is configured)."""
        out: dict[tuple[str, str | None], dict[str, Any]] = {}
        for (name, model), (calls, chars, completion) in self._rows.items():
            prompt_tokens = chars / CHARS_PER_TOKEN
            price = backends[name].price(model)
            cost = None if price is None else (prompt_tokens * price[0] + completion * price[1]) / 1e6
            out[name, model] = {"calls": int(calls), "prompt_tokens": prompt_tokens, "completion_tokens": completion,
                                "cost_usd": cost}
        return out

    def by_backend(self, backends: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
        """backend -> calls, prompt tokens, completion tokens and USD: each model at its own price, so a cheap
        model on the judge's server is not charged the judge's rate (None unless every model is priced)."""
        out: dict[str, dict[str, Any]] = {}
        for (name, _), m in self.by_model(backends).items():
            b = out.setdefault(name, {"calls": 0, "prompt_tokens": 0.0, "completion_tokens": 0.0, "cost_usd": 0.0})
            b["calls"] += m["calls"]
            b["prompt_tokens"] += m["prompt_tokens"]
            b["completion_tokens"] += m["completion_tokens"]
            b["cost_usd"] = None if b["cost_usd"] is None or m["cost_usd"] is None else b["cost_usd"] + m["cost_usd"]
        for b in out.values():
            b["prompt_tokens"], b["completion_tokens"] = int(b["prompt_tokens"]), int(b["completion_tokens"])
        return out
