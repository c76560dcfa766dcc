"""The swarm target against a real 3-node Docker Swarm (scripts/cluster.sh): a release is a service of
`replicas` tasks pinned by digest on the instance's overlay network, every task health-checked
before the proxy routes to it, the old release's service drained and removed; a failure before the
switch leaves the live release as it was."""

from __future__ import annotations

import re
import threading
import time

import pytest

from cluster_helpers import Hey, run_cluster_sh
from docker_helpers import Load, api_site_files, site_files
from hookdeploy.core.models import JobKind, JobState


def routed_addresses(instance, app: str = "site") -> set[str]:
    text = instance.proxy_files().get(f"app-{app}.conf", "")
    return {line.split()[1].rsplit(":", 1)[0] for line in text.splitlines() if line.strip().startswith("server ")
            and line.strip().endswith(";") and ":" in line}


def test_a_push_lands_as_tasks_on_several_nodes_behind_the_proxy(swarm_instance):
    swarm_instance.configure({"site": {"replicas": 3}})
    job = swarm_instance.deploy("site", site_files("v1"))
    assert job.state is JobState.SUCCEEDED, job.error
    answer = swarm_instance.get()
    assert answer.status == 200 and "v1" in answer.body
    live = swarm_instance.store.live_release("site")
    tasks = swarm_instance.task_nodes(live.container)
    assert len(tasks) == 3 and len(set(tasks.values())) >= 2, tasks
    assert routed_addresses(swarm_instance) == set(tasks)
    assert swarm_instance.service_names() == {live.container}
    # pinned by digest: every task runs exactly what was pushed, whatever the tag says later
    image = swarm_instance.client.services.get(live.container).attrs["Spec"]["TaskTemplate"]["ContainerSpec"]["Image"]
    assert image.endswith("@" + job.digest) and f"/{swarm_instance.name}/site:" in image
    log = "\n".join(swarm_instance.events(job.id))
    assert "health check passed" in log and log.count(": healthy") == 3


def test_a_second_deploy_under_load_fails_no_request_and_retires_the_old_service(swarm_instance):
    swarm_instance.configure({"site": {"replicas": 3, "drain_seconds": 2.0}})
    first = swarm_instance.deploy("site", site_files("v1"))
    assert first.state is JobState.SUCCEEDED, first.error
    old_service = swarm_instance.store.live_release("site").container

    load = Hey(f"http://{swarm_instance.address}:{swarm_instance.port}/", seconds=25, concurrency=8)
    time.sleep(3)
    second = swarm_instance.deploy("site", site_files("v2"))
    result = load.result()

    assert second.state is JobState.SUCCEEDED, swarm_instance.events(second.id)
    assert result.total > 500, result.output
    assert result.failed == 0, result.output
    assert "v2" in swarm_instance.get().body
    live = swarm_instance.store.live_release("site")
    assert swarm_instance.service_names() == {live.container} and old_service not in swarm_instance.service_names()
    assert routed_addresses(swarm_instance) == set(swarm_instance.task_nodes(live.container))


def test_an_unhealthy_release_is_removed_and_the_live_one_keeps_serving(swarm_instance):
    swarm_instance.configure({"site": {"replicas": 2}})
    first = swarm_instance.deploy("site", site_files("v1"))
    assert first.state is JobState.SUCCEEDED, first.error
    live = swarm_instance.store.live_release("site")
    routes = swarm_instance.proxy_files()

    broken = swarm_instance.deploy("site", site_files("v2", health=None))  # /health answers 404

    assert broken.state is JobState.FAILED
    assert "healthy after" in broken.error and "GET /health status 404" in broken.error, broken.error
    assert swarm_instance.service_names() == {live.container}
    assert swarm_instance.proxy_files() == routes
    assert "v1" in swarm_instance.get().body


def test_a_release_whose_tasks_exit_fails_with_the_tasks_reason(swarm_instance):
    swarm_instance.configure({"site": {"replicas": 2}})
    first = swarm_instance.deploy("site", site_files("v1"))
    assert first.state is JobState.SUCCEEDED, first.error
    live = swarm_instance.store.live_release("site")

    crashing = swarm_instance.deploy("site", site_files(
        "v2", dockerfile_tail='CMD ["sh", "-c", "echo the database is gone >&2; exit 3"]\n'))

    assert crashing.state is JobState.FAILED
    assert " failed: non-zero exit (3)" in crashing.error and crashing.error.startswith("task "), crashing.error
    assert "last output of its tasks:" in crashing.error and "the database is gone" in crashing.error
    assert swarm_instance.service_names() == {live.container}
    assert "v1" in swarm_instance.get().body


