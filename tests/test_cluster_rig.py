"""The swarm rig (cluster_helpers, scripts/cluster.sh) against what the swarm target will rely on: three
nodes Ready; an image built on the manager FROM hookdeploy-nginx:local, pushed to the cluster registry
with auth and run pinned by digest as a replicated service (endpoint mode dnsrr, on the overlay
network, spread over the nodes); every task answering at its own overlay address from a container on
that network; and removing the service removing its containers from every node.
"""

from __future__ import annotations

import base64
import re
import secrets
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from docker_helpers import BASE_IMAGE

if TYPE_CHECKING:
    from cluster_helpers import Cluster

TEST_LABEL = "hdcluster.test"
REPLICAS = 3
# Bigger than many full-size packets: a page this long crosses the overlay (VXLAN in the host's
# bridge) only when the MTUs fit together.
BIG_PAGE_BYTES = 256 * 1024
MANIFEST_V2 = "application/vnd.docker.distribution.manifest.v2+json"


def wait_for(what: str, check, timeout: float, interval: float = 0.5):
    """Call `check` until it returns something truthy; return that, or fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


def registry_status(cluster: Cluster, path: str, *, auth: bool, method: str = "GET") -> int:
    """The HTTP status of a request to the cluster registry from the host (its bridge address)."""
    request = urllib.request.Request(f"http://{cluster.registry_url}{path}", method=method,
                                     headers={"Accept": MANIFEST_V2})
    if auth:
        token = base64.b64encode(f"{cluster.registry_username}:{cluster.registry_password}".encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code


def overlay_address(task: dict, network_name: str) -> str | None:
    """The task's address (without the prefix length) on the named network."""
    for attachment in task.get("NetworksAttachments") or []:
        if attachment["Network"]["Spec"]["Name"] == network_name and attachment.get("Addresses"):
            return attachment["Addresses"][0].split("/")[0]
    return None


@pytest.fixture
def made(cluster: Cluster):
    """Names for this test's objects on the cluster; all of them removed afterwards."""
    token = secrets.token_hex(4)
    names = {"token": token, "service": f"hdclustertest-{token}", "probe": f"hdclustertest-probe-{token}",
             "repository": f"hdclustertest/site-{token}"}
    yield names
    client = cluster.client
    for service in client.services.list(filters={"label": f"{TEST_LABEL}={token}"}):
        service.remove()
    for container in client.containers.list(all=True, filters={"label": f"{TEST_LABEL}={token}"}):
        container.remove(force=True)
    for image in client.images.list(filters={"label": f"{TEST_LABEL}={token}"}):
        client.images.remove(image.id, force=True)
    for worker in cluster.workers:  # the pulled release images
        ids = cluster.exec(worker, "docker", "images", "-q", "--filter", f"label={TEST_LABEL}={token}").stdout.split()
        if ids:
            cluster.exec(worker, "docker", "rmi", "-f", *ids, check=False)


def test_three_nodes_are_ready(cluster: Cluster):
    nodes = cluster.client.nodes.list()

    assert sorted(node.attrs["Description"]["Hostname"] for node in nodes) == sorted(cluster.nodes)
    for node in nodes:
        assert node.attrs["Status"]["State"] == "ready", node.attrs["Status"]
        assert node.attrs["Spec"]["Availability"] == "active"
    managers = [node for node in nodes if node.attrs["Spec"]["Role"] == "manager"]
    assert [node.attrs["Description"]["Hostname"] for node in managers] == [cluster.manager]
    assert cluster.client.info()["Swarm"]["ControlAvailable"] is True
    # the registry wants credentials
    assert registry_status(cluster, "/v2/", auth=False) == 401
    assert registry_status(cluster, "/v2/", auth=True) == 200
    # the base image is there for every node, pinned by digest
    repository, digest = cluster.base_image.split("/", 1)[1].split("@")
    assert registry_status(cluster, f"/v2/{repository}/manifests/{digest}", auth=True, method="HEAD") == 200


