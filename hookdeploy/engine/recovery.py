"""What follows an interruption: ending a job `interrupted` with its one retry, recovering the
jobs of a worker that died, and repairing an app's routing and leftovers.

Rules: a job is interrupted, and its retry queued, in one place (Recovery.interrupt), by the store's
rule: once, in the same commit, unless a newer job of the app is queued; a job that went live before
its worker died is not retried. A worker is dead when its process is gone from this host or its
jobs' heartbeats are older than STALE_SECONDS; a worker never recovers its own jobs. Repair points
the proxy at the recorded live release and removes the app's other release objects (its runtime's
leftovers: containers, and for a swarm app services), sparing those of running jobs. Following a
swarm app keeps the proxy's upstream equal to the live service's serving tasks as Swarm replaces
them (a node lost, a task died): a task gone is dropped at once, a new one added once it answered
the health check. Imports hookdeploy.core, the step modules (certs, containers, notify, pipeline,
proxy, runtime), maintenance.py (a stopped app's page) and deploy.py's job_name; only the worker
imports it.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import logging
import os
import socket
from typing import Callable

import docker

from hookdeploy.core.config import Config
from hookdeploy.core.errors import HookdeployError
from hookdeploy.core.models import Job, JobState, release_tag
from hookdeploy.core.store import Store
from hookdeploy.engine import certs, containers, maintenance, notify, pipeline, proxy, runtime
from hookdeploy.engine.deploy import job_name

# The worker's lines, whichever of its modules writes them.
log = logging.getLogger("hookdeploy.engine.worker")

STALE_SECONDS = 15.0
FAILED_PROBES = 2  # probes in a row (one a follower round) a routed task may fail before it leaves the upstream

# (instance, app) -> address -> probes failed in a row, kept across the follower's rounds (one Recovery each)
_failing: dict[tuple[str, str], dict[str, int]] = {}


class Recovery:
    """Interrupts and recovers jobs, and repairs apps, on behalf of the worker `worker_id`."""

    def __init__(self, config: Config, store: Store, engine: Callable[[], docker.DockerClient], worker_id: str):
        self.config = config
        self.store = store
        self._engine = engine  # the worker's client, asked for afresh at each use
        self.worker_id = worker_id

    @property
    def client(self) -> docker.DockerClient:
        return self._engine()

    def interrupt(self, job_id: int, reason: str, retry: bool = True) -> tuple[Job, Job | None]:
        """End a running job `interrupted`, queue its one retry (unless a newer job is queued), notify.

        Returns the job and its retry (None if none was queued); StoreError if it is not running."""
        job, again = self.store.interrupt(job_id, reason, retry=retry)
        notify.send(self.config, self.store, job)
        return job, again

    def recover(self) -> list[Job]:
        """Interrupt jobs whose worker died, repair the proxy, remove their leftovers, queue retries."""
        dead = [job for job in self.store.jobs(states=(JobState.RUNNING,), limit=1000)
                if self._worker_dead(job)]
        recovered = []
        for job in dead:
            live = self.store.live_release(job.app)
            went_live = live is not None and live.job == job.id
            try:
                job, retry = self.interrupt(job.id, "the worker died while running this job", retry=not went_live)
            except HookdeployError:
                continue  # another worker got there first
            recovered.append(job)
            log.warning("%s: interrupted (its worker died)", job_name(job))
            pipeline.clean_build_dir(self.config, job)  # its own `finally` never ran
            with contextlib.suppress(HookdeployError):
                self.repair(job.app)
            if went_live:
                self.store.log(job.id, f"{release_tag(job.sha)} had gone live before the worker died and stays "
                                       f"live, the "
                                       f"one release the proxy routes to (any earlier one retired); no retry needed")
            elif retry is None:
                self.store.log(job.id, "a newer job is queued; no retry")
            else:
                self.store.log(job.id, f"queued retry as job {retry.id}")
        return recovered

    def repair(self, app_name: str) -> None:
        """Point the proxy at the recorded live release and remove the app's other release objects.

        Its facts are read after what they decide on: the live release under the proxy lock (a job
        switching holds it until its release is recorded live), the running jobs after the objects
        are listed (an object's job was running when it was made)."""
        app = self.config.app(app_name)
        client = self.client
        where = runtime.runtime_for(self.config, app, client)
        path = proxy.app_file(self.config, app.name)
        with proxy.locked(self.config):
            live = self.store.live_release(app.name)
            proxy_container = pipeline.ensure_proxy(client, self.config)
            if live is not None and self.store.stopped(app.name) is not None:
                self._keep_stopped(app, live, proxy_container, path)
                live = None  # nothing to start or route below; its containers are the live release's, kept
            addresses = (where.repair(live.container) if live and live.container else None) or []
            if addresses:  # none while no task serves: the routes stay as they are
                if not proxy.routes_exactly(path, addresses, app.port):
                    proxy.switch(proxy_container, path, certs.render_routes(self.config, app, addresses, live.sha))
                    log.warning("%s: proxy repaired to serve %s (%d address%s)", app.name, release_tag(live.sha),
                                len(addresses), "" if len(addresses) == 1 else "es")
            elif live is None and path.exists() and self.store.live_release(app.name) is None:
                path.unlink()
                proxy.reload(proxy_container)
        found = where.leftovers()
        now_live = self.store.live_release(app.name)
        busy = {str(job.id) for job in self.store.jobs(app.name, states=(JobState.RUNNING,))}
        for leftover in found:
            if (now_live is None or leftover.job != str(now_live.job)) and leftover.job not in busy:
                log.info("%s: removing leftover %s %s", app.name, leftover.what, leftover.name)
                leftover.remove()

    def _keep_stopped(self, app, live, proxy_container, path) -> None:
        """A stopped app (`stop APP`): its maintenance page stays routed and its containers stay stopped."""
        maintenance.write_page(self.config, app)  # unchanged: not written
        if not maintenance.is_page_route(proxy.read(path)):
            maintenance.route_to_page(self.config, app, proxy_container, live.sha)
            log.warning("%s: proxy repaired to answer the maintenance page (the app is stopped)", app.name)
        with contextlib.suppress(HookdeployError, docker.errors.APIError):  # gone: a start says so
            maintenance.stop_release(self.client, self.config, app, live)

    def follow(self, app_name: str) -> bool:
        """Route an app whose runtime moves its replicas (a swarm service) to the live release's serving
        addresses as they are now; True if the proxy changed.

        Each round (the worker's, every FOLLOW_SECONDS) probes every address from the proxy, in
        parallel. A task no longer serving (replaced by Swarm, its node marked down) is dropped at
        once; a routed one that failed FAILED_PROBES probes in a row is dropped too, whatever Swarm
        says of its node (a node lost is marked down only after 10 s or more); a task not routed is
        added once it passed a probe, so a dropped one comes back after one. While no task would be
        left, the routes stay as they are (nginx tries each in turn)."""
        app = self.config.app(app_name)
        client = self.client
        live = self.store.live_release(app.name)
        if live is None or not live.container or self.store.stopped(app.name) is not None:
            return False  # a stopped app's route is its maintenance page
        where = runtime.runtime_for(self.config, app, client)
        serving = where.addresses(live.container)
        proxy_container = containers.get_container(client, containers.proxy_name(self.config.server.name))
        if serving is None or proxy_container is None or proxy_container.status != "running":
            return False
        path = proxy.app_file(self.config, app.name)
        routed = set(proxy.routed_addresses(path))
        answered = _probe_all(where, proxy_container, serving)
        failing = _failing.setdefault((self.config.server.name, app.name), {})
        for ip in list(failing):
            if ip not in answered:
                del failing[ip]  # gone from the service: forgotten
        for ip, ok in answered.items():
            failing[ip] = 0 if ok else failing.get(ip, 0) + 1
        wanted = [ip for ip in serving if (failing[ip] < FAILED_PROBES if ip in routed else answered[ip])]
        if not wanted or set(wanted) == routed:
            return False
        with proxy.locked(self.config):
            now = self.store.live_release(app.name)
            if now is None or now.id != live.id:
                return False  # a deploy switched meanwhile; the next look follows the new release
            proxy.switch(proxy_container, path, certs.render_routes(self.config, app, wanted, live.sha))
        added, dropped = sorted(set(wanted) - routed), sorted(routed - set(wanted))
        log.warning("%s: proxy follows %s's tasks: %s", app.name, live.container,
                    ", ".join([f"+{ip}" for ip in added] + [f"-{ip}" for ip in dropped]))
        return True

    def _worker_dead(self, job: Job) -> bool:
        worker = job.worker or ""
        host, _, rest = worker.partition(":")
        pid = rest.partition(":")[0]
        if worker == self.worker_id:
            return False
        if host == socket.gethostname() and pid.isdigit() and int(pid) != os.getpid():
            try:
                os.kill(int(pid), 0)
            except ProcessLookupError:
                return True
            except PermissionError:
                pass
        return any(stale.id == job.id for stale in self.store.stale_running(STALE_SECONDS))


def _probe_all(where: runtime.Runtime, proxy_container, addresses: list[str]) -> dict[str, bool]:
    """One health check of each address at once (from the proxy: `where.probe`); address -> passed."""
    if not addresses:
        return {}
    with concurrent.futures.ThreadPoolExecutor(max_workers=len(addresses), thread_name_prefix="follow-probe") as pool:
        results = pool.map(lambda ip: where.probe(proxy_container, ip).ok, addresses)
        return dict(zip(addresses, results))