def test_rollback_brings_the_previous_release_back_as_a_service(swarm_instance):
    swarm_instance.configure({"site": {"replicas": 2}})
    first = swarm_instance.deploy("site", site_files("v1"))
    second = swarm_instance.deploy("site", site_files("v2"))
    assert second.state is JobState.SUCCEEDED and "v2" in swarm_instance.get().body

    back = swarm_instance.enqueue("site", first.sha, kind=JobKind.ROLLBACK)
    swarm_instance.work()
    back = swarm_instance.store.job(back.id)

    assert back.state is JobState.SUCCEEDED, swarm_instance.events(back.id)
    assert "v1" in swarm_instance.get().body
    live = swarm_instance.store.live_release("site")
    assert live.sha == first.sha and swarm_instance.service_names() == {live.container}
    assert any("using image" in line for line in swarm_instance.events(back.id))


@pytest.fixture
def start_worker(swarm_instance):
    """Starts a worker thread for the configured instance (not draining: it follows the live services'
    tasks, as `hookdeploy worker` and `serve` do); stopped at the end of the test."""
    from hookdeploy.engine.worker import Worker

    stop = threading.Event()
    threads = []

    def start() -> None:
        thread = threading.Thread(target=Worker(swarm_instance.config, swarm_instance.store).run, args=(stop,),
                                  daemon=True)
        thread.start()
        threads.append(thread)

    yield start
    stop.set()
    for thread in threads:
        thread.join(timeout=60)


def wait_for(predicate, timeout: float, every: float = 0.2):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(every)
    return predicate()


def test_the_proxy_follows_when_swarm_replaces_a_dead_task(swarm_instance, start_worker):
    swarm_instance.configure({"site": {"replicas": 3}})
    start_worker()
    job = swarm_instance.enqueue("site", swarm_instance.commit("site", site_files("v1")))
    assert wait_for(lambda: swarm_instance.store.job(job.id).state is JobState.SUCCEEDED, 120), \
        swarm_instance.events(job.id)
    service = swarm_instance.store.live_release("site").container
    before = swarm_instance.task_nodes(service)
    victim, node = next((address, node) for address, node in before.items() if node != swarm_instance.cluster.manager)

    load = Hey(f"http://{swarm_instance.address}:{swarm_instance.port}/", seconds=15, concurrency=4)
    killed_at = time.monotonic()
    container = swarm_instance.cluster.exec(node, "docker", "ps", "-q", "--filter",
                                            f"label=com.docker.swarm.service.name={service}").stdout.split()
    swarm_instance.cluster.exec(node, "docker", "kill", *container)

    dropped = wait_for(lambda: victim not in routed_addresses(swarm_instance), 10)
    dropped_after = time.monotonic() - killed_at
    replaced = wait_for(lambda: len(routed_addresses(swarm_instance)) == 3
                        and routed_addresses(swarm_instance) == set(swarm_instance.task_nodes(service)), 60)
    result = load.result()

    assert dropped, f"the proxy still routes to the dead task {victim}: {swarm_instance.proxy_files()}"
    assert replaced, (routed_addresses(swarm_instance), swarm_instance.task_nodes(service))
    assert result.failed == 0, result.output
    print(f"dead task dropped from the proxy after {dropped_after:.1f} s")


def test_the_registry_down_fails_the_job_and_leaves_the_live_release(swarm_instance):
    swarm_instance.configure({"site": {"replicas": 2}})
    first = swarm_instance.deploy("site", site_files("v1"))
    assert first.state is JobState.SUCCEEDED, first.error
    live = swarm_instance.store.live_release("site")
    cluster = swarm_instance.cluster
    cluster.exec(cluster.manager, "pkill", "-f", "docker-registry serve")
    try:
        job = swarm_instance.deploy("site", site_files("v2"))
    finally:
        assert run_cluster_sh("up").returncode == 0  # starts the registry again

    assert job.state is JobState.FAILED
    assert job.error.startswith(f"push to {cluster.registry_url} failed"), job.error
    assert swarm_instance.store.live_release("site").id == live.id
    assert swarm_instance.service_names() == {live.container}
    assert "v1" in swarm_instance.get().body