def test_service_pinned_by_digest_runs_on_several_nodes_over_the_overlay(cluster: Cluster, made, tmp_path: Path):
    import docker
    from docker.types import EndpointSpec, ServiceMode

    client = cluster.client
    token = made["token"]

    # 1. build on the manager FROM the base image, push with auth, pin by digest
    context = tmp_path / "context"
    (context / "site").mkdir(parents=True)
    (context / "site" / "index.html").write_text(f"<p>cluster {token}</p>\n")
    (context / "site" / "big.txt").write_text("x" * BIG_PAGE_BYTES)
    (context / "Dockerfile").write_text(f"FROM {BASE_IMAGE}\nCOPY site/ /usr/share/nginx/html/\n")
    tag = cluster.image(made["repository"], "v1")
    client.images.build(path=str(context), tag=tag, labels={TEST_LABEL: token}, rm=True)

    lines = list(client.images.push(tag, auth_config=cluster.auth_config, stream=True, decode=True))
    assert not [line for line in lines if "error" in line or "errorDetail" in line], lines
    digests = [line["aux"]["Digest"] for line in lines if "Digest" in line.get("aux", {})]
    assert len(digests) == 1, lines
    pinned = f"{cluster.registry_url}/{made['repository']}@{digests[0]}"
    assert registry_status(cluster, f"/v2/{made['repository']}/manifests/{digests[0]}", auth=True,
                           method="HEAD") == 200
    assert registry_status(cluster, f"/v2/{made['repository']}/manifests/{digests[0]}", auth=False,
                           method="HEAD") == 401
    # the workers have no credentials of their own: they can pull it only with those the service carries
    for worker in cluster.workers:
        assert cluster.exec(worker, "docker", "image", "inspect", pinned, check=False).returncode != 0
    anonymous = cluster.exec(cluster.workers[0], "docker", "pull", pinned, check=False)
    assert anonymous.returncode != 0 and "no basic auth credentials" in anonymous.stderr, anonymous

    # 2. a replicated service, dnsrr, on the overlay, spread over the nodes
    service = client.services.create(
        pinned, name=made["service"], labels={TEST_LABEL: token}, container_labels={TEST_LABEL: token},
        mode=ServiceMode("replicated", replicas=REPLICAS), endpoint_spec=EndpointSpec(mode="dnsrr"),
        networks=[cluster.overlay_network],
        preferences=[("spread", "node.labels.hdcluster.node")], maxreplicas=2,
    )

    def running_tasks():
        tasks = service.tasks(filters={"desired-state": "running"})
        failed = [task["Status"] for task in service.tasks() if task["Status"]["State"] in ("failed", "rejected")]
        assert not failed, failed
        running = [task for task in tasks if task["Status"]["State"] == "running"]
        return running if len(running) == REPLICAS else None

    tasks = wait_for(f"{REPLICAS} running tasks of {made['service']}", running_tasks, timeout=45)
    spec = client.api.inspect_service(service.id)["Spec"]
    assert spec["EndpointSpec"]["Mode"] == "dnsrr"
    assert spec["TaskTemplate"]["ContainerSpec"]["Image"] == pinned
    hostnames = {node.id: node.attrs["Description"]["Hostname"] for node in client.nodes.list()}
    placed = [hostnames[task["NodeID"]] for task in tasks]
    assert len(set(placed)) >= 2, placed
    # a worker that runs a task pulled the image from the registry, by digest
    for worker in set(placed) & set(cluster.workers):
        assert cluster.exec(worker, "docker", "image", "inspect", pinned, check=False).returncode == 0, worker
    addresses = [overlay_address(task, cluster.overlay_network) for task in tasks]
    assert all(addresses), tasks

    # 3. a probe on the overlay network reaches every task at its address
    probe = client.containers.run(pinned, ["sleep", "300"], name=made["probe"], detach=True,
                                  network=cluster.overlay_network, labels={TEST_LABEL: token})

    def fetch(url: str) -> str:
        # busybox 1.35's wget segfaults (status 139) whenever given -T; `timeout` bounds it instead.
        # A container just attached is known to the other nodes once the overlay's gossip has spread
        # its address, so a first try may fail: try again for a while.
        deadline = time.monotonic() + 30
        while True:
            result = probe.exec_run(["timeout", "5", "wget", "-q", "-O-", url])
            if result.exit_code == 0:
                return result.output.decode()
            assert time.monotonic() < deadline, (url, result.exit_code, result.output.decode(errors="replace"),
                                                 dict(zip(addresses, placed)))
            time.sleep(0.5)

    for address in addresses:
        assert f"cluster {token}" in fetch(f"http://{address}/")
        assert len(fetch(f"http://{address}/big.txt")) == BIG_PAGE_BYTES, address
    # with dnsrr the service's name resolves (the embedded DNS) to the tasks' addresses themselves
    answer = probe.exec_run(["nslookup", made["service"]]).output.decode()
    resolved = set(re.findall(r"^Address:\s*([\d.]+)\s*$", answer, re.M))  # not the server's ip:53
    assert resolved == set(addresses), answer

    # 4. removing the service removes its containers from every node
    probe.remove(force=True)
    service.remove()

    def gone():
        return all(not cluster.exec(node, "docker", "ps", "-aq", "--filter",
                                    f"label=com.docker.swarm.service.name={made['service']}").stdout.strip()
                   for node in cluster.nodes)

    wait_for(f"the containers of {made['service']} to go", gone, timeout=30)
    try:
        client.services.get(made["service"])
    except docker.errors.NotFound:
        pass
    else:
        pytest.fail(f"service {made['service']} still there")
