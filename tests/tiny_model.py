"""A tiny random Llama-style chat model, built in about a second, for tests that need a real transformers model.

``make_tiny_model(path)`` trains a byte-level BPE tokenizer on a few sentences, wraps it with a ChatML chat
template (the one SmolLM2 and Qwen use), builds a 2-layer Llama with random weights and saves both as a normal
Hugging Face checkpoint directory. Any code path that loads a local checkpoint can run on it offline.

Use the session fixture from a test module with ``from tiny_model import tiny_model_dir`` (pytest puts tests/
on sys.path), or register it for every test with ``pytest_plugins = ["tiny_model"]`` in tests/conftest.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest

CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

# Counseling-flavoured text with digits alone and after a space, so the vocabulary holds both "3" and " 3"
# (byte-level BPE merges "Ġ3"): tests of G-Eval choice scoring then exercise the summing of both variants.
_CORPUS = [
    "I feel anxious every morning before work and I do not know why.",
    "It sounds like the mornings are really hard for you right now.",
    "My partner and I argue about money, and I feel unheard.",
    "What would it look like if you felt heard in those talks?",
    "Rate the response from 1 to 5. Score: 3. Score: 4. Score: 5. Score: 1. Score: 2.",
    "empathy 1 2 3 4 5 relevance 1 2 3 4 5 clarity 1 2 3 4 5 safety 1 2 3 4 5",
    "You are a helpful and careful therapist. Answer the client with warmth.",
    "The client says they cannot sleep and they worry about their exams.",
]
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]


def make_tokenizer(vocab_size: int = 400):
    """Train a byte-level BPE on ``_CORPUS`` and wrap it as a transformers fast tokenizer with a chat template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),  # every byte encodable: no unknown tokens
    )
    tok.train_from_iterator(_CORPUS * 4, trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        chat_template=CHATML_TEMPLATE,
    )


def make_tiny_model(path: str | Path, seed: int = 0) -> Path:
    """Save a tokenizer + random 2-layer Llama (~100k parameters) to ``path``; return the path.

    initializer_range 0.2 (vs 0.02 in real Llamas) makes the random logits peaked, so greedy decoding has
    clear winners and batched vs unbatched runs do not flip on float rounding between near-tied tokens.
    The saved generation_config asks for sampling, as real instruct checkpoints do, so tests also check
    that the backend's own decoding settings win over the checkpoint's.
    """
    import torch
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    tokenizer = make_tokenizer()
    eos = tokenizer.convert_tokens_to_ids("<|im_end|>")
    pad = tokenizer.convert_tokens_to_ids("<|endoftext|>")
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=1024,
        initializer_range=0.2,
        bos_token_id=pad,
        eos_token_id=eos,
        pad_token_id=pad,
        tie_word_embeddings=False,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    model.generation_config = GenerationConfig(
        do_sample=True, temperature=0.6, top_p=0.9, bos_token_id=pad, eos_token_id=eos, pad_token_id=pad
    )
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """One tiny checkpoint per test session (building it takes about a second)."""
    return make_tiny_model(tmp_path_factory.mktemp("tiny_model"))
