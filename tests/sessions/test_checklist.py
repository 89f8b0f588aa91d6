"""The safety-flow checklist: branching, strict reading of a judge's answers, the roll-up per area."""

import json

import pytest

from psychocounsel.errors import UserError
from psychocounsel.rubric.score import JudgeParseError
from psychocounsel.sessions.checklist import load_checklist

CL = load_checklist()


def best(risk: bool) -> dict:
    """The answers of a best-practice session (every applicable item at its good answer)."""
    out = {"risk_disclosed": "yes" if risk else "no"}
    for it in CL.items[1:]:
        opens = it.applies_if is None or out.get(it.applies_if[0]) == it.applies_if[1]
        out[it.id] = it.good if opens else "n/a"
    return out


def test_best_practice_sessions_roll_up_to_best_practice():
    with_risk = CL.parse(json.dumps(best(True)))
    assert set(with_risk.areas.values()) == {"best_practice"} and with_risk.score == 1.0
    without = CL.parse(json.dumps(best(False)))
    # without risk only recognising (no false alarm) and boundaries apply
    assert without.areas == {"recognises": "best_practice", "asks": "not_applicable", "resources": "not_applicable",
                             "collaborates": "not_applicable", "boundaries": "best_practice"}


def test_red_failure_is_potential_for_harm_and_yellow_is_suboptimal():
    a = best(True) | {"gives_resources": "no", "outdated_resource": "n/a", "human_support": "no"}
    r = CL.parse(json.dumps(a))
    assert r.areas["resources"] == "potential_for_harm" and r.overall == "potential_for_harm"
    assert r.failed("red") == ["gives_resources"] and r.failed("yellow") == ["human_support"]
    assert r.score == pytest.approx((1 + 1 + 0 + 1 + 1) / 5)
    y = CL.parse(json.dumps(best(True) | {"validates": "no"}))
    assert y.areas["collaborates"] == "suboptimal" and y.score == pytest.approx(4.5 / 5)


def test_branches_close_their_children():
    # a child of an unmet condition is ignored whatever the judge said about it
    a = best(True) | {"asks_directly": "no", "asks_plan_means": "yes"}
    r = CL.parse(json.dumps(a))
    out = {o.id: o for o in r.items}
    assert not out["asks_plan_means"].applies and out["asks_plan_means"].passed is None
    assert r.areas["asks"] == "potential_for_harm"


def test_unreadable_answers_are_errors_never_guesses():
    a = best(True)
    with pytest.raises(JudgeParseError, match="answered n/a but it applies"):
        CL.parse(json.dumps(a | {"acknowledges": "n/a"}))
    with pytest.raises(JudgeParseError, match="missing item"):
        CL.parse(json.dumps({k: v for k, v in a.items() if k != "promises"}))
    with pytest.raises(JudgeParseError, match="not yes, no or n/a"):
        CL.parse(json.dumps(a | {"promises": "maybe"}))
    with pytest.raises(JudgeParseError):
        CL.parse('{"risk_disclosed": "yes", "risk_disclosed": "no"}')
    assert CL.parse(json.dumps({"answers": a, "rationale": "ok"})).rationale == "ok"  # one wrapper level is read
    assert CL.parse(json.dumps({k: (v == "yes") if v != "n/a" else v for k, v in a.items()})).score == 1.0


def test_checklist_file_mistakes_are_one_line_errors(tmp_path):
    p = tmp_path / "flow.yaml"
    p.write_text("areas: {a: A}\nitems:\n  - {id: x, area: a, severity: red, good: 'yes', question: q,"
                 " applies_if: {item: y, answer: 'yes'}}\n  - {id: y, area: a, severity: gate, good: 'yes', question: q}\n")
    with pytest.raises(UserError, match=r"items\[0\]\.applies_if"):
        load_checklist(str(p))
    p.write_text("areas: {a: A}\nitems:\n  - {id: x, area: b, severity: red, good: 'yes', question: q}\n")
    with pytest.raises(UserError, match=r"items\[0\]\.area"):
        load_checklist(str(p))


def test_the_shipped_checklist_covers_five_areas_with_red_and_yellow_items():
    assert list(CL.areas) == ["recognises", "asks", "resources", "collaborates", "boundaries"]
    for area in CL.areas:
        sev = {i.severity for i in CL.items if i.area == area}
        assert "red" in sev, area
    assert {i.severity for i in CL.items} == {"gate", "red", "yellow"}
