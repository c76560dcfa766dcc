"""The JSON API under /api: look at apps and jobs (read scope), queue deploys (deploy scope).

Every request carries `Authorization: Bearer TOKEN` (from `hookdeploy token create`): 401 when
it is missing, malformed, tampered with, expired, signed with another secret, revoked or unknown to
the store; 403 when its scope does not cover the request. Enqueueing resolves refs and SHAs exactly
as the CLI does. The Host header is not checked here (the dashboard checks it): a browser never adds
a bearer token by itself, so a page on a rebound name gains nothing, and CI reaches the API by
whatever name its network gives this server.
"""

from __future__ import annotations

import json
import logging

from flask import Blueprint, Response, request

from hookdeploy import actions
from hookdeploy.core import previews, tokens
from hookdeploy.core.errors import BadInput
from hookdeploy.core.models import Job
from hookdeploy.web.http import Refused, event_json, int_argument, reply, retry_later, services

log = logging.getLogger(__name__)

api = Blueprint("api", __name__, url_prefix="/api")

READ_METHODS = ("GET", "HEAD")


@api.before_request
def authenticate() -> None:
    """Let the request through only with a valid token whose scope covers it."""
    needed = "read" if request.method in READ_METHODS else "deploy"
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    challenge = {"WWW-Authenticate": 'Bearer realm="hookdeploy"'}
    if scheme.lower() != "bearer" or not token.strip():
        raise Refused(401, "missing API token: send Authorization: Bearer TOKEN (make one with: hookdeploy token create)",
                      challenge)
    secret = services().config.server.secret()
    if secret is None:
        raise Refused(503, "the server secret is not set, so no API token can be checked", retry_later())
    try:
        scope = tokens.check(secret, services().store, token.strip(), services().config.server.max_token_ttl).scope
    except tokens.InvalidToken as error:
        raise Refused(401, str(error), {"WWW-Authenticate": 'Bearer realm="hookdeploy", error="invalid_token"'}) from None
    if not tokens.grants(scope, needed):
        raise Refused(403, f"this token has {scope} scope; {request.method} {request.path} needs {needed} scope")


# -- looking ------------------------------------------------------------------------------------


@api.get("/apps")
def apps() -> Response:
    """Each app's live release, queue length and running job (as `status --json`)."""
    statuses = actions.status(services().config, services().store)
    return reply(200, {"apps": {status.name: status.to_json() for status in statuses}})


@api.get("/apps/<app_name>/jobs")
def app_jobs(app_name: str) -> Response:
    """The app's jobs, newest first (`?limit=N`, default 50)."""
    app = services().config.app(app_name)
    limit = int_argument("limit", 50, 1, 1000)
    return reply(200, [job.to_json() for job in actions.history(services().store, app, limit)])


@api.get("/jobs/<int:job_id>")
def job(job_id: int) -> Response:
    """One job."""
    return reply(200, actions.job(services().store, job_id).to_json())


@api.get("/jobs/<int:job_id>/log")
def job_log(job_id: int) -> Response:
    """A job and its log lines after event `?after=N` (poll with the last id seen to follow it)."""
    after = int_argument("after", 0, 0, 2**62)
    found, events = actions.job_log(services().store, job_id, after)
    return reply(200, {"job": found.to_json(), "events": [event_json(event) for event in events]})


@api.get("/apps/<app_name>/tasks")
def app_tasks(app_name: str) -> Response:
    """The app's tasks, each with its next slot and its newest runs with their output (`?runs=N`, default 20)."""
    app = services().config.app(app_name)
    runs = int_argument("runs", 20, 1, 1000)
    found = actions.tasks(services().config, services().store, app, runs=runs)
    return reply(200, {"app": app.name, "timezone": services().config.server.timezone,
                       "tasks": [task.to_json(runs=True) for task in found]})


@api.get("/apps/<app_name>/logs")
def app_logs(app_name: str) -> Response:
    """The live release's last lines (`?tail=N` per replica or task, default 100), oldest first:
    {"app", "sha", "job", "lines": [{"source": "replica 2", "line": "..."}]}; 404 with no live release."""
    from hookdeploy.engine import containers, runtime

    config = services().config
    app = config.app(app_name)
    tail = int_argument("tail", 100, 0, 10_000)
    live = services().store.live_release(app.name)
    if live is None or not live.container:
        raise Refused(404, f"{app.name} has no live release")
    client = containers.engine()
    try:
        lines = [{"source": label, "line": line}
                 for label, line in runtime.runtime_for(config, app, client).logs(live.container, tail)]
    finally:
        client.close()
    return reply(200, {"app": app.name, "sha": live.sha, "job": live.job, "lines": lines})


