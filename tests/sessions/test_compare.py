"""Session against session with the same client, both orders, on the fake server."""

from session_transcripts import profiles, transcript, write_run

from psychocounsel.sessions.compare import compare_sessions, match_sessions
from psychocounsel.sessions.judge_config import CompareSessionsConfig
from psychocounsel.sessions.transcripts import parse_transcript
from psychocounsel.testing.fakeserver import fake_server


def test_reflective_beats_advice_lists_in_both_orders(tmp_path):
    a = write_run(tmp_path / "a", "reflective")
    b = write_run(tmp_path / "b", "advice_lists")
    with fake_server(latency=0.0) as srv:
        cfg = CompareSessionsConfig(run_a=str(a), run_b=str(b), out_dir=str(tmp_path / "cmp"),
                                    backends={"fake": {"type": "openai", "base_urls": [srv.base_url],
                                                       "api_key_env": None}},
                                    judge={"backend": "fake", "model": "judge"}, bootstrap={"n_boot": 400})
        res, counts = compare_sessions(cfg)
        assert res["pairs"] == 12 and counts["judged"] == 24 and res["failed_pairs"] == 0
        assert res["win_rate_a"]["rate"] == 1.0 and res["win_rate_a"]["ci"][0] > 0.5
        assert res["flip_rate"] == 0.0
        swapped, _ = compare_sessions(cfg.model_copy(update={"run_a": str(b), "run_b": str(a),
                                                             "out_dir": str(tmp_path / "cmp2")}))
        assert swapped["win_rate_a"]["rate"] == 0.0
        _, again = compare_sessions(cfg)
        assert again["calls_made"] == 0 and again["done_before"] == 24
    assert (tmp_path / "cmp" / "compare.json").is_file()


def test_sessions_pair_by_client_seed_and_budget():
    ps = profiles(3)
    a = [parse_transcript(transcript(p, "reflective", budget=4, seed=s), "t") for p in ps for s in (0, 1)]
    b = [parse_transcript(transcript(p, "advice_lists", budget=4, seed=0), "t") for p in ps[:2]]
    pairs = match_sessions(a, b, "profile_seed_budget")
    assert [(x.profile_id, x.seed) for x, _ in pairs] == [("p00", 0), ("p01", 0)]
    assert all(x.profile_id == y.profile_id and x.seed == y.seed for x, y in pairs)
    assert len(match_sessions(a, b, "profile")) == 2
