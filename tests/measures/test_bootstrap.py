"""Bootstrap intervals: seeded, looped and vectorised statistics agree, row resampling draws what a
per-resample ``rng.integers`` loop draws (so earlier reports' intervals stand)."""

import math

import numpy as np
import pytest

from psychocounsel.measures.bootstrap import (
    bootstrap_by_group,
    bootstrap_ci,
    resample_weights,
    weighted_mean,
    wilson_ci,
)
from psychocounsel.measures.rm_metrics import pair_accuracy


def test_bootstrap_is_seeded_and_brackets_the_estimate():
    rng = np.random.default_rng(1)
    rc, rr = rng.normal(1, 1, 200), rng.normal(0, 1, 200)
    a = bootstrap_ci(pair_accuracy, rc, rr, n_boot=300, seed=7)
    assert a == bootstrap_ci(pair_accuracy, rc, rr, n_boot=300, seed=7)
    assert a != bootstrap_ci(pair_accuracy, rc, rr, n_boot=300, seed=8)
    assert a[0] < pair_accuracy(rc, rr) < a[1] and a[1] - a[0] < 0.2
    assert bootstrap_ci(pair_accuracy, np.ones(5), np.zeros(5), n_boot=50) == (1.0, 1.0)
    assert all(math.isnan(x) for x in bootstrap_ci(pair_accuracy, np.ones(0), np.ones(0)))
    with pytest.raises(ValueError, match="length"):
        bootstrap_ci(pair_accuracy, np.ones(3), np.ones(2))


def test_vectorised_and_looped_bootstrap_agree():
    rng = np.random.default_rng(1)
    x = rng.random(60)
    groups = np.repeat(np.arange(20), 3)
    loop = bootstrap_by_group(np.mean, groups, x, n_boot=300, seed=7)
    vec = bootstrap_by_group(weighted_mean, groups, x, n_boot=300, seed=7, vectorized=True)
    assert loop == pytest.approx(vec, abs=1e-12)
    assert bootstrap_by_group(np.mean, groups, x, n_boot=300, seed=7) == loop  # seeded
    with pytest.raises(ValueError, match="no rows"):
        bootstrap_by_group(np.mean, None, np.array([]))
    with pytest.raises(ValueError, match="one entry per row"):
        bootstrap_by_group(np.mean, [1, 2], x)


def test_row_resamples_are_the_per_resample_draws_of_one_generator():
    n, n_boot = 7, 600  # odd n and more than one block of 256
    rng = np.random.default_rng(5)
    expected = np.zeros((n_boot, n))
    for b in range(n_boot):
        np.add.at(expected[b], rng.integers(0, n, size=n), 1.0)
    got = np.concatenate(list(resample_weights(None, n, n_boot, seed=5)))
    assert np.array_equal(got, expected)
    assert got.sum(axis=1).tolist() == [n] * n_boot


def test_wilson_interval_matches_published_values():
    # statsmodels proportion_confint(k, n, method="wilson") / Newcombe (1998), table I
    assert wilson_ci(5, 10) == pytest.approx((0.2366, 0.7634), abs=1e-4)
    assert wilson_ci(0, 10) == pytest.approx((0.0, 0.2775), abs=1e-4)
    assert wilson_ci(8, 8) == pytest.approx((0.6756, 1.0), abs=1e-4)
    assert wilson_ci(81, 263) == pytest.approx((0.2553, 0.3662), abs=1e-4)
    assert all(math.isnan(x) for x in wilson_ci(0, 0))
    with pytest.raises(ValueError):
        wilson_ci(3, 2)
