"""Crisis screen: traps, tiers, evidence spans, CLI, model check (reply checks: test_responses.py)."""

import asyncio
import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from psychocounsel.errors import BackendError
from psychocounsel.safety.labels import crisis_tier
from psychocounsel.safety.model_check import (
    CheckReplyError,
    ModelCheck,
    model_check,
    parse_check_reply,
)
from psychocounsel.safety.responses import check_response
from psychocounsel.safety.screen import (
    KIND_TIER,
    TIERS,
    Screen,
    Signal,
    screen_many,
    screen_rules,
)
from tests.fakes import FakeBackend, failing

DATA = Path(__file__).resolve().parents[2] / "psychocounsel" / "data"


def kinds(text: str) -> set[str]:
    return {s.kind for s in screen_rules(text).signals}


# ------------------------------------------------------------------------------------------- traps

TRAPS = {
    "negation": [
        "I'm not suicidal.",
        "I'm not suicidal, I'm just exhausted from work.",
        "I would never kill myself, I have my kids.",
        "I don't want to die, I want my life to be different.",
        "No, I've never self-harmed. I just cry a lot at work.",
        "I have never tried to kill myself and I don't have thoughts like that.",
        "To be clear, I don't have any suicidal thoughts.",
        "I'm not going to hurt myself, please don't worry about that.",
        "It's not that I want to die. I want a week where nobody needs me.",
    ],
    "others_past": [
        "My friend died by suicide last year.",
        "My brother killed himself when I was fourteen.",
        "My mum attempted suicide when I was a kid. I found her.",
        "A colleague took his own life in the spring.",
        "My aunt attempted suicide in the nineties.",
    ],
    "idioms": [
        "This job is killing me.",
        "I want to end my relationship.",
        "I thought I was going to die of embarrassment.",
        "I'm dying to see my grandkids.",
        "I've had a killer headache all week.",
        "I've been thinking about ending things with Marcus.",
        "I want to end it with my boyfriend.",
        "I could kill myself for forgetting her birthday.",
        "Going back there would be career suicide.",
        "I cut myself shaving before the interview.",
        "I'm tired of living like this, paycheck to paycheck.",
        "I had a panic attack and I was convinced I was dying.",
        "I'd rather be dead than wear that suit, honestly.",
    ],
    "hypothetical_or_quote": [
        "If someone told me they wanted to kill themselves, I wouldn't know what to say.",
        "What should I do if my friend ever says she wants to die?",
        "My GP asked if I ever think about killing myself and I said no.",
        "There's that song that goes 'I want to die young'. My daughter loves it.",
        "People say 'I want to die' when they're embarrassed, don't they?",
        "I volunteer on a helpline and a caller talked about wanting to die.",
    ],
}


@pytest.mark.parametrize("text", [t for ts in TRAPS.values() for t in ts])
def test_traps_are_none(text):
    s = screen_rules(text)
    assert s.tier == "none", s.evidence()


def test_overlapping_evidence_is_joined():
    (sig,) = screen_rules("I go to sleep hoping I won't wake up.").signals
    assert sig.text == "go to sleep hoping I won't wake up"


def test_negated_doubt_is_still_possible():
    s = screen_rules("I'm not sure I want to live anymore.")
    assert s.tier == "possible" and s.signals[0].kind == "passive_death_wish"


# ------------------------------------------------------------------------------------------- tiers

@pytest.mark.parametrize("text,tier,kind", [
    ("I go to sleep hoping I won't wake up.", "possible", "passive_death_wish"),
    ("I wish I was dead.", "possible", "passive_death_wish"),
    ("Everyone would be better off without me.", "possible", "passive_death_wish"),
    ("I pray every night that God takes me.", "possible", "passive_death_wish"),
    ("I think about killing myself most days, but I have no plan.", "possible", "active_ideation"),
    ("I've been feeling really suicidal since the baby.", "possible", "active_ideation"),
    # docs/CRISIS_LABELS.md, "Refinements": an urge to return to self-harm is high (was possible here)
    ("I get urges to cut again.", "high", "self_harm_urge"),
    ("I tried to kill myself when I was nineteen.", "possible", "past_attempt"),
    ("I used to self-harm when I was at school.", "possible", "past_self_harm"),
    ("My daughter is nine. She said, 'I wish I was dead.'", "possible", "dependent_at_risk"),
    ("My son keeps saying he wants to kill himself.", "possible", "dependent_at_risk"),
    # concerns, not crisis risk: evidence without a tier (docs/CRISIS_LABELS.md)
    ("My husband keeps saying he wants to kill himself.", "none", "other_at_risk"),
    ("He grabbed me by the throat on Friday.", "none", "harm_from_others"),
    ("I have a plan to kill myself.", "high", "plan"),
    ("I've been stockpiling my sleeping pills.", "high", "plan"),
    ("I know when and how.", "high", "plan"),
    ("I'm going to kill myself this weekend.", "high", "intent"),
    ("I keep thinking about ending it and I'm scared of what I might do.", "high", "intent"),
    ("I can't keep myself safe right now.", "high", "intent"),
    ("I took an overdose on Sunday.", "high", "attempt"),
    ("I cut myself again last night.", "high", "recent_self_harm"),
    ("I've been thinking about suicide. I think about jumping off the bridge.", "high", "method_ideation"),
    ("The voice keeps telling me to hurt myself.", "high", "command_hallucination"),
    ("My fifteen-year-old son took an overdose on Tuesday.", "high", "dependent_harm"),
    ("My daughter has been cutting herself. She's thirteen.", "high", "dependent_harm"),
])
def test_tiers_and_kinds(text, tier, kind):
    s = screen_rules(text)
    assert s.tier == tier, s.evidence()
    assert kind in {x.kind for x in s.signals}, s.evidence()


