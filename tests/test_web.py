"""The web plumbing both apps share (psychocounsel/web.py), on a small app of its own: one-line errors, security
headers, cookie flags, constant-time comparison, JSON and form bodies, the admin sign-in."""

from __future__ import annotations

import ast
import hashlib
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from fastapi.testclient import TestClient
from pydantic import BaseModel, ConfigDict, ValidationError

from psychocounsel import web as web_module
from psychocounsel.web import (
    MAX_FIELD,
    Body,
    Login,
    Web,
    bearer,
    csrf_ok,
    explain,
    form_fields,
    hash_token,
    same_secret,
    templates,
)

CSP = "default-src 'none'; style-src 'self'"
ADMIN_TOKEN = "a-test-admin-token-0123456789"
SESSION = "derived-session-value"
TEMPLATES = {
    "page.html": "<h1>{{ name }}</h1><p>{{ when | utc }}</p>",
    "error.html": "<p id=error>{{ error }}</p><p>status {{ status }}</p>",
    "login.html": "<form><input name=csrf value='{{ csrf }}'></form>",
}


class Note(BaseModel):
    model_config = ConfigDict(extra="forbid")
    csrf: str | None = None
    n: int
    text: str = ""


def flat_form(fields) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in fields:
        if key in out:
            raise ValueError(f"field {key!r} sent twice")
        out[key] = value
    return out


def first_problem(e: ValidationError) -> str:
    err = e.errors(include_url=False)[0]
    return f"{'.'.join(map(str, err['loc']))}: {err['msg']}"


def make_app(tmp_path: Path, *, bearer_wants_json: bool = False) -> tuple[FastAPI, list[str]]:
    folder, static = tmp_path / "templates", tmp_path / "static"
    folder.mkdir(parents=True)
    static.mkdir()
    for name, text in TEMPLATES.items():
        (folder / name).write_text(text, encoding="utf-8")
    (static / "app.css").write_text("body {}", encoding="utf-8")
    web = Web(templates(folder), csp=CSP, form_shape=flat_form, explain=first_problem,
              bearer_wants_json=bearer_wants_json)
    app = FastAPI()
    web.install(app, static)
    sign_ins: list[str] = []

    @app.get("/page")
    async def page(request: Request):
        return web.page(request, "page.html", {"name": "<b>Ana</b>", "when": 0, "_layout": "wide"})

    @app.post("/note")
    async def note(request: Request):
        data, from_form = await web.read_body(request)
        body = web.parse(request, Note, data, from_form)
        return body if isinstance(body, Response) else JSONResponse(body.model_dump())

    @app.get("/cookie")
    async def cookie(request: Request):
        resp = web.page(request, "page.html", {"name": "x", "when": 0})
        web.set_cookie(request, resp, "pc_test", "value")
        return resp

    @app.get("/private")
    async def private(request: Request):
        return web.sign_in(request, "Sign in first.", "/admin/login")

    web.add_admin_login(app, login=Login, admin_hash=hash_token(ADMIN_TOKEN), session=SESSION,
                        login_cookie="pc_test_login", admin_cookie="pc_test_admin",
                        on_sign_in=lambda: sign_ins.append("admin"))
    return app, sign_ins


@pytest.fixture
def client(tmp_path):
    app, _ = make_app(tmp_path)
    return TestClient(app)


J = {"accept": "application/json"}


# ------------------------------------------------------------------ tokens


def test_hash_token_is_the_sha256_hex_of_the_token():
    assert hash_token("tok") == hashlib.sha256(b"tok").hexdigest()
    assert hash_token("tok") != hash_token("tok ")


def test_same_secret_is_plain_equality_and_takes_any_text():
    assert same_secret("abc", "abc")
    assert not same_secret("abc", "abd")
    assert not same_secret("abc", "abcd")  # a prefix is not the secret
    assert not same_secret("", "abc")
    # compare_digest refuses non-ASCII str; compared as bytes it is an answer, never a TypeError (a 500)
    assert not same_secret("ünïcode", "abc")
    assert same_secret("ünïcode", "ünïcode")


def test_csrf_is_needed_by_cookie_sessions_only(tmp_path):
    app = FastAPI()
    seen: dict[str, bool] = {}

    @app.post("/w")
    async def w(request: Request):
        data = await request.json()
        seen["ok"] = csrf_ok(request, data.get("body", {}), "expected", data["via_cookie"])
        return {"bearer": bearer(request)}

    c = TestClient(app)

    def ok(body: dict[str, Any], via_cookie: bool = True, **headers: str) -> bool:
        c.post("/w", json={"body": body, "via_cookie": via_cookie}, headers=headers)
        return seen["ok"]

    assert ok({}, via_cookie=False)
    assert ok({"csrf": "expected"})
    assert ok({}, **{"x-csrf-token": "expected"})
    assert not ok({})
    assert not ok({"csrf": "wrong"})
    assert not ok({"csrf": ["expected"]})  # only text can be a token
    assert c.post("/w", json={"via_cookie": True}, headers={"authorization": "Bearer  t0k "}).json() == {"bearer": "t0k"}
    assert c.post("/w", json={"via_cookie": True}, headers={"authorization": "Basic t0k"}).json() == {"bearer": None}


