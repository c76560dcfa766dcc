"""Deploy's decisions, each job end a deploy can reach, judged fast against the in-memory engine
(memory_engine.py: no Docker, a virtual clock) and, for the scenarios that are cheap there, the same
table against the real engine (the contract: the same job end state, error and live release).

A scenario: the app's config, the second commit's files (the first, "one", is live), what happens
meanwhile (the worker told to stop right after a step: HOOKDEPLOY_FAULT=term:STEP on the real engine),
and the job's end: its state, its error (a pattern, FIRST standing for the live release's tag) and
which release is live afterwards. The guard's and the canary's scenarios need traffic for seconds on
the real engine: tests/test_guard.py has them there, under real load.
"""

from __future__ import annotations

import re
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Mapping

import pytest
from docker_helpers import Instance, api_site_files, site_files
from memory_engine import MemoryEngine, NoEngine

from hookdeploy.core.errors import Aborted
from hookdeploy.core.models import JobState, release_tag
from hookdeploy.engine import proxy
from hookdeploy.engine.deploy import Deploy

# Every scenario's app answers for one hostname, the one the verification sends: a release of the app is
# routed by name from the first deploy on, and the scenarios share one proxy on the real engine.
SITE = {"hostnames": ["site.test"]}
WATCH = {"watch_seconds": 6.0, "min_requests": 20, "max_error_ratio": 0.05}
CANARY = {"canary_percent": 50.0, "canary_seconds": 3.0, "min_requests": 10, "max_error_ratio": 0.05}
VERIFY_FAILS = ("server { listen 80 default_server; root /usr/share/nginx/html; }\n"
                "server { listen 80; server_name site.test; return 503; }\n")


@dataclass(frozen=True)
class Scenario:
    app: Mapping[str, Any]
    files: Mapping[str, Any]
    state: JobState
    error: str | None  # a pattern searched for in the job's error; FIRST: the live release's tag
    goes_live: bool  # the second commit is live afterwards (else the first still is)
    stop_at: str | None = None  # "health" or "switch": the worker is told to stop as that step ends
    first: Mapping[str, Any] = field(default_factory=lambda: site_files("one"))
    on_docker: bool = False  # cheap on the real engine: run in the contract test too


SCENARIOS = {
    "succeeded": Scenario({}, site_files("two"), JobState.SUCCEEDED, None, True, on_docker=True),
    "failed at build": Scenario({}, site_files("broken", dockerfile_tail="RUN echo compiling && exit 7\n"),
                                JobState.FAILED, r"^build failed: .*exit code: 7$", False, on_docker=True),
    "failed at health": Scenario({}, site_files("no health page", health=None), JobState.FAILED,
                                 r"GET /health status 404, want 200$", False, on_docker=True),
    "rolled back by verify": Scenario(
        {},
        site_files("two", extra={"default.conf": VERIFY_FAILS},
                   dockerfile_tail="COPY default.conf /etc/nginx/conf.d/default.conf\n"),
        JobState.ROLLED_BACK, r"^verification through the proxy failed: status 503, want 200; FIRST is live again$",
        False, on_docker=True),
    "rolled back by the guard": Scenario(
        {"guard": WATCH}, api_site_files("v2", 500), JobState.ROLLED_BACK,
        r"^guard: \d+ of \d+ requests failed \(\d+ %\) in [67] s after the switch; switched back to FIRST$", False,
        first=api_site_files("v1", 200)),
    "kept by the guard": Scenario({"guard": WATCH}, api_site_files("v2", 200), JobState.SUCCEEDED, None, True,
                                  first=api_site_files("v1", 200)),
    "canary refused": Scenario(
        {"guard": CANARY}, api_site_files("v2", 500), JobState.ROLLED_BACK,
        r"^guard: canary: \d+ of \d+ requests failed \(\d+ %\) in 3 s at 50 %; \w{12} never got all the traffic, "
        r"FIRST serves on$", False, first=api_site_files("v1", 200)),
    "canary passed": Scenario({"guard": CANARY}, api_site_files("v2", 200), JobState.SUCCEEDED, None, True,
                              first=api_site_files("v1", 200)),
    "interrupted before the switch": Scenario(
        {}, site_files("two"), JobState.INTERRUPTED, r"^the worker is restarting; queued again as job \d+$", False,
        stop_at="health", on_docker=True),
    "finished after a stop past the switch": Scenario({"guard": WATCH}, site_files("two"), JobState.SUCCEEDED, None,
                                                      True, stop_at="switch", on_docker=True),
}


def assert_ended_as(scenario: Scenario, job, first_sha: str, live_sha: str) -> None:
    """The contract: what the user sees of the job and of the app afterwards."""
    assert job.state is scenario.state, job.error
    if scenario.error is None:
        assert job.error is None, job.error
    else:
        assert re.search(scenario.error.replace("FIRST", release_tag(first_sha)), job.error or "", re.M), job.error
    assert live_sha == (job.sha if scenario.goes_live else first_sha)


# -- fast: the in-memory engine ---------------------------------------------------------------------------------


