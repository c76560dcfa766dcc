"""The dashboard's views at GET /: apps and their live release, the queue, recent jobs; an app's
page with its recent jobs drawn by duration and outcome and its scheduled tasks (next slot, last
runs, a run's output page, a run-now button); a job's steps on a time line, the traffic
the proxy counted for its release, and its log; replay and rollback buttons for a deploy-scope
session; the sign-in and sign-out pages.

Signing in means pasting an API token (from `hookdeploy token create`): it is checked with
core.tokens and exchanged for a session cookie (sessions.py: the cookie, CSRF, the origin check
and `requires(scope)`, which guards every view here but the sign-in pages). How times, durations
and commit subjects read is display.py's; the charts (inline SVG) are charts.py's. Like the rest of
the HTTP side, no input produces a 500: errors here are HTML pages with a 4xx (or 502/503) status.
"""

from __future__ import annotations

import logging

from flask import Blueprint, Response, g, redirect, render_template, request, url_for

from hookdeploy import actions
from hookdeploy.core import previews, tokens
from hookdeploy.core.config import AppConfig, Config
from hookdeploy.core.errors import BadInput
from hookdeploy.core.models import Job, JobState, release_tag
from hookdeploy.engine import traffic
from hookdeploy.web import charts
from hookdeploy.web.display import commit_subject, duration, format_seconds, format_when
from hookdeploy.web.http import Refused, answer, event_json, int_argument, reply, services
from hookdeploy.web.sessions import (check_request, csrf_token, end_session, requires, secret, session_scope,
                                     start_session)

log = logging.getLogger(__name__)

dashboard = Blueprint("dashboard", __name__, template_folder="templates", static_folder="static",
                      static_url_path="/static")

RECENT_JOBS = 30
TASK_RUNS_SHOWN = 5  # each task's newest runs on its app's page
ACTIVE_STATES = (JobState.QUEUED, JobState.RUNNING)
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}


# -- signing in and out ------------------------------------------------------------------------------


@dashboard.before_request
def _checked() -> None:
    """Every dashboard request: its Host is ours; a POST is a small form from one of our pages."""
    check_request()


@dashboard.get("/signin")
def signin_form() -> Response | str:
    """The sign-in page: paste a token."""
    secret()
    return render_template("signin.html", error=None)


@dashboard.post("/signin")
def signin() -> Response | tuple[str, int]:
    """Exchange a pasted API token for a session cookie."""
    # No session yet to derive a CSRF token from: check_request's Origin check is what stops a
    # sign-in from another site's page (login CSRF).
    key = secret()
    token = request.form.get("token", "").strip()
    try:
        claims = tokens.check(key, services().store, token, services().config.server.max_token_ttl)
    except tokens.InvalidToken as error:
        return render_template("signin.html", error=str(error)), 401
    # A path, never a URL made from the Host header.
    response = redirect(url_for("dashboard.index"), 303)
    start_session(response, claims)
    log.info("dashboard: signed in with %s token %s from %s", claims.scope, claims.id, request.remote_addr)
    return response


@dashboard.post("/signout")
@requires("read")
def signout() -> Response:
    """End the session on the server and forget its cookie."""
    response = redirect(url_for("dashboard.signin_form"), 303)
    end_session(response)
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


@dashboard.get("/apps/<app_name>")
@requires("read")
def app_page(app_name: str) -> str:
    """One app: its live release and its recent jobs, drawn by duration and outcome."""
    config, store = services().config, services().store
    app = _app(app_name)
    summary = _app_summary(config, actions.app_status(store, app.name))
    jobs = actions.history(store, app, RECENT_JOBS)
    chart = charts.job_history(jobs[::-1], lambda job: url_for("dashboard.job_page", job_id=job.id))
    tasks = actions.tasks(config, store, app, runs=TASK_RUNS_SHOWN)
    shown = [previews.describe(preview, config, store) for preview in previews.Previews(store).of(app.name)]
    return render_template("app.html", app=summary, jobs=jobs, chart=chart, tasks=tasks,
                           timezone=config.server.timezone, previews=shown)


