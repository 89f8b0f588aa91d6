"""All answers of a study as one flat table (CSV, Parquet or JSON rows): one row per (item, annotator).

Sides are named as the study names them (``chosen``/``rejected`` for a pair file, ``policy``/
``reference`` for an evaluation), so the rating columns read like the released schema:
``chosen_empathy_rating`` is the annotator's rating of the chosen response. Model names, hidden
from annotators, are in the export: the analysis needs them.

CSV: a cell starting with ``=``, ``+``, ``@``, tab or CR gets a leading ``'`` so a spreadsheet
shows it instead of running it as a formula (OWASP's advice for CSV injection); the Parquet file
and the JSON keep the exact text.
"""

from __future__ import annotations

import csv
import io
from datetime import datetime, timezone
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

_FORMULA_START = ("=", "+", "@", "\t", "\r")


def _iso(ts: float | None) -> str | None:
    return None if ts is None else datetime.fromtimestamp(ts, timezone.utc).isoformat(timespec="seconds")


def export_rows(study: dict[str, Any], rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    s1, s2 = study["side_names"]
    side = {"first": s1, "second": s2, "tie": "tie", None: None}
    keys = [k for k, _ in study["principles"]]
    out = []
    for r in rows:
        row = {
            "study": study["name"], "item": r["item"], "source_key": r["source_key"], "annotator": r["annotator"],
            "shown_position": r["shown_position"], "shown_as_a": s2 if r["swapped"] else s1,
            "choice": r["choice"], "preferred": side[r["preferred"]], "label": side[r["label"]],
            "agrees_with_label": None if r["label"] is None else r["preferred"] == r["label"],
            f"{s1}_model": r["first_model"], f"{s2}_model": r["second_model"],
        }
        for canon, name in (("first", s1), ("second", s2)):
            for k in keys:
                row[f"{name}_{k}_rating"] = r["ratings"].get(canon, {}).get(k)
        row.update(comment=r["comment"], revision=r["revision"], created_at=_iso(r["created_at"]),
                   updated_at=_iso(r["updated_at"]), question=r["question"], **{s1: r["first_text"],
                   s2: r["second_text"]})
        out.append(row)
    return out


def export_schema(study: dict[str, Any]) -> pa.Schema:
    s1, s2 = study["side_names"]
    fields = [pa.field("study", pa.string()), pa.field("item", pa.int64()), pa.field("source_key", pa.string()),
              pa.field("annotator", pa.string()), pa.field("shown_position", pa.int64())]
    fields += [pa.field(c, pa.string()) for c in ("shown_as_a", "choice", "preferred", "label")]
    fields += [pa.field("agrees_with_label", pa.bool_()), pa.field(f"{s1}_model", pa.string()),
               pa.field(f"{s2}_model", pa.string())]
    fields += [pa.field(f"{name}_{k}_rating", pa.int64()) for name in (s1, s2) for k, _ in study["principles"]]
    fields += [pa.field("comment", pa.string()), pa.field("revision", pa.int64())]
    fields += [pa.field(c, pa.string()) for c in ("created_at", "updated_at", "question", s1, s2)]
    return pa.schema(fields)


def to_parquet_bytes(study: dict[str, Any], rows: list[dict[str, Any]]) -> bytes:
    table = pa.Table.from_pylist(export_rows(study, rows), schema=export_schema(study))
    buf = io.BytesIO()
    pq.write_table(table, buf)
    return buf.getvalue()


def _cell(v: Any) -> Any:
    if isinstance(v, str) and v.startswith(_FORMULA_START):
        return "'" + v
    return "" if v is None else v


def to_csv_text(study: dict[str, Any], rows: list[dict[str, Any]]) -> str:
    names = export_schema(study).names
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=names, lineterminator="\n")
    w.writeheader()
    for row in export_rows(study, rows):
        w.writerow({k: _cell(v) for k, v in row.items()})
    return buf.getvalue()
