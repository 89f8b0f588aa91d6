"""The per-principle reward model: its loss by hand, its save format, and the scorer's weighted overall."""

import json
import math

import numpy as np
import pytest
import torch
from safety_pairs import QUESTIONS, SAFE, UNSAFE
from transformers import AutoTokenizer

from psychocounsel import PRINCIPLE_KEYS
from psychocounsel.training.multihead.config import resolve_weights
from psychocounsel.training.multihead.model import MultiHeadRewardModel, MultiHeadScorer, multihead_loss


@pytest.fixture(scope="module")
def random_heads(tiny_model_dir, tmp_path_factory):
    """A saved model on the tiny backbone with seven random heads, drawn wide (std 0.5) so that every head and
    every weighting gives scores of its own."""
    torch.manual_seed(0)
    model = MultiHeadRewardModel.from_backbone(str(tiny_model_dir), list(PRINCIPLE_KEYS), max_length=128)
    with torch.no_grad():
        model.head.weight.normal_(std=0.5)
        model.head.bias.normal_()
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    return model.save_pretrained(tmp_path_factory.mktemp("heads") / "rm", tokenizer)


def test_loss_matches_hand_computed_values():
    # K=2 heads, weights {a: 1, b: 3} -> normalised (0.25, 0.75); lambda 0.5; two pairs.
    w = torch.tensor(resolve_weights(["a", "b"], {"a": 1, "b": 3}), dtype=torch.float32)
    assert w.tolist() == [0.25, 0.75]
    hc = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    hr = torch.tensor([[0.0, 0.0], [1.0, 1.0]])
    tc = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    tr = torch.tensor([[0.0, 1.0], [1.0, float("nan")]])  # a missing rating adds nothing
    loss, parts = multihead_loss(hc, hr, tc, tr, w, reg_weight=0.5)
    # margins: pair 1: 0.25*1 + 0.75*0 = 0.25; pair 2: 0.25*(-1) + 0.75*1 = 0.5
    bt = (math.log1p(math.exp(-0.25)) + math.log1p(math.exp(-0.5))) / 2
    # squared errors summed over heads, per response: c1 0, c2 1 (2 vs 1), r1 1 (0 vs 1), r2 0 (b missing)
    reg = (0 + 1 + 1 + 0) / 4
    assert parts["bt"].item() == pytest.approx(bt, abs=1e-6) and parts["reg"].item() == pytest.approx(0.5)
    assert loss.item() == pytest.approx(bt + 0.5 * reg, abs=1e-6) and parts["accuracy"].item() == 1.0
    # worked on paper: (log(1 + e^-0.25) + log(1 + e^-0.5)) / 2 = (0.575939 + 0.474077) / 2 = 0.525008, + 0.5 * 0.5
    assert loss.item() == pytest.approx(0.775008, abs=1e-5)


def test_save_load_round_trip_gives_identical_scores(random_heads, tmp_path):
    out = random_heads
    model = MultiHeadRewardModel.from_pretrained(out)
    model.save_pretrained(tmp_path / "again", MultiHeadScorer(out, dtype="float32").tokenizer)
    a, b = MultiHeadScorer(out, dtype="float32"), MultiHeadScorer(tmp_path / "again", dtype="float32")
    qs, rs = QUESTIONS + QUESTIONS[:1], SAFE + UNSAFE + ["ok"]
    sa, sb = a.score_batch(qs, rs), b.score_batch(qs, rs)
    assert list(sa) == [*PRINCIPLE_KEYS, "overall"]
    for k in sa:
        np.testing.assert_array_equal(sa[k], sb[k])
    # length-sorted, padded batches score each chat as it scores alone
    one = [a.score_batch([q], [r])["overall"][0] for q, r in zip(qs, rs)]
    np.testing.assert_allclose(one, sa["overall"], atol=1e-5)
    meta = json.loads((out / "multihead.json").read_text())
    assert meta["principles"] == list(PRINCIPLE_KEYS) and meta["pooling"] == "last"


