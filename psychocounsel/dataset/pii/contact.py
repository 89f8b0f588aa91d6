"""Ways to reach a person: URLs, emails, phone numbers and @handles, found with regular expressions.

The patterns lean towards precision on counseling text, which is full of numbers that are not phones
(ages, years, times like 10:30, dollar amounts, "100-1000"), so a phone must look like one:

- international: ``+`` or ``00`` then a country code and 8-15 digits in all (E.164 allows 15);
- North American: ``(555) 123-4567``, ``555-123-4567``, ``1-800-555-1234``, ``5551234567``;
- national with a trunk 0 (most of Europe, UK, India, Australia): ``020 7946 0958``, ``06 12 34 56 78``,
  10-12 digits in all.

Bare 7-digit local numbers (``555-1234``) are left alone: the same shape is a range ("100-1000").
Presidio's own ``PhoneRecognizer``/``UrlRecognizer``/``EmailRecognizer`` are not used: the first masks
such ranges, the second masks bare site names ("reddit.com"), and the third asks ``tldextract``, which
fetches the public suffix list over the network on first use.
"""

from __future__ import annotations

import re

from .spans import Found

# A URL is a scheme or www. form, or a bare domain followed by a path ("example.com/me"). A bare domain
# with no path ("reddit.com") is a site name, not a way to reach the client, so it stays.
_URL = re.compile(
    r"(?:\b(?:https?|ftp)://|\bwww\.)[^\s<>\"']+"
    r"|\b(?:[a-z0-9-]+\.)+(?:com|org|net|io|edu|gov|info|me|co|uk|de|fr|ly|app|dev|tv)/[^\s<>\"']*",
    re.IGNORECASE,
)
# Trailing punctuation belongs to the sentence, not the URL ("see example.com/a.").
_URL_TRAILING = ".,;:!?)]}'\""
_EMAIL = re.compile(r"(?<![\w.+-])[\w.+-]+@[a-z0-9-]+(?:\.[a-z0-9-]+)*\.[a-z]{2,}\b", re.IGNORECASE)
_NOT_BEFORE = r"(?<![\w$€£¥.,/:+-])"  # not part of an amount, decimal, date, path or longer number
_NOT_AFTER = r"(?![\w/:]|[.,]\d)"
_PHONE = re.compile(
    _NOT_BEFORE
    + r"(?:"
    # international: +CC or 00CC, then groups separated by one space, dot or hyphen (area code may be in parens)
    + r"(?:\+|00)\d{1,3}(?:[ .-]?\(?\d{1,5}\)?){1,6}"
    # North American Numbering Plan, optional leading 1
    + r"|(?:1[ .-]?)?(?:\(\d{3}\) ?|\d{3}[ .-]?)\d{3}[ .-]?\d{4}"
    # national number with a trunk 0
    + r"|0\d{1,4}(?:[ .-]?\d{2,8}){1,5}"
    + r")"
    + _NOT_AFTER
)
_HANDLE = re.compile(r"(?<![\w@./])@[A-Za-z_][A-Za-z0-9_.]{0,29}(?<!\.)")


def find_urls(text: str) -> list[Found]:
    out = []
    for m in _URL.finditer(text):
        s = m.group(0)
        core = s.rstrip(_URL_TRAILING)
        # keep a closing paren that the URL itself opened, e.g. wiki links
        if s[len(core):].startswith(")") and core.count("(") > core.count(")"):
            core += ")"
        if core:
            out.append(Found(m.start(), m.start() + len(core), "URL"))
    return out


def find_emails(text: str) -> list[Found]:
    return [Found(m.start(), m.end(), "EMAIL") for m in _EMAIL.finditer(text)]


def _phone_ok(s: str) -> bool:
    digits = sum(c.isdigit() for c in s)
    if s.startswith(("+", "00")):
        return 8 <= digits <= 15
    if s.startswith("0"):
        return 10 <= digits <= 12
    return digits in (10, 11)  # NANP, with or without the leading 1


def find_phones(text: str) -> list[Found]:
    return [Found(m.start(), m.end(), "PHONE") for m in _PHONE.finditer(text) if _phone_ok(m.group(0))]


def find_handles(text: str) -> list[Found]:
    return [Found(m.start(), m.end(), "HANDLE") for m in _HANDLE.finditer(text)]