def run_in_memory(instance: Instance, engine: MemoryEngine, files, stop: threading.Event | None = None):
    """Commit, queue and run one job as the worker does (claim, Deploy, finish; a stop is interrupted, and
    the job queued again)."""
    queued = instance.enqueue("site", instance.commit("site", files))
    claimed = instance.store.claim("test-worker", apps=["site"])
    assert claimed.id == queued.id
    stop = stop or threading.Event()
    try:
        state, error = Deploy(instance.config, instance.store, NoEngine, claimed, stop, runtimes=engine.runtime,
                              seams=engine).run()
    except Aborted:
        return instance.store.interrupt(queued.id, "the worker is restarting")[0]
    return instance.store.finish(queued.id, state, error)


@pytest.mark.parametrize("name", list(SCENARIOS))
def test_each_end_of_a_deploy_in_memory(tmp_path, name):
    scenario = SCENARIOS[name]
    instance = Instance(tmp_path, client=None)
    instance.configure({"site": {**SITE, **scenario.app}})
    engine = MemoryEngine(instance.config)
    first = run_in_memory(instance, engine, scenario.first)
    assert first.state is JobState.SUCCEEDED, first.error

    stop = threading.Event()
    if scenario.stop_at == "health":
        engine.on_health = lambda _: stop.set()
    elif scenario.stop_at == "switch":
        engine.on_switch = stop.set
    job = run_in_memory(instance, engine, scenario.files, stop)

    assert_ended_as(scenario, job, first.sha, instance.store.live_release("site").sha)
    events = instance.events(job.id)
    # Only the live release runs afterwards (a candidate that did not stay is gone, the one replaced retired),
    # and the proxy's routes send every request to it.
    live = instance.store.live_release("site")
    assert engine.live() == [live.sha]
    assert proxy.routed_addresses(proxy.app_file(instance.config, "site")) == [engine.running[live.container].address]
    if scenario.stop_at == "switch":
        assert any("stays live (cut short: the worker is stopping)" in event for event in events), events
    if name == "rolled back by the guard":
        assert any(event.startswith("guard: ") and "switching back" in event for event in events), events
    if name.startswith("canary"):
        assert any(event.startswith("canary: 50 % of requests go to") for event in events), events


def test_the_fast_tier_covers_every_end_of_a_deploy():
    ends = {scenario.state for scenario in SCENARIOS.values()}
    assert ends == {JobState.SUCCEEDED, JobState.FAILED, JobState.ROLLED_BACK, JobState.INTERRUPTED}


# -- the contract: the same scenarios on the real engine ---------------------------------------------------------


@pytest.fixture(scope="module")
def live_site(docker_engine, tmp_path_factory):
    """One instance for the module, release "one" live at first; each scenario starts from whatever is live."""
    made = Instance(tmp_path_factory.mktemp("contract"), docker_engine)
    try:
        made.configure({"site": {**SITE, "health": {"deadline": 2.5}}})
        job = made.deploy("site", site_files("one"))
        assert job.state is JobState.SUCCEEDED, job.error
        yield made
    finally:
        made.cleanup()


ON_DOCKER = [name for name, scenario in SCENARIOS.items() if scenario.on_docker]


@pytest.mark.parametrize("name", ON_DOCKER)
def test_the_same_ends_on_the_real_engine(live_site, name):
    scenario = SCENARIOS[name]
    first = live_site.store.live_release("site")
    live_site.configure({"site": {**SITE, **scenario.app, "health": {"deadline": 2.5}}})
    started = time.monotonic()
    if scenario.stop_at is None:
        job = live_site.deploy("site", scenario.files, message=name)
    else:  # a worker process, sent SIGTERM by itself right after the step, as systemd would
        queued = live_site.enqueue("site", live_site.commit("site", scenario.files, message=name))
        completed = live_site.worker_process(fault=f"term:{scenario.stop_at}")
        assert completed.returncode == 0, completed.stderr
        job = live_site.store.job(queued.id)
    print(f"{name}: {time.monotonic() - started:.1f} s")
    assert_ended_as(scenario, job, first.sha, live_site.store.live_release("site").sha)
    assert live_site.container_names() == live_site.expected_containers()


def test_a_switch_back_after_the_app_got_hostnames_routes_the_old_release_again(live_site):
    """Found by the contract test: an app deployed without hostnames (its file then is the proxy's default
    server) and given some later; the next release fails verification. Putting back the file of the first
    deploy made nginx refuse to reload (two default servers: the proxy's own default file is written once
    the app has hostnames), so the failed release stayed routed. The old release's routes are now rendered
    again with the config in force."""
    health = {"deadline": 2.5}
    live_site.configure({"site": {**SITE, "health": health}, "blog": {"health": health}})
    first = live_site.deploy("blog", site_files("blog one"))
    assert first.state is JobState.SUCCEEDED, first.error
    live_site.configure({"site": {**SITE, "health": health}, "blog": {"hostnames": ["blog.test"], "health": health}})
    failing = site_files("blog two", extra={"default.conf": VERIFY_FAILS.replace("site.test", "blog.test")},
                         dockerfile_tail="COPY default.conf /etc/nginx/conf.d/default.conf\n")
    job = live_site.deploy("blog", failing)
    assert job.state is JobState.ROLLED_BACK, job.error
    assert job.error.endswith(f"{release_tag(first.sha)} is live again"), job.error
    answer = live_site.get(host="blog.test")
    assert (answer.status, answer.release) == (200, release_tag(first.sha))
    assert live_site.get(host="site.test").release == release_tag(live_site.store.live_release("site").sha)
    assert live_site.container_names() == live_site.expected_containers()
