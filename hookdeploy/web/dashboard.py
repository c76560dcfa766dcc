"""The dashboard at GET /: apps and their live release, the queue, recent jobs, a job's log; replay
and rollback buttons for a deploy-scope session.

Signing in means pasting an API token (from `hookdeploy token create`): it is checked with
tokens.py and exchanged for a session cookie, signed with the server secret under a salt of its
own, that holds the token's scope and expiry (never the token). Every form carries a CSRF token
derived from the session cookie, checked on POST. Like the rest of the HTTP side, no input
produces a 500: errors here are HTML pages with a 4xx (or 502/503) status.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import logging
import secrets
import time
from datetime import datetime, timezone
from urllib.parse import urlsplit

from flask import Blueprint, Response, g, redirect, render_template, request, url_for
from itsdangerous import BadSignature, URLSafeTimedSerializer

from hookdeploy import actions
from hookdeploy.core import tokens
from hookdeploy.core.config import AppConfig, Config
from hookdeploy.core.errors import BadInput, GitError
from hookdeploy.core.models import Job, JobState, parse_time
from hookdeploy.web.http import Refused, answer, event_json, int_argument, reply, services

log = logging.getLogger(__name__)

dashboard = Blueprint("dashboard", __name__, template_folder="templates", static_folder="static",
                      static_url_path="/static")

COOKIE = "hookdeploy_session"
SALT = "hookdeploy-dashboard"
SESSION_SECONDS = 12 * 3600  # a session ends after this, or when its token expires if that is sooner
RECENT_JOBS = 30
SUBJECTS_KEPT = 1024
_SUBJECTS: dict[tuple, str] = {}
ACTIVE_STATES = (JobState.QUEUED, JobState.RUNNING)
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}


# -- sessions and CSRF ----------------------------------------------------------------------------


def _secret() -> bytes:
    secret = services().config.server.secret()
    if secret is None:
        raise Refused(503, "The server secret is not set, so nobody can sign in. Set it in the environment "
                          "named by server.secret_env (or server.secret_file) and restart hookdeploy.")
    return secret


def _serializer() -> URLSafeTimedSerializer:
    return URLSafeTimedSerializer(_secret(), salt=SALT)


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


def csrf_token() -> str:
    """The CSRF token of this session: an HMAC of its cookie, so it changes with each sign-in."""
    cookie = request.cookies.get(COOKIE, "")
    return hmac.new(_secret(), f"csrf:{cookie}".encode(), hashlib.sha256).hexdigest()


def _check_origin() -> None:
    """Refuse a POST that a browser says comes from a page of another site."""
    origin = request.headers.get("Origin")
    if origin and origin != "null" and _origin(origin) != _origin(request.host_url):
        raise Refused(403, "This form was sent from another site; reload the dashboard and try again.")


def _check_csrf() -> None:
    """Refuse a POST whose form lacks this session's CSRF token or that comes from another origin."""
    _check_origin()
    sent = request.form.get("csrf", "")
    if not isinstance(sent, str) or not hmac.compare_digest(sent.encode(), csrf_token().encode()):
        raise Refused(403, "The form's security token is missing or stale; reload the page and try again.")


def _origin(url: str) -> tuple[str, str]:
    parts = urlsplit(url)
    return parts.scheme.lower(), parts.netloc.lower()


def requires(scope: str):
    """Let a view run only for a session whose scope covers `scope` (and a valid CSRF token on POST)."""

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


# -- signing in and out ------------------------------------------------------------------------------


@dashboard.get("/signin")
def signin_form() -> Response | str:
    """The sign-in page: paste a token."""
    _secret()
    return render_template("signin.html", error=None)


@dashboard.post("/signin")
def signin() -> Response | tuple[str, int]:
    """Exchange a pasted API token for a session cookie."""
    secret = _secret()
    _check_origin()  # no session yet to derive a CSRF token from; SameSite does not cover signing in
    token = request.form.get("token", "").strip()
    try:
        scope, expires = tokens.verify_until(secret, token)
    except tokens.InvalidToken as error:
        return render_template("signin.html", error=str(error)), 401
    until = min(expires, time.time() + SESSION_SECONDS)
    cookie = _serializer().dumps({"scope": scope, "until": until, "id": secrets.token_urlsafe(12)})
    response = redirect(url_for("dashboard.index"), 303)
    response.set_cookie(COOKIE, cookie, max_age=max(1, int(until - time.time())), path="/", httponly=True,
                        samesite="Strict", secure=request.is_secure)
    log.info("dashboard: signed in with a %s token from %s", scope, request.remote_addr)
    return response


@dashboard.post("/signout")
@requires("read")
def signout() -> Response:
    """Forget the session cookie."""
    response = redirect(url_for("dashboard.signin_form"), 303)
    response.delete_cookie(COOKIE, path="/", httponly=True, samesite="Strict", secure=request.is_secure)
    return response


# -- looking -------------------------------------------------------------------------------------------


@dashboard.get("/")
@requires("read")
def index() -> str:
    """Every app with its live release and queue, and the most recent jobs."""
    config, store = services().config, services().store
    apps = [_app_summary(config, status) for status in actions.status(config, store)]
    jobs = actions.recent_jobs(store, RECENT_JOBS)
    active = any(job.state in ACTIVE_STATES for job in jobs)
    return render_template("index.html", apps=apps, jobs=jobs, active=active, error=g.get("error"))


@dashboard.get("/jobs/<int:job_id>")
@requires("read")
def job_page(job_id: int) -> str:
    """One job: its state, steps and log (the page follows it while it runs)."""
    job, events = actions.job_log(services().store, job_id)
    return render_template("job.html", job=job, events=events, last=events[-1].id if events else 0,
                           active=job.state in ACTIVE_STATES)


