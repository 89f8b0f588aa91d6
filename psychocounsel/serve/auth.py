"""Who is asking: a clinician (their own token), the admin (a separate token), or nobody.

The annotation app's model (annotate/app.py's docstring has the long form), for a second kind of user:
- A clinician's private link ``/c/<token>`` trades the token for an HttpOnly cookie and redirects, so the token
  leaves the address bar; scripts and the machine APIs send ``Authorization: Bearer <token>``. Only the token's
  SHA-256 is stored (``web.hash_token``).
- The admin token comes from an environment variable or is generated and printed once; only its hash is held.
  Signing in is a POST, and the cookie holds a value derived from the token, never the token.
- CSRF: a form carries HMAC(server secret, who is signed in); Bearer requests need none.
"""

from __future__ import annotations

from fastapi import Request

from ..errors import UserError
from ..web import bearer, hash_token, same_secret, sign
from .store import Clinician, ServeStore

CLINICIAN_COOKIE, ADMIN_COOKIE, LOGIN_COOKIE = "pc_clinician", "pc_serve_admin", "pc_serve_login"
MIN_ADMIN_TOKEN = 16  # characters; a generated one is 43 (256 bits)


class Auth:
    """Token checks and CSRF tokens for one app."""

    def __init__(self, store: ServeStore, admin_token: str):
        if not admin_token or len(admin_token) < MIN_ADMIN_TOKEN:
            raise UserError(f"admin token must be at least {MIN_ADMIN_TOKEN} characters")
        self.store = store
        self.secret = (store.meta("csrf_secret") or "").encode()
        self.admin_hash = hash_token(admin_token)
        self.admin_session = self.csrf_for("admin-session|" + self.admin_hash)

    def csrf_for(self, principal: str) -> str:
        return sign(self.secret, principal)

    def clinician(self, request: Request) -> tuple[Clinician | None, bool]:
        """(the clinician, signed in by cookie); cookie sessions need a CSRF token on writes."""
        token = bearer(request)
        if token is not None:
            return self.store.clinician_by_token(token), False
        return self.store.clinician_by_token(request.cookies.get(CLINICIAN_COOKIE, "")), True

    def admin(self, request: Request) -> tuple[bool, bool]:
        token = bearer(request)
        if token is not None:
            return same_secret(hash_token(token), self.admin_hash), False
        return same_secret(request.cookies.get(ADMIN_COOKIE, ""), self.admin_session), True

    def clinician_csrf(self, c: Clinician) -> str:
        return self.csrf_for("clinician|" + c.token_hash)

    def admin_csrf(self) -> str:
        return self.csrf_for("admin|" + self.admin_hash)
