"""Data, the release phase and limits on a real engine (issue 22, items 1, 2 and 5): an app that keeps
its data on a named volume, written and read through the proxy over HTTP (nginx's PUT), keeps it
through deploys, a failed deploy, prunes, a rollback and a worker SIGKILLed mid-deploy; its release
command runs before the candidate in a container of the new image with the volume, once per commit;
`memory` and `cpus` reach every container of the app.
"""

from __future__ import annotations

import http.client
import signal
import subprocess
import time

import pytest

from docker_helpers import BASE_IMAGE, HOOKDEPLOY, Instance, died_of_sigkill
from hookdeploy.core.models import JobKind, JobState, Trigger

pytestmark = pytest.mark.docker

DATA = "/var/lib/app/data"
# nginx serving the site at /, and the volume at /data/ (PUT writes a file there, as the app's own
# writes would); /health answers once this version's release command has left its mark.
CONF = """server {{
    listen 80;
    root /usr/share/nginx/html;
    location /data/ {{
        root /var/lib/app;
        dav_methods PUT;
        create_full_put_path on;
        client_body_temp_path /var/lib/app/data/.uploads;
    }}
    location /config/ {{
        root /etc/app;
        rewrite ^/config/(.*)$ /$1 break;
    }}
    location = /health {{
        root /var/lib/app/data;
        try_files {health} =404;
        default_type text/plain;
    }}
}}
"""


def app_files(version: str, migrate: str = "", healthy: bool = True) -> dict[str, str]:
    """A commit of the app: `version` at /, `migrate` as its /migrate.sh (the release command runs it).
    With a migrate script, /health answers only once that script left its mark on the volume
    (/var/lib/app/data/migrated-VERSION); without, it always does (unless not `healthy`)."""
    mark = f"/migrated-{version}" if migrate else "/.health"
    files = {
        "Dockerfile": (f"FROM {BASE_IMAGE}\nCOPY index.html /usr/share/nginx/html/\nCOPY default.conf /etc/nginx/conf.d/\n"
                       f"COPY migrate.sh /migrate.sh\nRUN echo {version} > /version && mkdir -p {DATA} "
                       f"&& echo healthy > {DATA}/.health && chown -R nginx:nginx {DATA}\n"),
        "index.html": f"<p>{version}</p>\n",
        "default.conf": CONF.format(health=mark if healthy else "/nowhere"),
        "migrate.sh": migrate or "exit 0\n",
    }
    return files


def put(instance: Instance, path: str, body: str) -> int:
    """PUT `body` at `path` through the proxy; the status."""
    connection = http.client.HTTPConnection(instance.address, instance.port, timeout=10)
    try:
        connection.request("PUT", path, body=body.encode())
        response = connection.getresponse()
        response.read()
        return response.status
    finally:
        connection.close()


def stored(instance: Instance, path: str = "/data/note") -> str:
    answer = instance.get(path)
    assert answer.status == 200, answer
    return answer.body


def volume(instance: Instance, name: str):
    return instance.client.volumes.get(f"{instance.name}-site-{name}")


def live_container(instance: Instance):
    return instance.client.containers.get(instance.store.live_release("site").container)


