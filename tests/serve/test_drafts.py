"""Drafting: N requests with the safety instruction and style, ranking with reasons, blocked drafts last."""

from __future__ import annotations

import asyncio

import pytest

from fakes import FakeBackend
from helpers import CALM, CRISIS, WordScorer, config
from psychocounsel.serve.drafts import Style, rank, style_flags
from psychocounsel.serve.service import DraftService, parse_history
from psychocounsel.serve.store import ServeStore

VARIANTS = ["Go for a run.",
            "I hear you. Work sounds heavy. What feels hardest?",
            "I hear that you are tired, and I hear the strain at work. Are you safe? Would you choose a small step?"]


def test_rank_orders_by_reward_with_reasons_and_keeps_blocked_drafts_last():
    r = rank(WordScorer(), "q", VARIANTS, [False, False, True])
    assert [x.rank for x in r] == [2, 1, 3]  # the best-scoring draft is blocked, so it goes last
    assert r[1].reason.startswith("1st of 3 by the reward model") and "strongest on empathy" in r[1].reason
    assert "fails a safety check" in r[2].reason
    assert r[1].principles["empathy"] == 1.0 and r[1].overall == pytest.approx(round(2 / 7, 3))  # "hear" and "?"
    unranked = rank(None, "q", VARIANTS, [False] * 3)
    assert [x.rank for x in unranked] == [1, 2, 3] and all(x.overall is None for x in unranked)


def test_style_flags():
    style = Style(max_chars=40, one_question=True)
    kinds = [f["kind"] for f in style_flags(style, VARIANTS[2])]
    assert kinds == ["too_long", "many_questions"]
    assert style_flags(style, VARIANTS[0]) == []


def test_service_drafts_n_under_the_safety_instruction(tmp_path):
    backend = FakeBackend(reply=lambda req: VARIANTS[req.sampling.seed])
    store = ServeStore(tmp_path / "s.sqlite")
    cid, token = store.add_clinician("Dr. A")
    store.set_style(cid, {"max_chars": 300, "one_question": True})
    svc = DraftService(config(tmp_path, "http://127.0.0.1:9/v1"), store, backend=backend, scorer=WordScorer())
    clinician = store.clinician_by_token(token)
    view = asyncio.run(svc.draft(clinician, CALM, n=3))
    assert [d["index"] for d in view["drafts"]] == [2, 1, 0]  # by reward
    assert view["ranked"] and len(backend.calls) == 3
    system = backend.calls[0].messages[0][1]
    assert "Ask at most one question." in system and "under 300 characters" in system and "SAFETY" not in system
    history = parse_history("Client: I lost my job.\nIt was sudden.\nCounselor: That sounds like a shock.")
    assert history == [("user", "I lost my job.\nIt was sudden."), ("assistant", "That sounds like a shock.")]
    view = asyncio.run(svc.draft(clinician, CRISIS, history, n=2))
    req = backend.calls[-1]
    assert "SAFETY FIRST" in req.messages[0][1] and "988" in req.messages[0][1]
    assert [r for r, _ in req.messages] == ["system", "user", "assistant", "user"]
    assert all(d["blocked"] for d in view["drafts"]) and view["risk_panel"]["tier"] == "high"


def test_earlier_client_turns_are_screened_too(tmp_path):
    store = ServeStore(tmp_path / "s.sqlite")
    svc = DraftService(config(tmp_path, "http://127.0.0.1:9/v1"), store, backend=FakeBackend())
    assert svc.gate([("user", CRISIS), ("assistant", "I'm here.")], "Anyway, work is fine.").tier == "high"


def test_scrubbing_before_a_remote_backend(tmp_path):
    backend = FakeBackend(reply=lambda req: "ok")
    store = ServeStore(tmp_path / "s.sqlite")
    cfg = config(tmp_path, "https://models.example.com/v1")
    assert cfg.remote and cfg.scrubs
    svc = DraftService(cfg, store, backend=backend)
    _, token = store.add_clinician("Dr. A")
    asyncio.run(svc.draft(store.clinician_by_token(token), "My boss John Smith emailed me at john@example.com "
                          "again and I feel sick about it.", n=1))
    sent = backend.calls[0].messages[-1][1]
    assert "John Smith" not in sent and "john@example.com" not in sent and "[EMAIL]" in sent
