"""Win-rate math against known answers: order merging, a position-biased judge, a planted length bias,
bootstrap coverage on simulated data."""

import math

import numpy as np
import pytest

from psychocounsel.measures.bootstrap import bootstrap_by_group, weighted_mean
from psychocounsel.measures.rm_metrics import sigmoid
from psychocounsel.measures.winrate import (
    PairOutcome,
    _fit_glm,
    combine_orders,
    flip_rate,
    lc_win_rate,
    mean_with_ci,
    summarize,
    summarize_outcomes,
    weighted_lc_win_rate,
    win_rate,
)


# -- both orders ----------------------------------------------------------------------------------
@pytest.mark.parametrize("first, second, score, flipped, same", [
    # policy shown as A, then as B; read from the policy's side: (A, B) = win, win
    ("A", "B", 1.0, False, False),
    ("B", "A", 0.0, False, False),
    ("tie", "tie", 0.5, False, False),
    # the judge picked the same slot twice: one win, one loss -> tie, flipped
    ("A", "A", 0.5, True, True),
    ("B", "B", 0.5, True, True),
    # a win in one order and a tie in the other is a disagreement too: tie, flipped, not same slot
    ("A", "tie", 0.5, True, False),
    ("tie", "B", 0.5, True, False),
    ("B", "tie", 0.5, True, False),
])
def test_combine_orders_table(first, second, score, flipped, same):
    assert combine_orders(first, second) == PairOutcome(score, flipped, same)


def test_failed_verdict_is_a_failure_not_a_tie():
    for a, b in [(None, "A"), ("B", None), (None, None)]:
        o = combine_orders(a, b)
        assert o.score is None and not o.flipped
    with pytest.raises(ValueError, match="policy_first verdict must be"):
        combine_orders("a", "B")
    with pytest.raises(ValueError, match="reference_first verdict must be"):
        combine_orders("A", "left")
    # failed pairs are left out of the flip rate, not counted as agreeing
    assert flip_rate([combine_orders("A", "A"), combine_orders(None, "A")]) == 1.0
    assert math.isnan(flip_rate([combine_orders(None, "A")]))


def test_judge_that_always_picks_position_a_gives_half_and_flips():
    rng = np.random.default_rng(0)
    quality = rng.normal(size=400)  # policy better on some speeches, worse on others: the judge ignores it
    outcomes = [combine_orders("A", "A") for _ in quality]
    res = summarize_outcomes(outcomes, len_policy=rng.integers(200, 900, 400), len_reference=rng.integers(200, 900, 400),
                             n_boot=200)
    assert res["win_rate"] == 0.5 and res["flip_rate"] == 1.0
    assert res["win_rate_ci"] == [0.5, 0.5]

    # A judge that follows quality but falls back on slot A 30% of the time: the flip rate shows it, and
    # the both-order rule pulls its noise to ties instead of wins.
    def verdict(policy_better: bool, policy_slot: str) -> str:
        if rng.random() < 0.3:
            return "A"
        return policy_slot if policy_better else ("B" if policy_slot == "A" else "A")

    better = quality > 0
    outs = [combine_orders(verdict(q, "A"), verdict(q, "B")) for q in better]
    fr = flip_rate(outs)
    # A fallback to slot A changes the answer in exactly one of the two orders (the one where the
    # right answer is B), so a pair flips with probability 0.3; sd at n = 400 is 0.023.
    assert abs(fr - 0.3) < 0.07
    assert abs(win_rate([o.score for o in outs]) - 0.5) < 0.06


# -- win rate -------------------------------------------------------------------------------------
def test_win_rate_and_its_errors():
    assert win_rate([1, 0.5, 0, 1]) == 0.625
    with pytest.raises(ValueError, match="no scores"):
        win_rate([])
    with pytest.raises(ValueError, match="drop failed verdicts"):
        win_rate([1.0, float("nan")])
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        win_rate([2.0])


