"""The annotation app through FastAPI's test client: the whole flow, security, concurrency, restart, exports,
and the dashboard's agreement numbers against values worked by hand."""

from __future__ import annotations

import csv
import io
import json
import logging
import sqlite3
import threading
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner
from fastapi.testclient import TestClient

from psychocounsel import PRINCIPLE_KEYS
from pydantic import ValidationError

from psychocounsel.annotate.app import create_app, next_open
from psychocounsel.annotate.cli import RedactTokens
from psychocounsel.annotate.dashboard import shown_label
from psychocounsel.annotate.payloads import explain, form_shape, parse_answer
from psychocounsel.annotate.sources import reservoir, study_spec
from psychocounsel.annotate.store import MIGRATIONS, AnnotationStore, display_plan
from psychocounsel.cli import main as cli_main
from psychocounsel.errors import InputError, UserError

ADMIN = "admin-token-for-tests-0123456789"
XSS = '<script>alert("x")</script><img src=x onerror=alert(1)>'


def write_pairs(path: Path, n: int, xss: bool = False) -> Path:
    """A pair file in the released schema; texts say which side they are, for the tests to check."""
    with open(path, "w", encoding="utf-8") as f:
        for i in range(n):
            row = {"question": f"speech {i}" + (f" {XSS}" if xss else ""),
                   "chosen": f"good reply {i}" + (f" {XSS}" if xss else ""),
                   "rejected": f"weak reply {i}", "chosen_model": "secret-model-alpha",
                   "rejected_model": "secret-model-beta"}
            for p in PRINCIPLE_KEYS:
                row[f"chosen_{p}_rating"], row[f"rejected_{p}_rating"] = 4, 2
            f.write(json.dumps(row) + "\n")
    return path


def setup_study(tmp_path: Path, n_rows: int = 12, n: int = 10, xss: bool = False, names=("ann", "ben")):
    db = tmp_path / "annotate.sqlite"
    store = AnnotationStore(db)
    sid = store.create_study(study_spec(write_pairs(tmp_path / "pairs.jsonl", n_rows, xss), n=n, seed=3))
    tokens = [store.add_annotator(sid, name)[1] for name in names]
    return db, store, sid, tokens


