"""The crisis screen's learned layer: adapters merge into the model exactly, the layer file round-trips, the
shipped layer is complete, behaves on clear cases, and only ever raises the rules' tier."""

import numpy as np
import pytest
import torch

from psychocounsel.errors import UserError
from psychocounsel.safety.learned import (
    ADAPTED,
    ALPHA,
    HIDDEN_LAYER,
    HIDDEN_SIZE,
    RANK,
    LearnedLayer,
    adapter_names,
    load_layer,
    mean_pool,
    merge_adapters,
    save_layer,
)
from psychocounsel.safety.screen import TIER_RANK, screen, screen_many


def _tiny_llama(layers: int = 2):
    from transformers import LlamaConfig, LlamaModel

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=50, hidden_size=32, intermediate_size=64, num_hidden_layers=layers,
                         num_attention_heads=4, num_key_value_heads=2)
    return LlamaModel(config).eval()


def _random_adapters(body, names):
    rng = np.random.default_rng(0)
    out = {}
    for n in names:
        w = body.get_submodule(n).weight
        out[n] = (rng.normal(size=(RANK, w.shape[1])).astype(np.float32),
                  rng.normal(size=(w.shape[0], RANK)).astype(np.float32) * 0.1)
    return out


def test_merged_adapters_compute_what_the_adapted_model_computes():
    body = _tiny_llama()
    names = [f"layers.1.{m}" for m in ADAPTED]
    adapters = _random_adapters(body, names)
    ids = torch.tensor([[1, 5, 7, 9, 2]])
    xs = {n: torch.randn(3, body.get_submodule(n).in_features) for n in names}
    with torch.no_grad():
        base = body(input_ids=ids).last_hidden_state
        expected = {n: body.get_submodule(n)(xs[n]) + (ALPHA / RANK) * (xs[n] @ torch.from_numpy(a).T @ torch.from_numpy(b).T)
                    for n, (a, b) in adapters.items()}
        merge_adapters(body, adapters)
        for n in names:  # each projection now computes base + scaled low-rank update
            assert torch.allclose(body.get_submodule(n)(xs[n]), expected[n], atol=1e-4), n
        assert not torch.allclose(body(input_ids=ids).last_hidden_state, base)  # and the model reads differently


def test_an_adapter_of_the_wrong_shape_is_one_line():
    body = _tiny_llama()
    bad = {"layers.0.self_attn.q_proj": (np.zeros((RANK, 31), np.float32), np.zeros((32, RANK), np.float32))}
    with pytest.raises(UserError, match="retrain the learned layer") as e:
        merge_adapters(body, bad)
    assert "\n" not in str(e.value)


def test_mean_pool_ignores_padding():
    h = torch.tensor([[[1.0, 1.0], [3.0, 3.0], [100.0, 100.0]]])
    assert torch.allclose(mean_pool(h, torch.tensor([[1, 1, 0]])), torch.tensor([[2.0, 2.0]]))


def test_layer_file_round_trips(tmp_path):
    body = _tiny_llama()
    adapters = _random_adapters(body, [f"layers.0.{m}" for m in ADAPTED])
    rng = np.random.default_rng(1)
    layer = LearnedLayer(adapters=adapters, risk_w=rng.normal(size=32), risk_b=0.5, high_w=rng.normal(size=32),
                         high_b=-0.25, threshold=1.5, high_threshold=0.75, checked_threshold=-1.0,
                         version="test-layer")
    save_layer(layer, tmp_path / "layer.npz")
    back = load_layer.__wrapped__(tmp_path / "layer.npz")
    assert back.version == "test-layer" and list(back.adapters) == list(adapters)
    assert all(np.array_equal(back.adapters[n][k], adapters[n][k]) for n in adapters for k in (0, 1))
    assert (back.risk_b, back.high_b, back.threshold, back.high_threshold, back.checked_threshold) == (
        0.5, -0.25, 1.5, 0.75, -1.0)
    pooled = rng.normal(size=(3, 32)).astype(np.float32)
    assert all(np.allclose(a, b) for a, b in zip(back.scores(["a", "b", "c"], states=lambda t: pooled),
                                                 layer.heads(pooled)))
    assert load_layer.__wrapped__(tmp_path / "absent.npz") is None


def test_a_layer_file_without_a_threshold_is_one_line(tmp_path):
    z = {"risk_w": np.zeros(4), "high_w": np.zeros(4), "version": np.asarray("old"), "risk_b": 0.0, "high_b": 0.0,
         "threshold": 0.0, "high_threshold": 0.0}
    np.savez(tmp_path / "old.npz", **z)
    with pytest.raises(UserError, match=r"old.npz: no checked_threshold .*--rethreshold") as e:
        load_layer.__wrapped__(tmp_path / "old.npz")
    assert "\n" not in str(e.value)


@pytest.fixture(scope="module")
def layer():
    layer = load_layer()
    assert layer is not None, "psychocounsel/data/crisis_layer.npz is missing (scripts/train_crisis_layer.py)"
    return layer


def test_shipped_layer_is_complete(layer):
    assert layer.version == "crisis-learned-6" and list(layer.adapters) == adapter_names()
    for name, (a, b) in layer.adapters.items():
        assert a.shape[0] == b.shape[1] == RANK and a.shape[1] in (HIDDEN_SIZE, 1536), name
    assert layer.risk_w.shape == layer.high_w.shape == (HIDDEN_SIZE,)
    assert np.isfinite([layer.threshold, layer.high_threshold, layer.checked_threshold, layer.risk_b,
                        layer.high_b]).all()
    assert layer.checked_threshold < layer.threshold  # a reviewed screen flags more, for recall


