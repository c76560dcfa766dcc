"""API tokens: itsdangerous-signed {scope, id, ttl} over the server secret.

A token is valid while the secret that signed it is the server's secret and it is younger
than its own ttl; changing the secret revokes every token at once. Nothing is stored.
"""

from __future__ import annotations

import secrets
import time

from itsdangerous import BadSignature, URLSafeTimedSerializer

from hookdeploy.core.errors import HookdeployError

SALT = "hookdeploy-api"
DEFAULT_TTL = 30 * 24 * 3600
SCOPES = ("read", "deploy")
# A scope grants itself and everything listed after it here.
GRANTS = {"read": {"read"}, "deploy": {"read", "deploy"}}


class InvalidToken(HookdeployError):
    """The API token is malformed, was not signed with this server's secret, or has expired."""


def create(secret: bytes, scope: str = "read", ttl: int = DEFAULT_TTL) -> str:
    """A new token granting `scope` for `ttl` seconds."""
    if scope not in SCOPES:
        raise ValueError(f"scope must be one of {', '.join(SCOPES)}")
    if not isinstance(ttl, int) or ttl < 1:
        raise ValueError("ttl must be a positive number of seconds")
    payload = {"scope": scope, "id": secrets.token_urlsafe(12), "ttl": ttl}
    return _serializer(secret).dumps(payload)


def verify(secret: bytes, token: str, max_age: int | None = None) -> str:
    """The scope a genuine, unexpired token grants; InvalidToken otherwise (`max_age` may shorten its ttl)."""
    return verify_until(secret, token, max_age)[0]


def verify_until(secret: bytes, token: str, max_age: int | None = None) -> tuple[str, float]:
    """verify(), and when the token expires (seconds since the epoch)."""
    try:
        payload, signed_at = _serializer(secret).loads(token, return_timestamp=True)
    except BadSignature:
        raise InvalidToken("API token is invalid (malformed, tampered with, or signed with another secret)") from None
    if (not isinstance(payload, dict) or payload.get("scope") not in SCOPES
            or not isinstance(payload.get("ttl"), int) or isinstance(payload.get("ttl"), bool)):
        raise InvalidToken("API token is invalid (unexpected contents)")
    lifetime = payload["ttl"] if max_age is None else min(payload["ttl"], max_age)
    expires = signed_at.timestamp() + lifetime
    if time.time() > expires:
        raise InvalidToken("API token has expired; make a new one with: hookdeploy token create")
    return payload["scope"], expires


def grants(scope: str, needed: str) -> bool:
    """True if a token of `scope` may do what needs `needed`."""
    return needed in GRANTS.get(scope, set())


def _serializer(secret: bytes) -> URLSafeTimedSerializer:
    return URLSafeTimedSerializer(secret, salt=SALT)
