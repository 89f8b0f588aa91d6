"""``psychocounsel serve CONFIG``: run the drafting assistant, or add a clinician and print their link.

    psychocounsel serve configs/serve.yaml                       # prints the admin token once
    psychocounsel serve configs/serve.yaml --add-clinician "Dr. Rivera"   # prints that clinician's link, once

Admin token: $PSYCHOCOUNSEL_SERVE_ADMIN_TOKEN, else a new one printed once (to the terminal, never a log).
"""

from __future__ import annotations

import errno
import logging
import os
import re
import secrets
import socket

import click

from ..errors import UserError
from .config import load_serve_config

ADMIN_TOKEN_ENV = "PSYCHOCOUNSEL_SERVE_ADMIN_TOKEN"
# A chosen admin token opens the audit log, the clinicians and the exports. 32 characters: 192 bits when random
# base64 (a generated one is 43 characters, 256 bits), so a short password cannot stand in for one.
MIN_ADMIN_TOKEN = 32
_CLINICIAN_PATH = re.compile(r"/c/[A-Za-z0-9_-]+")


class RedactLinks(logging.Filter):
    """Access-log lines show ``/c/[token]``: a clinician's private link in a log would open their workspace."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.args and isinstance(record.args, tuple):
            record.args = tuple(_CLINICIAN_PATH.sub("/c/[token]", a) if isinstance(a, str) else a for a in record.args)
        if isinstance(record.msg, str):
            record.msg = _CLINICIAN_PATH.sub("/c/[token]", record.msg)
        return True


def admin_token() -> tuple[str, bool]:
    """(token, generated): from the environment, checked, else a new one to print once."""
    token = os.environ.get(ADMIN_TOKEN_ENV)
    if not token:
        return secrets.token_urlsafe(32), True
    if len(token) < MIN_ADMIN_TOKEN or token != token.strip():
        raise UserError(f"${ADMIN_TOKEN_ENV}: the admin token must be at least {MIN_ADMIN_TOKEN} characters with no "
                        f"surrounding spaces (got {len(token)}); unset it to have one generated")
    return token, False


def check_port(host: str, port: int) -> None:
    """Fail before any model loads when the address cannot be listened on (uvicorn would say so only after)."""
    if port == 0:
        return
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn does: TIME_WAIT is not "in use"
        try:
            s.bind((host, port))
        except OSError as e:
            if e.errno == errno.EADDRINUSE:
                raise UserError(f"port: {host}:{port} is already in use (another server?); choose another "
                                "port in the file or with -o port=N") from None
            raise UserError(f"host: cannot listen on {host}:{port}: {e.strerror or e}") from None


@click.command("serve")
@click.argument("config", type=click.Path(dir_okay=False))
@click.option("-o", "--override", "overrides", multiple=True, help="Dotted key=value, e.g. -o port=8200.")
@click.option("--add-clinician", "add_clinician", default=None,
              help="Add a clinician with this name, print their private link once, and exit.")
def serve_cmd(config: str, overrides: tuple[str, ...], add_clinician: str | None) -> None:
    """Run the clinician-in-the-loop drafting assistant (crisis gate first) on 127.0.0.1."""
    cfg = load_serve_config(config, overrides)
    try:
        if add_clinician is not None:
            from .store import ServeStore

            store = ServeStore(cfg.db)
            cid, token = store.add_clinician(add_clinician)
            store.audit("admin", "clinician_added", clinician_id=cid)
            click.echo(f"http://{cfg.host}:{cfg.port}/c/{token}")
            return
        token, generated = admin_token()
        check_port(cfg.host, cfg.port)
        from .app import create_app
        from .service import open_backend

        app = create_app(cfg, token, backend=open_backend(cfg))
    except UserError as e:  # the deployment file first, so the one line says which deployment is wrong
        raise UserError(f"{config}: {e}") from None
    import uvicorn

    logging.getLogger("uvicorn.access").addFilter(RedactLinks())
    click.echo(f"drafting assistant: http://{cfg.host}:{cfg.port}/   database: {cfg.db}   model: {cfg.model}"
               f"   reward model: {cfg.reward_model or 'none (drafts unranked)'}")
    if generated:
        click.echo(f"admin token (shown once; set {ADMIN_TOKEN_ENV} to choose your own): {token}")
    else:
        click.echo(f"admin token: from ${ADMIN_TOKEN_ENV}")
    click.echo(f"add a clinician: psychocounsel serve {config} --add-clinician NAME   (or on /admin)")
    uvicorn.Server(uvicorn.Config(app, host=cfg.host, port=cfg.port, proxy_headers=True)).run()
