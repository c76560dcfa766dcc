"""Forge webhooks (POST /hooks/APP) and GET /healthz.

A webhook is answered in this order, and nothing later runs before everything earlier passed:
body within max_body → signature over the raw body with the app's webhook secret → parse →
decide (ignored, duplicate, or queued). A 202 goes out only after the job row is committed.
No input produces a 500: every refusal is a 4xx (or a 503 while the store cannot commit) with
a one-line JSON body, and every delivery gets one access log line.

An app that does not exist, has no webhook table or no secret set is answered exactly as a wrong
signature is (same status, body and headers, after the same HMAC work), so /hooks lists no app
names; why it was refused goes to the server's log only.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
import sqlite3

from flask import Blueprint, Response, request
from werkzeug.exceptions import HTTPException

from hookdeploy import actions
from hookdeploy.core.config import AppConfig, Config
from hookdeploy.core.errors import BadInput, StoreError
from hookdeploy.core import previews
from hookdeploy.core.names import branch_problem, printable, ref_problem, split_image
from hookdeploy.web import webhooks
from hookdeploy.web.http import STORE_UNAVAILABLE, Refused, Services, answer, error_reply, reply, retry_later, services

log = logging.getLogger(__name__)
access_log = logging.getLogger("hookdeploy.access")

READ_CHUNK = 64 * 1024
# The one answer to a delivery that is not let in, whatever the reason (the log has the reason).
NOT_ACCEPTED = "signature missing or wrong, or no webhook at this URL (the server's log says which)"
# Signs the body when there is no secret to check against, so that refusal takes as long as any other.
_DECOY_SECRET = secrets.token_bytes(32)

hooks = Blueprint("hooks", __name__)


@hooks.get("/healthz")
def healthz() -> Response:
    """Liveness: the process answers HTTP."""
    return reply(200, {"ok": True})


@hooks.post("/hooks/<app_name>")
def receive(app_name: str) -> Response:
    """A forge's push delivery for one app: verify, deduplicate, queue."""
    seen = {"app": printable(app_name, 64), "event": "-", "delivery": "-"}
    headers = None
    try:
        status, fields = _receive(services(), app_name, seen)
    except Exception as error:  # a bug must not become a 500 nor leave the delivery unlogged
        status, message, headers = answer(error)
        fields = {"error": message}
    outcome = next(iter(fields))  # job, duplicate, ignored or error
    job = fields.get("job", fields.get("duplicate", "-"))
    access_log.info("webhook app=%s event=%s delivery=%s status=%d result=%s job=%s%s", seen["app"], seen["event"],
                    seen["delivery"], status, "queued" if outcome == "job" else outcome, job,
                    f" sha={seen['sha'][:12]}" if "sha" in seen else "")
    return error_reply(status, fields["error"], headers) if "error" in fields else reply(status, fields, headers)


def _receive(services: Services, app_name: str, seen: dict) -> tuple[int, dict]:
    body = _read_body(services.config.server.max_body)
    app = _verified_app(services.config, app_name, body)
    provider = app.webhook.provider
    if provider == "registry":
        return _receive_image(services, app, body, seen)

    event = webhooks.event(provider, request.headers)
    seen["event"] = printable(event or "", 40)
    seen["delivery"] = delivery_id = webhooks.delivery_id(provider, request.headers, body)
    payload = webhooks.parse_payload(request.headers.get("Content-Type"), body)
    if provider == "github" and event == "ping":
        return 200, {"ignored": "ping"}
    if event is None:
        raise BadInput(f"missing {' or '.join(webhooks.EVENT_HEADERS[provider])} header")
    if event == "delete" and provider in ("github", "gitea"):  # a branch deleted: its preview goes
        return 200, {"ignored": _preview_deleted(services, app, payload)}
    if event not in webhooks.PUSH_EVENTS[provider] or (provider == "gitlab" and payload.get("object_kind") != "push"):
        return 200, {"ignored": f"event {printable(event, 40)} is not a push"}
    push = webhooks.read_push(provider, payload)
    if (previewed := _preview_push(services, app, provider, delivery_id, push, seen)) is not None:
        return previewed
    reason = webhooks.ignore_reason(push, app.branch, app.webhook.repository)
    if reason is not None:
        if app.webhook.repository is not None and reason.startswith("repository"):
            log.warning("webhook for %s from another repository ignored: %s", app.name, reason)
        return 200, {"ignored": reason}
    seen["sha"] = sha = webhooks.new_head(push)
    return _enqueue(services, app, provider, delivery_id, sha, push.ref)