def test_layer_raises_tiers_and_never_lowers_them(layer, monkeypatch):
    """With fixed scores (a stand-in for the model's), the combination rules alone are tested: none -> possible at
    the risk threshold, possible -> high at the high threshold, nothing lowered, the rules' evidence kept."""
    from psychocounsel.safety import screen as screen_module

    texts = ["the bus was late again", "the bus was late and i want to die", "the bus was late and i want to die",
             "I'm going to kill myself tonight, I've written the note.", "the bus was late"]
    risk = np.array([layer.threshold + 1, layer.threshold - 1, 0.0, 0.0, layer.threshold - 1])
    high = np.array([layer.high_threshold + 1, layer.high_threshold + 1, layer.high_threshold - 1, 0.0,
                     layer.high_threshold + 1])

    def fixed(texts_):  # the layer reads every text the rules did not screen high, in order
        keep = [i for i, t in enumerate(texts) if t in texts_ and screen_module.screen_rules(t).tier != "high"]
        return risk[keep][: len(texts_)], high[keep][: len(texts_)]

    monkeypatch.setattr(type(layer), "scores", lambda self, t, states=None: fixed(t))
    got = screen_many(texts)
    assert [s.tier for s in got] == ["high", "high", "possible", "high", "none"]
    assert [x.kind for x in got[0].signals] == ["learned", "learned_high"]
    assert got[1].signals[0].kind == "passive_death_wish" and got[1].signals[-1].kind == "learned_high"
    assert got[3].signals == screen_module.screen_rules(texts[3]).signals  # high by the rules: untouched
    assert all(s.learned_version == layer.version for s in got)
    # Reviewed by a capable model, the layer flags from its lower checked threshold: "the bus was late" scored
    # between the two thresholds is raised only then, and its evidence says which threshold raised it.
    risk[4] = (layer.threshold + layer.checked_threshold) / 2
    assert screen_many(texts)[4].tier == "none"
    reviewed = screen_many(texts, checked=True)[4]
    assert reviewed.tier == "high" and "checked threshold" in reviewed.signals[0].text


def test_one_read_of_the_layer_serves_both_thresholds(layer, monkeypatch):
    """``learned_scores`` reads each text once (none for what the rules screened high); ``raise_tiers`` then
    applies either threshold to those scores and gives what ``screen_many`` gives."""
    from psychocounsel.safety import screen as screen_module

    texts = ["the bus was late", "I'm going to kill myself tonight, I've written the note.", "work was fine"]
    reads = []

    def fixed(self, texts_, states=None):
        reads.append(list(texts_))
        between = (layer.threshold + layer.checked_threshold) / 2
        return np.array([between] * len(texts_)), np.array([layer.high_threshold - 1] * len(texts_))

    monkeypatch.setattr(type(layer), "scores", fixed)
    rules = [screen_module.screen_rules(t) for t in texts]
    scores = screen_module.learned_scores(texts, rules, layer)
    assert reads == [[texts[0], texts[2]]] and scores[1] is None
    own = screen_module.raise_tiers(texts, rules, scores, layer)
    checked = screen_module.raise_tiers(texts, rules, scores, layer, checked=True)
    assert len(reads) == 1
    assert [s.tier for s in own] == ["none", "high", "none"]
    assert [s.tier for s in checked] == ["possible", "high", "possible"]
    assert [s.tier for s in checked] == [s.tier for s in screen_many(texts, checked=True)]


@pytest.mark.slow
def test_adapted_states_are_the_embedded_models_layer(layer):
    states = layer.states()
    assert len(states.body.layers) == HIDDEN_LAYER
    a = states(["I hope I don't wake up tomorrow.", "I hope I wake up early tomorrow.", "ok"])
    assert a.shape == (3, HIDDEN_SIZE) and np.isfinite(a).all()
    again = states(["ok", "I hope I don't wake up tomorrow."])  # batching and order do not change a row
    assert np.allclose(again[1], a[0], atol=1e-4) and np.allclose(again[0], a[2], atol=1e-4)
    risk, _ = layer.heads(a)
    assert risk[0] > risk[1]  # the adapted model tells the wish from the plan to get up early


@pytest.mark.slow
def test_shipped_layer_raises_indirect_risk_and_never_lowers(layer):
    indirect = ["honestly everyone would be better off if i just wasnt around anymore",
                "i keep hoping i just dont wake up one of these mornings",
                "been looking at the bridge on my way home and thinking how easy it would be"]
    ordinary = ["My manager keeps scheduling meetings at lunch and I never get a break. How do I say no?",
                "We moved to a new city and my son has no friends yet. How can I help him settle in?"]
    got = screen_many(indirect + ordinary, learned=True)
    assert all(s.tier != "none" for s in got[:3]), [s.tier for s in got[:3]]
    assert all(s.tier == "none" for s in got[3:]), [s.evidence() for s in got[3:]]
    assert all(s.learned_version == layer.version for s in got)
    high = "I'm going to kill myself tonight, I've written the note."
    assert screen(high, learned=True).tier == screen(high).tier == "high"
    for text, s in zip(indirect + ordinary, got):
        rules = screen(text)
        assert TIER_RANK[s.tier] >= TIER_RANK[rules.tier]
        if rules.tier == "none" and s.tier != "none":
            assert s.signals[0].kind == "learned" and layer.version in s.signals[0].text
        assert all(x in s.signals for x in rules.signals)
