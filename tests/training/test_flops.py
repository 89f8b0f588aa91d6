"""FLOPs accounting checked against hand-worked numbers and a published parameter count."""

from types import SimpleNamespace

import pytest

from psychocounsel.training.flops import flops_per_token, matmul_params, mfu, peak_flops

LLAMA_32_1B = SimpleNamespace(hidden_size=2048, num_hidden_layers=16, intermediate_size=8192,
                              num_attention_heads=32, num_key_value_heads=8, vocab_size=128256, head_dim=64)


def test_tiny_config_by_hand():
    # d=4, 2 layers, ff=8, 2 heads (head_dim 2), 1 kv head, vocab 10:
    # per layer q 16 + k,v 2*4*2=16 + o 16 + mlp 3*4*8=96 = 144; 2 layers 288; head 40
    cfg = SimpleNamespace(hidden_size=4, num_hidden_layers=2, intermediate_size=8, num_attention_heads=2,
                          num_key_value_heads=1, vocab_size=10)
    assert matmul_params(cfg) == 328 and matmul_params(cfg, lm_head=False) == 288
    # 6 * 328 + 12 * 2 layers * 4 (heads x head_dim) * 5 tokens
    assert flops_per_token(cfg, seq_len=5) == 6 * 328 + 480


def test_llama_32_1b_matches_its_published_size():
    # Llama-3.2-1B: 1.236B parameters, of which 0.263B the (tied) embedding; the rest sits in the matmuls
    body = matmul_params(LLAMA_32_1B, lm_head=False)
    assert body + 128256 * 2048 + 16 * 2 * 2048 + 2048 == pytest.approx(1.2358e9, rel=1e-3)  # + norms
    assert flops_per_token(LLAMA_32_1B, 512) == pytest.approx(6 * (body + 128256 * 2048) + 12 * 16 * 2048 * 512)


def test_peak_lookup_and_mfu():
    assert peak_flops("NVIDIA H100 80GB HBM3") == 989e12
    assert peak_flops("NVIDIA H100 PCIe") == 756e12
    assert peak_flops("NVIDIA H200") == 989e12
    assert peak_flops("Some future GPU") is None
    cfg = SimpleNamespace(hidden_size=4, num_hidden_layers=2, intermediate_size=8, num_attention_heads=2,
                          num_key_value_heads=1, vocab_size=10)
    assert mfu(1000.0, cfg, 5, peak=2448e3) == pytest.approx(1.0)  # 1000 tokens/s x 2,448 FLOPs over 2.448e6
