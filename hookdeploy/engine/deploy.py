"""One deploy of one job, in order: prepare → switch and verify → retire.

prepare: the image (reused, or checkout → build, or pull; pushed when the app pushes), the proxy,
the release command (once per commit, release.py), the candidate where the app's releases run
(runtime.py: containers, or for target "swarm" a service), every replica health-checked. switch and
verify: under the proxy lock, route to the candidate's addresses, verify through the proxy as a
visitor would, record it live. retire: drain and retire the old release through the runtime, prune
images.

Rules: any failure before the switch removes the candidate and a new image and leaves the live
release as it was; a failed verification switches back. A stop is honoured only before the
switch (Aborted); from the switch on, the deploy finishes whatever happens. A Deploy returns the
job's final state and error and changes no job state itself: the worker (worker.py) does that.
Each step is timed and recorded as a job event `self.step(job, NAME)`, stored with its short
name STEPS[NAME], which /metrics, the dashboard's charts and the push output go by. Imports
hookdeploy.core and the step modules it orders (builders, certs, containers, ordering, pipeline,
proxy, registry, release, runtime, traffic); the engine's objects it handles through runtime.py
and pipeline.py, never through a docker call of its own; the rest it does to Docker and nginx (the
image store, the builder, the switches, verification, the access log) and its clock go through Seams,
which a test replaces with an in-memory engine. maintenance, recovery and the worker
import it (its step names, its fault hook, job_name); it imports none of them.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
import time
from typing import Callable, Iterator

import docker

from hookdeploy.core import previews
from hookdeploy.core.config import Config
from hookdeploy.core.errors import Aborted, HookdeployError, StepFailed
from hookdeploy.core.models import Job, JobKind, JobState, release_tag
from hookdeploy.core.store import Store
from hookdeploy.engine import (builders, certs, containers, gitops, ordering, pipeline, proxy, registry, release,
                               runtime, signatures, traffic)

# The worker's lines, whichever of its modules writes them.
log = logging.getLogger("hookdeploy.engine.worker")

# Testing only: SIGKILL the worker right after the named step; "term:STEP" sends SIGTERM instead,
# as systemd does on a restart, at a moment a test could not hit by timing alone.
FAULT_ENV = "HOOKDEPLOY_FAULT"
# A step's name as said in the job log -> its short name in the store (events.step), /metrics' `step`
# label. Also "live" (the release went live) and "build" for the build's announcement.
STEPS = {
    "checked order": "order", "pulled image": "pull", "pushed image": "push", "checked out": "checkout",
    "built image": "build", "certificates": "certificates", "proxy ready": "proxy", "started candidate": "candidate",
    "health check": "health", "switched proxy": "switch", "verified through proxy": "verify", "canary": "canary",
    "guard": "watch", "drained and retired old container": "drain", "pruned images": "prune",
    "release command": "release", "checked signature": "signature",
}
WATCH_READ_SECONDS = 0.5  # how often the guard reads the proxy's log

Ended = tuple[JobState, str | None]  # a job's final state and error


class Seams:
    """What a Deploy does to Docker and nginx beside its runtime (the image store, the builder, the
    proxy's switches, the verification through it, its access log) and the clock its waits go by:
    the real ones. A test hands Deploy an in-memory one (tests/memory_engine.py) to judge the
    deploy's decisions without Docker."""

    def __init__(self, config: Config, engine: Callable[[], docker.DockerClient]):
        self.config, self._engine = config, engine

    def image_exists(self, name: str) -> bool:
        return containers.image_exists(self._engine(), name)

    def builder(self, app) -> builders.Builder:
        return builders.chosen(self.config, self._engine(), app)

    def ensure_proxy(self):
        return pipeline.ensure_proxy(self._engine(), self.config)

    def pretest(self, proxy_container, path, text: str) -> proxy.Pretest:
        return proxy.Pretest(proxy_container, path, text)

    def switch_tested(self, proxy_container, staged, path, text: str, tested_as: str) -> str | None:
        return proxy.switch_tested(proxy_container, staged, path, text, tested_as)

    def switch(self, proxy_container, path, text: str) -> str | None:
        return proxy.switch(proxy_container, path, text)

    def switch_back(self, proxy_container, path, previous: str | None) -> None:
        proxy.switch_back(proxy_container, path, previous)

    def verify(self, app, sha: str):
        return pipeline.verify_through_proxy(self.config, app, sha)

    def reader(self, app_name: str):
        return traffic.LogReader(traffic.log_path(self.config, app_name))

    def discard_image(self, store: Store, app, image: str | None) -> None:
        pipeline.discard_image(self._engine(), store, app, image)

    def prune(self, store: Store, app) -> list[str] | None:
        return pipeline.prune(self._engine(), store, app)

    def clock(self) -> float:
        return time.monotonic()

    def wait(self, stop: threading.Event, seconds: float) -> bool:
        """Wait `seconds` or until `stop`; True if stopped."""
        return stop.wait(seconds)


class Deploy:
    """The deploy sequence of one claimed job; `run()` returns its final state and error."""

    def __init__(self, config: Config, store: Store, engine: Callable[[], docker.DockerClient], job: Job,
                 stop: threading.Event, runtimes: Callable[..., runtime.Runtime] = runtime.runtime_for,
                 seams: Seams | None = None):
        self.config = config
        self.store = store
        self._engine = engine  # the worker's client, asked for afresh at each use as before the split
        self.job = job
        self.stop = stop
        self.app = None
        self.image: str | None = None
        self._runtimes = runtimes  # (config, app, engine) -> the app's Runtime; a test may hand in its own
        self.seams = seams or Seams(config, engine)  # Docker and nginx besides the runtime; a test's are in memory
        self.runtime: runtime.Runtime | None = None  # where the app's releases run, chosen once in prepare
        self.candidate: runtime.Candidate | None = None  # the started candidate: its release name, its addresses
        self.addresses: list[str] = []  # where the candidate answers on the instance network
        self.digest: str | None = job.digest
        self.proxy_container = None
        self.old = None  # the release live before this one
        self.release = None  # this job's, once live
        self.stopped_by: int | None = None  # the stop job of the app, stopped when this release went live
        self.reader: traffic.LogReader | None = None  # the proxy's answers for the app, from the switch on
        self.previous_routes: str | None = None  # the app's proxy config before the canary or the switch
        self.switched_at = 0.0
        self.fetched = False  # the app's mirror was fetched for this job already (the order check)
        self.pushed = False  # the release is in [registry] already: a build host pushed it
        self.pretest: proxy.Pretest | None = None  # the routes file's nginx -t, run beside the health check

    @property
    def client(self) -> docker.DockerClient:
        return self._engine()

    def run(self) -> Ended:
        """The pipeline in order; returns the final state and error."""
        try:
            self.app = previews.for_job(self.config.app(self.job.app), self.job.ref)  # a preview follows its branch
        except HookdeployError as error:
            return JobState.FAILED, str(error)
        failed = self.prepare()
        if failed is not None:
            return failed
        # From here on the candidate may be live: no abort, finish the switch whatever happens.
        failed = self.switch_and_verify() or self.watch()
        if failed is not None:
            return failed
        self.retire()
        return JobState.SUCCEEDED, None

    # -- the three phases ---------------------------------------------------------------------

    def prepare(self) -> Ended | None:
        """Image, proxy, a healthy candidate; None when all is ready for the switch, else the job's end.

        Aborted (the candidate and a new image removed) once `stop` is set between two steps."""
        job, app, stop = self.job, self.app, self.stop
        try:
            client = self.client
            self.runtime = self._runtimes(self.config, app, self._engine)
            self.runtime.check()
            superseded = self._order(client)
            if superseded is not None:
                return JobState.SUPERSEDED, superseded
            if signatures.required(app):
                self._check_signature()
            self.image = self._image(client)
            check_stop(stop)
            with self.step(job, "proxy ready"):
                self.proxy_container = self.seams.ensure_proxy()
            check_stop(stop)
            if app.tls_mode != "off":
                self._certificates()
            if app.release_command:
                self._release_phase()
                check_stop(stop)
            self._start_candidate()
            fault("health")
            check_stop(stop)
        except Aborted:  # before HookdeployError, of which it is one: a stop is no failure
            self._discard()
            raise
        except HookdeployError as error:
            self._discard()
            return JobState.FAILED, str(error)
        finally:
            pipeline.clean_build_dir(self.config, job)
        return None

    def switch_and_verify(self) -> Ended | None:
        """Under the proxy lock: a canary first (when the app asks for one and a release is live), then
        route to the candidate, verify through the proxy, record it live.

        None once it is live; else the job's end (a failed canary or verification switches back first)."""
        job, app = self.job, self.app
        path = proxy.app_file(self.config, app.name)
        self.old = old = self.store.live_release(app.name)
        with proxy.locked(self.config):
            self.reader = self.seams.reader(app.name)
            if app.guard.canary_percent > 0 and old is not None and job.kind is not JobKind.ROLLBACK \
                    and self.store.stopped(app.name) is None:  # a stopped release takes no share
                failed = self._canary(path, old)
                if failed is not None:
                    return failed
            try:
                with self.step(job, "switched proxy"):
                    previous = self.seams.switch_tested(
                        self.proxy_container, self.pretest and self.pretest.result(), path,
                        self._render(self.addresses, job.sha), self._render(proxy.placeholders(len(self.addresses)), job.sha))
            except StepFailed as error:
                self._discard()
                return JobState.FAILED, str(error)
            self.switched_at = self.seams.clock()
            self.previous_routes = previous if self.previous_routes is None else self.previous_routes
            fault("switch")
            with self.step(job, "verified through proxy") as note:
                took, last = self.seams.verify(app, job.sha)
                note(f"verified through the proxy in {took:.1f} s" if last.ok else
                     f"verification through the proxy failed: {last.detail}")
            if not last.ok:
                self._switch_back(path)
                self._discard()
                back = f"; {release_tag(old.sha)} is live again" if old else "; no release is live"
                return JobState.ROLLED_BACK, f"verification through the proxy failed: {last.detail}{back}"
            stopped = self.store.stopped(app.name) is not None  # record_live ends the stop
            self.stopped_by = self.store.stopped_by(app.name)  # the guard's switch back makes it again
            self.release = self.store.record_live(app.name, job.sha, self.image, self.candidate.name, job.id)
        was = f" (was {release_tag(old.sha)}{', stopped: the app runs again' if stopped else ''})" if old else ""
        self.store.log(job.id, f"live: {app.name} serves {release_tag(job.sha)}{was}", kind="step", step="live")
        return None

    def _canary(self, path, old) -> Ended | None:
        """`canary_percent` of the requests to the candidate for `canary_seconds`, judged by the guard's
        rule; on failure the live release gets them all back and the candidate never had more."""
        job, guard = self.job, self.app.guard
        live_addresses = proxy.routed_addresses(path)
        split = proxy.Canary(self.addresses, job.sha, guard.canary_percent)
        try:
            self.previous_routes = self.seams.switch(self.proxy_container, path,
                                                self._render(live_addresses, old.sha, split))
        except StepFailed as error:
            self._discard()
            return JobState.FAILED, str(error)
        with self.step(job, "canary") as note:
            self.store.log(job.id, f"canary: {guard.canary_percent:g} % of requests go to {release_tag(job.sha)} for "
                                   f"{guard.canary_seconds:g} s", kind="step", step="canary")
            tally = self._watch(guard.canary_seconds)
            failed = guard.fails(tally.requests, tally.failed)
            note(f"canary: {tally.describe()} in {guard.canary_seconds:g} s at {guard.canary_percent:g} %"
                 + ("" if tally.requests >= guard.min_requests else
                    f" (fewer than min_requests = {guard.min_requests}: nothing decided)"))
        if not failed and not self.stop.is_set():
            return None
        self._switch_back(path)
        self._retire_candidate()
        if not failed:  # stopped before the switch: the retry runs the canary again
            raise Aborted()
        return JobState.ROLLED_BACK, (f"guard: canary: {tally.describe()} in {guard.canary_seconds:g} s at "
                                      f"{guard.canary_percent:g} %; {release_tag(job.sha)} never got all the traffic, "
                                      f"{release_tag(old.sha)} serves on")

    def watch(self) -> Ended | None:
        """The guard after the switch: `watch_seconds` of what the proxy answered for the new release,
        the old one kept running; too many failures switch back to it (the job ends rolled_back).
        None when the new release stays. A stop ends the watch early, the new release kept. A
        rollback job is not watched (nor given a canary): it goes back to a release that served."""
        job, app, old, guard = self.job, self.app, self.old, self.app.guard
        if guard.watch_seconds <= 0 or job.kind is JobKind.ROLLBACK:  # a rollback goes back to a known release
            return None
        if old is None:
            self.store.log(job.id, "guard: no earlier release to switch back to; not watching", kind="step",
                           step="watch")
            return None
        with self.step(job, "guard") as note:
            left = guard.watch_seconds - (self.seams.clock() - self.switched_at)
            tally = self._watch(max(0.0, left), lambda: fault("watch"))
            watched = self.seams.clock() - self.switched_at
            failed = guard.fails(tally.requests, tally.failed)
            cut = " (cut short: the worker is stopping)" if self.stop.is_set() else ""
            note(f"guard: {tally.describe()} in {watched:.0f} s after the switch"
                 + (f"; switching back to {release_tag(old.sha)}" if failed else
                    f"; {release_tag(job.sha)} stays live{cut}" if tally.requests >= guard.min_requests else
                    f" (fewer than min_requests = {guard.min_requests}: nothing decided); "
                    f"{release_tag(job.sha)} stays live{cut}"))
        if not failed:
            return None
        path = proxy.app_file(self.config, app.name)
        with proxy.locked(self.config):
            self._switch_back(path)
            # A stopped app is stopped again: the routes restored are its maintenance page, and its
            # release's containers were never started.
            self.store.undo_live(app.name, self.release.id, old.id, stopped_by=self.stopped_by)
        self._retire_candidate()
        again = ", stopped (its maintenance page answers)" if self.stopped_by is not None else ""
        return JobState.ROLLED_BACK, (f"guard: {tally.describe()} in {watched:.0f} s after the switch; "
                                      f"switched back to {release_tag(old.sha)}{again}")

    def _watch(self, seconds: float, tick: Callable[[], None] = lambda: None) -> traffic.Tally:
        """Count, for `seconds` (or until a stop), the proxy's answers from the job's release."""
        release, tally = release_tag(self.job.sha), traffic.Tally()
        deadline = self.seams.clock() + seconds
        while True:
            for hit in self.reader.read():
                if hit.release == release:
                    tally.add(hit)
            left = deadline - self.seams.clock()
            if left <= 0 or self.stop.is_set():
                return tally
            tick()
            self.seams.wait(self.stop, min(WATCH_READ_SECONDS, left))

    def _retire_candidate(self) -> None:
        """Take out a candidate that had traffic: after `drain_seconds` (the requests it holds finish),
        its containers or service are retired, and its image removed unless a release uses it."""
        self.seams.wait(self.stop, self.app.drain_seconds)
        with contextlib.suppress(Exception):
            self.runtime.retire(self.candidate.name)
            self.seams.discard_image(self.store, self.app, self.image)

    def _render(self, addresses, sha: str, canary: proxy.Canary | None = None) -> str:
        return certs.render_routes(self.config, self.app, addresses, sha, canary)

    def _switch_back(self, path) -> None:
        """Back to the routes from before the canary or the switch. Routes to the old release are rendered
        again with the config in force: the file kept was written under the config of its own deploy, which
        nginx may refuse now (an app without hostnames was the default server, and once it has some the
        proxy's own default file is). A maintenance page, no file, or an old release on another port is
        put back as it was."""
        previous = self.previous_routes
        servers = proxy.routed_in(previous)
        if servers and self.old is not None and all(server.endswith(f":{self.app.port}") for server in servers):
            previous = self._render([server.rpartition(":")[0] for server in servers], self.old.sha)
        self.seams.switch_back(self.proxy_container, path, previous)

    def retire(self) -> None:
        """Drain and retire the container or service the new release replaced, then prune old images."""
        job, app, old = self.job, self.app, self.old
        if old is not None and old.container and old.container != self.candidate.name:
            with self.step(job, "drained and retired old container") as note:
                self.seams.wait(self.stop, app.drain_seconds)
                fault("drain")
                what = self.runtime.retire(old.container)
                note(f"retired {what or old.container} after {app.drain_seconds:g} s drain")
        with self.step(job, "pruned images") as note:
            pruned = self.seams.prune(self.store, app)
            note("pruned none now: a build with the classic builder is running, and may be using their layers; "
                 "the app's next job prunes" if pruned is None else
                 f"pruned {', '.join(pruned)}" if pruned else "no images to prune")

    # -- parts ---------------------------------------------------------------------------------

    def _order(self, client) -> str | None:
        """For a job a push asked for (and its retries): why its commit, or image, must not go live any
        more (not the head of the branch or tag, or older than the live release), else None."""
        job, app = self.job, self.app
        trigger = ordering.origin(self.store, job)
        if trigger not in ordering.FOLLOWS_THE_BRANCH:
            return None
        with self.step(job, "checked order") as note:
            if app.builds:
                repo = pipeline.source(self.config, app)
                self.fetched = True
                why = ordering.stale_commit(self.store, app, job, repo, trigger)
                current = f"{release_tag(job.sha)} is the head of {app.branch}"
            else:
                tag = job.ref or app.webhook.tag
                digest = registry.resolve_tag(client, self.config, app, tag)
                why = ordering.stale_image(self.store, app, job, tag, digest)
                current = f"{digest[:19]} is the newest push of {app.image}:{tag}"
            note(f"checked: {why or current}")
        return why

    def _check_signature(self) -> None:
        """The job's commit signed by one of the app's keys (signatures.py), before anything is built or reused:
        else NotSigned ends the job. A rollback is checked too: a key taken out of the file stops its commits."""
        job, app = self.job, self.app
        with self.step(job, "checked signature") as note:
            repo = pipeline.source(self.config, app, fetch=False)
            if not self.fetched and not gitops.has_commit(repo, job.sha):
                repo, self.fetched = pipeline.source(self.config, app), True
            signer = signatures.verify(self.config, app, repo.git_dir, job.sha)
            self.store.set_signer(job.id, signer.fingerprint, signer.principal)
            note(f"checked signature: {release_tag(job.sha)} signed by {signer.describe()}")

    def _image(self, client) -> str:
        """The job's image: reused when the engine has it (rollback, replay, retry), else built from
        git (or pulled by digest, for an image app); then pushed to [registry] when the app says so."""
        job, app = self.job, self.app
        name = containers.image_name(self.config.server.name, app.name, job.sha)
        if self.seams.image_exists(name):
            self.store.set_image(job.id, name)
            self.store.log(job.id, f"using image {name} (already {'built' if app.builds else 'pulled'})",
                           kind="step", step="build")
            if not app.builds and job.digest is None:
                self._record_digest()
        elif not app.builds:
            name = self._pull(client, name)
        else:
            name = self._build(client, name)
        if app.pushes and not self.pushed:
            self.image = name  # removed by _discard if the push fails
            self._push(client, name)
        return name

    def _pull(self, client, name: str) -> str:
        """An image app's release: its digest pulled from the registry and named like a built one."""
        job, app = self.job, self.app
        digest = self._record_digest()
        with self.step(job, "pulled image") as note:
            self.store.log(job.id, f"pulling {app.image}@{digest}", kind="step", step="pull")
            registry.pull(client, self.config, app, digest, name, lambda lines: self.store.log_many(job.id, lines),
                          self.stop)
            self.store.set_image(job.id, name)
            revision = registry.revision(client, name)
            if revision:
                self.store.log(job.id, f"built from commit {revision} (org.opencontainers.image.revision)")
            note(f"pulled {app.image}@{digest[:19]} as {name}")
        fault("pull")
        return name

    def _record_digest(self) -> str:
        """The image app job's digest: its own, or (rollback, retry) the one recorded for its SHA."""
        job = self.job
        digest = job.digest or self.store.digest_of(job.app, job.sha)
        if digest is None:
            raise StepFailed(f"no image digest is recorded for {release_tag(job.sha)}; deploy it with --image")
        if job.digest is None:
            self.store.set_digest(job.id, digest)
        self.digest = digest
        return digest

    def _push(self, client, name: str) -> None:
        """Push the release to [registry] as URL/N/APP:SHA12 and record its digest; the live one keeps serving on failure."""
        job, app = self.job, self.app
        check_stop(self.stop)
        with self.step(job, "pushed image") as note:
            self.store.log(job.id, f"pushing {registry.remote_repository(self.config, app)}:{release_tag(job.sha)}",
                           kind="step", step="push")
            remote, digest = registry.push(client, self.config, app, name, job.sha,
                                           lambda lines: self.store.log_many(job.id, lines), self.stop)
            registry.forget(client, self.config, app, job.sha)
            self.store.set_digest(job.id, digest)
            self.digest = digest
            note(f"pushed {remote} ({digest})")
        fault("push")

    def _build(self, client, name: str) -> str:
        """Check out the job's commit and build it."""
        job, app = self.job, self.app
        if job.kind is JobKind.ROLLBACK:
            self.store.log(job.id, f"image {name} was pruned; rebuilding it from git", kind="step", step="build")
        # None that can build (no BuildKit client, a build host that does not answer): fail before the checkout.
        builder = self.seams.builder(app)
        with self.step(job, "checked out") as note:
            context = pipeline.checkout(self.config, app, job, fetch=not self.fetched)
            note(f"checked out {release_tag(job.sha)}")
        fault("checkout")
        check_stop(self.stop)
        with self.step(job, "built image") as note:
            self.store.log(job.id, builder.announce(name), kind="step", step="build")
            built = pipeline.build(builder, self.config, app, job, context, name,
                                   lambda lines: self.store.log_many(job.id, lines), self.stop,
                                   lambda text: self.store.log(job.id, text, kind="step"))
            if not builder.elsewhere:
                self.store.set_image(job.id, name)
            note(f"built {name} (image {built})" if not builder.elsewhere else
                 f"built with {builder.describe()}, pushed {registry.remote_repository(self.config, app)}:"
                 f"{release_tag(job.sha)} ({built})")
        fault("build")
        if builder.elsewhere:
            self._fetch_built(client, name, built)
        return name

    def _fetch_built(self, client, name: str, digest: str) -> None:
        """A release a build host pushed: its digest recorded and pulled onto this engine as `name`."""
        job, app = self.job, self.app
        self.store.set_digest(job.id, digest)
        self.digest, self.pushed = digest, True
        check_stop(self.stop)
        source = registry.remote_repository(self.config, app)
        with self.step(job, "pulled image") as note:
            self.store.log(job.id, f"pulling {source}@{digest}", kind="step", step="pull")
            self.image = name  # removed by _discard if the job fails from here on
            registry.pull(client, self.config, app, digest, name, lambda lines: self.store.log_many(job.id, lines),
                          self.stop, source=source)
            self.store.set_image(job.id, name)
            note(f"pulled {source}@{digest[:19]} as {name}")
        fault("pull")

    def _certificates(self) -> None:
        """HTTPS before the switch: the user's certificate copied for the proxy (one it cannot use fails
        the job), or one ordered for each hostname that has none. An order that fails does not: the
        name is served over HTTP until the worker gets one (the job log says why, and when it tries)."""
        job, app, config = self.job, self.app, self.config
        with self.step(job, "certificates") as note:
            if app.tls_mode == "files":
                installed = certs.install_files(config, app)
                note(f"certificate from {app.tls.cert_file} installed: {installed.describe()}" if installed else
                     f"certificate from {app.tls.cert_file} unchanged")
                return
            outcome = certs.ensure(config, app, lambda text: self.store.log(job.id, text), renewals=False,
                                   backoff=False, check_stop=lambda: check_stop(self.stop))
            for host, reason in outcome.failed.items():
                self.store.log(job.id, f"{reason}; {host} is served over HTTP until the worker gets one "
                                       f"(next try {certs.retry_text(config, host)})", kind="step", step="certificates")
            have = [host for host in app.hostnames if certs.pem_path(config, app, host).exists()]
            note(f"certificates: {len(have)} of {len(app.hostnames)} hostnames have one"
                 + (f" ({len(outcome.obtained)} new)" if outcome.obtained else ""))

    def _release_phase(self) -> None:
        """The app's release command in a container of the new image, unless it succeeded for this
        commit already (a rollback to it, a retry, a replay); its output goes to the job log."""
        job, app = self.job, self.app
        ran = self.store.release_command_ran(app.name, job.sha)
        if ran is not None:
            self.store.log(job.id, f"release command: ran for {release_tag(job.sha)} already (job {ran}); "
                                   "not run again",
                           kind="step", step="release")
            return

        def on_lines(lines: list[str]) -> None:
            self.store.log_many(job.id, lines)

        with self.step(job, "release command") as note:
            self.store.log(job.id, f"release command: running {release.describe(app)} in {self.image}", kind="step",
                           step="release")
            started = time.monotonic()
            self.runtime.run_release_command(job, self.image, self._digest, on_lines, self.stop)
            self.store.record_release_command(app.name, job.sha, job.id)
            note(f"release command exited 0 in {time.monotonic() - started:.1f} s")
        fault("release")

    def _digest(self) -> str:
        """The release's digest, recorded first if the job has none yet (a runtime that pins by digest asks)."""
        return self.digest if self.digest is not None else self._record_digest()

    def _start_candidate(self) -> None:
        """The candidate where the app's releases run (runtime.py), then every replica of it health-checked."""
        job = self.job
        if self.app.guard.canary_percent <= 0:  # a canary's switch changes the file first
            self.pretest = self.seams.pretest(self.proxy_container, proxy.app_file(self.config, self.app.name),
                                              self._render(proxy.placeholders(self.app.replicas), job.sha))
        with self.step(job, "started candidate") as note:
            self.candidate = self.runtime.start_candidate(job, self.image, self._digest, self.stop)
            note(self.candidate.note)
        fault("candidate")
        check_stop(self.stop)
        with self.step(job, "health check") as note:
            note(self.runtime.check_health(self.candidate, self.proxy_container, self.stop,
                                           lambda text: self.store.log(job.id, text)))
            self.addresses = self.candidate.addresses

    def _discard(self) -> None:
        """Remove what a failed job made; the live release is not touched."""
        with contextlib.suppress(Exception):
            if self.candidate is not None:
                self.runtime.discard(self.candidate)
            self.seams.discard_image(self.store, self.app, self.image)

    @contextlib.contextmanager
    def step(self, job: Job, name: str) -> Iterator:
        """Time a step and record it as a job event; the body may replace the message via note()."""
        message = [name]
        started = time.monotonic()
        yield lambda text: message.__setitem__(0, text)
        took = time.monotonic() - started
        self.store.log(job.id, message[0], kind="step", duration=round(took, 3), step=STEPS.get(name, name))
        log.info("%s: %s (%.2f s)", job_name(job), message[0], took)


def check_stop(stop: threading.Event) -> None:
    """Aborted if the worker was told to stop."""
    if stop.is_set():
        raise Aborted()


def fault(step: str) -> None:
    """Kill this process after `step` if HOOKDEPLOY_FAULT asks for it (tests only)."""
    wanted = os.environ.get(FAULT_ENV)
    if wanted == step:
        os.kill(os.getpid(), signal.SIGKILL)
    elif wanted == f"term:{step}":
        os.kill(os.getpid(), signal.SIGTERM)


def job_name(job: Job) -> str:
    """How log lines name a job: `APP job ID @ SHA7`."""
    return f"{job.app} job {job.id} @ {job.sha[:7]}"
