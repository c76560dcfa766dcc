"""Scheduled tasks and one-off commands in real containers, on one deployed app for the module:
a task runs in the live image with the app's environment and its output and exit status are
recorded; a timeout kills its container; a failure is notified to a real HTTP receiver; `run`
exits with the command's status through the real CLI; `task --wait` through a real `serve` (with
its worker), whose API, dashboard and /metrics show the run; a worker's SIGTERM kills a task's
container and records the run.

Every task is scheduled for 04:00 on January 1st, so the real clock of the serve's worker never
makes a slot due while this runs: scheduled slots come from an injected clock (Scheduler.tick).
"""

from __future__ import annotations

import re
import signal
import subprocess
import threading
from datetime import datetime, timezone

import pytest
import requests

from docker_helpers import Instance, site_files, wait_for
from test_notify import Receiver
from webhook_helpers import API_SECRET, SECRETS, Server, request

from hookdeploy.core import tokens
from hookdeploy.core.taskruns import RunState, TaskRuns
from hookdeploy.engine.scheduler import Scheduler

NEW_YEAR = "0 4 1 1 *"
SLOT = datetime(2027, 1, 1, 4, 0, 10, tzinfo=timezone.utc)
TASKS = [
    {"name": "hello", "schedule": NEW_YEAR, "timeout": 60.0,
     "command": ["sh", "-c", "echo hello from $GREETING; cat /usr/share/nginx/html/index.html"]},
    {"name": "fails", "schedule": NEW_YEAR, "command": ["sh", "-c", "echo about to fail; exit 3"]},
    {"name": "slow", "schedule": "0 5 1 1 *", "timeout": 2.0, "command": ["sh", "-c", "echo sleeping; exec sleep 300"]},
    {"name": "long", "schedule": "0 6 1 1 *", "timeout": 600.0, "command": ["sleep", "300"]},
]


@pytest.fixture(scope="module")
def site(docker_engine, tmp_path_factory):
    """An instance whose app `site` (GREETING=tasks, TASKS) has v1 live, with a task_failed receiver."""
    receiver = Receiver()
    made = Instance(tmp_path_factory.mktemp("tasks"), docker_engine)
    try:
        made.configure({"site": {"env": {"GREETING": "tasks"}, "tasks": TASKS}},
                       extra=f'[[notify]]\nurl = "{receiver.url}"\nevents = ["task_failed"]\n')
        job = made.deploy("site", site_files("v1"))
        assert job.state.value == "succeeded", job.error
        made.receiver = receiver
        yield made
    finally:
        receiver.close()
        made.cleanup()


def scheduled(site: Instance, *names: str, clock=lambda: SLOT):
    """Tick a scheduler (injected clock) once, wait for the runs of `names` to end; {name: run}."""
    scheduler = Scheduler(site.config, site.store, "test-worker", clock=clock)
    scheduler.tick()
    for thread in list(scheduler._threads.values()):
        thread.join(timeout=60)
    runs = TaskRuns(site.store)
    return {name: runs.runs("site", name, limit=1)[0] for name in names}



def test_scheduled_slots_run_in_the_live_image_record_output_and_notify_failures(site):
    runs = scheduled(site, "hello", "fails")
    hello, fails = runs["hello"], runs["fails"]
    assert hello.state is RunState.SUCCEEDED and hello.exit_code == 0, hello
    assert hello.slot == "2027-01-01T04:00:00.000Z" and hello.trigger == "schedule"
    assert hello.output == "hello from tasks\n<p>v1</p>\n"  # the app's env, the live release's files
    assert hello.sha == site.store.live_release("site").sha and hello.duration > 0
    assert hello.container == f"{site.name}-site-task-hello-{hello.id}"
    assert fails.state is RunState.FAILED and fails.exit_code == 3 and fails.output == "about to fail\n"
    assert fails.reason == "exit status 3"
    assert not site.containers(role="task"), "task containers are removed once their run ends"
    body = wait_for(lambda: next((body for body in site.receiver.bodies if body["task"] == "fails"), None),
                    what="task_failed notification")
    assert body["event"] == "task_failed" and body["app"] == "site" and body["instance"] == site.name
    assert body["run"]["id"] == fails.id and body["run"]["exit_code"] == 3 and "output" not in body["run"]
    assert not [body for body in site.receiver.bodies if body["task"] == "hello"]


