"""Crisis screen: tag a client speech none / possible / high risk of self-harm, with the evidence spans.

    screen(text) -> Screen(tier, signals)          deterministic rules, compiled regexes (>10k speeches/s, one core)
    check_response(screen, response) -> ResponseSafety    does a reply acknowledge the risk and point to help?
    find_wrong_crisis_numbers(text)                 retired crisis numbers a reply cites (1-800-273-8255, ...)
    await model_check(texts, backend, model)        optional LLM second opinion; a bad reply is a failure

A triage aid in the spirit of the C-SSRS screener, never a clinical decision (docs/CRISIS_SCREEN.md).
Tiers follow the screener's triage: a wish to be dead or suicidal thoughts without method, plan or intent
(its questions 1-2) are ``possible``; a method, intent, plan, preparation, or an attempt or self-harm that
is recent or of unknown date (questions 3-6) are ``high``. A dependent (a child) reported to say they want
to die is ``possible``, as the ASQ (NIMH's paediatric screen) treats it: a positive screen that needs an
assessment soon, not an emergency; a dependent's recent self-harm or attempt is ``high``, because the
client is the person who must act now.

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

RULES_VERSION = "crisis-rules-1"
Tier = Literal["none", "possible", "high"]
TIERS: tuple[Tier, ...] = ("none", "possible", "high")
_RANK = {t: i for i, t in enumerate(TIERS)}

# Signal kind -> the tier it gives on its own (see the module docstring for why).
KIND_TIER: dict[str, Tier] = {
    "passive_death_wish": "possible", "active_ideation": "possible", "self_harm_thoughts": "possible",
    "past_attempt": "possible", "past_self_harm": "possible", "dependent_at_risk": "possible",
    "other_at_risk": "possible", "harm_from_others": "possible",
    "method": "high", "plan": "high", "command_hallucination": "high", "preparation": "high", "intent": "high",
    "attempt": "high", "recent_self_harm": "high", "dependent_harm": "high",
}
# Kinds that only count next to the client's own ideation: alone they are everyday words ("pills",
# "I gave my guitar to a friend", "I have a plan").
_SUPPORTING = {"method", "preparation"}
_OWN_IDEATION = {"passive_death_wish", "active_ideation", "self_harm_thoughts", "intent", "plan", "attempt",
                 "command_hallucination"}
# How far a method mention may sit from the ideation it supports: about two sentences.
METHOD_WINDOW_CHARS = 200
# A rule's regex runs only in a window around each of its trigger words: (characters before the word,
# characters after it), measured on the rule's longest patterns ("wouldn't be the worst thing if a lorry
# hit me" starts 45 characters before "hit"; "researched how many ... pills" ends ~90 after "researched")
# plus a margin. Scanning 80-150 characters instead of the whole speech makes the screen ~3x faster.
_REACH = {"command_hallucination": (10, 70), "intent": (45, 45), "plan": (45, 100), "attempt": (35, 60),
          "self_harm": (45, 40), "self_harm_thoughts": (45, 20), "active_ideation": (45, 45), "passive_death_wish": (65, 50),
          "method": (25, 30), "preparation": (30, 45), "harm_from_others": (30, 45), "ideation3": (45, 25),
          "harm3": (35, 25)}


@dataclass(frozen=True)
class Signal:
    kind: str
    start: int
    end: int
    text: str


@dataclass(frozen=True)
class Screen:
    tier: Tier
    signals: tuple[Signal, ...]
    rules_version: str = RULES_VERSION

    def evidence(self) -> str:
        """The spans, joined, for reports: ``kind: "text" | ...``."""
        return " | ".join(f'{s.kind}: "{s.text}"' for s in self.signals)

    def to_dict(self) -> dict:
        return {"tier": self.tier, "signals": [asdict(s) for s in self.signals], "evidence": self.evidence(),
                "rules_version": self.rules_version}


# ------------------------------------------------------------------------------------------ patterns
_I = re.IGNORECASE
_REFL3 = r"(?:himself|herself|themselves|themself)"
_PRO3 = r"(?:he|she|they)"


def _rx(*alts: str) -> tuple[str, ...]:
    """A rule's alternatives; compiled per trigger word below, so a window runs only the relevant ones."""
    return alts


