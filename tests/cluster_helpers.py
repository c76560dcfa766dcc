"""A real 3-node Docker Swarm for the tests of the swarm target: scripts/cluster.sh brings up, on this
machine, a manager and two workers as nested engines (dockerd inside containers of the host engine)
with a Distribution registry (htpasswd auth, plain HTTP) on the manager and an attachable overlay
network; see the script's header for what it makes and why.

The session-scoped fixture `cluster` runs `scripts/cluster.sh up` once per session and yields a
Cluster: `.docker_host` (DOCKER_HOST for the manager's engine), `.client` (a docker SDK client for
it, logged in to the registry), `.registry_url` (host:port), `.registry_username`,
`.registry_password`, `.auth_config`, `.nodes` (container names, manager first), `.manager`,
`.overlay_network`, `.base_image` (hookdeploy-nginx:local in the registry, pinned by digest) and
`.exec(node, *cmd)` (docker exec in a node container).

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

import os
import shlex
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import pytest

from docker_helpers import unavailable

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


def run_cluster_sh(command: str, timeout: float = UP_TIMEOUT) -> subprocess.CompletedProcess:
    """`bash scripts/cluster.sh COMMAND`; output captured (text), the status not checked."""
    return subprocess.run(["bash", str(CLUSTER_SH), command], capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL)


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
        check=False. exec(cluster.manager, "docker", "service", "ls") runs the manager's docker CLI."""
        return subprocess.run(["docker", "exec", "-i", node, *command], input=input, capture_output=True,
                              text=True, check=check, timeout=timeout)

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
