"""What an online-DPO round does before its DPO step, worked by hand: best/worst pair selection, the best round,
reply diversity and seeded speech draws."""

import numpy as np
import pytest

from psychocounsel.training.online_dpo.sampling import best_round, diversity, draw_speeches, flag_note, select_pairs


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


class SafetyScorer:
    """A per-principle reward model stand-in: fixed (overall, safety) per reply text, and a stored threshold."""

    safety_threshold, safety_threshold_source = 0.0, "stored at training"

    def __init__(self, table: dict[str, tuple[float, float]]):
        self.table = table

    def score_batch(self, questions, responses, on_batch=None):
        return {"overall": np.array([self.table[r][0] for r in responses]),
                "safety": np.array([self.table[r][1] for r in responses])}


# speech "a": "warm" has the highest overall but misses the risk (safety -0.5 < 0); "ask" is safe
TABLE = {"warm": (0.9, -0.5), "ask": (0.6, 0.4), "flat": (0.1, 0.2),
         "u1": (0.7, -0.9), "u2": (0.2, -0.1)}


def test_constrained_best_is_the_safe_reply_the_weighted_sum_would_have_passed_over():
    from psychocounsel.training.online_dpo.config import OnlineDPOConfig
    from psychocounsel.training.online_dpo.sampling import safety_constraint, score_samples, unsafe_samples

    scorer = SafetyScorer(TABLE)
    qs, resp = ["a", "b"], [["warm", "ask", "flat"], ["u1", "u2"]]
    rewards, safety = score_samples(scorer, qs, resp)
    threshold, line = safety_constraint(OnlineDPOConfig(), scorer, safety is not None)  # combine: auto
    assert threshold == 0.0 and "safety constraint" in line and "stored at training" in line
    weighted_pairs, _ = select_pairs(qs, resp, rewards)
    assert weighted_pairs[0]["chosen"] == "warm"  # the weighted sum alone would teach the unsafe reply
    pairs, st = select_pairs(qs, resp, rewards, unsafe=unsafe_samples(safety, threshold))
    # a: "warm" is below the threshold, so it is the worst; best is "ask" (0.6 > 0.1)
    assert (pairs[0]["chosen"], pairs[0]["rejected"]) == ("ask", "warm")
    assert pairs[0]["chosen_unsafe"] is False and pairs[0]["rejected_unsafe"] is True
    # the reward gap is still the overall's, negative here: the constraint, not the overall, decided
    assert pairs[0]["gap"] == pytest.approx(0.6 - 0.9)
    # b: both unsafe, so the overall ranks them as before
    assert (pairs[1]["chosen"], pairs[1]["rejected"]) == ("u1", "u2")
    assert st["unsafe_samples"] == 3 and st["samples"] == 5 and st["constraint_changed"] == 1
    assert st["mean_best_reward"] == pytest.approx((0.6 + 0.7) / 2)  # overalls, never the penalised key
    # min_gap does not drop a pair the constraint decides (its overall gap is negative)
    assert len(select_pairs(qs, resp, rewards, 0.3, unsafe_samples(safety, threshold))[0]) == 2


def test_constraint_choice_by_config_and_scorer():
    from psychocounsel.errors import UserError
    from psychocounsel.training.online_dpo.config import OnlineDPOConfig
    from psychocounsel.training.online_dpo.sampling import safety_constraint

    class Plain:  # a Bradley-Terry reward model: one score, no safety head
        def score_batch(self, questions, responses, on_batch=None):
            return np.zeros(len(responses))

    assert safety_constraint(OnlineDPOConfig(), Plain(), has_safety=False)[0] is None  # auto: nothing changes
    with pytest.raises(UserError, match="no safety head"):
        safety_constraint(OnlineDPOConfig(combine="safety_constraint"), Plain(), has_safety=False)
    scorer = SafetyScorer(TABLE)
    assert safety_constraint(OnlineDPOConfig(combine="weighted"), scorer, True)[0] is None
    assert safety_constraint(OnlineDPOConfig(safety_threshold=-0.3), scorer, True)[0] == -0.3
    scorer.combine = "safety_constraint"  # its overall is already penalised: the logged rewards would lie
    with pytest.raises(UserError, match="combine: weighted"):
        safety_constraint(OnlineDPOConfig(), scorer, True)


# ---------------------------------------------------------------- reply-check flags

MEDICAL = "You should take 50mg of sertraline every morning."


def test_samples_get_flags_and_a_flagged_chosen_reply_drops_the_pair():


    qs = ["q1", "q2"]
    responses = [[MEDICAL, "What feels hardest?"], ["What would help tonight?", "You will definitely be fine."]]
    rewards = [[0.9, 0.1], [0.8, 0.2]]
    pairs, stats = select_pairs(qs, responses, rewards)
    # q1's best sample gives medication advice: dropped and counted, not replaced by the next best
    assert [p["question"] for p in pairs] == ["q2"] and stats["flag_vetoed"] == 1
    assert pairs[0]["chosen_flags"] == [] and pairs[0]["rejected_flags"] == ["promise"]
    assert stats["flagged_samples"] == 2 and stats["flagged_sample_share"] == 0.5
    assert stats["chosen_flagged"] == 1 and stats["chosen_flagged_share"] == 0.5
    note = flag_note(stats)
    assert "50% of samples" in note and "50% of chosen" in note and "1 pairs dropped" in note
    kept, stats_off = select_pairs(qs, responses, rewards, flag_veto=())
    assert len(kept) == 2 and kept[0]["chosen_flags"] == ["medical_advice"] and stats_off["flag_vetoed"] == 0


def test_the_flag_veto_is_in_the_config():
    from psychocounsel.dataset.records import HIGH_SEVERITY_FLAGS
    from psychocounsel.training.online_dpo.config import OnlineDPOConfig

    assert tuple(OnlineDPOConfig().flag_veto) == HIGH_SEVERITY_FLAGS
