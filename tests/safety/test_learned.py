"""The crisis screen's learned layer: deterministic features, a fit that learns, and raise-only combination."""

import numpy as np

from psychocounsel.safety.learned import N_BUCKETS, features, fit, load_probe
from psychocounsel.safety.screen import screen


def test_features_are_deterministic_and_normalised():
    a, b = features("I don’t want to be here"), features("I don't want to be here")
    assert a.shape == (N_BUCKETS,) and np.allclose(a, b) and abs(np.linalg.norm(a) - 1) < 1e-5
    assert not features("").any()


def test_fit_separates_a_toy_set():
    pos = ["i want to die", "i wish i was dead", "no reason to live"] * 5
    neg = ["i want a sandwich", "the bus was late", "my exam went fine"] * 5
    x = np.stack([features(t) for t in pos + neg]).astype(np.float64)
    y = np.array([1.0] * len(pos) + [0.0] * len(neg))
    w, b = fit(x, y)
    p = 1 / (1 + np.exp(-(x @ w + b)))
    assert (p[y == 1] > 0.5).all() and (p[y == 0] < 0.5).all()


def test_shipped_probe_raises_but_never_lowers():
    probe = load_probe()
    assert probe is not None and 0 < probe.threshold < 1
    high = "I'm going to kill myself tonight, I've written the note."
    assert screen(high, learned=True).tier == screen(high).tier == "high"
    text = "There's no point anymore, I keep thinking everyone would cope fine once I'm gone for good."
    on, off = screen(text, learned=True), screen(text)
    assert on.tier >= off.tier or off.tier == "none"
    if off.tier == "none" and on.tier != "none":
        assert on.signals[0].kind == "learned" and "p=" in on.signals[0].text
