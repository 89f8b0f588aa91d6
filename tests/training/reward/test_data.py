"""train-rm's data: the chat tokenized as TRL tokenizes it, over-long pairs truncated or dropped and counted."""

import pytest
from pairfiles import published

from psychocounsel.training.common import load_pairs_dataset
from psychocounsel.training.reward.data import tokenize_pairs


def test_tokenization_is_trls_and_overlong_pairs_are_counted(tmp_path, tiny_model_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    published(tmp_path, 4, "train", long_response=1)
    ds = load_pairs_dataset(tmp_path)
    t = tokenize_pairs(ds, tok, max_length=64, overlong="truncate")
    # The same ids TRL's own preprocessing makes: chat template over prompt + completion.
    assert t.chosen_ids[0] == tok.apply_chat_template(ds[0]["prompt"] + ds[0]["chosen"], tokenize=True,
                                                      return_dict=True)["input_ids"]
    full = tok.apply_chat_template(ds[1]["prompt"] + ds[1]["chosen"], tokenize=True, return_dict=True)["input_ids"]
    assert len(full) > 64 and t.chosen_ids[1] == full[:63] + full[-1:]  # the end-of-turn token survives
    assert t.stats | {"longest_tokens": 0} == {"pairs": 4, "overlong": 1, "action": "truncate", "dropped": 0,
                                               "no_response_left": 0, "kept": 4, "max_length": 64,
                                               "longest_tokens": 0}
    d = tokenize_pairs(ds, tok, max_length=64, overlong="drop")
    assert (d.stats["overlong"], d.stats["dropped"], len(d.chosen_ids)) == (1, 1, 3)
    # A prompt that alone fills max_length leaves two identical sequences: dropped, counted apart.
    s = tokenize_pairs(ds, tok, max_length=12, overlong="truncate")
    assert s.stats["overlong"] == 4 and s.stats["no_response_left"] == 4 and s.stats["kept"] == 0
    assert t.margins == pytest.approx([2.0, 1.0, 2.0, 1.0])
