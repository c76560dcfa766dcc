"""`hookdeploy doctor` for swarm apps against the real 3-node swarm (scripts/cluster.sh): the engine is a
manager, the nodes are ready, the instance network is an attachable overlay, the proxy on the manager
sees hookdeploy's conf.d, and every node pulls the live release from the registry with [registry]'s
credentials (a short-lived global service, removed afterwards). Each test runs the real CLI and reads
what a user would read."""

from __future__ import annotations

import json
import sqlite3
import subprocess
from pathlib import Path

from docker_helpers import site_files
from hookdeploy.cli import doctor_swarm

NODES = ("hdcluster-manager", "hdcluster-worker1", "hdcluster-worker2")


def fixes(stdout: str) -> list[str]:
    return [line for line in stdout.splitlines() if line.startswith("FIX   ")]


def deployed(swarm_instance) -> None:
    """`site` on three tasks, its post-receive hook installed (so the repo checks pass too)."""
    swarm_instance.configure({"site": {"replicas": 3}})
    job = swarm_instance.deploy("site", site_files("v1"))
    assert job.state.value == "succeeded", swarm_instance.events(job.id)
    init = swarm_instance.cli("init-repo", "site")
    assert init.returncode == 0, init.stderr


def doctor_services(swarm_instance) -> list[str]:
    return [service.name for service in swarm_instance.client.services.list()
            if service.name.endswith("-doctor-site")]


def worker_engine(node: str) -> str:
    """DOCKER_HOST for a worker's own engine (its address on the cluster network, seen from the host engine)."""
    completed = subprocess.run(["docker", "inspect", "--format", "{{json .NetworkSettings.Networks}}", node],
                               capture_output=True, text=True, check=True, timeout=30, env={"PATH": "/usr/bin:/bin"})
    return f"tcp://{json.loads(completed.stdout)['hdcluster']['IPAddress']}:2375"


def test_doctor_on_a_deployed_swarm_app_checks_the_manager_nodes_network_and_pulls(swarm_instance):
    deployed(swarm_instance)
    completed = swarm_instance.cli("doctor")
    print(completed.stdout)
    lines = completed.stdout.splitlines()
    assert completed.returncode == 0, completed.stdout + completed.stderr
    assert lines[-1] == "all checks passed"
    assert all(line.startswith("ok    ") for line in lines[:-1]), lines
    cluster = swarm_instance.cluster
    name, state = swarm_instance.name, swarm_instance.state_dir
    assert f"ok    the engine (DOCKER_HOST={cluster.docker_host}) is a swarm manager" in lines
    assert "ok    swarm: 3 of 3 nodes are ready and active" in lines
    assert f"ok    network {name} is an attachable overlay" in lines
    assert f"ok    proxy {name}-proxy sees {state}/proxy/conf.d (the engine shares that folder)" in lines
    sha12 = swarm_instance.store.live_release("site").sha[:12]
    for node in NODES:
        assert (f"ok    site: node {node} can start the live release {sha12} (pulled from {cluster.registry_url}, "
                "or its own copy)" in lines), lines
    assert doctor_services(swarm_instance) == []
    assert cluster.registry_password not in completed.stdout + completed.stderr


def test_doctor_with_a_wrong_registry_password_names_the_registry(swarm_instance):
    deployed(swarm_instance)
    completed = swarm_instance.cli("doctor", env={"CLUSTER_REGISTRY_PASSWORD": "not-the-password"})
    registry = swarm_instance.cluster.registry_url
    assert completed.returncode == 1, completed.stdout + completed.stderr
    found = fixes(completed.stdout)
    assert any(line.startswith(f"FIX   registry {registry} refuses the login as hookdeploy (HTTP 401)")
               for line in found), found
    assert any(line.startswith(f"FIX   site: the registry {registry} refused the login the nodes would pull with")
               for line in found), found
    assert "not-the-password" not in completed.stdout + completed.stderr
    assert doctor_services(swarm_instance) == []


