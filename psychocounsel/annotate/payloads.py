"""What the annotation app accepts in a POST body: one pydantic model per form, for HTML forms and JSON alike.

Why strict: JSON has types, and a lax reading stores what nobody said. ``true`` read as the rating 1, an
object stored as the text of a comment, a rating for side "C" dropped without a word: each would be kept
as if the annotator had meant it. So a JSON body is validated in pydantic's strict mode (a bool is not an
int, a number is not text) and an unknown field, side or principle is an error. An HTML form can only send
text, so a form is first put in the JSON shape (``rating_A_empathy=4`` -> ``ratings.A.empathy``, an empty
field left out) and validated in lax mode, where "4" may become 4 and nothing else is loosened.
Errors: ``ValidationError`` (a ``ValueError``); ``explain`` gives the one line to show a person.

What every body shares lives in ``web.py``, below both apps: ``Body`` (the CSRF field, unknown fields refused),
``Login``, the ``MAX_FIELD`` and ``MAX_NAME`` bounds, the form reader ``form_fields`` and the generic ``explain``.
This module adds the annotation app's own: ``form_shape`` nests the ratings on top of ``form_fields``, and
``explain`` reads the choice, ratings and comment and leaves the rest to the generic one.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    Field,
    StringConstraints,
    ValidationError,
    ValidationInfo,
    field_validator,
)

from ..web import MAX_FIELD, MAX_NAME, Body, form_fields
from ..web import explain as explain_body

MAX_COMMENT = 5000  # characters; a comment is a note, not an essay, and this bounds a row's size
SIDES = ("A", "B")

Rating = int  # whole; its range is the study's scale (context "scale"), checked with the principle keys
DEFAULT_SCALE = (1, 5)  # the seven principles' 1-5; a session study rates the session rubric's 1-6


class Answer(Body):
    """An annotator's answer to one item, sides as shown (A, B). Principle keys and the rating scale come from the
    study (context)."""

    choice: Literal["A", "B", "tie"]
    ratings: dict[Literal["A", "B"], dict[str, Rating | None]] = Field(default_factory=dict)
    comment: Annotated[str, StringConstraints(strip_whitespace=True, max_length=MAX_COMMENT)] = ""

    @field_validator("ratings")
    @classmethod
    def known_principles(cls, ratings: dict[str, dict[str, int | None]], info: ValidationInfo):
        principles = (info.context or {}).get("principles")
        if principles is None:
            raise ValueError("the study's principles are needed to check ratings")
        low, high = (info.context or {}).get("scale") or DEFAULT_SCALE
        for side, given in ratings.items():
            unknown = sorted(set(given) - set(principles))
            if unknown:
                raise ValueError(f"unknown principle {unknown[0]!r} for {side} (principles: {', '.join(principles)})")
            for p, v in given.items():
                if v is not None and not low <= v <= high:
                    raise ValueError(f"rating of {p} for {side} must be a whole number {low} to {high}")
        # null means "no rating" (a JSON client clearing one): left out, as an empty form field is
        return {side: {p: v for p, v in given.items() if v is not None} for side, given in ratings.items()}


class NewStudy(Body):
    source: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=MAX_FIELD)]
    n: Annotated[int, Field(ge=1)] = 200  # the paper's experts checked 200 pairs
    seed: int = 0
    name: Annotated[str, StringConstraints(strip_whitespace=True, max_length=MAX_NAME)] | None = None
    split: Annotated[str, StringConstraints(strip_whitespace=True, max_length=MAX_NAME)] | None = None


class NewAnnotator(Body):
    name: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=MAX_NAME)]


def form_shape(fields: Iterable[tuple[str, Any]]) -> dict[str, Any]:
    """A form's fields in the JSON shape: read by ``form_fields`` (empty fields left out; a field sent twice or a
    file is a ValueError), then ``rating_<side>_<principle>`` nested under ``ratings``."""
    out: dict[str, Any] = {}
    for key, value in form_fields(fields).items():
        if key.startswith("rating_") and key.count("_") >= 2:
            _, side, principle = key.split("_", 2)
            out.setdefault("ratings", {}).setdefault(side, {})[principle] = value
        else:
            out[key] = value
    return out


def validate(model: type[BaseModel], data: dict[str, Any], *, from_form: bool,
             principles: Sequence[str] | None = None, scale: Sequence[int] = DEFAULT_SCALE) -> Any:
    """``data`` as ``model``: strict for JSON, lax (text to numbers) for a form. Raises ValidationError."""
    context = {"principles": list(principles), "scale": tuple(scale)} if principles is not None else None
    return model.model_validate(data, strict=not from_form, context=context)


def parse_answer(data: dict[str, Any], principles: Sequence[str], *, from_form: bool = False,
                 scale: Sequence[int] = DEFAULT_SCALE) -> Answer:
    """An answer from a JSON body (or, ``from_form``, from a form already in the JSON shape)."""
    return validate(Answer, data, from_form=from_form, principles=principles, scale=scale)


def explain(e: ValidationError, scale: Sequence[int] = DEFAULT_SCALE) -> str:
    """The first problem in one line a person can act on: which field, and what it must be (a rating: a whole
    number on the study's ``scale``). The choice, ratings and comment are read here; anything else (an unknown
    field, a missing one, the admin's forms) by ``web.explain``."""
    low, high = scale
    err = e.errors(include_url=False)[0]
    loc = [str(p) for p in err["loc"]]
    kind = err["type"]
    field = loc[0] if loc else ""
    if kind == "extra_forbidden":
        return explain_body(e)
    if field == "choice":
        return "Choose A, B or tie before saving."
    if field == "ratings":
        if len(loc) >= 3 and loc[2] == "[key]":
            return f"unknown side {loc[1]!r} (ratings are for {' and '.join(SIDES)})"
        if len(loc) >= 3:
            return f"rating of {loc[2]} for {loc[1]} must be a whole number {low} to {high}"
        if kind == "value_error":
            return err["msg"].removeprefix("Value error, ")
        return f"ratings must be an object of side: {{principle: {low}-{high}}}"
    if field == "comment":
        if kind == "string_too_long":
            return f"comment is longer than {MAX_COMMENT} characters"
        return "comment must be text"
    return explain_body(e)
