"""engine/runtime.py on real containers: a live release's logs (every replica's lines, labelled
`replica N`), followed as they come; stop and start of its replicas (the start health-checked by the
runtime's check_health, as a candidate is); remove_all leaves no object with the app's labels and keeps
its volumes. Also how Swarm's `--details` log lines are told apart (no engine)."""

from __future__ import annotations

import http.client
import re
import threading
import time

from docker_helpers import site_files

from hookdeploy.core.models import JobState
from hookdeploy.engine import applogs, runtime


def _runtime(instance):
    config = instance.config
    return runtime.runtime_for(config, config.app("site"), instance.client)


def _get(ip: str, path: str) -> int:
    connection = http.client.HTTPConnection(ip, 80, timeout=5)
    try:
        connection.request("GET", path)
        return connection.getresponse().status
    finally:
        connection.close()


def _live(instance, replicas: int = 3) -> str:
    instance.configure({"site": {"replicas": replicas, "volumes": ["data:/data"]}})
    assert instance.deploy("site", site_files("v1")).state is JobState.SUCCEEDED
    return instance.store.live_release("site").container


def test_logs_of_three_replicas_each_line_labelled_by_its_replica_and_tail_per_replica(instance):
    name = _live(instance)
    where = _runtime(instance)
    addresses = where.addresses(name)
    assert len(addresses) == 3
    members = {container.attrs["NetworkSettings"]["Networks"][instance.name]["IPAddress"]:
               "replica 1" if container.name == name else f"replica {container.name.removeprefix(name + '-')}"
               for container in instance.containers(app="site")}
    assert sorted(members.values()) == ["replica 1", "replica 2", "replica 3"]
    for ip in addresses:
        _get(ip, f"/marker-{ip}")

    lines = list(where.logs(name))
    for ip in addresses:
        assert any(label == members[ip] and f"/marker-{ip} " in text for label, text in lines), (ip, lines)
        # each replica's line only under its own label
        assert not any(label != members[ip] and f"/marker-{ip} " in text for label, text in lines)
    assert {label for label, _ in lines} == set(members.values())
    last = list(where.logs(name, tail=1))
    assert sorted(label for label, _ in last) == sorted(members.values())  # the last line of each
    assert not any(re.match(r"\d{4}-\d\d-\d\dT", text) for _, text in last)  # the timestamps are taken off
    assert list(where.logs(name, since=time.time() + 3600)) == []


def test_logs_follow_brings_new_lines_and_ends_when_the_release_stops_then_start_serves_again(instance):
    name = _live(instance, replicas=2)
    where = _runtime(instance)
    addresses = where.addresses(name)
    seen: list[tuple[str, str]] = []
    ended = threading.Event()

    def follow() -> None:
        for item in where.logs(name, tail=0, follow=True):
            seen.append(item)
        ended.set()

    threading.Thread(target=follow, daemon=True).start()
    # Asked again until both replicas' lines came: the follow attaches (tail=0) when it attaches.
    deadline = time.monotonic() + 20
    while len({label for label, text in seen if "/followed" in text}) < 2 and time.monotonic() < deadline:
        for ip in addresses:
            _get(ip, "/followed")
        time.sleep(0.5)
    assert len({label for label, text in seen if "/followed" in text}) == 2, seen

    where.stop(name)
    assert ended.wait(15), "following did not end when the release stopped"
    assert {container.status for container in instance.containers(app="site")} == {"exited"}
    assert where.addresses(name) == []

    started = where.start(name)
    assert len(started.addresses) == 2
    assert {container.status for container in instance.containers(app="site")} == {"running"}
    said = where.check_health(started, None, threading.Event(), lambda text: None)
    assert said.startswith("health check passed in ") and said.endswith(": 2 containers"), said
    assert [_get(ip, "/health") for ip in started.addresses] == [200, 200]  # healthy once check_health returns


def test_remove_all_leaves_no_container_of_the_app_and_keeps_its_volume_and_the_proxy(instance):
    name = _live(instance, replicas=2)
    assert instance.containers(app="site")
    removed = _runtime(instance).remove_all("site")
    assert set(removed) == {name, f"{name}-2"}
    assert instance.containers(app="site") == []
    assert instance.container_names() == {f"{instance.name}-proxy"}
    assert instance.client.volumes.get(f"{instance.name}-site-data") is not None
    assert _runtime(instance).remove_all("site") == []


def test_swarm_log_lines_are_told_apart_by_their_task_and_labelled_slot_at_node():
    stamped = ("2026-12-03T14:00:00.000000000Z com.docker.swarm.node.id=n1,com.docker.swarm.service.id=s1,"
               "com.docker.swarm.task.id=abc123 GET / 200 with spaces")
    assert applogs.task_line(stamped) == ("2026-12-03T14:00:00.000000000Z", "abc123", "GET / 200 with spaces")
    assert applogs.task_line("2026-12-03T14:00:01.000000000Z  bare line")[1:] == ("", "bare line")
    task = runtime.swarm.Task("abc123", 2, "node-b", "running", "running", "", "10.0.0.5", True)
    assert applogs.task_label(task) == "task 2@node-b"
    assert applogs.replica_label("1-site-abc-7", "1-site-abc-7-3") == "replica 3"
