"""Places too large to identify a person: countries, continents and first-level regions.

HIPAA's Safe Harbor rule (45 CFR 164.514(b)(2)) lists every geographic subdivision smaller than a state
as an identifier and leaves states and countries alone. Counseling text needs the large ones ("we fled
Syria", "I moved to Texas for work"), so a place the NER model finds is kept when it is in this list and
masked otherwise. Names that are also a city's ("New York", "Lagos", "Kano") are left out: the city is
the likelier reading, and masking is the safe side.
"""

from __future__ import annotations

# One-word names; the multi-word ones are in _MULTI.
_COUNTRIES = """
afghanistan albania algeria andorra angola antigua argentina armenia australia austria azerbaijan bahamas
bahrain bangladesh barbados belarus belgium belize benin bhutan bolivia bosnia botswana brazil brunei bulgaria
burundi cambodia cameroon canada chad chile china colombia comoros congo croatia cuba cyprus czechia denmark
djibouti dominica ecuador egypt england eritrea estonia eswatini ethiopia fiji finland france gabon gambia
georgia germany ghana greece grenada guatemala guinea guyana haiti honduras hungary iceland india indonesia
iran iraq ireland israel italy jamaica japan jordan kazakhstan kenya kiribati korea kosovo kuwait kyrgyzstan
laos latvia lebanon lesotho liberia libya liechtenstein lithuania luxembourg madagascar malawi malaysia
maldives mali malta mauritania mauritius mexico micronesia moldova monaco mongolia montenegro morocco
mozambique myanmar burma namibia nauru nepal netherlands holland nicaragua niger nigeria macedonia norway oman
pakistan palau palestine panama paraguay peru philippines poland portugal qatar romania russia rwanda samoa
scotland senegal serbia seychelles singapore slovakia slovenia somalia spain sudan suriname sweden switzerland
syria taiwan tajikistan tanzania thailand togo tonga trinidad tunisia turkey turkiye turkmenistan tuvalu
uganda ukraine uae uk britain usa us u.s. u.s.a. america uruguay uzbekistan vanuatu vatican venezuela vietnam
wales yemen zambia zimbabwe
"""
_MULTI = [
    "burkina faso", "cape verde", "costa rica", "czech republic", "dominican republic", "east timor",
    "el salvador", "equatorial guinea", "ivory coast", "south korea", "north korea", "new zealand",
    "north macedonia", "northern ireland", "papua new guinea", "saudi arabia", "san marino", "sierra leone",
    "south africa", "south sudan", "sri lanka", "united arab emirates", "united kingdom", "great britain",
    "united states", "viet nam", "hong kong", "puerto rico",
]
_CONTINENTS_AND_AREAS = [
    "africa", "asia", "europe", "north america", "south america", "latin america", "central america",
    "the caribbean", "caribbean", "middle east", "the middle east", "the gulf", "gulf", "scandinavia",
    "the balkans", "balkans", "oceania", "antarctica", "east africa", "west africa", "southeast asia",
    "south asia", "east asia", "the west", "the uk", "the us", "the usa", "the states", "the netherlands",
    "the philippines", "mainland", "the mainland",
]
_US_STATES = [
    "alabama", "alaska", "arizona", "arkansas", "california", "colorado", "connecticut", "delaware",
    "florida", "hawaii", "idaho", "illinois", "indiana", "iowa", "kansas", "kentucky", "louisiana", "maine",
    "maryland", "massachusetts", "michigan", "minnesota", "mississippi", "missouri", "montana", "nebraska",
    "nevada", "new hampshire", "new jersey", "new mexico", "north carolina", "north dakota", "ohio",
    "oklahoma", "oregon", "pennsylvania", "rhode island", "south carolina", "south dakota", "tennessee",
    "texas", "utah", "vermont", "virginia", "washington", "west virginia", "wisconsin", "wyoming",
]
_OTHER_REGIONS = [
    # Canada
    "alberta", "british columbia", "manitoba", "new brunswick", "newfoundland", "nova scotia", "ontario",
    "prince edward island", "quebec", "saskatchewan", "yukon", "nunavut",
    # Australia
    "new south wales", "queensland", "victoria", "tasmania", "western australia", "south australia",
    "northern territory",
    # India
    "andhra pradesh", "arunachal pradesh", "assam", "bihar", "chhattisgarh", "goa", "gujarat", "haryana",
    "himachal pradesh", "jharkhand", "karnataka", "kerala", "madhya pradesh", "maharashtra", "manipur",
    "meghalaya", "mizoram", "nagaland", "odisha", "punjab", "rajasthan", "sikkim", "tamil nadu", "telangana",
    "tripura", "uttar pradesh", "uttarakhand", "west bengal", "kashmir",
    # China
    "anhui", "fujian", "gansu", "guangdong", "guangxi", "guizhou", "hainan", "hebei", "heilongjiang", "henan",
    "hubei", "hunan", "jiangsu", "jiangxi", "jilin", "liaoning", "qinghai", "shaanxi", "shandong", "shanxi",
    "sichuan", "yunnan", "zhejiang", "tibet", "xinjiang", "inner mongolia",
    # Germany, Mexico, Pakistan: the states whose names are not also a large city's
    "bavaria", "saxony", "lower saxony", "hesse", "thuringia", "brandenburg", "baden-württemberg",
    "north rhine-westphalia", "jalisco", "sonora", "sinaloa", "michoacán", "michoacan", "guerrero",
    "sindh", "balochistan", "khyber pakhtunkhwa",
]

REGIONS = frozenset(
    _COUNTRIES.split()
    + _MULTI + _CONTINENTS_AND_AREAS + _US_STATES + _OTHER_REGIONS
)


def is_region(name: str) -> bool:
    """True for a country, continent or first-level region: too large to identify anyone."""
    key = " ".join(name.lower().replace("’", "'").split()).strip(".,;:!?'\"()")
    return key in REGIONS
