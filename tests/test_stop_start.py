"""`stop APP` and `start APP` with real containers and nginx: under `hey` load the maintenance page
answers before the containers stop (no connection error), a start is health-checked before it is
routed, a push to a stopped app starts it (and a guard that switches that push back leaves the app
stopped behind its page), and a worker restart keeps a stopped app stopped."""

from __future__ import annotations

import json
import signal
import time

import pytest

from cluster_helpers import Hey, HeyResult
from docker_helpers import Instance, Load, api_site_files, died_of_sigkill, hooked_site_with_worker, site_files
from hookdeploy.core.models import JobState
from hookdeploy.engine import traffic
from test_push_output import push

PAGE = "<h1>Back soon: the site is being polished</h1>\n"
LOAD_SECONDS_AT_MOST = 60  # hey is interrupted 1 s after the action


def loaded(instance: Instance, action) -> tuple[HeyResult, dict[str, int]]:
    """`action()` while `hey` loads the proxy's / (8 connections, no keep-alive) from 0.5 s before it to 1 s
    after: what hey counted, and how the proxy's access log classes each answer of that time (the
    release's 200, the maintenance page's 503, which nginx answers itself: no upstream, no release
    header; anything else by its status)."""
    reader = traffic.LogReader(traffic.log_path(instance.config, "site"))
    release = instance.store.live_release("site").sha[:12]
    load = Hey(f"http://{instance.address}:{instance.port}/", seconds=LOAD_SECONDS_AT_MOST, concurrency=8)
    time.sleep(0.5)  # answers before the action
    action()
    time.sleep(1.0)  # and after it
    assert load.process.poll() is None, "hey ended before the action did"
    load.process.send_signal(signal.SIGINT)  # hey stops and reports what it counted
    result = load.result()
    kinds: dict[str, int] = {}
    for hit in reader.read():
        kind = ("release" if hit.status == 200 and hit.release == release else
                "maintenance" if hit.status == 503 and not hit.release and hit.upstream in ("", "-") else
                f"other: {hit.status} {hit.release} {hit.upstream}")
        kinds[kind] = kinds.get(kind, 0) + 1
    return result, kinds


def app_state(instance: Instance) -> dict:
    completed = instance.cli("status", "site", "--json")
    assert completed.returncode == 0, completed.stderr
    return json.loads(completed.stdout)["apps"]["site"]


def container_states(instance: Instance, job: int) -> list[str]:
    return [container.status for container in instance.containers(app="site", job=str(job))]


@pytest.fixture
def stoppable(instance: Instance, tmp_path):
    """An instance whose app `site` (2 replicas, its own maintenance page) has a release live."""
    page = tmp_path / "maintenance.html"
    page.write_text(PAGE)
    instance.configure({"site": {"maintenance_page": str(page), "replicas": 2}})
    job = instance.deploy("site", site_files("one"))
    assert job.state.value == "succeeded", job.error
    return instance


