"""The worker's task scheduler: each second, claim the schedule slots that came due (and the runs
asked for by hand) and run each in a thread of its own, without holding up the worker's jobs.

Rules (DESIGN "Data, schedules and one-off commands"):
- A slot runs once across every worker: the store records it in one transaction, the first
  worker to commit runs it (core/taskruns.py). A slot that finds the task's previous run still
  running, or nothing live, is recorded `skipped`.
- After the workers were down, only the most recent missed slot runs; the older ones since the
  task's last recorded slot are recorded `missed` (at most MISSED_RECORDED of them). A task with
  no slot recorded yet starts with a slot due in the last FIRST_SLOT_WINDOW, else the next one.
- Threads: one per running run, and the store allows one running run per task, so a worker holds
  at most as many run threads as deploy.toml has tasks; each has its own engine client.
- A stopping worker kills its runs' containers and records them `failed`; a run whose worker
  stopped answering (killed) is ended `failed` by another worker, and its container removed.
- Now is asked of `clock` (an aware datetime), so tests step through minutes in no time.
Imports hookdeploy.core, containers, notify and taskrunner; the worker starts it.
"""

from __future__ import annotations

import logging
import threading
import time
from datetime import datetime, timedelta, timezone
from typing import Callable

import docker

from hookdeploy.core.config import AppConfig, Config, TaskConfig
from hookdeploy.core.errors import HookdeployError
from hookdeploy.core.models import Release
from hookdeploy.core.schedule import Schedule, slot_text
from hookdeploy.core.store import Store
from hookdeploy.core.taskruns import RunState, TaskRun, TaskRuns
from hookdeploy.engine import containers, notify, taskrunner

log = logging.getLogger(__name__)

TICK_SECONDS = 1.0
STALE_SECONDS = 15.0  # a running run whose worker has not beaten this long is ended failed
SWEEP_SECONDS = 10.0  # how often containers of ended runs (a killed worker's) are looked for
MISSED_RECORDED = 1000  # older missed slots than these are not recorded one by one
FIRST_SLOT_WINDOW = timedelta(minutes=1)
FAILURES = (RunState.FAILED, RunState.TIMED_OUT)


def utc_now() -> datetime:
    """The real clock."""
    return datetime.now(timezone.utc)