# -- length-controlled win rate -------------------------------------------------------------------
def _simulate(n, theta0, beta, seed, tie_share=0.2, mean_delta=250.0):
    """Scores whose expectation is exactly sigmoid(theta0 + beta * tanh(delta / sd)): a tie with
    probability tie_share, else a win with the probability that makes the mean right."""
    rng = np.random.default_rng(seed)
    len_ref = rng.normal(800, 150, n).clip(50)
    delta = rng.normal(mean_delta, 300, n)
    p = sigmoid(theta0 + beta * np.tanh(delta / 300.0))
    q = (p - 0.5 * tie_share) / (1 - tie_share)
    s = np.where(rng.random(n) < tie_share, 0.5, (rng.random(n) < q).astype(float))
    return s, len_ref + delta, len_ref


def test_lc_recovers_planted_length_free_win_rate():
    # Policy's length-free win rate 0.60; the judge adds +1.5 logits for a much longer answer and the
    # policy writes ~250 characters more than the reference, so the raw rate is inflated to ~0.72.
    truth = 0.60
    s, lp, lr = _simulate(4000, math.log(truth / (1 - truth)), 1.5, seed=1)
    lc = lc_win_rate(s, lp, lr)
    raw = win_rate(s)
    # Tolerance 0.035: about 4 standard errors of the LC estimate at n = 4,000 (bootstrap SE ~0.009).
    assert abs(lc.value - truth) < 0.035, lc
    assert raw - truth > 0.08, raw
    assert lc.converged and 1.2 < lc.coef_length < 1.8

    # no length bias planted: LC and raw agree
    s, lp, lr = _simulate(4000, 0.4, 0.0, seed=2)
    lc = lc_win_rate(s, lp, lr)
    assert abs(lc.value - win_rate(s)) < 0.02 and abs(lc.coef_length) < 0.2



def _simulate_difficulty(n, seed, *, len_per_sd, mean_gap, theta0=0.4, beta=1.0, tie_share=0.2):
    """Speeches of varying difficulty h ~ N(0, 1): the policy's logit drops by h on harder speeches, and
    the reference's answer grows by ``len_per_sd`` characters per sd of h. The policy writes ``mean_gap``
    characters more than the reference on average. Returns scores, lengths and the true length-free win
    rate averaged over the speeches, mean sigmoid(theta0 - h): what the leaderboard's difficulty term targets."""
    rng = np.random.default_rng(seed)
    h = rng.normal(0.0, 1.0, n)
    len_ref = (800 + len_per_sd * h + rng.normal(0, 150, n)).clip(50)
    len_pol = (800 + mean_gap + rng.normal(0, 250, n)).clip(50)
    d = len_pol - len_ref
    p = sigmoid(theta0 + beta * np.tanh(d / d.std(ddof=1)) - h)
    q = (p - 0.5 * tie_share) / (1 - tie_share)
    s = np.where(rng.random(n) < tie_share, 0.5, (rng.random(n) < q).astype(float))
    return s, len_pol, len_ref, float(np.mean(sigmoid(theta0 - h)))


def test_lc_is_biased_when_difficulty_drives_the_length_difference():
    # The minimal GLM has no speech-difficulty term. When harder speeches get longer reference answers
    # (100 characters per sd of a difficulty worth 1 logit) the fit reads "equal length" off the speeches
    # where the gap is zero, and those are harder than average when the policy writes longer on average.
    # At n = 40,000 one fit's sd is ~0.3 points; the bounds are ~3 sd around the measured -2.0 / +1.9.
    bias = {}
    for gap in (+100, -100):
        s, lp, lr, truth = _simulate_difficulty(40_000, 7, len_per_sd=100.0, mean_gap=gap)
        bias[gap] = 100 * (lc_win_rate(s, lp, lr).value - truth)
    assert -3.0 < bias[+100] < -1.0, bias  # policy longer on average: reads low
    assert 1.0 < bias[-100] < 3.0, bias  # policy shorter on average: reads high
    # control: the same speeches with difficulty unrelated to length: no bias beyond noise
    s, lp, lr, truth = _simulate_difficulty(40_000, 7, len_per_sd=0.0, mean_gap=+100)
    assert abs(100 * (lc_win_rate(s, lp, lr).value - truth)) < 1.0