# ------------------------------------------------------------------ answers and headers


def test_every_answer_carries_the_security_headers(client):
    for resp in (client.get("/page"), client.get("/page", headers=J), client.get("/nowhere"),
                 client.post("/note", content=b"{", headers={"content-type": "application/json"})):
        assert resp.headers["content-security-policy"] == CSP
        assert resp.headers["x-content-type-options"] == "nosniff"
        assert resp.headers["x-frame-options"] == "DENY"
        assert resp.headers["referrer-policy"] == "no-referrer"
        assert resp.headers["cache-control"] == "no-store"
    css = client.get("/static/app.css")
    assert css.status_code == 200 and css.headers["content-security-policy"] == CSP
    assert "cache-control" not in css.headers or "no-store" not in css.headers["cache-control"]


def test_a_page_is_escaped_html_for_a_browser_and_its_context_as_json_for_a_script(client):
    html = client.get("/page")
    assert html.headers["content-type"].startswith("text/html")
    assert "&lt;b&gt;Ana&lt;/b&gt;" in html.text and "<b>" not in html.text
    assert "1970-01-01 00:00:00" in html.text  # the utc filter
    for headers, url in ((J, "/page"), ({}, "/page?format=json")):
        assert client.get(url, headers=headers).json() == {"name": "<b>Ana</b>", "when": 0}  # no _layout
    # a browser asks for both; HTML wins
    assert client.get("/page", headers={"accept": "text/html,application/json"}).headers["content-type"].startswith(
        "text/html")


def test_errors_are_one_line_json_for_a_script_and_a_page_for_a_person(client):
    assert client.get("/nowhere", headers=J).json() == {"error": "Not Found", "status": 404}
    page = client.get("/nowhere")
    assert page.status_code == 404 and '<p id=error>Not Found</p>' in page.text
    bad = client.post("/note", content=b"{not json", headers={"content-type": "application/json"})
    assert (bad.status_code, bad.json()) == (400, {"error": "invalid JSON body", "status": 400})
    arr = client.post("/note", json=[1, 2])
    assert (arr.status_code, arr.json()) == (422, {"error": "expected a JSON object", "status": 422})
    twice = client.post("/note", content=b"n=1&n=2", headers={"content-type": "application/x-www-form-urlencoded",
                                                              **J})
    assert (twice.status_code, twice.json()["error"]) == (422, "field 'n' sent twice")
    wrong_method = client.delete("/page", headers=J)
    assert wrong_method.status_code == 405 and "\n" not in wrong_method.json()["error"]


def test_bearer_alone_asks_for_json_only_where_the_app_says_so(tmp_path):
    plain, _ = make_app(tmp_path / "plain")
    api, _ = make_app(tmp_path / "api", bearer_wants_json=True)
    auth = {"authorization": "Bearer x"}
    assert TestClient(plain).get("/page", headers=auth).headers["content-type"].startswith("text/html")
    assert TestClient(api).get("/page", headers=auth).json()["name"] == "<b>Ana</b>"


def test_someone_not_signed_in_is_redirected_in_a_browser_and_refused_to_a_script(client):
    browser = client.get("/private", follow_redirects=False)
    assert (browser.status_code, browser.headers["location"]) == (303, "/admin/login")
    script = client.get("/private", headers=J, follow_redirects=False)
    assert (script.status_code, script.json()) == (401, {"error": "Sign in first.", "status": 401})
    # a Bearer header is a script's (a browser never sends one): refused, not redirected
    token = client.get("/private", headers={"authorization": "Bearer not-a-token"}, follow_redirects=False)
    assert token.status_code == 401 and "Sign in first." in token.text


# ------------------------------------------------------------------ bodies


def test_a_json_body_is_read_strictly_and_a_form_laxly(client):
    assert client.post("/note", json={"n": 4, "text": "hi"}).json() == {"csrf": None, "n": 4, "text": "hi"}
    form = client.post("/note", data={"n": "4", "text": "hi"}, headers=J)
    assert form.json() == {"csrf": None, "n": 4, "text": "hi"}  # a form can only send text: "4" is 4
    strict = client.post("/note", json={"n": "4"})  # JSON has types: "4" is not a number
    assert strict.status_code == 422
    body = strict.json()
    assert body["status"] == 422 and body["error"].startswith("n: ") and "\n" not in body["error"]
    assert [d["loc"] for d in body["detail"]] == [["n"]]