# (kind, regex, trigger words): a regex runs only in a window around one of its trigger words (see _windows)
_SELF_RULES: list[tuple[str, tuple[str, ...], str]] = [
    ("intent", _rx(
        r"\bI(?:'m| am)? (?:going to|gonna|will|'ll) (?:kill myself|end (?:it all|my life)|take my (?:own )?life)\b",
        r"\bI(?:'m| am)? (?:going to|gonna|will|'ll) end it (?:tonight|today|tomorrow|this weekend|soon|this week)\b",
        r"\b(?:I(?:'ve| have)?|already|has) decided to (?:kill myself|end (?:it|my life|things)|die|take my (?:own )?life)\b",
        r"\b(?:tonight|tomorrow|this weekend)(?: is| will be|'s) the (?:night|day)\b",
        r"\b(?:scared|afraid|frightened|terrified) (?:of )?what I (?:might|could|will|'ll|would) do\b(?! to (?:him|her|them|someone|somebody|my (?!self)))",
        r"\b(?:don't|do not|can't|cannot) trust myself\b(?! (?:with money|around (?:food|cake|sweets)|to (?:remember|cook|drive)))",
        r"\b(?:can't|cannot|don't think I can|not sure I can) keep myself safe\b",
        r"\b(?:going to|gonna|will|'ll) act on (?:it|them|the thoughts|these thoughts)\b"),
     "myself end life decided tonight tomorrow weekend scared afraid frightened terrified act"),
    ("command_hallucination", _rx(
        r"\bvoices? (?:\w+ ){0,2}?(?:tell|tells|telling|told|keeps? telling|say|says|saying) me to (?:kill|hurt|harm|cut|end) (?:myself|my life|it)\b"),
     "voice voices"),
    ("plan", _rx(
        r"\b(?:plan|planning|planned) (?:to|how to|how I(?:'d| would| will|'ll)) (?:kill myself|end (?:it|my life|things)|die|take my (?:own )?life)\b",
        r"\bsuicide (?:plan|note)s?\b",
        r"\b(?:wrote|written|writing|write) (?:a |my )?(?:suicide|goodbye) (?:note|letter)s?\b",
        r"\bI know (?:exactly )?(?:when and how|how and when|where and how|(?:how|where|when) I(?:'d| would|'ll| will) (?:do it|go))\b",
        r"\b(?:researched|googled|looked up|searched|searching|read up on) (?:how (?:to|many|much)|ways to|the best way to|methods)\b(?:\s+\S+){0,5}?\s+(?:die|kill|overdose|pills|tablets|hang|lethal|painless)",
        r"\b(?:stockpil\w+|saving up|been saving|hoarding|collect(?:ed|ing)) (?:up )?(?:my |some |all my )?(?:\w+ )?(?:pills|tablets|meds|medication|paracetamol|painkillers)\b"),
     "plan planning planned suicide goodbye note notes letter letters how where when researched googled looked searched searching read "
     "stockpile stockpiled stockpiling stockpiles saving hoarding collected collecting"),
    ("attempt", _rx(
        r"\bI(?:'ve| have| had)? (?:attempted suicide|tried to (?:kill|hang|drown|poison|end) (?:myself|my life|it all)|overdosed|took (?:an|a) overdose)\b",
        r"\bI(?:'ve| have| had)? (?:swallowed|took|taken) (?:a bunch of|loads of|too many|a load of|a handful of|\w+ packs? of|a whole (?:packet|bottle|box) of) (?:pills|tablets|paracetamol|meds|sleeping pills|painkillers)\b",
        r"\bI(?:'ve| have| had)? (?:swallowed|took|taken) all (?:of )?my (?:pills|tablets|meds|medication|sleeping pills|painkillers) (?:at once|in one go|together)\b",
        r"\bmy (?:last|first|second|third|previous|recent|suicide) (?:suicide )?attempt\b",
        r"\bI(?:'ve| have| had)? (?:swallowed|took|taken) (?:\d{2,}|twenty|thirty|forty|fifty|a hundred) (?:\w+ )?(?:pills|tablets|paracetamol|painkillers|sleeping pills)\b"),
     "attempted attempt tried overdose overdosed overdosing swallowed took taken"),
    ("self_harm", _rx(
        r"\bI(?:'ve| have| had)?(?: been| started| start| keep| kept)?(?: (?:just|also|really|sometimes|still|often|even|again))? (?:cut|cutting|burn(?:ed|t|ing)|scratch(?:ed|ing)|hurt(?:ing)?|harm(?:ed|ing)?) myself\b(?! (?:shaving|cooking|chopping|while|on (?:a|the|some)|by accident|accidentally|at the gym|playing|lifting|running))",
        r"\bI(?:'ve| have| had)?(?: been| started| start| keep| kept| used to)?(?: (?:just|also|really|sometimes|still|often|even|again))? self[- ]?harm(?:ed|ing)?\b",
        r"\bmy self[- ]?harm(?:ing)?\b|\brelapsed? (?:with|into|on) self[- ]?harm(?:ing)?\b",
        r"\bI(?:'ve| have)?(?: been)? (?:cut|cutting|burn(?:ed|t|ing)?) my (?:arms?|legs?|stomach|wrists?|thighs?|skin|hips?)\b"),
     "myself self selfharm cut cutting burn burned burnt burning relapsed relapse"),
    ("self_harm_thoughts", _rx(
        r"\b(?:want|wanted|wanting|urges?|urge|thinking about|thought about|tempted|need|needed) to (?:cut|hurt|harm|burn) myself\b",
        r"\burges? to (?:cut|self[- ]?harm)\b"),
     "myself urge urges"),
    ("active_ideation", _rx(
        r"\b(?:thinking (?:about|of) |thought (?:about|of) |thoughts (?:of|about) )?kill(?:ing)? myself\b(?! (?:laughing|for (?:forgetting|not|being|saying|doing)))",
        r"\b(?:end|ending|take|taking) my (?:own )?life\b",
        r"\bend(?:ing)? it all\b",
        r"\b(?:I(?:'m| am)|feel(?:ing)?|felt|been|was|get|getting|went) (?:really |so |quite |a bit |pretty |very |properly |kind of |sort of )?suicidal\b",
        r"\bsuicidal (?:thoughts?|feelings?|ideation|urges?)\b",
        r"\b(?:thoughts? (?:of|about)|think(?:ing)? (?:about|of)|thought (?:about|of)|consider(?:ed|ing)|contemplat\w+) (?:suicide|ending (?:it|things|my life)|taking my (?:own )?life)\b",
        r"\b(?:want|wanted|wanna|wish I could) (?:to )?end (?:it|things)\b(?! (?:with|between|there|here|for good with))",
        r"\bwant to not be here\b",
        r"\bkms\b|\b(?:feel|feeling|felt) like end(?:ing)? it(?: all)?\b|\bsuicide (?:is|has been|'s) (?:always |constantly |often )?on my mind\b"),
     "kill killing life end ending suicidal suicide here kms"),
    ("passive_death_wish", _rx(
        r"\b(?:want|wanted|wanting|wants|wanna) (?:to )?die\b(?! (?:of|from|laughing|a little|inside))",
        r"\bwish(?:ed|ing)? (?:I|i) (?:was|were|could be|'d be|had been) dead\b",
        r"\bwish(?:ed|ing)? I (?:could|would|'d) (?:just )?(?:die|disappear forever|stop existing|not wake up|sleep forever|go to sleep and (?:not|never) wake up|fall asleep and (?:not|never) wake up)\b",
        r"\bwish(?:ed|ing)? I (?:just )?(?:hadn't|had not|didn't|did not|wouldn't) (?:woken|wake) up\b",
        r"\bwish(?:ed|ing)? I(?: had never been|'d never been| was never| were never| wasn't| weren't) born\b",
        r"\bwant(?:ed)? to be dead\b",
        r"\b(?:be |was |am |are )?better off dead\b",
        r"\brather be dead\b(?![^.!?]{0,60}\bthan\b)",
        r"\b(?:be |would be |'d be )?(?:better off|easier|better) (?:for (?:everyone|everybody|them|all of them|my \w+) )?(?:without me|if I (?:was|were|wasn't|weren't) (?:dead|gone|here|around|alive)|if I (?:died|disappeared))\b",
        r"\bif I (?:died|was gone|were gone|disappeared)(?:,| tomorrow,?| today,?)? (?:nobody|no one|no-one) would (?:notice|care|miss me)\b",
        r"\b(?:nobody|no one|no-one) would (?:notice|care|miss me) if I (?:died|was gone|were gone|disappeared|wasn't here)\b",
        r"\b(?:hope|hoping|pray|praying|wish) (?:that )?(?:I )?(?:won't|don't|wouldn't|never|will not|do not) wake up\b",
        r"\b(?:go|going|went) to sleep (?:hoping|and hope|and (?:not|never) wake up)(?: (?:that )?(?:I )?(?:won't|don't|wouldn't|never|will not|do not|I won't) wake up)?\b",
        r"\bpray(?:ing|ed|s)?(?: \w+){0,3}? (?:that )?(?:God|the Lord|he) (?:takes|will take|would take|would just take|take) me\b",
        r"\b(?:don'?t|do not|no longer|didn'?t) want to (?:live|be alive|exist|wake up(?: in the morning)?|go on living|be here anymore|be here any more)\b",
        r"\bnot sure (?:if |whether )?I (?:want|wanna) to (?:live|be alive|be here|go on|keep going|keep living|exist)\b",
        r"\b(?:tired|sick) of (?:living|being alive)\b(?! (?:like this|like that|this way|in fear|with|in|on|under|paycheck))",
        r"\bno (?:reason|point) (?:to live|in living|in being alive|in going on)\b",
        r"\bwhat'?s the point (?:of|in) (?:living|being alive|going on|life)\b",
        r"\bwouldn'?t (?:be the worst thing|mind|care|be so bad|be sad) if (?:I (?:died|didn'?t wake up|got hit|was hit|never woke up)|(?:a|the) (?:car|lorry|truck|bus|train) hit me|something happened to me)\b",
        r"\bhope (?:a|the|some) (?:car|lorry|truck|bus|train|plane) (?:hits me|crashes)\b",
        r"\bwant (?:it all|everything) to (?:just )?(?:stop|end)\b",
        r"\bthink(?:ing)? (?:a lot )?about (?:being dead|not being (?:here|alive|around)|not existing|not waking up)\b",
        r"\bdon'?t care (?:if|whether) I live or die\b",
        r"\b(?:I'm|I am|im) (?:so )?done with (?:life|living|being alive)\b(?! like this| like that| this way)",
        r"\b(?:hope|hoping|pray|praying|wish) (?:that )?I (?:just )?die\b(?! (?:of|from|laughing))"),
     "die dead born without better easier died disappeared gone wake woken live alive exist existing point hit here done "
     "hits crashes stop end being living sleep hoping pray praying prayed"),
    ("method", _rx(
        r"\b(?:pills|tablets|paracetamol|overdose|overdosing|painkillers|sleeping pills|rope|noose|gun|razor|blades?|bridge|railway|train tracks|in front of (?:a|the) (?:train|bus|lorry|truck|car)|motorway|cliff|jump(?:ing)? (?:off|from)|hang(?:ing)? myself|drown(?:ing)? myself|crash(?:ing)? (?:the|my) car|car into|engine running|exhaust|hosepipe|(?:edge|end) of the platform)\b"),
     "pills tablets paracetamol overdose overdosing painkillers rope noose gun razor blade blades bridge railway train "
     "tracks motorway cliff jump jumping hang hanging drown drowning crash crashing car engine exhaust hosepipe platform"),
    ("preparation", _rx(
        r"(?:^|[.!?]\s+)I(?:'ve| have)? decided\.",
        r"\b(?:I've|I have)? (?:written|wrote) (?:letters?|notes?) (?:to|for) (?:my|each|everyone|all)\b",
        r"\b(?:given|gave|giving) (?:away )?(?:my|all my) \w+(?: \w+)? (?:to|away)\b|\b(?:given|giving|gave) away\b",
        r"\b(?:put|putting) my affairs in order\b|\b(?:sorted|sorting) (?:out )?my (?:will|affairs)\b|\b(?:made|updated|wrote) my will\b",
        r"\b(?:said|saying) (?:my )?goodbyes?\b|\bset a date\b|\bI (?:have|'ve got|'ve made|made) a plan\b"),
     "decided letter letters notes gave given giving affairs will goodbye goodbyes date plan"),
    ("harm_from_others", _rx(
        r"\b(?:by|round|around) (?:my|the) (?:throat|neck)\b",
        r"\b(?:choked|choking|chokes|strangled|strangles|strangling) me\b",
        r"\bthreaten(?:s|ed|ing)? to kill me\b",
        r"\b(?:scared|afraid|terrified) (?:that )?(?:he|she|they)(?:'ll|'s going to| will| might| is going to| are going to)? (?:kill|really hurt|hurt) me\b",
        r"\b(?:started|starting|keeps|has been|'s been|he's been|she's been) (?:hitting|shoving|pushing|punching|kicking|slapping|hurting|beating) me\b",
        r"\b(?:he|she) (?:hits|beats|punches|kicks|slaps|hurts) me\b"),
     "throat neck choked choking chokes strangled strangles strangling kill scared afraid terrified hitting shoving "
     "pushing punching kicking slapping hurting beating hits beats punches kicks slaps hurts"),
]
# Third-person patterns: whose risk it is comes from the nearest person named before.
_THIRD_RULES: list[tuple[str, tuple[str, ...], str]] = [
    ("ideation3", _rx(
        rf"\b(?:wants?|wanted|wanting|wish(?:es|ed)?|talk(?:s|ed|ing)? about|think(?:s|ing)? about|thought about|threaten(?:s|ed|ing)?) (?:to die|to be dead|{_PRO3} (?:was|were) dead|(?:to )?(?:kill|killing|hurt|hurting|harm|harming|cut|cutting) {_REFL3}|dying|suicide|(?:to )?end(?:ing)? (?:it all|{_PRO3}r? life|his life|her life|their life))\b(?! (?:of|laughing))",
        rf"\b{_PRO3}(?:'s| is| was| has been| have been|'ve been| seems?| seemed| feels?| felt) (?:really |so |very |quite )?suicidal\b",
        rf"\bwish(?:es|ed)? {_PRO3} (?:had never been|was never|were never|wasn't|weren't) born\b"),
     "die dead himself herself themselves themself dying suicide suicidal life all born end"),
    ("harm3", _rx(
        rf"\b(?:tried|try|trying|attempted) to (?:kill|hang|drown|poison|end) (?:{_REFL3}|his life|her life|their life|it all)\b",
        r"\b(?:took|had taken|has taken|taken) (?:an|a) overdose\b|\b(?:had |has )?overdosed\b|\battempted suicide\b",
        rf"\b(?:cut|cutting|burn(?:ed|t|ing)|scratch(?:ed|ing)|harm(?:ed|ing)?) {_REFL3}\b",
        r"\b(?:has been|'s been|is|was|started|starting|had been|have been) self[- ]?harm(?:ing)?\b|\bself[- ]?harms\b"),
     "himself herself themselves themself life all overdose overdosed attempted self selfharm"),
]



