"""Crisis screen: tag a client speech none / possible / high risk of self-harm, with the evidence spans.

    screen(text) -> Screen                          the rules (normalised text, compiled regexes, ~9.7k speeches/s
                                                   on one core), then the learned layer of learned.py (~20/s,
                                                   raise-only); learned=False: the rules alone
    screen_many(texts)                              the same for many texts (the learned layer batches)
    screen_rules(text)                              the rules alone
    check_response(screen, response) -> ResponseSafety    does a reply acknowledge the risk and point to help?
    find_wrong_crisis_numbers(text)                 retired crisis numbers a reply cites (1-800-273-8255, ...)
    await model_check(texts, backend, model)        optional LLM second opinion; a bad reply is a failure

A triage aid in the spirit of the C-SSRS screener, never a clinical decision (docs/CRISIS_SCREEN.md).
Tiers follow the screener's triage: a wish to be dead or suicidal thoughts without method, plan or intent
(its questions 1-2) are ``possible``; a method, intent, plan, preparation, or an attempt or self-harm that
is recent or of unknown date (questions 3-6) are ``high``. A dependent (a child) reported to say they want
to die is ``possible``, as the ASQ (NIMH's paediatric screen) treats it: a positive screen that needs an
assessment soon, not an emergency; a dependent's recent self-harm or attempt is ``high``, because the
client is the person who must act now. Another adult's suicidal talk and danger from someone else are
concerns: signals without a tier (``Screen.concerns``), whose reply must still point to help.

How a rule fires: a pattern matches; then its clause is checked for negation ("I'm not suicidal"),
hypotheticals ("if someone wanted to die"), idioms ("die of embarrassment", "end things with him"),
whose words they are (quoted speech is attributed to its speaker) and when it happened ("when I was 15").
Third-person patterns ("she wants to die", "he tried to kill himself") go to the nearest person named
before them: a dependent, another person, or nobody in particular (then nothing fires); a completed
suicide ("my friend killed himself") is grief, not a risk signal here.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Literal

from .learned import LearnedLayer, load_layer
from .normalise import normalise, to_original
from .rules import (
    AGES,
    CLAUSE_BREAK,
    DEPENDENT,
    DOING_IT,
    END_WITH,
    HYP_EXCEPT,
    HYPOTHETICAL,
    ICASE,
    IT_REACH_CHARS,
    NEGATION,
    NOT_NEGATION,
    PAST,
    PERSON,
    QUOTE,
    RECENT,
    RELATIONSHIP,
    SELF_HARM_CONTEXT,
    SPEAKER,
    SUBJECT,
    SUBJECT3,
    SUBJECTLESS,
    TOLD_TO,
    TRIGGER_WORDS,
    TRIGGERS,
    UNTIL_NOW,
    WORD,
)

RULES_VERSION = "crisis-rules-15"
Tier = Literal["none", "possible", "high"]
TIERS: tuple[Tier, ...] = ("none", "possible", "high")
TIER_RANK = {t: i for i, t in enumerate(TIERS)}

# Signal kind -> the tier it gives on its own (see the module docstring for why).
KIND_TIER: dict[str, Tier] = {
    "passive_death_wish": "possible", "active_ideation": "possible", "self_harm_thoughts": "possible",
    "past_attempt": "possible", "past_self_harm": "possible", "dependent_at_risk": "possible",
    # A short message that opens with a farewell ("Lost the battle. I'm sorry"), or going somewhere "and not
    # coming back": possible, for a reader to judge.
    "farewell": "possible", "no_return": "possible",
    # Concerns, not risk (docs/CRISIS_LABELS.md): another adult's suicidal talk and danger from someone else
    # fall outside the crisis definition (the speaker, or someone in their care, at risk of suicide or
    # self-harm, or threatening someone). They stay as evidence, and a reply must still point to help.
    "other_at_risk": "none", "harm_from_others": "none",
    "method": "high", "method_ideation": "high", "plan": "high", "command_hallucination": "high", "preparation": "high", "intent": "high",
    "attempt": "high", "recent_self_harm": "high", "dependent_harm": "high",
    # docs/CRISIS_LABELS.md, "Refinements": an urge to return to self-harm is high; a threat to someone
    # else is high with intent, plan or means, possible as urges without them.
    "self_harm_urge": "high", "harm_to_others": "high", "harm_to_others_urge": "possible",
    # The learned layer's scores at or above their thresholds (learned.py): raise a tier, never lower one.
    "learned": "possible", "learned_high": "high",
}
CONCERN_KINDS = frozenset(k for k, t in KIND_TIER.items() if t == "none")
LEARNED_KINDS = frozenset({"learned", "learned_high"})
# Rule kinds a capable reviewing model may clear, besides the learned layer's raises: suicidal thoughts, a wish
# to die or a farewell read from words alone, at the `possible` tier. The rules cannot tell when they were ("I was
# suicidal for 27 years, now I coach others"), whose they are in talk about suicide, or what a short "This is it"
# ends; attempts, self-harm, methods, plans, intent and every other rule signal stand whatever the model says
# (docs/CRISIS_SCREEN.md, "Twelfth score").
REVIEWABLE_KINDS = frozenset({"active_ideation", "passive_death_wish", "farewell", "no_return"})
# Kinds that only count next to the client's own ideation: alone they are everyday words ("pills",
# "I gave my guitar to a friend", "I have a plan").
_SUPPORTING = {"method", "preparation"}
_OWN_IDEATION = {"passive_death_wish", "active_ideation", "self_harm_thoughts", "intent", "plan", "attempt",
                 "command_hallucination", "method_ideation", "farewell", "no_return"}
# A plan said only as a decision ("I decided", "made my mind up", "picked the date") counts next to other
# ideation in the speech, as method and preparation do: alone it is everyday speech ("I decided to meet her"
# fired high on 6 of 411 real counseling questions).
_VAGUE_PLAN = re.compile(r"(?:I(?:'ve| have| am)? )?decided|(?:made|make) my mind up|(?:picked|chosen|chose|set) (?:a|the) "
                         r"(?:date|day)", re.IGNORECASE)
# A farewell counts only as the whole of a short message (its title and a line or two).
FAREWELL_MAX_CHARS = 200
# How far a method mention may sit from the ideation it supports: about two sentences.
METHOD_WINDOW_CHARS = 200
# A rule's regex runs only in a window around each of its trigger words: (characters before the word,
# characters after it), measured on the rule's longest patterns ("wouldn't be the worst thing if a lorry
# hit me" starts 45 characters before "hit"; "researched how many ... pills" ends ~90 after "researched")
# plus a margin. Scanning 80-150 characters instead of the whole speech makes the screen ~3x faster.
_REACH = {"command_hallucination": (10, 70), "intent": (45, 45), "plan": (45, 100), "attempt": (35, 60),
          "self_harm": (45, 40), "self_harm_thoughts": (45, 20), "active_ideation": (45, 45), "passive_death_wish": (65, 50),
          "method": (25, 30), "preparation": (30, 45), "harm_from_others": (30, 45), "ideation3": (45, 25),
          "harm3": (35, 25), "self_harm_urge": (60, 40), "method_ideation": (30, 110), "harm_to_others": (40, 100), "harm_to_others_urge": (40, 50),
          "farewell": (0, 30), "no_return": (75, 15)}
# A conditional threat said to be meant ("If she leaves me I'll kill myself. I mean it") is intent, not a
# hypothetical (docs/CRISIS_LABELS.md, high rule 2): the words that say so, within the next sentence or two.
_MEANT = re.compile(r"\b(?:I mean it|I'm serious|I am serious|not joking|I'm not kidding|serious question|"
                    r"(?:I've|I have) thought about how|(?:I've|I have) got the \w+)\b", ICASE)
_MEANT_REACH_CHARS = 120
_RETWEET = re.compile(r"\bRT @\w+:")
_CONDITIONAL_KINDS = {"intent", "harm_to_others", "plan"}
# A wish whose words name the client ("better off if I wasn't here") is the client's, whoever "they" are.
_FIRST_PERSON_WISH = re.compile(r"\b(?:without me|if I|I)\b")
# An urge "to do it again" is about self-harm only where the speech speaks of self-harm somewhere.
_SELF_HARM_WORDS = re.compile(r"\b(?:cut\w*|burn\w*|self[- ]?harm\w*|hurt(?:ing)? myself|blade|relaps\w*|clean|"
                              r"scratch\w*|punch\w*|overdos\w*|hit(?:ting)? myself|bang\w* my head)\b", ICASE)


@dataclass(frozen=True)
class Signal:
    kind: str
    start: int
    end: int
    text: str


def top_tier(signals: Iterable[Signal]) -> Tier:
    """The highest tier the signals give on their own (``KIND_TIER``); none for no signal."""
    return max((KIND_TIER[s.kind] for s in signals), key=TIER_RANK.__getitem__, default="none")


@dataclass(frozen=True)
class Screen:
    tier: Tier
    signals: tuple[Signal, ...]
    rules_version: str = RULES_VERSION
    learned_version: str | None = None  # the learned layer that also read the text (None: the rules alone)

    @property
    def rules_tier(self) -> Tier:
        """The tier the rules' own evidence gives, without the learned layer's raises."""
        return top_tier(s for s in self.signals if s.kind not in LEARNED_KINDS)

    @property
    def firm_tier(self) -> Tier:
        """The tier of the rules' evidence that a reviewing model may not clear: every rule signal but ideation
        or a farewell read from words alone (``REVIEWABLE_KINDS``)."""
        return top_tier(s for s in self.signals if s.kind not in LEARNED_KINDS | REVIEWABLE_KINDS)

    @property
    def concerns(self) -> tuple[Signal, ...]:
        """Signals that are not crisis risk but still need a reply that points to help (``CONCERN_KINDS``)."""
        return tuple(s for s in self.signals if s.kind in CONCERN_KINDS)

    def evidence(self) -> str:
        """The spans, joined, for reports: ``kind: "text" | ...``."""
        return " | ".join(f'{s.kind}: "{s.text}"' for s in self.signals)

    def to_dict(self) -> dict:
        return {"tier": self.tier, "signals": [asdict(s) for s in self.signals], "evidence": self.evidence(),
                "rules_version": self.rules_version, "learned_version": self.learned_version}


# ---------------------------------------------------------------------------------------------- core


def _clause_before(text: str, start: int) -> str:
    """The clause a match sits in, up to the match: negation and 'if' only reach that far."""
    window = text[max(0, start - 120):start]
    last = None
    for last in CLAUSE_BREAK.finditer(window):
        pass
    return window[last.end():] if last else window


def _sentence_of(text: str, start: int, end: int) -> tuple[int, int]:
    s = max(text.rfind(c, 0, start) for c in ".!?\n") + 1
    ends = [i for i in (text.find(c, end) for c in ".!?\n") if i != -1]
    return s, (min(ends) + 1 if ends else len(text))


def _negated(text: str, start: int, end: int, clause: str) -> bool:
    if not NEGATION.search(clause) or NOT_NEGATION.search(clause):
        return False
    return not UNTIL_NOW.search(text[end:end + 60])  # "never thought about it until now" is not a denial


def _hypothetical(clause: str) -> bool:
    return bool(HYPOTHETICAL.search(clause)) and not HYP_EXCEPT.search(clause)


def _other_subject(clause: str) -> str | None:
    """'dependent' | 'other' | 'generic' | 'pronoun' when the clause's last subject is someone else, else None."""
    last = None
    for last in SUBJECT3.finditer(clause):
        pass
    if last is None or last.group(0).lower() in ("i", "i'm", "i've", "i'd", "me", "my"):
        return None
    if last.group(1):
        return "pronoun"
    noun = (last.group(3) or "").lower()
    if last.group(2).lower() in ("a", "an", "the"):
        return "generic" if noun not in DEPENDENT else "dependent"
    return "dependent" if noun in DEPENDENT else "other"