def test_doctor_pointed_at_a_worker_says_docker_host_must_name_a_manager(swarm_instance):
    deployed(swarm_instance)
    worker = worker_engine("hdcluster-worker1")
    completed = swarm_instance.cli("doctor", env={"DOCKER_HOST": worker})
    assert completed.returncode == 1, completed.stdout + completed.stderr
    assert (f"FIX   the engine is a swarm worker; DOCKER_HOST must point at a manager (DOCKER_HOST={worker})"
            in fixes(completed.stdout)), completed.stdout
    # The proxy and the releases live on the manager: nothing more is asked of a worker's engine.
    assert fixes(completed.stdout)[-1].startswith("FIX   the engine is a swarm worker"), completed.stdout
    assert not any(line.startswith(("ok    swarm:", "ok    site: node", "ok    proxy", "FIX   proxy"))
                   for line in completed.stdout.splitlines()), completed.stdout
    assert doctor_services(swarm_instance) == []


def test_doctor_says_when_the_registry_lost_the_live_release(swarm_instance):
    deployed(swarm_instance)
    lost = "sha256:" + "0" * 64
    with sqlite3.connect(swarm_instance.state_dir / "hookdeploy.db") as database:  # as if the registry was pruned
        database.execute("UPDATE releases SET digest = ? WHERE app = 'site' AND state = 'live'", (lost,))
    completed = swarm_instance.cli("doctor")
    sha12 = swarm_instance.store.live_release("site").sha[:12]
    assert completed.returncode == 1, completed.stdout + completed.stderr
    assert fixes(completed.stdout) == [f"FIX   site: the registry {swarm_instance.cluster.registry_url} does not have "
                                       f"the live release {sha12} any more: deploy it again (or a newer commit)"]
    assert doctor_services(swarm_instance) == []


def test_doctor_before_the_first_deploy_checks_placement_against_the_nodes(swarm_instance):
    swarm_instance.configure({"site": {"placement": ["node.role==worker"]},
                              "api": {"placement": ["node.labels.zone==nowhere"], "hostnames": ["api.test"]}})
    for app in ("site", "api"):
        assert swarm_instance.cli("init-repo", app).returncode == 0
    completed = swarm_instance.cli("doctor")
    lines = completed.stdout.splitlines()
    name = swarm_instance.name
    assert completed.returncode == 1, completed.stdout + completed.stderr
    assert "ok    site: placement [node.role==worker] fits 2 of 3 ready nodes" in lines
    assert fixes(completed.stdout) == [
        "FIX   api: no ready node meets placement [node.labels.zone==nowhere], so its tasks would wait forever: "
        "change apps.api.placement, or label a node to fit (docker node update --label-add KEY=VALUE NODE)"]
    assert f"ok    network {name} does not exist yet: the first deploy creates it as an attachable overlay" in lines
    assert "ok    site: pull from the nodes is checked once site has a release" in lines
    assert "ok    api: pull from the nodes is checked once api has a release" in lines


def test_doctor_says_why_a_proxy_on_the_manager_answers_nothing_when_state_dir_is_not_shared(swarm_instance,
                                                                                           tmp_path):
    # hookdeploy on a host whose state_dir the manager does not see: the proxy mounts an empty folder
    # of the manager's own, the first deploy is rolled back, and doctor says why.
    swarm_instance.state_dir = tmp_path / "unshared" / "state"
    try:
        swarm_instance.configure({"site": {}})
        assert swarm_instance.cli("init-repo", "site").returncode == 0
        job = swarm_instance.deploy("site", site_files("v1"))
        assert job.state.value == "rolled_back", swarm_instance.events(job.id)
        completed = swarm_instance.cli("doctor")
    finally:  # the folders the manager's engine made for the mount
        manager = swarm_instance.cluster.manager
        swarm_instance.cluster.exec(manager, "rm", "-rf", str(tmp_path), check=False)
        # Its empty parents, but never /tmp itself (rmdir -p would take an empty /tmp too, and runc
        # execs through a file in /tmp: every later `docker exec` on the manager would fail).
        for parent in (tmp_path.parent, tmp_path.parent.parent):
            if parent != Path("/tmp") and Path("/tmp") in parent.parents:
                swarm_instance.cluster.exec(manager, "rmdir", str(parent), check=False)
    conf_dir = swarm_instance.state_dir / "proxy" / "conf.d"
    assert completed.returncode == 1, completed.stdout + completed.stderr
    assert fixes(completed.stdout) == [
        f"FIX   the proxy {swarm_instance.name}-proxy on the engine does not see {conf_dir} (it mounts that path "
        f"from the engine's own filesystem): run hookdeploy on the swarm manager "
        f"(DOCKER_HOST={swarm_instance.cluster.docker_host}), or share that folder with it at the same path"]


