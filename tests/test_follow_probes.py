"""The follower of a swarm app's tasks (Recovery.follow) goes by its own probes, not only by what Swarm
says: a routed task failing FAILED_PROBES probes in a row leaves the upstream at once, whatever Swarm
says of its node, and comes back after one passed probe; while none would be left, the routes stay.
Fast: the runtime (what Swarm says, what a probe from the proxy answers) is a stand-in; the store,
the proxy's files and the follower's decisions are the real ones."""

from __future__ import annotations

import pytest

from hookdeploy.core import config
from hookdeploy.engine import certs, containers, health, proxy, recovery, runtime

SHA = "a" * 40
TASKS = ["10.0.1.2", "10.0.1.3", "10.0.1.4"]


class Swarm:
    """What the runtime says: every task serving (its node "ready"), and whether each answers a probe."""

    followed = True

    def __init__(self):
        self.serving = list(TASKS)
        self.down: set[str] = set()
        self.probes: list[str] = []

    def addresses(self, name):
        return list(self.serving)

    def probe(self, proxy_container, address):
        self.probes.append(address)
        return health.Probe(address not in self.down, None, "no answer: timed out" if address in self.down else "ok")


class Proxy:
    """The proxy container: nginx accepts every config."""

    status = "running"

    def exec_run(self, command, **options):
        return 0, b""


@pytest.fixture
def follower(write_config, store, monkeypatch):
    loaded = config.load(write_config({"site": {"repo": "/r.git", "port": 8000}}))
    proxy.prepare(loaded)
    job = store.enqueue("site", SHA)
    store.record_live("site", SHA, "n/site:aaaaaaaaaaaa", "n-site-aaaaaaaaaaaa-1", job.id)
    path = proxy.app_file(loaded, "site")
    proxy.write_atomically(path, certs.render_routes(loaded, loaded.apps["site"], TASKS, SHA))
    swarm = Swarm()
    monkeypatch.setattr(runtime, "runtime_for", lambda *args: swarm)
    monkeypatch.setattr(containers, "get_container", lambda client, name: Proxy())
    monkeypatch.setattr(recovery, "_failing", {})
    follow = recovery.Recovery(loaded, store, lambda: None, "test-worker").follow
    return follow, swarm, lambda: sorted(proxy.routed_addresses(path))


def test_a_routed_task_failing_two_probes_leaves_the_upstream_and_comes_back_after_one(follower):
    follow, swarm, routed = follower
    assert follow("site") is False and routed() == TASKS
    assert sorted(swarm.probes) == TASKS  # every task probed, routed or not

    swarm.down = {"10.0.1.3"}  # its node is gone; Swarm still says "ready" for a while
    assert follow("site") is False and routed() == TASKS  # one failed probe: kept
    assert follow("site") is True and routed() == ["10.0.1.2", "10.0.1.4"]  # the second: out at once
    assert follow("site") is False and routed() == ["10.0.1.2", "10.0.1.4"]  # still failing: stays out

    swarm.down = set()
    assert follow("site") is True and routed() == TASKS  # one passed probe: back


def test_a_task_swarm_replaced_goes_at_once_and_a_new_one_comes_after_a_passed_probe(follower):
    follow, swarm, routed = follower
    swarm.serving = ["10.0.1.2", "10.0.1.3", "10.0.1.9"]
    swarm.down = {"10.0.1.9"}  # the replacement does not answer yet
    assert follow("site") is True and routed() == ["10.0.1.2", "10.0.1.3"]
    swarm.down = set()
    assert follow("site") is True and routed() == ["10.0.1.2", "10.0.1.3", "10.0.1.9"]


def test_while_no_task_would_be_left_the_routes_stay(follower):
    follow, swarm, routed = follower
    swarm.down = set(TASKS)
    for _ in range(3):
        assert follow("site") is False and routed() == TASKS
