"""Where a release runs: containers on this engine, or a Swarm service, behind one interface.

`runtime_for(config, app, client)` picks the app's `Runtime` once (target "swarm": `SwarmService`,
else `Containers`); deploy, recovery, the worker and the operating commands call its methods and
never ask which it is. A release is known by its name (`N-APP-SHA12-JOB`, the release's
`container` in the store): the first container's name (the others are `NAME-2`, ... of the same
job), or the service's. The methods, whose names callers rely on:

- `check()`: StepFailed (why) if this engine cannot run the app's releases now.
- `run_release_command(job, image, digest, on_lines, stop)`: the app's release command, where its
  releases run.
- `start_candidate(job, image, digest, stop) -> Candidate`: the job's release started (a failure or a
  stop removes what it started); `check_health(candidate, proxy, stop, on_note) -> note` waits
  until every replica passed the health check and fills `candidate.addresses` (a deploy's candidate
  and a started release alike); `discard(candidate)` removes a candidate at once.
- `retire(name) -> what`: stop a release gracefully and remove it (None if it was gone).
- `addresses(name)`: its serving addresses now, None if it is gone; `repair(name)`: the same, its
  stopped containers started again first (the worker's repair); `probe(proxy, address)`: one
  health check of one address. `followed`: True when the engine moves replicas by itself (Swarm),
  so the worker follows the live release's addresses.
- `leftovers()`: every release object of the app (not the proxy, a task run or a one-off command).
- `logs(name, tail, since, follow, until)`: (label, line) of every replica or task of the release,
  labelled as applogs.py says (`replica N`, `task SLOT@NODE`); StepFailed if the release is gone.
- `stop(name)`: the release's replicas stopped (kept); `start(name) -> Candidate`: started again, to
  be health-checked by `check_health` before it is routed; `remove_all(app)`: every container and
  service carrying the app's labels, whatever their role (never a volume); returns their names.

Where it matters which engine objects exist, both look at both (a release made before the app's
target changed is still retired and removed): retire, remove_all. Imports hookdeploy.core and the
engine's containers, swarm, release, runspec, health, registry and applogs modules only; no docker object
crosses into Deploy's decisions except the opaque `Candidate.handle` and the proxy container handed
to health checks.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Iterator, Protocol

import docker
import docker.errors

from hookdeploy.core.config import AppConfig, Config
from hookdeploy.core.errors import Aborted, StepFailed
from hookdeploy.core.models import Job, release_tag
from hookdeploy.engine import applogs, containers, health, registry, release, runspec, swarm

Lines = Callable[[list[str]], None]
SWARM_TASKS_GONE_SECONDS = 30.0  # how long a removed service's task containers may take to go
REMOVE_GRACE_SECONDS = 10  # a release container's graceful stop when its app is removed (its route is gone)
STOP_SECONDS = 10  # grace period of a stop (as `docker stop`; a service's is its stop_grace_period)
SETTLE_SECONDS = 60.0  # how long a stop waits for a service's tasks to go


@dataclass
class Candidate:
    """A started candidate: its release name, its addresses (once healthy), what was started."""

    name: str
    note: str  # for the job log: what was started, where
    handle: object = None  # the runtime's own: the containers, or the service
    addresses: list[str] = field(default_factory=list)
    earlier: frozenset[str] = frozenset()  # a started service's tasks from before its start: not checked


@dataclass(frozen=True)
class Leftover:
    """A release object of the app found on the engine; `remove()` takes it away at once."""

    what: str  # "container" or "service"
    name: str
    job: str | None  # its job's id, from its labels
    remove: Callable[[], None]


class Runtime(Protocol):
    """Where an app's releases run (see the module's docstring for each method)."""

    followed: bool

    def check(self) -> None: ...
    def run_release_command(self, job: Job, image: str, digest: Callable[[], str], on_lines: Lines,
                            stop: threading.Event) -> None: ...
    def start_candidate(self, job: Job, image: str, digest: Callable[[], str], stop: threading.Event) -> Candidate: ...
    def check_health(self, candidate: Candidate, proxy, stop: threading.Event,
                     on_note: Callable[[str], None]) -> str: ...
    def discard(self, candidate: Candidate) -> None: ...
    def retire(self, name: str) -> str | None: ...
    def addresses(self, name: str) -> list[str] | None: ...
    def repair(self, name: str) -> list[str] | None: ...
    def probe(self, proxy, address: str) -> health.Probe: ...
    def leftovers(self) -> list[Leftover]: ...
    def logs(self, name: str, tail: int | None = None, since: float | None = None, follow: bool = False,
             until: Callable[[], bool] = lambda: False) -> Iterator[tuple[str, str]]: ...
    def stop(self, name: str) -> None: ...
    def start(self, name: str) -> Candidate: ...
    def remove_all(self, app: str) -> list[str]: ...


def runtime_for(config: Config, app: AppConfig, client) -> Runtime:
    """The app's runtime; `client` is a docker client or a function returning one (asked at each use)."""
    engine = client if callable(client) else (lambda: client)
    return (SwarmService if followed(app) else Containers)(config, app, engine)