# -- without the swarm -----------------------------------------------------------------------------------


def node(hostname: str, role: str = "worker", labels: dict | None = None, address: str = "10.0.0.2") -> dict:
    """A node as the engine API describes it (the fields placement looks at)."""
    return {"ID": f"id-{hostname}", "Spec": {"Role": role, "Labels": labels or {}, "Availability": "active"},
            "Description": {"Hostname": hostname, "Platform": {"OS": "linux", "Architecture": "x86_64"},
                            "Engine": {"Labels": {"disk": "ssd"}}},
            "Status": {"State": "ready", "Addr": address}}


def test_placement_is_decided_as_swarm_decides_it():
    worker = node("w1", labels={"zone": "b"})
    assert doctor_swarm.meets(worker, "node.role==worker") and not doctor_swarm.meets(worker, "node.role!=worker")
    assert doctor_swarm.meets(worker, "node.role == Worker")  # values compare without case
    assert doctor_swarm.meets(worker, "node.labels.zone==b") and not doctor_swarm.meets(worker, "node.labels.zone!=b")
    assert doctor_swarm.meets(worker, "node.labels.rack!=x")  # a missing label counts as ""
    assert not doctor_swarm.meets(worker, "node.labels.rack==x")
    assert doctor_swarm.meets(worker, "engine.labels.disk==ssd") and doctor_swarm.meets(worker, "node.hostname==w1")
    assert doctor_swarm.meets(worker, "node.platform.os==linux") and doctor_swarm.meets(worker, "node.id==id-w1")
    assert doctor_swarm.meets(worker, "node.ip==10.0.0.2") and doctor_swarm.meets(worker, "node.ip==10.0.0.0/24")
    assert doctor_swarm.meets(worker, "node.ip!=10.1.0.0/16") and not doctor_swarm.meets(worker, "node.ip==10.1.0.0/16")
    assert not doctor_swarm.meets(worker, "node.colour==blue")  # an unknown key matches no node


def test_a_failed_pull_gets_the_likely_fix_from_the_task_error(write_config, tmp_path):
    config_path = write_config("[server]\nstate_dir = \"state\"\n[registry]\nurl = \"reg.test:5000\"\n"
                               "insecure = true\n[apps.api]\nimage = \"reg.test:5000/team/api\"\n"
                               "target = \"swarm\"\nhostnames = [\"api.test\"]\n")
    from hookdeploy.core.config import load

    config = load(config_path)
    https = doctor_swarm.pull_fix(config, "Get https://reg.test:5000/v2/: http: server gave HTTP response to HTTPS client",
                             "reg.test:5000")
    assert "--insecure-registry reg.test:5000" in https
    assert "cannot resolve or reach reg.test:5000" in doctor_swarm.pull_fix(
        config, "dial tcp: lookup reg.test on 127.0.0.11:53: no such host", "reg.test:5000")
    assert "registry.username" in doctor_swarm.pull_fix(config, "unauthorized: authentication required", "reg.test:5000")
    hidden = doctor_swarm.pull_fix(config, "No such image: reg.test:5000/team/api@sha256:00", "reg.test:5000")
    assert "--insecure-registry reg.test:5000" in hidden and "docker pull" in hidden
    elsewhere = doctor_swarm.pull_fix(config, "No such image: other.test/x@sha256:00", "other.test")
    assert "/etc/docker/certs.d/other.test/ca.crt" in elsewhere