def annotator_client(app, token: str) -> TestClient:
    c = TestClient(app)
    r = c.get(f"/a/{token}", follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/annotate"
    return c


def admin_client(app) -> TestClient:
    c = TestClient(app)
    nonce = c.get("/admin/login?format=json").json()["csrf"]
    r = c.post("/admin/login", data={"token": ADMIN, "csrf": nonce}, follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/admin"
    return c


def csrf_of(c: TestClient) -> str:
    return c.get("/annotate?format=json").json()["csrf"]


def chosen_letter(item: dict) -> str:
    """Which shown letter holds the chosen ('good') response."""
    return "A" if item["response_a"].startswith("good") else "B"


def answer(c: TestClient, aid: int, choice: str, csrf: str, **extra):
    return c.post(f"/annotate/{aid}", data={"choice": choice, "csrf": csrf, **extra}, follow_redirects=False)


# ------------------------------------------------------------------ the flow


def test_full_flow_stop_and_resume(tmp_path):
    db, store, sid, (tok, _) = setup_study(tmp_path)
    app = create_app(db, ADMIN, n_boot=200)
    c = annotator_client(app, tok)
    ov = c.get("/annotate?format=json").json()
    assert (ov["total"], ov["done"]) == (10, 0)
    assert "Start" in c.get("/annotate").text
    csrf, order = ov["csrf"], [it["assignment_id"] for it in ov["items"]]
    # Answer the first four; each save redirects to the next open item.
    for i, aid in enumerate(order[:4]):
        item = c.get(f"/annotate/{aid}?format=json").json()["item"]
        r = answer(c, aid, chosen_letter(item), csrf, **{"rating_A_empathy": "5", "rating_B_safety": "2",
                                                         "comment": f"note {i}"})
        assert r.status_code == 303 and r.headers["location"] == f"/annotate/{order[i + 1]}"
    # Stop: the cookie goes, the answers stay.
    r = c.post("/annotate/stop", data={"csrf": csrf})
    assert r.status_code == 200 and "Every answer you gave is stored" in r.text
    assert c.get("/annotate?format=json").status_code == 401
    # Resume from the link: starts at the first unanswered item, progress kept.
    c2 = annotator_client(app, tok)
    ov = c2.get("/annotate?format=json").json()
    assert (ov["done"], ov["next"]) == (4, order[4])
    again = c2.get(f"/annotate/{order[0]}?format=json").json()["item"]
    assert again["choice"] == chosen_letter(again) and again["comment"] == "note 0"
    assert again["ratings"] == {"A": {"empathy": 5}, "B": {"safety": 2}}
    # Revising an answer replaces it (revision 2), it does not add a row.
    answer(c2, order[0], "tie", csrf_of(c2))
    assert c2.get(f"/annotate/{order[0]}?format=json").json()["item"]["revision"] == 2
    for aid in order[4:]:
        answer(c2, aid, "A", csrf_of(c2))
    ov = c2.get("/annotate?format=json").json()
    assert (ov["done"], ov["next"]) == (10, None)
    assert "All 10 items are answered" in c2.get("/annotate").text
    # A JSON client with the bearer token needs no CSRF token (a browser never sends that header by itself).
    r = TestClient(app).post(f"/annotate/{order[1]}", json={"choice": "B", "ratings": {"A": {"clarity": 3}}},
                             headers={"Authorization": f"Bearer {tok}"})
    assert r.status_code == 200 and r.json()["saved"]["revision"] == 2


def test_keyboard_and_choices_on_item_page(tmp_path):
    db, store, sid, (tok, _) = setup_study(tmp_path, n=3)
    c = annotator_client(create_app(db, ADMIN), tok)
    aid = c.get("/annotate?format=json").json()["next"]
    html = c.get(f"/annotate/{aid}").text
    assert 'data-keys="choice"' in html and '<script src="/static/app.js"' in html
    for v in ("A", "B", "tie"):
        assert f'id="choice-{v}"' in html
    for p in PRINCIPLE_KEYS:
        assert f'name="rating_A_{p}"' in html and f'name="rating_B_{p}"' in html
    js = c.get("/static/app.js").text
    assert '"1": "A"' in js and '"t": "tie"' in js


def test_order_randomised_per_annotator_and_stable(tmp_path):
    db, store, sid, tokens = setup_study(tmp_path, n_rows=30, n=30, names=("ann", "ben", "cat"))
    app = create_app(db, ADMIN)
    shown = []
    for tok in tokens:
        c = annotator_client(app, tok)
        ids = [it["assignment_id"] for it in c.get("/annotate?format=json").json()["items"]]
        first = {c.get(f"/annotate/{a}?format=json").json()["item"]["question"]:
                 chosen_letter(c.get(f"/annotate/{a}?format=json").json()["item"]) for a in ids}
        # A reload shows the same order (the second GET above), and so does a fresh server on the same file.
        c3 = annotator_client(create_app(db, ADMIN), tok)
        assert [it["assignment_id"] for it in c3.get("/annotate?format=json").json()["items"]] == ids
        assert all(chosen_letter(c3.get(f"/annotate/{a}?format=json").json()["item"]) ==
                   first[c3.get(f"/annotate/{a}?format=json").json()["item"]["question"]] for a in ids)
        shown.append(first)
    # Roughly half the items show the chosen response as B, and annotators differ item by item.
    for s in shown:
        assert 8 <= sum(v == "B" for v in s.values()) <= 22
    assert shown[0] != shown[1] != shown[2]
    # Deterministic from the seed alone.
    assert display_plan(3, 1, 1, range(10)) == display_plan(3, 1, 1, range(10)) != display_plan(4, 1, 1, range(10))


def test_model_names_hidden_from_annotators(tmp_path):
    db, store, sid, (tok, _) = setup_study(tmp_path, n=4)
    c = annotator_client(create_app(db, ADMIN), tok)
    ov = c.get("/annotate?format=json").json()
    for aid in [it["assignment_id"] for it in ov["items"]]:
        for text in (c.get(f"/annotate/{aid}").text, c.get(f"/annotate/{aid}?format=json").text):
            assert "secret-model" not in text and "chosen" not in text.lower().replace("choose", "")


def test_sampling_is_seeded(tmp_path):
    path = write_pairs(tmp_path / "p.jsonl", 50)
    a = [it.question for it in study_spec(path, n=10, seed=1).items]
    assert a == [it.question for it in study_spec(path, n=10, seed=1).items]
    assert a != [it.question for it in study_spec(path, n=10, seed=2).items]
    assert len(set(a)) == 10
    assert len(study_spec(path, n=500, seed=1).items) == 50  # asking for more than there is takes all
    assert reservoir(range(5), 3, 0) == reservoir(range(5), 3, 0)
    with pytest.raises(InputError, match="no items in split 'test'"):
        study_spec(path, n=5, split="test")


def test_study_from_evaluation_folder(tmp_path):
    """`psychocounsel evaluate`'s comparisons.jsonl: label = both orders combined (win only when they agree)."""
    folder = tmp_path / "eval"
    folder.mkdir()
    (folder / "results.json").write_text(json.dumps({"policy": {"name": "pol-1"}, "reference": {"name": "ref-1"}}))

    def rec(i, v1, v2, ok=True):
        return {"speech_id": f"s{i}", "speech": f"speech {i}",
                "policy": {"status": "ok", "text": f"policy says {i}", "scores": {"empathy": 4}},
                "reference": {"status": "ok" if ok else "failed", "text": f"ref says {i}" if ok else None,
                              "scores": None},
                "policy_first": {"status": "ok", "verdict": v1}, "reference_first": {"status": "ok", "verdict": v2}}

    rows = [rec(0, "A", "B"), rec(1, "B", "A"), rec(2, "A", "A"), rec(3, None, "B"), rec(4, "A", "B", ok=False)]
    (folder / "comparisons.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    spec = study_spec(folder, n=10)
    assert spec.source_kind == "evaluation" and spec.side_names == ("policy", "reference")
    assert [it.label for it in spec.items] == ["first", "second", "tie", None]  # s4 had no reference text
    assert spec.items[0].first_model == "pol-1" and spec.items[0].first_ratings == {"empathy": 4}
    flat = tmp_path / "flat"
    flat.mkdir()
    (flat / "comparisons.jsonl").write_text(json.dumps(
        {"question": "q", "policy_response": "p", "reference_response": "r", "verdict": "reference"}) + "\n")
    assert study_spec(flat, n=1).items[0].label == "second"
    (flat / "comparisons.jsonl").write_text(json.dumps({"question": "q", "policy_response": "p"}) + "\n")
    with pytest.raises(InputError, match=r"comparisons.jsonl:1 \(column 'reference_response'\): missing field"):
        study_spec(flat, n=1)


# ------------------------------------------------------------------ security


def test_annotator_sees_and_writes_only_own_assignments(tmp_path):
    db, store, sid, (tok_a, tok_b) = setup_study(tmp_path, n=5)
    app = create_app(db, ADMIN)
    ca, cb = annotator_client(app, tok_a), annotator_client(app, tok_b)
    mine = {it["assignment_id"] for it in ca.get("/annotate?format=json").json()["items"]}
    theirs = {it["assignment_id"] for it in cb.get("/annotate?format=json").json()["items"]}
    assert mine.isdisjoint(theirs)
    other = min(theirs)
    assert ca.get(f"/annotate/{other}").status_code == 404
    assert ca.get(f"/annotate/{other}?format=json").status_code == 404
    assert answer(ca, other, "A", csrf_of(ca)).status_code == 404
    r = TestClient(app).post(f"/annotate/{other}", json={"choice": "A"}, headers={"Authorization": f"Bearer {tok_a}"})
    assert r.status_code == 404
    assert store.annotation_rows(sid) == []  # nothing was written anywhere
    # No token, a wrong token, a wrong link.
    assert TestClient(app).get("/annotate?format=json").status_code == 401
    assert TestClient(app).get(f"/annotate/{other}", headers={"Authorization": "Bearer nope"}).status_code == 401
    assert TestClient(app).get("/a/not-a-token", follow_redirects=False).status_code == 404
    # Annotator tokens open no admin page; the admin pages want the admin token.
    for path in ("/admin?format=json", f"/admin/studies/{sid}?format=json", f"/admin/studies/{sid}/export.csv"):
        assert TestClient(app).get(path, headers={"Authorization": f"Bearer {tok_a}"}).status_code == 401
        assert ca.get(path, follow_redirects=False).status_code in (401, 303)
    assert TestClient(app).get("/admin", follow_redirects=False).headers["location"] == "/admin/login"
    c = TestClient(app)
    nonce = c.get("/admin/login?format=json").json()["csrf"]
    assert c.post("/admin/login", data={"token": "wrong", "csrf": nonce}).status_code == 401


def test_tokens_stored_hashed_and_redacted_from_logs(tmp_path):
    db, store, sid, (tok, _) = setup_study(tmp_path, n=2)
    create_app(db, ADMIN)
    raw = b"".join(p.read_bytes() for p in tmp_path.glob("annotate.sqlite*"))
    assert tok.encode() not in raw and ADMIN.encode() not in raw
    adm = admin_client(create_app(db, ADMIN))
    assert ADMIN not in adm.cookies["pc_admin"]  # the browser holds a derived session value, not the token
    assert admin_client(create_app(db, ADMIN)).cookies["pc_admin"] == adm.cookies["pc_admin"]  # restart-stable
    other = TestClient(create_app(db, ADMIN + "-rotated"), cookies={"pc_admin": adm.cookies["pc_admin"]})
    assert other.get("/admin?format=json").status_code == 401  # a new admin token voids old sessions
    rec = logging.LogRecord("uvicorn.access", logging.INFO, __file__, 1, '%s - "%s %s HTTP/%s" %d',
                            ("127.0.0.1:5", "GET", f"/a/{tok}", "1.1", 303), None)
    RedactTokens().filter(rec)
    assert tok not in rec.getMessage() and "/a/[token]" in rec.getMessage()


def test_csrf_required_on_every_form(tmp_path):
    db, store, sid, (tok_a, tok_b) = setup_study(tmp_path, n=3)
    app = create_app(db, ADMIN)
    ca, cb = annotator_client(app, tok_a), annotator_client(app, tok_b)
    aid = ca.get("/annotate?format=json").json()["next"]
    assert ca.post(f"/annotate/{aid}", data={"choice": "A"}).status_code == 403
    assert answer(ca, aid, "A", "0" * 64).status_code == 403
    assert answer(ca, aid, "A", csrf_of(cb)).status_code == 403  # someone else's token is not yours
    assert answer(ca, aid, "A", "é" * 64).status_code == 403  # non-ASCII: refused, not a crash
    assert ca.post(f"/annotate/{aid}", json={"choice": "A"}).status_code == 403  # cookie + JSON still needs it
    assert ca.post(f"/annotate/{aid}", json={"choice": "A"}, headers={"X-CSRF-Token": csrf_of(ca)}).status_code == 200
    assert ca.post("/annotate/stop", data={}).status_code == 403
    adm = admin_client(app)
    assert adm.post(f"/admin/studies/{sid}/annotators", data={"name": "eve"}).status_code == 403
    assert adm.post("/admin/studies", data={"source": "x"}).status_code == 403
    assert adm.post("/admin/logout", data={}).status_code == 403
    c = TestClient(app)
    c.get("/admin/login")
    assert c.post("/admin/login", data={"token": ADMIN}).status_code == 403  # login form too (double submit)
    assert len(store.annotators(sid)) == 2


def test_xss_payloads_are_escaped(tmp_path):
    db, store, sid, (tok,) = setup_study(tmp_path, n=3, xss=True, names=(f"Eve {XSS}",))
    app = create_app(db, ADMIN)
    c = annotator_client(app, tok)
    aid = c.get("/annotate?format=json").json()["next"]
    r = answer(c, aid, "A", csrf_of(c), comment=f"my note {XSS}")
    assert r.status_code == 303
    adm = admin_client(app)
    pages = [c.get("/annotate").text, c.get(f"/annotate/{aid}").text, adm.get(f"/admin/studies/{sid}").text,
             adm.get("/admin").text]
    escaped = "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;&lt;img src=x onerror=alert(1)&gt;"
    for html in pages:
        assert "<script>alert" not in html and "<img src=x" not in html
    assert escaped in pages[1]  # speech, responses and the comment, as text
    assert pages[1].count(escaped) >= 3 and f"Eve {escaped}" in pages[2]
    # A bad request echoes nothing unescaped either.
    r = c.post(f"/annotate/{aid}", data={"choice": XSS, "csrf": csrf_of(c)})
    assert r.status_code == 422 and "<script>alert" not in r.text
    headers = c.get("/annotate").headers
    assert "script-src 'self'" in headers["content-security-policy"] and headers["x-frame-options"] == "DENY"
    assert headers["referrer-policy"] == "no-referrer" and headers["cache-control"] == "no-store"


def test_bad_answers_are_rejected_with_a_reason():
    keys = list(PRINCIPLE_KEYS)
    ans = parse_answer({"choice": "B", "ratings": {"A": {"empathy": 4, "safety": None}}, "comment": " hi "}, keys)
    assert (ans.choice, ans.ratings, ans.comment) == ("B", {"A": {"empathy": 4}}, "hi")  # null = no rating
    form = form_shape([("choice", "B"), ("rating_A_empathy", "4"), ("rating_B_safety", ""), ("comment", " hi ")])
    assert parse_answer(form, keys, from_form=True) == ans  # a form's text "4" is the rating 4
    for data, msg in [({}, "Choose A, B or tie"), ({"choice": "C"}, "Choose"), ({"choice": True}, "Choose"),
                      ({"choice": "A", "ratings": {"A": {"empathy": 6}}}, "1 to 5"),
                      ({"choice": "A", "ratings": {"A": {"empathy": True}}}, "empathy for A must be a whole number"),
                      ({"choice": "A", "ratings": {"A": {"empathy": 4.0}}}, "whole number 1 to 5"),
                      ({"choice": "A", "ratings": {"A": {"empathy": "4"}}}, "whole number 1 to 5"),
                      ({"choice": "A", "ratings": {"C": {"empathy": 3}}}, "unknown side 'C'"),
                      ({"choice": "A", "ratings": {"A": {"charm": 3}}}, "unknown principle 'charm'"),
                      ({"choice": "A", "ratings": {"A": 3}}, "ratings must be an object"),
                      ({"choice": "A", "comment": {"text": "hi"}}, "comment must be text"),
                      ({"choice": "A", "comment": 5}, "comment must be text"),
                      ({"choice": "A", "comment": "x" * 5001}, "longer than 5000"),
                      ({"choice": "A", "mood": "fine"}, "unknown field 'mood'")]:
        with pytest.raises(ValidationError) as e:
            parse_answer(data, keys)
        assert msg in explain(e.value), (data, explain(e.value))
    for fields, msg in [([("choice", "A"), ("rating_A_empathy", "x")], "1 to 5"),
                        ([("choice", "A"), ("rating_A_empathy", "4.5")], "1 to 5"),
                        ([("choice", "A"), ("rating_C_empathy", "3")], "unknown side 'C'"),
                        ([("choice", "A"), ("rating_A_charm", "3")], "unknown principle 'charm'")]:
        with pytest.raises(ValidationError) as e:
            parse_answer(form_shape(fields), keys, from_form=True)
        assert msg in explain(e.value)
    with pytest.raises(ValueError, match="'choice' sent twice"):
        form_shape([("choice", "A"), ("choice", "B")])
    q = [{"assignment_id": i, "done": d} for i, d in [(1, True), (2, False), (3, True), (4, False)]]
    assert next_open(q, 2) == 4 and next_open(q, 4) == 2 and next_open([{"assignment_id": 1, "done": True}], 1) is None


def is_json_error(r, status: int) -> dict:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/json") and not r.text.lstrip().startswith("<")
    body = r.json()
    assert isinstance(body["error"], str) and body["error"] and "\n" not in body["error"]
    return body


def test_json_answers_are_strict_and_nothing_wrong_is_stored(tmp_path):
    db, store, sid, (tok, _) = setup_study(tmp_path, n=3)
    app = create_app(db, ADMIN)
    c = TestClient(app, headers={"Authorization": f"Bearer {tok}"})
    aid = c.get("/annotate?format=json").json()["next"]
    for body, msg in [({"choice": "A", "ratings": {"A": {"empathy": True}}}, "empathy for A must be a whole number"),
                      ({"choice": "A", "ratings": {"C": {"empathy": 3}}}, "unknown side 'C'"),
                      ({"choice": "A", "ratings": {"C": {}}}, "unknown side 'C'"),
                      ({"choice": "A", "comment": {"text": "hi"}}, "comment must be text"),
                      ({"choice": "A", "comment": "x" * 5001}, "longer than 5000"),
                      ({"choice": "A", "extra": 1}, "unknown field 'extra'"),
                      ({"choice": 1}, "Choose A, B or tie")]:
        err = is_json_error(c.post(f"/annotate/{aid}", json=body), 422)
        assert msg in err["error"], (body, err)
        # pydantic's list, without the values sent (a body may hold a token; echoing it helps no one)
        assert err["detail"] and all(set(d) == {"type", "loc", "msg"} for d in err["detail"])
        assert "xxxxx" not in json.dumps(err) and '"hi"' not in json.dumps(err)
    assert store.annotation_rows(sid) == [] and store.submission_count(sid) == 0
    # Not an object, or not JSON at all.
    assert "JSON object" in is_json_error(c.post(f"/annotate/{aid}", json=[1, 2]), 422)["error"]
    r = c.post(f"/annotate/{aid}", content=b"{nope", headers={"Content-Type": "application/json"})
    assert "invalid JSON" in is_json_error(r, 400)["error"]
    # A rating of null is no rating; the rest is stored as sent.
    r = c.post(f"/annotate/{aid}", json={"choice": "B", "ratings": {"A": {"empathy": None, "clarity": 2}}})
    assert r.status_code == 200
    assert c.get(f"/annotate/{aid}?format=json").json()["item"]["ratings"] == {"A": {"clarity": 2}}


def test_json_requests_get_json_errors_never_html(tmp_path):
    db, store, sid, (tok, other) = setup_study(tmp_path, n=3)
    app = create_app(db, ADMIN)
    ca = annotator_client(app, tok)
    aid = ca.get("/annotate?format=json").json()["next"]
    theirs = annotator_client(app, other).get("/annotate?format=json").json()["next"]
    bearer = {"Authorization": f"Bearer {tok}"}
    # A JSON body is enough to be answered in JSON, whatever the Accept header says.
    is_json_error(ca.post(f"/annotate/{aid}", json={"choice": "A"}), 403)  # cookie session without CSRF
    is_json_error(TestClient(app).post(f"/annotate/{aid}", json={"choice": "A"}), 401)
    is_json_error(TestClient(app).post(f"/annotate/{theirs}", json={"choice": "A"}, headers=bearer), 404)
    is_json_error(TestClient(app).post("/annotate/stop", json={"csrf": 5}), 401)
    is_json_error(TestClient(app).post("/annotate/stop", json={"extra": 1}, headers=bearer), 422)
    # So is Accept: application/json, or ?format=json, on any path, known or not.
    for path, status in (("/nowhere", 404), ("/annotate/999999", 401), ("/admin/studies/999/export.csv", 401)):
        is_json_error(TestClient(app).get(path, headers={"Accept": "application/json"}), status)
    is_json_error(TestClient(app).get("/nowhere?format=json"), 404)
    is_json_error(TestClient(app).put("/annotate/stop", json={}), 405)
    # A browser (Accept: text/html) still gets a page.
    r = TestClient(app).get("/nowhere", headers={"Accept": "text/html,application/xhtml+xml,*/*;q=0.8"})
    assert r.status_code == 404 and r.headers["content-type"].startswith("text/html") and "Not Found" in r.text
    # Admin bodies are strict too: no bool for a number, no number for text, no unknown field.
    admin = TestClient(app, headers={"Authorization": f"Bearer {ADMIN}"})
    pairs = str(tmp_path / "pairs.jsonl")
    for body, msg in [({"source": pairs, "n": True}, "n: Input should be a valid integer"),
                      ({"source": pairs, "n": "6"}, "n: Input should be a valid integer"),
                      ({"source": pairs, "n": 0}, "n: Input should be greater than or equal to 1"),
                      ({"source": ["x"]}, "source: Input should be a valid string"),
                      ({"source": pairs, "name": {"x": 1}}, "name: Input should be a valid string"),
                      ({"source": pairs, "sample": 3}, "unknown field 'sample'"), ({}, "source is required")]:
        assert msg in is_json_error(admin.post("/admin/studies", json=body), 422)["error"], body
    err = is_json_error(admin.post(f"/admin/studies/{sid}/annotators", json={"name": 5}), 422)
    assert err["error"] == "name: Input should be a valid string"
    assert [a["name"] for a in store.annotators(sid)] == ["ann", "ben"]
    assert admin.post("/admin/studies", json={"source": pairs, "n": 2, "name": "ok"}).json()["items"] == 2
    # The sign-in form: a token that is not text is refused as such (after the double-submit check).
    c = TestClient(app)
    nonce = c.get("/admin/login?format=json").json()["csrf"]
    assert "token" in is_json_error(c.post("/admin/login", json={"token": 123, "csrf": nonce}), 422)["error"]
    is_json_error(c.post("/admin/login", json={"token": ADMIN, "csrf": 1}), 403)


def test_ids_beyond_sqlite_range_are_not_found_not_a_crash(tmp_path):
    """A 30-digit id in a path cannot name a row (SQLite's are 64-bit): 404, in JSON for a JSON client."""
    db, store, sid, (tok, _) = setup_study(tmp_path, n=2)
    app = create_app(db, ADMIN)
    big = "9" * 30
    c = TestClient(app, headers={"Authorization": f"Bearer {tok}"})
    is_json_error(c.get(f"/annotate/{big}?format=json"), 404)
    is_json_error(c.post(f"/annotate/{big}", json={"choice": "A"}), 404)
    admin = TestClient(app, headers={"Authorization": f"Bearer {ADMIN}", "Accept": "application/json"})
    for path in (f"/admin/studies/{big}", f"/admin/studies/{big}/export.csv"):
        is_json_error(admin.get(path), 404)
    is_json_error(admin.post(f"/admin/studies/{sid}/annotators/{big}/link", json={}), 404)


def test_a_form_with_a_bad_answer_shows_the_page_again_with_the_reason(tmp_path):
    db, store, sid, (tok, _) = setup_study(tmp_path, n=3)
    c = annotator_client(create_app(db, ADMIN), tok)
    aid = c.get("/annotate?format=json").json()["next"]
    r = answer(c, aid, "A", csrf_of(c), rating_C_empathy="3")
    assert r.status_code == 422 and r.headers["content-type"].startswith("text/html")
    assert "unknown side &#39;C&#39;" in r.text and 'id="answer"' in r.text  # the item's form, to fix and resend
    assert store.submission_count(sid) == 0


def test_the_app_refuses_a_database_that_does_not_exist(tmp_path):
    with pytest.raises(UserError, match="no annotation database here"):
        create_app(tmp_path / "typo.sqlite", ADMIN)
    assert list(tmp_path.iterdir()) == []
    create_app(tmp_path / "new.sqlite", ADMIN, create=True)  # asked for: made
    assert (tmp_path / "new.sqlite").is_file()


# ------------------------------------------------------------------ concurrency and restart


def test_concurrent_submissions_lose_nothing(tmp_path):
    db, store, sid, tokens = setup_study(tmp_path, n_rows=20, n=20, names=("a", "b", "c", "d"))
    app = create_app(db, ADMIN)
    errors: list[BaseException] = []
    per_thread = 3  # rounds: every round every annotator answers every item; later rounds overwrite

    def work(tok: str, rounds: int) -> None:
        try:
            c = TestClient(app, headers={"Authorization": f"Bearer {tok}"})
            ids = [it["assignment_id"] for it in c.get("/annotate?format=json").json()["items"]]
            for r in range(rounds):
                for aid in ids:
                    res = c.post(f"/annotate/{aid}", json={"choice": "ABt"[r % 2], "comment": f"r{r}"})
                    assert res.status_code == 200, res.text
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    # Two threads per annotator: the same assignments written at the same time from two "browsers".
    threads = [threading.Thread(target=work, args=(t, per_thread)) for t in tokens for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors[0]
    rows = store.annotation_rows(sid)
    assert len(rows) == 4 * 20  # one answer per (annotator, item)
    assert {r["revision"] for r in rows} == {2 * per_thread}  # every write counted, none lost
    assert store.submission_count(sid) == 4 * 20 * 2 * per_thread
    # Store level, many threads hammering one assignment.
    aid = store.assignments(store.annotator_by_token(tokens[0])["id"])[0]["assignment_id"]
    ann = store.annotator_by_token(tokens[0])["id"]
    ts = [threading.Thread(target=lambda: [store.submit(ann, aid, "B") for _ in range(10)]) for _ in range(8)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert store.assignment(ann, aid)["revision"] == 2 * per_thread + 80


def test_restart_keeps_everything(tmp_path):
    db, store, sid, (tok, _) = setup_study(tmp_path, n=4)
    app = create_app(db, ADMIN)
    c = annotator_client(app, tok)
    csrf = csrf_of(c)
    ids = [it["assignment_id"] for it in c.get("/annotate?format=json").json()["items"]]
    answer(c, ids[0], "B", csrf, comment="before restart", rating_B_clarity="3")
    before = c.get(f"/annotate/{ids[0]}?format=json").json()["item"]
    del app, c, store
    app2 = create_app(db, ADMIN)  # a new process would see exactly this: only the file
    c2 = annotator_client(app2, tok)
    assert c2.get(f"/annotate/{ids[0]}?format=json").json()["item"] == before
    assert [it["assignment_id"] for it in c2.get("/annotate?format=json").json()["items"]] == ids
    assert answer(c2, ids[1], "A", csrf).status_code == 303  # a form opened before the restart still saves
    with sqlite3.connect(db) as con:
        assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert con.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)


# ------------------------------------------------------------------ admin, exports, agreement


def test_admin_creates_study_adds_annotator_and_exports(tmp_path):
    db = tmp_path / "annotate.sqlite"
    pairs = write_pairs(tmp_path / "pairs.jsonl", 8)
    app = create_app(db, ADMIN, create=True)
    adm = admin_client(app)
    csrf = adm.get("/admin?format=json").json()["csrf"]
    r = adm.post("/admin/studies", data={"source": str(pairs), "n": "6", "seed": "1", "name": "pilot", "csrf": csrf},
                 follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/admin/studies/1"
    assert adm.post("/admin/studies", data={"source": str(tmp_path / "nope.jsonl"), "csrf": csrf}).status_code == 400
    r = adm.post("/admin/studies/1/annotators", data={"name": "Dr. Rivera", "csrf": csrf})
    assert r.status_code == 200 and "shown once" in r.text
    link = r.text.split('id="link">')[1].split("<")[0]
    assert link.startswith("http://testserver/a/")
    c = TestClient(app)
    assert c.get(link.replace("http://testserver", ""), follow_redirects=False).status_code == 303
    csrf_a = csrf_of(c)
    items = c.get("/annotate?format=json").json()["items"]
    for k, it in enumerate(items):
        item = c.get(f"/annotate/{it['assignment_id']}?format=json").json()["item"]
        good = chosen_letter(item)
        choice = good if k < 4 else ("tie" if k == 4 else ("B" if good == "A" else "A"))
        answer(c, it["assignment_id"], choice, csrf_a, **{f"rating_{good}_empathy": "5", "comment": "=1+1"})
    dash = adm.get("/admin/studies/1?format=json").json()
    assert dash["progress"][0]["done"] == 6 and dash["progress"][0]["name"] == "Dr. Rivera"
    # 6 items: below the minimum, so n and the reason, and no figure to misread.
    rep = dash["agreement"]["vs_label"][0]["report"]
    assert rep == {"n": 6, "enough": False, "min_items": 10, "note": "not enough ratings (n=6; at least 10)"}
    assert "not enough ratings (n=6; at least 10)" in adm.get("/admin/studies/1").text
    # CSV: one row per answer, preferred named in the study's terms, formulas defused.
    text = adm.get("/admin/studies/1/export.csv").text
    rows = list(csv.DictReader(io.StringIO(text)))
    assert len(rows) == 6
    assert [r["preferred"] for r in rows].count("chosen") == 4 and [r["preferred"] for r in rows].count("tie") == 1
    assert all(r["chosen_empathy_rating"] == "5" and r["rejected_empathy_rating"] == "" for r in rows)
    assert all(r["comment"] == "'=1+1" and r["chosen_model"] == "secret-model-alpha" for r in rows)
    assert all(r["agrees_with_label"] == str(r["preferred"] == "chosen") for r in rows)
    # Parquet: the same rows, typed, exact text.
    body = adm.get("/admin/studies/1/export.parquet").content
    (tmp_path / "x.parquet").write_bytes(body)
    t = pq.read_table(tmp_path / "x.parquet")
    assert t.num_rows == 6 and t.schema.field("chosen_empathy_rating").type == "int64"
    assert t.column("comment").to_pylist() == ["=1+1"] * 6
    assert t.column("preferred").to_pylist() == [r["preferred"] for r in rows]
    assert adm.get("/admin/studies/1/export.json").json()["rows"][0]["comment"] == "=1+1"
    assert adm.get("/admin/studies/1/export.xlsx").status_code == 404


def test_new_link_voids_the_old_one_and_keeps_answers(tmp_path):
    db, store, sid, (tok, _) = setup_study(tmp_path, n=2)
    app = create_app(db, ADMIN)
    c = annotator_client(app, tok)
    aid = c.get("/annotate?format=json").json()["next"]
    answer(c, aid, "A", csrf_of(c))
    adm = admin_client(app)
    ann = store.annotator_by_token(tok)["id"]
    csrf = adm.get("/admin?format=json").json()["csrf"]
    assert adm.post(f"/admin/studies/{sid}/annotators/{ann}/link", data={}).status_code == 403
    r = adm.post(f"/admin/studies/{sid}/annotators/{ann}/link", data={"csrf": csrf})
    assert r.status_code == 200 and "shown once" in r.text
    new = r.text.split('id="link">')[1].split("<")[0].rsplit("/", 1)[1]
    assert c.get("/annotate?format=json").status_code == 401  # the old token (in the cookie) is void
    assert TestClient(app).get(f"/a/{tok}").status_code == 404
    c2 = annotator_client(app, new)
    assert c2.get(f"/annotate/{aid}?format=json").json()["item"]["choice"] == "A"
    assert adm.post(f"/admin/studies/{sid}/annotators/999/link", data={"csrf": csrf}).status_code == 404
    r = CliRunner().invoke(cli_main, ["annotate", "new-link", str(sid), "ann", "--db", str(db)])
    assert r.exit_code == 0 and store.annotator_by_token(new) is None
    assert store.annotator_by_token(r.output.strip().splitlines()[-1].rsplit("/", 1)[1])["name"] == "ann"


def test_agreement_matches_hand_computed_values(tmp_path):
    """Two annotators, 10 items, answers planted in canonical terms (F = chosen, S = rejected, T = tie).

    X: F F F F F F F S S T      Y: F F F F F S S S F T
    percent: items 1-5, 8, 10 agree = 7/10 = 0.7
    kappa: p_e = (7*6 + 2*3 + 1*1) / 100 = 0.49; (0.7 - 0.49) / (1 - 0.49) = 0.21 / 0.51 = 0.411765
    alpha (nominal): n = 20 values, counts F 13, S 5, T 2; expected pairs sum_{c!=k} n_c n_k = 400 - 198 = 202;
    observed off-diagonal coincidences = 2 per disagreeing item = 6; alpha = 1 - 19 * 6 / 202 = 0.435644
    vs the dataset label (always chosen): X 7/10, Y 6/10.
    """
    db, store, sid, (tx, ty) = setup_study(tmp_path, n_rows=10, n=10)
    app = create_app(db, ADMIN, n_boot=300)
    plan = {"X": "FFFFFFFSST", "Y": "FFFFFSSSFT"}
    shown_pairs = {"X": [], "Y": []}
    for who, tok in (("X", tx), ("Y", ty)):
        c = annotator_client(app, tok)
        csrf = csrf_of(c)
        for it in c.get("/annotate?format=json").json()["items"]:
            item = c.get(f"/annotate/{it['assignment_id']}?format=json").json()["item"]
            i = int(item["question"].split()[1])  # "speech 7" -> planted answer 7
            good = chosen_letter(item)
            choice = {"F": good, "S": "B" if good == "A" else "A", "T": "tie"}[plan[who][i]]
            answer(c, it["assignment_id"], choice, csrf)
            shown_pairs[who].append((choice, good))
    dash = admin_client(app).get(f"/admin/studies/{sid}?format=json").json()["agreement"]
    between = dash["between_annotators"][0]["report"]
    assert between["n"] == 10 and between["agree"] == 7
    assert between["percent"] == pytest.approx(0.7)
    assert between["kappa"] == pytest.approx(0.21 / 0.51)
    assert between["alpha"] == pytest.approx(1 - 19 * 6 / 202)
    lo, hi = between["kappa_ci"]
    assert lo <= between["kappa"] <= hi
    everyone = dash["all_annotators"]
    assert everyone["alpha"] == pytest.approx(1 - 19 * 6 / 202)  # two raters, no gaps: the same alpha
    assert everyone["n"] == 10 and everyone["alpha_ci"][0] <= everyone["alpha"] <= everyone["alpha_ci"][1]
    for row, who in zip(dash["vs_label"], ("X", "Y")):
        pairs = shown_pairs[who]
        rep = row["report"]
        assert rep["percent"] == pytest.approx({"X": 0.7, "Y": 0.6}[who])
        # Kappa in shown terms, by the textbook formula on the observed (choice, label position) table.
        n = len(pairs)
        po = sum(a == b for a, b in pairs) / n
        pe = sum(sum(a == c for a, _ in pairs) * sum(b == c for _, b in pairs) for c in ("A", "B", "tie")) / n ** 2
        assert rep["kappa"] == pytest.approx((po - pe) / (1 - pe))
    html = admin_client(app).get(f"/admin/studies/{sid}").text
    assert "70.0%" in html and "0.412" in html and "0.436" in html
    assert html.count('<span class="ci">') == 3 * 3 + 1  # percent, kappa, alpha on 3 rows; alpha of everyone
    assert "n = 10" in html and "not enough" not in html
    assert shown_label("first", False) == "A" and shown_label("first", True) == "B"
    assert shown_label("second", True) == "A" and shown_label("tie", True) == "tie" and shown_label(None, True) is None


def test_serve_survives_kill_and_keeps_tokens_out_of_logs(tmp_path):
    """The real command: `annotate serve` in a subprocess, killed with SIGKILL mid-study, started again."""
    import os
    import signal
    import socket
    import subprocess
    import sys
    import time

    import httpx

    db, store, sid, (tok, _) = setup_study(tmp_path, n=3)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    base = f"http://127.0.0.1:{port}"
    log = tmp_path / "server.log"

    def start(env_token: str | None) -> subprocess.Popen:
        env = {k: v for k, v in os.environ.items() if k != "PSYCHOCOUNSEL_ANNOTATE_ADMIN_TOKEN"}
        if env_token:
            env["PSYCHOCOUNSEL_ANNOTATE_ADMIN_TOKEN"] = env_token
        proc = subprocess.Popen([sys.executable, "-m", "psychocounsel.cli", "annotate", "serve", "--db", str(db),
                                 "--port", str(port), "--bootstrap", "50"], stdout=open(log, "a"),
                                stderr=subprocess.STDOUT, env=env)
        deadline = time.monotonic() + 30
        while True:
            assert proc.poll() is None, log.read_text()
            try:
                if httpx.get(base + "/", timeout=1).status_code == 200:
                    return proc
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)

    proc = start(None)
    try:
        printed = [ln for ln in log.read_text().splitlines() if ln.startswith("admin token (shown once")]
        assert len(printed) == 1
        generated = printed[0].rsplit(" ", 1)[1]
        with httpx.Client(base_url=base, follow_redirects=True) as c:
            assert c.get(f"/a/{tok}").status_code == 200  # redirect followed to /annotate
            ov = c.get("/annotate?format=json").json()
            r = c.post(f"/annotate/{ov['next']}", data={"choice": "tie", "csrf": ov["csrf"], "comment": "kept"})
            assert r.status_code == 200
            assert httpx.get(f"{base}/admin?format=json", headers={"Authorization": f"Bearer {generated}"}).json()
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    proc = start("env-admin-token-0123456789abcdef")
    try:
        with httpx.Client(base_url=base, follow_redirects=True) as c:
            c.get(f"/a/{tok}")
            item = c.get(f"/annotate/{ov['next']}?format=json").json()["item"]
            assert (item["choice"], item["comment"]) == ("tie", "kept")
        admin = {"Authorization": "Bearer env-admin-token-0123456789abcdef"}
        assert httpx.get(f"{base}/admin/studies/{sid}?format=json", headers=admin).json()["answers"] == 1
        assert httpx.get(f"{base}/admin?format=json", headers={"Authorization": f"Bearer {generated}"}).status_code == 401
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    text = log.read_text()
    assert "/a/[token]" in text and tok not in text  # the access log has the path, redacted
    assert "env-admin-token" not in text and text.count(generated) == 1


# ------------------------------------------------------------------ whole sessions, rated blind on the rubric


@pytest.fixture(scope="module")
def session_judging(tmp_path_factory):
    """A session judging of two policies with the same 12 clients (transcripts written by hand, judged on the
    session rubric by the fake server's session judge)."""
    from session_transcripts import profiles, transcript, write_run

    from psychocounsel.sessions.judge_config import JudgeSessionsConfig
    from psychocounsel.sessions.judges import judge_sessions
    from psychocounsel.sessions.report_views import write_session_report
    from psychocounsel.testing.fakeserver import fake_server

    tmp = tmp_path_factory.mktemp("sessions")
    run = write_run(tmp / "run", "reflective", n=12, extra=[transcript(p, "advice_lists") for p in profiles(12)])
    with fake_server(latency=0.0) as srv:
        j = {"backend": "fake", "model": "judge"}
        cfg = JudgeSessionsConfig(run_dir=str(run), backends={"fake": {"type": "openai", "base_urls": [srv.base_url],
                                                                       "api_key_env": None}},
                                  rubric=j, bootstrap={"n_boot": 100})
        sj, _ = judge_sessions(cfg)
        write_session_report(sj)
        sj.close()
    return sj.dir


def test_a_session_study_shows_whole_sessions_blind_and_rates_the_rubric(session_judging, tmp_path):
    from psychocounsel.sessions.rubric import load_session_rubric

    spec = study_spec(session_judging, n=12, seed=1)
    assert (spec.source_kind, spec.label_name, spec.scale) == ("sessions", "session judges", (1, 6))
    assert spec.side_names == ("advice_lists", "reflective") and len(spec.items) == 12
    assert [k for k, _ in spec.principles] == load_session_rubric().keys and len(spec.principles) == 5
    # the judge's rubric means prefer the reflective session (second by name) every time
    assert {it.label for it in spec.items} == {"second"}
    db = tmp_path / "annotate.sqlite"
    store = AnnotationStore(db)
    sid = store.create_study(spec)
    toks = [store.add_annotator(sid, name)[1] for name in ("ann", "ben")]
    app = create_app(db, ADMIN, n_boot=200)
    shown = {}
    for tok in toks:
        c = annotator_client(app, tok)
        order = [it["assignment_id"] for it in c.get("/annotate?format=json").json()["items"]]
        assert "two whole sessions" in c.get("/annotate").text
        first = c.get(f"/annotate/{order[0]}")
        assert "Session A" in first.text and "Which session is better?" in first.text
        assert '<option value="6"' in first.text and "1 = poor, 6 = excellent" in first.text
        items = [c.get(f"/annotate/{a}?format=json").json()["item"] for a in order]
        page = first.text + json.dumps(items)
        # blind: the whole conversation, never a policy's or model's name
        assert "Client:\n" in items[0]["response_a"] and "Counselor:\n" in items[0]["response_a"]
        assert "reflective" not in page and "advice_lists" not in page and "fake-" not in page
        # A is the reflective session for some items and the list-giving one for others
        shown[tok] = [(it["question"], it["response_a"].count("Here are some strategies") == 0) for it in items]
        assert 0 < sum(refl for _, refl in shown[tok]) < len(items)
        csrf = csrf_of(c)
        for a, item in zip(order, items):
            good = "A" if "Here are some strategies" not in item["response_a"] else "B"
            bad = "B" if good == "A" else "A"
            ratings = {f"rating_{good}_{k}": "6" for k, _ in spec.principles}
            ratings |= {f"rating_{bad}_{k}": "2" for k, _ in spec.principles}
            assert answer(c, a, good, csrf, **ratings).status_code == 303
        r = c.post(f"/annotate/{order[0]}", json={"choice": "A", "ratings": {"A": {"alliance": 7}}},
                   headers={"x-csrf-token": csrf})
        assert r.status_code == 422 and "whole number 1 to 6" in r.json()["error"]
    assert shown[toks[0]] != shown[toks[1]]  # each expert has an order and sides of their own
    adm = admin_client(app)
    dash = adm.get(f"/admin/studies/{sid}?format=json").json()
    assert dash["study"]["scale"] == [1, 6]
    vs_judge = {p["key"]: p["with_judge"] for p in dash["agreement"]["principles"]}
    # both experts agree with the judge on which session is the better one, on every criterion
    assert all(r["enough"] and r["alpha"] > 0.5 and r["n"] == 12 for r in vs_judge.values())
    assert dash["agreement"]["vs_label"][0]["report"]["percent"] == 1.0
    # the export feeds `agree --sessions`: the judges' scores against each expert's, per criterion
    (tmp_path / "ratings.csv").write_text(adm.get(f"/admin/studies/{sid}/export.csv").text)
    out = tmp_path / "agree.json"
    r = CliRunner().invoke(cli_main, ["agree", "--sessions", str(session_judging / "sessions.jsonl"),
                                      str(tmp_path / "ratings.csv"), "--bootstrap", "200", "--out", str(out)])
    assert r.exit_code == 0, r.output
    assert "session judges vs experts: 24 sessions, 24 rated pairs" in " ".join(r.output.split())
    res = json.loads(out.read_text())
    for c, rep in res["columns"].items():
        assert rep["n"] == 48 and rep["alpha"] > 0.5 and rep["alpha_ci"][0] <= rep["alpha"] <= rep["alpha_ci"][1], c


def test_a_database_from_before_rating_scales_opens_with_the_principles_scale(tmp_path):
    db = tmp_path / "old.sqlite"
    con = sqlite3.connect(db)
    con.executescript(MIGRATIONS[0])
    con.execute("INSERT INTO studies (name, source, source_kind, label_name, side_names, principles, seed, created_at) "
                "VALUES ('old', 'pairs.jsonl', 'pairs', 'dataset label', '[\"chosen\", \"rejected\"]', "
                "'[[\"empathy\", \"Empathy\"]]', 0, 0)")
    con.execute("PRAGMA user_version=1")
    con.commit()
    con.close()
    store = AnnotationStore(db, create=False)
    assert store.study("old")["scale"] == (1, 5)
