"""Docker Swarm, through the docker SDK: a release as a service, its tasks and their addresses.

A swarm release is the service `N-APP-SHA12-JOB` on the attachable overlay network `N`, endpoint
mode dnsrr (no VIP, no routing mesh: the proxy routes to each task's own address), its image
pinned by digest. The engine is a manager ($DOCKER_HOST). The nodes pull with the credentials the
service was created with ([registry]'s, handed over as the X-Registry-Auth header), never with a
node's own login. Health probes run inside the proxy container, which is on the overlay (the
host of the engine cannot reach overlay addresses): an HTTP/1.0 request through busybox's `nc`.
Imports hookdeploy.core, containers.py (labels, networks) and health.py; runtime.py, release.py,
removal and applogs call it, and a deploy reaches it only through runtime.py.
"""

from __future__ import annotations

import http.client
import io
import ipaddress
import logging
import threading
import time
from dataclasses import dataclass

import docker
import docker.errors
from docker.types import EndpointSpec, NetworkAttachmentConfig, RestartPolicy, ServiceMode

from hookdeploy.core.config import AppConfig, HealthConfig
from hookdeploy.core.errors import Aborted, StepFailed
from hookdeploy.engine import containers, health

log = logging.getLogger(__name__)

SERVICE_LABEL = "com.docker.swarm.service.id"  # on every task's container

# Task states: https://docs.docker.com/engine/swarm/how-swarm-mode-works/swarm-task-states/
FAILED_STATES = ("failed", "rejected")
# How long a task may take to start running: its node pulls the image first. The app's health
# deadline counts from when it runs.
START_SECONDS = 300


@dataclass(frozen=True)
class Task:
    """One task of a service as the manager sees it now."""

    id: str
    slot: int | None
    node: str  # the node's hostname (its ID when the node is gone)
    state: str
    desired: str
    error: str
    address: str | None  # on the instance network
    node_up: bool

    @property
    def serving(self) -> bool:
        """Running, meant to run, on a node the manager hears from, with an address."""
        return self.state == "running" and self.desired == "running" and self.node_up and self.address is not None

    @property
    def failed(self) -> bool:
        """Failed on its own (exit, pull refused): the release's fault, not a lost node's."""
        return self.state in FAILED_STATES and self.node_up

    def describe(self) -> str:
        where = f"task {self.slot}" if self.slot is not None else f"task {self.id[:12]}"
        return f"{where} on {self.node}"


def is_manager(client: docker.DockerClient) -> tuple[bool, str]:
    """(True, "") if the engine is an active swarm manager, else (False, why not)."""
    swarm = (client.info().get("Swarm") or {})
    state = swarm.get("LocalNodeState") or "inactive"
    if state != "active":
        return False, f"the engine is not in swarm mode (swarm state: {state}; run `docker swarm init` on a manager)"
    if not swarm.get("ControlAvailable"):
        return False, "the engine is a swarm worker; DOCKER_HOST must point at a manager"
    return True, ""


def swarm_active(client: docker.DockerClient) -> bool:
    """True if the engine is a swarm manager (asking a non-manager for services is an error)."""
    return is_manager(client)[0]


def ensure_overlay(client: docker.DockerClient, instance: str):
    """The instance network as an attachable overlay, created on first use (callers hold the setup lock)."""
    networks = containers.find_networks(client, instance)
    if networks:
        network = networks[0]
        driver = network.attrs.get("Driver")
        if driver != "overlay" or not network.attrs.get("Attachable"):
            raise StepFailed(f"network {instance} is a {driver} network; a swarm app needs {instance} to be an "
                             f"attachable overlay: remove the proxy and the network (docker rm -f {containers.proxy_name(instance)}; "
                             f"docker network rm {instance}) and deploy again")
        return network
    log.info("creating overlay network %s", instance)
    ok, why = is_manager(client)
    if not ok:
        raise StepFailed(why)
    return client.networks.create(instance, driver="overlay", attachable=True, scope="swarm",
                                  labels={containers.INSTANCE: instance}, check_duplicate=True)