def _self_subject(text: str, start: int, clause: str) -> bool:
    """Whether the nearest subject before a third-person pattern is the client ("I wanted to die")."""
    last = None
    for last in SUBJECT.finditer(clause or text[_sentence_of(text, start, start)[0]:start]):
        pass
    return last is not None and last.group(0).lower() in ("i", "i'm", "i've", "i'd", "i'll", "me")


def _when(text: str, start: int, end: int) -> str:
    """'recent' | 'past' from the words around a behaviour; unknown counts as recent (the screener asks,
    we cannot, so the safer reading wins)."""
    s, e = _sentence_of(text, start, end)
    sentence = text[s:e]
    if RECENT.search(sentence):
        return "recent"
    return "past" if PAST.search(sentence) else "recent"


def _quote_at(quotes: list[tuple[int, int]], pos: int) -> tuple[int, int] | None:
    for qs, qe in quotes:
        if qs <= pos < qe:
            return qs, qe
    return None


def _quotes(text: str) -> list[tuple[int, int]]:
    out = []
    if '"' in text or "'" in text or "“" in text or "‘" in text:
        out = [(m.start(), m.end()) for m in QUOTE.finditer(text)]
    retweet = _RETWEET.search(text) if "RT @" in text else None
    if retweet:  # what follows "RT @user:" is someone else's words, to the end
        out.append((retweet.end(), len(text)))
    return out


