"""A worker stopped during a build on a build host (issue 21): SIGTERM ends the job `interrupted`, the
build is cancelled on the build host (no step of it runs there any more), and the retry makes the
release live from the registry. The build host is the real rig of tests/buildhost_helpers.py.
"""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import time

from docker_helpers import HOOKDEPLOY, site_files
from hookdeploy.core.models import JobState
from test_buildhost import assert_live_from_registry, remote  # noqa: F401 - remote is a fixture


def processes_with(build_host, marker: str) -> list[str]:
    """Command lines of the build host's processes (its dockerd's build steps among them) that name `marker`."""
    listing = build_host.exec("sh", "-c", "for each in /proc/[0-9]*/cmdline; do tr '\\0' ' ' < $each; echo; done",
                              check=False)
    return [line for line in listing.splitlines() if marker in line and "/proc/[0-9]" not in line]


def local_processes_with(marker: str) -> list[str]:
    """Command lines of this machine's processes that name `marker` (the docker CLI and its ssh among them)."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as file:
                    command = file.read().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if marker in command:
                found.append(f"{entry}: {command.strip()}")
    return found


def wait_until(condition, what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def test_sigterm_during_a_build_on_a_build_host_cancels_it_there_and_the_retry_goes_live(
        remote, registry, build_host):  # noqa: F811 - the fixture imported above
    instance = remote(build_host.ssh_url, app={"build_args": {"PAUSE": "60"}})
    marker = secrets.token_hex(6)
    step = f"sleep $PAUSE && echo {marker}"
    job = instance.enqueue("site", instance.commit("site", site_files("stopped on the build host", dockerfile_tail=(
        f"ARG PAUSE\nRUN {step} > /tmp/{marker}\n"))))
    environment = {key: value for key, value in os.environ.items() if key not in ("HOOKDEPLOY_CONFIG",
                                                                                  "HOOKDEPLOY_FAULT")}
    worker = subprocess.Popen([str(HOOKDEPLOY), "--config", str(instance.config_path), "worker"], env=environment,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        wait_until(lambda: processes_with(build_host, step), "the RUN step to start on the build host", 120)
        cli = [line for line in local_processes_with("--iidfile") if instance.name in line]
        assert len(cli) == 1 and build_host.ssh_url in cli[0], cli  # our CLI, building over ssh
        worker.send_signal(signal.SIGTERM)
        output, _ = worker.communicate(timeout=60)
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait(10)
    assert worker.returncode == 0, output
    stopped = instance.store.job(job.id)
    retry = next(each for each in instance.store.jobs(limit=10) if each.retry_of == job.id)
    assert stopped.state is JobState.INTERRUPTED
    assert stopped.error == f"the worker is restarting; queued again as job {retry.id}"
    # Cancelled on the build host: the step's process ends there (BuildKit cancels a build whose client
    # went) within seconds, where the step itself had most of its minute to go.
    wait_until(lambda: processes_with(build_host, step) == [], "the build to end on the build host", 10)
    assert [line for line in local_processes_with("--iidfile") if instance.name in line] == []
    assert registry.tags(f"{instance.name}/site") == []  # nothing was pushed
    assert instance.store.live_release("site") is None

    # The retry builds the commit again there, pushes it, and this engine runs it by digest (its step
    # told to pause no more: the build arg is the config's, so the commit is the same).
    remote(build_host.ssh_url, app={"build_args": {"PAUSE": "0"}})
    assert retry.state is JobState.QUEUED and retry.sha == job.sha
    started = time.monotonic()
    instance.work()
    done = instance.store.job(retry.id)
    assert_live_from_registry(instance, registry, build_host, done, build_host.ssh_url, "stopped on the build host")
    print(f"retry built and went live in {time.monotonic() - started:.1f} s")
