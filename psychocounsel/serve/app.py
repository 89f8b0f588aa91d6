"""The drafting assistant's web app: server-rendered pages (Jinja2, autoescaped), each with a JSON twin.

    app = create_app(config, admin_token="...")         # uvicorn serves it (command.py: `psychocounsel serve`)

Routes (every one needs a clinician's or the admin's token, except the home page, the sign-in forms and the
stylesheet):
    GET  /c/<token>                     a clinician's private link: sets the cookie, opens the workspace
    GET  /workspace                     paste a message (and the conversation so far), pick N
    POST /drafts                        gate, draft, check, rank -> the draft page
    GET  /drafts/<id>                   the draft page again (someone else's: 404; expired from memory: 410)
    POST /drafts/<id>/<index>           approve (unchanged = accept, changed = edit) or reject; override if unsafe
    POST /style, /consent, /consent/withdraw, /signout
    GET  /admin, POST /admin/login, /admin/clinicians, GET /admin/gate-counts, /admin/audit, /admin/export/<kind>
    /v1/chat/completions, /v1/models (openai_api.py); /v1/reward, /get_reward (reward_api.py)

Security as in the annotation app (the plumbing both share is ``web.py``): CSRF tokens on forms, a strict
Content-Security-Policy (our own stylesheet, no script at all), ``Cache-Control: no-store`` on every page,
autoescaping for every piece of text. The tool never sends anything to a client and never contacts anyone.
"""

from __future__ import annotations

from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, RedirectResponse, Response
from pydantic import BaseModel

from ..backends.base import Backend
from ..training.scoring import Scorer
from ..web import Body, Login, Web, csrf_ok, explain, form_fields, templates
from .auth import ADMIN_COOKIE, CLINICIAN_COOKIE, LOGIN_COOKIE, Auth
from .config import ServeConfig
from .drafts import Style
from .openai_api import add_openai_routes
from .payloads import (
    ConsentBody,
    DecisionBody,
    DraftBody,
    NewClinician,
    StyleBody,
)
from .reward_api import add_reward_routes
from .service import DraftService, Refused, parse_history
from .store import Clinician, ServeStore

HERE = Path(__file__).parent
CSP = ("default-src 'none'; script-src 'none'; style-src 'self'; img-src 'self' data:; form-action 'self'; "
       "base-uri 'none'; frame-ancestors 'none'")
NOT_SIGNED_IN = "Open the private link you were sent to use the drafting workspace."