def test_stop_under_load_answers_the_maintenance_page_then_start_routes_the_healthy_release(stoppable):
    instance = stoppable
    live = instance.store.live_release("site")

    def stop() -> None:
        queued = instance.cli("stop", "site")
        assert queued.returncode == 0, queued.stderr
        instance.work()

    during_stop, kinds = loaded(instance, stop)
    print(f"during the stop: hey {during_stop.statuses} {during_stop.errors}; proxy log {kinds}")  # with -s
    assert during_stop.errors == {}, during_stop.output  # no refused or reset connection, no timeout
    assert set(during_stop.statuses) == {200, 503}, during_stop.output
    assert set(kinds) == {"release", "maintenance"}, kinds  # every 503 was the page
    assert sum(kinds.values()) == during_stop.total
    stop_job = instance.store.jobs("site", limit=1)[0]
    assert (stop_job.kind.value, stop_job.state.value) == ("stop", "succeeded"), stop_job.error
    # stopped, not removed: both replicas are still there, exited
    assert container_states(instance, live.job) == ["exited", "exited"]
    answer = instance.get()
    assert answer.status == 503 and answer.body == PAGE
    assert app_state(instance)["stopped"] is True
    assert instance.store.live_release("site").id == live.id  # still the app's live release

    again = instance.cli("stop", "site")
    assert again.returncode == 2 and again.stderr.count("\n") == 1
    assert "site is stopped already" in again.stderr

    def start() -> None:
        queued = instance.cli("start", "site", "--json")
        assert queued.returncode == 0, queued.stderr
        assert json.loads(queued.stdout)["kind"] == "start"
        instance.work()

    during_start, kinds = loaded(instance, start)
    print(f"during the start: hey {during_start.statuses} {during_start.errors}; proxy log {kinds}")
    assert during_start.errors == {}, during_start.output
    assert set(during_start.statuses) == {200, 503}, during_start.output
    assert set(kinds) == {"release", "maintenance"}, kinds
    start_job = instance.store.jobs("site", limit=1)[0]
    assert start_job.state.value == "succeeded", start_job.error
    events = instance.events(start_job.id)
    assert any(message.startswith("started ") and "health check passed" in message for message in events)
    assert events.index(next(m for m in events if "health check passed" in m)) < \
        events.index(next(m for m in events if m.startswith("switched proxy")))
    assert container_states(instance, live.job) == ["running", "running"]
    assert instance.get() == (200, live.sha[:12], "<p>one</p>\n")
    assert app_state(instance)["stopped"] is False

    history = json.loads(instance.cli("history", "site", "--json").stdout)
    assert [job["kind"] for job in history[:3]] == ["start", "stop", "deploy"]
    not_stopped = instance.cli("start", "site")
    assert not_stopped.returncode == 2 and "site is not stopped" in not_stopped.stderr


def test_stop_and_start_refused_for_an_unknown_app_or_nothing_live(instance: Instance):
    instance.configure({"site": {}})
    for command in ("stop", "start"):
        unknown = instance.cli(command, "nosuchapp")
        assert unknown.returncode == 2 and unknown.stderr.count("\n") == 1 and "nosuchapp" in unknown.stderr
        nothing = instance.cli(command, "site")
        assert nothing.returncode == 2 and nothing.stderr.count("\n") == 1
        assert f"site has no live release to {command}" in nothing.stderr
    assert instance.store.jobs("site") == []


def test_a_worker_restart_keeps_a_stopped_app_stopped_with_its_page(stoppable):
    instance = stoppable
    live = instance.store.live_release("site")
    assert instance.cli("stop", "site").returncode == 0
    # the worker killed once the page is routed, before the containers stop
    assert died_of_sigkill(instance.worker_process(fault="maintenance"))
    assert container_states(instance, live.job) == ["running", "running"]
    assert instance.get().status == 503
    # the next worker recovers the job: the page stays, the containers are not started again, and its
    # retry finishes the stop
    completed = instance.worker_process()
    assert completed.returncode == 0, completed.stderr
    stop_job, retry = instance.store.jobs("site", limit=2)[::-1]
    assert (stop_job.state.value, retry.kind.value, retry.trigger.value, retry.state.value) == \
        ("interrupted", "stop", "retry", "succeeded"), retry.error
    assert container_states(instance, live.job) == ["exited", "exited"]
    answer = instance.get()
    assert answer.status == 503 and answer.body == PAGE

    # the engine back after a restart (every app repaired), with a replica started behind our back and the
    # app's proxy file lost: the page is routed again and the replica stopped
    instance.containers(app="site", job=str(live.job))[0].start()
    (instance.state_dir / "proxy" / "conf.d" / "app-site.conf").unlink()
    from hookdeploy.engine.worker import Worker

    Worker(instance.config, instance.store).heal(repair_all=True)
    assert container_states(instance, live.job) == ["exited", "exited"]
    answer = instance.get()
    assert answer.status == 503 and answer.body == PAGE and app_state(instance)["stopped"] is True


@pytest.fixture
def pushing_stopped(instance: Instance):
    """An app with the post-receive hook, a worker process running, and the built-in page."""
    with hooked_site_with_worker(instance):
        yield instance


def wait_done(instance: Instance, job_id: int) -> None:
    deadline = time.monotonic() + 60
    while not instance.store.job(job_id).state.finished:
        assert time.monotonic() < deadline, f"job {job_id} still {instance.store.job(job_id).state.value}"
        time.sleep(0.1)