def _compile_rules() -> dict[str, tuple[tuple[str, re.Pattern, bool], ...]]:
    """trigger word -> ((kind, regex of the alternatives that mention the word, third person?), ...).

    An alternative "mentions" a word when the word's first three letters are in its source (so "overdosed"
    reaches "overdos\\w+"); every alternative must be reached by one of its rule's words, or it would
    never run: that is checked here, at import.
    """
    out: dict[str, list[tuple[str, re.Pattern, bool]]] = {}
    cache: dict[tuple[str, ...], re.Pattern] = {}
    for rules, third in ((_SELF_RULES, False), (_THIRD_RULES, True)):
        for kind, alts, words in rules:
            reached: set[str] = set()
            for w in words.split():
                rel = tuple(a for a in alts if w[:3] in a.lower())
                if not rel:
                    raise AssertionError(f"crisis rule {kind}: trigger {w!r} reaches no pattern")
                reached.update(rel)
                if rel not in cache:
                    cache[rel] = re.compile("|".join(f"(?:{a})" for a in rel), _I)
                out.setdefault(w, []).append((kind, cache[rel], third))
            missing = [a for a in alts if a not in reached]
            if missing:
                raise AssertionError(f"crisis rule {kind}: no trigger word reaches {missing[0]!r}")
    return {w: tuple(v) for w, v in out.items()}


