"""What each forge sends: how its deliveries are signed, named and shaped.

Pure functions over headers and bytes, no HTTP framework: the receiver reads the request,
these say whether it is genuine and what it asks for. Every value here came from outside;
nothing is trusted before `verify` said yes, and nothing is used before it was validated.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import urllib.parse
from dataclasses import dataclass
from typing import Any, Mapping

from hookdeploy.core.errors import BadInput, HookdeployError
from hookdeploy.core.names import ZERO_SHA, is_full_sha, printable, ref_problem

DELIVERY_ID = re.compile(r"[\x21-\x7e]{1,200}\Z")

# Header names per provider, first match wins.
EVENT_HEADERS = {
    "github": ("X-GitHub-Event",),
    "gitea": ("X-Gitea-Event", "X-Forgejo-Event"),
    "gitlab": ("X-Gitlab-Event",),
}
# GitLab's Idempotency-Key stays the same when GitLab retries a delivery; its event UUID may not.
DELIVERY_HEADERS = {
    "github": ("X-GitHub-Delivery",),
    "gitea": ("X-Gitea-Delivery", "X-Forgejo-Delivery"),
    "gitlab": ("Idempotency-Key", "X-Gitlab-Event-UUID"),
}
SIGNATURE_HEADERS = {
    "github": ("X-Hub-Signature-256",),
    "gitea": ("X-Gitea-Signature", "X-Forgejo-Signature"),
    "gitlab": ("X-Gitlab-Token",),
}
PUSH_EVENTS = {"github": {"push"}, "gitea": {"push"}, "gitlab": {"Push Hook", "System Hook"}}


class Unauthorized(HookdeployError):
    """The webhook signature is missing or wrong."""


@dataclass(frozen=True)
class Push:
    """What a push delivery asks for, read from its payload (not yet validated)."""

    ref: Any
    after: Any
    deleted: bool
    repository: str | None


def verify(provider: str, secret: bytes, headers: Mapping[str, str], body: bytes) -> None:
    """Raise Unauthorized unless the delivery carries the provider's proof of `secret` over `body`."""
    offered = [headers[name] for name in SIGNATURE_HEADERS[provider] if headers.get(name)]
    if not offered:
        raise Unauthorized(f"signature missing ({' or '.join(SIGNATURE_HEADERS[provider])} header)")
    if provider == "gitlab":
        expected = secret
    else:
        digest = hmac.new(secret, body, hashlib.sha256).hexdigest().encode()
        expected = b"sha256=" + digest if provider == "github" else digest
    # WSGI header values are latin-1 strings; as bytes any value compares without a TypeError.
    matches = [hmac.compare_digest(expected, value.encode("latin-1")) for value in offered]
    if not any(matches):
        raise Unauthorized("signature does not match the body and this app's webhook secret")


def github_signature(secret: bytes, body: bytes) -> str:
    """The X-Hub-Signature-256 value GitHub sends for `body` (useful to senders and tests)."""
    return "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()


def event(provider: str, headers: Mapping[str, str]) -> str | None:
    """The event name the forge put in its event header, or None."""
    return _first(headers, EVENT_HEADERS[provider])


def delivery_id(provider: str, headers: Mapping[str, str], body: bytes) -> str:
    """The delivery id (the same on a redelivery); a hash of the body when the forge sent none."""
    value = _first(headers, DELIVERY_HEADERS[provider])
    if value is None:
        return "sha256:" + hashlib.sha256(body).hexdigest()
    if not DELIVERY_ID.match(value):
        raise BadInput(f"malformed delivery id {printable(value, 60)}: must be 1-200 printable ASCII characters")
    return value


def parse_payload(content_type: str | None, body: bytes) -> dict:
    """The payload object: JSON, or the `payload=` field of a form-encoded body; BadInput if neither."""
    form = (content_type or "").split(";")[0].strip().lower() == "application/x-www-form-urlencoded"
    # A JSON object is never a form body: senders (curl) that label JSON as a form still work.
    if form and not body.lstrip().startswith(b"{"):
        try:
            fields = urllib.parse.parse_qs(body.decode("ascii"), strict_parsing=True, errors="strict",
                                           max_num_fields=20)
        except (UnicodeDecodeError, ValueError):
            raise BadInput("malformed form-encoded body") from None
        if len(fields.get("payload", ())) != 1:
            raise BadInput("a form-encoded body must carry exactly one payload= field")
        text: str | bytes = fields["payload"][0]
    else:
        text = body
    try:
        payload = json.loads(text)
    except (ValueError, RecursionError):  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise BadInput("body is not valid JSON") from None
    if not isinstance(payload, dict):
        raise BadInput("payload must be a JSON object")
    return payload


def read_push(provider: str, payload: dict) -> Push:
    """The ref, new head, deletion flag and repository name of a push payload."""
    if provider == "gitlab":
        project = payload.get("project")
        repository = project.get("path_with_namespace") if isinstance(project, dict) else None
    else:
        named = payload.get("repository")
        repository = named.get("full_name") if isinstance(named, dict) else None
    after = payload.get("after")
    return Push(ref=payload.get("ref"), after=after, deleted=payload.get("deleted") is True or after == ZERO_SHA,
                repository=repository if isinstance(repository, str) else None)


def ignore_reason(push: Push, branch: str, pinned: str | None) -> str | None:
    """Why this push deploys nothing (other repository, tag, other branch, deletion), or None."""
    if pinned is not None and (push.repository or "").casefold() != pinned.casefold():
        shown = printable(push.repository, 100) if push.repository else "no repository"
        return f"repository {shown} is not {pinned}"
    if not isinstance(push.ref, str) or ref_problem(push.ref):
        raise BadInput("payload has no valid ref")
    if push.ref.startswith("refs/tags/"):
        return f"tag push {printable(push.ref)}"
    if push.ref != f"refs/heads/{branch}":
        return f"ref {printable(push.ref)} is not the deploy branch refs/heads/{branch}"
    if push.deleted:
        return f"deletion of refs/heads/{branch}"
    return None


def new_head(push: Push) -> str:
    """The pushed commit: the payload's `after`, which must be 40 hexadecimal digits."""
    if not isinstance(push.after, str) or not is_full_sha(push.after.lower()):
        raise BadInput("payload's after is not a 40-digit hexadecimal SHA")
    return push.after.lower()


def _first(headers: Mapping[str, str], names: tuple[str, ...]) -> str | None:
    for name in names:
        value = headers.get(name)
        if value:
            return value
    return None