def followed(app: AppConfig) -> bool:
    """True if the app's replicas are moved by the engine itself (a Swarm service), so the worker follows them."""
    return app.on_swarm


def ensure_network(client: docker.DockerClient, config: Config):
    """The instance network, for every app's runtime: an attachable overlay once any app runs on Swarm,
    else a bridge (callers hold the setup lock)."""
    if any(followed(app) for app in config.apps.values()):
        return swarm.ensure_overlay(client, config.server.name)
    return containers.ensure_network(client, config.server.name)


def service_image(config: Config, app: AppConfig, sha: str, digest: str) -> str:
    """The image a swarm release's tasks run, pinned by digest: URL/N/APP:SHA12@DIGEST (IMAGE@DIGEST
    for an image app): every node runs exactly the bytes that were checked, whatever a tag says later."""
    if app.builds:
        return f"{registry.remote_repository(config, app)}:{release_tag(sha)}@{digest}"
    return f"{app.image}@{digest}"


class Containers:
    """An app's releases as containers on this engine, `replicas` of them on the instance network."""

    followed = False

    def __init__(self, config: Config, app: AppConfig, engine: Callable[[], docker.DockerClient]):
        self.config, self.app, self._engine = config, app, engine
        self.network = config.server.name

    @property
    def client(self) -> docker.DockerClient:
        return self._engine()

    def check(self) -> None:
        """The local engine runs containers: nothing to check."""

    def run_release_command(self, job, image, digest, on_lines, stop) -> None:
        release.run_command(self.client, self.config, self.app, job, image, on_lines, stop)

    def start_candidate(self, job, image, digest, stop) -> Candidate:
        """`replicas` containers `N-APP-SHA12-JOB`, `-2`, ...; any started are removed if one fails or a stop comes."""
        started, addresses = [], []
        try:
            for replica in range(1, self.app.replicas + 1):
                container, ip = start_container(self.client, self.config, self.app, job, image, replica)
                started.append(container)
                addresses.append(ip)
                if stop.is_set():
                    raise Aborted()
        except BaseException:
            for container in started:
                containers.remove(container)
            raise
        first = started[0].name
        where = ", ".join(f"{ip}:{self.app.port}" for ip in addresses)
        note = (f"started candidate {first} at {where}" if len(started) == 1 else
                f"started candidate {first} and {len(started) - 1} more at {where}")
        return Candidate(first, note, started, addresses)

    def check_health(self, candidate, proxy, stop, on_note) -> str:
        started = time.monotonic()
        for container, ip in zip(candidate.handle, candidate.addresses):
            check_health(container, ip, self.app, stop)
        took = time.monotonic() - started
        return (f"health check passed in {took:.1f} s" if len(candidate.handle) == 1 else
                f"health check passed in {took:.1f} s: {len(candidate.handle)} containers")

    def discard(self, candidate) -> None:
        for container in candidate.handle:
            containers.remove(container)

    def retire(self, name: str) -> str | None:
        return retire_release(self.client, name)

    def addresses(self, name: str) -> list[str] | None:
        members = self._members(name)
        if members is None:
            return None
        return [containers.address(container, self.network) for container in members
                if container.status == "running"]

    def repair(self, name: str) -> list[str] | None:
        members = self._members(name)
        if members is None:
            return None
        for container in members:
            if container.status != "running":
                container.start()
        return [containers.address(container, self.network) for container in members]

    def probe(self, proxy, address: str) -> health.Probe:
        return health.probe(address, self.app.port, self.app.health)

    def leftovers(self) -> list[Leftover]:
        found = []
        for container in containers.find_containers(self.client, self.config.server.name, app=self.app.name):
            if (container.labels.get(containers.ROLE) in ("proxy", "task", "run")
                    or swarm.SERVICE_LABEL in container.labels):
                continue  # the proxy, a task run or one-off command (the scheduler's to remove), or a task of a service
            found.append(Leftover("container", container.name, container.labels.get(containers.JOB),
                                  lambda container=container: containers.remove(container)))
        return found

    def logs(self, name, tail=None, since=None, follow=False, until=lambda: False) -> Iterator[tuple[str, str]]:
        members = self._members(name)
        if members is None:
            raise StepFailed(f"release {name} is gone from the engine")
        return applogs.container_lines(members, tail, since, follow, until)

    def stop(self, name: str) -> None:
        for container in self._members(name) or []:
            try:
                container.stop(timeout=STOP_SECONDS)
            except docker.errors.NotFound:
                pass

    def start(self, name: str) -> Candidate:
        members = self._members(name)
        if members is None:
            raise StepFailed(f"release {name} is gone from the engine")
        for container in members:
            container.reload()
            if container.status != "running":
                container.start()
        addresses = [containers.address(container, self.network) for container in members]
        return Candidate(name, f"started {len(members)} container{'s' if len(members) != 1 else ''} of {name}",
                         members, addresses)

    def remove_all(self, app: str) -> list[str]:
        return remove_app(self.client, self.config.server.name, app)

    def _members(self, name: str) -> list | None:
        """The containers of release `name` (its job's replicas), the named one first; None if it is gone."""
        container = containers.get_container(self.client, name)
        return release_containers(self.client, container) if container is not None else None