_TRIGGERS = _compile_rules()
_WORD = re.compile(r"[a-z]+")
_TRIGGER_WORDS = frozenset(_TRIGGERS)

_NEGATION = re.compile(
    r"(?:\bnot|n't|\bnever|\bno|\bnor|\bwithout|\b(?:dont|wont|cant|didnt|wouldnt|isnt|aint))\s+"
    r"(?:(?:that|ever|really|actually|even|gonna|going|to|want|wanting|planning|plan|saying|say|said|mean|meant|feel|feeling|felt|be|been|being|I|I'd|I'm|I'll|I've|would|"
    r"will|about|thinking|think|thought|of|do|did|it|like|have|had|any|a|seriously|considered|consider|try|"
    r"tried|anymore|currently|right|now|way|longer)\s+){0,4}$", _I)
_NOT_NEGATION = re.compile(r"\bnot (?:just|only)\s+(?:\S+\s+){0,4}$|\bnever (?:been )?(?:this|so)\b", _I)
_UNTIL_NOW = re.compile(r"^[^.!?]{0,40}\buntil (?:now|recently|this (?:year|month|week)|last (?:week|month))", _I)
_HYPOTHETICAL = re.compile(
    r"\b(?:what if|if|suppose|supposing|imagine|in case|hypothetically|asked (?:me )?(?:if|whether)|asks? (?:if|whether)"
    r"|in the (?:film|movie|book|show|series|song|novel|game|play)|the character|lyrics?|joke|joking|jokes)\b", _I)