def test_lc_fit_is_the_penalised_fractional_likelihood_optimum():
    s, lp, lr = _simulate(300, 0.3, 1.0, seed=3)
    l2 = 0.5  # a large penalty, so a wrong gradient term would show
    res = lc_win_rate(s, lp, lr, l2=l2)
    d = lp - lr
    x = np.tanh(d / d.std(ddof=1))
    p = sigmoid(res.coef_model + res.coef_length * x)
    # score equations of sum y log p + (1 - y) log(1 - p) - l2/2 |theta|^2
    g = [np.sum(s - p) - l2 * res.coef_model, np.sum((s - p) * x) - l2 * res.coef_length]
    assert np.allclose(g, 0, atol=1e-8)
    assert res.value == pytest.approx(sigmoid(np.array([res.coef_model]))[0])


def test_tie_as_half_equals_alpaca_evals_duplicated_rows():
    # alpaca_eval fits fractional labels by duplicating each row as (y=1, weight y) and (y=0, weight 1-y)
    s, lp, lr = _simulate(200, 0.2, 0.8, seed=4, tie_share=0.4)
    d = lp - lr
    frac = weighted_lc_win_rate(s, d, weights=np.ones((1, s.size)))[0]
    dup_y = np.concatenate([np.ones_like(s), np.zeros_like(s)])
    dup_w = np.concatenate([s, 1 - s])[None, :]
    dup = weighted_lc_win_rate(dup_y, np.concatenate([d, d]), weights=dup_w)[0]
    assert frac == pytest.approx(dup, abs=1e-9)
    assert frac == pytest.approx(lc_win_rate(s, lp, lr).value, abs=1e-12)


def test_lc_edge_cases():
    # equal lengths everywhere: no length term, the (barely penalised) fitted win rate
    res = lc_win_rate([1, 0, 1, 0.5], [10] * 4, [10] * 4)
    assert res.value == pytest.approx(0.625, abs=0.005) and "equal lengths" in res.note
    # one constant non-zero difference: length and model effects are confounded -> NaN with a reason
    res = lc_win_rate([1, 0, 1, 0.5], [20] * 4, [10] * 4)
    assert math.isnan(res.value) and "cannot be separated" in res.note
    # the policy wins everything: the L2 keeps the fit finite
    res = lc_win_rate([1.0] * 20, np.arange(20) * 10, [50] * 20)
    assert res.converged and 0.9 < res.value < 1.0
    with pytest.raises(ValueError, match="lengths must match"):
        lc_win_rate([1, 0], [1, 2, 3], [1, 2])
    with pytest.raises(ValueError, match="no scores"):
        lc_win_rate([], [], [])


def test_batched_newton_matches_single_fits():
    s, lp, lr = _simulate(150, -0.2, 1.0, seed=5)
    d = lp - lr
    rng = np.random.default_rng(0)
    w = rng.integers(0, 3, size=(5, s.size)).astype(float)
    theta, *_ = _fit_glm(s, d, w, 0.01)
    for b in range(5):
        idx = np.repeat(np.arange(s.size), w[b].astype(int))
        single = lc_win_rate(s[idx], lp[idx], lr[idx])
        assert theta[b, 0] == pytest.approx(single.coef_model, abs=1e-8)
        assert theta[b, 1] == pytest.approx(single.coef_length, abs=1e-8)


# -- bootstrap ------------------------------------------------------------------------------------
def _coverage(datasets, truth, groups, n_boot=400, stat=weighted_mean):
    hits = 0
    for i, arrays in enumerate(datasets):
        lo, hi = bootstrap_by_group(stat, groups, *arrays, n_boot=n_boot, seed=i, vectorized=True)
        hits += lo <= truth <= hi
    return hits / len(datasets)


# 200 repeated draws: the share of 95% intervals holding the truth has sd sqrt(.95 * .05 / 200) = 0.015,
# so 3 sd around 0.95 is [0.904, 0.996].
COVER_LO, COVER_HI = 0.904, 0.996