def test_an_invalid_body_never_echoes_what_was_sent(client):
    resp = client.post("/note", json={"n": 1, "secret": "hunter2-token"})
    assert resp.status_code == 422
    assert resp.json()["error"] == "secret: Extra inputs are not permitted"
    assert "hunter2-token" not in resp.text
    page = client.post("/note", data={"n": "x"})
    assert page.status_code == 422 and page.headers["content-type"].startswith("text/html")
    assert "<p id=error>n: " in page.text


class Named(Body):
    name: str
    n: int = 0


def test_the_shared_form_reader_leaves_out_empty_fields_and_refuses_doubles_and_files():
    assert form_fields([("name", "Ana"), ("n", ""), ("csrf", "t")]) == {"name": "Ana", "csrf": "t"}
    with pytest.raises(ValueError, match="^field 'name' sent twice$"):
        form_fields([("name", "Ana"), ("name", "Bo")])
    with pytest.raises(ValueError, match="^field 'file' must be text, not a file$"):
        form_fields([("file", object())])


def test_the_shared_explain_names_an_unknown_field_a_missing_one_else_pydantics_message():
    def line(data: dict[str, Any], strict: bool = True) -> str:
        with pytest.raises(ValidationError) as e:
            Named.model_validate(data, strict=strict)
        return explain(e.value)

    assert line({"name": "Ana", "mood": "fine"}) == "unknown field 'mood'"
    assert line({}) == "name is required"
    assert line({"name": "Ana", "n": "4"}).startswith("n: ")
    with pytest.raises(ValidationError) as e:
        Login.model_validate({"token": "x" * (MAX_FIELD + 1), "csrf": "c"})
    assert explain(e.value).startswith("token: ")
    with pytest.raises(ValidationError) as e:
        Login.model_validate({"token": "t"})
    assert explain(e.value) == "csrf is required"  # the sign-in form needs its nonce


# ------------------------------------------------------------------ cookies and the admin sign-in


def test_cookies_are_httponly_lax_and_secure_over_https(tmp_path):
    app, _ = make_app(tmp_path)
    plain = TestClient(app).get("/cookie").headers["set-cookie"].lower()
    assert "pc_test=value" in plain and "httponly" in plain and "samesite=lax" in plain and "path=/" in plain
    assert "secure" not in plain
    https = TestClient(app, base_url="https://testserver").get("/cookie").headers["set-cookie"].lower()
    assert "secure" in https and "httponly" in https


def test_admin_sign_in_needs_the_forms_nonce_and_the_right_token(tmp_path):
    app, sign_ins = make_app(tmp_path)
    c = TestClient(app)
    form = c.get("/admin/login", headers=J)
    nonce = form.json()["csrf"]
    assert form.json()["login"] == "POST token and csrf to /admin/login" and c.cookies["pc_test_login"] == nonce

    stale = c.post("/admin/login", json={"token": ADMIN_TOKEN, "csrf": "another-nonce"})
    assert (stale.status_code, stale.json()["error"]) == (403, "This form expired; reload the login page.")
    wrong = c.post("/admin/login", json={"token": ADMIN_TOKEN + "x", "csrf": nonce})
    assert (wrong.status_code, wrong.json()["error"]) == (401, "Wrong admin token.")
    missing = c.post("/admin/login", json={"csrf": nonce})
    assert missing.status_code == 422 and missing.json()["error"].startswith("token: ")
    assert sign_ins == []

    ok = c.post("/admin/login", data={"token": ADMIN_TOKEN, "csrf": nonce}, follow_redirects=False)
    assert (ok.status_code, ok.headers["location"]) == (303, "/admin")
    assert c.cookies["pc_test_admin"] == SESSION and ADMIN_TOKEN not in ok.headers["set-cookie"]
    assert "pc_test_login" not in c.cookies  # the nonce is spent
    assert sign_ins == ["admin"]


def test_a_sign_in_without_the_nonce_cookie_is_refused(tmp_path):
    app, sign_ins = make_app(tmp_path)
    resp = TestClient(app).post("/admin/login", json={"token": ADMIN_TOKEN, "csrf": ""})
    assert resp.status_code == 403 and sign_ins == []


def test_the_web_module_sits_at_the_bottom():
    """It imports nothing of the package but errors, so both apps (and their stores) can import it."""
    tree = ast.parse(Path(web_module.__file__).read_text(encoding="utf-8"))
    found: set[str] = set()
    for n in ast.walk(tree):
        if isinstance(n, ast.ImportFrom) and (n.level or (n.module or "").startswith("psychocounsel")):
            found.add("." * n.level + (n.module or ""))
        elif isinstance(n, ast.Import):
            found |= {a.name for a in n.names if a.name.startswith("psychocounsel")}
    assert found <= {".errors", "psychocounsel.errors"}, found