_SUBJECT = re.compile(r"\b(?:[Ii]|[Ii]'m|[Ii]'ve|[Ii]'d|[Ii]'ll|me|[Hh]e|[Ss]he|[Tt]hey|[Hh]e's|[Ss]he's|[Tt]hey're|"
                      r"[Mm]y \w+|[A-Z][a-z]+)\b(?!')")
# Patterns that can start without their subject ("wanting to die"): the clause says whose wish it is.
_SUBJECTLESS = {"passive_death_wish", "active_ideation", "self_harm_thoughts"}
_SUBJECT3 = re.compile(
    r"\b(?:i|i'm|i've|i'd|me|my(?= self)|(he|she|they)|(a|an|the|my|our|his|her|their) (caller|client|patient|customer|"
    r"friend|son|daughter|child|kid|boy|girl|teen|teenager|stepson|stepdaughter|brother|sister|mum|mom|mother|dad|"
    r"father|husband|wife|partner|boyfriend|girlfriend|colleague|flatmate|roommate|student|pupil|neighbou?r))\b", _I)
_HYP_EXCEPT = re.compile(r"\b(?:know|sure|wonder|wondering|unsure|ask myself|asking myself) (?:if|whether)\b"
                         r"|\bif I'?m (?:honest|being honest|being real|truthful)\b", _I)
