"""``psychocounsel serve CONFIG``: run the drafting assistant, or add a clinician and print their link.

    psychocounsel serve configs/serve.yaml                       # prints the admin token once
    psychocounsel serve configs/serve.yaml --add-clinician "Dr. Rivera"   # prints that clinician's link, once

Admin token: $PSYCHOCOUNSEL_SERVE_ADMIN_TOKEN, else a new one printed once (to the terminal, never a log).
"""

from __future__ import annotations

import logging
import os
import re
import secrets

import click

from .config import load_serve_config

ADMIN_TOKEN_ENV = "PSYCHOCOUNSEL_SERVE_ADMIN_TOKEN"
_CLINICIAN_PATH = re.compile(r"/c/[A-Za-z0-9_-]+")


class RedactLinks(logging.Filter):
    """Access-log lines show ``/c/[token]``: a clinician's private link in a log would open their workspace."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.args and isinstance(record.args, tuple):
            record.args = tuple(_CLINICIAN_PATH.sub("/c/[token]", a) if isinstance(a, str) else a for a in record.args)
        if isinstance(record.msg, str):
            record.msg = _CLINICIAN_PATH.sub("/c/[token]", record.msg)
        return True


@click.command("serve")
@click.argument("config", type=click.Path(dir_okay=False))
@click.option("-o", "--override", "overrides", multiple=True, help="Dotted key=value, e.g. -o port=8200.")
@click.option("--add-clinician", "add_clinician", default=None,
              help="Add a clinician with this name, print their private link once, and exit.")
def serve_cmd(config: str, overrides: tuple[str, ...], add_clinician: str | None) -> None:
    """Run the clinician-in-the-loop drafting assistant (crisis gate first) on 127.0.0.1."""
    cfg = load_serve_config(config, overrides)
    if add_clinician is not None:
        from .store import ServeStore

        store = ServeStore(cfg.db)
        cid, token = store.add_clinician(add_clinician)
        store.audit("admin", "clinician_added", clinician_id=cid)
        click.echo(f"http://{cfg.host}:{cfg.port}/c/{token}")
        return
    import uvicorn

    from .app import create_app

    token = os.environ.get(ADMIN_TOKEN_ENV)
    generated = not token
    token = token or secrets.token_urlsafe(32)
    app = create_app(cfg, token)
    logging.getLogger("uvicorn.access").addFilter(RedactLinks())
    click.echo(f"drafting assistant: http://{cfg.host}:{cfg.port}/   database: {cfg.db}   model: {cfg.model}"
               f"   reward model: {cfg.reward_model or 'none (drafts unranked)'}")
    if generated:
        click.echo(f"admin token (shown once; set {ADMIN_TOKEN_ENV} to choose your own): {token}")
    else:
        click.echo(f"admin token: from ${ADMIN_TOKEN_ENV}")
    click.echo(f"add a clinician: psychocounsel serve {config} --add-clinician NAME   (or on /admin)")
    uvicorn.Server(uvicorn.Config(app, host=cfg.host, port=cfg.port, proxy_headers=True)).run()