def _preview_push(services: Services, app: AppConfig, provider: str, delivery_id: str, push: webhooks.Push,
                  seen: dict) -> tuple[int, dict] | None:
    """A push to a preview branch of the app (DESIGN "Previews of branches"): its preview's job queued
    once (202), its deletion recorded for the worker (200); None for any other push."""
    branch = previews.wanted(app, push.ref) if isinstance(push.ref, str) and not ref_problem(push.ref) else None
    if branch is None or webhooks.ignore_reason(push, branch, app.webhook.repository) not in (
            None, f"deletion of refs/heads/{branch}"):
        return None  # not a preview branch, or another repository's push: said as for any push
    if push.deleted:
        return 200, {"ignored": previews.deleted(services.store, app, branch)}
    seen["sha"] = sha = webhooks.new_head(push)
    try:
        preview = previews.Previews(services.store).claim(app, branch)
    except previews.PreviewRefused as refused:
        return 200, {"ignored": f"no preview: {refused}"}
    return _enqueue(services, services.config.app(preview.name), provider, delivery_id, sha, push.ref)


def _preview_deleted(services: Services, app: AppConfig, payload: dict) -> str:
    """A forge's delete event: a deleted preview branch's preview is removed by the worker."""
    ref = payload.get("ref")
    if payload.get("ref_type") != "branch" or not isinstance(ref, str) or branch_problem(ref):
        return "delete event of no branch"
    repository = payload.get("repository", {}).get("full_name") if isinstance(payload.get("repository"), dict) else None
    pinned = app.webhook.repository
    if pinned is not None and (repository if isinstance(repository, str) else "").casefold() != pinned.casefold():
        return "delete event of another repository"
    if previews.wanted(app, f"refs/heads/{ref}") is None:
        return f"deletion of refs/heads/{ref}, not a preview branch"
    return previews.deleted(services.store, app, ref)


def _receive_image(services: Services, app: AppConfig, body: bytes, seen: dict) -> tuple[int, dict]:
    """A registry notification: deploy the newest push of the app's repository and tag, by digest.

    An authentic envelope with nothing to deploy gets a 200 (the registry would retry a 4xx
    forever, holding back later notifications); each event's id is its delivery id."""
    events = webhooks.registry_events(request.headers.get("Content-Type"), body)
    _, repository = split_image(app.image)
    reasons, chosen = [], None
    for candidate in events:
        reason = webhooks.registry_ignore_reason(candidate, repository, app.webhook.tag)
        if reason is None:
            chosen = candidate
        else:
            reasons.append(reason)
    if chosen is None:
        seen["event"] = "registry"
        return 200, {"ignored": reasons[0] if reasons else "the notification holds no events"}
    seen["event"], seen["delivery"] = "push", chosen.id
    seen["sha"] = sha = actions.digest_sha(chosen.digest)
    return _enqueue(services, app, "registry", chosen.id, sha, chosen.tag, digest=chosen.digest)


def _enqueue(services: Services, app: AppConfig, provider: str, delivery_id: str, sha: str, ref: str | None,
             digest: str | None = None) -> tuple[int, dict]:
    """Queue the delivery's job once (group commit): 202 with the job, or 200 naming the earlier one."""
    try:
        job, earlier = services.deliveries.enqueue(app=app.name, provider=provider, delivery_id=delivery_id,
                                                   sha=sha, ref=ref, coalesce=app.coalesce, digest=digest)
    except (StoreError, sqlite3.Error) as error:
        log.error("webhook for %s not queued: job store failed: %s", app.name, error)
        raise Refused(503, STORE_UNAVAILABLE, retry_later()) from None
    if job is None:
        return 200, {"duplicate": earlier}
    return 202, {"job": job.id}


def _verified_app(config: Config, app_name: str, body: bytes) -> AppConfig:
    """The app, if it takes webhooks and the delivery carries its secret's signature over `body`;
    else the one 401 for every reason (unknown app, no webhook table, no secret, bad signature)."""
    app = config.apps.get(app_name)
    webhook = app.webhook if app is not None else None
    secret = webhook.secret() if webhook is not None else None
    try:
        if secret is None:
            hmac.new(_DECOY_SECRET, body, hashlib.sha256).digest()  # the work a wrong signature costs
            raise webhooks.Unauthorized(
                "no such app" if app is None else "it has no [webhook] table" if webhook is None
                else f"no webhook secret is set (apps.{app.name}.webhook.secret_env or secret_file)")
        webhooks.verify(webhook.provider, secret, request.headers, body)
    except webhooks.Unauthorized as error:
        # A wrong signature is anyone's doing; a missing secret is the operator's to fix, so said louder.
        level = logging.WARNING if webhook is not None and secret is None else logging.INFO
        log.log(level, "webhook for %s refused: %s", printable(app_name, 64), error)
        raise Refused(401, NOT_ACCEPTED) from None
    return app


def _read_body(limit: int) -> bytes:
    """The raw body; 413 beyond `limit`, having read at most `limit` + 1 bytes of it."""
    too_large = f"body is over max_body ({limit} bytes)"
    if request.content_length is not None and request.content_length > limit:
        raise Refused(413, too_large)
    chunks, size = [], 0
    try:
        while chunk := request.stream.read(min(READ_CHUNK, limit + 1 - size)):
            chunks.append(chunk)
            size += len(chunk)
            if size > limit:
                raise Refused(413, too_large)
    except HTTPException as error:  # werkzeug's own limit or a client that sent less than it announced
        raise Refused(error.code or 400, error.description or error.name) from None
    return b"".join(chunks)
