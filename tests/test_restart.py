"""A restart of the service (SIGTERM, as `systemctl restart` sends) in the middle of a deploy:
the job ends `interrupted`, exactly one retry is queued, the next worker puts it live, and the
site answers every request throughout (issue 14).

Both ways hookdeploy runs as a service are stopped: `hookdeploy worker` and `hookdeploy serve`
(worker in a thread). The moments: while the image builds (a `RUN sleep` step; with BuildKit and
with the classic builder), right after the candidate started, and while the health check waits for
a candidate that starts slowly.
"""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import time

import pytest

from docker_helpers import HOOKDEPLOY, Load, live_instance, site_files
from test_buildkit import running_with
from hookdeploy.core.models import JobState, Trigger

pytestmark = pytest.mark.docker

RESTART_APP = {"health": {"deadline": 8.0}}
SLOW_START = 'CMD ["sh", "-c", "sleep 2; exec nginx -g \'daemon off;\'"]\n'


@pytest.fixture(scope="module")
def restart_site(docker_engine, tmp_path_factory):
    """An instance with a release live, shared by the restart cases (each leaves its release live)."""
    with live_instance(tmp_path_factory.mktemp("restart-site"), docker_engine, RESTART_APP,
                       "before any restart") as made:
        yield made


def wait_for(condition, what: str, service: subprocess.Popen, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert service.poll() is None, f"exited with {service.returncode} before {what}:\n{service.stdout.read()}"
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


@pytest.mark.parametrize("process", ["worker", "serve"])
@pytest.mark.parametrize("moment", ["build", "classic build", "candidate", "health"])
def test_sigterm_before_the_switch_interrupts_and_the_retry_goes_live(restart_site, process, moment):
    site = restart_site
    # "build" builds with BuildKit (the default), "classic build" with the Engine API's builder.
    site.configure({"site": RESTART_APP}, extra='[build]\nbuilder = "classic"\n' if moment == "classic build" else "")
    old = site.store.live_release("site")
    marker = secrets.token_hex(6)
    building = moment.endswith("build")
    tail = f"RUN sleep 4 && echo {marker}\n" if building else SLOW_START
    sha = site.commit("site", site_files(f"restarted during {moment} ({process})", dockerfile_tail=tail),
                      message=f"{process} {moment}")
    job = site.enqueue("site", sha)
    env = {"HOOKDEPLOY_SECRET": "restart-test-secret"}  # serve's API tokens need one
    if moment == "candidate":
        env["HOOKDEPLOY_FAULT"] = "term:candidate"

    with Load(site.port, threads=2, pause=0.02) as load:
        service = subprocess.Popen([str(HOOKDEPLOY), "--config", str(site.config_path), process],
                                   env=_environment(env), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        try:
            if building:
                wait_for(lambda: any(f"RUN sleep 4 && echo {marker}" in line for line in site.events(job.id)),
                         "the build to reach its RUN step", service)
                service.send_signal(signal.SIGTERM)
            elif moment == "health":
                wait_for(lambda: any(line.startswith("started candidate") for line in site.events(job.id)),
                         "the candidate to start", service)
                service.send_signal(signal.SIGTERM)
            stopped_at = time.monotonic()
            output, _ = service.communicate(timeout=60)
            took = time.monotonic() - stopped_at
        finally:
            if service.poll() is None:
                service.kill()
        assert service.returncode == 0, output
        assert took < 15, f"the {process} took {took:.1f} s to stop"

        interrupted = site.store.job(job.id)
        retries = [other for other in site.store.jobs("site") if other.retry_of == job.id]
        assert interrupted.state is JobState.INTERRUPTED, (interrupted.state, interrupted.error)
        assert len(retries) == 1, retries
        [retry] = retries
        assert interrupted.error == f"the worker is restarting; queued again as job {retry.id}"
        assert (retry.trigger, retry.sha, retry.state) == (Trigger.RETRY, sha, JobState.QUEUED)
        assert site.store.live_release("site") == old, "the live release did not change"
        assert not site.containers(job=str(job.id)), "the candidate was removed"
        answer = site.get()
        assert (answer.status, answer.release) == (200, old.sha[:12])

        restarted = site.worker_process()
        assert restarted.returncode == 0, restarted.stderr

    retry = site.store.job(retry.id)
    assert retry.state is JobState.SUCCEEDED, retry.error
    assert site.store.live_release("site").job == retry.id
    answer = site.get()
    assert (answer.status, answer.release) == (200, sha[:12])
    assert site.container_names() == site.expected_containers(), "only the live release and the proxy run"
    assert [other for other in site.store.jobs("site") if other.retry_of == job.id] == [retry], "exactly one retry"
    if building:
        # The cancelled build left no container (classic builder) nor process (BuildKit) of its RUN step behind.
        leftovers = [container.name for container in site.client.containers.list(all=True)
                     if marker in " ".join(container.attrs["Config"].get("Cmd") or [])]
        assert leftovers == []
        assert running_with(marker) == []
    builds = site.state_dir / "builds"
    assert not builds.exists() or [path.name for path in builds.iterdir()] in ([], ["site"]), \
        "no build folder is left behind but the app's own, kept for its next build"
    assert load.errors == [], f"{len(load.errors)} of {load.requests} requests failed: {load.errors[:5]}"
    assert load.requests > 0


def _environment(extra):
    environment = {key: value for key, value in os.environ.items()
                   if key not in ("HOOKDEPLOY_CONFIG", "HOOKDEPLOY_FAULT")}
    environment.update(extra or {})
    return environment
