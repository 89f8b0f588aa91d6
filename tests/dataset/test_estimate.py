"""The dry-run estimate: tokens from characters, cost from configured prices, worked by hand."""

from psychocounsel.backends.base import ChatRequest, Sampling
from psychocounsel.config import LocalBackendConfig, OpenAIBackendConfig
from psychocounsel.dataset.estimate import Estimate


def test_tokens_and_cost_by_hand():
    est = Estimate()
    req = ChatRequest.chat("m", [{"role": "system", "content": "x" * 100}, {"role": "user", "content": "y" * 300}],
                           sampling=Sampling(max_tokens=256))
    est.generation("api", req)  # 400 chars = 100 prompt tokens, up to 256 back
    est.add("api", prompt_chars=2000, completion_tokens=600)  # a JSON judgment: 500 + 600
    est.add("local", prompt_chars=40, completion_tokens=0, calls=2)
    out = est.by_backend({"api": OpenAIBackendConfig(price_input_per_mtok=2.5, price_output_per_mtok=10.0),
                          "local": LocalBackendConfig()})
    assert out["api"] == {"calls": 2, "prompt_tokens": 600, "completion_tokens": 856,
                          "cost_usd": (600 * 2.5 + 856 * 10.0) / 1e6}
    assert out["local"] == {"calls": 2, "prompt_tokens": 10, "completion_tokens": 0, "cost_usd": None}
