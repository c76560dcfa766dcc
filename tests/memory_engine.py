"""An in-memory engine for Deploy (engine/deploy.py): a Runtime and the Seams, with no Docker and no nginx.

What a release does is read from its checked-out files, the test site's (docker_helpers.site_files and
api_site_files), so one commit means the same here as on the real engine: a Dockerfile line ending
`exit N` fails the build; `site/health` is what /health answers (none: 404); a default.conf that
answers 503 fails the verification through the proxy; one whose /api returns N makes the proxy's log
show that status for half the requests. The proxy's routes files are the real ones (certs.render_routes
writes them, proxy.routed reads them); only nginx is missing: a switch writes, a switch back restores.
The clock is virtual: a wait advances it at once, so a guard's 6 s watch takes no time.
"""

from __future__ import annotations

import itertools
import re
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from hookdeploy.core.errors import DockerUnavailable, StepFailed
from hookdeploy.core.models import ReleaseState, release_tag
from hookdeploy.engine import health, proxy, runtime, traffic

HITS_PER_READ = 10  # requests the proxy's log shows per read for each routed release, half of them to /api


@dataclass(frozen=True)
class Behaviour:
    """What a release built from a checkout does."""

    build_exit: int | None  # the build fails with this exit code
    health: str | None  # /health's body; None: 404
    verify_status: int  # what the app's hostname answers through the proxy
    api_status: int  # what /api answers

    @classmethod
    def read(cls, context: Path) -> "Behaviour":
        dockerfile = (context / "Dockerfile").read_text()
        failing = re.search(r"^RUN .*exit (\d+)\s*$", dockerfile, re.M)
        health_file = context / "site" / "health"
        conf = (context / "default.conf").read_text() if (context / "default.conf").exists() else ""
        api = re.search(r"location /api \{\s*return (\d+)", conf)
        return cls(int(failing[1]) if failing else None, health_file.read_text() if health_file.exists() else None,
                   503 if "return 503;" in conf else 200, int(api[1]) if api else 200)


@dataclass
class Running:
    """A candidate the memory runtime started."""

    sha: str
    behaviour: Behaviour
    address: str
    gone: bool = False


class NoEngine:
    """Stands where the Docker client would be: anything asked of it is a bug in the seam."""

    def __getattr__(self, name):
        raise DockerUnavailable(f"the in-memory engine has no Docker client (asked for {name})")


class MemoryBuilder:
    elsewhere = False
    intermediate_images = False

    def __init__(self, engine: "MemoryEngine"):
        self.engine = engine

    def describe(self) -> str:
        return "the in-memory builder"

    def announce(self, name: str) -> str:
        return f"building {name} in memory"

    def build(self, request, on_lines, stop) -> str:
        behaviour = Behaviour.read(request.context)
        if behaviour.build_exit is not None:
            raise StepFailed(f"build failed: exit code: {behaviour.build_exit}")
        self.engine.images[request.tag] = behaviour
        return f"sha256:{abs(hash(request.tag)):064x}"[:71]


class MemoryRuntime:
    """The Runtime Deploy uses (runtime.Runtime), its candidates kept in the engine."""

    def __init__(self, engine: "MemoryEngine", config, app):
        self.engine, self.config, self.app = engine, config, app

    def check(self) -> None:
        pass

    def run_release_command(self, job, image, digest, on_lines, stop) -> None:
        on_lines(["release command: nothing to do in memory"])

    def start_candidate(self, job, image, digest, stop) -> runtime.Candidate:
        address = f"10.99.0.{next(self.engine.addresses)}"
        name = f"{self.config.server.name}-{self.app.name}-{release_tag(job.sha)}-{job.id}"
        self.engine.running[name] = Running(job.sha, self.engine.images[image], address)
        return runtime.Candidate(name, f"started candidate {name} at {address}:{self.app.port}", name, [address])

    def check_health(self, candidate, proxy_container, stop, on_note) -> str:
        self.engine.on_health(stop)
        body, want = self.engine.running[candidate.name].behaviour.health, self.app.health
        if body is None:
            raise StepFailed(f"unhealthy after {want.deadline:.1f} s: GET {want.path} status 404, want 200")
        if want.contains and want.contains not in body:
            raise StepFailed(f"unhealthy after {want.deadline:.1f} s: GET {want.path} body lacks {want.contains!r}")
        return "health check passed in 0.0 s"

    def discard(self, candidate) -> None:
        self.engine.running[candidate.name].gone = True

    def retire(self, name: str) -> str | None:
        self.engine.running[name].gone = True
        return name