def test_a_push_to_a_stopped_app_deploys_and_starts_it_and_says_so(pushing_stopped):
    instance = pushing_stopped
    first, _ = push(instance, site_files("one"))
    queued = instance.cli("stop", "site", "--json")
    assert queued.returncode == 0, queued.stderr
    wait_done(instance, json.loads(queued.stdout)["id"])
    answer = instance.get()
    assert answer.status == 503 and "site is down for maintenance" in answer.body  # the built-in page
    old = instance.store.live_release("site")

    second, seen = push(instance, site_files("two"))
    assert "hookdeploy: site is stopped (maintenance page): this push deploys and starts it" in seen
    assert f"(was {first[:12]}, stopped: the app runs again)" in seen
    assert instance.get() == (200, second[:12], "<p>two</p>\n")
    assert app_state(instance)["stopped"] is False
    assert container_states(instance, old.job) == []  # the stopped release retired as any replaced one


def test_a_push_to_a_stopped_app_switched_back_by_the_guard_leaves_it_stopped_behind_its_page(instance, tmp_path):
    """The push meant to start the app; its release failed under traffic, so the app goes back to how it
    was: its earlier release live and stopped (by the same stop job), the maintenance page answering."""
    page = tmp_path / "maintenance.html"
    page.write_text(PAGE)
    instance.configure({"site": {"maintenance_page": str(page),
                                 "guard": {"watch_seconds": 5.0, "min_requests": 10, "max_error_ratio": 0.05}}})
    first = instance.deploy("site", api_site_files("v1", 200))
    assert first.state is JobState.SUCCEEDED, first.error
    stop = json.loads(instance.cli("stop", "site", "--json").stdout)
    instance.work()
    assert instance.store.job(stop["id"]).state is JobState.SUCCEEDED

    with Load(instance.port, path="/api", threads=2) as api:
        second = instance.deploy("site", api_site_files("v2", 500))
    assert second.state is JobState.ROLLED_BACK, instance.events(second.id)
    assert second.error.endswith(f"switched back to {first.sha[:12]}, stopped (its maintenance page answers)"), \
        second.error
    assert "status 500" in api.errors  # the guard saw v2 fail
    assert instance.store.live_release("site").sha == first.sha
    assert app_state(instance)["stopped"] is True
    assert instance.store.stopped_by("site") == stop["id"]
    answer = instance.get()
    assert answer.status == 503 and answer.body == PAGE
    assert container_states(instance, first.id) == ["exited"]  # never started by the switch back
    assert container_states(instance, second.id) == []  # the failed release is gone
    again = instance.cli("stop", "site")
    assert again.returncode == 2 and f"site is stopped already (since job {stop['id']})" in again.stderr

    assert instance.cli("start", "site").returncode == 0
    instance.work()
    assert instance.get().release == first.sha[:12] and app_state(instance)["stopped"] is False


def test_a_stopped_app_answers_its_page_over_https_too(instance: Instance, tmp_path):
    from docker_helpers import free_port
    from pebble_helpers import https_get, self_signed

    host, tls_port = "site.test", free_port()
    cert_file, key_file = self_signed(tmp_path / "own", host)
    page = tmp_path / "maintenance.html"
    page.write_text(PAGE)
    instance.configure({"site": {"hostnames": [host], "tls": {"cert_file": str(cert_file), "key_file": str(key_file)},
                                 "maintenance_page": str(page)}},
                       proxy={"publish_tls": f"127.0.0.1:{tls_port}"})
    job = instance.deploy("site", site_files("one"))
    assert job.state.value == "succeeded", job.error
    assert instance.cli("stop", "site").returncode == 0
    instance.work()
    secure = https_get(tls_port, host, cafile=cert_file)
    assert (secure.status, secure.headers.get("retry-after"), secure.body) == (503, "300", PAGE)
    plain = instance.get(host=host)  # redirect_http: http:// still sends visitors to https://
    assert plain.status == 308
    assert instance.cli("start", "site").returncode == 0
    instance.work()
    secure = https_get(tls_port, host, cafile=cert_file)
    assert (secure.status, secure.release) == (200, job.sha[:12])
