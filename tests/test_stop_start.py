"""`stop APP` and `start APP` with real containers and nginx: the maintenance page answers before the
containers stop, a start is health-checked before it is routed, a push to a stopped app starts it,
and a worker restart keeps a stopped app stopped."""

from __future__ import annotations

import http.client
import json
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from docker_helpers import HOOKDEPLOY, Instance, died_of_sigkill, site_files
from test_push_output import push

PAGE = "<h1>Back soon: the site is being polished</h1>\n"


class Visitors:
    """A few threads GETting / through the proxy until stopped; each answer kept as (status, release,
    Retry-After, body), each failed connection as an error."""

    def __init__(self, port: int, threads: int = 3):
        self.port = port
        self.answers: list[tuple[int, str | None, str | None, str]] = []
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._pool = ThreadPoolExecutor(threads)
        self._threads = threads

    def _visit(self) -> None:
        while not self._stop.is_set():
            connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
            try:
                connection.request("GET", "/")
                response = connection.getresponse()
                self.answers.append((response.status, response.getheader("X-Hookdeploy-Release"),
                                     response.getheader("Retry-After"), response.read().decode()))
            except (OSError, http.client.HTTPException) as error:
                self.errors.append(f"{type(error).__name__}: {error}")
            finally:
                connection.close()
            self._stop.wait(0.01)

    def __enter__(self) -> "Visitors":
        self._futures = [self._pool.submit(self._visit) for _ in range(self._threads)]
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        for future in self._futures:
            future.result()
        self._pool.shutdown()

    def outcomes(self) -> dict[str, int]:
        """How many answers were the release (200 naming it), the maintenance page, or anything else."""
        counts: dict[str, int] = {}
        for status, release, retry_after, body in self.answers:
            kind = ("release" if status == 200 and release else
                    "maintenance" if status == 503 and retry_after == "300" and body == PAGE else
                    f"other: {status} {body[:80]!r}")
            counts[kind] = counts.get(kind, 0) + 1
        return counts


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
    with Visitors(instance.port) as during_stop:
        time.sleep(0.5)
        queued = instance.cli("stop", "site")
        assert queued.returncode == 0, queued.stderr
        instance.work()
        time.sleep(0.5)
    assert not during_stop.errors, during_stop.errors[:5]
    outcomes = during_stop.outcomes()
    print(f"during the stop: {outcomes}")  # shown with -s: the numbers the report quotes
    assert set(outcomes) == {"release", "maintenance"}, outcomes
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

    with Visitors(instance.port) as during_start:
        time.sleep(0.3)
        queued = instance.cli("start", "site", "--json")
        assert queued.returncode == 0, queued.stderr
        assert json.loads(queued.stdout)["kind"] == "start"
        instance.work()
        time.sleep(0.3)
    assert not during_start.errors, during_start.errors[:5]
    outcomes = during_start.outcomes()
    print(f"during the start: {outcomes}")
    assert set(outcomes) == {"release", "maintenance"}, outcomes
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
    instance.configure({"site": {}})
    assert instance.cli("init-repo", "site").returncode == 0
    worker = subprocess.Popen([str(HOOKDEPLOY), "--config", str(instance.config_path), "worker"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 20
    while not instance.store.worker_alive(10) and time.monotonic() < deadline:
        time.sleep(0.05)
    try:
        yield instance
    finally:
        worker.terminate()
        worker.wait(60)


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