class MemoryReader:
    """The proxy's access log: at each read, HITS_PER_READ requests to each release routed (a canary's too)."""

    def __init__(self, engine: "MemoryEngine", path: Path):
        self.engine, self.path = engine, path

    def read(self) -> list[traffic.Hit]:
        text = proxy.read(self.path) or ""
        hits = []
        for release in self.engine.running.values():
            if not release.gone and f"{release.address}:" in text:
                for number in range(HITS_PER_READ):
                    status = release.behaviour.api_status if number % 2 else 200
                    hits.append(traffic.Hit(self.engine.now, status, release_tag(release.sha)))
        return hits


@dataclass
class MemoryEngine:
    """Deploy's runtime and seams in memory; `on_health` and `on_switch` run as those steps do (to stop the
    worker there, as HOOKDEPLOY_FAULT=term:STEP does on the real engine)."""

    config: object
    images: dict[str, Behaviour] = field(default_factory=dict)
    running: dict[str, Running] = field(default_factory=dict)
    addresses: itertools.count = field(default_factory=lambda: itertools.count(2))
    now: float = 1000.0
    on_health: Callable[[threading.Event], None] = lambda stop: None
    on_switch: Callable[[], None] = lambda: None

    def runtime(self, config, app, engine) -> MemoryRuntime:  # runtime.runtime_for's signature
        return MemoryRuntime(self, config, app)

    def live(self) -> list[str]:
        """The SHAs of the candidates still running."""
        return [release.sha for release in self.running.values() if not release.gone]

    # -- deploy.Seams

    def image_exists(self, name: str) -> bool:
        return name in self.images

    def builder(self, app) -> MemoryBuilder:
        return MemoryBuilder(self)

    def ensure_proxy(self):
        proxy.prepare(self.config)
        return "memory-proxy"

    def pretest(self, proxy_container, path, text):
        return Untested()

    def switch_tested(self, proxy_container, staged, path, text, tested_as):
        previous = self.switch(proxy_container, path, text)
        self.on_switch()
        return previous

    def switch(self, proxy_container, path, text):
        previous = proxy.read(path)
        proxy.write_atomically(path, text)
        return previous

    def switch_back(self, proxy_container, path, previous) -> None:
        proxy.restore(path, previous)

    def verify(self, app, sha: str):
        routed = set(proxy.routed_addresses(proxy.app_file(self.config, app.name)))
        answering = [release for release in self.running.values() if release.address in routed and not release.gone]
        if not answering:
            return 0.0, health.Probe(False, 502, "status 502, want 200")
        status = answering[0].behaviour.verify_status
        detail = f"status {status}, want 200"
        return 0.0, health.Probe(status == 200, status, detail, release_tag(answering[0].sha))

    def reader(self, app_name: str) -> MemoryReader:
        return MemoryReader(self, proxy.app_file(self.config, app_name))

    def discard_image(self, store, app, image) -> None:
        if image and all(release.image != image for release in store.releases(app.name)
                         if release.state is not ReleaseState.PRUNED):
            self.images.pop(image, None)

    def prune(self, store, app) -> list[str]:
        return []

    def clock(self) -> float:
        return self.now

    def wait(self, stop: threading.Event, seconds: float) -> bool:
        self.now += seconds
        return stop.is_set()


class Untested:
    """A pretest that could not run: the switch tests as it switches."""

    def result(self):
        return None
