"""The per-principle reward model's data: chats -> token ids, rating targets, over-long pairs counted."""

import pytest
from safety_pairs import safety_pairs

from psychocounsel import PRINCIPLE_KEYS
from psychocounsel.errors import UserError
from psychocounsel.training.common import load_pairs_dataset
from psychocounsel.training.multihead.config import load_multihead_config
from psychocounsel.training.multihead.data import encode_chats, load_tokenizer, tokenize_pairs


def test_overlong_pairs_are_counted_and_handled(tiny_model_dir, tmp_path):
    tok = load_tokenizer(str(tiny_model_dir))
    ds = load_pairs_dataset(safety_pairs(tmp_path))
    lengths = [len(x) for x in encode_chats(tok, ds["question"], ds["chosen_text"])]
    cut = sorted(lengths)[len(lengths) // 2]  # about half the pairs have a side longer than this
    base = load_multihead_config(None, ["model=x", f"max_length={cut}"])
    kept, n_over = tokenize_pairs(ds, tok, base)
    assert n_over > 0 and len(kept) == len(ds) - n_over
    assert kept[0]["chosen_targets"][PRINCIPLE_KEYS.index("safety")] == 1.0  # (5 - 3) / 2
    cut_ds, n = tokenize_pairs(ds, tok, base.model_copy(update={"overlong": "truncate"}))
    assert n == n_over and len(cut_ds) == len(ds) and max(map(len, cut_ds["chosen_input_ids"])) <= cut
    with pytest.raises(UserError, match="over max_length"):
        tokenize_pairs(ds, tok, base.model_copy(update={"overlong": "error"}))