def create_service(client: docker.DockerClient, app: AppConfig, name: str, image: str, network: str,
                   labels: dict[str, str], auth: dict[str, str], options: dict):
    """Start a release as a replicated dnsrr service of `app.replicas` tasks, its tasks made with
    `options` (runspec.service_options: environment, mounts, limits); return the service.

    A service of that name left by a crash of the same job is removed first. `auth` is the registry
    login the nodes pull with; the engine checks it against the registry before anything starts."""
    leftover = get_service(client, name)
    if leftover is not None:
        remove_service(leftover)
    try:
        login(client, auth)
    except docker.errors.APIError as error:
        raise StepFailed(f"the registry {auth['serveraddress']} refused the login the nodes would pull with: "
                         f"{error.explanation or error}") from None
    try:
        return client.services.create(
            image, name=name, labels=labels, container_labels=labels,
            networks=[NetworkAttachmentConfig(target=network)],
            endpoint_spec=EndpointSpec(mode="dnsrr"),
            mode=ServiceMode("replicated", replicas=app.replicas),
            constraints=list(app.placement),
            restart_policy=RestartPolicy(condition="any", delay=1_000_000_000),
            stop_grace_period=10_000_000_000, **options)
    except docker.errors.APIError as error:
        raise StepFailed(f"cannot create the service {name}: {error.explanation or error}") from None


def login(client: docker.DockerClient, auth: dict[str, str]) -> None:
    """Log the engine in to the registry with `auth` (registry.auth_config), so that the services created
    next carry the login to the nodes; the engine checks it against the registry (APIError if refused).
    Without a username there is nothing to log in with."""
    if auth.get("username"):
        client.login(username=auth["username"], password=auth["password"], registry=auth["serveraddress"],
                     reauth=True)


def get_service(client: docker.DockerClient, name: str):
    """A service by exact name, or None."""
    try:
        service = client.services.get(name)
    except docker.errors.NotFound:
        return None
    return service if service.name == name else None


def find_services(client: docker.DockerClient, instance: str, **labels: str) -> list:
    """This instance's services with the given extra labels (app=, job=)."""
    filters = [f"{containers.INSTANCE}={instance}"] + [f"hookdeploy.{key}={value}" for key, value in labels.items()]
    return client.services.list(filters={"label": filters})


def remove_service(service) -> None:
    """Remove a service (Swarm stops its tasks, each with the stop grace period); gone already is fine."""
    try:
        service.remove()
    except docker.errors.NotFound:
        pass


def tasks(client: docker.DockerClient, service, network: str) -> list[Task]:
    """The service's tasks, newest first, with their addresses on `network` and whether their node is up."""
    nodes = {node.id: node for node in client.nodes.list()}
    found = []
    for raw in service.tasks():
        status = raw.get("Status") or {}
        node = nodes.get(raw.get("NodeID") or "")
        node_attrs = node.attrs if node is not None else {}
        node_name = (node_attrs.get("Description") or {}).get("Hostname") or (raw.get("NodeID") or "no node")[:12]
        node_up = node is not None and (node_attrs.get("Status") or {}).get("State") == "ready"
        found.append(Task(
            id=raw["ID"], slot=raw.get("Slot"), node=node_name, state=status.get("State", ""),
            desired=raw.get("DesiredState", ""), error=(status.get("Err") or "").strip().removeprefix("task: "),
            address=_address(raw, network), node_up=node_up))
    return found


def _address(raw: dict, network: str) -> str | None:
    for attachment in raw.get("NetworksAttachments") or ():
        if ((attachment.get("Network") or {}).get("Spec") or {}).get("Name") != network:
            continue
        for cidr in attachment.get("Addresses") or ():
            try:
                return str(ipaddress.ip_interface(cidr).ip)
            except ValueError:
                continue
    return None


def serving_addresses(client: docker.DockerClient, service, network: str) -> list[str]:
    """The addresses of the service's serving tasks, sorted."""
    return sorted({task.address for task in tasks(client, service, network) if task.serving})


def tail_logs(service, lines: int = 20, timeout: float = 5.0) -> list[str]:
    """The last lines the service's tasks printed, as far as the engine collects them within `timeout`
    (a lost node's part never comes: the reader is left behind rather than waited for)."""
    collected: list[bytes] = []

    def read() -> None:
        try:
            for chunk in service.logs(stdout=True, stderr=True, tail=lines, follow=False):
                collected.append(chunk)
        except Exception:  # noqa: BLE001 - logs are a courtesy; the task's error is the reason
            pass

    reader = threading.Thread(target=read, name="service-logs", daemon=True)
    reader.start()
    reader.join(timeout)
    text = b"".join(collected).decode(errors="replace")
    return text.splitlines()[-lines:]


# -- health, from inside the proxy container ----------------------------------------------------------

# The request goes in as $0 and the address as $2 $3: nothing from outside is put into the script.
PROBE_SCRIPT = 'printf "%s" "$0" | timeout "$1" nc "$2" "$3"'


