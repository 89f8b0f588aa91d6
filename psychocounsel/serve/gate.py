"""The crisis gate: every client message is screened before anything is drafted, and every draft re-checked.

    gate_message(text, locale) -> Gate          the screen, and for possible/high the risk panel's data
    safety_instruction(gate) -> str             what the policy model is told when drafting under risk
    check_draft(gate, draft, locale) -> Check   the reply checks on one draft; ``blocked`` needs an override
    gate_reply(gate, locale) -> str             the fixed reply the chat API gives when a draft is withheld

The screen and the checks are ``safety/screen.py`` (rules with evidence spans, then the learned layer, which
may raise a tier with its score as evidence) and ``safety/responses.py``; the
resources come from ``data/crisis_resources.yaml`` per locale. A triage aid for the clinician, never a
decision: the tool never contacts anyone and never sends anything to a client.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..safety.responses import RISK_TIERS, ResponseSafety, check_response, load_resources, rule_flags
from ..safety.screen import Screen, screen

# Questions in the spirit of the C-SSRS screener (Posner et al.; the Columbia Lighthouse Project publishes it
# for free use), worded for a clinician to adapt. Possible risk: its questions 1-2 and a safety check; high
# risk adds questions 3-6 (method, intent, plan, preparation or attempt).
POSSIBLE_QUESTIONS = (
    "In the past month, have you wished you were dead, or wished you could go to sleep and not wake up?",
    "Have you had any thoughts of killing yourself?",
    "Are you safe right now?",
)
HIGH_QUESTIONS = POSSIBLE_QUESTIONS + (
    "Have you been thinking about how you might do it?",
    "Have you had these thoughts and had some intention of acting on them?",
    "Have you started to work out the details of how to kill yourself, and do you intend to carry out this plan?",
    "Have you done anything, started to do anything, or prepared to do anything to end your life?",
)
# A concern (danger from someone else, another adult at risk) is not crisis risk in the client, but the reply
# still has to ask about safety and point to help.
CONCERN_QUESTIONS = (
    "Are you safe right now, and is anyone in your care in danger?",
    "Is there somewhere safe you could go, or someone who could be with you?",
    "Does the person you are worried about have someone with them now?",
)


@dataclass(frozen=True)
class Gate:
    """One screened message: the tier, and whether the risk panel and the safety instruction apply."""

    screen: Screen
    locale: str

    @property
    def tier(self) -> str:
        return self.screen.tier

    @property
    def at_risk(self) -> bool:
        """The panel and the safety instruction apply: a risk tier, or a concern the screen found."""
        return self.screen.tier in RISK_TIERS or bool(self.screen.concerns)

    def panel(self) -> dict[str, Any] | None:
        """The risk panel's data (None when the screen found nothing): tier, evidence spans, questions,
        resources. A concern alone shows tier none with its own questions."""
        if not self.at_risk:
            return None
        questions = {"high": HIGH_QUESTIONS, "possible": POSSIBLE_QUESTIONS}.get(self.tier, CONCERN_QUESTIONS)
        return {"tier": self.tier, "rules_version": self.screen.rules_version,
                "learned_version": self.screen.learned_version,
                "evidence": [{"kind": s.kind, "start": s.start, "end": s.end, "text": s.text}
                             for s in self.screen.signals],
                "concerns": sorted({s.kind for s in self.screen.concerns}),
                "questions": list(questions),
                "resources": resource_block(self.locale),
                "note": "A triage aid (written rules and a learned layer), not a clinical decision. This tool contacts "
                        "no one."}


def resource_block(locale: str) -> list[dict[str, Any]]:
    """The locale's crisis resources as shown on the panel (data/crisis_resources.yaml)."""
    return [{"name": r.name, "how": list(r.how), "number": r.number, "url": r.url, "keyword": r.keyword,
             "emergency": r.emergency} for r in load_resources()[locale]]


def gate_message(text: str, locale: str, learned: bool = True) -> Gate:
    return Gate(screen(text, learned=learned), locale)


def _how(r: Any) -> str:
    if r.url and not r.number:
        return f"{r.name} at {r.url}"
    verbs = " or ".join(r.how) if r.how else "call"
    keyword = f" {r.keyword} to" if r.keyword else ""
    return f"{verbs}{keyword} {r.number} ({r.name})"


def _first_lines(locale: str) -> tuple[Any, Any | None]:
    rs = load_resources()[locale]
    line = next((r for r in rs if not r.emergency and r.number), rs[0])
    emergency = next((r for r in rs if r.emergency), None)
    return line, emergency


def safety_instruction(gate: Gate) -> str:
    """The system instruction added when the message shows risk; empty when it does not."""
    if not gate.at_risk:
        return ""
    line, emergency = _first_lines(gate.locale)
    kinds = ", ".join(sorted({s.kind.replace("_", " ") for s in gate.screen.signals})) or "risk"
    help_now = _how(line) + (f", or call {emergency.number} in an emergency" if emergency else "")
    if gate.tier not in RISK_TIERS:
        return (f"SAFETY FIRST. The client's message describes a danger to someone's safety ({kinds}). In this "
                "reply: name what they described, in plain and caring words; ask directly whether they, and anyone "
                f"in their care, are safe right now; point them to help now: {help_now}. Do not diagnose.")
    return (f"SAFETY FIRST. The client's message shows {gate.tier} risk of suicide or self-harm ({kinds}). "
            "In this reply: name what they said about wanting to die or hurting themselves, in plain and caring "
            "words; ask directly whether they are safe right now and whether they have thought about how; urge "
            f"them to get help now: {help_now}. Never describe methods, doses or means. Do not diagnose.")


@dataclass(frozen=True)
class Check:
    """The reply checks on one draft. ``blocked``: it fails a safety check and cannot be approved silently."""

    safety: ResponseSafety
    extra: tuple[tuple[str, str], ...] = field(default=())  # (kind, words): dismissing or moralising

    @property
    def blocked(self) -> bool:
        return not self.safety.adequate

    def flags(self) -> list[dict[str, Any]]:
        out = [{"kind": f.kind, "severity": f.severity, "text": f.text, "detail": f.detail} for f in self.safety.flags]
        out += [{"kind": f"missing_{m}", "severity": "high", "text": "",
                 "detail": "a reply to a client at risk must do this"} for m in self.safety.missing]
        out += [{"kind": k, "severity": "medium", "text": t, "detail": ""} for k, t in self.extra]
        return out


def check_draft(gate: Gate, draft: str) -> Check:
    return Check(check_response(gate.screen, draft, gate.locale), tuple(rule_flags(draft)))


def gate_reply(gate: Gate, kinds: list[str] | None = None) -> str:
    """The reply the chat API returns instead of a draft the checks withheld. On a risk message it does what a
    reply must (names the risk, asks about safety, points to help now); otherwise it says a clinician must
    write this one. Tests check it passes the reply checks for every locale."""
    if not gate.at_risk:
        return ("This draft was withheld by the reply checks (" + ", ".join(kinds or ["unsafe"]) + "). "
                "A clinician should write this reply.")
    line, emergency = _first_lines(gate.locale)
    urgent = f" If you are in danger right now, call {emergency.number}." if emergency else ""
    return ("I'm really glad you told me this, and I'm sorry you're carrying so much. When you talk about not "
            "wanting to be alive, I take that seriously. Are you safe right now? Have you thought about how you "
            f"might end your life? You don't have to face this alone: please reach out now, {_how(line)}.{urgent}")
