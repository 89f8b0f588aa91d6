"""The web plumbing both apps share: the annotation app (annotate/app.py) and the drafting assistant (serve/app.py).

    web = Web(templates(HERE / "templates"), csp=CSP, form_shape=form_shape, explain=explain)
    web.install(app, HERE / "static")      # the stylesheet, security headers, every error answered like a page
    data, from_form = await web.read_body(request)
    body = web.parse(request, Model, data, from_form)   # the model, or the 422 to send instead
    return web.page(request, "page.html", ctx)          # HTML for a browser, the same context as JSON for a script

Both apps follow one model (docs/ANNOTATION.md has the long form): every page has a JSON twin; every error is
``{"error": <one line>, "status": <code>}`` to a JSON client and a page to a person; cookies are HttpOnly,
SameSite=Lax and Secure over HTTPS; every answer carries a strict Content-Security-Policy, nosniff, no framing and
no referrer, and every page but the stylesheet and script is ``Cache-Control: no-store`` (pages show private
text). Tokens are compared in constant time and stored only as SHA-256.

Request bodies: every POST body is a pydantic model on ``Body`` (unknown fields are errors; the CSRF token may ride
in the body), text fields are bounded (``MAX_FIELD``, ``MAX_NAME``), and ``Login`` is the admin sign-in both apps
take. ``form_fields`` reads a form (empty fields left out, a field sent twice or a file refused) and ``explain``
gives the one line for an invalid body (an unknown field, a missing one, else ``field: message``); a payload
module builds on them where its fields need more (the annotation app's ratings).

What differs between the apps is a parameter: the CSP (the drafting assistant runs no script at all), whether a
Bearer token alone asks for JSON (the drafting assistant's machine APIs), how a form is put in the JSON shape and
how a validation error reads (the annotation app nests and explains its ratings; the drafting assistant takes
``form_fields`` and ``explain`` as they are).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from jinja2 import Environment, FileSystemLoader
from pydantic import BaseModel, ConfigDict, StringConstraints, ValidationError
from starlette.exceptions import HTTPException

FormShape = Callable[[Iterable[tuple[str, Any]]], dict[str, Any]]
Explain = Callable[[ValidationError], str]

MAX_NAME = 200  # a person's or a study's name: shown in tables and file names
MAX_FIELD = 4096  # any other text field (a path, a token): far above any real one, far below a flood
Text = Annotated[str, StringConstraints(max_length=MAX_FIELD)]


def hash_token(token: str) -> str:
    """What is stored for a token. A 256-bit random token needs no slow hash (there is nothing to brute-force),
    and a stolen database opens no one's page."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def same_secret(a: str, b: str) -> bool:
    """Constant-time equality of two tokens or digests; as bytes, because compare_digest refuses non-ASCII text
    (a 500, not a 403). Both apps compare every token, CSRF value and nonce with it."""
    return hmac.compare_digest(a.encode("utf-8"), b.encode("utf-8"))


def sign(secret: bytes, principal: str) -> str:
    """A value only the server can make for ``principal`` (HMAC-SHA256 with the app's stored secret): the CSRF
    token of a page, and the admin's cookie, derived from the admin token hash and never the token itself."""
    return hmac.new(secret, principal.encode("utf-8"), hashlib.sha256).hexdigest()


def bearer(request: Request) -> str | None:
    """The token of an ``Authorization: Bearer`` header (scripts and the machine APIs sign in this way)."""
    auth = request.headers.get("authorization", "")
    return auth[7:].strip() if auth.lower().startswith("bearer ") else None


def sends_json(request: Request) -> bool:
    return request.headers.get("content-type", "").split(";")[0].strip().lower() == "application/json"


def csrf_ok(request: Request, data: dict[str, Any], expected: str, via_cookie: bool) -> bool:
    """Whether a write may go ahead. Only a cookie session needs the CSRF token (in the body or the
    ``X-CSRF-Token`` header): a browser never attaches a Bearer header on its own, so a cross-site page cannot
    forge one."""
    if not via_cookie:
        return True
    sent = data.get("csrf") or request.headers.get("x-csrf-token") or ""
    return isinstance(sent, str) and bool(sent) and same_secret(sent, expected)


def templates(folder: Path) -> Environment:
    """The Jinja environment of an app's templates: autoescaped (every piece of text a client or annotator wrote
    goes through it), and a ``utc`` filter for stored Unix times."""
    env = Environment(loader=FileSystemLoader(folder), autoescape=True, trim_blocks=True, lstrip_blocks=True)
    env.filters["utc"] = lambda ts: datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S")
    return env