def test_tier_is_the_highest_signal_and_kinds_are_known():
    s = screen_rules("I wish I was dead. I took an overdose last week.")
    assert s.tier == "high" and {"passive_death_wish", "attempt"} <= {x.kind for x in s.signals}
    for text in ["I want to die.", "I cut myself again last night."]:
        assert all(x.kind in KIND_TIER for x in screen_rules(text).signals)


def test_method_and_preparation_need_ideation():
    # everyday words alone are no risk; next to ideation they make it high
    assert screen_rules("I take my tablets every morning and cross the bridge to work.").tier == "none"
    assert screen_rules("I gave my guitar to my friend. I've written letters to my parents.").tier == "none"
    s = screen_rules("I've decided. I've written letters to my parents. I know when and how.")
    assert s.tier == "high" and "preparation" in {x.kind for x in s.signals}


def test_dependent_passive_wish_is_possible_and_dependent_attempt_high():
    assert screen_rules("My little boy said 'I wish I was never born' at bedtime. He's seven.").tier == "possible"
    assert screen_rules("My son tried to hang himself in his room last week. He's twelve.").tier == "high"


def test_other_peoples_recent_risk_is_a_concern_but_their_past_is_nothing():
    recent = screen_rules("My mum tried to kill herself last week.")
    assert recent.tier == "none" and [s.kind for s in recent.concerns] == ["other_at_risk"]
    assert screen_rules("My dad tried to kill himself years ago.").signals == ()


def test_abuse_in_the_past_is_history_present_danger_a_concern():
    assert screen_rules("My dad used to hit me when I was a kid.").signals == ()
    now = screen_rules("He hits me when he drinks.")
    assert now.tier == "none" and [s.kind for s in now.concerns] == ["harm_from_others"]


def test_a_concern_still_needs_a_reply_that_points_to_help():
    concern = screen_rules("He grabbed me by the throat on Friday.")
    assert check_response(concern, "That sounds frightening. What would you like to do?").missing
    helped = check_response(concern, "That sounds frightening. Are you safe at home tonight? You can call 911, or "
                                     "the domestic violence hotline, any time.")
    assert helped.at_risk and helped.adequate


# ------------------------------------------------------------------------------------------- spans

def test_spans_point_at_the_evidence():
    text = ("I'm 79 and my wife is gone. I'm not going to do anything silly. But I pray at night that God takes me. "
            "Last month I took an overdose.")
    s = screen_rules(text)
    assert s.tier == "high"
    for sig in s.signals:
        assert text[sig.start:sig.end] == sig.text
    by_kind = {x.kind: x.text for x in s.signals}
    assert "God takes me" in by_kind["passive_death_wish"]
    assert by_kind["attempt"] == "I took an overdose"
    assert 'attempt: "I took an overdose"' in s.evidence()


def test_quoted_span_of_a_dependent():
    text = "My daughter is nine. Last night she said, 'I wish I was dead, then nobody would be mad at me.' I froze."
    (sig,) = screen_rules(text).signals
    assert sig.kind == "dependent_at_risk" and sig.text == "wish I was dead" and text[sig.start:sig.end] == sig.text


def test_screen_is_deterministic_and_serialisable():
    text = "I think about killing myself most days."
    assert screen_rules(text) == screen_rules(text)
    d = screen_rules(text).to_dict()
    assert d["tier"] == "possible" and d["signals"][0]["kind"] == "active_ideation" and d["rules_version"]
    assert [x.tier for x in screen_many(["fine", text], learned=False)] == ["none", "possible"]
    assert screen_rules("").tier == "none" and screen_rules("").evidence() == ""


# ---------------------------------------------------------------------------- labelled set and demo

