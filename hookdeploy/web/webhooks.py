"""What each forge sends: how its deliveries are signed, named and shaped.

Pure functions over headers and bytes, no HTTP framework: the receiver reads the request,
these say whether it is genuine and what it asks for. Every value here came from outside;
nothing is trusted before `verify` said yes, and nothing is used before it was validated.

Provider "registry" is a Docker Distribution (v2.8) registry's notification endpoint, not a forge:
- Authentication: the registry signs nothing. Its endpoint config sends a fixed `Authorization`
  header; its value must equal the app's webhook secret byte for byte (compared in constant time).
  It is a bearer secret: anyone who sees one notification can replay it, so send it over TLS.
- There is no event header and no delivery header: `delivery_id` uses the hash of the body (a
  retried notification is the same envelope, so the same bytes).
- The body is an envelope `{"events": [...]}` (at most 100 events) with Content-Type
  application/vnd.docker.distribution.events.v1+json (application/json is accepted too). A body
  that is not such an envelope, or an event without a valid id, is BadInput; any other oddity of
  one event only makes that event ignored, with a reason (`registry_ignore_reason`).
- An event deploys its digest only when it is a push of a manifest (not a blob), to the app's
  image repository, with the app's webhook tag, and its digest is sha256: and 64 lowercase hex.
  Pushes by digest (no tag), such as the children of a manifest list, deploy nothing: the list's
  own tagged push names the digest to deploy.
- The registry retries a notification it got a 4xx or 5xx for, and later ones for the same
  endpoint wait behind it: answer 2xx to every authentic envelope whose events are merely ignored.
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
from hookdeploy.core.names import DIGEST, REPOSITORY, TAG, ZERO_SHA, is_full_sha, printable, ref_problem

DELIVERY_ID = re.compile(r"[\x21-\x7e]{1,200}\Z")

# Header names per provider, first match wins.
EVENT_HEADERS = {
    "github": ("X-GitHub-Event",),
    "gitea": ("X-Gitea-Event", "X-Forgejo-Event"),
    "gitlab": ("X-Gitlab-Event",),
}
# GitLab's Idempotency-Key stays the same when GitLab retries a delivery; its event UUID may not.
# A registry sends no delivery header: its deliveries are named by the hash of their body.
DELIVERY_HEADERS = {
    "github": ("X-GitHub-Delivery",),
    "gitea": ("X-Gitea-Delivery", "X-Forgejo-Delivery"),
    "gitlab": ("Idempotency-Key", "X-Gitlab-Event-UUID"),
    "registry": (),
}
SIGNATURE_HEADERS = {
    "github": ("X-Hub-Signature-256",),
    "gitea": ("X-Gitea-Signature", "X-Forgejo-Signature"),
    "gitlab": ("X-Gitlab-Token",),
    "registry": ("Authorization",),
}
# Forges only: a registry has no event header; what happened is each event's `action` in the body.
PUSH_EVENTS = {"github": {"push"}, "gitea": {"push"}, "gitlab": {"Push Hook", "System Hook"}}

# Docker Distribution notifications (provider "registry").
REGISTRY_EVENTS_TYPE = "application/vnd.docker.distribution.events.v1+json"
REGISTRY_CONTENT_TYPES = (REGISTRY_EVENTS_TYPE, "application/json")
MAX_REGISTRY_EVENTS = 100
MAX_FORM_FIELDS = 20
# What a tag can point at; everything else a registry stores is a blob (layers, image configs).
MANIFEST_TYPES = frozenset({
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v1+prettyjws",
})
_ACTION = re.compile(r"[a-z]{1,20}\Z")
_MEDIA_TYPE = re.compile(r"[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}/[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}\Z")


class Unauthorized(HookdeployError):
    """The webhook signature is missing or wrong."""


@dataclass(frozen=True)
class RegistryEvent:
    """One event of a registry notification: the id is valid, the other fields are the strings the
    registry sent (None when absent, empty or not a string), judged by `registry_ignore_reason`."""

    id: str
    action: str | None
    repository: str | None
    tag: str | None
    digest: str | None
    media_type: str | None


@dataclass(frozen=True)
class Push:
    """What a push delivery asks for, read from its payload (not yet validated)."""

    ref: Any
    after: Any
    deleted: bool
    repository: str | None
    before: Any = None


def verify(provider: str, secret: bytes, headers: Mapping[str, str], body: bytes) -> None:
    """Raise Unauthorized unless the delivery carries the provider's proof of `secret` over `body`."""
    if provider == "registry":
        return verify_registry(secret, headers)
    offered = [headers[name] for name in SIGNATURE_HEADERS[provider] if headers.get(name)]
    if not offered:
        raise Unauthorized(f"signature missing ({' or '.join(SIGNATURE_HEADERS[provider])} header)")
    if provider == "gitlab":
        expected = secret
    else:
        digest = hmac.new(secret, _signed_bytes(provider, headers, body), hashlib.sha256).hexdigest().encode()
        expected = b"sha256=" + digest if provider == "github" else digest
    # WSGI header values are latin-1 strings; as bytes any value compares without a TypeError.
    matches = [hmac.compare_digest(expected, value.encode("latin-1")) for value in offered]
    if not any(matches):
        raise Unauthorized("signature does not match the body and this app's webhook secret")