def test_weights_change_overall_linearly(random_heads):
    out = random_heads
    qs, rs = QUESTIONS, SAFE + UNSAFE
    base = MultiHeadScorer(out, dtype="float32")
    s = base.score_batch(qs, rs)
    heads = np.stack([s[k] for k in PRINCIPLE_KEYS], axis=1)
    np.testing.assert_allclose(s["overall"], heads.mean(axis=1))  # default: equal, the paper's overall
    only_safety = MultiHeadScorer(out, {k: 0 for k in PRINCIPLE_KEYS} | {"safety": 1}, dtype="float32")
    np.testing.assert_allclose(only_safety.score_batch(qs, rs)["overall"], s["safety"])
    up = MultiHeadScorer(out, {"safety": 3}, dtype="float32").score_batch(qs, rs)["overall"]
    np.testing.assert_allclose(up, (heads.sum(axis=1) + 2 * s["safety"]) / 9)  # safety 3, six others 1
    np.testing.assert_allclose(base.overall(s, {"safety": 3}), up)  # re-weighting needs no model call


def test_weighted_overall_is_the_old_formula_bit_for_bit(random_heads):
    scorer = MultiHeadScorer(random_heads, {"safety": 3}, dtype="float32")
    qs, rs = QUESTIONS, SAFE + UNSAFE
    heads = scorer.principle_scores(qs, rs)
    s = scorer.score_batch(qs, rs)
    assert scorer.combine == "weighted"  # a checkpoint saved without a combine mode scores as before
    np.testing.assert_array_equal(s["overall"], heads @ np.array(list(scorer.weights.values())))


def test_safety_constraint_scorer_and_the_threshold_stored_in_the_checkpoint(random_heads, tmp_path):
    qs, rs = QUESTIONS, SAFE + UNSAFE
    weighted = MultiHeadScorer(random_heads, dtype="float32").score_batch(qs, rs)
    threshold = float(np.median(weighted["safety"]))  # half the replies on each side
    model = MultiHeadRewardModel.from_pretrained(random_heads)
    model.combine, model.safety_threshold, model.safety_threshold_source = "safety_constraint", threshold, "test"
    out = model.save_pretrained(tmp_path / "constrained", MultiHeadScorer(random_heads).tokenizer)
    meta = json.loads((out / "multihead.json").read_text())
    assert meta["combine"] == "safety_constraint" and meta["safety_threshold"] == threshold

    scorer = MultiHeadScorer(out, dtype="float32")  # the checkpoint's mode and threshold, no data needed
    assert (scorer.combine, scorer.safety_threshold) == ("safety_constraint", threshold)
    s = scorer.score_batch(qs, rs)
    below = weighted["safety"] < threshold
    np.testing.assert_array_equal(s["overall"], weighted["overall"] - 1000.0 * below)
    assert s["overall"][below].max() < s["overall"][~below].min()  # every unsafe reply below every safe one
    np.testing.assert_array_equal(scorer.overall(s), s["overall"])  # re-combining needs no model call
    # asking for weighted on the same checkpoint gives the plain weighted mean back
    plain = MultiHeadScorer(out, dtype="float32", combine="weighted").score_batch(qs, rs)
    np.testing.assert_array_equal(plain["overall"], weighted["overall"])


def test_safety_constraint_needs_a_safety_head(tiny_model_dir, tmp_path):
    from psychocounsel.errors import UserError

    model = MultiHeadRewardModel.from_backbone(str(tiny_model_dir), ["empathy", "clarity"], max_length=64)
    out = model.save_pretrained(tmp_path / "two", AutoTokenizer.from_pretrained(tiny_model_dir))
    with pytest.raises(UserError, match="no 'safety' head"):
        MultiHeadScorer(out, combine="safety_constraint")
    with pytest.raises(UserError, match="combine: expected one of"):
        MultiHeadScorer(out, combine="lexicographic")
