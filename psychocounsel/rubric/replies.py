"""JSON objects in a model's reply: the one reader behind every judge's parser.

The principle judge (``score.py``), the pairwise verdict (``pairwise.py``) and the crisis model check
(``safety/model_check.py``) all read JSON that a model wrote, wrapped in fences or chatter. They read it
here, so they agree on what a reply says, including when it says two things: a key given twice with
different values (``{"empathy": 1, ..., "empathy": 5}``) is ``ConflictingKeys``, never the last value as
``json.loads`` would keep it. A repeated key with the same value says one thing and is read.
"""

from __future__ import annotations

import json
from typing import Any


class ConflictingKeys(ValueError):
    """A JSON object in the reply gives one key two different values; the reply is unreadable."""


def _strict_object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in pairs:
        if k in out and out[k] != v:
            raise ConflictingKeys(f"key {k!r} given twice with different values ({json.dumps(out[k])}, "
                                  f"{json.dumps(v)})")
        out[k] = v
    return out


_DECODER = json.JSONDecoder(object_pairs_hook=_strict_object)


def json_objects(text: str) -> tuple[list[dict], str | None]:
    """Every top-level JSON object in ``text``, in order, and the first decode error seen (if any).

    ``raw_decode`` from each "{" finds an object however it is wrapped (fences, chatter) and copes with
    braces inside strings, which a brace-counting regex would not. Raises ``ConflictingKeys`` when any
    object, at any depth, gives a key two different values: a reply that contradicts itself is not read
    in part (its other objects are not trusted either).
    """
    found: list[dict] = []
    error: str | None = None
    i = text.find("{")
    while i != -1:
        try:
            obj, end = _DECODER.raw_decode(text, i)
        except json.JSONDecodeError as e:
            error = error or e.msg
            i = text.find("{", i + 1)
            continue
        if isinstance(obj, dict):
            found.append(obj)
        i = text.find("{", end)
    return found, error