def _signed_bytes(provider: str, headers: Mapping[str, str], body: bytes) -> bytes:
    """What the forge signed: GitHub the body as sent; Gitea and Forgejo the JSON, which a form
    delivery carries percent-encoded in its `payload` field (Gitea's deliver.go signs PayloadContent)."""
    if provider != "gitea":
        return body
    try:
        payload = form_payload(headers.get("Content-Type"), body)
    except BadInput as error:
        raise Unauthorized(f"no signed payload to check: {error}") from None
    return body if payload is None else payload


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
    payload = form_payload(content_type, body)
    return _json_object(body if payload is None else payload, "payload")


def form_payload(content_type: str | None, body: bytes) -> bytes | None:
    """The percent-decoded `payload` field of a form-encoded body, byte for byte; None for a JSON body."""
    form = (content_type or "").split(";")[0].strip().lower() == "application/x-www-form-urlencoded"
    # A JSON object is never a form body: senders (curl) that label JSON as a form still work.
    if not form or body.lstrip().startswith(b"{"):
        return None
    try:
        fields = body.decode("ascii").split("&")
    except UnicodeDecodeError:
        raise BadInput("malformed form-encoded body") from None
    if len(fields) > MAX_FORM_FIELDS:
        raise BadInput(f"a form-encoded body has more than {MAX_FORM_FIELDS} fields")
    values = []
    for field in fields:
        name, equals, value = field.partition("=")
        if not equals:
            raise BadInput("malformed form-encoded body")
        if urllib.parse.unquote_plus(name) == "payload":
            values.append(urllib.parse.unquote_to_bytes(value.replace("+", " ")))
    if len(values) != 1:
        raise BadInput("a form-encoded body must carry exactly one payload= field")
    return values[0]


def _json_object(text: str | bytes, what: str) -> dict:
    """A body's JSON object; BadInput naming what is wrong otherwise."""
    try:
        parsed = json.loads(text)
    except (ValueError, RecursionError):  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise BadInput("body is not valid JSON") from None
    if not isinstance(parsed, dict):
        raise BadInput(f"{what} must be a JSON object")
    return parsed


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
                repository=repository if isinstance(repository, str) else None, before=payload.get("before"))


def ignore_reason(push: Push, branch: str, pinned: str | None) -> str | None:
    """Why this push deploys nothing (other repository, tag, other branch, deletion), or None."""
    if pinned is not None and (push.repository or "").casefold() != pinned.casefold():
        shown = printable(push.repository, 100) if push.repository else "no repository"
        return f"repository {shown} is not {pinned}"
    if not isinstance(push.ref, str) or ref_problem(push.ref):
        raise BadInput("payload has no valid ref")
    if push.after == ZERO_SHA and push.before == ZERO_SHA:
        # Gitea's "Test Delivery" from a repository without commits: nothing was pushed or deleted.
        return "test delivery (before and after are all zeros: nothing to deploy)"
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