def probe(proxy, ip: str, port: int, check: HealthConfig, host_header: str | None = None) -> health.Probe:
    """GET check.path once at ip:port from inside the proxy container, judged like health.probe."""
    request = (f"GET {check.path} HTTP/1.0\r\nHost: {host_header or ip}\r\n"
               f"User-Agent: hookdeploy-health\r\nConnection: close\r\n\r\n")
    seconds = str(max(1, int(round(check.timeout))))
    try:
        code, (out, err) = proxy.exec_run(["sh", "-c", PROBE_SCRIPT, request, seconds, ip, str(port)], demux=True)
    except docker.errors.APIError as error:
        return health.Probe(False, None, f"no probe: {error.explanation or error}")
    out, err = out or b"", (err or b"").decode(errors="replace").strip()
    if code in (126, 127) or out.startswith(b"OCI runtime"):  # the engine could not run the probe at all
        return health.Probe(False, None, f"no probe: the engine could not exec in {proxy.name}: "
                                         f"{(out.decode(errors='replace') or err).strip()[:300]}")
    if not out:
        reason = "timed out" if code == 124 else (err.removeprefix("nc: ") or f"nc exited with {code}")
        return health.Probe(False, None, f"no answer: {reason}")
    try:
        response = http.client.HTTPResponse(_Bytes(out))
        response.begin()
        body = response.read(health.MAX_BODY).decode(errors="replace")
    except (http.client.HTTPException, OSError) as error:
        return health.Probe(False, None, f"no HTTP answer: {error or type(error).__name__}")
    return health.judge(response.status, body, response.getheader("X-Hookdeploy-Release"), check)


class _Bytes:
    """What http.client.HTTPResponse reads a whole answer from."""

    def __init__(self, data: bytes):
        self._data = data

    def makefile(self, mode: str) -> io.BufferedReader:
        return io.BufferedReader(io.BytesIO(self._data))


def wait_serving(client: docker.DockerClient, service, proxy, app: AppConfig, network: str, stop: threading.Event,
                 on_note=lambda text: None, ignore: frozenset[str] = frozenset()) -> list[Task]:
    """Wait until `app.replicas` tasks are running and each passed the health check; return those tasks.
    Tasks whose ids are in `ignore` (a restarted service's tasks from before) do not count, failed or not.

    A task has START_SECONDS to start running (its node pulls the image first), then the app's health
    deadline to pass the check. StepFailed when a task fails on its own (the app exits, a node cannot
    pull: the task's error says why) or a deadline passes. A task lost with its node is not the
    release's fault: Swarm puts a new one elsewhere, which is checked in turn. Aborted once `stop` is set."""
    started = time.monotonic()
    running_since: dict[str, float] = {}
    healthy: set[str] = set()  # task ids
    last: dict[str, health.Probe] = {}
    while True:
        if stop.is_set():
            raise Aborted()
        current = [task for task in tasks(client, service, network) if task.id not in ignore]
        failed = [task for task in current if task.failed]
        if failed:
            task = failed[0]
            output = tail_logs(service)
            raise StepFailed(f"{task.describe()} {task.state}: {task.error or 'no reason given'}"
                             + ("\nlast output of its tasks:\n  " + "\n  ".join(output) if output else ""))
        serving = [task for task in current if task.serving]
        now = time.monotonic()
        for task in serving:
            running_since.setdefault(task.id, now)
            if task.id in healthy:
                continue
            result = probe(proxy, task.address, app.port, app.health)
            last[task.id] = result
            if result.ok:
                healthy.add(task.id)
                on_note(f"{task.describe()} at {task.address}: healthy")
        ready = [task for task in serving if task.id in healthy]
        if len(ready) >= app.replicas:
            return ready
        now = time.monotonic()
        late = [task for task in serving if task.id not in healthy
                and now + app.health.interval - running_since[task.id] > app.health.deadline]
        waiting = [task for task in current if task.desired == "running" and task.id not in healthy]
        if late:
            raise StepFailed(_unready(app, len(ready), late, last, f"{app.health.deadline:g} s running"))
        if now + app.health.interval - started > START_SECONDS:
            raise StepFailed(_unready(app, len(ready), waiting, last, f"{START_SECONDS} s"))
        stop.wait(app.health.interval)


def _unready(app: AppConfig, count: int, waiting: list[Task], last: dict[str, health.Probe],
             after: str) -> str:
    parts = []
    for task in waiting:
        if task.id in last:
            parts.append(f"{task.describe()}: GET {app.health.path} {last[task.id].detail}")
        else:
            state = task.state + ("" if task.node_up else ", node down")
            parts.append(f"{task.describe()}: {state}{': ' + task.error if task.error else ''}")
    summary = f"{count} of {app.replicas} task{'s' if app.replicas != 1 else ''} healthy after {after}"
    return summary + ("; " + "; ".join(parts[:5]) if parts else "")
