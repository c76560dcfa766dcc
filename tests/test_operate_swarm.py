"""Operating a Swarm app on the 3-node rig (scripts/cluster.sh): `stop` routes it to its maintenance page and
scales its service to 0, `start` brings 3 new tasks up, health-checked before they are routed, and
`remove` (once it is gone from deploy.toml) leaves no service, container, route or image with its labels
on any node. (app-logs of its tasks: test_app_logs_swarm.py.)"""

from __future__ import annotations

import re
import time

from docker_helpers import site_files
from hookdeploy.core.models import JobState
from hookdeploy.engine import runtime

BUILT_IN_PAGE = "site is down for maintenance"


def running_tasks(instance, service_name: str) -> int:
    service = instance.client.services.get(service_name)
    return sum(task["Status"]["State"] == "running" for task in service.tasks(filters={"desired-state": "running"}))


def labelled_containers(instance) -> dict[str, list[str]]:
    """Every container of the app on each node, running or not, by its labels."""
    found = {}
    for node in instance.cluster.nodes:
        listed = instance.cluster.exec(node, "docker", "ps", "-a", "--format", "{{.Names}}", "--filter",
                                       f"label=hookdeploy.instance={instance.name}", "--filter", "label=hookdeploy.app=site")
        found[node] = listed.stdout.split()
    return found


def test_stop_start_and_remove_of_a_service_of_three_tasks(swarm_instance):
    instance = swarm_instance
    # A nested engine under load can take a few seconds to answer: the tests' usual 4 s deadline is too tight here.
    instance.configure({"site": {"replicas": 3, "health": {"deadline": 30.0, "timeout": 2.0}}})
    job = instance.deploy("site", site_files("v1"))
    assert job.state is JobState.SUCCEEDED, job.error
    name = instance.store.live_release("site").container
    assert instance.get().release == job.sha[:12] and running_tasks(instance, name) == 3

    assert instance.cli("stop", "site").returncode == 0
    instance.work()
    stop = instance.store.jobs("site", limit=1)[0]
    assert (stop.kind.value, stop.state) == ("stop", JobState.SUCCEEDED), stop.error
    answer = instance.get()
    assert answer.status == 503 and BUILT_IN_PAGE in answer.body
    assert instance.client.services.get(name).attrs["Spec"]["Mode"]["Replicated"]["Replicas"] == 0
    assert running_tasks(instance, name) == 0

    assert instance.cli("start", "site").returncode == 0
    instance.work()
    start = instance.store.jobs("site", limit=1)[0]
    assert (start.kind.value, start.state) == ("start", JobState.SUCCEEDED), start.error
    events = instance.events(start.id)
    checked = next(message for message in events if "health check passed" in message)
    assert re.search(r"health check passed in [\d.]+ s: 3 tasks on \d nodes", checked), events
    assert events.index(checked) < events.index(next(m for m in events if m.startswith("switched proxy")))
    assert running_tasks(instance, name) == 3
    config = instance.config
    serving = runtime.runtime_for(config, config.app("site"), instance.client).addresses(name)
    routed = (instance.state_dir / "proxy" / "conf.d" / "app-site.conf").read_text()
    assert len(serving) == 3 and all(f"server {ip}:80" in routed for ip in serving), routed
    assert instance.get() == (200, job.sha[:12], "<p>v1</p>\n")

    instance.configure({"other": {"hostnames": ["other.test"]}})  # site's table leaves deploy.toml
    removed = instance.cli("remove", "site")
    assert removed.returncode == 0, removed.stderr
    assert instance.services(app="site") == []
    assert not (instance.state_dir / "proxy" / "conf.d" / "app-site.conf").exists()
    labels = [f"hookdeploy.instance={instance.name}", "hookdeploy.app=site"]
    left = [(raw["RepoTags"], raw["RepoDigests"]) for raw in instance.client.api.images(filters={"label": labels})]
    assert left == [], (left, removed.stdout)
    assert instance.client.api.images(name=f"{instance.name}/site") == []
    assert instance.client.api.images(name=f"{instance.cluster.registry_url}/{instance.name}/site") == []
    deadline = time.monotonic() + 30  # the workers' task containers go as Swarm tears them down
    while any(labelled_containers(instance).values()) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert labelled_containers(instance) == {node: [] for node in instance.cluster.nodes}
    assert instance.get(host="site.test").status == 404  # the proxy's catch-all: nothing routes to site
    assert [job.kind.value for job in instance.store.jobs("site")][:3] == ["start", "stop", "deploy"]  # history stays