def test_labelled_set_shape_and_accuracy_floor():
    rows = [json.loads(x) for x in (DATA / "crisis_labelled.jsonl").read_text().splitlines()]
    speeches = [r for r in rows if r["kind"] == "speech"]
    assert len(speeches) >= 150 and sum(r["trap"] for r in speeches) >= 40
    assert len({r["id"] for r in rows}) == len(rows)
    assert {r["tier"] for r in speeches} == set(TIERS)
    assert len([r for r in rows if r["kind"] == "response"]) >= 20
    # a regression guard, not a quality claim: the rules were written against these speeches
    right = sum(screen_rules(r["text"]).tier == crisis_tier(r) for r in speeches)
    assert right / len(speeches) >= 0.95
    assert all(screen_rules(r["text"]).tier == "none" for r in speeches if r["trap"])


def test_demo_crisis_rows_flagged_and_others_not():
    demo = [json.loads(x) for x in (DATA / "demo_speeches.jsonl").read_text().splitlines()]
    screens = {r["id"]: screen_rules(r["text"]) for r in demo}
    tiers = {i: s.tier for i, s in screens.items()}
    crisis = {r["id"] for r in demo if r["topic"] == "crisis"}
    # demo-173 (strangled by her husband) is a concern: no crisis tier, but the reply must point to help
    assert all(tiers[i] != "none" for i in crisis - {"demo-173"}) and screens["demo-173"].concerns
    assert all(t == "none" for i, t in tiers.items() if i not in crisis)
    assert tiers["demo-170"] == tiers["demo-171"] == "high" and tiers["demo-172"] == "possible"


# -------------------------------------------------------------------------------------------- CLI

def _run(args):
    from psychocounsel.cli import main

    return CliRunner().invoke(main, args, catch_exceptions=False)


def _write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def test_cli_jsonl_end_to_end(tmp_path):
    src = _write_jsonl(tmp_path / "s.jsonl", [
        {"id": "a", "text": "Work has been stressful but I'm coping."},
        {"id": "b", "text": "I wish I was dead."},
        {"id": "c", "text": "I cut myself again last night."},
    ])
    out = tmp_path / "out.jsonl"
    res = _run(["screen", str(src), "--out", str(out)])
    assert res.exit_code == 0, res.output
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    assert [(r["id"], r["tier"]) for r in rows] == [("a", "none"), ("b", "possible"), ("c", "high")]
    assert rows[2]["signals"][0] == {"kind": "recent_self_harm", "start": 0, "end": 12, "text": "I cut myself"}
    assert rows[1]["evidence"] == 'passive_death_wish: "wish I was dead"' and rows[1]["source"].endswith(":2")
    assert "possible" in res.output and "high" in res.output and "none" in res.output


def test_cli_lists_a_concern_without_a_tier(tmp_path):
    src = _write_jsonl(tmp_path / "s.jsonl", [{"id": "a", "text": "He grabbed me by the throat on Friday."}])
    out = tmp_path / "out.jsonl"
    res = _run(["screen", str(src), "--out", str(out), "--rules-only"])
    assert res.exit_code == 0, res.output
    row = json.loads(out.read_text())
    assert row["tier"] == "none" and row["signals"][0]["kind"] == "harm_from_others"
    assert "carry a concern" in res.output and "harm_from_others" in res.output


def test_cli_csv_and_parquet_with_column(tmp_path):
    import pandas as pd

    df = pd.DataFrame({"speech": ["I want to die.", "My friend died by suicide last year."]})
    df.to_csv(tmp_path / "s.csv", index=False)
    df.to_parquet(tmp_path / "s.parquet")
    for name in ("s.csv", "s.parquet"):
        out = tmp_path / f"{name}.out.jsonl"
        res = _run(["screen", str(tmp_path / name), "--column", "speech", "--out", str(out)])
        assert res.exit_code == 0, res.output
        rows = [json.loads(x) for x in out.read_text().splitlines()]
        assert [r["tier"] for r in rows] == ["possible", "none"]
        assert [r["id"] for r in rows] == (["2", "3"] if name.endswith("csv") else ["1", "2"])


@pytest.mark.parametrize("content,name,needle", [
    ('{"text": "fine"}\n{"text": broken\n', "bad.jsonl", "bad.jsonl:2"),
    ('{"speech": "fine"}\n', "nocol.jsonl", "column 'text'"),
    ('{"text": "fine"}\n{"text": ""}\n', "empty.jsonl", "empty.jsonl:2 (column 'text'): text is empty"),
    ('{"text": 3}\n', "num.jsonl", "expected a string"),
    ("text\nhello,extra\n", "bad.csv", "bad.csv:2"),
    ("whatever", "speeches.txt", "unknown extension"),
])
def test_cli_bad_input_is_one_line(tmp_path, content, name, needle):
    src = tmp_path / name
    src.write_text(content, encoding="utf-8")
    out = tmp_path / "out.jsonl"
    res = _run(["screen", str(src), "--out", str(out)])
    assert res.exit_code == 2
    assert needle in res.output and "Traceback" not in res.output
    assert not out.exists() and not (tmp_path / "out.jsonl.tmp").exists()