_CLAUSE_BREAK = re.compile(r"[.!?;:\n]|,\s|\bbut\b|\bthough\b|\bbecause\b|\band\b(?= I\b)", _I)
_TOLD_TO = re.compile(r"\b(?:said|says|told me|tells me|telling me|texted|wrote)\s+(?:that\s+)?I\s+should\s+"
                      r"(?:just\s+|go\s+)?$", _I)
_END_WITH = re.compile(r"\s+(?:for good )?(?:with|between)\s+(?:him|her|them|us|me|[A-Z][a-z]+|"
                       r"my (?:boyfriend|girlfriend|partner|husband|wife|ex|fianc\w*))\b")
_RELATIONSHIP = re.compile(r"\b(?:boyfriend|girlfriend|partner|husband|wife|relationship|marriage|engagement|"
                           r"dating|fianc\w*|him|her|ex|break up|breaking up|split up|divorce)\b", _I)
_NUM = (r"(?:\d+|five|six|seven|eight|nine|ten|eleven|twelve|thirteen|fourteen|fifteen|sixteen|seventeen|eighteen|"
        r"nineteen|twenty|thirty|forty|fifty)")
_PAST = re.compile(rf"\b(?:years? ago|when (?:I|he|she|they) (?:was|were) (?:{_NUM}|a kid|a child|young|little|"
                   r"a teen\w*|at (?:school|uni|college)|in (?:school|college|my teens))"
                   r"|when (?:I|he|she) was \w+teen|as a (?:teen\w*|kid|child)"
                   r"|(?:in|for most of|during|through) (?:high school|secondary school|my teens|my twenties|year \d+)"
                   r"|in the (?:seventies|eighties|nineties|\d0s|'\d0s)"
                   r"|used to|back then|back in|(?:a long time|ages|decades) ago|last year|\d+ years|in (?:19|20)\d\d"
                   r"|before (?:he|she|they) died|a few years)\b", _I)
# Recent wins over past ("I used to cut, and I did it again last night"): the C-SSRS screener's window is
# the past three months, and a mention of now is the part that needs acting on.
_RECENT = re.compile(r"\b(?:last night|yesterday|this (?:morning|week|weekend|month|term)|last (?:week|weekend|month|night)"
                     r"|tonight|today|(?:a few|two|three|four|five|\d+|couple of) (?:days|weeks|nights) ago|again|recently"
                     r"|at the weekend|on (?:mon|tues|wednes|thurs|fri|satur|sun)day|at bedtime|still|keeps?"
                     r"|every (?:day|night)|most (?:days|nights)|has been|'s been|have been|'ve been|started|starting)\b", _I)
# A quote: double quotes, or single quotes opened after a space and closed before one; an apostrophe inside
# ("'I'm done'") is followed by a letter, so it does not close the quote.
_QUOTE = re.compile(r"[\"“]([^\"“”]{1,400})[\"”]|(?:(?<=^)|(?<=[\s(:,]))[‘']((?:[^‘’'\n]|'(?=\w))*)[’'](?=[\s.,!?;:)]|$)")
_SPEAKER = re.compile(r"\b(I|he|she|they|people|everyone|everybody|someone|somebody|you|the \w+|my [\w-]+(?: [\w-]+)?|[A-Z][a-z]+)\s+"
                      r"(?:\w+\s+){0,2}?(?:said|says|say|told|tells|texted|texts|wrote|writes|screamed|shouted|whispered|"
                      r"yelled|asked|asks|goes|went|keeps saying|kept saying|was like|is like|thought|think|thinking|cried)\b")
