"""The guard after the switch, with real traffic through the real proxy: a release whose health check
passes but whose /api answers 500 is switched back; a good one stays; too few requests decide
nothing; a failing canary never gets all the traffic; a worker killed mid-watch leaves one release.

The sites are the static test site with one more nginx server config: /api answers `api_status`
(docker_helpers.api_site_files).
"""

from __future__ import annotations

import re
import threading
import time

from docker_helpers import Load, api_site_files as api_site, died_of_sigkill, get

from hookdeploy.core.models import JobState, parse_time
from hookdeploy.engine import proxy

WATCH = {"watch_seconds": 6.0, "min_requests": 20, "max_error_ratio": 0.05}


def deployed(instance, files):
    job = instance.deploy("site", files)
    assert job.state is JobState.SUCCEEDED, (job.error, instance.events(job.id))
    return job


def event_time(instance, job_id: int, prefix: str) -> float:
    event = next(event for event in instance.store.events(job_id) if event.message.startswith(prefix))
    return parse_time(event.at).timestamp()


def test_a_release_failing_under_traffic_is_switched_back_and_the_old_one_serves_on(instance):
    instance.configure({"site": {"guard": WATCH}})
    first = deployed(instance, api_site("v1", 200))
    with Load(instance.port, path="/api", threads=2) as api, Load(instance.port, threads=2) as root:
        job = instance.deploy("site", api_site("v2", 500))
    assert job.state is JobState.ROLLED_BACK, instance.events(job.id)
    match = re.fullmatch(rf"guard: (\d+) of (\d+) requests failed \((\d+) %\) in ([67]) s after the switch; "
                         rf"switched back to {first.sha[:12]}", job.error)
    assert match and int(match[1]) >= 20 and int(match[1]) <= int(match[2]), job.error
    took = event_time(instance, job.id, "guard:") - event_time(instance, job.id, "switched proxy")
    print(f"{job.error}; decided {took:.1f} s after the switch; / under load: {root.requests} requests, "
          f"{len(root.errors)} failed")
    assert took <= WATCH["watch_seconds"] + 2, took
    assert root.errors == [], root.errors[:5]  # / never failed: the old release was kept running
    assert set(root.releases) == {first.sha[:12], job.sha[:12]}
    assert api.errors and set(api.errors) == {"status 500"}
    assert instance.get().release == first.sha[:12] and get(instance.port, "/api").status == 200
    assert instance.store.live_release("site").sha == first.sha
    assert [release.sha for release in instance.store.releases("site")] == [first.sha]  # v2 is no release
    assert instance.container_names() == instance.expected_containers()


def test_a_good_release_under_the_same_traffic_stays_and_the_old_one_drains_after_the_watch(instance):
    instance.configure({"site": {"guard": WATCH}})
    first = deployed(instance, api_site("v1", 200))
    with Load(instance.port, path="/api", threads=2) as api, Load(instance.port, threads=2) as root:
        job = deployed(instance, api_site("v2", 200))
    events = instance.events(job.id)
    guard = next(line for line in events if line.startswith("guard:"))
    assert re.fullmatch(rf"guard: 0 of \d+ requests failed \(0 %\) in [67] s after the switch; {job.sha[:12]} stays live",
                        guard), guard
    assert events.index(guard) < next(i for i, line in enumerate(events) if line.startswith("retired"))
    assert api.errors == [] and root.errors == []
    assert instance.store.live_release("site").sha == job.sha
    assert instance.container_names() == instance.expected_containers()
    assert first.sha[:12] in root.releases


def test_fewer_than_min_requests_decide_nothing(instance):
    instance.configure({"site": {"guard": WATCH}})
    deployed(instance, api_site("v1", 200))
    job = instance.enqueue("site", instance.commit("site", api_site("v2", 500)))
    # Three failing requests in the watch: 100 % of them failed, but three are too few to judge.
    def three_failures() -> None:
        deadline = time.monotonic() + 60
        while instance.store.live_release("site").job != job.id and time.monotonic() < deadline:
            time.sleep(0.05)
        for _ in range(3):
            get(instance.port, "/api")

    caller = threading.Thread(target=three_failures)
    caller.start()
    instance.work()
    caller.join()
    finished = instance.store.job(job.id)
    assert finished.state is JobState.SUCCEEDED, finished.error
    guard = next(line for line in instance.events(job.id) if line.startswith("guard:"))
    # (the fourth request, when there is one, is the deploy's own check through the proxy)
    assert re.match(r"guard: 3 of [34] requests failed \((100|75) %\)", guard) and \
        "fewer than min_requests = 20: nothing decided" in guard, guard


def test_a_failing_canary_never_gets_all_the_traffic(instance):
    instance.configure({"site": {"guard": {"canary_percent": 30, "canary_seconds": 5, "min_requests": 10}}})
    first = deployed(instance, api_site("v1", 200))
    with Load(instance.port, path="/api", threads=2) as api, Load(instance.port, threads=2) as root:
        job = instance.deploy("site", api_site("v2", 500))
    assert job.state is JobState.ROLLED_BACK, instance.events(job.id)
    assert re.fullmatch(rf"guard: canary: \d+ of \d+ requests failed \(\d+ %\) in 5 s at 30 %; {job.sha[:12]} never "
                        rf"got all the traffic, {first.sha[:12]} serves on", job.error), job.error
    events = instance.events(job.id)
    assert not any(line.startswith("switched proxy") for line in events), events
    assert root.errors == []
    share = root.releases.get(job.sha[:12], 0) / root.requests
    print(f"{job.error}; / under load: {root.requests} requests, {len(root.errors)} failed, {share:.0%} to the canary")
    assert 0.05 < share < 0.6, root.releases  # about 30 % of / while the canary ran, never all of it
    assert api.errors and all(error == "status 500" for error in api.errors)
    assert instance.get().release == first.sha[:12]
    assert "_canary" not in proxy.read(proxy.app_file(instance.config, "site"))
    assert instance.container_names() == instance.expected_containers()


def test_a_worker_killed_during_the_watch_leaves_one_release_routed_and_says_which(instance):
    instance.configure({"site": {"guard": {**WATCH, "watch_seconds": 60.0}}})
    deployed(instance, api_site("v1", 200))
    job = instance.enqueue("site", instance.commit("site", api_site("v2", 200)))
    assert died_of_sigkill(instance.worker_process(fault="watch"))
    assert len(instance.containers(app="site")) == 2  # both releases run while the watch is on
    instance.work()  # the next worker recovers
    finished = instance.store.job(job.id)
    assert finished.state is JobState.INTERRUPTED
    assert any(f"{job.sha[:12]} had gone live before the worker died and stays live, the one release the proxy "
               "routes to" in line for line in instance.events(job.id)), instance.events(job.id)
    live = instance.store.live_release("site")
    assert live.job == job.id
    running = instance.containers(app="site")
    assert [container.name for container in running] == [live.container]
    routed = proxy.routed(proxy.app_file(instance.config, "site"))
    running[0].reload()
    assert routed == [f"{next(iter(running[0].attrs['NetworkSettings']['Networks'].values()))['IPAddress']}:80"]
    assert instance.get().release == job.sha[:12]
