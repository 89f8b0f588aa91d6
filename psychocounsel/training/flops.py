"""Model FLOPs per trained token and model-FLOPs utilisation (MFU), PaLM's accounting (Chowdhery et al. 2022,
appendix B): a training step costs 6 FLOPs per weight of every matmul a token passes through (2 forward, 4
backward) plus 12 * layers * hidden * sequence length for attention's score and value products. Embedding
lookups are free; a tied LM head is a matmul like any other. Work a recipe adds on top (a live DPO reference
model's forward pass, recomputed activations) is not model FLOPs: MFU measures useful work per second.
"""

from __future__ import annotations

from typing import Any

# Dense bf16 tensor-core peaks (no sparsity) from the vendors' datasheets, TFLOP/s. Longest name first.
PEAK_BF16_TFLOPS = {"H100 PCIe": 756.0, "H100 NVL": 835.0, "H200": 989.0, "H100": 989.0, "GH200": 989.0,
                    "A100": 312.0, "L40S": 362.0, "A10G": 70.0, "L4": 121.0}


def matmul_params(cfg: Any, lm_head: bool = True) -> int:
    """Weights in the matmuls of a Llama-style decoder (``cfg``: a transformers config): attention projections,
    gated MLP and (``lm_head``) the vocabulary projection. A reward model's one-logit score head is negligible."""
    d, layers, ff = cfg.hidden_size, cfg.num_hidden_layers, cfg.intermediate_size
    head_dim = getattr(cfg, "head_dim", None) or d // cfg.num_attention_heads
    q_out = cfg.num_attention_heads * head_dim
    kv_out = cfg.num_key_value_heads * head_dim
    per_layer = d * q_out + 2 * d * kv_out + q_out * d + 3 * d * ff
    return layers * per_layer + (cfg.vocab_size * d if lm_head else 0)


def flops_per_token(cfg: Any, seq_len: float, lm_head: bool = True) -> float:
    """Training FLOPs per token (forward + backward) at mean sequence length ``seq_len``."""
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    attention = 12 * cfg.num_hidden_layers * cfg.num_attention_heads * head_dim * seq_len
    return 6 * matmul_params(cfg, lm_head) + attention


def peak_flops(device_name: str) -> float | None:
    """Peak dense bf16 FLOP/s for a GPU name as ``torch.cuda.get_device_name`` gives it; None if unknown."""
    for key, tflops in PEAK_BF16_TFLOPS.items():
        if key.lower() in device_name.lower():
            return tflops * 1e12
    return None


def mfu(tokens_per_s: float, cfg: Any, seq_len: float, peak: float, lm_head: bool = True) -> float:
    """Model-FLOPs utilisation: model FLOPs per second achieved over the device's peak."""
    return tokens_per_s * flops_per_token(cfg, seq_len, lm_head) / peak