def _who(text: str, before: int) -> str:
    """'dependent' | 'other' | 'generic' | 'none': the nearest person named before ``before`` (~3 sentences)."""
    last = None
    for last in PERSON.finditer(text, max(0, before - 400), before):
        pass
    if last is None:
        return "none"
    if last.group(2):
        return "generic"
    if last.group(3) or last.group(4):
        age = (last.group(3) or last.group(4)).lower()
        return "dependent" if age in AGES or (age.isdigit() and int(age) < 18) else "other"
    return "dependent" if last.group(1).lower() in DEPENDENT else "other"


def _speaker(text: str, qs: int, qe: int) -> str:
    """Who says a quote: 'self' | 'dependent' | 'other' | 'generic' | 'none'."""
    s, _ = _sentence_of(text, max(qs - 1, 0), qs)
    before = text[max(0, s - 200):qs]
    after = text[qe:qe + 40]
    m = None
    for m in SPEAKER.finditer(before):
        pass
    if m is None:
        m = SPEAKER.match(after.lstrip(" ,"))
    if m is None:
        return "none"
    who = m.group(1)
    low = who.lower()
    if low == "i":
        return "self"
    if low in ("people", "everyone", "everybody", "someone", "somebody", "you") or low.startswith("the "):
        return "generic"
    if low.startswith("my "):
        noun = low.split()[-1].rstrip("s")
        return "dependent" if noun in DEPENDENT else "other"
    return _who(text, qs)


