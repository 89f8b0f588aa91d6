"""Client profiles: the shipped set and the frozen benchmark load; mistakes name the file, line and field;
generation is seeded; the benchmark file is exactly the generator's output."""

from __future__ import annotations

import importlib.util
import json
from collections import Counter
from pathlib import Path

import pytest

from psychocounsel.errors import InputError, UserError
from psychocounsel.sessions.config import InjectionConfig
from psychocounsel.sessions.profiles import (
    DISCLOSURES,
    SEVERITIES,
    STYLES,
    generate_profile,
    load_profiles,
    profile_path,
)

ROOT = Path(__file__).resolve().parents[2]


def _script():
    path = ROOT / "scripts" / "make_session_benchmark.py"
    spec = importlib.util.spec_from_file_location("make_session_benchmark", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _one_profile() -> dict:
    return json.loads(profile_path("benchmark").read_text().splitlines()[0])


def test_shipped_profiles_load_and_cover_risk_personas():
    ps = load_profiles("shipped")
    assert len(ps) >= 8 and len({p.id for p in ps}) == len(ps)
    assert {p.risk.level for p in ps} == {"none", "low", "high", "imminent"}
    assert {p.risk.disclosure for p in ps} >= {"direct", "indirect", "coded", "contradictory"}
    assert all(p.intake_summary and p.cognitive_model.situations for p in ps)
    assert any(p.injections for p in ps)


def test_benchmark_is_the_scripts_output_byte_for_byte():
    assert profile_path("benchmark").read_text(encoding="utf-8") == _script().build()


def test_benchmark_is_stratified_by_severity_style_and_risk():
    ps = load_profiles("benchmark")
    plain = [p for p in ps if p.risk.level == "none"]
    risk = [p for p in ps if p.risk.level != "none"]
    assert len(plain) == 196 and len(risk) == 48
    worse = Counter((max(SEVERITIES.index(p.severity.depression), SEVERITIES.index(p.severity.anxiety)), p.style)
                    for p in plain)
    assert set(worse.values()) == {7} and len(worse) == len(SEVERITIES) * len(STYLES)
    cells = Counter((p.risk.level, p.risk.disclosure) for p in risk)
    assert set(cells.values()) == {4} and len(cells) == 3 * len(DISCLOSURES)
    for p in risk:  # every disclosure and event happens inside the shortest (10-turn) session
        assert 1 <= p.risk.disclosure_turn <= 7 and all(e.turn <= 9 for e in p.injections)
        assert "self-harm" not in p.intake_summary or p.risk.disclosure == "contradictory"
    assert Counter(e.kind for p in ps for e in p.injections) == {"false_alarm": 28, "method_question": 12,
                                                                 "no_hotlines": 12, "escalation": 12}


def test_generation_is_seeded():
    kw = {"depression": "mild", "anxiety": "severe", "style": "verbose", "risk_level": "high",
          "disclosure": "coded", "disclosure_turn": 2}
    a, b = generate_profile("p1", seed=0, **kw), generate_profile("p1", seed=0, **kw)
    assert a == b
    others = [generate_profile("p1", seed=s, **kw) for s in range(1, 6)]
    assert any(o.cognitive_model != a.cognitive_model for o in others)
    assert a.severity.anxiety == "severe" and a.style == "verbose" and a.risk.reasons_for_living


def test_yaml_error_names_the_fields_own_line(tmp_path):
    text = profile_path("shipped").read_text().replace("style: reserved", "style: shouty", 1)
    path = tmp_path / "p.yaml"
    path.write_text(text)
    line = next(i for i, s in enumerate(text.splitlines(), 1) if "style: shouty" in s)
    with pytest.raises(InputError) as e:
        load_profiles(str(path))
    msg = str(e.value)
    assert msg.startswith(f"{path}:{line}: style: ") and "\n" not in msg


def test_jsonl_errors_name_line_and_field(tmp_path):
    good = _one_profile()
    bad = json.loads(json.dumps(good))
    bad["risk"] = {"level": "high", "disclosure": "direct", "reasons_for_living": [], "disclosure_turn": None}
    path = tmp_path / "p.jsonl"
    path.write_text(json.dumps(good) + "\n\n" + json.dumps(bad) + "\n")
    with pytest.raises(InputError, match=r"p\.jsonl:3: risk: disclosure_turn: a client at risk"):
        load_profiles(str(path))
    bad = dict(good, demographics={"age": 7, "gender": "girl", "occupation": "pupil"})
    path.write_text(json.dumps(bad) + "\n")
    with pytest.raises(InputError, match=r"p\.jsonl:1: demographics\.age: "):
        load_profiles(str(path))
    path.write_text(json.dumps(good) + "\n" + json.dumps(good) + "\n")
    with pytest.raises(InputError, match=r"p\.jsonl:2: id: .* already used on line 1"):
        load_profiles(str(path))
    path.write_text(json.dumps(dict(good, mood="low")) + "\n")
    with pytest.raises(InputError, match=r"p\.jsonl:1: mood: Extra inputs"):
        load_profiles(str(path))


def test_risk_must_be_consistent(tmp_path):
    p = _one_profile()
    p["risk"] = {"level": "none", "disclosure": "coded", "reasons_for_living": [], "disclosure_turn": None}
    path = tmp_path / "p.jsonl"
    path.write_text(json.dumps(p) + "\n")
    with pytest.raises(InputError, match="risk: level 'none' with disclosure 'coded'"):
        load_profiles(str(path))


@pytest.mark.parametrize("name, text, match", [
    ("p.yaml", "id: x\n", "must be a YAML list"),
    ("p.yaml", "- [unclosed\n", "invalid YAML"),
    ("p.txt", "x", "must be a .yaml, .yml or .jsonl"),
    ("p.jsonl", "\n", "no profiles"),
])
def test_bad_files_are_one_line_errors(tmp_path, name, text, match):
    (tmp_path / name).write_text(text)
    with pytest.raises(UserError, match=match) as e:
        load_profiles(str(tmp_path / name))
    assert "\n" not in str(e.value)
    with pytest.raises(UserError, match="not found"):
        load_profiles(str(tmp_path / "missing.yaml"))


def test_a_profiles_own_event_wins_its_turn():
    p = load_profiles("shipped")[0].model_copy(update={"injections": [InjectionConfig(turn=2, kind="escalation")]})
    run = [InjectionConfig(turn=2, kind="false_alarm"), InjectionConfig(turn=4, kind="no_hotlines", text="no numbers")]
    events = p.events(run)
    assert events[2].kind == "escalation" and events[4].text == "no numbers" and set(events) == {2, 4}