def validation_body(e: ValidationError, line: str) -> dict[str, Any]:
    """The JSON answer to an invalid body: the line to show, and pydantic's list (as FastAPI's ``detail``).
    The input values are left out: the body may hold a token, and echoing it back helps no one."""
    detail = [{k: v for k, v in err.items() if k in ("type", "loc", "msg")} for err in e.errors(include_url=False)]
    return {"error": line, "status": 422, "detail": detail}


# ------------------------------------------------------------------ request bodies


class Body(BaseModel):
    """Every form carries its CSRF token (``csrf``) in the body; a JSON client may send it as a header instead.
    An unknown field is an error, not something quietly dropped."""

    model_config = ConfigDict(extra="forbid")
    csrf: Text | None = None


class Login(Body):
    """The admin sign-in (``Web.add_admin_login``): the admin token and the form's nonce."""

    token: Text
    csrf: Text


def form_fields(fields: Iterable[tuple[str, Any]]) -> dict[str, Any]:
    """A form's fields as a dict, empty fields left out (a form sends "" for an unset select or input). A field
    sent twice or a file is a ValueError of one line, not a guess."""
    out: dict[str, Any] = {}
    seen: set[str] = set()
    for key, value in fields:
        if key in seen:
            raise ValueError(f"field {key!r} sent twice")
        seen.add(key)
        if not isinstance(value, str):
            raise ValueError(f"field {key!r} must be text, not a file")  # noqa: TRY004 (read_body answers ValueError)
        if value != "":
            out[key] = value
    return out


def explain(e: ValidationError) -> str:
    """The first problem of an invalid body in one line a person can act on: an unknown field, a missing one,
    else ``field: pydantic's message``."""
    err = e.errors(include_url=False)[0]
    loc = [str(p) for p in err["loc"]]
    if err["type"] == "extra_forbidden":
        return f"unknown field {'.'.join(loc)!r}"
    if err["type"] == "missing":
        return f"{loc[0] if loc else ''} is required"
    return f"{'.'.join(loc) or 'body'}: {err['msg']}"


# ------------------------------------------------------------------ one app's pages