_PERSON = re.compile(
    r"\b(?:my|our|his|her|their)\s+(?:\d+[- ](?:year[- ]old|yo)\s+|(?:little|eldest|youngest|oldest|older|younger|teenage|baby|middle|best|"
    r"\w+-year-old)\s+)*(son|daughter|child|kid|boy|girl|teen|teenager|toddler|stepson|stepdaughter|grandson|granddaughter|"
    r"grandchild|foster (?:son|daughter|child|kid)|nephew|niece|brother|sister|friend|mum|mom|mother|dad|father|husband|wife|"
    r"partner|boyfriend|girlfriend|colleague|coworker|flatmate|roommate|ex|cousin|uncle|aunt|neighbou?r|client|patient|"
    r"student|pupil)s?\b|\b(someone|somebody|people|a person|anyone|a friend)\b|\b(?:she|he)(?:'s| is) (?:only |just )?"
    r"(\d+|five|six|seven|eight|nine|ten|eleven|twelve|thirteen|fourteen|fifteen|sixteen|seventeen)\b"
    r"|\b(?:my|our)\s+(\d+|five|six|seven|eight|nine|ten|eleven|twelve|thirteen|fourteen|fifteen|sixteen|seventeen)"
    r"[- ]year[- ]old\b", _I)
_DEPENDENT = {"son", "daughter", "child", "kid", "boy", "girl", "teen", "teenager", "toddler", "stepson", "stepdaughter",
              "grandson", "granddaughter", "grandchild"}
_AGES = {"five", "six", "seven", "eight", "nine", "ten", "eleven", "twelve", "thirteen", "fourteen", "fifteen", "sixteen",
         "seventeen"}


# ---------------------------------------------------------------------------------------------- core


def _clause_before(text: str, start: int) -> str:
    """The clause a match sits in, up to the match: negation and 'if' only reach that far."""
    window = text[max(0, start - 120):start]
    last = None
    for last in _CLAUSE_BREAK.finditer(window):
        pass
    return window[last.end():] if last else window


def _sentence_of(text: str, start: int, end: int) -> tuple[int, int]:
    s = max(text.rfind(c, 0, start) for c in ".!?\n") + 1
    ends = [i for i in (text.find(c, end) for c in ".!?\n") if i != -1]
    return s, (min(ends) + 1 if ends else len(text))


def _negated(text: str, start: int, end: int, clause: str) -> bool:
    if not _NEGATION.search(clause) or _NOT_NEGATION.search(clause):
        return False
    return not _UNTIL_NOW.search(text[end:end + 60])  # "never thought about it until now" is not a denial


def _hypothetical(clause: str) -> bool:
    return bool(_HYPOTHETICAL.search(clause)) and not _HYP_EXCEPT.search(clause)


def _other_subject(clause: str) -> str | None:
    """'dependent' | 'other' | 'generic' | 'pronoun' when the clause's last subject is someone else, else None."""
    last = None
    for last in _SUBJECT3.finditer(clause):
        pass
    if last is None or last.group(0).lower() in ("i", "i'm", "i've", "i'd", "me", "my"):
        return None
    if last.group(1):
        return "pronoun"
    noun = (last.group(3) or "").lower()
    if last.group(2).lower() in ("a", "an", "the"):
        return "generic" if noun not in _DEPENDENT else "dependent"
    return "dependent" if noun in _DEPENDENT else "other"


def _self_subject(text: str, start: int, clause: str) -> bool:
    """Whether the nearest subject before a third-person pattern is the client ("I wanted to die")."""
    last = None
    for last in _SUBJECT.finditer(clause or text[_sentence_of(text, start, start)[0]:start]):
        pass
    return last is not None and last.group(0).lower() in ("i", "i'm", "i've", "i'd", "i'll", "me")


def _when(text: str, start: int, end: int) -> str:
    """'recent' | 'past' from the words around a behaviour; unknown counts as recent (the screener asks,
    we cannot, so the safer reading wins)."""
    s, e = _sentence_of(text, start, end)
    sentence = text[s:e]
    if _RECENT.search(sentence):
        return "recent"
    return "past" if _PAST.search(sentence) else "recent"


def _quote_at(quotes: list[tuple[int, int]], pos: int) -> tuple[int, int] | None:
    for qs, qe in quotes:
        if qs <= pos < qe:
            return qs, qe
    return None


def _quotes(text: str) -> list[tuple[int, int]]:
    if '"' not in text and "'" not in text and "“" not in text and "‘" not in text:
        return []
    return [(m.start(), m.end()) for m in _QUOTE.finditer(text)]


def _who(text: str, before: int) -> str:
    """'dependent' | 'other' | 'generic' | 'none': the nearest person named before ``before`` (~3 sentences)."""
    last = None
    for last in _PERSON.finditer(text, max(0, before - 400), before):
        pass
    if last is None:
        return "none"
    if last.group(2):
        return "generic"
    if last.group(3) or last.group(4):
        age = (last.group(3) or last.group(4)).lower()
        return "dependent" if age in _AGES or (age.isdigit() and int(age) < 18) else "other"
    return "dependent" if last.group(1).lower() in _DEPENDENT else "other"


