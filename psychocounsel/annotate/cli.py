"""``psychocounsel annotate``: run the annotation server and manage studies from the shell. User mistakes
print one line: ``cli._register`` wraps every subcommand.

Every path is checked here, before any work, with our own one-line errors (click's own path checks print a
usage block): only ``create-study`` makes a database, and an output path is checked before the export
is built.

    psychocounsel annotate create-study runs/demo/pairs/test.parquet --n 200 --seed 0 --db annotate.sqlite
    psychocounsel annotate add-annotator 1 "Dr. Rivera" --db annotate.sqlite --base-url https://annotate.example.org
    psychocounsel annotate serve --db annotate.sqlite            # prints the admin token once
    psychocounsel annotate status 1 --db annotate.sqlite         # progress and agreement in the terminal
    psychocounsel annotate export 1 --out annotations.parquet --db annotate.sqlite
"""

from __future__ import annotations

import json
import logging
import os
import re
import secrets
from pathlib import Path
from typing import Any

import click

from ..errors import UserError

ADMIN_TOKEN_ENV = "PSYCHOCOUNSEL_ANNOTATE_ADMIN_TOKEN"
DEFAULT_DB = "annotate.sqlite"
_TOKEN_PATH = re.compile(r"/a/[^/?#\s\"]+")

db_opt = click.option("--db", default=DEFAULT_DB, show_default=True, metavar="PATH",
                      help="The study database (SQLite). Only create-study makes a new one.")
EXPORT_TYPES = (".csv", ".parquet", ".json")