def _third(kind_from: str, text: str, m: re.Match, who: str) -> str | None:
    """The signal kind for someone else's words or acts, or None (grief, history, nobody in particular)."""
    if who in ("generic", "none"):
        return None
    when = _when(text, m.start(), m.end())
    if when == "past":
        return None  # other people's past: a risk factor for the client, not a current signal
    harm = kind_from in ("harm3", "attempt", "self_harm", "plan", "intent", "method")
    if who == "dependent":
        return "dependent_harm" if harm else "dependent_at_risk"
    return "other_at_risk"


def _idiom(kind: str, text: str, m: re.Match) -> bool:
    if kind == "self_harm" and DOING_IT.search(m.group(0)) and not SELF_HARM_CONTEXT.search(
            text, max(0, m.start() - IT_REACH_CHARS), m.start()):
        return True  # "I've been doing it since 2009", of medication and counselling: "it" is not self-harm
    if kind == "active_ideation" and TOLD_TO.search(text, max(0, m.start() - 60), m.start()):
        return True  # "my boss said I should just kill myself": someone else's cruelty, not the client's wish
    if kind in ("active_ideation", "passive_death_wish", "intent") and re.search(r"\b(?:end|ending)\b", m.group(0), ICASE):
        if END_WITH.match(text, m.end()):
            return True  # "ending things with Sam"
        s, e = _sentence_of(text, m.start(), m.end())
        prev_s, _ = _sentence_of(text, max(s - 2, 0), max(s - 2, 0))
        context = text[prev_s:e]
        strong = re.search(r"\b(?:die|dead|suicid\w*|kill|life|alive|pills|better off without me)\b", context, ICASE)
        if RELATIONSHIP.search(context) and not strong:
            return True  # "I want to end things", said about a partner
    return False


def _positions(low: str, word: str) -> list[int]:
    """Start of each whole-word occurrence of ``word`` in ``low``."""
    out, n, i = [], len(word), low.find(word)
    while i != -1:
        if (i == 0 or not low[i - 1].isalpha()) and (i + n == len(low) or not low[i + n].isalpha()):
            out.append(i)
        i = low.find(word, i + n)
    return out


def _windows(positions: list[int], before: int, after: int) -> list[tuple[int, int]]:
    """Merged text windows around trigger words. Running a rule's regex only there, not over the whole
    speech, is what makes the screen fast: most speeches have few trigger words or none."""
    merged: list[list[int]] = []
    for p in positions:  # already in text order
        lo, hi = max(0, p - before), p + after
        if merged and lo <= merged[-1][1]:
            merged[-1][1] = hi
        else:
            merged.append([lo, hi])
    return [(lo, hi) for lo, hi in merged]