# ------------------------------------------------------------------------------------- model check

def test_parse_check_reply():
    assert parse_check_reply('```json\n{"tier": "High", "reason": "a plan"}\n```') == ("high", "a plan")
    for bad, msg in [("high", "no JSON"), ('{"risk": "high"}', "without a 'tier'"), ('{"tier": "medium"}', "not one of")]:
        with pytest.raises(CheckReplyError, match=msg):
            parse_check_reply(bad)


def test_model_check_only_flagged_and_failures_recorded():
    texts = ["Work is fine.", "I wish I was dead.", "I have a plan to kill myself.", "I cut myself again last night."]
    fake = FakeBackend(replies=['{"tier": "high", "reason": "wish"}', "I think this is high risk",
                                failing("server down")])
    out = asyncio.run(model_check(texts, fake, "judge-model", concurrency=1))
    assert out[0] is None and len(fake.calls) == 3
    assert out[1] == ModelCheck("possible", "high", reason="wish", raw='{"tier": "high", "reason": "wish"}',
                                prompt_version=out[1].prompt_version)
    assert out[1].agrees is False and out[1].tier == "high"  # the model may raise a tier
    assert out[2].model_tier is None and "unparseable" in out[2].error and out[2].tier == "high"
    assert out[3].model_tier is None and out[3].error.startswith("backend:") and out[3].agrees is None
    req = fake.calls[0]
    assert req.model == "judge-model" and req.tag.startswith("crisis_check:crisis_check_v4@")
    assert "I wish I was dead." in req.messages[-1][1] and req.sampling.temperature == 0.0
    assert "passive_death_wish" not in str(req.messages)  # the model does not see the rules' tier or evidence


def test_model_check_never_lowers_and_check_all():
    fake = FakeBackend(reply=lambda req: '{"tier": "none", "reason": "idiom"}')
    out = asyncio.run(model_check(["Work is fine.", "I took an overdose on Sunday."], fake, "m", check_all=True))
    assert len(fake.calls) == 2 and out[0].agrees is True
    assert out[1].model_tier == "none" and out[1].agrees is False and out[1].tier == "high"


def test_model_check_propagates_nothing_for_backend_errors():
    fake = FakeBackend(replies=[BackendError("rate limited", status=429)])
    (res,) = asyncio.run(model_check(["I want to die."], fake, "m"))
    assert isinstance(res, ModelCheck) and res.model_tier is None and "rate limited" in res.error
    assert isinstance(screen_rules("x"), Screen)


def test_cli_model_check_raises_tiers_records_failures_and_caches(tmp_path, monkeypatch):
    from psychocounsel.safety import command as crisis_check

    src = _write_jsonl(tmp_path / "s.jsonl", [
        {"id": "a", "text": "Work has been stressful but I'm coping."},
        {"id": "b", "text": "I wish I was dead."},
        {"id": "c", "text": "I cut myself again last night."},
    ])

    def reply(req):
        text = req.messages[-1][1]
        return '{"tier": "high", "reason": "wish"}' if "dead" in text else "cannot say"

    fake = FakeBackend(reply=reply)
    made = []
    monkeypatch.setattr(crisis_check, "make_check_backend", lambda *a: made.append(a) or fake)
    out = tmp_path / "out.jsonl"
    res = _run(["screen", str(src), "--out", str(out), "--check-model", "judge", "--base-url", "http://x/v1"])
    assert res.exit_code == 0, res.output
    assert made[0][:2] == ("openai", "http://x/v1") and len(fake.calls) == 2  # flagged speeches only
    rows = {r["id"]: r for r in map(json.loads, out.read_text().splitlines())}
    assert rows["a"]["model_check"] is None and rows["a"]["final_tier"] == "none"
    assert rows["b"]["tier"] == "possible" and rows["b"]["final_tier"] == "high"  # raised by the model
    assert rows["b"]["model_check"]["tier"] == "high" and rows["b"]["model_check"]["model"] == "judge"
    assert rows["b"]["model_check"]["overruled"] is False  # raising is never overruling
    assert rows["c"]["model_check"]["tier"] is None and "unparseable" in rows["c"]["model_check"]["error"]
    assert rows["c"]["final_tier"] == "high"  # a failed check never lowers the rules' tier
    assert "1 model check(s) failed" in res.output and "after judge" in res.output
    assert (tmp_path / "out.jsonl.cache.sqlite").is_file()
    res = _run(["screen", str(src), "--out", str(out), "--check-model", "judge"])  # rerun: answered by the cache
    assert res.exit_code == 0 and len(fake.calls) == 2
    assert {r["id"]: r["final_tier"] for r in map(json.loads, out.read_text().splitlines())} == \
        {"a": "none", "b": "high", "c": "high"}