class SwarmService(Containers):
    """An app's releases as Swarm services of `replicas` tasks (swarm.py); containers of a release made
    before the app moved to Swarm are still found and repaired like Containers'."""

    followed = True

    def check(self) -> None:
        manager, why = swarm.is_manager(self.client)
        if not manager:
            raise StepFailed(why)

    def run_release_command(self, job, image, digest, on_lines, stop) -> None:
        """On the node its volumes are on, as its tasks will be."""
        pinned = service_image(self.config, self.app, job.sha, digest())
        release.run_as_job(self.client, self.config, self.app, job, pinned, registry.auth_config(self.config), on_lines,
                           stop)

    def start_candidate(self, job, image, digest, stop) -> Candidate:
        """A service of `replicas` tasks pinned by digest."""
        config, app = self.config, self.app
        pinned = service_image(config, app, job.sha, digest())
        name = containers.container_name(config.server.name, app.name, job.sha, job.id)
        service = swarm.create_service(
            self.client, app, name, pinned, config.server.name,
            containers.release_labels(config.server.name, app.name, job.sha, job.id),
            registry.auth_config(config), runspec.service_options(config, app))
        return Candidate(name, f"started candidate service {name}: {app.replicas} task"
                               f"{'s' if app.replicas != 1 else ''} of {pinned}", service)

    def check_health(self, candidate, proxy, stop, on_note) -> str:
        """Every task health-checked from inside the proxy (the host cannot reach the overlay)."""
        if isinstance(candidate.handle, list):  # containers of a release from before the move to Swarm, started
            return super().check_health(candidate, proxy, stop, on_note)
        started = time.monotonic()
        healthy = swarm.wait_serving(self.client, candidate.handle, proxy, self.app, self.network, stop, on_note,
                                     ignore=candidate.earlier)
        candidate.addresses = sorted(task.address for task in healthy)
        nodes = sorted({task.node for task in healthy})
        count = len(candidate.addresses)
        return (f"health check passed in {time.monotonic() - started:.1f} s: {count} task{'s' if count != 1 else ''} "
                f"on {len(nodes)} node{'s' if len(nodes) != 1 else ''} ({', '.join(nodes)})")

    def discard(self, candidate) -> None:
        swarm.remove_service(candidate.handle)

    def addresses(self, name: str) -> list[str] | None:
        service = self._service(name)
        return None if service is None else swarm.serving_addresses(self.client, service, self.network)

    def repair(self, name: str) -> list[str] | None:
        if containers.get_container(self.client, name) is not None:  # a release from before the move to Swarm
            return super().repair(name)
        return self.addresses(name) if swarm.swarm_active(self.client) else None

    def probe(self, proxy, address: str) -> health.Probe:
        return swarm.probe(proxy, address, self.app.port, self.app.health)

    def leftovers(self) -> list[Leftover]:
        found = super().leftovers()
        if not swarm.swarm_active(self.client):  # a non-manager has no services to ask for
            return found
        for service in swarm.find_services(self.client, self.config.server.name, app=self.app.name):
            found.append(Leftover("service", service.name, service.attrs["Spec"]["Labels"].get(containers.JOB),
                                  lambda service=service: swarm.remove_service(service)))
        return found

    def logs(self, name, tail=None, since=None, follow=False, until=lambda: False) -> Iterator[tuple[str, str]]:
        if containers.get_container(self.client, name) is not None:  # a release from before the move to Swarm
            return super().logs(name, tail, since, follow, until)
        service = self._service(name) if swarm.swarm_active(self.client) else None
        if service is None:
            raise StepFailed(f"release {name} is gone from the engine")
        return applogs.service_lines(self.client, service, tail, since, follow, until)

    def stop(self, name: str) -> None:
        """Scaled to 0 tasks, returned once none runs (Swarm stops each with its grace period)."""
        if containers.get_container(self.client, name) is not None:  # a release from before the move to Swarm
            return super().stop(name)
        service = self._service(name)
        if service is None:
            return
        service.scale(0)
        self._settle(service)

    def start(self, name: str) -> Candidate:
        """Scaled back to `replicas` tasks; `check_health` waits for new ones (those from before are ignored)."""
        if containers.get_container(self.client, name) is not None:  # a release from before the move to Swarm
            return super().start(name)
        service = self._service(name)
        if service is None:
            raise StepFailed(f"release {name} is gone from the engine")
        earlier = frozenset(task.id for task in swarm.tasks(self.client, service, self.network))
        service.scale(self.app.replicas)
        count = f"{self.app.replicas} task{'s' if self.app.replicas != 1 else ''}"
        return Candidate(name, f"scaled service {name} to {count}", service, earlier=earlier)

    def _settle(self, service) -> None:
        """Returns once no task of the service runs (or SETTLE_SECONDS passed)."""
        deadline = time.monotonic() + SETTLE_SECONDS
        while any(task.state == "running" for task in swarm.tasks(self.client, service, self.network)):
            if time.monotonic() > deadline:
                return
            time.sleep(1.0)

    def _service(self, name: str):
        return swarm.get_service(self.client, name)


