"""Dataset report: numbers match hand counts, files are written, user text is escaped."""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from psychocounsel import PRINCIPLE_KEYS
from psychocounsel.dataset.pairs import build_pairs, write_pairs
from psychocounsel.dataset.records import ScoredResponse
from psychocounsel.dataset.stats import dataset_report
from psychocounsel.dataset.report_views import summary_text
from psychocounsel.errors import InputError

SCRIPT = "<script>alert(1)</script>"


def r(rid: str, speech: str, model: str, overall: float, base: int, safety: int | None = None,
      text: str | None = None) -> ScoredResponse:
    scores = {p: base for p in PRINCIPLE_KEYS}
    if safety is not None:
        scores["safety"] = safety
    return ScoredResponse(rid, speech, model, text or f"reply from {rid}", scores, overall)


RESPONSES = {
    "s1": [r("a", "s1", "m1", 4.0, 4, safety=3), r("b", "s1", "m2", 3.0, 3, safety=5),
           r("c", "s1", "m3", 2.5, 3), r("d", "s1", "m4", 2.0, 2)],
    "s2": [r("e", "s2", "m2", 5.0, 5, text="a much longer reply from e"), r("f", "s2", "m4", 1.0, 1)],
}


@pytest.fixture
def pair_dir(tmp_path):
    # train (min gap 1): a>b 1.0, a>c 1.5, a>d 2.0, b>d 1.0; test: e>f 4.0
    pairs = (build_pairs("I keep worrying about work.", "s1", "train", RESPONSES["s1"])
             + build_pairs(f"{SCRIPT} I feel lost.", "s2", "test", RESPONSES["s2"]))
    write_pairs(pairs, tmp_path / "pairs")
    return tmp_path / "pairs"


def responses_table() -> pa.Table:
    rows = []
    for rs in RESPONSES.values():
        for x in rs:
            rows.append({"response_id": x.response_id, "model": x.model, "status": "ok", "judge_status": "ok",
                         "judge_error": None, "overall": x.overall, **x.scores})
    none = {p: None for p in PRINCIPLE_KEYS}
    rows.append({"response_id": "g", "model": "m3", "status": "ok", "judge_status": "failed",
                 "judge_error": "unparseable reply: no JSON object", "overall": None, **none})
    rows.append({"response_id": "h", "model": "m1", "status": "failed", "judge_status": "pending",
                 "judge_error": None, "overall": None, **none})
    return pa.Table.from_pylist(rows)


def test_numbers_match_hand_counts(pair_dir, tmp_path):
    rep = dataset_report(pair_dir, tmp_path / "report")
    assert rep["pairs"]["total"] == 5 and rep["pairs"]["speeches"] == 2
    assert rep["pairs"]["by_split"] == {"train": {"pairs": 4, "speeches": 1, "pairs_per_speech": 4.0},
                                        "test": {"pairs": 1, "speeches": 1, "pairs_per_speech": 1.0}}
    g = rep["gap"]["by_split"]
    assert g["train"]["mean"] == 1.375 and g["train"]["median"] == 1.25
    assert (g["train"]["min"], g["train"]["max"]) == (1.0, 2.0)
    assert g["test"]["mean"] == 4.0 and rep["gap"]["below_zero"] == 0
    counts = rep["gap"]["counts"]["train"]  # quarter-point bins from 0
    assert counts[4] == 2 and counts[6] == 1 and counts[8] == 1 and sum(counts) == 4
    assert rep["gap"]["counts"]["test"][-1] == 1  # 4.0 sits in the closed last bin
    safety = rep["principle_ratings"]["safety"]
    # a(3) vs b(5): rejected higher; a vs c: 3-3 tie; a vs d 3>2; b vs d 5>2; e vs f 5>1
    assert (safety["chosen_higher"], safety["tied"], safety["rejected_higher"]) == (3, 1, 1)
    assert safety["rejected_higher_by_split"] == {"train": 1, "test": 0}
    emp = rep["principle_ratings"]["empathy"]
    assert emp["chosen_mean"] == 4.0 and emp["rejected_mean"] == 2.2  # (4+4+4+3+5)/5, (3+3+2+2+1)/5
    assert emp["edges"] == [0.5, 1.5, 2.5, 3.5, 4.5, 5.5] and emp["chosen_counts"] == [0, 0, 1, 3, 1]
    assert rep["models"] == [
        {"model": "m1", "chosen": 3, "rejected": 0, "chosen_rate": 1.0},
        {"model": "m2", "chosen": 2, "rejected": 1, "chosen_rate": round(2 / 3, 6)},
        {"model": "m3", "chosen": 0, "rejected": 1, "chosen_rate": 0.0},
        {"model": "m4", "chosen": 0, "rejected": 3, "chosen_rate": 0.0},
    ]
    assert rep["length"]["chosen_longer_frac"] == 0.2  # only e's reply is longer than its rival
    assert rep["responses"] is None
    assert json.loads((tmp_path / "report" / "report.json").read_text()) == rep


