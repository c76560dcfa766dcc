"""Dashboard sessions: the signed session cookie, the CSRF token derived from it, the checks every
dashboard request passes (its Host is one of this dashboard's names; a POST comes from one of its
pages and is a small form), and the `requires(scope)` decorator that guards a dashboard view.

A session cookie is signed with the server secret under a salt of its own and holds a random session
id, and the id, scope and expiry of the API token it was exchanged for (never the token); it ends
after SESSION_SECONDS, when that token expires or is revoked (`token revoke ID`), or when it is signed
out (the store records its id until it would have expired, so a copied cookie stops working too).
Every form carries a CSRF token derived from the cookie, checked on POST. No views here (the
sign-in pages are in dashboard.py); every refusal is a web.http.Refused with a 4xx (or 503)
status, never a 500.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import ipaddress
import secrets
import time
from dataclasses import dataclass
from urllib.parse import urlsplit

from flask import Response, g, redirect, request, url_for
from itsdangerous import BadSignature, URLSafeTimedSerializer

from hookdeploy.core import tokens
from hookdeploy.core.config import ServerConfig
from hookdeploy.core.models import iso_time
from hookdeploy.core.names import host_and_port, printable, split_address
from hookdeploy.web.http import Refused, services

COOKIE = "hookdeploy_session"
SALT = "hookdeploy-dashboard"
SESSION_SECONDS = 12 * 3600  # a session ends after this, or when its token expires if that is sooner
LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")
# The dashboard's forms: sign in (token), sign out (csrf), roll back (csrf, to), replay (csrf, sha).
FORM_FIELDS = 4
FORM_BYTES = 16 * 1024  # a token is under 200 bytes; anything past this is not one of our forms
FORM_TYPE = "application/x-www-form-urlencoded"


@dataclass(frozen=True)
class Session:
    """A signed-in dashboard session, as its cookie says and the store still allows."""

    id: str
    token: str  # the id of the API token it was exchanged for
    scope: str
    until: float  # seconds since the epoch


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


def current_session() -> Session | None:
    """This request's session, or None when its cookie is missing, forged, expired, signed out, or its
    token was revoked."""
    if "session" not in g:
        g.session = _session_of(request.cookies.get(COOKIE))
    return g.session


def session_scope() -> str | None:
    """The scope of this request's session, or None when it has none that is valid now."""
    session = current_session()
    return session.scope if session else None


def _session_of(cookie: str | None) -> Session | None:
    if not cookie:
        return None
    try:
        payload = _serializer().loads(cookie, max_age=SESSION_SECONDS)
    except BadSignature:
        return None
    if not (isinstance(payload, dict) and payload.get("scope") in tokens.SCOPES
            and isinstance(payload.get("until"), (int, float)) and time.time() < payload["until"]
            and isinstance(payload.get("id"), str) and isinstance(payload.get("token"), str)):
        return None  # also a cookie from before sessions carried their token's id: signing in again mends it
    store = services().store
    token = store.token(payload["token"])
    if token is None or token.revoked_at is not None or token.scope != payload["scope"]:
        return None
    if store.session_ended(payload["id"]):
        return None
    return Session(payload["id"], payload["token"], payload["scope"], payload["until"])


def start_session(response: Response, claims: tokens.Claims) -> None:
    """Set on `response` the cookie of a new session for the token whose `claims` were checked."""
    until = min(claims.expires, time.time() + SESSION_SECONDS)
    cookie = _serializer().dumps({"scope": claims.scope, "until": until, "id": secrets.token_urlsafe(12),
                                  "token": claims.id})
    response.set_cookie(COOKIE, cookie, max_age=max(1, int(until - time.time())), path="/", httponly=True,
                        samesite="Strict", secure=request.is_secure)


def end_session(response: Response) -> None:
    """End this request's session on the server (its cookie, even copied, no longer works) and make
    `response` delete the cookie."""
    session = current_session()
    if session is not None:
        services().store.end_session(session.id, iso_time(session.until))
    response.delete_cookie(COOKIE, path="/", httponly=True, samesite="Strict", secure=request.is_secure)


# -- what every dashboard request passes --------------------------------------------------------------


def check_request() -> None:
    """Refuse a request for another Host (DNS rebinding), and a POST that is not a small form sent from
    one of this dashboard's pages (login CSRF, forms made to cost CPU)."""
    check_host()
    if request.method == "POST":
        check_origin()
        check_form()


def check_host() -> None:
    """Refuse a request whose Host (the forwarded one, behind server.trusted_proxy) is not one of this
    dashboard's names: a page on a name rebound to this address must not reach it."""
    host, port = host_and_port(request.host)
    if host is None or not host_allowed(services().config.server, host,
                                        port or (443 if request.scheme == "https" else 80)):
        raise Refused(400, f"This dashboard does not answer to the host name {printable(request.host, 80)}; "
                           "list it in server.hostnames in deploy.toml if it is this server's.")


def host_allowed(server: ServerConfig, host: str, port: int) -> bool:
    """True if `host`:`port` (as host_and_port() gives it) is one of server.hostnames, or, with none
    listed, the listen address or a loopback name (any IP address when listening on all of them)."""
    if server.hostnames:
        return any(host_and_port(allowed) in ((host, None), (host, port)) for allowed in server.hostnames)
    listen = split_address(server.listen)[0].lower()
    if host in LOOPBACK_NAMES or host == listen:
        return True
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False  # a name: only a listed one, since anyone can point a name at this address
    return listen in ("", "0.0.0.0", "::")  # an address cannot be rebound: it is the page's own origin


def check_origin() -> None:
    """Refuse a POST unless the browser says (Origin, else Referer) it comes from a page of this dashboard."""
    origin = request.headers.get("Origin")
    if origin is None:
        origin = request.headers.get("Referer")
        if not origin:
            raise Refused(403, "This form came without an Origin or Referer header, so it may come from another "
                               "site; send it from the dashboard's own page.")
    if origin == "null":
        raise Refused(403, "This form came from a page with no origin (Origin: null: a sandboxed frame, a file or "
                           "a redirect); send it from the dashboard's own page.")
    if _origin(origin) != _origin(request.host_url):
        raise Refused(403, "This form was sent from another site; reload the dashboard and try again.")


def check_form() -> None:
    """Refuse, before it is parsed, a body that is not one of the dashboard's forms: a few fields, small."""
    length = request.content_length
    if length is not None and length > FORM_BYTES:
        raise Refused(413, f"This form is {length} bytes; the dashboard's forms are under {FORM_BYTES} bytes.")
    request.max_content_length = FORM_BYTES  # a body without a length is cut off here too (413)
    body = request.get_data(cache=True)  # kept: request.form parses it from this copy
    if not body:
        return
    if request.mimetype != FORM_TYPE:
        raise Refused(415, f"The dashboard's forms are sent as {FORM_TYPE}, not {printable(request.mimetype, 60)}.")
    fields = body.count(b"&") + 1
    if fields > FORM_FIELDS:
        raise Refused(413, f"This form has {fields} fields; the dashboard's forms have at most {FORM_FIELDS}.")


def csrf_token() -> str:
    """The CSRF token of this session: an HMAC of its cookie, so it changes with each sign-in."""
    cookie = request.cookies.get(COOKIE, "")
    return hmac.new(secret(), f"csrf:{cookie}".encode(), hashlib.sha256).hexdigest()


def _check_csrf() -> None:
    """Refuse a POST whose form lacks this session's CSRF token."""
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
