"""What an online-DPO round does before its DPO step, worked by hand: best/worst pair selection, the best round,
reply diversity and seeded speech draws."""

import numpy as np
import pytest

from psychocounsel.training.online_dpo.sampling import best_round, diversity, draw_speeches, select_pairs


def test_select_pairs_takes_argmax_and_argmin_and_skips_small_gaps():
    qs = ["a", "b", "c", "d"]
    resp = [["x0", "x1", "x2"], ["y0", "y1", "y2"], ["z0", "z1", "z2"], ["w0", "w1", "w2"]]
    rew = [[0.5, 2.0, -1.0],   # best x1, worst x2, gap 3.0
           [1.0, 1.2, 1.1],    # gap 0.2 < 0.5: skipped
           [3.0, 3.0, 3.0],    # all tied: no preference, skipped
           [0.0, 4.0, 4.0]]    # tie for best: first index (w1); gap 4.0
    pairs, st = select_pairs(qs, resp, rew, min_gap=0.5)
    assert [(p["question"], p["chosen"], p["rejected"], p["gap"]) for p in pairs] == [
        ("a", "x1", "x2", 3.0), ("d", "w1", "w0", 4.0)]
    assert st["pairs"] == 2 and st["skipped"] == 2 and st["speeches"] == 4
    assert st["mean_best_reward"] == pytest.approx((2.0 + 1.2 + 3.0 + 4.0) / 4)
    assert st["mean_worst_reward"] == pytest.approx((-1.0 + 1.0 + 3.0 + 0.0) / 4)
    assert st["mean_gap"] == pytest.approx((3.0 + 0.2 + 0.0 + 4.0) / 4)
    assert st["mean_reward"] == pytest.approx(np.mean([0.5, 1.1, 3.0, 8 / 3]))
    # min_gap 0: the 0.2 gap counts, the full tie still does not
    assert select_pairs(qs, resp, rew, 0.0)[1]["skipped"] == 1
    # same text at both ends (a policy that repeats itself) carries no preference either
    assert select_pairs(["q"], [["same", "same"]], [[1.0, 0.0]])[1]["skipped"] == 1


def test_best_round_prefers_highest_dev_reward_and_earliest_on_ties():
    rounds = [{"round": 1, "dev_reward": 0.2}, {"round": 2, "dev_reward": 0.7}, {"round": 3, "dev_reward": 0.7}]
    assert best_round(0.1, rounds) == 2
    assert best_round(0.9, rounds) == 0  # no round beat the initial policy
    assert best_round(None, [{"round": 1, "dev_reward": None}, {"round": 2, "dev_reward": None}]) == 2
    assert best_round(None, []) == 0


def test_diversity_by_hand():
    d = diversity(["It sounds hard to me", "It sounds hard to me too", "What would help now?"])
    # bigrams: 4 + 5 + 3 = 12, distinct: {it sounds, sounds hard, hard to, to me, me too, what would, would help,
    # help now?} = 8; openings: "it sounds hard to me" twice of 3
    assert d["distinct_2"] == pytest.approx(8 / 12) and d["top_opening_share"] == pytest.approx(2 / 3)
    assert d["chars"] == pytest.approx((20 + 24 + 20) / 3)
    assert diversity([]) == {"chars": None, "distinct_2": None, "top_opening_share": None}


def test_draw_speeches_is_seeded_by_round():
    pool = [f"s{i}" for i in range(50)]
    a = draw_speeches(pool, 10, seed=0, round_no=1)
    assert a == draw_speeches(pool, 10, seed=0, round_no=1) and len(set(a)) == 10
    assert a != draw_speeches(pool, 10, seed=0, round_no=2)
    assert sorted(draw_speeches(pool[:5], 10, 0, 1)) == sorted(pool[:5])
