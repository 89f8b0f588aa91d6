"""The annotation web app: server-rendered pages (Jinja2, autoescaped), each with a JSON twin.

    app = create_app("annotate.sqlite", admin_token="...")   # uvicorn serves it (cli.py: `annotate serve`)

Security model (docs/ANNOTATION.md has the long form):
- Annotators: a private link ``/a/<token>`` trades the token for an HttpOnly cookie and redirects,
  so the token leaves the address bar. Every annotator query is scoped by the annotator's id; an
  assignment of someone else answers 404 (no hint that it exists). Scripts may send the token as
  ``Authorization: Bearer`` instead.
- Admin: a separate token (``create_app``'s argument; ``serve`` takes it from an environment
  variable or generates one and prints it once). Only its SHA-256 is kept in memory; signing in
  (a POST, so the token is never in a URL or an access log) sets a cookie derived from it.
- CSRF: every form carries a token = HMAC(server secret, who is signed in). A cross-site page
  cannot read it, so it cannot forge a submission. Bearer requests need none (a browser never
  attaches that header on its own).
- Every piece of text goes through Jinja2 autoescaping; the Content-Security-Policy allows only our
  own script and stylesheet, so even an escaping bug could not run injected script. The plumbing this
  app shares with the drafting assistant (pages, errors, bodies, cookies, headers, the admin sign-in)
  is ``web.py``.
- Pages that show private data are ``Cache-Control: no-store``; ``Referrer-Policy: no-referrer``.
- Every POST body is validated by its model (strict for JSON): the answer and the admin's forms in
  ``payloads.py``, the CSRF-only ``Body`` and the admin sign-in's ``Login`` in ``web.py``. A request that sends
  JSON, asks for it (``Accept: application/json``) or says ``?format=json`` gets every answer, errors
  included, as JSON: ``{"error": ..., "status": ...}``, plus pydantic's ``detail`` for an invalid body.
- The database must exist (``annotate create-study`` makes it): a mistyped path is an error, not a
  new empty database.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, RedirectResponse, Response
from pydantic import BaseModel, ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.convertors import Convertor, register_url_convertor

from ..errors import UserError
from ..web import (
    Body,
    Login,
    Web,
    bearer,
    csrf_ok,
    hash_token,
    same_secret,
    sign,
    templates,
)
from .dashboard import study_agreement
from .export import export_rows, to_csv_text, to_parquet_bytes
from .payloads import Answer, NewAnnotator, NewStudy, explain, form_shape, validate
from .sources import study_spec
from .store import AnnotationStore

HERE = Path(__file__).parent
ANNOTATOR_COOKIE, ADMIN_COOKIE, LOGIN_COOKIE = "pc_annotator", "pc_admin", "pc_login"


class RowId(Convertor):
    """A path id that can name an SQLite row: up to 18 digits (rowids are 64-bit, < 9.2e18), so a longer
    number is a 404 like any other unknown path, not an OverflowError inside a query (a 500)."""

    regex = "[0-9]{1,18}"

    def convert(self, value: str) -> int:
        return int(value)

    def to_string(self, value: int) -> str:
        return str(value)


register_url_convertor("rowid", RowId())
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; form-action 'self'; "
       "base-uri 'none'; frame-ancestors 'none'")


def create_app(db_path: str | Path, admin_token: str, *, n_boot: int = 2000, create: bool = False) -> FastAPI:
    """The app over one SQLite file. ``n_boot``: bootstrap resamples for the dashboard's intervals;
    ``create``: make the database when there is none (else a missing file is a UserError)."""
    if not admin_token or len(admin_token) < 16:
        raise UserError("admin token must be at least 16 characters")
    store = AnnotationStore(db_path, create=create)
    secret = store.meta("csrf_secret").encode()
    admin_hash = hash_token(admin_token)
    web = Web(templates(HERE / "templates"), csp=CSP, form_shape=form_shape, explain=explain)
    page, error, wants_json = web.page, web.error, web.wants_json
    app = FastAPI(title="psychocounsel annotate", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.store = store
    web.install(app, HERE / "static")

    # ------------------------------------------------------------------ helpers

    def csrf_for(principal: str) -> str:
        return sign(secret, principal)

    def annotator_of(request: Request) -> tuple[dict[str, Any] | None, bool]:
        """(annotator, signed in by cookie); cookie sessions need a CSRF token on writes."""
        token = bearer(request)
        if token:
            return store.annotator_by_token(token), False
        return store.annotator_by_token(request.cookies.get(ANNOTATOR_COOKIE, "")), True

    # The admin's cookie holds a value derived from the token, not the token itself, so a copied
    # cookie is useless once the server runs with another admin token.
    admin_session = csrf_for("admin-session|" + admin_hash)

    def is_admin(request: Request) -> tuple[bool, bool]:
        token = bearer(request)
        if token is not None:
            return same_secret(hash_token(token), admin_hash), False
        return same_secret(request.cookies.get(ADMIN_COOKIE, ""), admin_session), True

    def check_csrf(request: Request, data: dict[str, Any], principal: str, via_cookie: bool) -> bool:
        return csrf_ok(request, data, csrf_for(principal), via_cookie)

    def admin_guard(request: Request) -> Response | None:
        ok, _ = is_admin(request)
        return None if ok else web.sign_in(request, "admin token required", "/admin/login")

    async def admin_post(request: Request, model: type[BaseModel]) -> Any:
        """The admin's body for a POST as ``model``, or the login redirect / 401 / 403 / 422 to send instead."""
        if (deny := admin_guard(request)) is not None:
            return deny
        data, from_form = await web.read_body(request)
        if not check_csrf(request, data, "admin|" + admin_hash, is_admin(request)[1]):
            return error(request, 403, "This form expired; reload the page.")
        return web.parse(request, model, data, from_form)

    # ------------------------------------------------------------------ public

    @app.get("/")
    async def home(request: Request):
        return page(request, "home.html", {"app": "psychocounsel annotate",
                                           "annotators": "open the private link you were sent",
                                           "admin": "/admin/login"})

    @app.get("/a/{token}")
    async def enter(request: Request, token: str):
        annotator = await run_in_threadpool(store.annotator_by_token, token)
        if annotator is None:
            return error(request, 404, "This link is not valid. Ask the study's organiser for your link.")
        resp = RedirectResponse("/annotate", status_code=303)
        web.set_cookie(request, resp, ANNOTATOR_COOKIE, token)
        return resp

    # ------------------------------------------------------------------ annotator

    def annotator_page_ctx(annotator: dict[str, Any], queue: list[dict[str, Any]]) -> dict[str, Any]:
        done = sum(a["done"] for a in queue)
        nxt = next((a["assignment_id"] for a in queue if not a["done"]), None)
        return {"annotator": annotator["name"], "total": len(queue), "done": done, "next": nxt,
                "csrf": csrf_for("annotator|" + annotator["token_hash"])}

    @app.get("/annotate")
    async def overview(request: Request):
        annotator, _ = annotator_of(request)
        if annotator is None:
            return error(request, 401, "Open the private link you were sent to start annotating.")
        queue = await run_in_threadpool(store.queue, annotator["id"])
        study = await run_in_threadpool(store.study, annotator["study_id"])
        ctx = annotator_page_ctx(annotator, queue)
        ctx.update(study=study["name"], stopped=request.query_params.get("stopped") == "1",
                   sessions=study["source_kind"] == "sessions", scale=study["scale"],
                   items=[{"assignment_id": a["assignment_id"], "position": a["position"], "done": a["done"],
                           "choice": a["choice"]} for a in queue])
        return page(request, "overview.html", ctx)

    @app.get("/annotate/{assignment_id:rowid}")
    async def item(request: Request, assignment_id: int):
        annotator, _ = annotator_of(request)
        if annotator is None:
            return error(request, 401, "Open the private link you were sent to start annotating.")
        a = await run_in_threadpool(store.assignment, annotator["id"], assignment_id)
        if a is None:
            return error(request, 404, "No such item in your list.")
        return page(request, "item.html", await item_ctx(annotator, a))

    async def item_ctx(annotator: dict[str, Any], a: dict[str, Any], err: str | None = None) -> dict[str, Any]:
        queue = await run_in_threadpool(store.queue, annotator["id"])
        study = await run_in_threadpool(store.study, annotator["study_id"])
        ctx = annotator_page_ctx(annotator, queue)
        ids = [q["assignment_id"] for q in queue]
        i = ids.index(a["assignment_id"])
        low, high = study["scale"]
        ctx.update(item=a, error=err, principles=[{"key": k, "name": n} for k, n in study["principles"]],
                   prev=ids[i - 1] if i > 0 else None, following=ids[i + 1] if i + 1 < len(ids) else None,
                   _scale=list(range(low, high + 1)), sessions=study["source_kind"] == "sessions")
        return ctx

    async def annotator_post(request: Request, unknown: str) -> tuple[dict[str, Any], dict[str, Any], bool] | Response:
        """(the signed-in annotator, their body, whether it is a form) for a POST, or the 401 / 403 to send."""
        annotator, via_cookie = annotator_of(request)
        if annotator is None:
            return error(request, 401, unknown)
        data, from_form = await web.read_body(request)
        if not check_csrf(request, data, "annotator|" + annotator["token_hash"], via_cookie):
            return error(request, 403, "This form expired or did not come from this site; reload the page.")
        return annotator, data, from_form

    @app.post("/annotate/{assignment_id:rowid}")
    async def submit(request: Request, assignment_id: int):
        got = await annotator_post(request, "Open the private link you were sent to start annotating.")
        if isinstance(got, Response):
            return got
        annotator, data, from_form = got
        a = await run_in_threadpool(store.assignment, annotator["id"], assignment_id)
        if a is None:
            return error(request, 404, "No such item in your list.")
        study = await run_in_threadpool(store.study, annotator["study_id"])
        try:
            ans: Answer = validate(Answer, data, from_form=from_form, principles=[k for k, _ in study["principles"]],
                                   scale=study["scale"])
        except ValidationError as e:
            if wants_json(request):
                return web.invalid(request, e, explain(e, study["scale"]))
            ctx = await item_ctx(annotator, a, explain(e, study["scale"]))
            return page(request, "item.html", ctx, status=422)
        saved = await run_in_threadpool(store.submit, annotator["id"], assignment_id, ans.choice, ans.ratings,
                                        ans.comment)
        queue = await run_in_threadpool(store.queue, annotator["id"])
        if wants_json(request):
            ctx = annotator_page_ctx(annotator, queue)
            return JSONResponse({"saved": saved, "done": ctx["done"], "total": ctx["total"], "next": ctx["next"]})
        nxt = next_open(queue, assignment_id)
        return RedirectResponse(f"/annotate/{nxt}" if nxt else "/annotate", status_code=303)

    @app.post("/annotate/stop")
    async def stop(request: Request):
        got = await annotator_post(request, "Not signed in.")
        if isinstance(got, Response):
            return got
        annotator, data, from_form = got
        if isinstance(body := web.parse(request, Body, data, from_form), Response):
            return body
        resp = page(request, "stopped.html", {"stopped": True, "annotator": annotator["name"]})
        resp.delete_cookie(ANNOTATOR_COOKIE, path="/")
        return resp

    # ------------------------------------------------------------------ admin

    web.add_admin_login(app, login=Login, admin_hash=admin_hash, session=admin_session, login_cookie=LOGIN_COOKIE,
                        admin_cookie=ADMIN_COOKIE)

    @app.post("/admin/logout")
    async def logout(request: Request):
        data, from_form = await web.read_body(request)
        ok, via_cookie = is_admin(request)
        if ok and not check_csrf(request, data, "admin|" + admin_hash, via_cookie):
            return error(request, 403, "This form expired; reload the page.")
        if isinstance(body := web.parse(request, Body, data, from_form), Response):
            return body
        resp = RedirectResponse("/admin/login", status_code=303)
        resp.delete_cookie(ADMIN_COOKIE, path="/")
        return resp

    @app.get("/admin")
    async def admin_home(request: Request):
        if (deny := admin_guard(request)) is not None:
            return deny
        studies = await run_in_threadpool(store.studies)
        for s in studies:
            prog = await run_in_threadpool(store.progress, s["id"])
            s["annotators"] = len(prog)
            s["answers"] = sum(p["done"] for p in prog)
            s["assigned"] = sum(p["total"] for p in prog)
        return page(request, "admin.html", {"studies": studies, "csrf": csrf_for("admin|" + admin_hash)})

    @app.post("/admin/studies")
    async def create_study(request: Request):
        body = await admin_post(request, NewStudy)
        if isinstance(body, Response):
            return body
        try:
            spec = await run_in_threadpool(study_spec, body.source, n=body.n, seed=body.seed, name=body.name or None,
                                           split=body.split or None)
            sid = await run_in_threadpool(store.create_study, spec)
        except UserError as e:
            return error(request, 400, str(e))
        if wants_json(request):
            return JSONResponse({"study_id": sid, "name": spec.name, "items": len(spec.items)})
        return RedirectResponse(f"/admin/studies/{sid}", status_code=303)

    async def dashboard_ctx(sid: int) -> dict[str, Any] | None:
        study = await run_in_threadpool(store.study, sid)
        if study is None:
            return None
        t0 = time.perf_counter()
        progress = await run_in_threadpool(store.progress, sid)
        annotators = await run_in_threadpool(store.annotators, sid)
        rows = await run_in_threadpool(store.annotation_rows, sid)
        agreement = await run_in_threadpool(study_agreement, rows, annotators, study, n_boot=n_boot)
        public = {k: study[k] for k in ("id", "name", "source", "source_kind", "label_name", "side_names",
                                        "seed", "n_items", "created_at")}
        public["principles"] = [list(p) for p in study["principles"]]
        public["scale"] = list(study["scale"])
        return {"study": public, "progress": progress, "agreement": agreement, "answers": len(rows),
                "compute_ms": round(1000 * (time.perf_counter() - t0), 1)}

    @app.get("/admin/studies/{sid:rowid}")
    async def dashboard(request: Request, sid: int):
        if (deny := admin_guard(request)) is not None:
            return deny
        ctx = await dashboard_ctx(sid)
        if ctx is None:
            return error(request, 404, "No such study.")
        ctx.update(csrf=csrf_for("admin|" + admin_hash), new_link=None)
        return page(request, "dashboard.html", ctx)

    @app.post("/admin/studies/{sid:rowid}/annotators")
    async def add_annotator(request: Request, sid: int):
        body = await admin_post(request, NewAnnotator)
        if isinstance(body, Response):
            return body
        if await run_in_threadpool(store.study, sid) is None:
            return error(request, 404, "No such study.")
        try:
            aid, token = await run_in_threadpool(store.add_annotator, sid, body.name)
        except UserError as e:
            return error(request, 400, str(e))
        link = str(request.base_url).rstrip("/") + f"/a/{token}"
        new = {"annotator_id": aid, "name": " ".join(body.name.split()), "link": link}
        return await show_link(request, sid, new)

    @app.post("/admin/studies/{sid:rowid}/annotators/{aid:rowid}/link")
    async def new_link(request: Request, sid: int, aid: int):
        """A new private link for one annotator; the old link stops working at once."""
        body = await admin_post(request, Body)
        if isinstance(body, Response):
            return body
        try:
            token = await run_in_threadpool(store.new_token, sid, aid)
        except UserError as e:
            return error(request, 404, str(e))
        name = next(a["name"] for a in await run_in_threadpool(store.annotators, sid) if a["id"] == aid)
        return await show_link(request, sid, {"annotator_id": aid, "name": name,
                                              "link": str(request.base_url).rstrip("/") + f"/a/{token}"})

    async def show_link(request: Request, sid: int, new: dict[str, Any]) -> Response:
        if wants_json(request):
            return JSONResponse(new)
        # Shown once, on this response only: the token is not stored and cannot be shown again.
        ctx = await dashboard_ctx(sid)
        ctx.update(csrf=csrf_for("admin|" + admin_hash), new_link=new)
        return page(request, "dashboard.html", ctx)

    @app.get("/admin/studies/{sid:rowid}/export.{fmt}")
    async def export(request: Request, sid: int, fmt: str):
        if (deny := admin_guard(request)) is not None:
            return deny
        study = await run_in_threadpool(store.study, sid)
        if study is None:
            return error(request, 404, "No such study.")
        rows = await run_in_threadpool(store.annotation_rows, sid)
        name = "".join(c if c.isalnum() or c in "-_" else "_" for c in study["name"])
        disposition = {"Content-Disposition": f'attachment; filename="{name}.{fmt}"'}
        if fmt == "csv":
            return Response(to_csv_text(study, rows), media_type="text/csv; charset=utf-8", headers=disposition)
        if fmt == "parquet":
            body = await run_in_threadpool(to_parquet_bytes, study, rows)
            return Response(body, media_type="application/vnd.apache.parquet", headers=disposition)
        if fmt == "json":
            return JSONResponse({"study": study["name"], "rows": export_rows(study, rows)})
        return error(request, 404, "export formats: csv, parquet, json")

    app.state.csrf_for = csrf_for
    app.state.admin_csrf = csrf_for("admin|" + admin_hash)
    return app


def next_open(queue: list[dict[str, Any]], after: int) -> int | None:
    """The first unanswered assignment after ``after`` in the annotator's order, wrapping around."""
    ids = [q["assignment_id"] for q in queue]
    i = ids.index(after) if after in ids else -1
    for q in queue[i + 1:] + queue[:i + 1]:
        if not q["done"]:
            return q["assignment_id"]
    return None