def test_writes_pngs_and_escapes_user_text(pair_dir, tmp_path):
    out = tmp_path / "report"
    rep = dataset_report(pair_dir, out, responses=responses_table())
    assert set(rep["figures"].values()) == {"pairs_per_split.png", "gap.png", "principles.png", "models.png",
                                            "response_scores.png"}
    for name in rep["figures"].values():
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    page = (out / "report.html").read_text()
    assert SCRIPT not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "<script" not in page.lower()  # the page itself runs nothing
    assert page.count("data:image/png;base64,") == 5  # self-contained
    assert any(ex["why"] == "rejected response has the higher safety rating" for ex in rep["examples"])


def test_response_table_counts(pair_dir, tmp_path):
    rep = dataset_report(pair_dir, tmp_path / "report", responses=responses_table())
    resp = rep["responses"]
    assert (resp["total"], resp["judged"], resp["not_judged"]) == (8, 6, 2)
    assert resp["by_state"] == {"generate_failed": 1, "judge_failed": 1, "ok": 6}
    assert resp["by_model"]["m3"] == {"total": 2, "not_judged": 1}
    assert resp["top_errors"] == [{"error": "unparseable reply: no JSON object", "count": 1}]
    overall = resp["scores"]["overall"]
    assert overall["n"] == 6 and overall["mean"] == round(17.5 / 6, 6)
    assert resp["scores"]["empathy"]["counts"] == [1, 1, 2, 1, 1]  # f1, d2, b3 c3, a4, e5


def test_response_table_without_a_column_is_an_input_error(pair_dir, tmp_path):
    with pytest.raises(InputError, match="column 'status'"):
        dataset_report(pair_dir, tmp_path / "report", responses=responses_table().drop_columns(["status"]))


def test_gap_of_one_from_float_means_is_binned_at_one(tmp_path):
    hi, lo = sum([2, 2, 2, 2, 2, 2, 4]) / 7, sum([1, 1, 1, 1, 1, 1, 3]) / 7  # differ by 1 - 2e-16
    pairs = build_pairs("q", "s", "train", [r("x", "s", "m1", hi, 2), r("y", "s", "m2", lo, 1)])
    write_pairs(pairs, tmp_path / "pairs")
    rep = dataset_report(tmp_path / "pairs", tmp_path / "report")
    assert rep["gap"]["counts"]["train"][4] == 1 and rep["gap"]["all"]["min"] == 1.0


