"""Stopping and starting an app's live release (DESIGN "Operating apps"): jobs of kind "stop" and "start".

stop: the proxy answers every request for the app with its maintenance page (503 + Retry-After)
before the release's containers stop, so no visitor meets a refused connection; the containers
are stopped, not removed, and the store records the app stopped (recovery keeps it so). start:
the containers start, pass the health check, and only then is the proxy routed to them. A deploy
of a stopped app starts it by going live (Store.record_live ends the stop).

Where a release runs is the runtime's (runtime.py: containers on this engine, or a Swarm service scaled
to 0 and back); a start is health-checked by the same `check_health` as a deploy's candidate. Like
Deploy, a Stop or Start returns the job's final state and error and changes no job state itself.
Imports hookdeploy.core, the step modules (certs, pipeline, proxy, runtime, traffic) and deploy.py
for its step names, fault hook and job_name; recovery (a stopped app stays stopped), removal and the
worker import it.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from pathlib import Path
from typing import Callable, Iterator

import docker

from hookdeploy.core.config import AppConfig, Config
from hookdeploy.core.errors import Aborted, HookdeployError, StepFailed
from hookdeploy.core.models import Job, JobState, Release, release_tag
from hookdeploy.core.store import Store
from hookdeploy.engine import certs, pipeline, proxy, runtime, traffic
from hookdeploy.engine.deploy import STEPS, fault, job_name

# The worker's lines, whichever of its modules writes them.
log = logging.getLogger("hookdeploy.engine.worker")

RETRY_AFTER_SECONDS = 300  # what the 503 tells browsers and crawlers: come back in five minutes
PAGES_DIR = "maintenance"  # beside the server blocks in conf.d: each app's page, APP.html
PAGE_URI = "/.hookdeploy-maintenance.html"  # internal: only nginx's error_page reaches it
STOP_GRACE_SECONDS = 10  # a container's time to exit on SIGTERM before it is killed
BUILT_IN_PAGE = """<!doctype html>
<html lang="en">
<head><meta charset="utf-8"><title>Down for maintenance</title></head>
<body>
<h1>Down for maintenance</h1>
<p>{app} is down for maintenance and will be back shortly.</p>
</body>
</html>
"""

Ended = tuple[JobState, str | None]


# -- the release, through its runtime ------------------------------------------------------------


def stop_release(client: docker.DockerClient, config: Config, app: AppConfig, release: Release) -> str:
    """Stop the release's containers (kept, to be started again), or scale its Swarm service to 0; what
    was stopped, in words."""
    if not release.container:
        raise StepFailed("the live release has no container on record")
    runtime.runtime_for(config, app, client).stop(release.container)
    return f"release {release.container}"


def start_release(client: docker.DockerClient, config: Config, app: AppConfig, release: Release,
                  stop: threading.Event, note: Callable[[str], None]) -> tuple[list[str], str]:
    """Start the release's containers (or scale its service back to `replicas`) and wait, as a deploy waits
    for its candidate, until each passed the health check: (their addresses, what the check said).
    StepFailed with the reason otherwise."""
    if not release.container:
        raise StepFailed("the live release has no container on record")
    where = runtime.runtime_for(config, app, client)
    started = where.start(release.container)
    note(started.note)
    said = where.check_health(started, pipeline.ensure_proxy(client, config), stop, note)
    if not started.addresses:
        raise StepFailed(f"release {release.container} started no replica that serves")
    return started.addresses, said


# -- the maintenance page in the proxy ------------------------------------------------------------


def page_path(config: Config, app_name: str) -> Path:
    """The app's maintenance page in the proxy's conf.d (a host folder the proxy mounts)."""
    return proxy.conf_dir(config) / PAGES_DIR / f"{app_name}.html"


def write_page(config: Config, app: AppConfig) -> None:
    """Copy the app's maintenance_page (or the built-in page) where the proxy reads it."""
    path = page_path(config, app.name)
    path.parent.mkdir(mode=0o755, exist_ok=True)
    data = Path(app.maintenance_page).read_bytes() if app.maintenance_page else BUILT_IN_PAGE.format(app=app.name).encode()
    if _read_bytes(path) != data:
        proxy.write_atomically(path, data)