def test_a_run_past_its_timeout_is_killed_and_recorded_timed_out(site):
    seen = {}

    def watch_container():  # the container exists while the run runs, with the task's labels
        found = wait_for(lambda: site.containers(task="slow"), what="the slow task's container")
        seen.update(found[0].labels)

    watcher = threading.Thread(target=watch_container)
    watcher.start()
    slow = scheduled(site, "slow", clock=lambda: SLOT.replace(hour=5))["slow"]
    watcher.join()
    assert seen["hookdeploy.role"] == "task" and seen["hookdeploy.run"] == str(slow.id)
    assert slow.state is RunState.TIMED_OUT and slow.exit_code is None, slow
    assert slow.reason == "timed out after 2 s; the container was killed"
    assert 2.0 <= slow.duration < 15 and slow.output == "sleeping\n"
    assert not site.containers(task="slow")
    wait_for(lambda: any(body["task"] == "slow" and body["run"]["state"] == "timed_out"
                         for body in site.receiver.bodies), what="timed_out notification")


def test_run_streams_the_output_and_exits_with_the_commands_status(site):
    completed = site.cli("run", "site", "--", "sh", "-c", "echo out $GREETING; echo err >&2; exit 7")
    assert completed.returncode == 7
    assert completed.stdout == "out tasks\n" and completed.stderr == "err\n"
    completed = site.cli("run", "site", "cat", "/usr/share/nginx/html/index.html")
    assert completed.returncode == 0 and completed.stdout == "<p>v1</p>\n"
    completed = site.cli("run", "site", "--", "no-such-program")
    assert completed.returncode == 1 and completed.stderr.startswith("hookdeploy: error: cannot start ")
    assert completed.stderr.count("\n") == 1 and "no-such-program" in completed.stderr, completed.stderr
    assert not site.containers(role="run"), "one-off containers are removed after"
    for arguments, expected in [(("run", "nosuch", "--", "true"), "unknown app 'nosuch'"),
                                (("run", "site"), "give the command to run"),
                                (("task", "site", "Bad_Name"), "task name 'Bad_Name': must match"),
                                (("task", "site", "nosuch"), "site has no task 'nosuch' (its tasks: hello, fails, slow, long)"),
                                (("tasks", "nosuch"), "unknown app 'nosuch'")]:
        completed = site.cli(*arguments)
        assert completed.returncode == 2 and completed.stderr.count("\n") == 1, completed.stderr
        assert expected in completed.stderr, completed.stderr


