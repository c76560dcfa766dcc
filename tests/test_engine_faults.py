"""The Docker engine away (issue 8): when the worker starts and in the middle of a job; and a
full disk under the build folder.

The worker reaches the real engine through a socket relay the test can cut and restore
(DOCKER_HOST=unix://RELAY), which is what a worker sees when dockerd stops or restarts: its
connections drop and new ones are refused. The engine itself, and so the live site behind the
proxy, keeps running, so "the site keeps answering" is measured too.
"""

from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest

from docker_helpers import HOOKDEPLOY, Instance, Load, live_instance, site_files
from hookdeploy.core.models import JobState, Trigger

pytestmark = pytest.mark.docker

ENGINE_SOCKET = "/var/run/docker.sock"


class Relay:
    """A unix socket that forwards every connection to the engine's socket, until cut."""

    def __init__(self, path: Path):
        self.path = path
        self._listener: socket.socket | None = None
        self._connections: list[socket.socket] = []
        self._lock = threading.Lock()

    def start(self) -> None:
        self.path.unlink(missing_ok=True)
        listener = socket.socket(socket.AF_UNIX)
        listener.bind(str(self.path))
        listener.listen(64)
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def cut(self) -> None:
        """Drop every connection and refuse new ones (the socket file goes, as when dockerd stops)."""
        listener, self._listener = self._listener, None
        if listener is not None:
            listener.close()
        self.path.unlink(missing_ok=True)
        with self._lock:
            for connection in self._connections:
                try:
                    connection.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                connection.close()
            self._connections.clear()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            engine = socket.socket(socket.AF_UNIX)
            engine.connect(ENGINE_SOCKET)
            with self._lock:
                self._connections += [client, engine]
            for source, target in ((client, engine), (engine, client)):
                threading.Thread(target=self._pipe, args=(source, target), daemon=True).start()

    @staticmethod
    def _pipe(source: socket.socket, target: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                target.sendall(data)
        except OSError:
            pass
        finally:
            for end in (source, target):
                try:
                    end.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass


@pytest.fixture
def relayed(docker_engine, tmp_path):
    """An instance with a release live, and a relay (cut at first) the worker under test talks through."""
    relay = Relay(tmp_path / "engine.sock")
    with live_instance(tmp_path, docker_engine, {}, "live before the fault") as made:
        try:
            yield made, relay
        finally:
            relay.cut()


def worker(instance: Instance, relay: Relay, *arguments: str) -> subprocess.Popen:
    environment = {key: value for key, value in os.environ.items() if key not in ("HOOKDEPLOY_CONFIG", "HOOKDEPLOY_FAULT")}
    environment["DOCKER_HOST"] = f"unix://{relay.path}"
    return subprocess.Popen([str(HOOKDEPLOY), "--config", str(instance.config_path), "worker", *arguments],
                            env=environment, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def wait_for(condition, what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def stop(process: subprocess.Popen) -> str:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
    output, _ = process.communicate(timeout=60)
    return output


def test_worker_started_without_an_engine_waits_says_so_once_and_deploys_when_it_answers(relayed):
    site, relay = relayed
    sha = site.commit("site", site_files("deployed once the engine answered"))
    job = site.enqueue("site", sha)
    process = worker(site, relay)
    try:
        time.sleep(4)  # three tries at least: 1 s, then 2 s
        assert process.poll() is None, "the worker keeps running"
        assert site.store.job(job.id).state is JobState.QUEUED, "no job starts, and none fails, without an engine"
        relay.start()
        wait_for(lambda: site.store.job(job.id).state.finished, "the job to finish once the engine answers")
    finally:
        output = stop(process)
    assert process.returncode == 0, output
    assert site.store.job(job.id).state is JobState.SUCCEEDED, site.store.job(job.id).error
    assert site.get().release == sha[:12]
    lines = output.splitlines()
    missing = [line for line in lines if "the Docker engine does not answer" in line]
    assert len(missing) == 1, output  # said once, not once per try
    assert "trying again with backoff" in missing[0]
    assert any(line.endswith("the Docker engine answers again") for line in lines), output
    assert "Traceback" not in output


def test_worker_drain_without_an_engine_exits_with_one_line_and_leaves_the_job_queued(relayed):
    site, relay = relayed
    job = site.enqueue("site", site.commit("site", site_files("never started")))
    process = worker(site, relay, "--drain")
    output, _ = process.communicate(timeout=60)
    assert process.returncode == 2
    assert output.strip().splitlines() == [line for line in output.strip().splitlines()
                                           if line.startswith("hookdeploy: error: the Docker engine does not answer")]
    assert len(output.strip().splitlines()) == 1, output
    assert site.store.job(job.id).state is JobState.QUEUED


def test_engine_gone_during_the_build_interrupts_the_job_and_the_retry_goes_live_when_it_is_back(relayed):
    site, relay = relayed
    old = site.store.live_release("site")
    marker = secrets.token_hex(6)
    sha = site.commit("site", site_files("after the engine came back",
                                         dockerfile_tail=f"RUN sleep 4 && echo {marker}\n"))
    job = site.enqueue("site", sha)
    relay.start()
    process = worker(site, relay)
    try:
        with Load(site.port, threads=2, pause=0.02) as load:
            wait_for(lambda: any(marker in event.message for event in site.store.events(job.id)),
                     "the build to reach its RUN step")
            relay.cut()
            wait_for(lambda: site.store.job(job.id).state.finished, "the job to end")
            interrupted = site.store.job(job.id)
            assert interrupted.state is JobState.INTERRUPTED, (interrupted.state, interrupted.error)
            assert interrupted.error.startswith("the Docker engine stopped answering (")
            [retry] = [other for other in site.store.jobs("site") if other.retry_of == job.id]
            assert interrupted.error.endswith(f"; queued again as job {retry.id}")
            assert retry.trigger is Trigger.RETRY
            time.sleep(2)
            assert process.poll() is None, "the worker keeps running"
            assert site.store.job(retry.id).state is JobState.QUEUED
            assert site.store.live_release("site") == old
            relay.start()
            wait_for(lambda: site.store.job(retry.id).state.finished, "the retry to finish")
    finally:
        output = stop(process)
    assert process.returncode == 0, output
    assert site.store.job(retry.id).state is JobState.SUCCEEDED, site.store.job(retry.id).error
    assert site.get().release == sha[:12]
    assert site.container_names() == site.expected_containers()
    assert "Traceback" not in output, output
    assert load.errors == [], f"{len(load.errors)} of {load.requests} requests failed: {load.errors[:5]}"


def test_a_full_disk_during_the_checkout_fails_the_job_with_the_reason_and_the_site_keeps_serving(
        docker_engine, tmp_path):
    with live_instance(tmp_path, docker_engine, {}, "live before the disk filled") as site:
        old = site.store.live_release("site")
        builds = site.state_dir / "builds"
        builds.mkdir(exist_ok=True)
        # A 64 KiB filesystem where build folders go: the store beside it still has room.
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(builds)], check=True)
        try:
            big = site_files("too big for the disk", extra={"site/big.html": "x" * 512 * 1024})
            job = site.enqueue("site", site.commit("site", big))
            worker = site.worker_process()
        finally:
            subprocess.run(["umount", str(builds)], check=True)
        assert worker.returncode == 0, worker.stderr
        assert "Traceback" not in worker.stderr
        failed = site.store.job(job.id)
        assert failed.state is JobState.FAILED
        assert failed.error.startswith(f"checkout of {job.sha[:12]} into {builds / 'site'} failed: "
                                       "No space left on device"), failed.error
        assert site.store.live_release("site") == old
        answer = site.get()
        assert (answer.status, answer.release) == (200, old.sha[:12])
        assert site.container_names() == site.expected_containers()
