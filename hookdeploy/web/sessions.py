"""Dashboard sessions: the signed session cookie, the CSRF token derived from it, the same-origin
check on POST, and the `requires(scope)` decorator that guards a dashboard view.

A session cookie is signed with the server secret under a salt of its own and holds the scope and
expiry of the API token it was exchanged for (never the token); it ends after SESSION_SECONDS, or
when that token expires if that is sooner. Every form carries a CSRF token derived from the cookie,
checked on POST. No views here (the sign-in pages are in dashboard.py); every refusal is a
web.http.Refused with a 4xx (or 503) status, never a 500.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import secrets
import time
from urllib.parse import urlsplit

from flask import Response, g, redirect, request, url_for
from itsdangerous import BadSignature, URLSafeTimedSerializer

from hookdeploy.core import tokens
from hookdeploy.web.http import Refused, services

COOKIE = "hookdeploy_session"
SALT = "hookdeploy-dashboard"
SESSION_SECONDS = 12 * 3600  # a session ends after this, or when its token expires if that is sooner


# -- the session cookie -----------------------------------------------------------------------------


def secret() -> bytes:
    """The server secret that signs sessions; 503 when it is not set, since then nobody can sign in."""
    found = services().config.server.secret()
    if found is None:
        raise Refused(503, "The server secret is not set, so nobody can sign in. Set it in the environment "
                           "named by server.secret_env (or server.secret_file) and restart hookdeploy.")
    return found


def _serializer() -> URLSafeTimedSerializer:
    return URLSafeTimedSerializer(secret(), salt=SALT)


def session_scope() -> str | None:
    """The scope of this request's session cookie, or None when it has none that is valid now."""
    if "scope" not in g:
        g.scope = None
        cookie = request.cookies.get(COOKIE)
        if cookie:
            try:
                payload = _serializer().loads(cookie, max_age=SESSION_SECONDS)
            except BadSignature:
                payload = None
            if (isinstance(payload, dict) and payload.get("scope") in tokens.SCOPES
                    and isinstance(payload.get("until"), (int, float)) and time.time() < payload["until"]):
                g.scope = payload["scope"]
    return g.scope


def start_session(response: Response, scope: str, expires: float) -> None:
    """Set on `response` the cookie of a new session of `scope` for a token that expires at `expires`."""
    until = min(expires, time.time() + SESSION_SECONDS)
    cookie = _serializer().dumps({"scope": scope, "until": until, "id": secrets.token_urlsafe(12)})
    response.set_cookie(COOKIE, cookie, max_age=max(1, int(until - time.time())), path="/", httponly=True,
                        samesite="Strict", secure=request.is_secure)


def end_session(response: Response) -> None:
    """Make `response` delete the session cookie."""
    response.delete_cookie(COOKIE, path="/", httponly=True, samesite="Strict", secure=request.is_secure)


# -- CSRF and origin ------------------------------------------------------------------------------


def csrf_token() -> str:
    """The CSRF token of this session: an HMAC of its cookie, so it changes with each sign-in."""
    cookie = request.cookies.get(COOKIE, "")
    return hmac.new(secret(), f"csrf:{cookie}".encode(), hashlib.sha256).hexdigest()


def check_origin() -> None:
    """Refuse a POST that a browser says comes from a page of another site."""
    origin = request.headers.get("Origin")
    if origin and origin != "null" and _origin(origin) != _origin(request.host_url):
        raise Refused(403, "This form was sent from another site; reload the dashboard and try again.")


def _check_csrf() -> None:
    """Refuse a POST whose form lacks this session's CSRF token or that comes from another origin."""
    check_origin()
    sent = request.form.get("csrf", "")
    if not isinstance(sent, str) or not hmac.compare_digest(sent.encode(), csrf_token().encode()):
        raise Refused(403, "The form's security token is missing or stale; reload the page and try again.")


def _origin(url: str) -> tuple[str, str]:
    parts = urlsplit(url)
    return parts.scheme.lower(), parts.netloc.lower()


# -- guarding views ---------------------------------------------------------------------------------


def requires(scope: str):
    """Let a view run only for a session whose scope covers `scope` (and a valid CSRF token on POST);
    a GET without a session is sent to the dashboard's sign-in page."""

    def decorate(view):
        @functools.wraps(view)
        def checked(*args, **kwargs):
            have = session_scope()
            if have is None:
                if request.method == "GET":
                    return redirect(url_for("dashboard.signin_form"), 303)
                raise Refused(401, "You are not signed in (or your session expired); sign in again.")
            if request.method == "POST":
                _check_csrf()
            if not tokens.grants(have, scope):
                raise Refused(403, f"Your session has {have} scope; this needs {scope} scope. "
                                  f"Sign in with a token made by: hookdeploy token create --scope {scope}")
            return view(*args, **kwargs)

        return checked

    return decorate