def test_task_wait_through_serve_and_the_run_in_api_dashboard_and_metrics(site):
    port = int(site.config.server.listen.rpartition(":")[2])
    # Tokens through the module's one store: a second Store in this process would open the file and so drop
    # the SQLite locks of the first (POSIX locks are per process), letting serve's exit delete the WAL under it.
    token = tokens.issue(API_SECRET, site.store, "deploy")
    auth = {"Authorization": f"Bearer {token}"}
    with Server(site.config_path, port, site.root / "serve.log", worker=True) as server:
        completed = site.cli("task", "site", "hello", "--wait", env=SECRETS)
        assert completed.returncode == 0, completed.stderr
        assert completed.stdout == "hello from tasks\n<p>v1</p>\n"
        run_id = int(re.search(r"queued run (\d+)", completed.stderr).group(1))
        assert f"run {run_id} succeeded" in completed.stderr

        failing = site.cli("task", "site", "fails", "--wait", env=SECRETS)
        assert failing.returncode == 3 and failing.stdout == "about to fail\n"
        timed_out = site.cli("task", "site", "slow", "--wait", env=SECRETS)
        assert timed_out.returncode == 124 and timed_out.stdout == "sleeping\n"  # as timeout(1)
        assert "timed_out: timed out after 2 s; the container was killed" in timed_out.stderr

        status, asked, _ = request(port, "POST", "/api/apps/site/tasks/hello/run", headers=auth)
        assert status == 202 and asked["state"] == "queued" and asked["trigger"] == "manual"
        wait_for(lambda: TaskRuns(site.store).run(asked["id"]).state.finished, what="the API's run")
        status, listed, _ = request(port, "GET", "/api/apps/site/tasks", headers=auth)
        assert status == 200 and listed["timezone"] == "UTC"
        hello = next(task for task in listed["tasks"] if task["name"] == "hello")
        assert hello["schedule"] == NEW_YEAR and hello["next_slot"].endswith("-01-01T04:00:00.000Z")
        assert hello["last_run"]["id"] == asked["id"] and hello["last_run"]["state"] == "succeeded"
        assert hello["runs"][0]["output"] == "hello from tasks\n<p>v1</p>\n"
        assert request(port, "POST", "/api/apps/site/tasks/nosuch/run", headers=auth)[0] == 404
        read = {"Authorization": f"Bearer {tokens.issue(API_SECRET, site.store, 'read')}"}
        assert request(port, "POST", "/api/apps/site/tasks/hello/run", headers=read)[0] == 403

        session = requests.Session()
        base = f"http://127.0.0.1:{port}"
        signed_in = session.post(f"{base}/signin", data={"token": token}, headers={"Origin": base}, timeout=10)
        assert signed_in.status_code == 200, signed_in.text
        page = session.get(f"{base}/apps/site", timeout=10).text
        assert 'id="task-hello"' in page and f"/task-runs/{asked['id']}" in page and "Run now" in page
        run_page = session.get(f"{base}/task-runs/{run_id}", timeout=10)
        assert run_page.status_code == 200 and "hello from tasks" in run_page.text and "succeeded" in run_page.text
        assert session.get(f"{base}/task-runs/999999", timeout=10).status_code == 404

        metrics = requests.get(f"{base}/metrics", headers=read, timeout=10).text
        assert 'hookdeploy_task_runs_total{app="site",state="succeeded",task="hello"}' in metrics
        assert re.search(r'hookdeploy_task_runs_total\{app="site",state="failed",task="fails"\} [1-9]', metrics)
        assert 'hookdeploy_task_last_success_timestamp_seconds{app="site",task="hello"}' in metrics

        # a running task holds up no deploy, and the deploy's switch and cleanup leave the task's container be
        long = site.cli("task", "site", "long", "--json", env=SECRETS)
        long_id = int(re.search(r'"id": (\d+)', long.stdout).group(1))
        wait_for(lambda: site.containers(task="long") and site.containers(task="long")[0].status == "running",
                 what="the long task's container")
        job = site.enqueue("site", site.commit("site", site_files("v2")))
        wait_for(lambda: site.store.job(job.id).state.finished, timeout=90, what="the deploy during the task")
        assert site.store.job(job.id).state.value == "succeeded" and site.get().body == "<p>v2</p>\n"
        assert TaskRuns(site.store).run(long_id).state is RunState.RUNNING
        assert site.containers(task="long")[0].status == "running"

        # a worker told to stop kills its task's container and records the run
        assert server.stop(signal.SIGTERM, timeout=60) == 0
    ended = TaskRuns(site.store).run(long_id)
    assert ended.state is RunState.FAILED and ended.reason == "the worker stopped during the run; the container was killed"
    assert not site.containers(task="long")


def test_containers_of_ended_runs_are_swept(site, docker_engine):
    """What a killed worker leaves: a task container whose run was ended (by another worker) is removed."""
    ended = scheduled(site, "hello", clock=lambda: SLOT.replace(year=2028))["hello"]
    assert ended.state is RunState.SUCCEEDED
    live = site.store.live_release("site")
    from hookdeploy.engine import taskrunner

    leftover = docker_engine.containers.create(
        live.image, command=["sleep", "300"], name=f"{site.name}-site-task-hello-left",
        labels=taskrunner.labels(site.config, site.config.app("site"), live, "task", task="hello", run=str(ended.id)))
    leftover.start()
    Scheduler(site.config, site.store, "sweeper").sweep()
    assert not site.containers(task="hello")
