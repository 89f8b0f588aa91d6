"""The drafting assistant's app over the fake OpenAI-compatible server: auth, the crisis gate, overrides,
privacy (storage off keeps no client text; the audit log holds no content), consent and export opt-in."""

from __future__ import annotations


import pytest
from fastapi.testclient import TestClient

from helpers import ADMIN, CALM, CRISIS, client_for, config
from psychocounsel.serve.app import create_app
from psychocounsel.testing.fakeserver import fake_server

J = {"accept": "application/json"}


@pytest.fixture(scope="module")
def fake():
    with fake_server(latency=0.0) as srv:
        yield srv


@pytest.fixture()
def deployment(tmp_path, fake):
    def make(**kw):
        cfg = config(tmp_path, fake.base_url, **kw)
        app = create_app(cfg, ADMIN)
        store = app.state.store
        tokens = {name: store.add_clinician(name)[1] for name in ("Dr. Rivera", "Dr. Okafor")}
        return cfg, app, tokens
    return make


def test_every_route_needs_a_token(deployment):
    _, app, _ = deployment()
    with TestClient(app, base_url="http://127.0.0.1") as c:
        assert c.get("/workspace", headers=J).status_code == 401
        assert c.get("/workspace", follow_redirects=False).status_code == 303  # a browser goes to the home page
        assert c.post("/drafts", json={"message": CALM}).status_code == 401
        assert c.get("/drafts/1", headers=J).status_code == 401
        assert c.get("/admin", headers=J).status_code == 401
        assert c.get("/admin/gate-counts", headers={"authorization": "Bearer nope"}).status_code == 401
        assert c.post("/v1/chat/completions", json={}).status_code == 401
        assert c.get("/v1/models").status_code == 401
        assert c.post("/get_reward", json={"query": ["x"]}).status_code == 401
        assert c.get("/c/not-a-token", headers=J).status_code == 404


def test_drafts_unranked_without_a_reward_model_and_another_clinician_gets_404(deployment):
    _, app, tokens = deployment()
    with TestClient(app):
        rivera, csrf = client_for(app, tokens["Dr. Rivera"])
        got = rivera.post("/drafts", data={"message": CALM, "n": "3", "csrf": csrf}, headers=J)
        assert got.status_code == 200, got.text
        view = got.json()
        assert view["ranked"] is False and "unranked" in view["ranking_note"]
        assert len(view["drafts"]) == 3 and view["risk_panel"] is None and view["tier"] == "none"
        assert all(not d["blocked"] and "unranked" in d["reason"] for d in view["drafts"])
        sid = view["set_id"]
        assert rivera.get(f"/drafts/{sid}", headers=J).status_code == 200
        okafor, _ = client_for(app, tokens["Dr. Okafor"])
        assert okafor.get(f"/drafts/{sid}", headers=J).status_code == 404
        bearer = {"authorization": f"Bearer {tokens['Dr. Okafor']}", **J}
        assert okafor.post(f"/drafts/{sid}/0", json={"action": "approve"}, headers=bearer).status_code == 404
        # a form without the CSRF token is refused
        assert rivera.post(f"/drafts/{sid}/0", data={"action": "approve"}, headers=J).status_code == 403


