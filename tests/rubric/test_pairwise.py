"""The pairwise judge's pure core: reading verdicts, and choice-mode verdicts from letter probabilities."""

import pytest

from psychocounsel.rubric.pairwise import VerdictParseError, choice_verdict, parse_verdict


def test_parse_verdict_is_strict():
    assert parse_verdict('```json\n{"rationale": "x", "winner": "B"}\n```') == ("B", "x")
    assert parse_verdict('{"winner": "Response A"}')[0] == "A"
    assert parse_verdict("[[A]]")[0] == "A" and parse_verdict("tie")[0] == "tie"
    for bad in ("", "A is better I think", '{"winner": "both are great"}', '{"score": 3}', '{"winner": '):
        with pytest.raises(VerdictParseError):
            parse_verdict(bad)
    assert choice_verdict([0.7, 0.3]) == "A" and choice_verdict([0.5, 0.5]) == "tie"
    assert choice_verdict([0.52, 0.48], tie_margin=0.05) == "tie"