class RedactTokens(logging.Filter):
    """Access-log lines show ``/a/[token]``: a private link in a log file would open that annotator's page."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(_TOKEN_PATH.sub("/a/[token]", a) if isinstance(a, str) else a for a in record.args)
        elif isinstance(record.msg, str):
            record.msg = _TOKEN_PATH.sub("/a/[token]", record.msg)
        return True


def _store(db: str, create: bool = False):
    from .store import AnnotationStore

    return AnnotationStore(db, create=create)


def _check_out(out: str) -> Path:
    """An export path that can be written: a known type, an existing folder, not a folder itself."""
    path = Path(out)
    if path.suffix.lower() not in EXPORT_TYPES:
        raise UserError(f"{out}: unknown export type {path.suffix!r} (use .csv, .parquet or .json)")
    if path.is_dir():
        raise UserError(f"{out}: is a folder; give a file name")
    if not path.parent.is_dir():
        raise UserError(f"{out}: cannot write: folder {path.parent} does not exist")
    if not os.access(path if path.exists() else path.parent, os.W_OK):
        raise UserError(f"{out}: cannot write (permission denied)")
    return path


def _write(path: Path, data: bytes) -> None:
    try:
        path.write_bytes(data)
    except OSError as e:
        raise UserError(f"{path}: cannot write ({e.strerror or e})") from None


def _study(store, ref: str) -> dict[str, Any]:
    study = store.study(ref)
    if study is None:
        names = ", ".join(f"{s['id']} ({s['name']})" for s in store.studies()) or "none yet"
        raise UserError(f"{store.path}: no study {ref!r} (studies: {names})")
    return study


@click.group("annotate", context_settings={"help_option_names": ["-h", "--help"]})
def annotate_cmd() -> None:
    """Expert annotation: therapists compare and rate responses; agreement with each other and the labels."""


@annotate_cmd.command("serve")
@db_opt
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Interface to listen on. Serve others through an HTTPS reverse proxy (docs/ANNOTATION.md).")
@click.option("--port", type=int, default=8000, show_default=True)
@click.option("--bootstrap", "n_boot", type=int, default=2000, show_default=True,
              help="Bootstrap resamples for the dashboard's 95% intervals.")
def serve_cmd(db: str, host: str, port: int, n_boot: int) -> None:
    """Run the web app. Admin token: $PSYCHOCOUNSEL_ANNOTATE_ADMIN_TOKEN, else a new one printed once."""
    import uvicorn

    from .app import create_app

    token = os.environ.get(ADMIN_TOKEN_ENV)
    generated = not token
    token = token or secrets.token_urlsafe(32)
    app = create_app(db, token, n_boot=n_boot, create=False)
    config = uvicorn.Config(app, host=host, port=port, proxy_headers=True)
    logging.getLogger("uvicorn.access").addFilter(RedactTokens())
    # The token goes to the terminal only (stdout, not a logger), so no log file ever holds it.
    click.echo(f"annotation server: http://{host}:{port}/   database: {Path(db).resolve()}")
    click.echo(f"admin sign-in:     http://{host}:{port}/admin/login")
    if generated:
        click.echo(f"admin token (shown once; set {ADMIN_TOKEN_ENV} to choose your own): {token}")
    else:
        click.echo(f"admin token: from ${ADMIN_TOKEN_ENV}")
    uvicorn.Server(config).run()


@annotate_cmd.command("create-study")
@click.argument("source")
@db_opt
@click.option("--n", "n", type=int, default=200, show_default=True,
              help="Items to sample (the paper's experts checked 200 pairs).")
@click.option("--seed", type=int, default=0, show_default=True, help="Sampling seed; also seeds the A/B orders.")
@click.option("--name", default=None, help="Study name (default: <file>-n<N>-seed<seed>).")
@click.option("--split", default=None, help="Only pairs of this split (train, dev, test).")
def create_study_cmd(source: str, db: str, n: int, seed: int, name: str | None, split: str | None) -> None:
    """Create a study from a pair file (ours or the published parquet), an evaluation folder, or a session judging
    (a judge-sessions folder of two policies: whole sessions rated blind on the session rubric, 1-6).

    Makes the database (--db) when there is none; adds the study to it when there is."""
    from .sources import study_spec
    from .store import check_database

    check_database(db, create=True)  # before reading the source: a wrong --db is found in a moment
    spec = study_spec(source, n=n, seed=seed, name=name, split=split)
    sid = _store(db, create=True).create_study(spec)
    click.echo(f"study {sid} ({spec.name}): {len(spec.items)} items from {spec.source} "
               f"(reference answer: {spec.label_name})")


@annotate_cmd.command("add-annotator")
@click.argument("study")
@click.argument("name")
@db_opt
@click.option("--base-url", default="http://127.0.0.1:8000", show_default=True,
              help="Where annotators reach the server; the link is <base-url>/a/<token>.")
def add_annotator_cmd(study: str, name: str, db: str, base_url: str) -> None:
    """Add an annotator to STUDY (id or name) and print their private link (shown once)."""
    store = _store(db)
    s = _study(store, study)
    aid, token = store.add_annotator(s["id"], name)
    click.echo(f"annotator {aid} ({name}) in study {s['id']}; private link (send to them only, shown once):")
    click.echo(f"{base_url.rstrip('/')}/a/{token}")


@annotate_cmd.command("new-link")
@click.argument("study")
@click.argument("name")
@db_opt
@click.option("--base-url", default="http://127.0.0.1:8000", show_default=True)
def new_link_cmd(study: str, name: str, db: str, base_url: str) -> None:
    """A new private link for annotator NAME of STUDY (lost or leaked link); the old link stops working."""
    store = _store(db)
    s = _study(store, study)
    match = [a for a in store.annotators(s["id"]) if a["name"] == name]
    if not match:
        names = ", ".join(a["name"] for a in store.annotators(s["id"])) or "none yet"
        raise UserError(f"study {s['id']} has no annotator {name!r} (annotators: {names})")
    token = store.new_token(s["id"], match[0]["id"])
    click.echo(f"new private link for {name} (the old one no longer works; shown once):")
    click.echo(f"{base_url.rstrip('/')}/a/{token}")


@annotate_cmd.command("export")
@click.argument("study")
@db_opt
@click.option("--out", required=True, metavar="PATH", help="Output file: .csv, .parquet or .json (by its suffix).")
def export_cmd(study: str, db: str, out: str) -> None:
    """Write every answer of STUDY (one row per item and annotator) as CSV, Parquet or JSON."""
    from .export import export_rows, to_csv_text, to_parquet_bytes

    path = _check_out(out)
    store = _store(db)
    s = _study(store, study)
    rows = store.annotation_rows(s["id"])
    suffix = path.suffix.lower()
    if suffix == ".csv":
        data = to_csv_text(s, rows).encode("utf-8")
    elif suffix == ".parquet":
        data = to_parquet_bytes(s, rows)
    else:
        data = json.dumps(export_rows(s, rows), indent=1).encode("utf-8")
    _write(path, data)
    click.echo(f"wrote {len(rows)} answers to {path}")


@annotate_cmd.command("status")
@click.argument("study")
@db_opt
@click.option("--json", "as_json", is_flag=True, help="Print the dashboard's JSON.")
@click.option("--bootstrap", "n_boot", type=int, default=2000, show_default=True)
def status_cmd(study: str, db: str, as_json: bool, n_boot: int) -> None:
    """Progress and agreement of STUDY, as on the admin dashboard."""
    from .dashboard import study_agreement

    store = _store(db)
    s = _study(store, study)
    progress = store.progress(s["id"])
    agreement = study_agreement(store.annotation_rows(s["id"]), store.annotators(s["id"]), s, n_boot=n_boot)
    if as_json:
        click.echo(json.dumps({"progress": progress, "agreement": agreement}, indent=1, default=str))
        return
    click.echo(f"study {s['id']} ({s['name']}): {s['n_items']} items")
    for p in progress:
        click.echo(f"  {p['name']}: {p['done']}/{p['total']} answered")
    for row in agreement["between_annotators"] + agreement["vs_label"]:
        click.echo(f"  {row['a']} vs {row['b']}: {pair_line(row['report'])}")
    if agreement["all_annotators"] is not None:
        click.echo(f"  alpha, all annotators: {alpha_line(agreement['all_annotators'])}")
    for p in agreement["principles"]:
        for who, rep in (("annotators", p["annotators"]), ("with the judge", p["with_judge"])):
            if rep is not None:
                click.echo(f"  {p['name']} ratings, alpha {who}: {alpha_line(rep)}")


def _num(v: float | None, pct: bool = False) -> str:
    if v is None:
        return "-"
    return f"{100 * v:.1f}%" if pct else f"{v:.3f}"


def _ci(pair: list, pct: bool = False) -> str:
    return f"[{_num(pair[0], pct)}, {_num(pair[1], pct)}]"


def pair_line(r: dict | None) -> str:
    """One pair of raters for the terminal: every figure with its interval, and n; or why there is none."""
    if r is None:
        return "no shared answers yet"
    if not r["enough"]:
        return r["note"]
    kappa = "kappa undefined" if r["kappa"] is None else f"kappa {_num(r['kappa'])} {_ci(r['kappa_ci'])}"
    alpha = "alpha undefined" if r["alpha"] is None else f"alpha {_num(r['alpha'])} {_ci(r['alpha_ci'])}"
    return (f"{r['agree']}/{r['n']} = {_num(r['percent'], True)} {_ci(r['percent_ci'], True)}  {kappa}  {alpha}  "
            f"(n={r['n']}, 95% CI)")


def alpha_line(r: dict) -> str:
    if not r["enough"]:
        return r["note"]
    if r["alpha"] is None:
        return f"undefined (n={r['n']}: no variation to agree on)"
    return f"{_num(r['alpha'])} {_ci(r['alpha_ci'])}  (n={r['n']} items, 95% CI)"