def test_crisis_message_shows_the_risk_panel_and_an_unsafe_draft_needs_an_audited_override(deployment):
    _, app, tokens = deployment()
    with TestClient(app):
        c, csrf = client_for(app, tokens["Dr. Rivera"])
        view = c.post("/drafts", json={"message": CRISIS, "n": 2, "csrf": csrf}).json()
        panel = view["risk_panel"]
        assert panel["tier"] == "high" and view["tier"] == "high"
        assert any("kill myself" in e["text"] for e in panel["evidence"])
        assert any(r["number"] == "988" for r in panel["resources"])
        assert any("safe" in q for q in panel["questions"])
        assert view["safety_instruction"] is True
        # the fake server's draft does not point to help: blocked, with the flag shown
        d = view["drafts"][0]
        assert d["blocked"] and any(f["kind"] == "missing_points_to_help" for f in d["flags"])
        sid, idx = view["set_id"], d["index"]
        refused = c.post(f"/drafts/{sid}/{idx}", json={"action": "approve", "csrf": csrf})
        assert refused.status_code == 409 and "override" in refused.json()["error"]
        ok = c.post(f"/drafts/{sid}/{idx}", json={"action": "approve", "override": True, "csrf": csrf}).json()
        assert ok["override"] is True and ok["action"] == "accept" and ok["sent_to_client"] is False
        audit = c.get("/admin/audit", headers={"authorization": f"Bearer {ADMIN}"}).json()["rows"]
        overrides = [r for r in audit if r["action"] == "safety_override"]
        assert len(overrides) == 1 and overrides[0]["ids"]["decision_id"] == ok["decision_id"]
        assert overrides[0]["actor"].startswith("clinician:")
        # an edit that does what a reply must is approved without an override
        safe = ("It sounds like you want to kill yourself, and I'm glad you told me. Are you safe right now? "
                "Please call or text 988 now.")
        edit = c.post(f"/drafts/{sid}/{idx}", json={"action": "approve", "text": safe, "csrf": csrf}).json()
        assert edit["action"] == "edit" and edit["override"] is False and edit["edit_distance"] > 0
        counts = c.get("/admin/gate-counts", headers={"authorization": f"Bearer {ADMIN}"}).json()["months"]
        assert counts[-1]["high"] == 1 and set(counts[-1]) == {"month", "none", "possible", "high"}


def test_storage_off_keeps_no_client_text_and_the_audit_log_holds_no_content(deployment, tmp_path):
    _, app, tokens = deployment()
    secret = "Zebulon-Quartz-7731"  # a marker no id or count can contain
    message = f"{CRISIS} My neighbour {secret} found the note."
    with TestClient(app):
        c, csrf = client_for(app, tokens["Dr. Rivera"])
        view = c.post("/drafts", json={"message": message, "n": 2, "csrf": csrf}).json()
        edited = f"I hear you. Are you safe right now? Call or text 988. {secret}-edit"
        c.post(f"/drafts/{view['set_id']}/0", json={"action": "approve", "text": edited, "override": True,
                                                    "csrf": csrf})
        c.post(f"/drafts/{view['set_id']}/1", json={"action": "reject", "csrf": csrf})
        audit = c.get("/admin/audit", headers={"authorization": f"Bearer {ADMIN}"}).json()["rows"]
    app.state.store.close()
    blob = b"".join(p.read_bytes() for p in tmp_path.glob("serve.sqlite*"))
    assert secret.encode() not in blob and b"kill myself" not in blob and b"I hear you" not in blob
    assert {r["action"] for r in audit} >= {"draft", "decision"}
    for r in audit:
        assert set(r) == {"id", "at", "actor", "action", "ids"}
        assert all(not isinstance(v, str) or len(v) <= 64 for v in r["ids"].values())
        assert secret not in str(r) and "kill" not in str(r)