def test_a_worker_node_killed_mid_deploy_costs_no_request_and_the_proxy_follows(swarm_instance, start_worker):
    cluster = swarm_instance.cluster
    victim = cluster.workers[-1]
    # A request in flight to a task when its node dies gets no answer: the proxy gives it to another task
    # after read_timeout (for a GET), within the patience of hey (20 s here, a browser's is minutes).
    swarm_instance.configure({"site": {"replicas": 3, "drain_seconds": 1.0, "read_timeout": 5.0,
                                       "health": {"deadline": 60.0}}})
    start_worker()
    first = swarm_instance.enqueue("site", swarm_instance.commit("site", site_files("v1")))
    assert wait_for(lambda: swarm_instance.store.job(first.id).state is JobState.SUCCEEDED, 120), \
        swarm_instance.events(first.id)
    lost = {address for address, node in swarm_instance.task_nodes(
        swarm_instance.store.live_release("site").container).items() if node == victim}
    assert lost

    load = Hey(f"http://{swarm_instance.address}:{swarm_instance.port}/", seconds=60, concurrency=4)
    second = swarm_instance.enqueue("site", swarm_instance.commit("site", site_files("v2")))
    try:
        assert wait_for(lambda: any(line.startswith("started candidate")
                                    for line in swarm_instance.events(second.id)), 120)
        killed = run_cluster_sh("kill-node", victim, timeout=60)
        assert killed.returncode == 0, killed.stderr
        killed_at = time.monotonic()
        dropped = wait_for(lambda: not lost & routed_addresses(swarm_instance), 60, every=0.1)
        dropped_after = time.monotonic() - killed_at
        ended = wait_for(lambda: swarm_instance.store.job(second.id).state.finished, 180, every=0.5)
        job = swarm_instance.store.job(second.id)
        took = time.monotonic() - killed_at
        live = swarm_instance.store.live_release("site")
        followed = wait_for(lambda: (nodes := swarm_instance.task_nodes(live.container))
                            and victim not in nodes.values() and len(nodes) == 3
                            and routed_addresses(swarm_instance) == set(nodes), 90)
        result = load.result()
    finally:
        run_cluster_sh("revive-node", victim, timeout=120)
    assert ended, swarm_instance.events(second.id)
    slowest = re.search(r"Slowest:\s+([\d.]+)", result.output).group(1)
    print(f"job {job.state.value} {took:.1f} s after the kill: {job.error or ''}; the lost task left the proxy "
          f"after {dropped_after:.1f} s; {result.total} requests, the slowest took {slowest} s")
    assert dropped, f"the proxy still routes to {lost} on the lost node: {swarm_instance.proxy_files()}"
    assert job.state in (JobState.SUCCEEDED, JobState.FAILED), job
    if job.state is JobState.FAILED:
        assert victim in job.error or "healthy after" in job.error, job.error
    assert followed, (routed_addresses(swarm_instance), swarm_instance.task_nodes(live.container))
    assert result.failed == 0, result.output


def test_a_failing_canary_on_swarm_tasks_is_taken_back_and_the_old_service_serves_on(swarm_instance):
    swarm_instance.configure({"site": {"replicas": 2, "drain_seconds": 1.0,
                                       "guard": {"canary_percent": 30, "canary_seconds": 5, "min_requests": 10}}})
    first = swarm_instance.deploy("site", api_site_files("v1", 200))
    assert first.state is JobState.SUCCEEDED, first.error
    old_service = swarm_instance.store.live_release("site").container
    where = {"port": swarm_instance.port, "address": swarm_instance.address, "threads": 2}
    with Load(path="/api", **where) as api, Load(**where) as root:
        job = swarm_instance.deploy("site", api_site_files("v2", 500))
    assert job.state is JobState.ROLLED_BACK, swarm_instance.events(job.id)
    assert job.error.startswith("guard: canary: ") and job.error.endswith(f"{first.sha[:12]} serves on"), job.error
    assert root.errors == [] and root.releases.get(job.sha[:12], 0) > 0  # the canary's tasks answered some of /
    assert api.errors and set(api.errors) == {"status 500"}
    assert swarm_instance.service_names() == {old_service}
    assert routed_addresses(swarm_instance) == set(swarm_instance.task_nodes(old_service))
    assert swarm_instance.get().release == first.sha[:12]


def test_a_swarm_app_on_an_engine_outside_swarm_mode_fails_before_anything_is_made(instance):
    # this machine's own engine is no swarm manager (the cluster's nodes are engines of their own)
    instance.configure({"site": {"target": "swarm", "replicas": 2}},
                       extra='[registry]\nurl = "127.0.0.1:9"\ninsecure = true\n')
    job = instance.deploy("site", site_files("v1"))

    assert job.state is JobState.FAILED
    assert job.error == "the engine is not in swarm mode (swarm state: inactive; run `docker swarm init` on a manager)"
    assert instance.container_names() == set() and instance.images() == set()
