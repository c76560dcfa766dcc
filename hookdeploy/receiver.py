"""The HTTP side: the Flask application factory, forge webhooks (POST /hooks/APP) and GET /healthz.

A webhook is answered in this order, and nothing later runs before everything earlier passed:
known app with a webhook table → body within max_body → signature over the raw body → parse →
decide (ignored, duplicate, or queued). A 202 goes out only after the job row is committed.
No input produces a 500: every refusal is a 4xx (or a 503 while the store cannot commit) with
a one-line JSON body.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
from dataclasses import dataclass, field

from flask import Blueprint, Flask, Response, current_app, request
from werkzeug.exceptions import HTTPException

from hookdeploy import webhooks
from hookdeploy.config import AppConfig, Config
from hookdeploy.errors import BadInput, GitError, HookdeployError, StoreError, UnknownApp
from hookdeploy.models import Job
from hookdeploy.names import printable
from hookdeploy.store import Store

log = logging.getLogger(__name__)
access_log = logging.getLogger("hookdeploy.access")

RETRY_AFTER_SECONDS = 5
READ_CHUNK = 64 * 1024
GROUP_COMMIT_MAX = 256

hooks = Blueprint("hooks", __name__)


class Refused(Exception):
    """A request answered with an error status and a one-line message."""

    def __init__(self, status: int, message: str, headers: dict | None = None):
        super().__init__(message)
        self.status = status
        self.headers = headers or {}


@dataclass
class Services:
    """What the request handlers share: the config, the store and its group committer."""

    config: Config
    store: Store
    deliveries: "GroupCommit" = field(init=False)

    def __post_init__(self):
        self.deliveries = GroupCommit(self.store)


def create_app(config: Config, store: Store) -> Flask:
    """The Flask application: webhooks, health and the API, sharing one config and store."""
    from hookdeploy.api import api
    from hookdeploy.dashboard import dashboard
    from hookdeploy.metrics import install_metrics

    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = config.server.max_body
    app.extensions["hookdeploy"] = Services(config, store)
    app.register_blueprint(hooks)
    app.register_blueprint(api)
    app.register_blueprint(dashboard)
    _register_error_handlers(app)
    install_metrics(app)  # GET /metrics
    return app


def services() -> Services:
    """The config and store of the application handling this request."""
    return current_app.extensions["hookdeploy"]


def reply(status: int, fields: dict | list, headers: dict | None = None) -> Response:
    """A JSON response on one line."""
    return Response(json.dumps(fields) + "\n", status=status, headers=headers, mimetype="application/json")


def error_reply(status: int, message: object, headers: dict | None = None) -> Response:
    """`{"error": message}` with the message folded onto one line."""
    return reply(status, {"error": " ".join(str(message).split())}, headers)


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
    except Refused as refusal:
        status, fields, headers = refusal.status, {"error": str(refusal)}, refusal.headers
    except webhooks.Unauthorized as error:
        status, fields = 401, {"error": str(error)}
    except BadInput as error:
        status, fields = 400, {"error": str(error)}
    except Exception:  # a bug must not become a 500 nor leave the delivery unlogged
        log.exception("webhook for %s failed unexpectedly", seen["app"])
        status, fields = 400, {"error": "the webhook could not be handled (the server logged why)"}
    outcome = next(iter(fields))  # job, duplicate, ignored or error
    job = fields.get("job", fields.get("duplicate", "-"))
    access_log.info("webhook app=%s event=%s delivery=%s status=%d result=%s job=%s%s", seen["app"], seen["event"],
                    seen["delivery"], status, "queued" if outcome == "job" else outcome, job,
                    f" sha={seen['sha'][:12]}" if "sha" in seen else "")
    return error_reply(status, fields["error"], headers) if "error" in fields else reply(status, fields, headers)


def _receive(services: Services, app_name: str, seen: dict) -> tuple[int, dict]:
    app = _webhook_app(services.config, app_name)
    body = _read_body(services.config.server.max_body)
    secret = app.webhook.secret()
    if secret is None:
        raise Refused(503, f"no webhook secret is configured for {app.name}",
                      {"Retry-After": str(RETRY_AFTER_SECONDS)})
    provider = app.webhook.provider
    webhooks.verify(provider, secret, request.headers, body)

    event = webhooks.event(provider, request.headers)
    seen["event"] = printable(event or "", 40)
    seen["delivery"] = delivery_id = webhooks.delivery_id(provider, request.headers, body)
    payload = webhooks.parse_payload(request.headers.get("Content-Type"), body)
    if provider == "github" and event == "ping":
        return 200, {"ignored": "ping"}
    if event is None:
        raise BadInput(f"missing {' or '.join(webhooks.EVENT_HEADERS[provider])} header")
    if event not in webhooks.PUSH_EVENTS[provider] or (provider == "gitlab" and payload.get("object_kind") != "push"):
        return 200, {"ignored": f"event {printable(event, 40)} is not a push"}
    push = webhooks.read_push(provider, payload)
    reason = webhooks.ignore_reason(push, app.branch, app.webhook.repository)
    if reason is not None:
        if app.webhook.repository is not None and reason.startswith("repository"):
            log.warning("webhook for %s from another repository ignored: %s", app.name, reason)
        return 200, {"ignored": reason}
    seen["sha"] = sha = webhooks.new_head(push)

    try:
        job, earlier = services.deliveries.enqueue(app=app.name, provider=provider, delivery_id=delivery_id,
                                                   sha=sha, ref=push.ref, coalesce=app.coalesce)
    except (StoreError, sqlite3.Error) as error:
        log.error("webhook for %s not queued: job store failed: %s", app.name, error)
        raise Refused(503, "the job store is unavailable; retry later",
                      {"Retry-After": str(RETRY_AFTER_SECONDS)}) from None
    if job is None:
        return 200, {"duplicate": earlier}
    return 202, {"job": job.id}


def _webhook_app(config: Config, app_name: str) -> AppConfig:
    """The app, if it takes webhooks; one 404 for unknown apps and apps without a webhook table alike."""
    app = config.apps.get(app_name)
    if app is None or app.webhook is None:
        raise Refused(404, f"no webhook endpoint for app {printable(app_name, 64)}")
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


class GroupCommit:
    """Commits concurrent deliveries together: one transaction and one fsync for all that wait.

    The first caller to find no commit running becomes the leader: it commits everything that
    is waiting (its own delivery included), then hands leadership to the oldest newcomer, so no
    request is answered before its own delivery is on disk and none commits for others forever.
    """

    def __init__(self, store: Store, max_batch: int = GROUP_COMMIT_MAX):
        self.store = store
        self.max_batch = max_batch
        self._lock = threading.Lock()
        self._waiting: list[_Pending] = []
        self._committing = False

    def enqueue(self, **delivery) -> tuple[Job | None, int | None]:
        """Store.enqueue_delivery, committed in a batch with whatever else is waiting."""
        mine = _Pending(delivery)
        with self._lock:
            self._waiting.append(mine)
            lead = not self._committing
            self._committing = True
        if not lead:
            mine.done.wait()
        if not mine.finished:  # we lead: commit one batch, then pass the lead on
            with self._lock:
                batch, self._waiting = self._waiting[:self.max_batch], self._waiting[self.max_batch:]
            try:
                self._commit(batch)
            finally:
                for pending in batch:
                    if not pending.finished:  # _commit itself failed: nobody may wait forever
                        pending.error, pending.finished = StoreError("group commit failed"), True
                        pending.done.set()
                with self._lock:
                    if self._waiting:
                        self._waiting[0].done.set()  # woken while unfinished: it leads the next batch
                    else:
                        self._committing = False
        if mine.error is not None:
            raise mine.error
        return mine.result

    def _commit(self, batch: list["_Pending"]) -> None:
        try:
            results = self.store.enqueue_deliveries([pending.delivery for pending in batch])
        except Exception as error:
            if len(batch) == 1:
                results = [error]
            else:  # one bad delivery must not fail the others: commit each on its own
                results = []
                for pending in batch:
                    try:
                        results.extend(self.store.enqueue_deliveries([pending.delivery]))
                    except Exception as single:
                        results.append(single)
        for pending, result in zip(batch, results):
            if isinstance(result, Exception):
                pending.error = result
            else:
                pending.result = result
            pending.finished = True
            pending.done.set()


class _Pending:
    __slots__ = ("delivery", "done", "finished", "result", "error")

    def __init__(self, delivery: dict):
        self.delivery = delivery
        self.done = threading.Event()
        self.finished = False
        self.result: tuple[Job | None, int | None] = (None, None)
        self.error: Exception | None = None


def _register_error_handlers(app: Flask) -> None:
    """Every error as one-line JSON; the expected ones with their status, the rest as 400, never 500."""

    @app.errorhandler(HTTPException)
    def http_error(error: HTTPException) -> Response:
        allowed = getattr(error, "valid_methods", None)
        headers = {"Allow": ", ".join(allowed)} if allowed else None
        status = error.code if error.code and error.code < 500 else 400
        return error_reply(status, error.description or error.name, headers)

    @app.errorhandler(Refused)
    def refused(error: Refused) -> Response:
        return error_reply(error.status, error, error.headers)

    @app.errorhandler(UnknownApp)
    def unknown_app(error: UnknownApp) -> Response:
        return error_reply(404, error)

    @app.errorhandler(BadInput)
    def bad_input(error: BadInput) -> Response:
        return error_reply(400, error)

    @app.errorhandler(GitError)
    def git_error(error: GitError) -> Response:
        return error_reply(502, error)

    @app.errorhandler(StoreError)
    @app.errorhandler(sqlite3.Error)
    def store_error(error: Exception) -> Response:
        log.error("job store failed: %s", error)
        return error_reply(503, "the job store is unavailable; retry later", {"Retry-After": str(RETRY_AFTER_SECONDS)})

    @app.errorhandler(HookdeployError)
    def other_error(error: HookdeployError) -> Response:
        return error_reply(400, error)

    @app.errorhandler(Exception)
    def unexpected(error: Exception) -> Response:
        log.error("%s %s failed unexpectedly", request.method, printable(request.path), exc_info=error)
        return error_reply(400, "the request could not be handled (the server logged why)")