def _speaker(text: str, qs: int, qe: int) -> str:
    """Who says a quote: 'self' | 'dependent' | 'other' | 'generic' | 'none'."""
    s, _ = _sentence_of(text, max(qs - 1, 0), qs)
    before = text[max(0, s - 200):qs]
    after = text[qe:qe + 40]
    m = None
    for m in _SPEAKER.finditer(before):
        pass
    if m is None:
        m = _SPEAKER.match(after.lstrip(" ,"))
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
        return "dependent" if noun in _DEPENDENT else "other"
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
    if kind == "active_ideation" and _TOLD_TO.search(text, max(0, m.start() - 60), m.start()):
        return True  # "my boss said I should just kill myself": someone else's cruelty, not the client's wish
    if kind in ("active_ideation", "passive_death_wish", "intent") and re.search(r"\b(?:end|ending)\b", m.group(0), _I):
        if _END_WITH.match(text, m.end()):
            return True  # "ending things with Sam"
        s, e = _sentence_of(text, m.start(), m.end())
        prev_s, _ = _sentence_of(text, max(s - 2, 0), max(s - 2, 0))
        context = text[prev_s:e]
        strong = re.search(r"\b(?:die|dead|suicid\w*|kill|life|alive|pills|better off without me)\b", context, _I)
        if _RELATIONSHIP.search(context) and not strong:
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


def screen(text: str) -> Screen:
    """Tier and evidence for one client speech, by deterministic rules (see the module docstring)."""
    low = text.lower()
    ctx = _Context(text)
    found: list[Signal] = []
    seen: set[tuple[str, int, int]] = set()
    for w in _TRIGGER_WORDS.intersection(_WORD.findall(low)):  # set work in C: most words are no trigger
        positions = _positions(low, w)
        for kind, rx, third in _TRIGGERS[w]:
            for lo, hi in _windows(positions, *_REACH[kind]):
                for m in rx.finditer(text, lo, min(hi, len(text))):
                    if (kind, m.start(), m.end()) not in seen:
                        seen.add((kind, m.start(), m.end()))
                        sig = _signal(kind, third, m, ctx)
                        if sig is not None:
                            found.append(sig)
    return _finish(found, text)


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
    if _negated(text, start, end, clause) or _hypothetical(clause):
        return None
    if third and _self_subject(text, start, clause):
        return None  # "I wanted to die" is the client's: the first-person rules have it
    if not third and kind in _SUBJECTLESS and m.group(0)[:1] not in "Ii":
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
    if kind == "harm_from_others" and _PAST.search(text[slice(*_sentence_of(text, m.start(), m.end()))]):
        return None  # abuse in the past is trauma history, not present danger
    return kind


def _finish(found: list[Signal], text: str) -> Screen:
    own = [s for s in found if s.kind in _OWN_IDEATION]
    kept: list[Signal] = []
    for s in found:
        if s.kind in _SUPPORTING:
            if s.kind == "method" and not any(abs(s.start - o.start) <= METHOD_WINDOW_CHARS and s is not o for o in own):
                continue
            if s.kind == "preparation" and not own:
                continue
        kept.append(s)
    kept.sort(key=lambda s: (s.start, -(s.end - s.start), -_RANK[KIND_TIER[s.kind]]))
    out: list[Signal] = []
    for s in kept:  # overlapping spans are one piece of evidence ("kill myself" in "going to kill myself")
        if out and s.start < out[-1].end:
            if s.kind == out[-1].kind:  # "go to sleep hoping" + "hoping I won't wake up": their union
                lo, hi = out[-1].start, max(out[-1].end, s.end)
                out[-1] = Signal(s.kind, lo, hi, text[lo:hi])
                continue
            a, b = ((_RANK[KIND_TIER[x.kind]], x.kind not in _SUPPORTING, x.end - x.start) for x in (s, out[-1]))
            if a > b:
                out[-1] = s
            continue
        out.append(s)
    tier: Tier = max((KIND_TIER[s.kind] for s in out), key=_RANK.__getitem__, default="none")
    return Screen(tier=tier, signals=tuple(out))


def screen_many(texts: Iterable[str]) -> list[Screen]:
    return [screen(t) for t in texts]


# The rest of the public API lives in crisis_check.py (to keep each module readable) and is imported from here.
from .crisis_check import (WRONG_NUMBERS, CheckReplyError, ModelCheck, ResponseSafety,  # noqa: E402,F401
                           check_response, find_wrong_crisis_numbers, model_check, parse_check_reply, screen_cmd)