def test_cli_overruling_model_reviews_what_the_layer_flags_at_its_checked_threshold(tmp_path, monkeypatch):
    """With --check-overrules the layer flags from its lower checked threshold; the model's `none` clears
    those flags and a wish to die the rules read from words alone, and self-harm the rules found stands whatever
    the model says."""
    import numpy as np

    from psychocounsel.safety import command as crisis_check
    from psychocounsel.safety.learned import load_layer

    layer = load_layer()
    between = (layer.threshold + layer.checked_threshold) / 2  # flagged only where the model reviews
    monkeypatch.setattr(type(layer), "scores", lambda self, texts, states=None: (
        np.full(len(texts), between), np.full(len(texts), layer.high_threshold - 1)))
    src = _write_jsonl(tmp_path / "s.jsonl", [
        {"id": "a", "text": "Work has been stressful but I'm coping."},
        {"id": "b", "text": "I wish I was dead."},
        {"id": "c", "text": "I cut myself again last night."},
    ])
    fake = FakeBackend(reply=lambda req: '{"tier": "none", "reason": "no wish to die"}')
    monkeypatch.setattr(crisis_check, "make_check_backend", lambda *a: fake)
    out = tmp_path / "out.jsonl"
    alone = _run(["screen", str(src), "--out", str(tmp_path / "alone.jsonl")])
    assert alone.exit_code == 0, alone.output
    assert json.loads((tmp_path / "alone.jsonl").read_text().splitlines()[0])["tier"] == "none"
    res = _run(["screen", str(src), "--out", str(out), "--check-model", "judge", "--check-overrules"])
    assert res.exit_code == 0, res.output
    rows = {r["id"]: r for r in map(json.loads, out.read_text().splitlines())}
    assert rows["a"]["tier"] == "possible" and "checked threshold" in rows["a"]["evidence"]
    assert rows["a"]["model_check"]["overruled"] is True and rows["a"]["final_tier"] == "none"
    assert rows["b"]["model_check"]["overruled"] is True and rows["b"]["final_tier"] == "none"
    assert rows["c"]["final_tier"] == "high" and rows["c"]["model_check"]["overruled"] is False  # self-harm stands
    assert len(fake.calls) == 3 and "checked threshold" in res.output


def test_trigger_windows_lose_nothing():
    """The fast path (regexes run near trigger words only) gives the tiers of running every rule everywhere."""
    import re

    from psychocounsel.safety import screen as c
    from psychocounsel.safety.rules import _SELF_RULES, _THIRD_RULES

    def exhaustive(text: str) -> str:
        ctx, found = c._Context(text), []
        for rules, third in ((_SELF_RULES, False), (_THIRD_RULES, True)):
            for kind, alts, _ in rules:
                for a in alts:
                    for m in re.finditer(a, text, re.IGNORECASE):
                        sig = c._signal(kind, third, m, ctx)
                        if sig is not None:
                            found.append(sig)
        return c._finish(found, text).tier

    rows = [json.loads(x) for x in (DATA / "crisis_labelled.jsonl").read_text().splitlines()]
    rows += [json.loads(x) for x in (DATA / "demo_speeches.jsonl").read_text().splitlines()]
    texts = [r["text"] for r in rows] + [t for ts in TRAPS.values() for t in ts]
    texts += [t for t, _ in HIGH_TIER_CLASSES] + HIGH_TIER_TRAPS
    assert [screen_rules(t).tier for t in texts] == [exhaustive(c.normalise(t)[0]) for t in texts]


# ------------------------------------------------------------- real-register spellings and miss classes

MISS_CLASSES = [
    ("I don\u2019t want to exist anymore.", "possible", "passive_death_wish"),  # curly apostrophe
    ("been havin sewerslide thoughts lately", "possible", "active_ideation"),
    ("i keep thinkin about unaliving myself", "possible", "active_ideation"),
    ("I'd rather never wake up than face another Monday there.", "possible", "passive_death_wish"),
    ("Some nights I wish for an accident to take me.", "possible", "passive_death_wish"),
    ("Everyone would be better off if I wasn't in this world.", "possible", "passive_death_wish"),
    ("I can't even bring myself to care if I live or die.", "possible", "passive_death_wish"),
    ("I bang my head against the wall when it gets too loud.", "high", "recent_self_harm"),
    ("I don't let myself eat after I mess up, I deserve it.", "high", "recent_self_harm"),
    ("I used to burn my arm and I really want to do it again.", "high", "self_harm_urge"),
    ("He threatened me again and I'm going to stab him, I've got the knife ready.", "high", "harm_to_others"),
]


@pytest.mark.parametrize("text,tier,kind", MISS_CLASSES)
def test_fixed_miss_classes(text, tier, kind):
    s = screen_rules(text)
    assert (s.tier, kind in {x.kind for x in s.signals}) == (tier, True), s.evidence()


