"""Ingest: every source format, column mapping, bad input, cleaning rules, and the report."""

import csv
import gzip
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from psychocounsel.config import SpeechesConfig
from psychocounsel.errors import InputError, UserError
from psychocounsel.dataset.dedup import NearDupIndex, jaccard, lsh_params, shingles
from psychocounsel.dataset.ingest import IngestReport, clean_speeches, ingest, iter_raw_rows, normalise, resolve_path
from psychocounsel.dataset.records import text_id

# Distinct speeches of 100-1,000 characters (different words, so no two are near duplicates).
A = ("I have not slept properly in weeks. Every night I lie awake going over the same conversation with my "
     "manager, what I said, what I should have said.")
B = ("My daughter stopped talking to me after the wedding and I don't know whether to reach out or give her "
     "space. Everyone in the family has an opinion.")
C = ("Since the accident I can't drive past that junction without my heart pounding. I take the long way round, "
     "which adds twenty minutes, and I feel stupid about it.")


def speech_cfg(path, **kw) -> SpeechesConfig:
    return SpeechesConfig(path=str(path), **kw)


def run(cfg, base_dir=None):
    speeches, report = ingest(cfg, base_dir)
    out = list(speeches)
    assert report.read == report.kept + sum(report.dropped.values())
    return out, report


def write_jsonl(path: Path, rows, raw_lines=()) -> Path:
    lines = [json.dumps(r) for r in rows] + list(raw_lines)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def message(excinfo) -> str:
    msg = str(excinfo.value)
    assert "\n" not in msg
    return msg


# ------------------------------------------------------------------------------------------------- formats

def test_jsonl_rows_sources_topic_and_meta(tmp_path):
    p = tmp_path / "s.jsonl"
    p.write_text(json.dumps({"id": "x1", "topic": "sleep", "subtopic": "insomnia", "text": A}) + "\n\n"
                 + json.dumps({"text": B}) + "\n", encoding="utf-8")
    out, report = run(speech_cfg(p))
    assert [s.text for s in out] == [A, B]
    assert out[0].id == text_id(A)
    assert out[0].source == f"{p}:1" and out[1].source == f"{p}:3"  # the blank line still counts
    assert out[0].topic == "sleep" and out[0].meta == {"orig_id": "x1", "subtopic": "insomnia"}
    assert out[1].topic is None and out[1].meta == {}
    assert report.read == 2 and report.kept == 2


def test_gzipped_jsonl(tmp_path):
    p = tmp_path / "s.jsonl.gz"
    with gzip.open(p, "wt", encoding="utf-8") as fh:
        fh.write(json.dumps({"text": A}) + "\n" + json.dumps({"text": B}) + "\n")
    out, _ = run(speech_cfg(p))
    assert [s.text for s in out] == [A, B]


def test_csv_column_mapping_and_multiline_cell_lines(tmp_path):
    p = tmp_path / "counsel.csv"
    with p.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["questionID", "questionTitle", "questionText", "topic"])
        w.writerow([7, "Sleep", A.replace(". ", ".\n\n", 1), "sleep"])  # a quoted cell over three lines
        w.writerow([8, "Family", B, "family"])
    out, _ = run(speech_cfg(p, text_column="questionText", id_column="questionID", topic_column="topic"))
    assert [s.text for s in out] == [normalise(A), B]
    assert [s.source for s in out] == [f"{p}:2", f"{p}:5"]
    assert out[1].meta["orig_id"] == "8" and out[1].topic == "family"


def test_tsv_and_bom(tmp_path):
    p = tmp_path / "s.tsv"
    p.write_bytes(("\ufefftext\tid\n" + A + "\t1\n").encode("utf-8"))
    out, _ = run(speech_cfg(p))
    assert out[0].text == A and out[0].meta["orig_id"] == "1"