def create_app(cfg: ServeConfig, admin_token: str, *, backend: Backend | None = None,
               scorer: Scorer | None = None) -> FastAPI:
    """The app for one deployment. ``backend`` / ``scorer`` replace the configured ones (tests, benches)."""
    store = ServeStore(cfg.db)
    auth = Auth(store, admin_token)
    service = DraftService(cfg, store, backend=backend, scorer=scorer)
    # A Bearer token alone asks for JSON: only scripts and the machine APIs send one.
    web = Web(templates(HERE / "templates"), csp=CSP, form_shape=form_fields, explain=explain, bearer_wants_json=True)
    page, error, wants_json = web.page, web.error, web.wants_json

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        if cfg.scrubs:  # load the NER model now (~4 s), not inside a clinician's first request
            await service.outbound(["warm-up"])
        yield
        await service.aclose()
        store.close()

    app = FastAPI(title="psychocounsel serve", docs_url=None, redoc_url=None, openapi_url=None, lifespan=lifespan)
    app.state.service, app.state.store, app.state.auth = service, store, auth
    web.install(app, HERE / "static")

    # ------------------------------------------------------------------ helpers

    def signed_in(request: Request) -> Clinician | Response:
        c, _ = auth.clinician(request)
        return web.sign_in(request, NOT_SIGNED_IN, "/") if c is None else c

    async def clinician_post(request: Request, model: type[BaseModel]) -> tuple[Clinician, Any] | Response:
        """(the clinician, their validated body), or the 401 / 403 / 422 to send instead."""
        c, via_cookie = auth.clinician(request)
        if c is None:
            return error(request, 401, NOT_SIGNED_IN)
        data, from_form = await web.read_body(request)
        if not csrf_ok(request, data, auth.clinician_csrf(c), via_cookie):
            return error(request, 403, "This form expired or did not come from this site; reload the page.")
        body = web.parse(request, model, data, from_form)
        return body if isinstance(body, Response) else (c, body)

    def admin_guard(request: Request) -> Response | None:
        ok, _ = auth.admin(request)
        return None if ok else web.sign_in(request, "admin token required", "/admin/login")

    async def admin_post(request: Request, model: type[BaseModel]) -> Any:
        if (deny := admin_guard(request)) is not None:
            return deny
        data, from_form = await web.read_body(request)
        if not csrf_ok(request, data, auth.admin_csrf(), auth.admin(request)[1]):
            return error(request, 403, "This form expired; reload the page.")
        return web.parse(request, model, data, from_form)

    def workspace_ctx(c: Clinician, err: str | None = None) -> dict[str, Any]:
        return {"clinician": c.name, "csrf": auth.clinician_csrf(c), "n_default": cfg.n_default, "n_max": cfg.n_max,
                "storage": cfg.policy.storage, "ranked": service.scorer is not None, "style": Style(**c.style).model_dump(),
                "locale": cfg.locale, "error": err, "sends_to_client": False}

    # ------------------------------------------------------------------ public

    @app.get("/")
    async def home(request: Request):
        return page(request, "home.html", {"app": "psychocounsel serve", "clinicians": "open the private link you were sent",
                                           "admin": "/admin/login"})

    @app.get("/c/{token}")
    async def enter(request: Request, token: str):
        if store.clinician_by_token(token) is None:
            return error(request, 404, "This link is not valid. Ask your administrator for a new one.")
        resp = RedirectResponse("/workspace", status_code=303)
        web.set_cookie(request, resp, CLINICIAN_COOKIE, token)
        return resp

    # ------------------------------------------------------------------ clinician

    @app.get("/workspace")
    async def workspace(request: Request):
        c = signed_in(request)
        if isinstance(c, Response):
            return c
        return page(request, "workspace.html", workspace_ctx(c))

    @app.post("/drafts")
    async def make_drafts(request: Request):
        got = await clinician_post(request, DraftBody)
        if isinstance(got, Response):
            return got
        c, body = got
        history = (parse_history(body.history) if isinstance(body.history, str)
                   else [(t.role, t.content) for t in body.history])
        try:
            view = await service.draft(c, body.message, history, body.n, body.client_id)
        except Refused as e:
            if wants_json(request):
                return error(request, e.status, str(e))
            return page(request, "workspace.html", workspace_ctx(c, str(e)), e.status)
        if wants_json(request):
            return JSONResponse(view)
        return RedirectResponse(f"/drafts/{view['set_id']}", status_code=303)

    async def drafts_page(request: Request, c: Clinician, set_id: int, err: str | None = None, status: int = 200,
                          just: dict[str, Any] | None = None) -> Response:
        try:
            view = await service.view(c, set_id)
        except Refused as e:
            return error(request, e.status, str(e))
        view.update(csrf=auth.clinician_csrf(c), clinician=c.name, error=err, just_decided=just)
        return page(request, "drafts.html", view, status)

    @app.get("/drafts/{set_id:int}")
    async def show_drafts(request: Request, set_id: int):
        c = signed_in(request)
        if isinstance(c, Response):
            return c
        return await drafts_page(request, c, set_id)

    @app.post("/drafts/{set_id:int}/{index:int}")
    async def decide(request: Request, set_id: int, index: int):
        got = await clinician_post(request, DecisionBody)
        if isinstance(got, Response):
            return got
        c, body = got
        try:
            out = await service.decide(c, set_id, index, body.action, body.text, body.override)
        except Refused as e:
            if wants_json(request) or e.status in (404, 410):
                return error(request, e.status, str(e))
            return await drafts_page(request, c, set_id, str(e), e.status)
        if wants_json(request):
            return JSONResponse(out)
        return RedirectResponse(f"/drafts/{set_id}?decided={out['decision_id']}", status_code=303)

    @app.post("/style")
    async def style(request: Request):
        got = await clinician_post(request, StyleBody)
        if isinstance(got, Response):
            return got
        c, body = got
        store.set_style(c.id, Style(max_chars=body.max_chars, one_question=body.one_question).model_dump())
        store.audit(f"clinician:{c.id}", "style")
        if wants_json(request):
            return JSONResponse({"style": Style(max_chars=body.max_chars, one_question=body.one_question).model_dump()})
        return RedirectResponse("/workspace", status_code=303)

    @app.post("/consent")
    async def consent(request: Request):
        got = await clinician_post(request, ConsentBody)
        if isinstance(got, Response):
            return got
        c, body = got
        if not cfg.policy.storage:
            return error(request, 409, "This deployment stores no client text, so it records no consent.")
        store.record_consent(body.client_id, c.id)
        store.audit(f"clinician:{c.id}", "consent_recorded", client_id=body.client_id)
        if wants_json(request):
            return JSONResponse({"client_id": body.client_id, "consent": True})
        return RedirectResponse("/workspace", status_code=303)

    @app.post("/consent/withdraw")
    async def withdraw(request: Request):
        got = await clinician_post(request, ConsentBody)
        if isinstance(got, Response):
            return got
        c, body = got
        erased = store.withdraw_consent(body.client_id)
        store.audit(f"clinician:{c.id}", "consent_withdrawn", client_id=body.client_id, erased=erased)
        if wants_json(request):
            return JSONResponse({"client_id": body.client_id, "consent": False, "erased_draft_sets": erased})
        return RedirectResponse("/workspace", status_code=303)

    @app.post("/signout")
    async def signout(request: Request):
        got = await clinician_post(request, Body)
        if isinstance(got, Response):
            return got
        resp = page(request, "home.html", {"app": "psychocounsel serve", "signed_out": True})
        resp.delete_cookie(CLINICIAN_COOKIE, path="/")
        return resp

    # ------------------------------------------------------------------ admin

    web.add_admin_login(app, login=Login, admin_hash=auth.admin_hash, session=auth.admin_session,
                        login_cookie=LOGIN_COOKIE, admin_cookie=ADMIN_COOKIE,
                        on_sign_in=lambda: store.audit("admin", "sign_in"))

    def admin_ctx(new_link: dict[str, Any] | None = None) -> dict[str, Any]:
        return {"clinicians": store.clinicians(), "gate_counts": store.gate_counts(),
                "decisions": store.decision_counts(), "policy": cfg.policy.model_dump(), "model": cfg.model,
                "reward_model": cfg.reward_model, "csrf": auth.admin_csrf(), "new_link": new_link}

    @app.get("/admin")
    async def admin_home(request: Request):
        if (deny := admin_guard(request)) is not None:
            return deny
        return page(request, "admin.html", admin_ctx())

    @app.post("/admin/clinicians")
    async def add_clinician(request: Request):
        body = await admin_post(request, NewClinician)
        if isinstance(body, Response):
            return body
        cid, token = store.add_clinician(body.name)
        store.audit("admin", "clinician_added", clinician_id=cid)
        # Shown once, on this response only: the token is not stored and cannot be shown again.
        new = {"clinician_id": cid, "name": " ".join(body.name.split()), "token": token,
               "link": str(request.base_url).rstrip("/") + f"/c/{token}"}
        if wants_json(request):
            return JSONResponse(new)
        return page(request, "admin.html", admin_ctx(new))

    @app.get("/admin/gate-counts")
    async def gate_counts(request: Request):
        if (deny := admin_guard(request)) is not None:
            return deny
        return JSONResponse({"months": store.gate_counts(), "note": "messages screened per month and tier; "
                             "no ids, no text"})

    @app.get("/admin/audit")
    async def audit(request: Request):
        if (deny := admin_guard(request)) is not None:
            return deny
        return JSONResponse({"rows": store.audit_rows()})

    @app.get("/admin/export/{kind}")
    async def export(request: Request, kind: str):
        if (deny := admin_guard(request)) is not None:
            return deny
        if kind not in ("pairs", "labels"):
            return error(request, 404, "exports: pairs, labels")
        if not (cfg.policy.export_pairs if kind == "pairs" else cfg.policy.export_labels):
            return error(request, 403, f"The deployment's policy does not opt in to exporting {kind} "
                         f"(policy.export_{kind}).")
        rows = store.export_rows()
        if kind == "pairs":  # the clinician's edit is preferred to the draft it started from
            out = [{"prompt": r["prompt"], "chosen": r["final_text"], "rejected": r["draft"], "set_id": r["set_id"],
                    "decision_id": r["decision_id"], "edit_distance": r["edit_distance"], "tier": r["tier"]}
                   for r in rows if r["action"] == "edit" and r["final_text"]]
        else:
            out = [{"prompt": r["prompt"], "completion": r["draft"], "label": r["action"] != "reject",
                    "set_id": r["set_id"], "decision_id": r["decision_id"], "tier": r["tier"]}
                   for r in rows if r["action"] in ("accept", "reject")]
        store.audit("admin", f"export_{kind}", rows=len(out))
        return JSONResponse({"kind": kind, "rows": out})

    add_openai_routes(app, service, auth)
    add_reward_routes(app, service, auth)
    return app