def screen(text: str, learned: bool = True) -> Screen:
    """Tier and evidence for one client speech: the rules (see the module docstring), then, when
    ``learned``, the shipped learned layer (learned.py), which may raise ``none`` to ``possible`` and ``possible``
    to ``high`` but never lowers. Screening many texts, use ``screen_many``: the learned layer batches."""
    return screen_many([text], learned=learned)[0]


def screen_rules(text: str) -> Screen:
    """The rules alone: normalised text, compiled patterns, evidence spans in the client's own words."""
    norm, edits = normalise(text)
    found = _rule_signals(norm)
    if edits:  # spans back into the client's own words
        found = [Signal(f.kind, *span, text[slice(*span)]) for f in found
                 for span in [to_original(edits, f.start, f.end)]]
    else:  # same offsets; the quote is the client's typography, not ours
        found = [Signal(f.kind, f.start, f.end, text[f.start:f.end]) for f in found]
    return _finish(found, text, norm)


def screen_many(texts: Iterable[str], learned: bool = True, checked: bool = False) -> list[Screen]:
    """``screen`` for many texts; the learned layer reads every text the rules did not screen high, in one batch.
    ``checked``: a capable model will review every flag the learned layer raises (``model_check`` with
    ``overrule``), so the layer flags at its lower ``checked_threshold``, for recall."""
    texts = list(texts)
    rule_screens = [screen_rules(t) for t in texts]
    layer = load_layer() if learned else None
    if layer is None:
        return rule_screens
    return raise_tiers(texts, rule_screens, learned_scores(texts, rule_screens, layer), layer, checked)


def learned_scores(texts: list[str], rule_screens: list[Screen],
                   layer: LearnedLayer) -> list[tuple[float, float] | None]:
    """The layer's (risk, high) scores of each text the rules did not screen high; None for the others, which
    no score can raise. The slow step: ``raise_tiers`` applies any threshold to the scores afterwards."""
    todo = [i for i, s in enumerate(rule_screens) if s.tier != "high"]
    risk, high = layer.scores([texts[i] for i in todo])
    out: list[tuple[float, float] | None] = [None] * len(texts)
    for i, r, h in zip(todo, risk, high):
        out[i] = (float(r), float(h))
    return out


def raise_tiers(texts: list[str], rule_screens: list[Screen], scores: list[tuple[float, float] | None],
                layer: LearnedLayer, checked: bool = False) -> list[Screen]:
    """The rules' screens with the learned layer's raises: ``none`` to ``possible`` at the risk threshold (the
    checked one with ``checked``), then ``possible`` to ``high`` at the high threshold. Never lowers a tier."""
    t, which = (layer.checked_threshold, ", checked threshold") if checked else (layer.threshold, "")
    out = []
    for text, s, score in zip(texts, rule_screens, scores, strict=True):
        tier, added = s.tier, ()
        if score is not None:
            r, h = score
            if tier == "none" and r >= t:
                tier, added = "possible", (Signal("learned", 0, len(text),
                                                  f"score {r:.2f} >= {t:.2f} ({layer.version}{which})"),)
            if tier == "possible" and h >= layer.high_threshold:  # at risk, and the high-tier probe says high
                tier, added = "high", added + (Signal("learned_high", 0, len(text),
                                                      f"high score {h:.2f} >= {layer.high_threshold:.2f} "
                                                      f"({layer.version})"),)
        out.append(Screen(tier=tier, signals=s.signals + added, learned_version=layer.version))
    return out


def _rule_signals(text: str) -> list[Signal]:
    low = text.lower()
    ctx = _Context(text)
    found: list[Signal] = []
    seen: set[tuple[str, int, int]] = set()
    # A farewell counts only as the whole of a short message: "This is it" opening a long post is a story's turn
    long_text = len(text.strip()) > FAREWELL_MAX_CHARS
    for w in TRIGGER_WORDS.intersection(WORD.findall(low)):  # set work in C: most words are no trigger
        positions = _positions(low, w)
        for kind, rx, third in TRIGGERS[w]:
            if kind == "farewell" and long_text:
                continue
            for lo, hi in _windows(positions, *_REACH[kind]):
                for m in rx.finditer(text, lo, min(hi, len(text))):
                    if (kind, m.start(), m.end()) not in seen:
                        seen.add((kind, m.start(), m.end()))
                        sig = _signal(kind, third, m, ctx)
                        if sig is not None:
                            found.append(sig)
    return found