@dashboard.get("/task-runs/<int:run_id>")
@requires("read")
def task_run_page(run_id: int) -> str:
    """One task run: its slot, state, exit status, duration and output (the page reloads while it runs)."""
    run = actions.task_run(services().store, run_id)
    return render_template("task_run.html", run=run, active=not run.state.finished)


@dashboard.get("/jobs/<int:job_id>")
@requires("read")
def job_page(job_id: int) -> str:
    """One job: its state, steps on a time line, its release's traffic and its log (the page follows
    the log while the job runs)."""
    job, events = actions.job_log(services().store, job_id)
    return render_template("job.html", job=job, events=events, last=events[-1].id if events else 0,
                           active=job.state in ACTIVE_STATES, timeline=charts.step_timeline(job, events),
                           traffic=release_traffic(services().config, job))


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


@dashboard.post("/apps/<app_name>/stop")
@requires("deploy")
def stop(app_name: str) -> Response:
    """Queue a stop: the maintenance page answers, then the live release's containers stop."""
    return _queued(actions.stop_app(services().store, _app(app_name)), "stop")


@dashboard.post("/apps/<app_name>/start")
@requires("deploy")
def start(app_name: str) -> Response:
    """Queue a start of the stopped app."""
    return _queued(actions.start_app(services().store, _app(app_name)), "start")


@dashboard.post("/apps/<app_name>/previews/<label>/remove")
@requires("deploy")
def remove_preview(app_name: str, label: str) -> Response:
    """Have the worker remove the preview; back to the app's page."""
    preview = previews.ask_removal(services().store, _app(app_name), label)
    log.info("dashboard: %s preview %s marked for removal", app_name, preview.label)
    return redirect(url_for("dashboard.app_page", app_name=app_name), 303)


@dashboard.post("/apps/<app_name>/replay")
@requires("deploy")
def replay(app_name: str) -> Response:
    """Queue a deploy of the past commit in the form's `sha`."""
    app = _app(app_name)
    sha_text = request.form.get("sha", "").strip()
    if not sha_text:
        raise BadInput("type the SHA of the commit to replay")
    return _queued(actions.replay_sha(services().config, services().store, app, sha_text), "replay")


@dashboard.post("/apps/<app_name>/tasks/<task_name>/run")
@requires("deploy")
def run_task(app_name: str, task_name: str) -> Response:
    """Ask for a run of the task now; show its page."""
    run = actions.run_task(services().store, _app(app_name), task_name)
    log.info("dashboard: queued run %d of %s task %s", run.id, run.app, run.task)
    return redirect(url_for("dashboard.task_run_page", run_id=run.id), 303)


def _queued(job: Job, verb: str) -> Response:
    log.info("dashboard %s: queued job %d %s @ %s", verb, job.id, job.app, job.short_sha)
    return redirect(url_for("dashboard.job_page", job_id=job.id), 303)


# -- helpers -------------------------------------------------------------------------------------------


def _app(name: str) -> AppConfig:
    app = services().config.apps.get(name)
    if app is None:
        raise Refused(404, "There is no such app in deploy.toml.")
    return app


def release_traffic(config: Config, job: Job) -> traffic.Tally | None:
    """What the proxy's access log counted for the job's release (requests, 5xx); None when it
    counted none, or the log is missing or unreadable: the job page shows it only when there is some."""
    try:
        hits = traffic.LogReader(traffic.log_path(config, job.app), from_end=False).read()
        tally = traffic.by_release(hits).get(release_tag(job.sha))
    except Exception:  # noqa: BLE001 - a box of figures must never cost the page; the log is someone else's file
        log.warning("dashboard: cannot read the proxy's access log of %s for job %d", job.app, job.id, exc_info=True)
        return None
    return tally if tally is not None and tally.requests else None


def _app_summary(config: Config, status: actions.AppStatus) -> dict:
    live = status.live
    return {"name": status.name, "live": live, "queued": status.queued, "running": status.running,
            "subject": commit_subject(config, config.apps[status.name], live.sha) if live else "",
            "can_roll_back": live is not None and status.can_roll_back, "stopped": status.stopped}


# -- templates and errors ------------------------------------------------------------------------------


dashboard.add_app_template_filter(format_when, "when")
dashboard.add_app_template_filter(format_seconds, "seconds")


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