@dashboard.get("/jobs/<int:job_id>/events")
@requires("read")
def job_events(job_id: int) -> Response:
    """The job and its events after `?after=N`, as JSON: what the job page polls."""
    after = int_argument("after", 0, 0, 2**62)
    job, events = actions.job_log(services().store, job_id, after)
    return reply(200, {"job": {**job.to_json(), "active": job.state in ACTIVE_STATES, "duration": duration(job)},
                       "events": [event_json(event) for event in events]})


# -- acting --------------------------------------------------------------------------------------------


@dashboard.post("/apps/<app_name>/rollback")
@requires("deploy")
def rollback(app_name: str) -> Response:
    """Queue a rollback to the previous live release (or the release in the form's `to`)."""
    app = _app(app_name)
    to_sha = request.form.get("to", "").strip() or None
    return _queued(actions.rollback(services().store, app, to_sha), "rollback")


@dashboard.post("/apps/<app_name>/replay")
@requires("deploy")
def replay(app_name: str) -> Response:
    """Queue a deploy of the past commit in the form's `sha`."""
    app = _app(app_name)
    sha_text = request.form.get("sha", "").strip()
    if not sha_text:
        raise BadInput("type the SHA of the commit to replay")
    return _queued(actions.replay_sha(services().config, services().store, app, sha_text), "replay")


def _queued(job: Job, verb: str) -> Response:
    log.info("dashboard %s: queued job %d %s @ %s", verb, job.id, job.app, job.short_sha)
    return redirect(url_for("dashboard.job_page", job_id=job.id), 303)


# -- helpers -------------------------------------------------------------------------------------------


def _app(name: str) -> AppConfig:
    app = services().config.apps.get(name)
    if app is None:
        raise Refused(404, "There is no such app in deploy.toml.")
    return app


def _app_summary(config: Config, status: actions.AppStatus) -> dict:
    live = status.live
    return {"name": status.name, "live": live, "queued": status.queued, "running": status.running,
            "subject": commit_subject(config, config.apps[status.name], live.sha) if live else "",
            "can_roll_back": live is not None and status.can_roll_back}


def commit_subject(config: Config, app: AppConfig, sha: str) -> str:
    """The commit's first line when the repo is at hand (never cloned or fetched for this); else ''."""
    from hookdeploy.engine import gitops

    if not app.is_local_repo and not (gitops.mirror_path(app, config.server.state_dir) / "HEAD").exists():
        return ""
    return _subject(app.name, app.repo, str(config.server.state_dir), sha)


def _subject(app_name: str, repo: str, state_dir: str, sha: str) -> str:
    # Commits never change, so a subject once read is kept; a miss is not (the commit may arrive later).
    key = (app_name, repo, state_dir, sha)
    if key not in _SUBJECTS:
        subject = _read_subject(app_name, state_dir, sha)
        if not subject:
            return ""
        if len(_SUBJECTS) >= SUBJECTS_KEPT:
            _SUBJECTS.clear()
        _SUBJECTS[key] = subject
    return _SUBJECTS[key]


def _read_subject(app_name: str, state_dir: str, sha: str) -> str:
    from hookdeploy.engine import gitops

    app = services().config.apps[app_name]
    try:
        opened = gitops.open_repo(app, state_dir)
    except (GitError, OSError):
        return ""
    try:
        return gitops.commit_subject(opened, sha)
    finally:
        opened.close()  # gitpython keeps `git cat-file` processes per Repo otherwise


def duration(job: Job) -> float | None:
    """Seconds the job ran (so far, while it runs); None before it starts."""
    if not job.started_at:
        return None
    end = parse_time(job.finished_at) if job.finished_at else datetime.now(timezone.utc)
    return max(0.0, (end - parse_time(job.started_at)).total_seconds())


# -- templates and errors ------------------------------------------------------------------------------


@dashboard.app_template_filter("when")
def _when(text: str | None) -> str:
    """An ISO time as `2026-11-28 03:04:05 UTC`."""
    if not text:
        return "—"
    try:
        return parse_time(text).strftime("%Y-%m-%d %H:%M:%S UTC")
    except ValueError:
        return text


@dashboard.app_template_filter("seconds")
def _seconds(value: float | None) -> str:
    """A duration for people: `0.4 s`, `12 s`, `3 min 05 s`."""
    if value is None:
        return "—"
    if value < 10:
        return f"{value:.1f} s"
    if value < 60:
        return f"{value:.0f} s"
    return f"{int(value // 60)} min {int(value % 60):02d} s"


@dashboard.app_context_processor
def _template_globals() -> dict:
    def can_deploy() -> bool:
        return request.blueprint == "dashboard" and tokens.grants(session_scope() or "", "deploy")

    def signed_in() -> str | None:
        return session_scope() if request.blueprint == "dashboard" else None

    return {"csrf_token": csrf_token, "can_deploy": can_deploy, "signed_in": signed_in, "duration": duration}


@dashboard.after_request
def _security_headers(response: Response) -> Response:
    for name, value in SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)
    return response


def _error_page(status: int, message: str) -> tuple[str, int]:
    try:
        return render_template("error.html", status=status, message=message), status
    except Exception:  # noqa: BLE001 - the error page itself must not turn into a 500
        log.exception("dashboard error page failed")
        return f"{status}: {message}\n", status


@dashboard.errorhandler(Exception)
def _error(error: Exception):
    status, message, _ = answer(error)
    return _error_page(status, message)
