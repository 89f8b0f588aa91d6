"""The scoring loop every reward model runs through, and load_scorer: a checkpoint of either kind, including ones
whose manifest names a scorer by the module path it had before each recipe got its own folder."""

import json

import numpy as np
import pytest
import torch
from transformers import AutoTokenizer

from psychocounsel import PRINCIPLE_KEYS
from psychocounsel.errors import UserError
from psychocounsel.training.multihead.model import MultiHeadRewardModel, MultiHeadScorer
from psychocounsel.training.scoring import load_scorer, score_ids


class TokenSum(torch.nn.Module):
    """Scores a sequence by (sum of its real token ids, its length): padding that leaked in, or a row put back in
    the wrong place, changes the numbers."""

    def __init__(self):
        super().__init__()
        self.unused = torch.nn.Parameter(torch.zeros(1))  # score_ids reads the device from a parameter

    def forward(self, input_ids, attention_mask):
        return torch.stack([(input_ids * attention_mask).sum(-1), attention_mask.sum(-1)], dim=-1).float()


def test_score_ids_returns_input_order_whatever_the_batching():
    seqs = [[3, 4], [1, 1, 1, 1, 1], [7], [2, 2, 2]]
    model = TokenSum().train()
    seen: list[int] = []
    out = score_ids(model, seqs, pad_id=9, n_out=2, batch_size=3, on_batch=seen.append)
    assert out.tolist() == [[7, 2], [5, 5], [7, 1], [6, 3]]
    assert out.dtype == np.float32 and seen == [3, 1]  # longest first: a batch of 3, then the shortest
    assert model.training  # put back as it was
    np.testing.assert_array_equal(score_ids(model, seqs, 9, 2, batch_size=1), out)
    assert score_ids(model, [], 9, 2).shape == (0, 2)


@pytest.fixture(scope="module")
def multihead_dir(tiny_model_dir, tmp_path_factory):
    torch.manual_seed(0)
    model = MultiHeadRewardModel.from_backbone(str(tiny_model_dir), list(PRINCIPLE_KEYS), max_length=64)
    return model.save_pretrained(tmp_path_factory.mktemp("mh") / "rm", AutoTokenizer.from_pretrained(tiny_model_dir))


@pytest.mark.parametrize("manifest", [
    {"recipe": "train-rm-multihead"},  # what train-rm-multihead writes
    {"recipe": "train-rm-multihead", "scorer": "psychocounsel.training.multihead:MultiHeadScorer"},
    {"scorer": "psychocounsel.training.multihead_model:MultiHeadScorer"},
    {"scorer": "psychocounsel.training.multihead.model:MultiHeadScorer"},
    None,  # a folder copied without its manifest: known by multihead.json
])
def test_multihead_checkpoints_load_by_recipe_by_old_or_new_scorer_path_or_by_their_files(multihead_dir, manifest):
    path = multihead_dir
    (path / "manifest.json").unlink(missing_ok=True)
    if manifest is not None:
        (path / "manifest.json").write_text(json.dumps(manifest))
    scorer = load_scorer(path, weights={"safety": 3}, dtype="float32")
    assert isinstance(scorer, MultiHeadScorer) and scorer.name == str(path)
    assert scorer.weights["safety"] == pytest.approx(3 / 9)
    scores = scorer.score_batch(["I feel anxious."], ["That sounds hard."])
    assert sorted(scores) == sorted([*PRINCIPLE_KEYS, "overall"])


def test_a_scorer_path_that_does_not_exist_is_a_one_line_error(tmp_path):
    (tmp_path / "manifest.json").write_text(json.dumps({"scorer": "psychocounsel.training.nowhere:Scorer"}))
    with pytest.raises(UserError, match="does not exist in this version") as e:
        load_scorer(tmp_path)
    assert "\n" not in str(e.value)
    (tmp_path / "manifest.json").write_text(json.dumps({"scorer": "psychocounsel.training.scoring:NoSuchScorer"}))
    with pytest.raises(UserError, match="does not exist in this version"):
        load_scorer(tmp_path)
    (tmp_path / "manifest.json").write_text(json.dumps({"scorer": "os:system"}))
    with pytest.raises(UserError, match="must be 'psychocounsel.<module>:<callable>'"):
        load_scorer(tmp_path)
