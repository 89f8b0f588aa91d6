"""What the drafting assistant's forms and JSON bodies accept: one pydantic model per form.

Strict for JSON, lax for HTML forms (text only), as in the annotation app. The basics both apps share are in
``web.py``: ``Body`` (the CSRF field; unknown fields are errors), ``Login`` (the admin sign-in), ``MAX_NAME``, and
the form reader ``form_fields`` and one-line ``explain`` the app uses as they are (these forms have no ratings).
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, StringConstraints

from ..web import MAX_NAME, Body

MAX_TEXT = 20_000  # characters in any text field; the service applies the deployment's own, smaller limit
Text = Annotated[str, StringConstraints(max_length=MAX_TEXT)]
ClientId = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=64,
                                            pattern=r"^[A-Za-z0-9._-]+$")]


class Turn(Body):
    role: Literal["user", "assistant"]
    content: Text


class DraftBody(Body):
    message: Text
    history: Text | list[Turn] = ""
    n: Annotated[int, Field(ge=1)] | None = None
    client_id: ClientId | None = None


class DecisionBody(Body):
    action: Literal["approve", "reject"]
    text: Text | None = None  # the clinician's final words (an edit); None: the draft as written
    override: bool = False


class StyleBody(Body):
    max_chars: Annotated[int, Field(ge=40, le=4000)] | None = None
    one_question: bool = False


class ConsentBody(Body):
    client_id: ClientId


class NewClinician(Body):
    name: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=MAX_NAME)]
