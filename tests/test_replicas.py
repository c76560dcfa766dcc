"""replicas on one host: a release is `replicas` containers (N-APP-SHA12-JOB, then -2, -3 ...), each
health-checked before the proxy routes to all of them; the old release's containers all retire."""

from __future__ import annotations

import re

from docker_helpers import Load, site_files
from hookdeploy.core.models import JobState


def routed(instance, app: str = "site") -> set[str]:
    return set(re.findall(r"^\s*server (\S+:\d+);$", instance.proxy_files()[f"app-{app}.conf"], re.MULTILINE))


def addresses(instance, names: set[str]) -> set[str]:
    found = set()
    for container in instance.containers():
        if container.name in names:
            container.reload()
            found.add(container.attrs["NetworkSettings"]["Networks"][instance.name]["IPAddress"] + ":80")
    return found


def test_a_release_of_three_containers_is_switched_under_load_and_the_old_three_retire(instance):
    instance.configure({"site": {"replicas": 3}})
    first = instance.deploy("site", site_files("v1"))
    assert first.state is JobState.SUCCEEDED, first.error
    name = instance.store.live_release("site").container
    first_three = {name, f"{name}-2", f"{name}-3"}
    assert instance.container_names() == first_three | {f"{instance.name}-proxy"}
    assert routed(instance) == addresses(instance, first_three)
    assert any("health check passed" in line and "3 containers" in line for line in instance.events(first.id))

    with Load(instance.port) as load:
        second = instance.deploy("site", site_files("v2"))
    assert second.state is JobState.SUCCEEDED, second.error
    assert load.errors == [] and load.requests > 50, (load.errors[:5], load.requests)

    name = instance.store.live_release("site").container
    second_three = {name, f"{name}-2", f"{name}-3"}
    assert instance.container_names() == second_three | {f"{instance.name}-proxy"}
    assert routed(instance) == addresses(instance, second_three)
    assert "v2" in instance.get().body


def test_an_unhealthy_release_of_two_leaves_no_container_and_the_live_one_serving(instance):
    instance.configure({"site": {"replicas": 2}})
    assert instance.deploy("site", site_files("v1")).state is JobState.SUCCEEDED
    before = instance.container_names()

    broken = instance.deploy("site", site_files("v2", health=None))

    assert broken.state is JobState.FAILED and "GET /health status 404" in broken.error, broken.error
    assert instance.container_names() == before
    assert "v1" in instance.get().body


def test_repair_starts_a_stopped_replica_and_routes_to_every_one(instance):
    from hookdeploy.engine.worker import Worker

    instance.configure({"site": {"replicas": 3}})
    assert instance.deploy("site", site_files("v1")).state is JobState.SUCCEEDED
    name = instance.store.live_release("site").container
    three = {name, f"{name}-2", f"{name}-3"}
    instance.client.containers.get(f"{name}-2").stop(timeout=1)

    Worker(instance.config, instance.store).repair("site")

    assert instance.client.containers.get(f"{name}-2").status == "running"
    assert routed(instance) == addresses(instance, three)
    assert instance.container_names() == three | {f"{instance.name}-proxy"}
