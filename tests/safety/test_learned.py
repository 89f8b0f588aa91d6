"""The crisis screen's learned layer: deterministic features, fits that learn, the shipped layer's behaviour
on clear cases, and raise-only combination with the rules."""

import numpy as np
import pytest

from psychocounsel.safety.learned import (
    HIDDEN_LAYER,
    N_BUCKETS,
    SparseRows,
    fit,
    hidden_states,
    load_layer,
    ngram_features,
)
from psychocounsel.safety.screen import TIER_RANK, screen, screen_many

POS = ["i want to die", "i wish i was dead", "no reason to live", "i cut myself again"] * 5
NEG = ["i want a sandwich", "the bus was late", "my exam went fine", "i cut my hair again"] * 5


def test_ngram_features_are_deterministic_and_normalised():
    (ia, va), (ib, vb) = ngram_features("I don’t want to be here"), ngram_features("I don't want to be here")
    assert np.array_equal(ia, ib) and np.allclose(va, vb) and abs(np.linalg.norm(va) - 1) < 1e-5
    assert ia.max() < N_BUCKETS and len(ngram_features("")[0]) == 0


def test_sparse_rows_products_match_dense():
    rows = SparseRows.of(POS[:4] + NEG[:4])
    dense = np.zeros((rows.n, N_BUCKETS))
    for i, (idx, val) in enumerate(rows.rows):
        dense[i, idx] = val
    w, g = np.random.default_rng(0).normal(size=N_BUCKETS), np.arange(rows.n, dtype=float)
    assert np.allclose(rows.dot(w), dense @ w) and np.allclose(rows.tdot(g), dense.T @ g)
    assert rows.take(np.arange(rows.n) < 4).n == 4


def test_fit_separates_a_toy_set_sparse_and_dense():
    y = np.array([1.0] * len(POS) + [0.0] * len(NEG))
    rows = SparseRows.of(POS + NEG)
    w, b = fit(rows, y, l2=1e-4, lr=0.5)
    z = rows.dot(w) + b
    assert (z[y == 1] > 0).all() and (z[y == 0] < 0).all()
    x = np.random.default_rng(1).normal(size=(40, 8)) + y[:40, None] * 0  # noise features ...
    x[:, 0] = np.where(np.arange(40) % 2 == 0, 2.0, -2.0)  # ... and one that carries the label
    w, b = fit(x, (np.arange(40) % 2 == 0).astype(float), l2=1e-3)
    assert w[0] > np.abs(w[1:]).max()


@pytest.fixture(scope="module")
def layer():
    layer = load_layer()
    assert layer is not None, "psychocounsel/data/crisis_probe.npz is missing (scripts/train_crisis_probe.py)"
    return layer


def test_shipped_layer_is_complete(layer):
    assert layer.version == "crisis-learned-4" and 0 < layer.mix < 1
    assert layer.ngram_w.shape == layer.high_ngram_w.shape == (N_BUCKETS,)
    assert layer.hidden_w.shape == layer.high_hidden_w.shape == layer.hidden_mean.shape == (576,)
    assert np.isfinite([layer.threshold, layer.ngram_spread, layer.hidden_spread, layer.high_threshold,
                        layer.high_ngram_spread, layer.high_hidden_spread]).all()


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


@pytest.mark.slow
def test_hidden_states_are_the_embedded_models_layer():
    states = hidden_states()
    assert len(states.body.layers) == HIDDEN_LAYER
    a = states(["I hope I don't wake up tomorrow.", "I hope I wake up early tomorrow.", "ok"])
    assert a.shape == (3, 576) and np.isfinite(a).all()
    again = states(["ok", "I hope I don't wake up tomorrow."])  # batching and order do not change a row
    assert np.allclose(again[1], a[0], atol=1e-4) and np.allclose(again[0], a[2], atol=1e-4)


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
