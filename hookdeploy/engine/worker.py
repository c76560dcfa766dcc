"""The worker: claims jobs, runs the pipeline steps in order, owns every job state change,
and recovers what a dead worker left behind.

Order of a deploy: checkout → build → start candidate → health check → (proxy lock) switch →
verify through the proxy → record live → drain and retire the old container → prune images.
Any failure before the switch removes the candidate and leaves the live release as it was;
a failed verification switches back.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import signal
import socket
import threading
import time
from typing import Iterator

from hookdeploy.engine import containers, notify, pipeline, proxy
from hookdeploy.core.config import Config
from hookdeploy.core.errors import Aborted, DockerUnavailable, HookdeployError, StepFailed
from hookdeploy.core.models import Job, JobKind, JobState
from hookdeploy.core.store import Store

log = logging.getLogger(__name__)

HEARTBEAT_SECONDS = 1.0
STALE_SECONDS = 15.0
POLL_SECONDS = 0.05
RECOVER_EVERY_SECONDS = 5.0
ENGINE_RETRY_SECONDS = (1.0, 30.0)  # first and longest wait between tries while the engine is away
# Testing only: SIGKILL the worker right after the named step; "term:STEP" sends SIGTERM instead,
# as systemd does on a restart, at a moment a test could not hit by timing alone.
FAULT_ENV = "HOOKDEPLOY_FAULT"


class Worker:
    """Runs queued jobs, one at a time, until told to stop."""

    def __init__(self, config: Config, store: Store, name: str | None = None):
        self.config = config
        self.store = store
        self.id = name or f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"
        self._client = None
        self._engine_lost = False

    @property
    def client(self):
        if self._client is None:
            self._client = containers.engine()
        return self._client

    # -- the loop ---------------------------------------------------------------------------

    def run(self, stop: threading.Event, drain: bool = False) -> None:
        """Take jobs until `stop` is set (or, with `drain`, until nothing is queued).

        While the Docker engine does not answer, no job starts: the worker says so once and
        tries again with backoff (with `drain` it gives up: DockerUnavailable)."""
        self.store.worker_beat(self.id)
        try:
            if not self.wait_for_engine(stop, give_up=drain):
                return
            self.heal()
            self.recover()
            last_recovery = last_beat = time.monotonic()
            while not stop.is_set():
                queued = any(self.store.queued_count(app) for app in self.config.apps)
                if queued and not self.wait_for_engine(stop, give_up=drain):
                    break
                job = self.store.claim(self.id, apps=list(self.config.apps)) if queued else None
                if job is not None:
                    self.run_job(job, stop)
                    continue
                if drain and not queued:
                    break
                now = time.monotonic()
                if now - last_beat > HEARTBEAT_SECONDS:
                    self.store.worker_beat(self.id)
                    last_beat = now
                if now - last_recovery > RECOVER_EVERY_SECONDS:
                    try:
                        self.recover()
                    except Exception as error:  # noqa: BLE001 - the engine went away between two looks
                        log.warning("recovery postponed: %s", _one_line(error))
                    last_recovery = now
                stop.wait(POLL_SECONDS)
        finally:
            self.store.worker_beat(self.id, stopped=True)

    def wait_for_engine(self, stop: threading.Event, give_up: bool = False) -> bool:
        """True once the Docker engine answers; False if told to stop first.

        The first miss is logged once with the reason; then tries again after 1, 2, 4 ... 30 s.
        When it answers again, routes and leftovers are put right: a restarted engine may have
        given the live containers new addresses."""
        delay = ENGINE_RETRY_SECONDS[0]
        while not stop.is_set():
            try:
                self.client.ping()
            except Exception as error:  # noqa: BLE001 - whatever the SDK raises, the engine is away
                self._client = None
                if give_up:
                    raise DockerUnavailable(f"the Docker engine does not answer: {_one_line(error)}") from None
                if not self._engine_lost:
                    log.warning("the Docker engine does not answer (%s); no job starts until it does, "
                                "trying again with backoff up to %.0f s", _one_line(error), ENGINE_RETRY_SECONDS[1])
                self._engine_lost = True
                self.store.worker_beat(self.id)
                stop.wait(delay)
                delay = min(delay * 2, ENGINE_RETRY_SECONDS[1])
                continue
            if self._engine_lost:
                self._engine_lost = False
                log.warning("the Docker engine answers again")
                self.heal(repair_all=True)
            return True
        return False

    def engine_answers(self) -> bool:
        """True if the engine answers a ping now."""
        try:
            self.client.ping()
            return True
        except Exception:  # noqa: BLE001 - any failure means it does not
            self._client = None
            return False

    def heal(self, repair_all: bool = False) -> None:
        """Merge duplicate instance networks, and route each app moved (or, with `repair_all`, every
        app) to its recorded live release again."""
        try:
            apps = pipeline.heal_networks(self.client, self.config)
            for app in (set(self.config.apps) if repair_all else apps & set(self.config.apps)):
                self.repair(app)
        except Exception as error:  # noqa: BLE001 - the next start or engine return tries again
            log.warning("could not check the instance's network and routes: %s", _one_line(error))

    def run_job(self, job: Job, stop: threading.Event) -> Job:
        """Run one claimed job to a final state, heartbeating all along."""
        beating = threading.Event()
        beat = threading.Thread(target=self._heartbeat, args=(job.id, beating), daemon=True,
                                name=f"heartbeat-{job.id}")
        beat.start()
        unexpected = None
        try:
            state, error = self._deploy(job, stop)
        except Aborted:
            state, error = JobState.INTERRUPTED, "the worker is restarting"
        except Exception as raised:  # noqa: BLE001 - a bug must end the job, not the worker
            unexpected = raised
            state, error = JobState.FAILED, f"internal error: {type(raised).__name__}: {raised}"
        finally:
            beating.set()
            beat.join()
        if state is JobState.FAILED and not self.engine_answers():
            # Not the commit's fault: try it again once the engine is back.
            state, error = JobState.INTERRUPTED, f"the Docker engine stopped answering ({_one_line(error)})"
        elif unexpected is not None:
            log.error("%s: unexpected error", self._name(job), exc_info=unexpected)
        if state is JobState.INTERRUPTED:
            final, _ = self.store.interrupt(job.id, error)
        else:
            final = self.store.finish(job.id, state, error)
        notify.send(self.config, self.store, final)
        log.info("%s: %s%s", self._name(job), state.value, f": {final.error}" if final.error else "")
        return final

    def _heartbeat(self, job_id: int, done: threading.Event) -> None:
        while not done.wait(HEARTBEAT_SECONDS):
            with contextlib.suppress(HookdeployError):
                self.store.heartbeat(job_id)
                self.store.worker_beat(self.id)

    # -- one deploy ---------------------------------------------------------------------------

    def _deploy(self, job: Job, stop: threading.Event) -> tuple[JobState, str | None]:
        """The pipeline in order; returns the final state and error."""
        try:
            app = self.config.app(job.app)
        except HookdeployError as error:
            return JobState.FAILED, str(error)
        candidate = image = None
        try:
            client = self.client
            image = self._image(client, app, job, stop)
            self._check_stop(stop)
            with self.step(job, "proxy ready"):
                proxy_container = pipeline.ensure_proxy(client, self.config)
            self._check_stop(stop)
            with self.step(job, "started candidate") as note:
                candidate, ip = pipeline.start_candidate(client, self.config, app, job, image)
                note(f"started candidate {candidate.name} at {ip}:{app.port}")
            self._fault("candidate")
            self._check_stop(stop)
            with self.step(job, "health check") as note:
                took = pipeline.check_health(candidate, ip, app, stop)
                note(f"health check passed in {took:.1f} s")
            self._fault("health")
            self._check_stop(stop)
        except Aborted:  # before HookdeployError, of which it is one: a stop is no failure
            self._discard(app, job, candidate, image)
            raise
        except HookdeployError as error:
            self._discard(app, job, candidate, image)
            return JobState.FAILED, str(error)
        finally:
            pipeline.clean_build_dir(self.config, job)

        # From here on the candidate may be live: no abort, finish the switch whatever happens.
        path = proxy.app_file(self.config, app.name)
        old = self.store.live_release(app.name)
        with proxy.locked(self.config):
            try:
                with self.step(job, "switched proxy"):
                    previous = proxy.switch(proxy_container, path, proxy.render(app, ip, job.sha))
            except StepFailed as error:
                self._discard(app, job, candidate, image)
                return JobState.FAILED, str(error)
            self._fault("switch")
            with self.step(job, "verified through proxy") as note:
                took, last = pipeline.verify_through_proxy(self.config, app, job.sha)
                note(f"verified through the proxy in {took:.1f} s" if last.ok else
                     f"verification through the proxy failed: {last.detail}")
            if not last.ok:
                proxy.restore(path, previous)
                proxy.reload(proxy_container)
                self._discard(app, job, candidate, image)
                back = f"; {old.sha[:12]} is live again" if old else "; no release is live"
                return JobState.ROLLED_BACK, f"verification through the proxy failed: {last.detail}{back}"
            self.store.record_live(app.name, job.sha, image, candidate.name, job.id)
        was = f" (was {old.sha[:12]})" if old else ""
        self.store.log(job.id, f"live: {app.name} serves {job.sha[:12]}{was}", kind="step")

        if old is not None and old.container and old.container != candidate.name:
            with self.step(job, "drained and retired old container") as note:
                stop.wait(app.drain_seconds)
                self._fault("drain")
                retired = containers.get_container(self.client, old.container)
                if retired is not None:
                    containers.retire(retired)
                note(f"retired {old.container} after {app.drain_seconds:g} s drain")
        with self.step(job, "pruned images") as note:
            pruned = pipeline.prune(self.client, self.store, app)
            note(f"pruned {', '.join(pruned)}" if pruned else "no images to prune")
        return JobState.SUCCEEDED, None

    def _image(self, client, app, job: Job, stop: threading.Event) -> str:
        """The job's image: reused when the engine has it (rollback, replay, retry), else built from git."""
        name = containers.image_name(self.config.server.name, app.name, job.sha)
        if containers.image_exists(client, name):
            self.store.set_image(job.id, name)
            self.store.log(job.id, f"using image {name} (already built)", kind="step")
            return name
        if job.kind is JobKind.ROLLBACK:
            self.store.log(job.id, f"image {name} was pruned; rebuilding it from git", kind="step")
        with self.step(job, "checked out") as note:
            context = pipeline.checkout(self.config, app, job)
            note(f"checked out {job.sha[:12]}")
        self._fault("checkout")
        self._check_stop(stop)
        with self.step(job, "built image") as note:
            self.store.log(job.id, f"building {name}", kind="step")
            name = pipeline.build(client, self.config, app, job, context,
                                  lambda lines: self.store.log_many(job.id, lines), stop)
            self.store.set_image(job.id, name)
            note(f"built {name}")
        self._fault("build")
        return name

    def _discard(self, app, job: Job, candidate, image: str | None) -> None:
        """Remove what a failed job made; the live release is not touched."""
        with contextlib.suppress(Exception):
            if candidate is not None:
                containers.remove(candidate)
            pipeline.discard_image(self.client, self.store, app, image)

    # -- crash recovery -----------------------------------------------------------------------

    def recover(self) -> list[Job]:
        """Interrupt jobs whose worker died, repair the proxy, remove their leftovers, queue retries."""
        dead = [job for job in self.store.jobs(states=(JobState.RUNNING,), limit=1000)
                if self._worker_dead(job)]
        recovered = []
        for job in dead:
            live = self.store.live_release(job.app)
            went_live = live is not None and live.job == job.id
            try:
                job, retry = self.store.interrupt(job.id, "the worker died while running this job", retry=not went_live)
            except HookdeployError:
                continue  # another worker got there first
            recovered.append(job)
            notify.send(self.config, self.store, job)
            log.warning("%s: interrupted (its worker died)", self._name(job))
            pipeline.clean_build_dir(self.config, job)  # its own `finally` never ran
            with contextlib.suppress(HookdeployError):
                self.repair(job.app)
            if went_live:
                self.store.log(job.id, f"{job.sha[:12]} had gone live before the worker died; no retry needed")
            elif retry is None:
                self.store.log(job.id, "a newer job is queued; no retry")
            else:
                self.store.log(job.id, f"queued retry as job {retry.id}")
        return recovered

    def repair(self, app_name: str) -> None:
        """Point the proxy at the recorded live release and remove the app's other containers."""
        app = self.config.app(app_name)
        client = self.client
        live = self.store.live_release(app.name)
        path = proxy.app_file(self.config, app.name)
        busy = {str(job.id) for job in self.store.jobs(app.name, states=(JobState.RUNNING,))}
        with proxy.locked(self.config):
            proxy_container = pipeline.ensure_proxy(client, self.config)
            live_container = containers.get_container(client, live.container) if live and live.container else None
            if live_container is not None:
                if live_container.status != "running":
                    live_container.start()
                ip = containers.address(live_container, self.config.server.name)
                if not proxy.routes_to(path, ip, app.port):
                    proxy.switch(proxy_container, path, proxy.render(app, ip, live.sha))
                    log.warning("%s: proxy repaired to serve %s", app.name, live.sha[:12])
            elif live is None and path.exists():
                path.unlink()
                proxy.reload(proxy_container)
        for container in containers.find_containers(client, self.config.server.name, app=app.name):
            if container.labels.get(containers.ROLE) == "proxy":
                continue
            if (live is None or container.name != live.container) and container.labels.get(containers.JOB) not in busy:
                log.info("%s: removing leftover container %s", app.name, container.name)
                containers.remove(container)

    def _worker_dead(self, job: Job) -> bool:
        worker = job.worker or ""
        host, _, rest = worker.partition(":")
        pid = rest.partition(":")[0]
        if worker == self.id:
            return False
        if host == socket.gethostname() and pid.isdigit() and int(pid) != os.getpid():
            try:
                os.kill(int(pid), 0)
            except ProcessLookupError:
                return True
            except PermissionError:
                pass
        return any(stale.id == job.id for stale in self.store.stale_running(STALE_SECONDS))

    # -- helpers ---------------------------------------------------------------------------

    @contextlib.contextmanager
    def step(self, job: Job, name: str) -> Iterator:
        """Time a step and record it as a job event; the body may replace the message via note()."""
        message = [name]
        started = time.monotonic()
        yield lambda text: message.__setitem__(0, text)
        took = time.monotonic() - started
        self.store.log(job.id, message[0], kind="step", duration=round(took, 3))
        log.info("%s: %s (%.2f s)", self._name(job), message[0], took)

    @staticmethod
    def _check_stop(stop: threading.Event) -> None:
        if stop.is_set():
            raise Aborted()

    @staticmethod
    def _fault(step: str) -> None:
        fault = os.environ.get(FAULT_ENV)
        if fault == step:
            os.kill(os.getpid(), signal.SIGKILL)
        elif fault == f"term:{step}":
            os.kill(os.getpid(), signal.SIGTERM)

    @staticmethod
    def _name(job: Job) -> str:
        return f"{job.app} job {job.id} @ {job.sha[:7]}"


def _one_line(error: object) -> str:
    """An error's message on one line, short enough for a log line or a job's reason."""
    text = " ".join(str(error).split()) or type(error).__name__
    return text if len(text) <= 300 else text[:297] + "..."