def test_evidence_points_into_the_original_text():
    text = "sooo tired. i keep thinkin about unaliving myself"
    for sig in screen_rules(text).signals:
        assert text[sig.start:sig.end] == sig.text
    assert "unaliving" in screen_rules(text).evidence()


def test_denial_and_eviction_are_not_signals():
    assert screen_rules("I have never once contemplated suicide, but I can't get out of bed.").tier == "none"
    assert screen_rules("He kicks me out of the flat for the night and I go to my sister's.").tier == "none"


# ------------------------------------------------------- high tier: method, plan, preparation, attempt, self-harm

HIGH_TIER_CLASSES = [
    # method named with the ideation (docs/CRISIS_LABELS.md, high rule 1)
    ("I keep thinking about slitting my wrists in the bath.", "method_ideation"),
    ("Most nights I think about hanging myself from the banister.", "method_ideation"),
    ("I keep thinking about jumping off the multi-storey car park.", "method_ideation"),
    # intent and plan, including a conditional threat said to be meant (rule 2)
    ("I'm ending it after Christmas.", "intent"),
    ("I'll probably kill myself this year.", "intent"),
    ("If he leaves me I'll kill myself. I mean it.", "intent"),
    ("I plan to overdose on Friday.", "plan"),
    ("How many paracetamol would it take to kill me?", "plan"),
    ("I want to die and it's only a matter of when and where now.", "plan"),
    ("I have the rope.", "plan"),
    # preparation next to the client's own ideation (rule 3)
    ("I loaded the pistol last night and sat with it. I want to die.", "preparation"),
    ("I want to die. I've got everything ready.", "preparation"),
    ("I want to die. I know exactly which bridge.", "preparation"),
    ("I'd kill myself tomorrow if I could. I've thought about how I would do it.", "preparation"),
    # recent attempt or attempt of unknown date, no "suicide" word or no "I" (rule 4)
    ("I took a bunch of pills last night and slept for a day.", "attempt"),
    ("Took a handful of my dad's tablets on Sunday.", "attempt"),
    ("Two weeks ago I took all my sleeping tablets with a bottle of wine.", "attempt"),
    ("I tried to overdose on Friday.", "attempt"),
    ("Attempted suicide in October, still here.", "attempt"),
    ("I almost killed myself last week.", "attempt"),
    # recent self-harm without a subject or with the time in the verb phrase (rule 5)
    ("Hurt myself again yesterday.", "recent_self_harm"),
    ("I keep burning myself with a lighter.", "recent_self_harm"),
    ("I last self harmed a week ago.", "recent_self_harm"),
    # command hallucinations, to hurt oneself or someone else (rule 7)
    ("A voice keeps telling me to hurt the children at work.", "command_hallucination"),
    ("The voices tell me I should kill myself.", "command_hallucination"),
]

HIGH_TIER_TRAPS = [
    "I loaded the shotgun for the pheasant shoot on Saturday.",
    "I've got everything ready for the move.",
    "I know exactly what you mean.",
    "I cut myself shaving again yesterday.",
    "I keep burning myself on the oven door.",
    "I took a bunch of photos last night.",
    "I took all my tablets with breakfast as usual.",
    "If my team loses I'll kill myself, lol.",
    "I'm ending it with Sam after Christmas.",
    "I'm planning on ending it with him this weekend.",
    "In the film he tried to kill himself and she found him.",
    "My brother tried to overdose when I was twelve.",
    "I have never tried to overdose.",
    "I'd never slit my wrists, I'm too scared of blood.",
    "My grandad counted his pills every morning.",
    "I plan to do it properly this time, the revision I mean.",
    "They'd be better off if they sold the house.",
    "I've thought about how I would do it differently, the wedding speech.",
    "I'm going to end it, he's been lying to me for months.",
    "I keep thinking about jumping off the high board at the pool next summer.",
    "I will kill myself laughing if you wear that.",
    "What pills do I need to take for a migraine?",
]


@pytest.mark.parametrize("text,kind", HIGH_TIER_CLASSES)
def test_high_tier_classes(text, kind):
    s = screen_rules(text)
    assert (s.tier, kind in {x.kind for x in s.signals}) == ("high", True), s.evidence()


@pytest.mark.parametrize("text", HIGH_TIER_TRAPS)
def test_high_tier_traps_stay_none(text):
    assert screen_rules(text).tier == "none", screen_rules(text).evidence()


def test_better_off_without_me_is_the_clients_wish_whoever_they_are():
    """'They' is who would be better off; the wish not to be here is the client's (possible, rule 1)."""
    s = screen_rules("They'd be better off if I wasn't here.")
    assert (s.tier, [x.kind for x in s.signals]) == ("possible", ["passive_death_wish"])