def test_data_survives_deploys_a_failed_deploy_a_rollback_prunes_and_a_worker_sigkill(instance, tmp_path):
    config_dir = tmp_path / "site-config"
    config_dir.mkdir()
    (config_dir / "greeting").write_text("hello from the host\n")
    instance.configure({"site": {"volumes": ["data:" + DATA, f"{config_dir}:/etc/app:ro"], "keep": 2,
                                 "memory": "96m", "cpus": 0.5, "health": {"path": "/health"}}})

    first = instance.deploy("site", app_files("v1"))
    assert first.state is JobState.SUCCEEDED, first.error
    assert put(instance, "/data/note", "written through HTTP\n") == 201
    assert stored(instance) == "written through HTTP\n"
    assert stored(instance, "/config/greeting") == "hello from the host\n"

    # The volume: N-APP-NAME, labelled; the bind mount read-only; the limits on the container.
    data = volume(instance, "data")
    assert data.attrs["Labels"] == {"hookdeploy.instance": instance.name, "hookdeploy.app": "site",
                                    "hookdeploy.volume": "data"}
    inspected = live_container(instance).attrs
    mounts = {mount["Destination"]: mount for mount in inspected["Mounts"]}
    assert (mounts[DATA]["Type"], mounts[DATA]["Name"], mounts[DATA]["RW"]) == (
        "volume", f"{instance.name}-site-data", True)
    assert (mounts["/etc/app"]["Type"], mounts["/etc/app"]["Source"], mounts["/etc/app"]["RW"]) == (
        "bind", str(config_dir), False)
    assert (inspected["HostConfig"]["Memory"], inspected["HostConfig"]["NanoCpus"]) == (96 * 1024**2, 500_000_000)
    denied = live_container(instance).exec_run(["sh", "-c", "echo x > /etc/app/greeting"])
    assert denied.exit_code != 0 and b"Read-only file system" in denied.output

    # Four more deploys (keep = 2: images are pruned along the way); each release sees the data.
    shas = [first.sha]
    for number in range(2, 6):
        job = instance.deploy("site", app_files(f"v{number}"))
        assert job.state is JobState.SUCCEEDED, job.error
        assert instance.get().body == f"<p>v{number}</p>\n"
        assert stored(instance) == "written through HTTP\n"
        shas.append(job.sha)
    assert any("pruned" in message for message in instance.events(job.id))

    # A failed deploy (its candidate never healthy) leaves the data and the live release as they were.
    failed = instance.deploy("site", app_files("broken", healthy=False))
    assert failed.state is JobState.FAILED
    assert instance.get().body == "<p>v5</p>\n" and stored(instance) == "written through HTTP\n"

    # A rollback (to a pruned release: rebuilt) sees it too.
    back = instance.enqueue("site", shas[1], kind=JobKind.ROLLBACK, trigger=Trigger.ROLLBACK)
    instance.work()
    assert instance.store.job(back.id).state is JobState.SUCCEEDED, instance.store.job(back.id).error
    assert instance.get().body == "<p>v2</p>\n" and stored(instance) == "written through HTTP\n"

    # A worker SIGKILLed with the candidate running; the next one removes the leftovers and retries.
    killed = instance.enqueue("site", instance.commit("site", app_files("v6")))
    assert died_of_sigkill(instance.worker_process(fault="candidate"))
    assert instance.worker_process().returncode == 0
    assert instance.store.job(killed.id).state is JobState.INTERRUPTED
    assert instance.get().body == "<p>v6</p>\n" and stored(instance) == "written through HTTP\n"

    # The same volume all along, never made anew; nothing but the live release and the proxy runs.
    assert volume(instance, "data").attrs["CreatedAt"] == data.attrs["CreatedAt"]
    assert instance.container_names() == instance.expected_containers("site")


def test_release_command_runs_once_per_commit_before_the_candidate(instance):
    # Each version's migrate.sh notes that it ran; /health answers once this version's ran.
    def migration(version: str, extra: str = "") -> str:
        return (f"echo migrating to {version}\n{extra}"
                f"echo {version} >> {DATA}/migrations && touch {DATA}/migrated-{version}\necho migrated\n")

    instance.configure({"site": {"volumes": ["data:" + DATA], "release_command": ["sh", "/migrate.sh"],
                                 "release_timeout": 8.0, "memory": "64m", "env": {"GREETING": "hi"},
                                 "health": {"path": "/health", "contains": ""}}})

    first = instance.deploy("site", app_files("v1", migration("v1", 'echo "greeting $GREETING"\n')))
    assert first.state is JobState.SUCCEEDED, first.error
    messages = instance.events(first.id)
    # Its output in the job log, in order, before the candidate started (whose health check needed it).
    ran = messages.index("migrating to v1")
    assert messages[ran:ran + 3] == ["migrating to v1", "greeting hi", "migrated"]
    release_step = next(message for message in messages if message.startswith("release command exited 0"))
    assert ran < messages.index(release_step) < next(
        index for index, message in enumerate(messages) if message.startswith("started candidate"))
    assert {event.step for event in instance.store.events(first.id) if event.message == release_step} == {"release"}
    assert stored(instance, "/data/migrations") == "v1\n"
    # No release container is left; it was labelled as one.
    assert not instance.containers(role="release")

    second = instance.deploy("site", app_files("v2", migration("v2")))
    assert second.state is JobState.SUCCEEDED, second.error
    assert stored(instance, "/data/migrations") == "v1\nv2\n"

    # A rollback to v1, whose command ran already: not run again.
    back = instance.enqueue("site", first.sha, kind=JobKind.ROLLBACK, trigger=Trigger.ROLLBACK)
    instance.work()
    assert instance.store.job(back.id).state is JobState.SUCCEEDED, instance.store.job(back.id).error
    assert f"release command: ran for {first.sha[:12]} already (job {first.id}); not run again" in instance.events(back.id)
    assert stored(instance, "/data/migrations") == "v1\nv2\n"

    # A failing migration fails the job with its output in the log; v1 serves on, the data as it was.
    failing = instance.deploy("site", app_files("v3", "echo 'boom: column exists' >&2\nexit 3\n"))
    assert failing.state is JobState.FAILED
    assert failing.error == f"release command 'sh /migrate.sh' exited with status 3; {failing.sha[:12]} did not go live"
    assert "boom: column exists" in instance.events(failing.id)
    assert instance.get().body == "<p>v1</p>\n" and stored(instance, "/data/migrations") == "v1\nv2\n"
    assert not instance.containers(job=str(failing.id))

    # One that outlives release_timeout is killed and removed.
    started = time.monotonic()
    slow = instance.deploy("site", app_files("v4", "echo waiting\nsleep 60\n"))
    assert (slow.state, slow.error) == (JobState.FAILED, "release command timed out after 8 s")
    assert time.monotonic() - started < 40
    assert "waiting" in instance.events(slow.id)
    assert not instance.containers(job=str(slow.id)) and instance.get().body == "<p>v1</p>\n"