# -- containers of a release --------------------------------------------------------------------


def start_container(client: docker.DockerClient, config: Config, app: AppConfig, job: Job, image: str,
                    replica: int = 1):
    """Start one of the job's candidate containers on the instance network; return (container, ip).

    The first is `N-APP-SHA12-JOB`, the others (replicas > 1) `N-APP-SHA12-JOB-2` and on."""
    name = containers.container_name(config.server.name, app.name, job.sha, job.id) + (
        f"-{replica}" if replica > 1 else "")
    labels = containers.release_labels(config.server.name, app.name, job.sha, job.id)
    candidate = containers.start_candidate(client, image, name, labels, runspec.run_options(config, app))
    try:
        return candidate, containers.address(candidate, config.server.name)
    except StepFailed:
        # It exited before it had an address: say so with its output, and take it away here, as
        # the caller never gets hold of it.
        failure = StepFailed(_with_output(_exit_reason(candidate), candidate))
        containers.remove(candidate)
        raise failure from None


def release_containers(client: docker.DockerClient, container) -> list:
    """The containers of the release `container` belongs to (its job's replicas), itself first."""
    labels = container.labels
    siblings = [each for each in containers.find_containers(client, labels.get(containers.INSTANCE, ""),
                                                           app=labels.get(containers.APP, ""),
                                                           job=labels.get(containers.JOB, ""))
                if each.id != container.id and swarm.SERVICE_LABEL not in each.labels
                and not each.labels.get(containers.ROLE)]  # not the proxy, a release command, a task or a run
    return [container] + sorted(siblings, key=lambda each: each.name)


