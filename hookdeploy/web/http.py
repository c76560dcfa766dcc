"""What every part of the HTTP side shares: the services a request reaches, one refusal class,
JSON replies, query arguments, and the one table that turns an exception into a status.

No input produces a 500: expected errors get their status (4xx, 502 for git, 503 while the
store cannot commit), and anything unexpected is logged and answered 400. An answer names the app,
never a path on the server: an error's `public` message is sent when it has one (the full one goes
to the log), and git's and Docker's own words only ever go to the log.
"""

from __future__ import annotations

import json
import logging
import re
import sqlite3
from dataclasses import dataclass, field

from flask import Response, current_app, request
from werkzeug.exceptions import HTTPException

from hookdeploy.core.config import Config
from hookdeploy.core.errors import (BadInput, DockerUnavailable, GitError, HookdeployError, StoreError, UnknownApp,
                                   UnknownJob, UnknownTask)
from hookdeploy.core.models import Event
from hookdeploy.core.reload import LiveConfig
from hookdeploy.core.names import printable
from hookdeploy.core.store import Store
from hookdeploy.web.deliveries import GroupCommit
from hookdeploy.web.webhooks import Unauthorized

log = logging.getLogger(__name__)

RETRY_AFTER_SECONDS = 5
STORE_UNAVAILABLE = "the job store is unavailable; retry later"
DOCKER_UNAVAILABLE = "the Docker engine does not answer; retry later"


@dataclass
class Services:
    """What the request handlers share: the config (as a reload leaves it), the store and its group committer."""

    live: LiveConfig
    store: Store
    deliveries: GroupCommit = field(init=False)

    def __post_init__(self):
        self.deliveries = GroupCommit(self.store)

    @property
    def config(self) -> Config:
        """The config in force: a request reads it once and keeps that object."""
        return self.live.current


def services() -> Services:
    """The config and store of the application handling this request."""
    return current_app.extensions["hookdeploy"]


class Refused(Exception):
    """A request answered with an error status and a one-line message (and maybe headers)."""

    def __init__(self, status: int, message: str, headers: dict | None = None):
        super().__init__(message)
        self.status = status
        self.headers = headers or {}


def retry_later() -> dict[str, str]:
    """The header of a 503 that will pass."""
    return {"Retry-After": str(RETRY_AFTER_SECONDS)}


def answer(error: BaseException) -> tuple[int, str, dict]:
    """The status, one-line message and headers an exception is answered with: never a 5xx but 502/503."""
    if isinstance(error, Refused):
        return error.status, str(error), error.headers
    if isinstance(error, HTTPException):  # werkzeug's own: 404, 405 with Allow, 413, ...
        allowed = getattr(error, "valid_methods", None)
        status = error.code if error.code and error.code < 500 else 400
        return status, error.description or error.name, {"Allow": ", ".join(allowed)} if allowed else {}
    if isinstance(error, (UnknownApp, UnknownJob, UnknownTask)):
        return 404, _public(error, level=logging.INFO), {}
    if isinstance(error, Unauthorized):
        return 401, str(error), {}
    if isinstance(error, GitError):  # git's words name paths: only the log gets them
        return 502, _public(error, "a git operation failed"), {}
    if isinstance(error, (StoreError, sqlite3.Error)):
        log.error("job store failed: %s", error)
        return 503, STORE_UNAVAILABLE, retry_later()
    if isinstance(error, DockerUnavailable):  # `deploy --image TAG` asks the engine for the tag's digest
        return 503, _public(error, DOCKER_UNAVAILABLE), retry_later()
    if isinstance(error, HookdeployError):  # BadInput and the rest: the request cannot be done as sent
        return 400, _public(error, level=logging.INFO), {}
    log.error("%s %s failed unexpectedly", request.method, printable(request.path), exc_info=error)
    return 400, "the request could not be handled (the server logged why)", {}


def _public(error: HookdeployError, default: str | None = None, level: int = logging.WARNING) -> str:
    """What the caller is told of `error`: its public message, else `default`, else its message; the
    operator's log gets the full message (at `level`) whenever the caller gets less."""
    told = error.public or default or str(error)
    if told != str(error):
        log.log(level, "%s %s: %s", request.method, printable(request.path), error)
    return told


def reply(status: int, fields: dict | list, headers: dict | None = None) -> Response:
    """A JSON response on one line."""
    return Response(json.dumps(fields) + "\n", status=status, headers=headers, mimetype="application/json")


def error_reply(status: int, message: object, headers: dict | None = None) -> Response:
    """`{"error": message}` with the message folded onto one line."""
    return reply(status, {"error": " ".join(str(message).split())}, headers)


def int_argument(name: str, default: int, low: int, high: int) -> int:
    """The query argument `name` as a whole number within [low, high]; BadInput otherwise."""
    text = request.args.get(name)
    if text is None:
        return default
    if not re.fullmatch(r"[0-9]{1,19}", text) or not low <= int(text) <= high:
        raise BadInput(f"?{name}= must be a whole number from {low} to {high}")
    return int(text)


def event_json(event: Event) -> dict:
    """A log event as the API and the dashboard's feed send it."""
    return {"id": event.id, "at": event.at, "kind": event.kind, "message": event.message, "duration": event.duration}