def test_storage_on_needs_consent_and_export_needs_the_policy(deployment):
    _, app, tokens = deployment(policy={"storage": True, "export_pairs": True})
    admin = {"authorization": f"Bearer {ADMIN}"}
    with TestClient(app):
        c, csrf = client_for(app, tokens["Dr. Rivera"])
        assert c.post("/drafts", json={"message": CALM, "csrf": csrf}).status_code == 422  # no client id
        no_consent = c.post("/drafts", json={"message": CALM, "client_id": "c-17", "csrf": csrf})
        assert no_consent.status_code == 409 and "consent" in no_consent.json()["error"]
        assert c.post("/consent", json={"client_id": "c-17", "csrf": csrf}).json()["consent"] is True
        view = c.post("/drafts", json={"message": CALM, "client_id": "c-17", "n": 1, "csrf": csrf}).json()
        final = view["drafts"][0]["text"] + " What would help most this week?"
        c.post(f"/drafts/{view['set_id']}/0", json={"action": "approve", "text": final, "csrf": csrf})
        pairs = c.get("/admin/export/pairs", headers=admin).json()["rows"]
        assert pairs == [{"prompt": CALM, "chosen": final, "rejected": view["drafts"][0]["text"],
                          "set_id": view["set_id"], "decision_id": pairs[0]["decision_id"],
                          "edit_distance": len(" What would help most this week?"), "tier": "none"}]
        assert c.get("/admin/export/labels", headers=admin).status_code == 403  # not opted in
        erased = c.post("/consent/withdraw", json={"client_id": "c-17", "csrf": csrf}).json()
        assert erased["erased_draft_sets"] == 1
        assert c.get("/admin/export/pairs", headers=admin).json()["rows"] == []


def test_export_refused_without_opt_in(deployment):
    _, app, _ = deployment()
    with TestClient(app) as c:
        for kind in ("pairs", "labels"):
            got = c.get(f"/admin/export/{kind}", headers={"authorization": f"Bearer {ADMIN}"})
            assert got.status_code == 403 and f"export_{kind}" in got.json()["error"]


def test_retention_purge_erases_old_text(tmp_path):
    from psychocounsel.serve.store import ServeStore

    store = ServeStore(tmp_path / "s.sqlite")
    cid, _ = store.add_clinician("Dr. A")
    store.record_consent("c1", cid)
    sid = store.add_draft_set(cid, "none", [{"overall": None, "flags": [], "blocked": False, "text": "draft words"}],
                              False, client_id="c1", message="client words")
    assert store.purge(30) == 0
    assert store.purge(30, now=__import__("time").time() + 31 * 86400) == 1
    row = store.draft_set(cid, sid)
    assert row["message"] is None and row["drafts"][0]["text"] is None and row["tier"] == "none"
    with pytest.raises(Exception, match="consent"):
        store.add_draft_set(cid, "none", [], False, client_id="c2", message="x")


def test_pages_are_private_and_escaped(deployment):
    _, app, tokens = deployment()
    with TestClient(app):
        c, csrf = client_for(app, tokens["Dr. Rivera"])
        xss = '<script>alert(1)</script> I feel stuck at work.'
        got = c.post("/drafts", data={"message": xss, "n": "1", "csrf": csrf}, follow_redirects=True)
        assert got.status_code == 200
        assert "<script>alert(1)" not in got.text and "&lt;script&gt;alert(1)" in got.text
        assert got.headers["cache-control"] == "no-store"
        assert "script-src 'none'" in got.headers["content-security-policy"]


def test_admin_adds_a_clinician_whose_link_works(deployment):
    _, app, _ = deployment()
    with TestClient(app, base_url="http://127.0.0.1") as c:
        new = c.post("/admin/clinicians", json={"name": "Dr.  New"}, headers={"authorization": f"Bearer {ADMIN}"})
        assert new.status_code == 200 and new.json()["name"] == "Dr. New"
        c.get(new.json()["link"].replace("http://127.0.0.1", ""), follow_redirects=False)
        assert c.get("/workspace", headers=J).json()["clinician"] == "Dr. New"