def test_conditional_threat_needs_words_that_it_is_meant():
    assert screen_rules("If he leaves me I'll kill myself.").tier == "none"
    assert screen_rules("If he leaves me I'll kill myself. I mean it.").tier == "high"


# ------------------------------------------------------------- wordings of real forum posts

REAL_WORDINGS = [
    ("I'm still very suicidal and nothing helps.", "possible", "active_ideation"),
    ("The noise next door is making me suicidal.", "possible", "active_ideation"),
    ("I've had suicidal tendencies since the divorce.", "possible", "active_ideation"),
    ("Give me one reason why I shouldn't kill myself.", "possible", "active_ideation"),
    ("I want to commit suicide but I'm scared.", "possible", "active_ideation"),
    ("Some days I just want to curl up into a ball and die.", "possible", "passive_death_wish"),
    ("Honestly I wish my mom never had me.", "possible", "passive_death_wish"),
    ("Why should I go on living like this?", "possible", "passive_death_wish"),
    ("Everyone would be better off if I killed myself.", "possible", "passive_death_wish"),
    ("I genuinely don't care if I die.", "possible", "passive_death_wish"),
    ("I wish I could fall asleep tonight and never wake up.", "possible", "passive_death_wish"),
    ("I only deserve death.", "possible", "passive_death_wish"),
    ("I made a noose from a cable last night.", "high", "plan"),
    ("All I think about is finding ways to commit suicide.", "high", "plan"),
    ("Most days I want to blow my brains out.", "high", "method_ideation"),
    ("I'll end up throwing myself into traffic.", "high", "method_ideation"),
    ("I'm going to set myself on fire.", "high", "method_ideation"),
    ("I just tried committing suicide and stopped halfway.", "high", "attempt"),
    ("I had a suicide attempt four days ago.", "high", "attempt"),
    ("Every night ends with me crying and usually cutting myself.", "high", "recent_self_harm"),
    ("My self harm is getting out of control.", "high", "recent_self_harm"),
    ("It had been months since I cut, but tonight I did.", "high", "recent_self_harm"),
    ("I started cutting 2 weeks ago.", "high", "recent_self_harm"),
    ("I keep thinking about killing my self.", "possible", "active_ideation"),
    ("Today I was going to try and kill myself.", "high", "attempt"),
    ("It's been three months since I cut myself.", "high", "recent_self_harm"),
    ("I trust my gut. My gut is begging me to commit suicide", "possible", "active_ideation"),
    ("My brain keeps telling me to kill myself", "possible", "active_ideation"),
    ("Next thing I knew I was drowning myself in whiskey. Ended up trying to kill myself.", "high", "attempt"),
    ("I want to drown myself in the river.", "high", "method_ideation"),
    ("Tonight's the night I do it.", "high", "intent"),
    ("When I get overstimulated I bite my forearm till it bleeds. Been doing it since April.", "high",
     "recent_self_harm"),
    ("Will sodium nitrite kill me? Is it painful", "high", "plan"),
    ("hope l die soon hahahahahha", "possible", "passive_death_wish"),
    ("Lost the battle\n\nI'm sorry", "possible", "farewell"),
    ("This is it.\n\nIt was a fun ride while it lasted.", "possible", "farewell"),
    ("This is it. I have the pills ready.", "high", "method"),
    ("What is the least painful way to die?", "high", "plan"),
    ("is hanging too painful", "high", "plan"),
    ("How painful is drowning?", "high", "plan"),
    ("im going out for a nightwalk, not planning on coming back.", "possible", "no_return"),
    ("i want to fucking die", "possible", "passive_death_wish"),
    ("I want to die. RT @bob: same", "possible", "passive_death_wish"),
]

REAL_WORDING_TRAPS = [
    "I'm cutting myself off from people who drain me.",
    "I'd like to learn the warning signs of suicidal thinking in teenagers.",
    "My sister's illness causes her to become very suicidal at times.",
    "My friend thinks I'm actually suicidal, but I was joking.",
    "I want to be gone from this town by spring.",
    "I could leave this world of office politics behind and open a bakery.",
    "I can't wait to be gone for the summer.",
    "Being ignored at work is killing my self-esteem.",
    "I've been cutting 27mg concerta in half to make it last.",
    "I don't have extreme suicidal thoughts, I just feel flat.",
    "This one person is making me lose my sh*t before every meeting.",
    "I take 30mg XR every morning and crash by noon.",
    "Ive decided in advance Im not going to the after party.",
    "It's been 18 hours since I cut the shallot and my eye still burns.",
    "I can't trust myself with making those decisions.",
    "Then it was movies and TV shows I would drown myself in for hours and hours.",
    "Tonight is the night my ego will die.",
    "Tomorrow is the day we move house.",
    "My body wants me to die of exhaustion some days.",
    "Make the call to the VA help line, there are better meds out there. I've been doing it since 2009, through "
    "proper medication and counselling.",
    "I found a small bag of coke in my old clothes. I'm sorry, I've been doing it again for the last week.",
    "Can a cold kill me? I've had a fever for three days.",
    "Would it kill me to go out more often?",
    "This is it! Finally got the job offer today.",
    "Lost the battle with my landlord over the deposit, any advice?",
    "This is the end of an era: my last day at work.",
    "Is childbirth painful? I'm due in May.",
    "Is drowning a common cause of death in children?",
    "What's the best way to get to the airport?",
    "My flatmate moved out in March. Since she's obviously not coming back, can I rent her room?",
    "He went out for cigarettes and never came back when I was six.",
    "@AbigailBrooke29,With Jake :),RT @yxrx_x: I desperately and whole heartedly dont want to be here anymore.",
    'RT @no1bihet: One day ill kill myself and my suicide note will just be some shit like "my arms are kinda chubby"',
    "This is it, the week I find out whether I passed. " + "I have revised every night for a month. " * 5,
]


