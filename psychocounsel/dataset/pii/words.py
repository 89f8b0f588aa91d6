"""Capitalised words that are not personal details, though a NER model or a gazetteer may say so.

Each list is here because that kind of word was masked on the development split or the demo speeches;
masking it hides what a counsellor needs ("Mum", "Eid", "CBT") without hiding anyone.
"""

from __future__ import annotations

import re

# What people call family and the divine.
FAMILY_AND_DIVINE = frozenset("""
mum mom mummy mommy mam mama mamma ma dad daddy papa pa pops nana nan nanna gran granny grandma grandpa
grandad granddad grandmother grandfather abuela abuelo abuelita abuelito amma appa ammi abbu nani dadi
baba babushka dedushka bà ông auntie aunty uncle sis bro babe baby honey hubby wifey
god jesus christ allah lord buddha satan devil santa
""".split())
HOLIDAYS = frozenset("""
christmas easter eid diwali holi ramadan ramzan hanukkah chanukah passover thanksgiving halloween
kwanzaa navratri tet nowruz vesak lent advent pentecost purim
""".split())
CALENDAR = frozenset("""
january february march april may june july august september october november december
monday tuesday wednesday thursday friday saturday sunday mondays tuesdays wednesdays thursdays fridays
saturdays sundays
""".split())
# Clinical and form acronyms that open a sentence or stand alone, read by NER as people or places.
ACRONYMS = frozenset("""
dob ssn nhs gp cbt dbt emdr act ms ocd adhd ptsd bpd ed er icu a&e hr id pin zip ivf aa na ai uk us eu
""".split())
TITLES = frozenset("dr mr mrs ms miss mx prof professor pastor father imam rabbi sheikh sir madam".split())
# Capitalised words that open a clause, never a name; they stop a cued name from running on.
CLAUSE_WORDS = frozenset("""
i i'm i've i'd i'll the a an he she it we they you this that these those and but or so who what when where
why how is was has had have does did if then just now also still because since after before yes no not
never always sometimes maybe please sorry thanks hi hello oh ok okay well everyone everybody nobody
someone somebody anyone anybody people everything nothing something
""".split())
NOT_PII = FAMILY_AND_DIVINE | HOLIDAYS | CALENDAR | ACRONYMS | TITLES | CLAUSE_WORDS


def key(word: str) -> str:
    """Lower case, no possessive, no surrounding punctuation: "Mum's" -> "mum"."""
    w = word.strip().strip(".,;:!?\"()[]").lower().replace("’", "'")
    return w.removesuffix("'s")


_OPENS = re.compile(r"(?:^|[.!?…)]\s*|[(\"“‘']\s*|\n\s*)$")


def opens_sentence(text: str, start: int) -> bool:
    """Whether ``text[start]`` opens a sentence, a parenthesis or a quote, or follows one: a capital there
    says nothing ("(Rubs eyes) Laid off ...")."""
    return _OPENS.search(text, max(0, start - 4), start) is not None