class Scheduler:
    """Claims and runs the tasks of `config`'s apps on behalf of the worker `worker_id`."""

    def __init__(self, config: Config, store: Store, worker_id: str, clock: Callable[[], datetime] = utc_now,
                 engine: Callable[[], docker.DockerClient] = containers.engine):
        self.config = config
        self.store = store
        self.runs = TaskRuns(store)
        self.worker_id = worker_id
        self.clock = clock
        self._engine = engine
        self.use(config)
        self._threads: dict[int, threading.Thread] = {}
        self._stopping = threading.Event()
        self._client = None
        self._last_sweep = 0.0

    def use(self, config: Config) -> None:
        """Schedule the tasks of `config` from the next tick on (a reload); runs under way go on."""
        self._schedules = {(app.name, task.name): Schedule(task.schedule, config.server.timezone)
                           for app in config.apps.values() for task in app.tasks}
        self.config = config

    @property
    def wanted(self) -> bool:
        """True when some app has tasks."""
        return bool(self._schedules)

    def run(self, done: threading.Event) -> None:
        """Tick every TICK_SECONDS until `done`; then stop every run this worker holds."""
        try:
            while True:
                try:
                    if self.wanted or self._threads:  # no task (a reload may add some): nothing to do
                        self.tick()
                        self.housekeep()
                except Exception as error:  # noqa: BLE001 - the next tick tries again
                    log.warning("task scheduler: %s", " ".join(str(error).split()) or type(error).__name__)
                if done.wait(TICK_SECONDS):
                    break
        finally:
            self.stop()

    def tick(self) -> list[TaskRun]:
        """Claim every slot due now and every run asked for; start those that run. Returns what was claimed."""
        now = self.clock()
        claimed = []
        for app in self.config.apps.values():
            for task in app.tasks:
                run = self._claim(app, task, now)
                if run is not None:
                    claimed.append(run)
        apps = [app.name for app in self.config.apps.values() if app.tasks]
        if apps:
            claimed += self.runs.claim_queued(self.worker_id, self.store.live_release, apps)
        for run in claimed:
            log.info("%s task %s: slot %s %s%s", run.app, run.task, run.slot, run.state.value,
                     f" ({run.reason})" if run.reason else "")
            if run.state is RunState.RUNNING:
                self._start(run)
        return claimed

    def _claim(self, app: AppConfig, task: TaskConfig, now: datetime) -> TaskRun | None:
        schedule = self._schedules[(app.name, task.name)]
        latest = schedule.latest(now)
        if latest is None:
            return None
        slot = slot_text(latest)
        last = self.runs.last_slot(app.name, task.name)
        if last is None and now - latest > FIRST_SLOT_WINDOW:
            return None  # new to the store: its first slot is the next one
        if last is not None and slot <= last:
            return None
        missed = []
        if last is not None:
            for older in schedule.before(latest):
                if slot_text(older) <= last or len(missed) >= MISSED_RECORDED:
                    break
                missed.append(slot_text(older))
        return self.runs.claim_slot(app.name, task.name, slot, missed, self.worker_id,
                                    self.store.live_release(app.name))

    def _start(self, run: TaskRun) -> threading.Thread:
        thread = threading.Thread(target=self._execute, args=(run,), name=f"task-{run.app}-{run.task}-{run.id}",
                                  daemon=True)
        self._threads[run.id] = thread
        thread.start()
        return thread

    def _execute(self, run: TaskRun) -> None:
        client = None
        try:
            app = self.config.app(run.app)
            task = app.task(run.task)
            client = self._engine()
            final = taskrunner.execute(client, self.config, app, task, run, self._release(run), self.runs,
                                       self._stopping)
        except Exception as error:  # noqa: BLE001 - a run's failure must end it, never the worker
            final = None
            try:
                final = self.runs.finish(run.id, RunState.FAILED, reason=f"could not run: {error}")
            except HookdeployError as store_error:  # the store is away: another worker ends it as stale
                log.error("%s task %s: run %d could not be recorded: %s", run.app, run.task, run.id, store_error)
        finally:
            if client is not None:
                client.close()
            self._threads.pop(run.id, None)
        if final is not None:
            log.info("%s task %s: run %d %s%s", final.app, final.task, final.id, final.state.value,
                     f" ({final.reason})" if final.reason else "")
            if final.state in FAILURES:
                notify.send_task(self.config, final)

    def _release(self, run: TaskRun) -> Release:
        """The release the run was claimed in (the live one then)."""
        live = self.store.live_release(run.app)
        if live is not None and live.sha == run.sha:
            return live
        for release in self.store.releases(run.app):
            if release.sha == run.sha:
                return release
        raise HookdeployError(f"release {run.sha} of {run.app} is not recorded")

    def housekeep(self) -> None:
        """Beat for the runs held; end the runs of workers that stopped answering; now and then remove
        containers of runs that ended (a killed worker's) and one-off containers that exited."""
        if self._threads:
            self.runs.heartbeat(self.worker_id)
        for run in self.runs.stale(STALE_SECONDS, self.worker_id):
            final = self.runs.finish(run.id, RunState.FAILED, reason="its worker stopped answering during the run")
            if final is not None:
                log.warning("%s task %s: run %d failed: its worker %s stopped answering", run.app, run.task, run.id,
                            run.worker)
                notify.send_task(self.config, final)
        if time.monotonic() - self._last_sweep >= SWEEP_SECONDS:
            self._last_sweep = time.monotonic()
            self.sweep()

    def sweep(self) -> None:
        """Remove task containers whose run ended or is unknown, and one-off containers that exited."""
        if self._client is None:
            self._client = self._engine()
        for container in containers.find_containers(self._client, self.config.server.name, role="task"):
            run_id = container.labels.get(taskrunner.RUN_LABEL, "")
            run = self.runs.run(int(run_id)) if run_id.isdigit() else None
            if run is None or run.state.finished:
                log.info("removing task container %s (its run ended)", container.name)
                containers.remove(container)
        for container in containers.find_containers(self._client, self.config.server.name, role="run"):
            if container.status in ("exited", "dead", "created"):
                containers.remove(container)

    def stop(self) -> None:
        """Kill the containers of this worker's runs, record them, and wait for their threads."""
        self._stopping.set()
        for thread in list(self._threads.values()):
            thread.join(timeout=taskrunner.KILL_WAIT_SECONDS + 20)
        if self._client is not None:
            self._client.close()
            self._client = None
