"""A real 3-node Docker Swarm for the tests of the swarm target: scripts/cluster.sh brings up, on this
machine, a manager and two workers as nested engines (dockerd inside containers of the host engine)
with a Distribution registry (htpasswd auth, plain HTTP) on the manager and an attachable overlay
network; see the script's header for what it makes and why.

The session-scoped fixture `cluster` runs `scripts/cluster.sh up` once per session and yields a
Cluster: `.docker_host` (DOCKER_HOST for the manager's engine), `.client` (a docker SDK client for
it, logged in to the registry), `.registry_url` (host:port), `.registry_username`,
`.registry_password`, `.auth_config`, `.nodes` (container names, manager first), `.manager`,
`.overlay_network`, `.base_image` (hookdeploy-nginx:local in the registry, pinned by digest),
`.shared_dir` (a host folder the manager sees at the same path: a hookdeploy state_dir under it works
with a proxy on the manager) and `.exec(node, *cmd)` (docker exec in a node container).

At the end of the session the fixture runs `scripts/cluster.sh down`, unless HOOKDEPLOY_KEEP_CLUSTER=1
or the cluster was already up (healthy) before the session: a rig someone made by hand is left alone.
It needs root and the host engine (it depends on docker_engine, so every test using it is marked
`docker`); without them it skips, or fails with HOOKDEPLOY_REQUIRE_DOCKER=1.

What the swarm cannot do here (no ip_vs module): the ingress routing mesh and service VIPs do not
answer, so services use endpoint mode dnsrr and are reached at their tasks' addresses, from a container
on the overlay network (the host cannot reach overlay addresses).

Load with `pytest_plugins = ["cluster_helpers"]` (tests/conftest.py or the test module).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shlex
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Mapping

import pytest

from docker_helpers import Instance, _quietly, unavailable

CLUSTER_SH = Path(__file__).resolve().parent.parent / "scripts" / "cluster.sh"
STATE_DIR = Path(os.environ.get("HOOKDEPLOY_CLUSTER_STATE", "/var/lib/hookdeploy-cluster"))
UP_TIMEOUT = 600  # the first `up` builds the node image with debootstrap (about a minute or two)


def read_env_file(path: Path) -> dict[str, str]:
    """KEY=VALUE lines (values optionally double-quoted; # comments) as a dict."""
    values: dict[str, str] = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#") and "=" in line:
            key, value = line.split("=", 1)
            values[key] = shlex.split(value)[0] if value else ""
    return values


def run_cluster_sh(command: str, *arguments: str, timeout: float = UP_TIMEOUT) -> subprocess.CompletedProcess:
    """`bash scripts/cluster.sh COMMAND ARGUMENTS...` on the host engine; output captured (text), the status
    not checked."""
    host_engine = {key: value for key, value in os.environ.items() if key != "DOCKER_HOST"}
    return subprocess.run(["bash", str(CLUSTER_SH), command, *arguments], capture_output=True, text=True,
                          timeout=timeout, stdin=subprocess.DEVNULL, env=host_engine)


@dataclass
class Cluster:
    """The running swarm, as cluster.sh up left it (read from STATE_DIR/cluster.env)."""

    docker_host: str
    manager_ip: str
    nodes: tuple[str, ...]
    overlay_network: str
    registry_url: str
    registry_username: str
    registry_password: str
    base_image: str
    shared_dir: Path
    _client: Any = field(default=None, repr=False)

    @classmethod
    def from_state(cls, state_dir: Path = STATE_DIR) -> "Cluster":
        env = read_env_file(state_dir / "cluster.env")
        return cls(
            docker_host=env["DOCKER_HOST"],
            manager_ip=env["MANAGER_IP"],
            nodes=tuple(env["NODES"].split()),
            overlay_network=env["OVERLAY_NETWORK"],
            registry_url=env["REGISTRY"],
            registry_username=env["REGISTRY_USERNAME"],
            registry_password=Path(env["REGISTRY_PASSWORD_FILE"]).read_text().strip(),
            base_image=env["BASE_IMAGE"],
            shared_dir=Path(env["SHARED_DIR"]),
        )

    @property
    def manager(self) -> str:
        return self.nodes[0]

    @property
    def workers(self) -> tuple[str, ...]:
        return self.nodes[1:]

    @property
    def auth_config(self) -> dict[str, str]:
        """The `auth_config` for the docker SDK's push and pull."""
        return {"username": self.registry_username, "password": self.registry_password}

    @property
    def client(self):
        """A docker SDK client for the manager's engine, logged in to the cluster registry (so that
        services.create sends the credentials on to the nodes that pull)."""
        if self._client is None:
            import docker

            client = docker.DockerClient(base_url=self.docker_host, timeout=120)
            client.login(username=self.registry_username, password=self.registry_password,
                         registry=self.registry_url)
            self._client = client
        return self._client

    def image(self, repository: str, tag: str) -> str:
        """The full name of `repository:tag` in the cluster registry."""
        return f"{self.registry_url}/{repository}:{tag}"

    def exec(self, node: str, *command: str, input: str | None = None, check: bool = True,
             timeout: float = 120) -> subprocess.CompletedProcess:
        """`docker exec -i NODE COMMAND...` on the host engine (text output); raises on failure unless
        check=False. exec(cluster.manager, "docker", "service", "ls") runs the manager's docker CLI. The
        node containers are the host engine's: a DOCKER_HOST in the environment is not passed on."""
        host_engine = {key: value for key, value in os.environ.items() if key != "DOCKER_HOST"}
        return subprocess.run(["docker", "exec", "-i", node, *command], input=input, capture_output=True,
                              text=True, check=check, timeout=timeout, env=host_engine)

    def remove_images(self, reference: str) -> None:
        """Remove the images matching `reference` (a docker images --filter reference= pattern) from every
        node: the workers keep what their tasks pulled."""
        for node in self.nodes:
            found = self.exec(node, "docker", "images", "-q", "--filter", f"reference={reference}", check=False)
            ids = sorted(set(found.stdout.split()))
            if ids:
                self.exec(node, "docker", "rmi", "-f", *ids, check=False)

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None


def cluster_problem() -> str | None:
    """Why no cluster can be made here, or None."""
    if os.geteuid() != 0:
        return "scripts/cluster.sh needs root"
    if not CLUSTER_SH.exists():
        return f"{CLUSTER_SH} is missing"
    return None


@pytest.fixture(scope="session")
def cluster(docker_engine) -> Iterator[Cluster]:
    """The 3-node swarm (scripts/cluster.sh up), shared by the session; down at its end (see the module)."""
    problem = cluster_problem()
    if problem is not None:
        unavailable(f"no swarm cluster: {problem}")
    was_up = run_cluster_sh("status", timeout=60).returncode == 0
    completed = run_cluster_sh("up")
    if completed.returncode != 0:
        unavailable(f"scripts/cluster.sh up failed ({completed.returncode}):\n"
                    f"{completed.stderr[-3000:]}\n{completed.stdout[-1000:]}")
    made = Cluster.from_state()
    try:
        yield made
    finally:
        made.close()
        if not was_up and os.environ.get("HOOKDEPLOY_KEEP_CLUSTER") != "1":
            run_cluster_sh("down", timeout=300)


# -- a hookdeploy instance deploying to the swarm ---------------------------------------------------------

REGISTRY_PASSWORD_ENV = "CLUSTER_REGISTRY_PASSWORD"


class SwarmInstance(Instance):
    """An Instance whose apps are swarm apps on the cluster: its state_dir in the cluster's shared folder
    (the proxy on the manager sees the same conf.d), its proxy published on the manager's address, its
    releases pushed to the cluster registry. The worker finds the manager through DOCKER_HOST, which
    the `swarm_instance` fixture sets (with the registry password) for the test's process."""

    def __init__(self, root: Path, cluster: Cluster):
        super().__init__(root, cluster.client)
        self.cluster = cluster
        self.address = cluster.manager_ip
        self.state_dir = cluster.shared_dir / f"{self.name}-{secrets.token_hex(3)}" / "state"

    def configure(self, apps: Mapping[str, Mapping[str, Any]], extra: str = "") -> Path:
        """Swarm apps (target "swarm" unless a table says otherwise) and the cluster's [registry]."""
        registry = (f'[registry]\nurl = "{self.cluster.registry_url}"\nusername = "{self.cluster.registry_username}"\n'
                    f'password_env = "{REGISTRY_PASSWORD_ENV}"\ninsecure = true\n')
        return super().configure({app: {"target": "swarm", **table} for app, table in apps.items()},
                                 extra=registry + extra)

    def services(self, **labels: str) -> list:
        filters = [f"hookdeploy.instance={self.name}"] + [f"hookdeploy.{key}={value}" for key, value in labels.items()]
        return self.client.services.list(filters={"label": filters})

    def service_names(self) -> set[str]:
        return {service.name for service in self.services()}

    def task_nodes(self, service_name: str) -> dict[str, str]:
        """The running tasks of a service: address on the instance network -> node hostname."""
        nodes = {node.id: node.attrs["Description"]["Hostname"] for node in self.client.nodes.list()}
        found = {}
        for task in self.client.services.get(service_name).tasks(filters={"desired-state": "running"}):
            if task["Status"]["State"] != "running":
                continue
            for attachment in task.get("NetworksAttachments") or ():
                if attachment["Network"]["Spec"]["Name"] == self.name:
                    found[attachment["Addresses"][0].split("/")[0]] = nodes.get(task["NodeID"], task["NodeID"])
        return found

    def cleanup(self) -> None:
        """Services first (their tasks hold the overlay), then what Instance.cleanup removes, the overlay
        network (once Swarm let go of it) and the state folder."""
        with contextlib.suppress(Exception):
            for service in self.services():
                _quietly(service.remove)
        super().cleanup()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            networks = self.client.networks.list(names=[self.name])
            if not networks:
                break
            for network in networks:
                _quietly(network.remove)
            time.sleep(0.5)
        shutil.rmtree(self.state_dir.parent, ignore_errors=True)
        self.cluster.remove_images(f"{self.cluster.registry_url}/{self.name}/*")


@pytest.fixture
def swarm_instance(cluster, tmp_path, monkeypatch) -> Iterator[SwarmInstance]:
    """A fresh SwarmInstance for one test, DOCKER_HOST and the registry password set; removed afterwards."""
    monkeypatch.setenv("DOCKER_HOST", cluster.docker_host)
    monkeypatch.setenv(REGISTRY_PASSWORD_ENV, cluster.registry_password)
    made = SwarmInstance(tmp_path, cluster)
    try:
        yield made
    finally:
        made.cleanup()


# -- load through the proxy, counted by hey --------------------------------------------------------------


@dataclass
class HeyResult:
    """What `hey` counted: every answer by status, and every request that got none."""

    statuses: dict[int, int]
    errors: dict[str, int]
    requests_per_second: float
    output: str

    @property
    def total(self) -> int:
        return sum(self.statuses.values()) + sum(self.errors.values())

    @property
    def failed(self) -> int:
        """Every request that was not answered 200."""
        return self.total - self.statuses.get(200, 0)


class Hey:
    """`hey -z SECONDS -c CONCURRENCY URL` in the background; `.result()` waits and parses its report."""

    def __init__(self, url: str, seconds: float, concurrency: int = 8, host: str | None = None):
        command = ["hey", "-z", f"{seconds:g}s", "-c", str(concurrency), "-t", "20", "-disable-keepalive"]
        if host:
            command += ["-host", host]
        self.process = subprocess.Popen([*command, url], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                        text=True)

    def result(self, timeout: float = 120) -> HeyResult:
        output, _ = self.process.communicate(timeout=timeout)
        return parse_hey(output)


def parse_hey(output: str) -> HeyResult:
    import re

    statuses = {int(code): int(count) for code, count in re.findall(r"\[(\d{3})\]\s+(\d+) responses", output)}
    errors: dict[str, int] = {}
    if "Error distribution:" in output:
        for count, message in re.findall(r"\[(\d+)\]\s+(.+)", output.split("Error distribution:", 1)[1]):
            errors[message.strip()] = int(count)
    rate = re.search(r"Requests/sec:\s+([\d.]+)", output)
    return HeyResult(statuses, errors, float(rate.group(1)) if rate else 0.0, output)