def render(config: Config, app: AppConfig, sha: str) -> str:
    """The app's server blocks while it is stopped: the same names, ports and certificates as when it runs,
    each request answered 503 with Retry-After and the maintenance page (ACME challenges still answered,
    http:// still redirected where the app redirects)."""
    tls = certs.tls_routes(config, app)
    names = list(app.hostnames) or ["_"]
    certificates = {name: pem for name, pem in (tls.certificates if tls else {}).items() if name in names}
    redirected = [name for name in names if name in certificates] if tls and tls.redirect else []
    plain = [name for name in names if name not in redirected]
    access_log = f"    access_log {traffic.in_proxy(app.name)} hookdeploy_json;\n"
    page = f"{proxy.IN_PROXY}/{PAGES_DIR}/{app.name}.html"
    location = (f"    error_page 503 {PAGE_URI};\n"
                f"    location / {{\n        return 503;\n    }}\n"
                f"    location = {PAGE_URI} {{\n        internal;\n        alias {page};\n"
                f"        default_type text/html;\n        charset utf-8;\n"
                f"        add_header Retry-After {RETRY_AFTER_SECONDS} always;\n"
                f"        add_header Cache-Control \"no-store\" always;\n"
                f"        add_header X-Hookdeploy-Maintenance {app.name} always;\n    }}\n")
    blocks = []
    if plain:
        blocks.append(proxy._server(proxy._listen(80, plain), plain, location, access_log))
    if redirected:
        port = "" if tls.port == 443 else f":{tls.port}"
        blocks.append(proxy._server(proxy._listen(80, redirected), redirected,
                                    f"    location / {{\n        return 308 https://$host{port}$request_uri;\n    }}\n",
                                    access_log))
    for pem in dict.fromkeys(certificates.values()):
        covered = [name for name in names if certificates.get(name) == pem]
        blocks.append(proxy._server(proxy._listen(443, covered), covered, location,
                                    f"    ssl_certificate {pem};\n    ssl_certificate_key {pem};\n" + access_log))
    return (f"# written by hookdeploy: {app.name} stopped (maintenance page) @ {release_tag(sha)}; "
            f"edits are overwritten by the next start or deploy\n" + "".join(blocks))


def route_to_page(config: Config, app: AppConfig, proxy_container, sha: str) -> str | None:
    """Under the proxy lock: route the app to its maintenance page; what the app's file held before."""
    write_page(config, app)
    return proxy.switch(proxy_container, proxy.app_file(config, app.name), render(config, app, sha))


def is_page_route(text: str | None) -> bool:
    """True if an app's proxy file (its text) routes to the maintenance page."""
    return bool(text) and f"location = {PAGE_URI}" in text


# -- the jobs -------------------------------------------------------------------------------------


class _Operation:
    """What a stop and a start share: the app, its live release, timed steps in the job log."""

    def __init__(self, config: Config, store: Store, engine: Callable[[], docker.DockerClient], job: Job,
                 stop: threading.Event):
        self.config = config
        self.store = store
        self._engine = engine
        self.job = job
        self.stop = stop

    @property
    def client(self) -> docker.DockerClient:
        return self._engine()

    def run(self) -> Ended:
        """The job to its end; its final state and error."""
        try:
            app = self.config.app(self.job.app)
            live = self.store.live_release(app.name)
            if live is None:
                raise StepFailed(f"{app.name} has no live release")
            return self.operate(app, live)
        except Aborted:
            raise
        except HookdeployError as error:
            return JobState.FAILED, str(error)

    def operate(self, app: AppConfig, live: Release) -> Ended:
        """What the job does to the app's live release; its final state and error."""
        raise NotImplementedError

    @contextlib.contextmanager
    def step(self, name: str) -> Iterator[Callable[[str], None]]:
        """Time a step and record it as a job event; the body may replace the message via note()."""
        message = [name]
        started = time.monotonic()
        yield lambda text: message.__setitem__(0, text)
        took = time.monotonic() - started
        self.store.log(self.job.id, message[0], kind="step", duration=round(took, 3), step=STEPS.get(name, name.split()[0]))
        log.info("%s: %s (%.2f s)", job_name(self.job), message[0], took)


