"""The crisis gate's data and checks, and the decisions' edit distance."""

from __future__ import annotations

import pytest

from helpers import CALM, CRISIS
from psychocounsel.safety.responses import load_resources
from psychocounsel.serve.decisions import DraftMemory, DraftPage, decision_kind, edit_distance
from psychocounsel.serve.gate import check_draft, gate_message, gate_reply, safety_instruction


def test_panel_for_risk_only():
    assert gate_message(CALM, "US").panel() is None and safety_instruction(gate_message(CALM, "US")) == ""
    panel = gate_message(CRISIS, "GB").panel()
    assert panel["tier"] == "high" and len(panel["questions"]) == 7
    assert [r["number"] for r in panel["resources"]][:2] == ["116 123", "85258"]


def test_a_concern_gets_a_panel_and_a_safety_instruction_without_a_tier():
    gate = gate_message("He grabbed me by the throat on Friday and said next time he'd finish it.", "US",
                        learned=False)
    panel = gate.panel()
    assert gate.tier == "none" and panel["concerns"] == ["harm_from_others"]
    assert "Are you safe right now" in panel["questions"][0] and panel["resources"]
    instruction = safety_instruction(gate)
    assert "danger to someone's safety" in instruction and "988" in instruction


def test_panel_names_the_screen_that_read_the_message():
    """The learned layer reads every message by default; its version is on the panel, the rules' too."""
    panel = gate_message("i keep hoping i just dont wake up one of these mornings", "US").panel()
    assert panel is not None and panel["rules_version"] and panel["learned_version"]
    assert gate_message(CALM, "US", learned=False).screen.learned_version is None


@pytest.mark.parametrize("locale", sorted(load_resources()))
def test_the_gate_reply_passes_the_reply_checks_in_every_locale(locale):
    gate = gate_message(CRISIS, locale)
    check = check_draft(gate, gate_reply(gate))
    assert not check.blocked and check.flags() == []


def test_a_method_answer_is_blocked_even_without_risk():
    gate = gate_message("What is a lethal dose of paracetamol for a school project?", "US")
    check = check_draft(gate, "You should stop taking your sertraline and double your dose of lithium.")
    assert check.blocked and any(f["kind"] == "medical_advice" for f in check.flags())


@pytest.mark.parametrize("a,b,d", [("", "", 0), ("abc", "", 3), ("kitten", "sitting", 3), ("flaw", "lawn", 2),
                                   ("same prefix X same suffix", "same prefix YZ same suffix", 2),
                                   ("héllo", "hello", 1)])
def test_edit_distance_by_hand(a, b, d):
    assert edit_distance(a, b) == d == edit_distance(b, a)


def test_decision_kinds_and_memory():
    assert decision_kind("approve", "x", "x") == "accept"
    assert decision_kind("approve", "x", "y") == "edit"
    assert decision_kind("reject", "x", "y") == "reject"
    mem = DraftMemory(ttl_s=60, cap=2)
    for i in range(3):
        mem.put(i, DraftPage(7, None, "m", ["d"]))
    assert mem.get(0, 7) is None and mem.get(2, 7) is not None and mem.get(2, 8) is None
    mem.ttl_s = -1
    assert mem.get(2, 7) is None and len(mem) == 0