@pytest.mark.parametrize("text,tier,kind", REAL_WORDINGS)
def test_real_wordings(text, tier, kind):
    s = screen_rules(text)
    assert (s.tier, kind in {x.kind for x in s.signals}) == (tier, True), s.evidence()


@pytest.mark.parametrize("text", REAL_WORDING_TRAPS)
def test_real_wording_traps_stay_none(text):
    assert screen_rules(text).tier == "none", screen_rules(text).evidence()


def test_reviewing_model_may_clear_the_layer_and_worded_ideation_never_the_firm_rules():
    learned_only = Screen("possible", (Signal("learned", 0, 12, "score 2.10 >= -0.79 (crisis-learned-7)"),))
    learned_high = Screen("high", (Signal("passive_death_wish", 0, 17, "I wish I was dead"),
                                   Signal("learned_high", 0, 17, "high score 1.2 >= -0.58 (crisis-learned-7)")))
    ended = screen_rules("I was suicidal back in 2009; I got help and I'm in a good place now.")
    rule_high = screen_rules("I cut myself again last night.")
    past_attempt = screen_rules("I attempted suicide in 2011.")
    assert [s.rules_tier for s in (learned_only, learned_high, ended, rule_high, past_attempt)] == [
        "none", "possible", "possible", "high", "possible"]
    assert [s.firm_tier for s in (learned_only, learned_high, ended, rule_high, past_attempt)] == [
        "none", "none", "none", "high", "possible"]  # ideation in words alone is reviewable; the rest is firm
    texts = ["Work is hard.", "I wish I was dead.", ("I was suicidal back in 2009; I got help and I'm in a good "
                                                     "place now."), "I cut myself again last night.",
             "I attempted suicide in 2011."]
    screens = [learned_only, learned_high, ended, rule_high, past_attempt]
    fake = FakeBackend(reply=lambda req: '{"tier": "none", "reason": "no current wish to die"}')
    plain = asyncio.run(model_check(texts, fake, "m", screens=screens))
    assert [c.tier for c in plain] == ["possible", "high", "possible", "high", "possible"]
    assert not any(c.overruled for c in plain)
    over = asyncio.run(model_check(texts, fake, "m", screens=screens, overrule=True))
    assert [c.tier for c in over] == ["none", "none", "none", "high", "possible"]  # down to the firm rules, no further
    assert [c.overruled for c in over] == [True, True, True, False, False] and over[0].reason.startswith("no current")
    failing_check = asyncio.run(model_check(texts[:3], FakeBackend(replies=["no idea"] * 3), "m", screens=screens[:3],
                                            overrule=True))
    assert [c.tier for c in failing_check] == ["possible", "high", "possible"]  # a failed check lowers nothing
    assert not any(c.overruled for c in failing_check)


def test_cli_overrule_needs_a_model(tmp_path):
    src = _write_jsonl(tmp_path / "s.jsonl", [{"id": "a", "text": "Work is hard."}])
    res = _run(["screen", str(src), "--rules-only", "--check-overrules"])
    assert res.exit_code != 0 and "--check-overrules needs --check-model" in res.output


def test_evidence_is_the_same_in_every_process():
    # Trigger words are a set, whose order follows string hashing: a tie between two kinds on one span must not.
    import subprocess
    import sys

    code = ("import json; from psychocounsel.safety.screen import screen_rules; "
            "rows = [json.loads(l) for l in open('psychocounsel/data/cssrs_posts.jsonl')][:120]; "
            "print(json.dumps([[s.kind for s in screen_rules(r['text']).signals] for r in rows]))")
    root = Path(__file__).resolve().parents[2]
    runs = [subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, check=True,
                           env={"PYTHONHASHSEED": seed, "PATH": ""}).stdout for seed in ("1", "2", "3")]
    assert runs[0] == runs[1] == runs[2] and runs[0].startswith("[[")