class Stop(_Operation):
    """A job of kind "stop": maintenance page first, then the containers stop. Doing it again is harmless
    (a retry after an interruption finishes what was begun)."""

    def operate(self, app: AppConfig, live: Release) -> Ended:
        job = self.job
        client = self.client
        proxy_container = pipeline.ensure_proxy(client, self.config)
        with self.step("maintenance page") as note:
            with proxy.locked(self.config):
                # Recorded first: from here on, recovery keeps the page and the containers stopped.
                self.store.set_stopped(app.name, live.id, job.id)
                try:
                    route_to_page(self.config, app, proxy_container, live.sha)
                except HookdeployError:
                    self.store.set_started(app.name)
                    raise
            note(f"the proxy answers {app.name}'s maintenance page (503, Retry-After {RETRY_AFTER_SECONDS})"
                 + (f" from {app.maintenance_page}" if app.maintenance_page else " (built in)"))
        fault("maintenance")
        with self.step("stopped release") as note:
            self.stop.wait(app.drain_seconds)  # requests the old nginx workers still hold finish
            what = stop_release(client, self.config, app, live)
            note(f"stopped {what} of {release_tag(live.sha)}; `hookdeploy start {app.name}` or a deploy starts it "
                 "again")
        return JobState.SUCCEEDED, None


class Start(_Operation):
    """A job of kind "start": the stopped release starts, passes its health check, then is routed."""

    def operate(self, app: AppConfig, live: Release) -> Ended:
        job, client = self.job, self.client
        if self.store.stopped(app.name) is None:
            self.store.log(job.id, f"{app.name} is not stopped ({release_tag(live.sha)} serves): nothing to start")
            return JobState.SUCCEEDED, None
        proxy_container = pipeline.ensure_proxy(client, self.config)
        path = proxy.app_file(self.config, app.name)
        try:
            with self.step("health check") as note:
                addresses, said = start_release(client, self.config, app, live, self.stop,
                                                lambda text: self.store.log(job.id, text))
                note(f"started {release_tag(live.sha)}: {said}")
        except (HookdeployError, docker.errors.APIError) as error:
            with contextlib.suppress(Exception):
                stop_release(client, self.config, app, live)
            if isinstance(error, Aborted):  # the worker stops: the job's retry starts it again
                raise
            reason = error.explanation if isinstance(error, docker.errors.APIError) else str(error)
            return JobState.FAILED, f"{reason}; {app.name} stays stopped (its maintenance page answers)"
        with proxy.locked(self.config):
            with self.step("switched proxy") as note:
                previous = proxy.switch(proxy_container, path,
                                        certs.render_routes(self.config, app, addresses, live.sha))
                note(f"switched proxy to {release_tag(live.sha)}")
            with self.step("verified through proxy") as note:
                took, last = pipeline.verify_through_proxy(self.config, app, live.sha)
                note(f"verified through the proxy in {took:.1f} s" if last.ok else
                     f"verification through the proxy failed: {last.detail}")
            if not last.ok:
                proxy.switch_back(proxy_container, path, previous)
                with contextlib.suppress(Exception):
                    stop_release(client, self.config, app, live)
                return JobState.FAILED, (f"verification through the proxy failed: {last.detail}; "
                                         f"{app.name} stays stopped (its maintenance page answers)")
            self.store.set_started(app.name)
        self.store.log(job.id, f"live: {app.name} serves {release_tag(live.sha)} again", kind="step", step="live")
        return JobState.SUCCEEDED, None


RUNNERS = {"stop": Stop, "start": Start}  # by job kind; the worker runs other kinds with Deploy


def _read_bytes(path: Path) -> bytes | None:
    """A file's bytes, or None if there is none."""
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return None