def test_works_on_the_published_files_alone(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    for split, n in (("train", 3), ("test", 2)):
        cols = {"ID": list(range(n)), "prefID": list(range(n)), "question": [f"{split} speech {i}" for i in range(n)],
                "chosen": ["fine reply"] * n, "rejected": ["bad reply"] * n,
                "chosen_model": ["[bold]gpt-4o[/bold]"] * n, "rejected_model": ["llama"] * n}
        for p in PRINCIPLE_KEYS:
            cols[f"chosen_{p}_rating"] = [5] * n
            cols[f"rejected_{p}_rating"] = [2] * n
        pq.write_table(pa.table(cols), data / f"{split}-00000-of-00001.parquet")
    rep = dataset_report(data, tmp_path / "report")
    assert {s: d["pairs"] for s, d in rep["pairs"]["by_split"].items()} == {"train": 3, "test": 2}
    assert rep["gap"]["all"]["mean"] == 3.0
    text = summary_text(rep)
    assert "[bold]gpt-4o[/bold]" in text  # model names are shown, not read as rich markup
    assert "Pairs" in text and "train" in text and "100.0%" in text


def test_summary_text_of_a_run(pair_dir, tmp_path):
    text = summary_text(dataset_report(pair_dir, tmp_path / "report", responses=responses_table()))
    for word in ("m1", "m4", "safety", "Responses", "25.0%"):
        assert word in text


# ---------------------------------------------------------------- crisis tiers, cut replies, vetoed pairs

RISKY = "I have pills saved up and I plan to kill myself tonight. Nothing matters anymore."


def test_pairs_are_counted_by_the_crisis_tier_of_their_speech(tmp_path):
    pairs = (build_pairs("I keep worrying about work.", "s1", "train", RESPONSES["s1"])
             + build_pairs(RISKY, "s2", "test", RESPONSES["s2"]))
    write_pairs(pairs, tmp_path / "pairs")
    rep = dataset_report(tmp_path / "pairs", tmp_path / "report")
    assert rep["crisis_tiers"] == {"none": {"pairs": 4, "by_split": {"train": 4, "test": 0}},
                                   "possible": {"pairs": 0, "by_split": {"train": 0, "test": 0}},
                                   "high": {"pairs": 1, "by_split": {"train": 0, "test": 1}}}
    assert "crisis tier" in (tmp_path / "report" / "report.html").read_text()
    assert "high" in summary_text(rep)


def test_cut_and_invalid_replies_and_vetoed_pairs_are_reported(pair_dir, tmp_path):
    table = responses_table()
    truncated = [rid in ("a", "h") for rid in table["response_id"].to_pylist()]
    errors = [("truncated: cut at max_tokens=256" if rid == "h" else None) for rid in table["response_id"].to_pylist()]
    table = table.append_column("truncated", pa.array(truncated)).append_column("generate_error", pa.array(errors))
    rep = dataset_report(pair_dir, tmp_path / "report", responses=table,
                         vetoed={"unsafe_chosen": 3, "less_safe": 1})
    r = rep["responses"]
    assert r["truncated"] == 2 and r["truncated_kept"] == 1 and r["invalid"] == 0
    assert r["pairs_with_truncated_side"] == 3  # a is chosen in three train pairs
    assert rep["vetoed"] == {"unsafe_chosen": 3, "less_safe": 1}
    page = (tmp_path / "report" / "report.html").read_text()
    assert "cut at max_tokens" in page and "vetoed" in page
    text = summary_text(rep)
    assert "truncated" in text and "vetoed" in text


# ---------------------------------------------------------------- reply-check flags

MEDICAL = "You should take 50mg of sertraline every morning."


def test_flags_are_counted_per_kind_split_and_side(tmp_path):
    s1 = [r("a", "s1", "m1", 4.0, 4), r("b", "s1", "m2", 2.0, 2, text=MEDICAL)]
    s2 = [r("e", "s2", "m2", 5.0, 5, text="You will definitely be fine."), r("f", "s2", "m4", 1.0, 1, text=MEDICAL)]
    write_pairs(build_pairs("q1", "s1", "train", s1) + build_pairs("q2", "s2", "test", s2), tmp_path / "pairs")
    rep = dataset_report(tmp_path / "pairs", tmp_path / "report", vetoed={"flagged_chosen": 2})
    fl = rep["flags"]["by_side"]
    assert fl["rejected"]["medical_advice"] == {"pairs": 2, "by_split": {"train": 1, "test": 1}}
    assert fl["chosen"]["promise"] == {"pairs": 1, "by_split": {"train": 0, "test": 1}}
    assert fl["chosen"]["medical_advice"]["pairs"] == 0 and fl["chosen"]["any"]["pairs"] == 1
    assert rep["flags"]["computed_here"] == 0  # the files carry them
    page = (tmp_path / "report" / "report.html").read_text()
    assert "Reply-check flags" in page and "medical_advice" in page and "pairs.flag_veto" in page
    assert "reply-check flag" in summary_text(rep)


def test_flags_are_computed_for_published_files_without_them(tmp_path):
    cols = {"question": ["q0", "q1"], "chosen": ["What helps?", "What helps?"], "rejected": [MEDICAL, "Ok."],
            "chosen_model": ["x", "x"], "rejected_model": ["y", "y"]}
    for p in PRINCIPLE_KEYS:
        cols[f"chosen_{p}_rating"], cols[f"rejected_{p}_rating"] = [5, 5], [2, 2]
    pq.write_table(pa.table(cols), tmp_path / "train-00000-of-00001.parquet")
    rep = dataset_report(tmp_path / "train-00000-of-00001.parquet", tmp_path / "report")
    assert rep["flags"]["by_side"]["rejected"]["medical_advice"]["pairs"] == 1
    assert rep["flags"]["computed_here"] == 4


def test_response_flags_are_counted_over_ok_replies(pair_dir, tmp_path):
    table = responses_table()
    flags = [["medical_advice"] if rid == "a" else ([] if s == "ok" else None)
             for rid, s in zip(table["response_id"].to_pylist(), table["status"].to_pylist())]
    table = table.append_column("flags", pa.array(flags, pa.list_(pa.string())))
    rep = dataset_report(pair_dir, tmp_path / "report", responses=table)
    assert rep["responses"]["flags"]["checked"] == 6 and rep["responses"]["flags"]["medical_advice"] == 1