def start_worker_until_waiting(instance: Instance, job_id: int) -> subprocess.Popen:
    """`hookdeploy worker --drain` as a subprocess, returned once job `job_id`'s release command printed "waiting"."""
    worker = subprocess.Popen([str(HOOKDEPLOY), "--config", str(instance.config_path), "worker", "--drain"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 90
    while "waiting" not in instance.events(job_id):
        if time.monotonic() > deadline or worker.poll() is not None:
            worker.kill()
            pytest.fail(f"the release command never started: {worker.communicate()}")
        time.sleep(0.2)
    assert [container.status for container in instance.containers(role="release")] == ["running"]
    return worker


@pytest.mark.parametrize("how", ["SIGTERM", "SIGKILL"])
def test_a_worker_stopped_or_killed_during_the_release_command_leaves_nothing_and_the_retry_runs_it(instance, how):
    instance.configure({"site": {"volumes": ["data:" + DATA], "release_command": ["sh", "/migrate.sh"],
                                 "health": {"path": "/health", "contains": ""}}})
    # The first run waits (and is stopped); the retry finds its mark and finishes.
    migrate = (f"if [ ! -e {DATA}/started ]; then touch {DATA}/started; echo waiting; sleep 60; fi\n"
               f"echo v1 >> {DATA}/migrations && touch {DATA}/migrated-v1\n")
    job = instance.enqueue("site", instance.commit("site", app_files("v1", migrate)))
    worker = start_worker_until_waiting(instance, job.id)
    try:
        if how == "SIGTERM":  # as systemd stops it: the job is interrupted there and then, its container removed
            worker.send_signal(signal.SIGTERM)
            assert worker.wait(timeout=30) == 0
            stopped = instance.store.job(job.id)
            assert stopped.state is JobState.INTERRUPTED, stopped.error
            assert not instance.containers(role="release")
        else:  # the container outlives it; the next worker removes it
            worker.kill()
            worker.wait(timeout=30)
            assert instance.store.job(job.id).state is JobState.RUNNING
    finally:
        if worker.poll() is None:
            worker.kill()
        worker.communicate()

    assert instance.worker_process().returncode == 0
    assert instance.store.job(job.id).state is JobState.INTERRUPTED
    retry = next(other for other in instance.store.jobs("site") if other.retry_of == job.id)
    assert instance.store.job(retry.id).state is JobState.SUCCEEDED, instance.store.job(retry.id).error
    assert stored(instance, "/data/migrations") == "v1\n"
    assert not instance.containers(role="release")
    assert instance.container_names() == instance.expected_containers("site")


def test_the_pusher_sees_the_release_command_and_its_output(instance):
    from test_push_output import push

    instance.configure({"site": {"volumes": ["data:" + DATA], "release_command": ["sh", "/migrate.sh"],
                                 "health": {"path": "/health", "contains": ""}}})
    assert instance.cli("init-repo", "site").returncode == 0
    worker = subprocess.Popen([str(HOOKDEPLOY), "--config", str(instance.config_path), "worker"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 20
        while not instance.store.worker_alive(10) and time.monotonic() < deadline:
            time.sleep(0.05)
        _, seen = push(instance, app_files("v1", f"echo applying 0001_initial\ntouch {DATA}/migrated-v1\n"))
        _, failed = push(instance, app_files("v2", "echo 'applying 0002: boom' >&2\nexit 2\n"))
    finally:
        worker.terminate()
        worker.wait(60)
    assert "-----> Release command: running 'sh /migrate.sh' in " in seen
    release = seen.index("       applying 0001_initial")
    assert seen.index("-----> Release command exited 0 in ") > release
    assert seen.index("-----> Starting candidate") > release
    assert "       applying 0002: boom" in failed
    assert "-----> failed: release command 'sh /migrate.sh' exited with status 2;" in failed
    assert "-----> Starting candidate" not in failed and "-----> live release unchanged: " in failed
