"""The crisis screen's rules as data: the regex tables (first person and third person), their trigger words,
and the clause patterns (negation, hypotheticals, quotes, speakers, time) that ``screen.py`` checks a match
against. Changing any pattern is a new ``crisis.RULES_VERSION``: rerun ``bench/bench_screen.py`` and report it.
"""

from __future__ import annotations

import re

ICASE = re.IGNORECASE
_REFL3 = r"(?:himself|herself|themselves|themself)"
_PRO3 = r"(?:he|she|they)"
# "drown myself" is a method, unless in work, TV or whiskey rather than water ("drown myself in TV shows").
_DROWN_MYSELF = r"drown(?:ing)? myself(?! (?:in|with) (?!(?:the |a |my |our )?(?:bath|bathtub|tub|river|lake|sea|ocean|water|pool|canal|reservoir)\b))"
# A method of suicide as a question names it ("is hanging too painful", "how painful is drowning").
_METHOD_ACT = r"(?:hanging|drowning|overdosing|an overdose|slitting (?:your|my) wrists|bleeding out|shooting (?:yourself|myself))"


def _rx(*alts: str) -> tuple[str, ...]:
    """A rule's alternatives; compiled per trigger word below, so a window runs only the relevant ones."""
    return alts


# (kind, regex, trigger words): a regex runs only in a window around one of its trigger words (see _windows)
_SELF_RULES: list[tuple[str, tuple[str, ...], str]] = [
    ("intent", _rx(
        r"\bI(?:(?:'m| am)? (?:going to|gonna|will)|'ll) (?:kill myself|end (?:it all|my life)|take my (?:own )?life)\b(?! (?:laughing|for (?:forgetting|not|being|saying|doing)))",
        r"\bI(?:'m| am)? (?:going to|gonna|will|'ll) end it (?:tonight|today|tomorrow|this weekend|soon|this week)\b",
        r"\b(?:I(?:'ve| have)?|already|has) decided to (?:kill myself|end (?:it|my life|things)|die|take my (?:own )?life)\b",
        r"\b(?:tonight|tomorrow|this weekend)(?: is| will be|'s) the (?:night|day)\b(?! (?:my|our|the|we|you|he|she|they|it|its|his|her|their|for|of|to|when (?!I\b)|that (?!I\b))\b)",
        r"\b(?:scared|afraid|frightened|terrified) (?:of )?what I (?:might|could|will|'ll|would) do\b(?! to (?:him|her|them|someone|somebody|my (?!self)))",
        r"\b(?:don't|do not|can't|cannot) trust myself\b(?! (?:with money|around (?:food|cake|sweets)|to (?:remember|cook|drive|make|decide|choose)|with (?:\w+ ){0,2}(?:decisions?|choices?|judge?ment)))",
        r"\b(?:can't|cannot|don't think I can|not sure I can) keep myself safe\b",
        r"\b(?:going to|gonna|will|'ll) act on (?:it|them|the thoughts|these thoughts)\b"),
     "myself end life decided tonight tomorrow weekend scared afraid frightened terrified act"),
    # A message that opens with a farewell ("This is it. It was a fun ride while it lasted"; "Lost the battle / I'm
    # sorry"); screen.FAREWELL_MAX_CHARS keeps it to short messages.
    ("farewell", _rx(
        r"\A\s*(?:this is (?:it|the end)|lost the battle|goodbye(?: everyone| all| world| everybody)?)\b(?! (?:of|for|to|when|if|that|was|with|against|over)\b)(?!\s*!)"),
     "this lost goodbye"),
    ("command_hallucination", _rx(
        r"\bvoices? (?:\w+ ){0,2}?(?:tell|tells|telling|told|keeps? telling|say|says|saying) me to (?:kill|hurt|harm|cut|end) (?:myself|my life|it)\b",
        # rule 7 covers commands to hurt someone else too ("a voice that tells me to hurt the patients")
        r"\b(?:voices?|hallucinations?)(?: \w+){0,3}? (?:tell|tells|telling|told|keeps? telling|say|says|saying|are saying to|is saying to) me (?:I should |to )(?:kill|hurt|harm|cut|end|stab|attack|commit suicide)\b"),
     "voice voices hallucination hallucinations"),
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
    # Going somewhere and not coming back ("going out for a nightwalk, not planning on coming back"; "going to the
    # quarry and not coming back"): said of oneself, a goodbye.
    ("no_return", _rx(
        r"\b(?:go|going|went|walk|walking|drive|driving|head|heading|leave|leaving|jump|jumping|swim|swimming)\b"
        r"[^.!?\n]{0,50}?(?:\band |, ?)(?:not|never) (?:planning on |intending to be |going to be |gonna be )?coming back\b"),
     "coming"),
    ("passive_death_wish", _rx(
        r"\b(?:want|wanted|wanting|wants|wanna) (?:to )?(?:(?:fucking|fuckin|fkn|effing|really|just|actually|literally) )?"
        r"die\b(?! (?:of|from|laughing|a little|inside))",
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
        r"\b(?:hope|hoping|pray|praying|wish) (?:that )?[Il] (?:just )?die\b(?! (?:of|from|laughing))"),
     "die dead born without better easier died disappeared gone wake woken live alive exist existing point hit here done "
     "hits crashes stop end being living sleep hoping pray praying prayed"),
    ("method", _rx(
        rf"\b(?:pills|tablets|paracetamol|overdose|overdosing|painkillers|sleeping pills|rope|noose|gun|razor|blades?|bridge|railway|train tracks|in front of (?:a|the) (?:train|bus|lorry|truck|car)|motorway|cliff|jump(?:ing)? (?:off|from)|hang(?:ing)? myself|{_DROWN_MYSELF}|crash(?:ing)? (?:the|my) car|car into|engine running|exhaust|hosepipe|(?:edge|end) of the platform)\b"),
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
        r"\b(?:he|she) (?:hits|beats|punches|kicks|slaps|hurts) me\b(?! out)", r"\b(?:he|she) (?:hit|pushed|grabbed|punched|slapped) me\b(?! out)",
        r"\b(?:said |says |threaten\w* )(?:he|she|they)(?:'d| would| will|'ll) kill me\b|\bhe will kill me\b",
        r"\bhit my (?:\d+-year-old|son|daughter|child|kid|boy|girl) (?:across|in|on)\b"),
     "throat neck choked choking chokes strangled strangles strangling kill scared afraid terrified hitting shoving "
     "pushing punching kicking slapping hurting beating hits beats punches kicks slaps hurts hit pushed grabbed "
     "punched slapped said says threatened threatens kill"),
    # Self-harm by any means (docs/CRISIS_LABELS.md: head-banging, hitting, burning, scratching, biting,
    # starving as a punishment, overdosing "not to die"); _when() decides recent or past.
    ("self_harm", _rx(
        r"\bI(?:'ve| have| had)?(?: been| started| start| keep| kept| used to| last| first)?(?: (?:just|also|really|sometimes|still|often|even|again|actually))? (?:hit(?:ting)?|punch(?:ing)?|slap(?:ping)?|bit(?:e|ing)|bang(?:ing)?|pick(?:ing)?|starv(?:e|ed|ing)|punish(?:ing)?) (?:myself|my (?:own )?(?:arms?|legs?|face|wrists?|thighs?|skin|stomach|chest|scalp))\b",
        r"\b(?:bang(?:ed|ing|s)?|hit(?:ting)?|punch(?:ed|ing)?) my head (?:against|on) (?:the|a|my) (?:wall|floor|steering wheel|door|desk)\b",
        r"\bhitting my head with my hand\b",
        r"\b(?:scratch(?:ed|ing)?|pick(?:ed|ing)?(?: and scratch(?:ed|ing)?)?) (?:at )?my (?:\w+ )?(?:skin|legs?|arms?|wrists?|scalp)\b(?:[^.!?]{0,40}) (?:until|till|til) (?:it|they) bleeds?",
        r"\b(?:don't|didn't|do not|won't) let myself eat\b|\bstopped eating (?:properly )?on purpose\b",
        r"\bI(?:'ve| have)?(?: (?:still|also|just|last|first))? self[- ]?harm(?:ed)?\b|\bI (?:still|also) cut\b|\bwhen I'm (?:drunk|high|sad) I cut\b",
        r"\b(?:when I'm not|started|been|keep|still|stop|quit) cutting\b(?! (?:back|down|out|off|up|corners|ties|class|school|my hair|carbs|sugar|[\d.]+ ?(?:mg|milligrams?|ml|g|pills?|tablets?)\b|(?:my |the |a |an |each |every )?(?:pills?|tablets?|meds|medication|doses?|dosage|hair|grass|wood|paper|coupons|costs|hours|calories)\b))",
        r"\b(?:can't help but|can't stop(?: myself from)?) (?:self[- ]?harm(?:ing)?|cutting|hurting myself)\b",
        r"\b(?:I(?:'ve| have)?(?: been)?|been) (?:doing it|doin it) (?:again|since)\b",
        r"\b(?:take|took|taking) (?:like |a load of |loads of |many |extra |\d+ of )?(?:my )?(?:meds|tablets|pills|sleeping pills|sleeping tablets)[^.!?]{0,20}\bnot (?:to die|for dying)\b",
        r"\b(?:cut|cutting|burn(?:ed|t|ing)?|scratch(?:ed|ing)?) (?:my|the) (?:arm|arms|legs?|hands?|wrists?|thighs?|skin|ankles?|hips?) (?:with|on purpose)\b"),
     "hit hitting punch punching slap slapping bite biting bang banging pick picking starve starved starving punish "
     "punishing banged head scratch scratched scratching eat eating self selfharm harmed cut cutting help stop doing doin "
     "take took meds tablets pills burn burned burnt arm"),
    ("self_harm_urge", _rx(
        r"\b(?:want|wanting|wanted|urge|urges|tempted|need|needed|itching)(?: \w+){0,2}? to (?:do it|start|cut|burn|hurt myself|self[- ]?harm)(?: \w+){0,3}? again\b",
        r"\b(?:want|wanting|wanted) to do it (?:so bad(?:ly)?|again)\b",
        r"\bthe urge(?: to do it)?(?: again)? (?:is|has come|came) back\b|\burges? (?:are|is|have|has) (?:back|come back|returned)\b",
        r"\b(?:came|come|was) (?:so )?close to (?:relapsing|cutting|doing it)\b|\b(?:so )?close to relaps\w+\b",
        r"\bnot (?:to be )?tempted\b|\bso I'm not tempted\b"),
     "want wanting wanted urge urges tempted need needed itching again back returned came come close relapsing "
     "relapse relapsed"),
    ("passive_death_wish", _rx(
        r"\b(?:can't|cannot|don't|do not)(?: even)?(?: bring myself to)? care (?:if|whether) I live or die\b",
        r"\b(?:I'd|I would|id) (?:much )?rather (?:never|not) (?:wake up|exist|be alive|be here|be born|have been born|live)\b",
        r"\b(?:I'd|I would)? ?rather not (?:exist|be alive|be here anymore)\b",
        r"\bwish(?:ed|ing)? (?:for )?(?:an accident|something|a car|an illness|a heart attack|cancer)(?: \w+){0,3}? (?:to |would |could |will |might )?(?:take me|take it all away|kill me|end it|end me)\b",
        r"\b(?:hope|hoping|hoped)(?: it's| it is| it was| for)? something (?:that |to )?(?:will |would |that'll )?(?:take me|kill me|end it)\b",
        r"\b(?:would|I'd) welcome death\b|\bwelcome death\b",
        r"\b(?:relieved|glad|happy) (?:if I (?:died|didn't wake up|never woke up)|to be (?:dead|ill enough to die))\b",
        r"\b(?:better off|easier|better|fine|happier) (?:for (?:everyone|everybody|them|all) )?if I (?:wasn't|weren't|was not|were not|am not|'m not|wasnt) (?:in this world|here|alive|around|born)\b",
        r"\b(?:better|easier) (?:for everyone |for everybody )?if I am not in this world\b|\bbetter off not in this world\b",
        r"\bwish(?:ed|ing)? I (?:didn't|did not|don't|wouldn't) exist\b|\bshouldn't exist\b|\bnot (?:to )?exist anymore\b",
        r"\bwant to disappear (?:forever|from this life|and never)\b|\bto not exist\b|\bonly to not exist\b",
        r"\b(?:hope|hoping) (?:a|the) (?:car|lorry|truck|bus|train|plane) (?:doesn't stop|goes down|crashes|hits me)\b",
        r"\b(?:easier|better) not to be (?:alive|here|around)\b|\bnot to be alive\b",
        r"\bwish I'?d (?:just )?(?:not|never) wake up\b|\bprefer to not wake up\b|\bprefer not to wake up\b",
        r"\b(?:wouldn't|would not) mind (?:dying|dyin|if I died|not waking up|if I didn't wake up)\b",
        r"\b(?:I'd|I would|id) be (?:fine|ok|okay) with dying\b|\bbetter dead than\b|\b(?:I'm|I am) better dead\b",
        r"\bwouldn't (?:be the worst|b the worst)(?: thing)? if (?:a|the) (?:car|lorry|truck|bus|train) hit me\b",
        r"\b(?:need|no|find|finding) reasons? to (?:live|keep going|stay alive)\b|\bnothing (?:left )?to live for\b|\bno point (?:to|in) (?:staying alive|living)\b",
        r"\bjust want (?:to )?sleep forever\b|\bwant to sleep forever\b|\bwhy am I (?:still )?alive\b",
        r"\bI (?:just )?want it to (?:end|stop)\b(?![^.!?]{0,5}[.!?]\s*not (?:life|me))"),
     "care live die rather wish wished wishing hope hoping hoped welcome relieved glad happy better easier fine happier "
     "world exist disappear car lorry truck bus train plane alive wake mind dying dyin dead worst reasons nothing point "
     "sleep forever why end stop prefer"),
    ("active_ideation", _rx(
        r"\bsuicid\w* (?:thoughts?|feelings?|urges?|ideation)\b|\bthoughts? of suicide\b",
        r"\b(?:think|thinking|thought) about (?:taking|swallowing) (?:them|it|all of (?:them|it)|the lot)(?: all)?\b",
        r"\b(?:finish|end|ending) (?:my life|everything)\b(?! with)"),
     "suicidal suicide thoughts thought think thinking finish end ending"),
    # docs/CRISIS_LABELS.md, high rule 1: ideation that names its own means is a method, not bare ideation.
    ("method_ideation", _rx(
        r"\b(?:hang|hanging|shoot|shooting|gas|gassing|poison|poisoning|electrocute|electrocuting|stab|stabbing) myself\b",
        rf"\b{_DROWN_MYSELF}\b",
        r"\b(?:imagining|picturing|thinking about|thought about|think about) (?:cutting|slitting) my (?:own )?(?:wrists?|throat)\b|\b(?:slit|slitting) my (?:own )?(?:wrists?|throat)\b",
        r"\b(?:thinking|thought|think|keep thinking|dream\w*|fantasi[sz]\w*) (?:about|of) (?:jumping (?:off|from) (?:a |the |my |our )?(?:[\w-]+ ){0,2}?(?:bridge|building|roof|balcony|cliff|car park|tower|flats|window|overpass|viaduct)|jumping in front of|throwing myself (?:off|under|in front of)|lying (?:down )?on the (?:tracks|railway line)|stepping in front of|running the (?:car|engine) in the garage|driving (?:my car )?into (?:a|the) (?:wall|tree|river|lorry|truck|bridge))",
        r"\b(?:lie|lay|put) my head (?:down )?on (?:the )?(?:train[- ]?)?tracks\b",
        r"\b(?:inject|injecting) myself with (?:bleach|cleaner|insulin|air)\b"),
     "hang hanging drown drowning shoot shooting gas gassing poison poisoning electrocute electrocuting stab stabbing "
     "imagining picturing thinking thought think slit slitting dreaming dreamt dreamed fantasising fantasizing "
     "fantasised fantasized lie lay put inject injecting"),
    ("plan", _rx(
        r"\b(?:picked|chosen|chose|set) (?:a|the) (?:date|day)\b|\b(?:made|make) my mind up\b|\bI(?:'ve| have| am)? decided\b(?! (?:to (?:stop|quit|leave|go|try|get|start|change|move|tell|apply|take a break)|on|that|what|against|not|in advance|(?:I'm|Im|I am) not))",
        r"\bknow how I'?m going to do it\b|\bknow (?:how|where) (?:n|and) (?:where|when|how)\b|\b(?:a )?matter of when and (?:where|how)\b",
        r"\b(?:researching|researched|looking up|looked up|been looking up|searching|googling) ways to (?:do it|kill myself|die|end it)\b",
        r"\b(?:saved|been saving|stockpil\w+) (?:up )?(?:my |some |all my )?(?:tablets|pills|meds|medication)\b",
        r"\b(?:I'm|I am|I'll|I will) (?:going to )?(?:hang myself|kill myself|end it)(?: \w+)? (?:tonight|later|today|tomorrow|after|this week|when)\b",
        r"\bI have the rope\b|\b(?:bought|got|have) (?:a |the )?(?:rope|noose|belt)\b[^.!?]{0,20}\b(?:already|ready)\b"),
     "picked chosen chose set made make decided know matter researching researched looking looked searching googling "
     "saved saving stockpile stockpiled stockpiling going will hang kill rope bought got have"),
    ("attempt", _rx(
        r"\bI (?:tried|try|attempted) to (?:hang|kill|drown|end) (?:myself|my life)\b",
        r"\b(?:ended|wound) up (?:trying|attempting) to (?:hang|kill|drown|end) (?:myself|my life)\b",
        r"\b(?:took|taken) (?:a bunch|a handful|loads|all) of (?:my |mum's |mom's |dad's )?(?:\w+ )?(?:pills|tablets|meds|antidepressants|sleeping tablets)\b",
        r"\bwalked into the sea\b|\b(?:almost|nearly) pulled the trigger\b|\b(?:about|nearly|almost) (?:committed|swerved)\b|\bjust tried to hang myself\b",
        r"\bI took \d+\s?mg\b"),
     "tried try attempted took taken walked almost nearly about just ended wound"),
    ("harm_to_others", _rx(
        r"\b(?:I'm|I am|im|I'll|I will|he's|she's|he is|she is) (?:going to|gonna) (?:stab|kill|shoot|hurt|batter|attack) (?:him|her|them|that \w+|a boy|a girl|a man|the \w+)\b",
        r"\b(?:plan(?:ned|ning)?|started to plan|started planning) (?:how I'd|how I would|how to|what I'll do to|what I'm going to do to) (?:hurt|kill|stab|get|do to)?\s?(?:him|her|them)\b",
        r"\bgoing to kill (?:him|her|them)\b[^.!?]{0,80}\b(?:knife|bat|gun|weapon)\b"),
     "going gonna plan planned planning started kill"),
    ("harm_to_others_urge", _rx(
        r"\b(?:urges?|flashes|thoughts?|images?) (?:of |to )(?:wanting to )?(?:really )?(?:hurt|kill|stab|hit|strangle|harm) (?:him|her|them|my \w+|people|someone)\b",
        r"\burges? to put (?:him|her) in hospital\b"),
     "urge urges flashes thoughts thought images hospital"),
    # High tier, docs/CRISIS_LABELS.md rules 2-5 (intent, plan, preparation, attempt, recent self-harm) in the
    # wordings the rules above missed on the dev splits: no "suicide" or "kill" word, no "I" at the start.
    ("intent", _rx(
        r"\bI(?:(?:'m| am)? (?:probably |just |finally |really )?(?:going to|will)|'ll) (?:probably |just |finally )?kill myself\b(?! (?:laughing|for (?:forgetting|not|being|saying|doing)))",
        r"\bI(?:'m| am) (?:planning on|planning to|going to be) (?:ending it|end it|killing myself|kill myself|doing it)\b(?! with)",
        r"\bI(?:'m| am) ending it (?:after|before|on|tonight|tomorrow|this|next|soon|when)\b"),
     "going will kill end ending planning"),
    ("plan", _rx(
        r"\b(?:thought|thinking|think|worked out|figured out|know) (?:about )?(?:it )?how I(?:'d| would|'ll| will| could|'m going to| am going to) (?:kill myself|end (?:it all|my life))\b",
        r"\b(?:picturing|imagining|planning|planned|thinking of|thought of|thinking about) (?:ways to (?:die|do it|kill myself|end it)|how I (?:want|would|'d) (?:to )?(?:go|die|do it))\b",
        r"\bplan(?:ning|ned)? (?:to|on) (?:od|overdose|overdosing|hang myself|hanging myself)\b",
        r"\b(?:what|which|how many|how much) (?:pills|tablets|meds|paracetamol) (?:\w+ ){0,4}?(?:to (?:off|kill|end) (?:myself|me|my life|it)|(?:would|will|do I need to) (?:kill me|end (?:it|my life)))\b",
        r"\b(?:enough|work) to (?:kill me|end my life)\b|\bguarantee my death\b|\bhow long (?:\w+ ){0,4}?(?:bleed out|to die from)\b",
        # "Will sodium nitrite kill me? Is it painful": asking whether a means of self-poisoning would kill the writer
        # is researching it (a cold, a drink or the heat are health worries, not means).
        r"\b(?:will|would|could|can|does|do) (?:[\w-]+ ){0,3}?(?:sodium nitrite|nitrite|cyanide|bleach|antifreeze|insulin|tylenol|paracetamol|acetaminophen|pills|tablets|an overdose|helium|rat poison|poison) (?:[\w-]+ ){0,2}?kill me\b[^.!?\n]{0,40}\?",
        # "What is the least painful way to die?", "is hanging too painful": asking which way, or how a method of
        # suicide feels, is researching it (a tattoo or childbirth is not a method).
        r"\b(?:least|less) painful (?:way|method|means)s? (?:to|of) (?:die|dying|go|kill (?:myself|yourself|oneself)|end (?:it|my life|things)|commit suicide|suicide)\b",
        r"\b(?:painless|quickest|easiest|fastest|surest|best) (?:way|method|means)s? (?:to|of) (?:die|dying|kill (?:myself|yourself|oneself)|end my life|commit suicide|suicide)\b",
        rf"\b(?:is|are|would|does) {_METHOD_ACT}(?: (?:too|very|really|that|so))? (?:painful|painless|quick|fast|hurt)\b",
        rf"\bhow (?:painful|quick|fast) (?:is|would be) {_METHOD_ACT}\b"),
     "thought thinking think worked figured know picturing imagining planning planned plan od pills tablets meds "
     "paracetamol enough work guarantee how nitrite cyanide bleach antifreeze insulin tylenol acetaminophen overdose "
     "helium poison painful painless quickest easiest fastest surest best hanging drowning overdosing slitting "
     "bleeding shooting"),
    # Preparation counts only next to the client's own ideation (screen._SUPPORTING): alone, "everything's
    # ready" or "I loaded the gun" are a move or a shoot.
    ("preparation", _rx(
        r"\b(?:I(?:'ve| have)?|got|have) (?:got )?everything (?:ready|sorted|in place|planned)\b",
        r"\bI know exactly (?:how (?:much|many)|which|where|what I(?:'d| would)|when)\b",
        r"\b(?:thought|thinking|think) (?:about )?(?:it )?how I(?:'d| would|'ll| will| could) (?:do it|use|go)\b(?! (?:differently|better|again|right|about|with|for|to|on))",
        r"\bcounted (?:out )?(?:the|my|all the|all my|\w+'s) (?:\w+ )?(?:tablets|pills|meds)\b",
        r"\b(?:loaded|cleaned|bought|got out|took out) (?:the|my|a|dad's|my dad's) (?:\w+ )?(?:gun|pistol|rifle|shotgun|revolver)\b"),
     "everything know counted loaded cleaned bought got took thought thinking think"),
    ("attempt", _rx(
        r"\bI (?:tried|attempted|try) (?:to )?(?:kms|end(?:ing)? myself|ending it|ending my life|overdose|od|overdosing|slit(?:ting)? my wrists|cut(?:ting)? my (?:wrists|throat|carotid|neck))\b",
        r"\bI (?:tried|attempted) (?:taking|swallowing|to take|to swallow) (?:a (?:whole )?(?:bottle|packet|box|bunch)|all|loads|a handful) of\b",
        r"\b(?:almost|nearly) (?:killed|ended) myself\b|\bmy (?:next|failed|latest|most recent) attempt\b|\bfailed (?:suicide )?attempt\b",
        r"(?<![\w',] )(?<![\w'])(?:attempted suicide|tried to kill myself|cut my wrists|slit my wrists|overdosed)\b",
        r"\b(?:swallowed|took|taken) [^.!?]{0,30}\bto (?:overdose|od|die|kill myself)\b",
        r"\b(?:took|taken|swallowed) (?:a bunch|a handful|loads|all|a whole (?:packet|bottle|box)) (?:of )?(?:my |\w+'s |my \w+'s )?(?:\w+ )?(?:pills|tablets|meds|antidepressants)\b(?! (?:for|as|with (?:food|water|breakfast|dinner)))",
        r"\b(?:took|taken|swallowed) (?:all )?(?:of )?my (?:\w+ )?(?:pills|tablets|meds) with (?:a bottle of|half a bottle of|alcohol|whisky|vodka|wine|gin)\b"),
     "tried attempted try almost nearly next failed latest recent attempt cut slit overdosed swallowed took taken"),
    ("attempt", _rx(  # an attempt stopped short, dated like every attempt ("today": high; "when I was 15": past)
        r"\bI was (?:going|about|ready) to (?:try (?:and|to) )?(?:kill myself|end (?:it all|my life)|take my (?:own )?life)\b"),
     "going about ready"),
    ("self_harm", _rx(
        r"(?<![\w',] )(?<![\w'])(?:just |also )?(?:hurt|cut|burn(?:ed|t)?|punch(?:ed)?|scratch(?:ed)?) myself (?:again|last night|yesterday|today|tonight|this (?:morning|week))\b",
        r"\b(?:keep|kept|been|started|I) (?:cutting|burning|punching|scratching) myself\b(?! (?:on|shaving|cooking|by accident|accidentally|with the (?:kettle|iron|oven|pan)))"),
     "hurt cut burn burned burnt punch punched scratch scratched keep kept been started cutting burning punching "
     "scratching"),
    # Wordings of real posts to forums and counselors (the dev halves of crisis_reddit, crisis_reddit_2 and
    # crisis_counselchat) that the patterns above missed: adverbs stacked before "suicidal", causes ("making me
    # suicidal"), "commit suicide", idioms of not existing, and methods named without "kill".
    ("active_ideation", _rx(
        r"\b(?:I(?:'m| am)|feel(?:ing)?|felt|been|was|get|getting|went) (?:(?:still|always|constantly|extremely|incredibly|super|now|more|even|really|so|very|quite|pretty|fucking|increasingly|genuinely) ){1,2}suicidal\b",
        r"\b(?:making|makes|made|make) me (?:\w+ )?suicidal\b",
        r"\bsuicidal (?:tendenc(?:y|ies)|tendanc\w*|impulses?|episodes?|moods?|again)\b",
        r"\bwhy (?:I )?shouldn't (?:just )?kill myself\b",
        r"\b(?:should have|should've) (?:just )?killed myself\b",
        r"\b(?:want|wanted|wanting|need|needed|ready|tempted|going) to commit suicide\b",
        r"\b(?:courage|guts|nerve) (?:for|to) (?:commit )?(?:suicide|kill myself|end (?:it|my life))\b",
        r"\bmy (?:gut|brain|mind|head|heart|body|thoughts|instincts?|depression)(?: \w+){0,2}? (?:begging|begs|begged|telling|tells|told|urging|urges|pushing|pushes|wants|wanted) me to (?:commit suicide|kill myself|end (?:it|my life)|die\b(?! (?:of|from|laughing)))"),
     "suicidal kill killed commit courage guts nerve gut brain mind head heart body thoughts instinct instincts "
     "depression"),
    ("passive_death_wish", _rx(
        r"\b(?:curl up (?:in|into) a ball|crawl (?:into|in) a hole|lay down|lie down) and die\b",
        r"\bwish (?:my (?:mom|mum|mother|dad|father|parents)|they) (?:had )?never had me\b",
        r"\b(?:could|should|want to|ready to|thinking (?:of|about)|think (?:of|about)) (?:just )?leav(?:e|ing) this (?:world|earth|planet)\b(?! (?:of|behind|for|to))",
        r"\bwhy (?:should|would|do) I (?:go on|keep|continue) (?:living|going on|to live)\b|\bwhy (?:should|would) I (?:stay|keep) alive\b",
        r"\bbetter off (?:if|when) I (?:killed myself|kill myself|ended it|end it|took my (?:own )?life)\b",
        r"\b(?:don't|do not) (?:even |really |genuinely |honestly |truly )?care (?:if|whether) I die\b",
        r"\bwish I could (?:just )?be gone\b|\b(?:want|wanna) to be gone\b(?! (?:from|for|by|before|when|tomorrow|next|soon|early|at))",
        r"\bwish I could (?:just )?(?:meet with|get in|have|be in) an accident\b",
        r"\bwish(?:ed)? I (?:would've|would have|had|'d|could have|could've) died\b",
        r"\b(?:fall asleep|go to sleep|sleep)(?: \w+){0,3} and never wake up\b",
        r"\b(?:don't|do not) want to have to wake up\b",
        r"\b(?:hope|hoping|pray|praying)\b[^.!?]{0,30}\b(?:kills|will kill|would kill) me\b",
        r"\bdeserve (?:to die|death)\b",
        r"\bI should (?:just )?(?:stop breathing|not exist|not be alive)\b",
        r"\bwant it to all end\b"),
     "die wish world earth planet living live alive better care gone accident died wake kills kill deserve breathing "
     "exist end"),
    ("plan", _rx(
        r"\b(?:made|tied|making|tying|tie|make|bought|got|have) (?:a|the|my) noose\b",
        r"\b(?:suicide|goodbye) letters?\b",
        r"\b(?:finding|find|looking (?:up|for)|searching (?:for )?|researching|googling|googled) (?:for )?(?:ways|methods) to (?:commit suicide|kill myself|die|end (?:it|my life))\b"),
     "noose letter letters ways methods"),
    ("method_ideation", _rx(
        r"\bblow(?:ing)? my (?:own )?(?:brains|head) (?:out|off)\b|\bput(?:ting)? a bullet (?:in|through) my (?:own )?(?:head|brain|skull)\b",
        r"\bthrow(?:ing)? myself (?:into traffic|in front of|under (?:a|the)|off (?:a|the))\b",
        r"\b(?:jump|step|walk) (?:in front of|under) (?:a|the) (?:train|bus|lorry|truck|car|tube|metro|subway)\b|\bjump (?:in|into|onto) the (?:metro|tracks|subway|tube)\b",
        r"\bset(?:ting)? myself on fire\b",
        r"\b(?:drink|drinking|swallow|swallowing) bleach\b"),
     "blow blowing bullet throw throwing jump step walk set setting drink drinking swallow swallowing"),
    ("attempt", _rx(
        r"\bI (?:just )?tried (?:attempting|committing|to commit) suicide\b",
        r"\b(?:I(?:'ve| have)? had|I made|I survived) (?:a |an |two |three |several |multiple |many |previous |past |recent )?(?:\w+ )?suicide attempts?\b"),
     "tried had made survived"),
    ("self_harm", _rx(
        r"\b(?:usually|always|often|sometimes|then|and|constantly) (?:cutting|burning|hurting|harming|scratching) myself\b(?! (?:off|out|from|away|shaving|on|by accident|accidentally|at the gym|playing|lifting|running|while))",
        r"\bself[- ]?harm(?:ing)? (?:is|has been|has gotten|is getting|got) (?:out of control|worse)\b",
        r"\bsince I(?:'ve| have| last)? (?:cut|self[- ]?harmed|hurt myself)\b(?! (?:the|a|an|some|up|off|back|down|out|it|them|him|her|\w+'s)\b)"),
     "cutting burning hurting harming scratching self selfharm since"),
    ("self_harm_thoughts", _rx(
        r"\bso (?:that )?I can (?:hurt|cut|harm|burn) myself\b"),
     "myself"),
]
# Third-person patterns: whose risk it is comes from the nearest person named before.
_THIRD_RULES: list[tuple[str, tuple[str, ...], str]] = [
    ("ideation3", _rx(
        rf"\b(?:wants?|wanted|wanting|wish(?:es|ed)?|talk(?:s|ed|ing)? about|think(?:s|ing)? about|thought about|threaten(?:s|ed|ing)?) (?:to die|to be dead|{_PRO3} (?:was|were) dead|(?:to )?(?:kill|killing|hurt|hurting|harm|harming|cut|cutting) {_REFL3}|dying|suicide|(?:to )?end(?:ing)? (?:it all|{_PRO3}r? life|his life|her life|their life))\b(?! (?:of|laughing))",
        rf"\b{_PRO3}(?:'s| is| was| has been| have been|'ve been| seems?| seemed| feels?| felt) (?:really |so |very |quite )?suicidal\b",
        rf"\bwish(?:es|ed)? {_PRO3} (?:had never been|was never|were never|wasn't|weren't) born\b",
        r"\b(?:doesn't|does not|didn't|did not) want to (?:live|be alive|be here|exist)\b|\b(?:rather|shouldn't) (?:not )?(?:be alive|exist)\b"),
     "die dead himself herself themselves themself dying suicide suicidal life all born end live alive here exist"),
    ("harm3", _rx(
        rf"\b(?:tried|try|trying|attempted) to (?:kill|hang|drown|poison|end) (?:{_REFL3}|his life|her life|their life|it all)\b",
        r"\b(?:took|had taken|has taken|taken) (?:an|a) overdose\b|\b(?:had |has )?overdosed\b|\battempted suicide\b",
        rf"\b(?:cut|cutting|burn(?:ed|t|ing)|scratch(?:ed|ing)|harm(?:ed|ing)?) {_REFL3}\b",
        r"\b(?:has been|'s been|is|was|started|starting|had been|have been) self[- ]?harm(?:ing)?\b|\bself[- ]?harms\b",
        rf"\b(?:bang(?:s|ed|ing)?|hit(?:s|ting)?|punch(?:es|ed|ing)?|slap(?:s|ped|ping)?|scratch(?:es|ed|ing)?|burn(?:s|ed|ing)?|bit(?:es|ing)?) (?:{_REFL3}|his head|her head|their head|his (?:arms?|legs?|face|wrists?|skin)|her (?:arms?|legs?|face|wrists?|skin))\b",
        rf"\b{_PRO3}(?:'s| is| has| have|'ve)? (?:been |started )?cutting\b|\b{_PRO3} cuts? (?:again|his|her|their)\b|\b{_PRO3} cut (?:again|his|her|their) (?:arms?|legs?|wrists?)\b|\bcuts on (?:his|her|their) (?:wrists?|arms?|legs?)\b",
        r"\brefus\w+ to eat\b|\b(?:took|taken) (?:a handful|loads|a bunch) of (?:his|her|their)\b"),
     "himself herself themselves themself life all overdose overdosed attempted self selfharm bang bangs banged banging hit "
     "hits hitting punch punches punched punching slap slaps slapped slapping scratch scratches scratched scratching burn "
     "burns burned burning bite bites biting cutting cuts cut refuse refuses refused refusing took taken"),
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
                    cache[rel] = re.compile("|".join(f"(?:{a})" for a in rel), ICASE)
                out.setdefault(w, []).append((kind, cache[rel], third))
            missing = [a for a in alts if a not in reached]
            if missing:
                raise AssertionError(f"crisis rule {kind}: no trigger word reaches {missing[0]!r}")
    return {w: tuple(v) for w, v in out.items()}


TRIGGERS = _compile_rules()
WORD = re.compile(r"[a-z]+")
TRIGGER_WORDS = frozenset(TRIGGERS)

NEGATION = re.compile(
    r"(?:\bnot|n't|\bnever|\bno|\bnor|\bwithout|\b(?:dont|wont|cant|didnt|wouldnt|isnt|aint))\s+"
    r"(?:(?:that|ever|really|actually|even|gonna|going|to|want|wanting|planning|plan|saying|say|said|mean|meant|feel|feeling|felt|be|been|being|I|I'd|I'm|I'll|I've|would|"
    r"will|about|thinking|think|thought|of|do|did|it|like|have|had|any|a|seriously|considered|consider|try|"
    r"tried|anymore|currently|right|now|way|longer|once|honestly|truly|ever|properly|extreme|serious|severe|active|strong|many|much|those|these|such|major)\s+){0,4}$", ICASE)
NOT_NEGATION = re.compile(r"\bnot (?:just|only)\s+(?:\S+\s+){0,4}$|\bnever (?:been )?(?:this|so)\b", ICASE)
UNTIL_NOW = re.compile(r"^[^.!?]{0,40}\buntil (?:now|recently|this (?:year|month|week)|last (?:week|month))", ICASE)
HYPOTHETICAL = re.compile(
    r"\b(?:what if|if|suppose|supposing|imagine|in case|hypothetically|asked (?:me )?(?:if|whether)|asks? (?:if|whether)"
    r"|in the (?:film|movie|book|show|series|song|novel|game|play)|the character|lyrics?|joke|joking|jokes|lol|lmao|jk)\b", ICASE)
SUBJECT = re.compile(r"\b(?:[Ii]|[Ii]'m|[Ii]'ve|[Ii]'d|[Ii]'ll|me|[Hh]e|[Ss]he|[Tt]hey|[Hh]e's|[Ss]he's|[Tt]hey're|"
                      r"[Mm]y \w+|[A-Z][a-z]+)\b(?!')")
# Patterns that can start without their subject ("wanting to die"): the clause says whose wish it is.
SUBJECTLESS = {"passive_death_wish", "active_ideation", "self_harm_thoughts", "no_return"}
SUBJECT3 = re.compile(
    r"\b(?:i|i'm|i've|i'd|me|my(?= self)|(he|she|they)|(a|an|the|my|our|his|her|their) (caller|client|patient|customer|"
    r"friend|son|daughter|child|kid|boy|girl|teen|teenager|stepson|stepdaughter|brother|sister|mum|mom|mother|dad|"
    r"father|husband|wife|partner|boyfriend|girlfriend|colleague|flatmate|roommate|student|pupil|neighbou?r))\b", ICASE)
HYP_EXCEPT = re.compile(r"\b(?:know|sure|wonder|wondering|unsure|ask myself|asking myself) (?:if|whether)\b"
                         r"|\bif I'?m (?:honest|being honest|being real|truthful)\b", ICASE)
CLAUSE_BREAK = re.compile(r"[.!?;:\n]|,\s|\bbut\b|\bthough\b|\bbecause\b|\band\b(?= I\b)", ICASE)
TOLD_TO = re.compile(r"\b(?:said|says|told me|tells me|telling me|texted|wrote)\s+(?:that\s+)?I\s+should\s+"
                      r"(?:just\s+|go\s+)?$", ICASE)
END_WITH = re.compile(r"\s+(?:for good )?(?:with|between)\s+(?:him|her|them|us|me|[A-Z][a-z]+|"
                       r"my (?:boyfriend|girlfriend|partner|husband|wife|ex|fianc\w*))\b")
# "I've been doing it again/since ...": self-harm only where the text before says what "it" is (cocaine, medication,
# a hobby otherwise). The words of self-harm within IT_REACH_CHARS before the match.
DOING_IT = re.compile(r"\bdoin[g']? it\b", ICASE)
SELF_HARM_CONTEXT = re.compile(r"\b(?:cut|cuts|cutting|scratch\w*|bit|bite|biting|burn\w*|blister\w*|bleed\w*|blood\w*|"
                               r"marks?|scars?|self[- ]?harm\w*|wrists?|forearms?|arms?|thighs?|ankles?|legs?|skin|"
                               r"lighter|blades?|razors?|hurt(?:ing)? (?:myself|himself|herself|themselves))\b", ICASE)
IT_REACH_CHARS = 300
RELATIONSHIP = re.compile(r"\b(?:boyfriend|girlfriend|partner|husband|wife|relationship|marriage|engagement|"
                           r"dating|fianc\w*|him|her|ex|break up|breaking up|split up|divorce)\b", ICASE)
_NUM = (r"(?:\d+|five|six|seven|eight|nine|ten|eleven|twelve|thirteen|fourteen|fifteen|sixteen|seventeen|eighteen|"
        r"nineteen|twenty|thirty|forty|fifty)")
PAST = re.compile(rf"\b(?:years? ago|when (?:I|he|she|they) (?:was|were) (?:{_NUM}|a kid|a child|young|little|"
                   r"a teen\w*|at (?:school|uni|college)|in (?:school|college|my teens))"
                   r"|when (?:I|he|she) was \w+teen|as a (?:teen\w*|kid|child)"
                   r"|(?:in|for most of|during|through) (?:high school|secondary school|my teens|my twenties|year \d+)"
                   r"|in the (?:seventies|eighties|nineties|\d0s|'\d0s)"
                   r"|used to|back then|back in|(?:a long time|ages|decades) ago|last year|\d+ years|in (?:19|20)\d\d"
                   r"|before (?:he|she|they) died|a few years)\b", ICASE)
# Recent wins over past ("I used to cut, and I did it again last night"): the C-SSRS screener's window is
# the past three months, and a mention of now is the part that needs acting on.
RECENT = re.compile(r"\b(?:last night|yesterday|this (?:morning|week|weekend|month|term)|last (?:week|weekend|month|night)"
                     r"|tonight|today|(?:a few|two|three|four|five|\d+|couple of) (?:days|weeks|nights) ago|again|recently"
                     r"|(?:a|one) (?:day|week|fortnight) ago|(?:since|for) (?:a|about a|nearly a|the last) (?:month|week)|this month|since (?:christmas|xmas|easter|the summer|summer|september|the start of term|my bday)|most weeks|every few days|once a week|times this (?:week|month)"
                     r"|at the weekend|on (?:mon|tues|wednes|thurs|fri|satur|sun)day|at bedtime|still|keeps?"
                     r"|every (?:day|night)|most (?:days|nights)|has been|'s been|have been|'ve been|started|starting)\b", ICASE)
# A quote: double quotes, or single quotes opened after a space and closed before one; an apostrophe inside
# ("'I'm done'") is followed by a letter, so it does not close the quote.
QUOTE = re.compile(r"[\"“]([^\"“”]{1,400})[\"”]|(?:(?<=^)|(?<=[\s(:,]))[‘']((?:[^‘’'\n]|'(?=\w))*)[’'](?=[\s.,!?;:)]|$)")
SPEAKER = re.compile(r"\b(I|he|she|they|people|everyone|everybody|someone|somebody|you|the \w+|my [\w-]+(?: [\w-]+)?|[A-Z][a-z]+)\s+"
                      r"(?:\w+\s+){0,2}?(?:said|says|say|told|tells|texted|texts|wrote|writes|screamed|shouted|whispered|"
                      r"yelled|asked|asks|goes|went|keeps saying|kept saying|was like|is like|thought|think|thinking|cried)\b")
PERSON = re.compile(
    r"\b(?:my|our|his|her|their)\s+(?:\d+[- ](?:year[- ]old|yo)\s+|(?:little|eldest|youngest|oldest|older|younger|teenage|baby|middle|best|"
    r"\w+-year-old)\s+)*(son|daughter|child|kid|boy|girl|teen|teenager|toddler|stepson|stepdaughter|grandson|granddaughter|"
    r"grandchild|foster (?:son|daughter|child|kid)|nephew|niece|brother|sister|friend|mum|mom|mother|dad|father|husband|wife|"
    r"partner|boyfriend|girlfriend|colleague|coworker|flatmate|roommate|ex|cousin|uncle|aunt|neighbou?r|client|patient|"
    r"student|pupil)s?\b|\b(someone|somebody|people|a person|anyone|a friend)\b|\b(?:she|he)(?:'s| is) (?:only |just )?"
    r"(\d+|five|six|seven|eight|nine|ten|eleven|twelve|thirteen|fourteen|fifteen|sixteen|seventeen)\b"
    r"|\b(?:my|our)\s+(\d+|five|six|seven|eight|nine|ten|eleven|twelve|thirteen|fourteen|fifteen|sixteen|seventeen)"
    r"[- ]year[- ]old\b", ICASE)
DEPENDENT = {"son", "daughter", "child", "kid", "boy", "girl", "teen", "teenager", "toddler", "stepson", "stepdaughter",
              "grandson", "granddaughter", "grandchild"}
AGES = {"five", "six", "seven", "eight", "nine", "ten", "eleven", "twelve", "thirteen", "fourteen", "fifteen", "sixteen",
         "seventeen"}

# ------------------------------------------------------------------------------------- normalisation
# Typography that keeps one character per character: curly apostrophes and quotes, unicode dashes. 101 of
# the 820 dev posts of cssrs_posts.jsonl write "don’t"; every pattern above is written with "'".
SAME_LENGTH = str.maketrans({"’": "'", "‘": "'", "ʼ": "'", "`": "'", "´": "'", "“": '"', "”": '"', "„": '"',
                             "‐": "-", "‑": "-", "–": "-", "—": "-", "―": "-"})
# Spellings that change length: algospeak, text-speak and dropped apostrophes, each rewritten to the
# spelling the patterns know. Word-bounded and case-insensitive; evidence spans are mapped back to the
# original text, so a match on "sewerslide" shows "sewerslide".
SPELLINGS: dict[str, str] = {
    r"unaliving": "killing", r"unalived": "killed", r"unalive(?= (?:my|him|her|them)sel)": "kill", r"unalive": "die",
    r"sewer ?slide|su[iy]c[iy]de|suicde|sucide|suiside|suic[iy]de": "suicide", r"sewer ?slidal|suicdal|suisidal": "suicidal",
    r"s3lf[- ]?h[a@]rm|self[- ]?h@rm": "self harm", r"sh'?d": "self harmed",
    r"(?:(?<=on )|(?<=my )|(?<=of )|(?<=do )|(?<=did )|(?<=to )|(?<= n )|(?<=from ))sh(?!\s*[!*])": "self harm", r"ctb": "suicide",
    r"my ?sel[fv](?![- ]?h[a@]rm|-| (?:esteem|worth|confidence|image|respect|doubt|care|control))|myslef|meself": "myself", r"cant": "can't", r"dont": "don't", r"wont": "won't", r"didnt": "didn't",
    r"wouldnt": "wouldn't", r"doesnt": "doesn't", r"isnt": "isn't", r"wasnt": "wasn't", r"aint": "ain't",
    r"couldnt": "couldn't", r"shouldnt": "shouldn't", r"havent": "haven't", r"im": "I'm", r"ive": "I've",
    r"id(?= (?:rather|be|never|like|want|love|just))": "I'd", r"i'?ll(?= (?:\w+ )?(?:kill|end|do|take))": "I'll",
    r"wanna": "want to", r"gonna": "going to", r"u": "you", r"ur": "your", r"r(?= (?:from|not))": "are",
    r"wud": "would", r"cud": "could", r"shud": "should", r"b(?= (?:the|better|easier|fine|ok))": "be",
    r"kno|knw": "know", r"wot|wat": "what", r"tho": "though", r"rly": "really", r"bc|cuz|coz|bcs": "because",
    r"w(?= (?:the|a|my|it|dying|this))": "with", r"2day": "today", r"2nite|tonite|2night|nite": "night",
    r"tmrw|tmr|2moro": "tomorrow", r"b4": "before", r"evry1|every1|evry ?one": "everyone", r"some1": "someone",
    r"any1": "anyone", r"no1": "no one", r"ppl": "people", r"dyin": "dying", r"disapear": "disappear",
    r"(?:think|hav|burn|punch|cutt|feel|go|noth|someth|everyth|anyth|try|hurt|harm|liv|kill|want|plann|wait|"
    r"hop|scratch|bang|hitt|do|text|say|study|be)in": "+g",
}
SPELLING = re.compile(r"\b(?:" + "|".join(f"({k})" for k in SPELLINGS) + r")\b", ICASE)
SPELLING_OUT = list(SPELLINGS.values())  # "+g": the word itself, its dropped g restored
# Three or more of one letter ("sooo", "dieee") to one: English words have at most two in a row.
REPEATS = re.compile(r"(?P<run>[a-z])(?P=run){2,}", ICASE)
