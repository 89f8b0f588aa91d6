"""PII masking: what is masked, and the numbers in counseling text that must stay."""

import pytest

from psychocounsel.dataset.pii import KINDS, scrub


@pytest.mark.parametrize("text, expected, kind", [
    ("write to john.doe+work@example.co.uk today", "write to [EMAIL] today", "EMAIL"),
    ("my email is Ana_M@mail.org.", "my email is [EMAIL].", "EMAIL"),
    ("call +44 20 7946 0958 please", "call [PHONE] please", "PHONE"),
    ("call +1 (555) 123-4567.", "call [PHONE].", "PHONE"),
    ("US (555) 123-4567 or", "US [PHONE] or", "PHONE"),
    ("dial 555-123-4567 now", "dial [PHONE] now", "PHONE"),
    ("dial 555.123.4567 now", "dial [PHONE] now", "PHONE"),
    ("dial 1-800-555-1234 now", "dial [PHONE] now", "PHONE"),
    ("UK mobile 07700 900123 ok", "UK mobile [PHONE] ok", "PHONE"),
    ("French 06 12 34 56 78 ok", "French [PHONE] ok", "PHONE"),
    ("India +91 98765 43210 ok", "India [PHONE] ok", "PHONE"),
    ("Berlin 0049 30 1234567 ok", "Berlin [PHONE] ok", "PHONE"),
    ("plain +447700900123 ok", "plain [PHONE] ok", "PHONE"),
    ("see https://example.com/a?b=1. Then", "see [URL]. Then", "URL"),
    ("or www.myblog.org/about), fine", "or [URL]), fine", "URL"),
    ("(https://en.wikipedia.org/wiki/Foo_(bar))", "([URL])", "URL"),
    ("my page mysite.com/me is", "my page [URL] is", "URL"),
    ("follow @jane_doe. thanks", "follow [HANDLE]. thanks", "HANDLE"),
    ("dm @Bob99 on insta", "dm [HANDLE] on insta", "HANDLE"),
])
def test_masks_each_kind(text, expected, kind):
    out, counts = scrub(text)
    assert out == expected
    assert counts == {k: int(k == kind) for k in KINDS}


@pytest.mark.parametrize("text", [
    "We met at 10:30 and again at 9.45 pm.",
    "It started in 1998, and by 2019 2020 2021 it was worse; 1990-2000 were fine.",
    "I owe $1,500 and my rent is $2,000,000 a year (joke), or £5000000000.",
    "I sleep 4-5 hours, I am 35, 5'10 and 150 lbs, and I take 0.5 mg.",
    "On 2023-05-12 or 01/02/2023 or 12.05.2023 it happened.",
    "Speeches of 100-1000 characters; code 555-1234; pi is 3.14159265358979.",
    "A site name like reddit.com is not a way to reach me.",
    "I'll be there @ 5pm, and the ratio is 3:2.",
])
def test_leaves_ordinary_numbers_and_words(text):
    out, counts = scrub(text)
    assert out == text
    assert sum(counts.values()) == 0


def test_email_inside_url_counts_once_as_url_and_handle_not_taken_from_email():
    out, counts = scrub("profile https://site.com/u?mail=a@b.com and mail a@b.com, cc @ann")
    assert out == "profile [URL] and mail [EMAIL], cc [HANDLE]"
    assert counts == {"EMAIL": 1, "PHONE": 0, "URL": 1, "HANDLE": 1}


def test_counts_several_of_a_kind():
    out, counts = scrub("a@x.com b@y.org +33 6 12 34 56 78")
    assert out == "[EMAIL] [EMAIL] [PHONE]"
    assert counts["EMAIL"] == 2 and counts["PHONE"] == 1