def verify_registry(secret: bytes, headers: Mapping[str, str]) -> None:
    """Raise Unauthorized unless the Authorization header is exactly `secret` (a registry signs nothing)."""
    value = headers.get("Authorization")
    if not value:
        raise Unauthorized("Authorization header missing")
    try:
        offered = value.encode("latin-1")  # what WSGI decoded the raw header bytes with
    except UnicodeEncodeError:
        offered = b""  # cannot have come off the wire; refused like any other wrong value
    if not hmac.compare_digest(secret, offered):
        raise Unauthorized("Authorization header does not match this app's webhook secret")


def registry_events(content_type: str | None, body: bytes) -> list[RegistryEvent]:
    """The events of a registry notification envelope; BadInput when the body is not one."""
    media_type = (content_type or "").split(";")[0].strip().lower()
    if media_type not in REGISTRY_CONTENT_TYPES:
        shown = printable(content_type, 60) if content_type else "missing"
        raise BadInput(f"Content-Type {shown}: a registry notification is {REGISTRY_EVENTS_TYPE} "
                       "or application/json")
    envelope = _json_object(body, "notification")
    events = envelope.get("events")
    if not isinstance(events, list):
        raise BadInput("notification has no events list")
    if len(events) > MAX_REGISTRY_EVENTS:
        raise BadInput(f"notification has {len(events)} events, more than {MAX_REGISTRY_EVENTS}")
    return [_registry_event(number, raw) for number, raw in enumerate(events, 1)]


def _registry_event(number: int, raw: Any) -> RegistryEvent:
    if not isinstance(raw, dict):
        raise BadInput(f"event {number} is not a JSON object")
    event_id = raw.get("id")
    if not isinstance(event_id, str) or not event_id:
        raise BadInput(f"event {number} has no id")
    if not DELIVERY_ID.match(event_id):
        raise BadInput(f"event {number} has a malformed id {printable(event_id, 60)}: "
                       "must be 1-200 printable ASCII characters")
    target = raw.get("target")
    target = target if isinstance(target, dict) else {}
    return RegistryEvent(id=event_id, action=_text(raw.get("action")), repository=_text(target.get("repository")),
                         tag=_text(target.get("tag")), digest=_text(target.get("digest")),
                         media_type=_text(target.get("mediaType")))


def registry_ignore_reason(event: RegistryEvent, repository: str, tag: str) -> str | None:
    """Why this event deploys nothing, or None: deploy `event.digest`, a valid sha256 digest of a manifest
    that was just pushed to `repository` (the image's path, as from names.split_image) with `tag`."""
    shown_repository = _shown(event.repository, REPOSITORY) if event.repository else "an unnamed repository"
    if event.action is None:
        return f"event without an action, for {shown_repository}"
    if event.action != "push":
        return f"{_shown(event.action, _ACTION)} of {shown_repository}"
    if event.repository is None:
        return "push to an unnamed repository"
    if event.repository != repository:
        return f"repository {shown_repository} is not {repository}"
    if event.media_type is None:
        return f"blob push to {repository} (no media type)"
    if event.media_type.split(";")[0].strip().lower() not in MANIFEST_TYPES:
        return f"blob push to {repository} ({_shown(event.media_type, _MEDIA_TYPE)} is not a manifest media type)"
    if event.tag is None:
        return f"push by digest to {repository}, no tag (e.g. a manifest-list child)"
    if event.tag != tag:
        return f"tag {_shown(event.tag, TAG)} is not the deploy tag {tag}"
    if event.digest is None:
        return f"push of {repository}:{tag} has no digest"
    if not DIGEST.match(event.digest):
        return (f"digest {printable(event.digest)} of {repository}:{tag} is not sha256: "
                "and 64 lowercase hexadecimal digits")
    return None


def _text(value: Any) -> str | None:
    """A non-empty string from a payload, else None."""
    return value if isinstance(value, str) and value else None


def _shown(value: str, safe: re.Pattern) -> str:
    """`value` as it is when it matches `safe` (a bounded, quiet charset), else quoted and escaped."""
    return value if safe.match(value) else printable(value)


def _first(headers: Mapping[str, str], names: tuple[str, ...]) -> str | None:
    for name in names:
        value = headers.get(name)
        if value:
            return value
    return None