def retire_release(client: docker.DockerClient, name: str) -> str | None:
    """Retire the release running as `name`: stop and remove its containers (the one named and the
    other replicas of its job), or remove its service (Swarm stops each task with its grace period).
    Returns what was retired, None if it was gone."""
    container = containers.get_container(client, name)
    if container is not None:
        siblings = release_containers(client, container)
        for each in siblings:
            containers.retire(each)
        return f"container {name}" if len(siblings) == 1 else f"{len(siblings)} containers of {name}"
    service = swarm.get_service(client, name) if swarm.swarm_active(client) else None
    if service is not None:
        swarm.remove_service(service)
        return f"service {name}"
    return None


def remove_app(client: docker.DockerClient, instance: str, app: str) -> list[str]:
    """Remove every Swarm service and container labelled with the app, whatever its role (releases and
    their replicas, task, one-off and release-command runs); return their names. A release container
    stops gracefully first, a run's is killed (its run is ended in the store already)."""
    removed = []
    services = swarm.find_services(client, instance, app=app) if swarm.swarm_active(client) else []
    for service in services:
        swarm.remove_service(service)
        removed.append(service.name)
    deadline = time.monotonic() + (SWARM_TASKS_GONE_SECONDS if services else 0)
    while True:
        for container in containers.find_containers(client, instance, app=app):
            if (container.labels or {}).get(containers.ROLE) in ("task", "run"):
                containers.remove(container)
            else:
                containers.retire(container, grace=REMOVE_GRACE_SECONDS)
            if not any(name == container.name or container.name.startswith(f"{name}.") for name in removed):
                removed.append(container.name)  # a service's task containers are named after it
        if not containers.find_containers(client, instance, app=app) or time.monotonic() > deadline:
            return removed
        time.sleep(0.5)


def check_health(candidate, ip: str, app: AppConfig, stop: threading.Event | None = None) -> float:
    """Probe the candidate until healthy; return seconds taken, or StepFailed with the reason and its last logs.

    Aborted as soon as `stop` is set: a worker told to stop does not wait out the health deadline."""
    exited: list[str] = []

    def running() -> bool:
        if stop is not None and stop.is_set():
            raise Aborted()
        # Its restart policy may have started it again already: a restart counts as an exit,
        # and the reason is taken when the exit is first seen.
        candidate.reload()
        if candidate.status in ("created", "running") and not candidate.attrs.get("RestartCount"):
            return True
        exited.append(_exit_reason(candidate))
        return False

    took, last = health.wait_healthy(ip, app.port, app.health, running, stop=stop)
    if last.ok:
        return took
    reason = exited[0] if exited else f"unhealthy after {took:.1f} s: GET {app.health.path} {last.detail}"
    raise StepFailed(_with_output(reason, candidate))


def _exit_reason(candidate) -> str:
    state = candidate.attrs.get("State", {})
    if state.get("Status") == "running":  # restarted since: the exit status is gone
        return "container exited (and was restarted) before it was healthy"
    return f"container exited with status {state.get('ExitCode')} before it was healthy"


def _with_output(reason: str, candidate) -> str:
    output = containers.tail_logs(candidate)
    return reason + ("\nlast container output:\n  " + "\n  ".join(output) if output else "")
