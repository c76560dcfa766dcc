"""API tokens: itsdangerous-signed {scope, id, ttl} over the server secret, recorded by id in the store.

A token is valid while the secret that signed it is the server's secret, it is younger than its own
ttl (and than server.max_token_ttl), and the store knows its id and has not revoked it. Changing the
secret revokes every token at once; `token revoke ID` one. The store holds the id, scope and
lifetime, never the token itself.
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from itsdangerous import BadSignature, URLSafeTimedSerializer

from hookdeploy.core.errors import HookdeployError
from hookdeploy.core.models import ApiToken, iso_time

if TYPE_CHECKING:
    from hookdeploy.core.store import Store

SALT = "hookdeploy-api"
DEFAULT_TTL = 30 * 24 * 3600
SCOPES = ("read", "deploy")
# A scope grants itself and everything listed after it here.
GRANTS = {"read": {"read"}, "deploy": {"read", "deploy"}}


class InvalidToken(HookdeployError):
    """The API token is malformed, was not signed with this server's secret, or has expired."""


@dataclass(frozen=True)
class Claims:
    """What a genuine, unexpired token says: its id, scope and when it expires (seconds since the epoch)."""

    id: str
    scope: str
    issued: float
    expires: float


def create(secret: bytes, scope: str = "read", ttl: int = DEFAULT_TTL) -> str:
    """A new token granting `scope` for `ttl` seconds (not recorded: see issue())."""
    if scope not in SCOPES:
        raise ValueError(f"scope must be one of {', '.join(SCOPES)}")
    if not isinstance(ttl, int) or isinstance(ttl, bool) or ttl < 1:
        raise ValueError("ttl must be a positive number of seconds")
    # Hex, so an id never starts with "-" and reads back from `token list` into `token revoke ID` as is.
    payload = {"scope": scope, "id": secrets.token_hex(8), "ttl": ttl}
    return _serializer(secret).dumps(payload)


def issue(secret: bytes, store: Store, scope: str = "read", ttl: int = DEFAULT_TTL) -> str:
    """create() a token and record its id, scope and lifetime in `store`, so it is accepted (and listed)."""
    token = create(secret, scope, ttl)
    claims = read(secret, token)
    store.add_token(ApiToken(claims.id, claims.scope, iso_time(claims.issued), iso_time(claims.expires)))
    return token


def check(secret: bytes, store: Store, token: str, max_age: int | None = None) -> Claims:
    """read() a token, then refuse it unless `store` recorded its id and has not revoked it."""
    claims = read(secret, token, max_age)
    recorded = store.token(claims.id)
    if recorded is None or recorded.scope != claims.scope:
        raise InvalidToken("API token is not on record here (made before tokens were recorded, or by another "
                           "hookdeploy); make a new one with: hookdeploy token create")
    if recorded.revoked_at is not None:
        raise InvalidToken(f"API token {claims.id} was revoked at {recorded.revoked_at}; "
                           "make a new one with: hookdeploy token create")
    return claims


def verify(secret: bytes, token: str, max_age: int | None = None) -> str:
    """The scope a genuine, unexpired token grants; InvalidToken otherwise (`max_age` may shorten its ttl).
    The signature and age only: check() also asks the store."""
    return read(secret, token, max_age).scope


def read(secret: bytes, token: str, max_age: int | None = None) -> Claims:
    """The claims of a genuine, unexpired token; InvalidToken otherwise (`max_age` may shorten its ttl)."""
    try:
        payload, signed_at = _serializer(secret).loads(token, return_timestamp=True)
    except BadSignature:
        raise InvalidToken("API token is invalid (malformed, tampered with, or signed with another secret)") from None
    if (not isinstance(payload, dict) or payload.get("scope") not in SCOPES or not isinstance(payload.get("id"), str)
            or not isinstance(payload.get("ttl"), int) or isinstance(payload.get("ttl"), bool)):
        raise InvalidToken("API token is invalid (unexpected contents)")
    lifetime = payload["ttl"] if max_age is None else min(payload["ttl"], max_age)
    issued = signed_at.timestamp()
    if time.time() > issued + lifetime:
        raise InvalidToken("API token has expired; make a new one with: hookdeploy token create")
    return Claims(payload["id"], payload["scope"], issued, issued + lifetime)


def grants(scope: str, needed: str) -> bool:
    """True if a token of `scope` may do what needs `needed`."""
    return needed in GRANTS.get(scope, set())


def _serializer(secret: bytes) -> URLSafeTimedSerializer:
    return URLSafeTimedSerializer(secret, salt=SALT)