class _Context:
    """The speech, and its quotes found once, on first need."""

    def __init__(self, text: str):
        self.text = text
        self._quotes: list[tuple[int, int]] | None = None

    @property
    def quotes(self) -> list[tuple[int, int]]:
        if self._quotes is None:
            self._quotes = _quotes(self.text)
        return self._quotes


def _signal(kind: str, third: bool, m: re.Match, ctx: _Context) -> Signal | None:
    """The signal one match stands for, or None when negated, hypothetical, an idiom or nobody's risk."""
    text = ctx.text
    start, end = m.start(), m.end()
    if kind == "preparation":  # "I've decided." is matched with the sentence break before it
        start += len(m.group(0)) - len(m.group(0).lstrip(".!? "))
    clause = _clause_before(text, start)
    if _negated(text, start, end, clause):
        return None
    if _hypothetical(clause) and not (kind in _CONDITIONAL_KINDS and _MEANT.search(text, end, end + _MEANT_REACH_CHARS)):
        return None
    if third and _self_subject(text, start, clause):
        return None  # "I wanted to die" is the client's: the first-person rules have it
    if not third and kind in SUBJECTLESS and m.group(0)[:1] not in "Ii" and not _FIRST_PERSON_WISH.search(m.group(0)):
        other = _other_subject(clause)  # "a caller talked about wanting to die" is not the client's wish
        if other is not None:
            out = _third(kind, text, m, other if other != "pronoun" else _who(text, start))
            return Signal(out, start, end, text[start:end]) if out else None
    if _idiom(kind, text, m):
        return None
    who = "self"
    if third:
        who = _who(text, start)
    else:
        q = _quote_at(ctx.quotes, start)
        if q is not None:
            who = _speaker(text, *q)
            if who == "none":
                who = "generic"  # an unattributed quote (a song, a saying) is not the client's
    out = _classify(kind, text, m, who)
    return Signal(out, start, end, text[start:end]) if out else None


def _classify(kind: str, text: str, m: re.Match, who: str) -> str | None:
    if who != "self":
        if kind in ("harm_from_others", "preparation", "method"):
            return None
        return _third(kind, text, m, who)
    if kind == "attempt":
        return "attempt" if _when(text, m.start(), m.end()) == "recent" else "past_attempt"
    if kind == "self_harm":
        return "recent_self_harm" if _when(text, m.start(), m.end()) == "recent" else "past_self_harm"
    if kind == "harm_from_others" and PAST.search(text[slice(*_sentence_of(text, m.start(), m.end()))]):
        return None  # abuse in the past is trauma history, not present danger
    return kind


def _vague_plan(s: Signal) -> bool:
    return s.kind == "plan" and bool(_VAGUE_PLAN.fullmatch(s.text.strip()))


def _finish(found: list[Signal], text: str, norm: str | None = None) -> Screen:
    own = [s for s in found if s.kind in _OWN_IDEATION and not _vague_plan(s)]
    kept: list[Signal] = []
    urge_context = None
    for s in found:
        if s.kind == "self_harm_urge":
            if urge_context is None:
                urge_context = bool(_SELF_HARM_WORDS.search(norm or text))
            if not urge_context:
                continue
        if _vague_plan(s) and not own:
            continue
        if s.kind in _SUPPORTING:
            if s.kind == "method" and not any(abs(s.start - o.start) <= METHOD_WINDOW_CHARS and s is not o for o in own):
                continue
            if s.kind == "preparation" and not own:
                continue
        kept.append(s)
    # The kind last: ties between kinds on one span resolve the same way in every process (trigger words are a
    # set, and string hashing differs between processes).
    kept.sort(key=lambda s: (s.start, -(s.end - s.start), -TIER_RANK[KIND_TIER[s.kind]], s.kind))
    out: list[Signal] = []
    for s in kept:  # overlapping spans are one piece of evidence ("kill myself" in "going to kill myself")
        if out and s.start < out[-1].end:
            if s.kind == out[-1].kind:  # "go to sleep hoping" + "hoping I won't wake up": their union
                lo, hi = out[-1].start, max(out[-1].end, s.end)
                out[-1] = Signal(s.kind, lo, hi, text[lo:hi])
                continue
            a, b = ((TIER_RANK[KIND_TIER[x.kind]], x.kind not in _SUPPORTING, x.end - x.start) for x in (s, out[-1]))
            if a > b:
                out[-1] = s
            continue
        out.append(s)
    tier = top_tier(out)
    return Screen(tier=tier, signals=tuple(out))