@api.get("/apps/<app_name>/previews")
def app_previews(app_name: str) -> Response:
    """The app's previews of branches, oldest first (as `previews APP --json`)."""
    app = services().config.app(app_name)
    store = services().store
    return reply(200, [previews.describe(preview, services().config, store) for preview in
                       previews.Previews(store).of(app.name)])


# -- enqueueing ---------------------------------------------------------------------------------


@api.post("/apps/<app_name>/previews/<branch_or_label>/remove")
def remove_preview(app_name: str, branch_or_label: str) -> Response:
    """Have the worker remove a preview (named by its branch or label): 202 with it."""
    app = services().config.app(app_name)
    _json_body()
    preview = previews.ask_removal(services().store, app, branch_or_label)
    log.info("api preview remove: %s preview %s marked for removal", app.name, preview.label)
    return reply(202, previews.describe(preview, services().config, services().store))


@api.post("/apps/<app_name>/tasks/<task_name>/run")
def run_task(app_name: str, task_name: str) -> Response:
    """Ask for a run of the task now (a worker starts it): 202 with the run."""
    app = services().config.app(app_name)
    _json_body()
    run = actions.run_task(services().store, app, task_name)
    log.info("api run task: queued run %d of %s task %s", run.id, run.app, run.task)
    return reply(202, run.to_json())


@api.post("/apps/<app_name>/deploy")
def deploy(app_name: str) -> Response:
    """Queue a deploy of the head of `ref` (default: the app's branch), or of an image app's `image` (TAG or @DIGEST)."""
    app = services().config.app(app_name)
    fields = _json_body(optional=("ref", "image"))
    config, store = services().config, services().store
    if "image" in fields:
        if "ref" in fields:
            raise BadInput("give ref (apps built from git) or image (image apps), not both")
        return _queued(actions.deploy_image(config, store, app, fields["image"]), "deploy")
    return _queued(actions.deploy_ref(config, store, app, fields.get("ref")), "deploy")


@api.post("/apps/<app_name>/replay")
def replay(app_name: str) -> Response:
    """Queue a deploy of a past commit `sha` (full or unique abbreviated)."""
    app = services().config.app(app_name)
    fields = _json_body(required=("sha",))
    return _queued(actions.replay_sha(services().config, services().store, app, fields["sha"]), "replay")


@api.post("/apps/<app_name>/rollback")
def rollback(app_name: str) -> Response:
    """Queue a switch back to the previous live release, or to the release `to`."""
    app = services().config.app(app_name)
    fields = _json_body(optional=("to",))
    return _queued(actions.rollback(services().store, app, fields.get("to")), "rollback")


@api.post("/apps/<app_name>/stop")
def stop(app_name: str) -> Response:
    """Queue a stop of the app's live release (the maintenance page answers, then its containers stop)."""
    app = services().config.app(app_name)
    _json_body()
    return _queued(actions.stop_app(services().store, app), "stop")


@api.post("/apps/<app_name>/start")
def start(app_name: str) -> Response:
    """Queue a start of the app's stopped live release."""
    app = services().config.app(app_name)
    _json_body()
    return _queued(actions.start_app(services().store, app), "start")


def _queued(job: Job, verb: str) -> Response:
    log.info("api %s: queued job %d %s @ %s", verb, job.id, job.app, job.short_sha)
    return reply(202, job.to_json())


def _json_body(required: tuple[str, ...] = (), optional: tuple[str, ...] = ()) -> dict[str, str]:
    """The request's JSON object of string fields: required ones present, no unknown ones."""
    raw = request.get_data(cache=False)
    try:
        fields = json.loads(raw) if raw.strip() else {}
    except (ValueError, RecursionError):
        raise BadInput("request body is not valid JSON") from None
    if not isinstance(fields, dict):
        raise BadInput("request body must be a JSON object")
    unknown = sorted(set(fields) - set(required) - set(optional))
    if unknown:
        raise BadInput(f"unknown field {json.dumps(unknown[0])}; expected {', '.join(required + optional)}")
    fields = {key: value for key, value in fields.items() if value is not None}
    for key in required:
        if key not in fields:
            raise BadInput(f"field {json.dumps(key)} is required")
    for key, value in fields.items():
        if not isinstance(value, str) or not value:
            raise BadInput(f"field {json.dumps(key)} must be a non-empty string")
    return fields
