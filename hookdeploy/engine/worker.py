"""The worker loop: claims queued jobs one at a time and runs each to a final state,
heartbeating all along; waits out a Docker engine that does not answer; now and then recovers
what a dead worker left.

Rules: the worker owns every job state change (finish, or interrupt with its retry), notifies
once per final state, and never lets a job's error end the loop. What a job does is deploy.py's
(Deploy); recovering interrupted jobs and repairing an app's routing is recovery.py's
(Recovery). Threads of their own, also while a job runs, follow the swarm apps' live tasks
(Recovery.follow, every FOLLOW_SECONDS), keep HTTPS certificates renewed (certs.maintain, every
CERTS_SECONDS) and run scheduled tasks (scheduler.py; not with --drain). It imports hookdeploy.core
and the engine modules it runs (deploy, maintenance, recovery, scheduler, previews, certs, notify,
pipeline, runtime, containers, traffic); no engine module imports it (the CLI and `serve` start it).
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import socket
import threading
import time
from typing import Callable

from hookdeploy.core.config import Config
from hookdeploy.core.errors import Aborted, DockerUnavailable, HookdeployError
from hookdeploy.core.models import Job, JobState
from hookdeploy.core.previews import Previews
from hookdeploy.core.reload import LiveConfig
from hookdeploy.core.store import Store
from hookdeploy.engine import certs, containers, maintenance, notify, pipeline, previews, runtime, traffic
from hookdeploy.engine.deploy import Deploy, job_name
from hookdeploy.engine.recovery import Recovery
from hookdeploy.engine.scheduler import Scheduler

log = logging.getLogger(__name__)

HEARTBEAT_SECONDS = 1.0
POLL_SECONDS = 0.05
WAKE_SECONDS = 0.01  # an idle worker sees a commit by another process (a queued job) this soon (~1 % of a core)
RECOVER_EVERY_SECONDS = 5.0
FOLLOW_SECONDS = 1.0  # how often the live swarm services' tasks are compared with the proxy's routes
CERTS_SECONDS = 30.0  # how often certificates are looked at (renewal due, a failed order's retry, new user files)
PREVIEWS_SECONDS = 1.0  # how often previews due for removal are looked for
ENGINE_RETRY_SECONDS = (1.0, 30.0)  # first and longest wait between tries while the engine is away


class Worker:
    """Runs queued jobs, one at a time, until told to stop."""

    def __init__(self, config: Config | LiveConfig, store: Store, name: str | None = None,
                 clock: Callable | None = None):
        # A SIGHUP may put a new config in `live`; the worker takes it between jobs (_take_config).
        self.live = config if isinstance(config, LiveConfig) else LiveConfig(config)
        self.config = self.live.current
        self.clock = clock  # the scheduler's now (tests inject one); None: the real clock
        self.scheduler: Scheduler | None = None  # made by run()
        self.store = store
        self.id = name or f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"
        self._client = None
        self._engine_lost = False
        self.recovery = Recovery(self.config, store, lambda: self.client, self.id)

    @property
    def client(self):
        if self._client is None:
            self._client = containers.engine()
        return self._client

    def run(self, stop: threading.Event, drain: bool = False) -> None:
        """Take jobs until `stop` is set (or, with `drain`, until nothing is queued).

        While the Docker engine does not answer, no job starts: the worker says so once and
        tries again with backoff (with `drain` it gives up: DockerUnavailable)."""
        self.store.worker_beat(self.id)
        done = threading.Event()
        threads = [] if drain else [threading.Thread(target=self._every, args=(done, seconds, work), name=name, daemon=True)
                                    for name, seconds, work in self._background_work()]
        self.scheduler = Scheduler(self.config, self.store, self.id, **({"clock": self.clock} if self.clock else {}))
        if not drain:  # scheduled tasks: threads of their own, never in a job's way
            threads.append(threading.Thread(target=self.scheduler.run, args=(done,), name="tasks", daemon=True))
        try:
            if self.wait_for_engine(stop, give_up=drain):
                self.heal()
                self.recover()
                for thread in threads:
                    thread.start()
                self._loop(stop, drain)
        finally:
            done.set()
            for thread in threads:
                if thread.is_alive():
                    thread.join(timeout=30)
            self.store.worker_beat(self.id, stopped=True)

    def _loop(self, stop: threading.Event, drain: bool) -> None:
        """Claim and run jobs; while idle, beat and now and then recover."""
        last_recovery = last_beat = time.monotonic()
        last_previews = 0.0
        while not stop.is_set():
            self._take_config()
            names = self.release_sets()
            queued = any(self.store.queued_count(app) for app in names)
            if queued and not self.wait_for_engine(stop, give_up=drain):
                return
            job = self.store.claim(self.id, apps=names) if queued else None
            if job is not None:
                self.run_job(job, stop)
                continue
            if drain and not queued:
                return
            now = time.monotonic()
            if now - last_beat > HEARTBEAT_SECONDS:
                self.store.worker_beat(self.id)
                last_beat = now
            if now - last_previews > PREVIEWS_SECONDS:
                previews.sweep(self.config, self.store, self.clock)  # deleted branches, ttl_hours
                last_previews = now
            if now - last_recovery > RECOVER_EVERY_SECONDS:
                for app in self.release_sets():
                    traffic.rotate(self.config, app)
                try:
                    self.recover()
                except Exception as error:  # noqa: BLE001 - the engine went away between two looks
                    log.warning("recovery postponed: %s", _one_line(error))
                last_recovery = now
            self._idle(stop)

    def _idle(self, stop: threading.Event) -> None:
        """Wait POLL_SECONDS, or less: until another process commits to the store (a hook queuing a job)."""
        version, deadline = self.store.data_version(), time.monotonic() + POLL_SECONDS
        while not stop.wait(WAKE_SECONDS) and time.monotonic() < deadline:
            if self.store.data_version() != version:
                return

    def _take_config(self) -> None:
        """Use the config in force now from here on: a job that runs keeps the one it started with."""
        if self.live.current is not self.config:
            self.config = self.recovery.config = self.live.current
            if self.scheduler is not None:
                self.scheduler.use(self.config)

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
        """Merge duplicate instance networks, make the proxy anew if it is not as the config (or this
        version) wants it, and route each app moved (or, with `repair_all`, every app) to its
        recorded live release again."""
        try:
            apps = pipeline.heal_networks(self.client, self.config)
            pipeline.refresh_proxy(self.client, self.config)
            for app in (set(self.release_sets()) if repair_all else apps & set(self.release_sets())):
                self.repair(app)
        except Exception as error:  # noqa: BLE001 - the next start or engine return tries again
            log.warning("could not check the instance's network and routes: %s", _one_line(error))

    def release_sets(self) -> list[str]:
        """What jobs run for: the apps of the config and their previews (APP.LABEL)."""
        return [*self.config.apps, *(preview.name for preview in Previews(self.store).of() if preview.app in self.config.apps)]

    def run_job(self, job: Job, stop: threading.Event) -> Job:
        """Run one claimed job to a final state, heartbeating all along."""
        beating = threading.Event()
        beat = threading.Thread(target=self._heartbeat, args=(job.id, beating), daemon=True,
                                name=f"heartbeat-{job.id}")
        beat.start()
        unexpected = None
        try:
            runner = maintenance.RUNNERS.get(job.kind.value, Deploy)  # stop and start; else a deploy or rollback
            state, error = runner(self.config, self.store, lambda: self.client, job, stop).run()
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
            log.error("%s: unexpected error", job_name(job), exc_info=unexpected)
        if state is JobState.INTERRUPTED:
            final, _ = self.recovery.interrupt(job.id, error)
        else:
            final = self.store.finish(job.id, state, error)
            notify.send(self.config, self.store, final)
        log.info("%s: %s%s", job_name(job), state.value, f": {final.error}" if final.error else "")
        return final

    def _background_work(self) -> list[tuple[str, float, Callable]]:
        """What the worker's own threads do, each every so many seconds with an engine client of its own:
        `work(engine)` is one round. Both run whatever the config at startup: each round looks at the
        config in force then (a reload may add the first swarm or HTTPS app), and one with no such app
        asks nothing of the engine."""
        reported: dict[str, str] = {}

        def follow(engine) -> None:
            follower, failed = Recovery(self.config, self.store, engine, self.id), None
            for app in [app.name for app in self.config.apps.values() if runtime.followed(app)]:
                try:
                    follower.follow(app)
                except Exception as error:  # noqa: BLE001 - the other apps are followed all the same
                    failed = error
            if failed is not None:
                raise failed

        return [("follow-tasks", FOLLOW_SECONDS, follow),
                ("certificates", CERTS_SECONDS, lambda engine: certs.maintain(self.config, self.store, engine, reported))]

    def _every(self, done: threading.Event, seconds: float, work: Callable) -> None:
        """Run `work(engine)` at once and then every `seconds` until `done`, with a client of its own (a
        deploy may hold the worker's for minutes); a round that fails is tried again the next time, quietly."""
        client = None

        def engine():
            nonlocal client
            if client is None:
                client = containers.engine()
            return client

        while True:
            try:
                work(engine)
            except Exception as error:  # noqa: BLE001 - the next round tries again
                log.debug("%s postponed: %s", threading.current_thread().name, _one_line(error))
                client = None
            if done.wait(seconds):
                break
        if client is not None:
            client.close()

    def _heartbeat(self, job_id: int, done: threading.Event) -> None:
        try:
            while not done.wait(HEARTBEAT_SECONDS):
                with contextlib.suppress(HookdeployError):
                    self.store.heartbeat(job_id)
                    self.store.worker_beat(self.id)
        finally:
            self.store.close()  # this thread's connection; left to the garbage collector, they piled up

    # -- recovery, as callers know it ---------------------------------------------------------

    def recover(self) -> list[Job]:
        """Interrupt jobs whose worker died, repair the proxy, remove their leftovers, queue retries."""
        return self.recovery.recover()

    def repair(self, app_name: str) -> None:
        """Point the proxy at the recorded live release and remove the app's other containers."""
        self.recovery.repair(app_name)


def _one_line(error: object) -> str:
    """An error's message on one line, short enough for a log line or a job's reason."""
    text = " ".join(str(error).split()) or type(error).__name__
    return text if len(text) <= 300 else text[:297] + "..."
