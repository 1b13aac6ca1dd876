"""Who is asking: the session cookie a personal link sets, the staff role, and CSRF on every form.

A link (``/login?token=...``) is traded for a session: a new random id in an HttpOnly, SameSite=Lax cookie
(Secure when the request came over https, e.g. through the TLS reverse proxy), stored hashed, valid for
``session_hours`` and only while the link is not revoked. Each session has its own CSRF secret, put in every
form and compared in constant time on every POST.
"""
from __future__ import annotations

import hmac

from fastapi import Request

from grader.serve.store import Identity, Store, TokenProblem

__all__ = ["COOKIE", "SignIn", "Forbidden", "identity", "student", "staff", "check_csrf"]

COOKIE = "seg_session"


class SignIn(Exception):
    """No usable session: the page says why and how to sign in."""

    def __init__(self, message: str, status: int = 401) -> None:
        super().__init__(message)
        self.status = status


class Forbidden(Exception):
    """Signed in, but not allowed: the page says so."""


def identity(request: Request) -> Identity:
    store: Store = request.app.state.store
    session = request.cookies.get(COOKIE)
    if not session:
        raise SignIn("You are not signed in. Open the personal link the course staff sent you.")
    try:
        return store.identity(session)
    except TokenProblem as exc:
        raise SignIn(str(exc), 403) from None


def student(request: Request) -> Identity:
    who = identity(request)
    request.state.identity = who
    return who


def staff(request: Request) -> Identity:
    who = identity(request)
    if who.role != "staff":
        raise Forbidden("This page is for the course staff only.")
    request.state.identity = who
    return who


def check_csrf(who: Identity, sent: object) -> None:
    if not isinstance(sent, str) or not hmac.compare_digest(sent.encode(), who.csrf.encode()):
        raise Forbidden("This form is out of date or did not come from this site (CSRF check). Reload the page "
                        "and send it again.")