class Web:
    """Pages, errors, bodies, cookies and headers for one app, rendered from ``env``.

    ``csp``: the Content-Security-Policy on every answer. ``form_shape``: a form's fields (name, value) in the
    JSON shape, raising ValueError for a field it cannot take (``form_fields``, or a payload module's shape on top
    of it). ``explain``: the one line a person is shown for an invalid body (``explain``, or a payload module's).
    ``bearer_wants_json``: a request with a Bearer token gets JSON even without asking (scripts only ever send one).
    """

    def __init__(self, env: Environment, *, csp: str, form_shape: FormShape, explain: Explain,
                 bearer_wants_json: bool = False):
        self.env, self.csp, self.form_shape, self.explain = env, csp, form_shape, explain
        self.bearer_wants_json = bearer_wants_json

    # ------------------------------------------------------------------ the app

    def install(self, app: FastAPI, static: Path) -> None:
        """Serve ``static`` at /static/, put the security headers on every answer, and answer unknown paths,
        wrong methods and unreadable bodies like every other error (FastAPI's default is JSON to everyone)."""
        app.mount("/static", StaticFiles(directory=static), name="static")

        @app.middleware("http")
        async def security_headers(request: Request, call_next):
            return self.secure(request, await call_next(request))

        @app.exception_handler(HTTPException)
        async def http_error(request: Request, exc: HTTPException) -> Response:
            return self.error(request, exc.status_code, str(exc.detail))

    def secure(self, request: Request, resp: Response) -> Response:
        """``resp`` with the security headers. The stylesheet and script may be cached; nothing else may."""
        resp.headers["Content-Security-Policy"] = self.csp
        resp.headers["X-Content-Type-Options"] = "nosniff"
        resp.headers["X-Frame-Options"] = "DENY"
        resp.headers["Referrer-Policy"] = "no-referrer"
        if not request.url.path.startswith("/static/"):
            resp.headers["Cache-Control"] = "no-store"
        return resp

    # ------------------------------------------------------------------ answers

    def wants_json(self, request: Request) -> bool:
        """JSON in, JSON out: a JSON body, ``Accept: application/json`` (without text/html), ?format=json, or
        (``bearer_wants_json``) a Bearer token."""
        accept = request.headers.get("accept", "")
        return (request.query_params.get("format") == "json" or sends_json(request)
                or (self.bearer_wants_json and bearer(request) is not None)
                or ("application/json" in accept and "text/html" not in accept))

    def page(self, request: Request, template: str, ctx: dict[str, Any], status: int = 200) -> Response:
        """The HTML page, or its JSON twin: the same context minus keys starting with an underscore
        (presentation only)."""
        if self.wants_json(request):
            return JSONResponse({k: v for k, v in ctx.items() if not k.startswith("_")}, status_code=status)
        return HTMLResponse(self.env.get_template(template).render(**ctx), status_code=status)

    def error(self, request: Request, status: int, message: str) -> Response:
        """``{"error": message, "status": status}`` to a JSON client, the error page to a person."""
        return self.page(request, "error.html", {"error": message, "status": status}, status)

    def invalid(self, request: Request, e: ValidationError, line: str | None = None) -> Response:
        """An invalid body (422): pydantic's list with the line for a JSON client, the line on a page for a person.
        ``line``: the explanation when it needs more than the error (a study's rating scale)."""
        line = self.explain(e) if line is None else line
        if self.wants_json(request):
            return JSONResponse(validation_body(e, line), status_code=422)
        return self.error(request, 422, line)

    def sign_in(self, request: Request, message: str, at: str) -> Response:
        """The answer to someone not signed in: 401 to a script (JSON or a Bearer token, which a browser never
        sends), a redirect to the sign-in page ``at`` for a browser."""
        if self.wants_json(request) or bearer(request) is not None:
            return self.error(request, 401, message)
        return RedirectResponse(at, status_code=303)

    @staticmethod
    def set_cookie(request: Request, resp: Response, name: str, value: str) -> None:
        """HttpOnly (no script reads it), SameSite=Lax (no cross-site POST carries it), Secure over HTTPS."""
        resp.set_cookie(name, value, httponly=True, samesite="lax", secure=request.url.scheme == "https", path="/")

    # ------------------------------------------------------------------ bodies

    async def read_body(self, request: Request) -> tuple[dict[str, Any], bool]:
        """(the body in the JSON shape, whether it came from a form). An unreadable body raises HTTPException
        (400 for broken JSON, 422 for JSON that is not an object or a form field ``form_shape`` refuses), which
        ``install``'s handler answers as one line."""
        if sends_json(request):
            try:
                body = await request.json()
            except ValueError:
                raise HTTPException(400, "invalid JSON body") from None
            if not isinstance(body, dict):
                raise HTTPException(422, "expected a JSON object")
            return body, False
        try:
            return self.form_shape((await request.form()).multi_items()), True
        except ValueError as e:
            raise HTTPException(422, str(e)) from None

    def parse(self, request: Request, model: type[BaseModel], data: dict[str, Any], from_form: bool) -> Any:
        """``data`` as ``model``, or the 422 to send instead. Strict for JSON (JSON has types, and a lax reading
        stores what nobody said); lax for a form, which can only send text."""
        try:
            return model.model_validate(data, strict=not from_form)
        except ValidationError as e:
            return self.invalid(request, e)

    # ------------------------------------------------------------------ admin sign-in

    def add_admin_login(self, app: FastAPI, *, login: type[BaseModel], admin_hash: str, session: str,
                        login_cookie: str, admin_cookie: str,
                        on_sign_in: Callable[[], None] | None = None) -> None:
        """GET and POST /admin/login. The form carries a fresh nonce, also set as the ``login_cookie``: a
        cross-site page can read neither, so it cannot sign a browser in. The token is POSTed (never in a URL or
        an access log) as ``login`` (``Login``, or another model with ``token``) and checked against
        ``admin_hash``; the admin's cookie then holds ``session``, a value derived from the token, never the
        token. ``on_sign_in``: called on success (an audit line)."""

        @app.get("/admin/login")
        async def login_form(request: Request):
            nonce = secrets.token_urlsafe(16)
            resp = self.page(request, "login.html", {"login": "POST token and csrf to /admin/login", "csrf": nonce})
            self.set_cookie(request, resp, login_cookie, nonce)
            return resp

        @app.post("/admin/login")
        async def sign_in(request: Request):
            data, from_form = await self.read_body(request)
            nonce = request.cookies.get(login_cookie, "")
            sent = data.get("csrf")
            if not nonce or not isinstance(sent, str) or not same_secret(sent, nonce):
                return self.error(request, 403, "This form expired; reload the login page.")
            body = self.parse(request, login, data, from_form)
            if isinstance(body, Response):
                return body
            if not same_secret(hash_token(body.token), admin_hash):
                return self.error(request, 401, "Wrong admin token.")
            if on_sign_in is not None:
                on_sign_in()
            resp = RedirectResponse("/admin", status_code=303)
            self.set_cookie(request, resp, admin_cookie, session)
            resp.delete_cookie(login_cookie, path="/")
            return resp