def test_parquet_streams_batches_with_row_numbers(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    p = tmp_path / "s.parquet"
    pq.write_table(pa.table({"q": [A, B, C], "cat": ["a", "b", None], "other": [1, 2, 3]}), p, row_group_size=2)
    out, _ = run(speech_cfg(p, text_column="q", topic_column="cat"))
    assert [s.text for s in out] == [A, B, C]
    assert [s.source for s in out] == [f"{p}:1", f"{p}:2", f"{p}:3"]
    assert [s.topic for s in out] == ["a", "b", None]


def test_hf_save_to_disk_dataset_and_split(tmp_path):
    import datasets

    ds = datasets.Dataset.from_dict({"questionText": [A, B], "topic": ["x", "y"]})
    ds.save_to_disk(str(tmp_path / "one"))
    out, _ = run(speech_cfg(tmp_path / "one", text_column="questionText"))
    assert [s.text for s in out] == [A, B] and out[0].source == f"{tmp_path / 'one'}:1"

    datasets.DatasetDict({"train": ds, "test": ds.select([1])}).save_to_disk(str(tmp_path / "dict"))
    out, _ = run(speech_cfg(tmp_path / "dict", text_column="questionText", split="test"))
    assert [s.text for s in out] == [B] and out[0].source == f"{tmp_path / 'dict'}[test]:1"
    with pytest.raises(InputError, match=r"no split 'dev'; splits are: train, test"):
        run(speech_cfg(tmp_path / "dict", text_column="questionText", split="dev"))


def test_hub_id_that_cannot_load_is_one_line_user_error():
    # offline env so the hub client fails at once instead of retrying a network it cannot reach
    code = ("from psychocounsel.config import SpeechesConfig\nfrom psychocounsel.dataset.ingest import ingest\n"
            "from psychocounsel.errors import UserError\n"
            "try:\n    next(ingest(SpeechesConfig(path='nobody-xyz/no-such-set'))[0])\n"
            "except UserError as e:\n    print('USERERROR', e)\n")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    res = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    line = [x for x in res.stdout.splitlines() if x.startswith("USERERROR")]
    assert line and "nobody-xyz/no-such-set: could not load Hugging Face dataset" in line[0]


def test_resolve_path(tmp_path):
    demo = resolve_path("demo")
    assert demo.endswith("demo_speeches.jsonl")
    (tmp_path / "d.jsonl").write_text("")
    assert resolve_path("d.jsonl", tmp_path) == str(tmp_path / "d.jsonl")
    assert resolve_path("missing.jsonl", tmp_path) == str(tmp_path / "missing.jsonl")
    assert resolve_path("nbertagnolli/counsel-chat", tmp_path) == "nbertagnolli/counsel-chat"


@pytest.mark.skipif(not Path(resolve_path("demo")).exists(), reason="demo file not written yet")
def test_demo_file_ingests():
    out, report = run(SpeechesConfig(path="demo"))
    assert report.kept == len(out) >= 20
    assert report.dropped["bad_row"] == 0
    assert len({s.id for s in out}) == len(out)
    assert all(100 <= len(s.text) <= 1000 and s.topic for s in out)


# ------------------------------------------------------------------------------------------------ bad input

def test_malformed_json_names_file_and_line(tmp_path):
    p = write_jsonl(tmp_path / "s.jsonl", [{"text": A}, {"text": B}], ['{"text": "oops'])
    with pytest.raises(InputError) as e:
        run(speech_cfg(p))
    assert message(e).startswith(f"{p}:3: malformed JSON: Unterminated string")


def test_non_object_json_line(tmp_path):
    p = write_jsonl(tmp_path / "s.jsonl", [{"text": A}], ['["a list"]'])
    with pytest.raises(InputError, match=r":2: expected a JSON object, got list"):
        run(speech_cfg(p))


def test_bad_utf8_names_line(tmp_path):
    p = tmp_path / "s.jsonl"
    p.write_bytes(json.dumps({"text": A}).encode() + b'\n{"text": "caf\xe9 ' + b"x" * 120 + b'"}\n')
    with pytest.raises(InputError) as e:
        run(speech_cfg(p))
    assert message(e).startswith(f"{p}:2: not valid UTF-8 (byte 0xe9")


def test_bad_utf8_in_csv_row(tmp_path):
    p = tmp_path / "s.csv"
    p.write_bytes(b'text\n"' + A.encode() + b'"\n"\xff\xfe' + B.encode() + b'"\n')
    with pytest.raises(InputError, match=rf"^{p}:3: not valid UTF-8 \(byte 0xff"):
        run(speech_cfg(p))


def test_missing_column_is_error_even_when_skipping(tmp_path):
    p = write_jsonl(tmp_path / "s.jsonl", [{"questionText": A}])
    with pytest.raises(InputError) as e:
        run(speech_cfg(p, on_bad_row="skip"))
    assert message(e) == f"{p}:1 (column 'text'): no such column; columns are: questionText"

    c = tmp_path / "s.csv"
    c.write_text(f"text,topic\n{A},x\n", encoding="utf-8")
    with pytest.raises(InputError, match=rf"^{c}:1 \(column 'category'\): no such column; columns are: text, topic"):
        run(speech_cfg(c, topic_column="category", on_bad_row="skip"))


def test_missing_column_parquet(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    p = tmp_path / "s.parquet"
    pq.write_table(pa.table({"question": [A]}), p)
    with pytest.raises(InputError, match=r"\(column 'text'\): no such column; columns are: question"):
        run(speech_cfg(p))


@pytest.mark.parametrize("name, content, expected", [
    ("e.jsonl", "", "empty file: no rows"),
    ("b.jsonl", "\n  \n", "empty file: no rows"),
    ("e.csv", "", "empty file: no header"),
    ("h.csv", "text,id\n", "empty file: a header but no rows"),
])
def test_empty_files_are_errors_even_when_skipping(tmp_path, name, content, expected):
    p = tmp_path / name
    p.write_text(content, encoding="utf-8")
    with pytest.raises(InputError) as e:
        run(speech_cfg(p, on_bad_row="skip"))
    assert message(e) == f"{p}: {expected}"


def test_empty_parquet(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    p = tmp_path / "s.parquet"
    pq.write_table(pa.table({"text": pa.array([], pa.string())}), p)
    with pytest.raises(InputError, match="empty file: no rows"):
        run(speech_cfg(p))


@pytest.mark.parametrize("value, expected", [
    ("   ", "text is empty"), (None, r"text is empty \(null\)"), (42, "text is of type int, expected a string"),
])
def test_empty_or_non_string_text_cell(tmp_path, value, expected):
    p = write_jsonl(tmp_path / "s.jsonl", [{"text": A}, {"text": value}])
    with pytest.raises(InputError, match=rf"^{p}:2 \(column 'text'\): {expected}$"):
        run(speech_cfg(p))


def test_row_without_text_after_first_is_bad_row(tmp_path):
    p = write_jsonl(tmp_path / "s.jsonl", [{"text": A}, {"body": B}])
    with pytest.raises(InputError, match=rf"^{p}:2 \(column 'text'\): row has no text$"):
        run(speech_cfg(p))


def test_csv_field_count_mismatch(tmp_path):
    p = tmp_path / "s.csv"
    p.write_text(f'text,topic\n"{A}",x\n"{B}",y,extra\n', encoding="utf-8")
    with pytest.raises(InputError, match=rf"^{p}:3: row has 3 fields, the header has 2$"):
        run(speech_cfg(p))


def test_unknown_extension_and_missing_file(tmp_path):
    p = tmp_path / "s.txt"
    p.write_text(A)
    with pytest.raises(InputError, match=r"s\.txt: unknown extension '\.txt'"):
        ingest(speech_cfg(p))  # raised at once, before iterating
    with pytest.raises(InputError, match=r"nope\.jsonl: file not found"):
        ingest(speech_cfg(tmp_path / "nope.jsonl"))


def test_not_a_parquet_file(tmp_path):
    p = tmp_path / "s.parquet"
    p.write_text("not parquet")
    with pytest.raises(InputError, match=r"s\.parquet: not a readable Parquet file"):
        run(speech_cfg(p))


def test_skip_mode_counts_bad_rows_with_sources(tmp_path):
    p = tmp_path / "s.jsonl"
    p.write_bytes(b"\n".join([
        json.dumps({"text": A}).encode(),
        b'{"text": broken',
        b'{"text": "\xff"}',
        json.dumps({"text": ""}).encode(),
        json.dumps({"text": 3}).encode(),
        json.dumps({"text": B}).encode(),
    ]) + b"\n")
    out, report = run(speech_cfg(p, on_bad_row="skip"))
    assert [s.text for s in out] == [A, B]
    assert report.read == 6 and report.dropped["bad_row"] == 4
    assert [ex["source"] for ex in report.examples["bad_row"]] == [f"{p}:2", f"{p}:3", f"{p}:4"]  # first 3
    assert "malformed JSON" in report.examples["bad_row"][0]["error"]
    assert any("bad_row 4" in line for line in report.summary_lines())


# ------------------------------------------------------------------------------------------------- cleaning

def test_length_bounds_inclusive_and_measured_after_normalising(tmp_path):
    rows = [{"text": "x" * 99}, {"text": "a" * 100}, {"text": "b" * 1000}, {"text": "c" * 1001},
            {"text": "  " + " ".join(["word"] * 19) + "\n\n\t  "}]  # 94 chars once whitespace is collapsed
    p = write_jsonl(tmp_path / "s.jsonl", rows)
    out, report = run(speech_cfg(p))
    assert [len(s.text) for s in out] == [100, 1000]
    assert report.dropped["too_short"] == 2 and report.dropped["too_long"] == 1
    assert report.examples["too_short"][1] == {"source": f"{p}:5", "chars": 94, "text": " ".join(["word"] * 19)}

    out, report = run(speech_cfg(p, min_chars=10, max_chars=99))
    assert [len(s.text) for s in out] == [99, 94]


def test_min_above_max_is_user_error(tmp_path):
    p = write_jsonl(tmp_path / "s.jsonl", [{"text": A}])
    with pytest.raises(UserError, match=r"min_chars \(500\) is above speeches.max_chars \(400\)"):
        run(speech_cfg(p, min_chars=500, max_chars=400))


def test_normalise():
    assert normalise("  a\u00a0 b\n\nc\u200b\t") == "a b c"
    assert normalise("cafe\u0301") == "caf\u00e9"  # NFC: one code point, so the id is the same either way


def test_exact_duplicates_after_normalising(tmp_path):
    p = write_jsonl(tmp_path / "s.jsonl", [{"text": A}, {"text": B}, {"text": "  " + A.replace(" ", "  ")}])
    out, report = run(speech_cfg(p))
    assert [s.text for s in out] == [A, B]
    assert report.dropped["duplicate"] == 1
    assert report.examples["duplicate"][0]["duplicate_of"] == f"{p}:1"


LONG = ("When I was a child my father was away for months at a time with the navy, and my mother held the house "
        "together by being strict about everything, meals, homework, bedtime, even how we folded towels. Now I "
        "have children of my own and I catch myself doing exactly the same thing, snapping at them over small "
        "things, and I hate it, but when the house is messy I feel this panic rising in my chest that I cannot "
        "explain to my partner.")


def test_near_duplicate_dropped_and_sentence_sharing_speech_kept(tmp_path):
    near = LONG.replace("my partner.", "My husband!")  # last 5-gram only: Jaccard 80/82
    shares = ("I hate it, but when the house is messy I feel this panic rising in my chest. Otherwise my "
              "week was fine: work was calm, I saw two friends, and I finally fixed the bike.")
    assert jaccard(shingles(LONG), shingles(near)) >= 0.9
    p = write_jsonl(tmp_path / "s.jsonl", [{"text": LONG}, {"text": near}, {"text": shares}])
    out, report = run(speech_cfg(p))
    assert [s.text for s in out] == [LONG, shares]
    ex = report.examples["near_duplicate"][0]
    assert ex["source"] == f"{p}:2" and ex["duplicate_of"] == f"{p}:1" and 0.9 <= ex["jaccard"] < 1

    out, report = run(speech_cfg(p, near_dup_threshold=0.99))  # the threshold is honoured (80/82 < 0.99)
    assert len(out) == 3 and report.dropped["near_duplicate"] == 0


def test_lsh_finds_what_brute_force_finds():
    """Recall check: the index keeps exactly the set a quadratic exact-Jaccard pass keeps."""
    import random

    rnd = random.Random(3)
    vocab = [f"w{i}" for i in range(800)]
    bases = [rnd.choices(vocab, k=rnd.randint(20, 150)) for _ in range(40)]
    texts = []
    for _ in range(400):
        words = list(rnd.choice(bases))
        for _ in range(rnd.randint(0, 3)):
            words[rnd.randrange(len(words))] = rnd.choice(vocab)
        texts.append(" ".join(words))
    index, kept_lsh = NearDupIndex(0.9), []
    for t in texts:
        keys = index.band_keys(t)
        if index.find(t, keys) is None:
            index.add(t, keys)
            kept_lsh.append(t)
    kept, sets = [], []
    for t in texts:
        s = shingles(t)
        if all(jaccard(s, o) < 0.9 for o in sets):
            kept.append(t)
            sets.append(s)
    assert kept_lsh == kept


def test_lsh_params():
    assert lsh_params(0.9) == (11, 7)
    b, r = lsh_params(0.9)
    assert (1 - 0.9 ** r) ** b <= 1e-3  # a pair at the threshold is missed at most 1 time in 1,000
    for t in (0.3, 0.5, 0.8, 1.0):
        b, r = lsh_params(t)
        assert (1 - min(t, 0.99) ** r) ** b <= 1e-3


def test_pii_scrubbed_before_ids_and_dedup(tmp_path):
    base = "Please email me, I would rather write than talk about it at length in the session. " * 2
    rows = [{"text": base + "ann@example.com"}, {"text": base + "bob@example.org"},
            {"text": "Call me on +44 7700 900123 or see mysite.com/me, I am @ann_w everywhere online. " * 2},
            {"text": "short ann@example.com"}]
    p = write_jsonl(tmp_path / "s.jsonl", rows)
    out, report = run(speech_cfg(p, scrub_pii=True))
    assert out[0].text == base + "[EMAIL]" and out[0].id == text_id(base + "[EMAIL]")
    assert "[PHONE]" in out[1].text and "[URL]" in out[1].text and "[HANDLE]" in out[1].text
    assert report.dropped["duplicate"] == 1  # the two speeches differ only in the address
    assert {k: n for k, n in report.pii.items() if n} == {"EMAIL": 1, "PHONE": 2, "URL": 2, "HANDLE": 2}  # kept only
    assert report.examples["too_short"][0]["text"] == "short [EMAIL]"  # examples are masked too
    assert not any("@" in json.dumps(v) for v in report.examples.values())

    out, report = run(speech_cfg(p))
    # unscrubbed, the two speeches differ in one address: near duplicates (J ~0.9), no longer exact ones
    assert out[0].text.endswith("ann@example.com") and len(out) == 2
    assert report.dropped["duplicate"] == 0 and report.dropped["near_duplicate"] == 1
    assert "pii: not scrubbed" in report.summary_lines()[-1]


def test_limit_stops_after_n_kept(tmp_path):
    p = write_jsonl(tmp_path / "s.jsonl", [{"text": "short"}, {"text": A}, {"text": A}, {"text": B}, {"text": C}])
    out, report = run(speech_cfg(p, limit=2))
    assert [s.text for s in out] == [A, B]
    assert report.read == 4 and report.kept == 2  # C was never read


def test_iter_raw_rows_and_clean_speeches_compose(tmp_path):
    p = write_jsonl(tmp_path / "s.jsonl", [{"text": A}, {"text": 5}, {"text": B}])
    cfg = speech_cfg(p, on_bad_row="skip")
    report = IngestReport()
    rows = list(iter_raw_rows(cfg, report=report))
    assert [r.source for r in rows] == [f"{p}:1", f"{p}:3"] and report.dropped["bad_row"] == 1
    out = list(clean_speeches(rows, cfg, report))
    assert len(out) == 2 and report.read == 3
    d = report.to_dict()
    assert json.loads(json.dumps(d)) == d and d["kept"] == 2


def test_rows_stream_before_a_later_error(tmp_path):
    """Streaming, not load-then-parse: the first speech arrives before the bad line 3 is read."""
    p = write_jsonl(tmp_path / "s.jsonl", [{"text": A}, {"text": B}], ["{broken"])
    speeches, report = ingest(speech_cfg(p))
    assert next(speeches).text == A and report.read == 1
    with pytest.raises(InputError, match=r":3: malformed JSON"):
        list(speeches)


def test_skip_mode_csv_keeps_line_numbers_past_bad_bytes_and_multiline_cells(tmp_path):
    p = tmp_path / "s.csv"
    p.write_bytes(b"text,topic\n" + A.replace(",", "").encode() + b",a\n\xff,b\n\"" + B.encode()
                  + b"\nsecond line\",c\n,d\n" + C.replace(",", "").encode() + b",e\n")
    out, report = run(speech_cfg(p, on_bad_row="skip"))
    assert [(s.source, s.topic) for s in out] == [(f"{p}:2", "a"), (f"{p}:4", "c"), (f"{p}:7", "e")]
    assert [ex["source"] for ex in report.examples["bad_row"]] == [f"{p}:3", f"{p}:6"]


def test_skip_mode_parquet_null_text(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    p = tmp_path / "s.parquet"
    pq.write_table(pa.table({"text": [A, None, B]}), p)
    out, report = run(speech_cfg(p, on_bad_row="skip"))
    assert [s.source for s in out] == [f"{p}:1", f"{p}:3"]
    assert report.examples["bad_row"] == [{"source": f"{p}:2", "error": "text is empty (null) (column 'text')"}]
    with pytest.raises(InputError, match=rf"^{p}:2 \(column 'text'\): text is empty \(null\)$"):
        run(speech_cfg(p))


# ---------------------------------------------------------------------------------------------- the run store

def ingest_run(tmp_path, src):
    from psychocounsel.config import RunConfig
    from psychocounsel.dataset import pipeline
    from psychocounsel.runner import StageProgress

    cfg = RunConfig.model_validate({
        "run_dir": str(tmp_path / "run"), "speeches": {"path": str(src)},
        "backends": {"fake": {"type": "openai", "base_urls": ["http://127.0.0.1:9/v1"], "api_key_env": None}},
        "therapists": {"k": 2, "profiles": [{"name": n, "backend": "fake", "model": n} for n in ("t1", "t2")]},
        "judge": {"backend": "fake", "model": "judge"},
    })
    return pipeline, pipeline.Run(cfg, progress=StageProgress(enabled=False))


def test_a_failed_ingest_leaves_the_stored_speeches_as_they_were(tmp_path):
    src = write_jsonl(tmp_path / "s.jsonl", [{"text": t} for t in (A, B, C)])
    pipeline, run = ingest_run(tmp_path, src)
    try:
        pipeline.stage_ingest(run)
        before = run.store.count_speeches()
        good_report = (run.dir / "ingest_report.json").read_text()
        # every row dropped: one 10 MB line (too long)
        src.write_text(json.dumps({"text": "word " * 2_000_000}) + "\n")
        for _ in range(2):  # a second try must fail too, not find the failed ingest "already done"
            with pytest.raises(UserError, match="no speech survived cleaning") as e:
                pipeline.stage_ingest(run)
            assert "\n" not in str(e.value)
            assert run.store.count_speeches() == before == 3
        assert (run.dir / "ingest_report.json").read_text() == good_report
        assert json.loads((run.dir / "ingest_report.failed.json").read_text())["dropped"]["too_long"] == 1
        # a row error midway rolls back too
        write_jsonl(src, [{"text": A}], raw_lines=["{not json"])
        with pytest.raises(InputError):
            pipeline.stage_ingest(run)
        assert run.store.count_speeches() == 3
        # a good file again: replaced, and the failure's report is gone
        write_jsonl(src, [{"text": t} for t in (A, B)])
        assert pipeline.stage_ingest(run)["kept"] == 2 and run.store.count_speeches() == 2
        assert not (run.dir / "ingest_report.failed.json").exists()
    finally:
        run.close()