def test_bootstrap_win_rate_interval_reaches_nominal_coverage():
    rng = np.random.default_rng(11)
    # win / tie / loss with probabilities 0.45 / 0.2 / 0.35: true win rate 0.45 + 0.1 = 0.55
    data = [(rng.choice([1.0, 0.5, 0.0], p=[0.45, 0.2, 0.35], size=200),) for _ in range(200)]
    cov = _coverage(data, 0.55, None)
    assert COVER_LO <= cov <= COVER_HI, cov


def test_speech_level_bootstrap_covers_where_row_bootstrap_does_not():
    # 60 speeches x 3 samples; a speech is "easy" (p = 0.9) or "hard" (p = 0.1) for the policy, so the
    # three samples of a speech move together (intra-class correlation 0.64). True win rate 0.5.
    rng = np.random.default_rng(12)
    groups = np.repeat(np.arange(60), 3)
    data = []
    for _ in range(200):
        p = np.repeat(rng.choice([0.9, 0.1], size=60), 3)
        data.append(((rng.random(180) < p).astype(float),))
    by_speech = _coverage(data, 0.5, groups)
    by_row = _coverage(data, 0.5, None)
    assert COVER_LO <= by_speech <= COVER_HI, by_speech
    # resampling rows treats 180 correlated rows as independent: intervals ~1.5x too narrow (~81% coverage)
    assert by_row < 0.88, by_row


def test_lc_interval_reaches_nominal_coverage():
    truth = 0.6
    data = []
    for i in range(200):
        s, lp, lr = _simulate(300, math.log(truth / (1 - truth)), 1.2, seed=100 + i)
        data.append((s, lp - lr))
    cov = _coverage(data, truth, None, n_boot=300, stat=weighted_lc_win_rate)
    assert COVER_LO <= cov <= COVER_HI, cov


# -- summary --------------------------------------------------------------------------------------
def test_summarize_counts_failures_apart_and_groups_by_speech():
    outcomes = [combine_orders("A", "B"), combine_orders("B", "A"), combine_orders("A", "A"),
                combine_orders(None, "B"), combine_orders("tie", "tie"), combine_orders("A", "B")]
    lp, lr = [300, 200, 250, 100, 500, 420], [250, 260, 250, 100, 300, 280]
    res = summarize_outcomes(outcomes, lp, lr, groups=["s1", "s1", "s2", "s3", "s4", "s5"], n_boot=500)
    assert (res["n"], res["n_failed"], res["n_speeches"]) == (5, 1, 4)
    assert res["win_rate"] == pytest.approx((1 + 0 + 0.5 + 0.5 + 1) / 5)
    assert res["flip_rate"] == pytest.approx(1 / 5)
    assert (res["wins"], res["ties"], res["losses"]) == (2, 2, 1)
    for k in ("win_rate", "flip_rate", "lc_win_rate"):
        lo, hi = res[k + "_ci"]
        assert lo <= res[k] <= hi
    # explicit failure flags are honoured even when a score is present
    res2 = summarize([1, 0, 1], [1, 2, 3], [2, 2, 2], [False] * 3, failed=[False, False, True], n_boot=50)
    assert res2["n_failed"] == 1 and res2["win_rate"] == 0.5


def test_summarize_when_everything_failed_or_nothing_given():
    res = summarize([None, None], [1, 2], [1, 2], [False, False], n_boot=10)
    assert res["n"] == 0 and res["n_failed"] == 2 and res["win_rate"] is None and res["notes"]
    with pytest.raises(ValueError, match="no comparisons"):
        summarize([], [], [], [])
    with pytest.raises(ValueError, match="len_policy"):
        summarize([1.0], [], [1], [False])


def test_mean_with_ci():
    x = np.r_[np.ones(30), np.zeros(70)]
    res = mean_with_ci(x, n_boot=500)
    assert res["value"] == 0.3 and res["n"] == 100
    lo, hi = res["ci"]
    # normal approximation: 0.3 +- 1.96 * sqrt(0.3 * 0.7 / 100) = [0.21, 0.39]
    assert abs(lo - 0.21) < 0.03 and abs(hi - 0.39) < 0.03
    with pytest.raises(ValueError, match="no values"):
        mean_with_ci([])
    with pytest.raises(ValueError, match="finite"):
        mean_with_ci([1.0, None])
