"""Volumes, the release phase and limits of a swarm app on the real 3-node swarm (scripts/cluster.sh;
issue 22, items 1, 2 and 5): placed on one worker node by `placement`, every task of its releases
and its release command (a one-task Swarm job) mount the named volume on that node, with the
app's memory and CPU limits; the data survives deploys, a failed release command and a rollback.
"""

from __future__ import annotations

import pytest

from hookdeploy.core.models import JobKind, JobState, Trigger
from test_volumes import DATA, app_files, put, stored


@pytest.fixture
def placed(swarm_instance):
    """The swarm instance and the hostname of the worker node its app is placed on; the app's volumes
    (on whichever node) removed afterwards."""
    nodes = swarm_instance.client.nodes.list(filters={"role": "worker"})
    yield swarm_instance, sorted(node.attrs["Description"]["Hostname"] for node in nodes)[0]
    for node in swarm_instance.cluster.nodes:
        found = swarm_instance.cluster.exec(node, "docker", "volume", "ls", "-q", "--filter",
                                            f"label=hookdeploy.instance={swarm_instance.name}", check=False)
        if found.stdout.split():
            swarm_instance.cluster.exec(node, "docker", "volume", "rm", "-f", *found.stdout.split(), check=False)


def migration(version: str) -> str:
    return f"echo migrating to {version}\necho {version} >> {DATA}/migrations && touch {DATA}/migrated-{version}\n"


def test_a_placed_swarm_app_keeps_its_volume_and_migrates_on_its_node(placed):
    instance, node = placed
    instance.configure({"site": {"replicas": 2, "placement": [f"node.hostname=={node}"],
                                 "volumes": ["data:" + DATA], "release_command": ["sh", "/migrate.sh"],
                                 "release_timeout": 60.0, "memory": "64m", "cpus": 0.5,
                                 "health": {"path": "/health", "contains": "", "deadline": 30.0}}})
    first = instance.deploy("site", app_files("v1", migration("v1")))
    assert first.state is JobState.SUCCEEDED, instance.events(first.id)
    messages = instance.events(first.id)
    assert "migrating to v1" in messages and any(m.startswith("release command exited 0") for m in messages)
    assert set(instance.task_nodes(instance.store.live_release("site").container).values()) == {node}
    assert stored(instance, "/data/migrations") == "v1\n"
    assert put(instance, "/data/note", "kept on the node\n") == 201

    spec = instance.client.services.get(instance.store.live_release("site").container).attrs["Spec"]["TaskTemplate"]
    assert spec["Resources"]["Limits"] == {"MemoryBytes": 64 * 1024**2, "NanoCPUs": 500_000_000}
    assert [(m["Type"], m["Source"], m["Target"]) for m in spec["ContainerSpec"]["Mounts"]] == [
        ("volume", f"{instance.name}-site-data", DATA)]
    labels = instance.cluster.exec(node, "docker", "volume", "inspect", "-f", "{{json .Labels}}",
                                   f"{instance.name}-site-data").stdout
    assert f'"hookdeploy.instance":"{instance.name}"' in labels and '"hookdeploy.volume":"data"' in labels

    second = instance.deploy("site", app_files("v2", migration("v2")))
    assert second.state is JobState.SUCCEEDED, instance.events(second.id)
    assert stored(instance, "/data/migrations") == "v1\nv2\n" and stored(instance) == "kept on the node\n"

    failing = instance.deploy("site", app_files("v3", "echo 'boom: no such table' >&2\nexit 4\n"))
    assert failing.state is JobState.FAILED
    assert failing.error == f"release command 'sh /migrate.sh' exited with status 4; {failing.sha[:12]} did not go live"
    assert "boom: no such table" in instance.events(failing.id)
    assert "<p>v2</p>" in instance.get().body and stored(instance) == "kept on the node\n"

    back = instance.enqueue("site", first.sha, kind=JobKind.ROLLBACK, trigger=Trigger.ROLLBACK)
    instance.work()
    assert instance.store.job(back.id).state is JobState.SUCCEEDED, instance.events(back.id)
    assert "<p>v1</p>" in instance.get().body
    assert stored(instance, "/data/migrations") == "v1\nv2\n" and stored(instance) == "kept on the node\n"
    assert instance.service_names() == {instance.store.live_release("site").container}  # no release job left