@pytest.mark.parametrize("storage", [False, True])
def test_a_reopened_draft_page_shows_what_the_first_page_showed(tmp_path, fake, storage):
    from helpers import WordScorer

    policy = {"storage": True} if storage else {}
    app = create_app(config(tmp_path, fake.base_url, policy=policy), ADMIN, scorer=WordScorer())
    token = app.state.store.add_clinician("Dr. Rivera")[1]
    bearer = {"authorization": f"Bearer {token}"}
    body = {"message": CALM, "n": 3, **({"client_id": "c-1"} if storage else {})}
    with TestClient(app) as c:
        if storage:
            c.post("/consent", json={"client_id": "c-1"}, headers=bearer)
        first = c.post("/drafts", json=body, headers=bearer).json()
        assert all(d["principles"] and d["reason"].startswith(("1st", "2nd", "3rd")) for d in first["drafts"])
        keys = ("index", "rank", "overall", "principles", "reason", "flags", "blocked", "finish_reason", "text")
        shown = [{k: d[k] for k in keys} for d in first["drafts"]]
        again = c.get(f"/drafts/{first['set_id']}", headers=bearer).json()
        assert [{k: d[k] for k in keys} for d in again["drafts"]] == shown
        assert again["ranked"] and again["ranking_note"] == first["ranking_note"]
        if storage:  # after a restart the page is rebuilt from the database, scores and reasons included
            app.state.service.memory.pages.clear()
            rebuilt = c.get(f"/drafts/{first['set_id']}", headers=bearer).json()
            assert [{k: d[k] for k in keys} for d in rebuilt["drafts"]] == shown
        # the HTML page shows them too
        browser, _ = client_for(app, token)
        html = browser.get(f"/drafts/{first['set_id']}").text
    assert first["drafts"][0]["reason"].split(";")[0] in html and "<th>empathy</th>" in html


def test_a_database_from_before_the_stored_reasons_opens_and_reads(tmp_path):
    """A deployment's database made before the drafts rows kept principle scores and reasons is migrated in place;
    its old drafts read back with none (nothing is made up for them)."""
    import sqlite3

    from psychocounsel.serve.store import MIGRATIONS, ServeStore

    con = sqlite3.connect(tmp_path / "old.sqlite")
    con.executescript(MIGRATIONS[0] + "; PRAGMA user_version=1;")
    con.execute("INSERT INTO clinicians (name, token_hash, created_at) VALUES ('Dr. Old', 'h', 0)")
    con.execute("INSERT INTO draft_sets (clinician_id, created_at, tier, n, ranked) VALUES (1, 0, 'none', 1, 1)")
    con.execute("INSERT INTO drafts (set_id, idx, overall, flags, blocked) VALUES (1, 0, 0.5, '[]', 0)")
    con.commit()
    con.close()
    store = ServeStore(tmp_path / "old.sqlite")
    (draft,) = store.draft_set(1, 1)["drafts"]
    assert (draft["overall"], draft["principles"], draft["reason"], draft["finish_reason"]) == (0.5, {}, "", None)
    assert store.rows("PRAGMA user_version")[0]["user_version"] == len(MIGRATIONS)


def test_a_rebuilt_page_still_lists_the_drafts_the_backend_failed_to_write(tmp_path):
    """With storage on, a page rebuilt from the database after a restart lists the failed drafts as the first page
    did; withdrawing consent erases those lines with the text (a backend's error may quote the request)."""
    from psychocounsel.testing.fakeserver import FakeOptions, fake_server

    with fake_server(FakeOptions(script="ok,ok,500", latency=0.01)) as failing:
        app = create_app(config(tmp_path, failing.base_url, policy={"storage": True}), ADMIN)
        token = app.state.store.add_clinician("Dr. Rivera")[1]
        bearer = {"authorization": f"Bearer {token}"}
        with TestClient(app) as c:
            c.post("/consent", json={"client_id": "c-1"}, headers=bearer)
            first = c.post("/drafts", json={"message": CALM, "n": 3, "client_id": "c-1"}, headers=bearer).json()
            assert len(first["drafts"]) == 2 and len(first["failed"]) == 1 and "500" in first["failed"][0]
            app.state.service.memory.pages.clear()  # what a restart forgets
            rebuilt = c.get(f"/drafts/{first['set_id']}", headers=bearer).json()
            assert rebuilt["failed"] == first["failed"]
            assert app.state.store.withdraw_consent("c-1") == 1
            assert app.state.store.draft_set(app.state.store.clinicians()[0]["id"], first["set_id"])["failed"] == []
