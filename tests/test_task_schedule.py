"""Scheduled tasks without Docker: deploy.toml's [[apps.X.tasks]] and [server] timezone, and the
scheduler on a real SQLite file with an injected clock (minutes pass in no time): a slot runs once
however many schedulers race for it, an overlapping slot is skipped, a downtime is caught up with
exactly one run and the older slots recorded missed, the zone decides when a slot is.

The container side is replaced here by a scheduler whose runs end when the test says (HeldRuns);
tests/test_tasks_docker.py runs them in real containers.
"""

from __future__ import annotations

import threading
from datetime import datetime, timedelta, timezone

import pytest

from conftest import fake_sha
from hookdeploy.core.config import load
from hookdeploy.core.models import Trigger
from hookdeploy.core.store import Store
from hookdeploy.core.taskruns import RunState, TaskRuns
from hookdeploy.engine.scheduler import Scheduler

T0 = datetime(2026, 7, 1, 12, 0, tzinfo=timezone.utc)


class Clock:
    """A clock the test moves."""

    def __init__(self, now: datetime = T0):
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def at(self, minutes: float) -> None:
        self.now = T0 + timedelta(minutes=minutes)


class HeldRuns(Scheduler):
    """A scheduler whose runs start no container: each stays running until finish_all()."""

    def _start(self, run):
        self.started = getattr(self, "started", []) + [run]

    def finish_all(self, state: RunState = RunState.SUCCEEDED) -> None:
        for run in getattr(self, "started", []):
            self.runs.finish(run.id, state, exit_code=0, output="done\n")
        self.started = []


def tasks_config(write_config, tasks: list[dict], timezone_name: str = "UTC", live: bool = True):
    text = (f'[server]\ntimezone = "{timezone_name}"\n[apps.site]\nrepo = "/srv/git/site.git"\n'
            + "".join("[[apps.site.tasks]]\n" + "".join(f"{key} = {_toml(value)}\n" for key, value in task.items())
                      for task in tasks))
    return load(write_config(text))


def _toml(value) -> str:
    if isinstance(value, list):
        return "[" + ", ".join(f'"{item}"' for item in value) + "]"
    return f'"{value}"' if isinstance(value, str) else repr(value)


def make_live(store: Store, app: str = "site") -> None:
    job = store.enqueue(app, fake_sha(1), trigger=Trigger.MANUAL)
    store.claim("test")
    store.record_live(app, fake_sha(1), "t/site:000000000000", "t-site-1", job.id)


EVERY_MINUTE = {"name": "tick", "schedule": "* * * * *", "command": ["true"], "timeout": 30}


# -- deploy.toml ------------------------------------------------------------------------------------


def test_tasks_parse_with_defaults_and_nicknames(write_config):
    config = tasks_config(write_config, [EVERY_MINUTE, {"name": "nightly", "schedule": "@daily",
                                                         "command": ["sh", "-c", "echo hi"]}], "Europe/Berlin")
    site = config.app("site")
    assert [task.name for task in site.tasks] == ["tick", "nightly"]
    assert site.task("nightly").command == ("sh", "-c", "echo hi") and site.task("nightly").timeout == 300.0
    assert config.server.timezone == "Europe/Berlin"


@pytest.mark.parametrize(("task", "timezone_name", "expected"), [
    ({**EVERY_MINUTE, "schedule": "* * * * * *"}, "UTC", "apps.site.tasks[0].schedule: '* * * * * *' must have five fields"),
    ({**EVERY_MINUTE, "schedule": "61 * * * *"}, "UTC", "apps.site.tasks[0].schedule: '61 * * * *': bad minute"),
    ({**EVERY_MINUTE, "schedule": "@reboot"}, "UTC", "apps.site.tasks[0].schedule: '@reboot': the nicknames are"),
    ({**EVERY_MINUTE, "name": "Clean_Up"}, "UTC", "apps.site.tasks[0].name: must match [a-z0-9-]{1,40}"),
    ({**EVERY_MINUTE, "command": []}, "UTC", "apps.site.tasks[0].command: must be a non-empty list of strings"),
    ({**EVERY_MINUTE, "timeout": 0}, "UTC", "apps.site.tasks[0].timeout: must be greater than 0"),
    ({"name": "x", "command": ["true"]}, "UTC", "apps.site.tasks[0].schedule: required"),
    (EVERY_MINUTE, "Mars/Olympus", "server.timezone: 'Mars/Olympus' is not an IANA time zone name"),
    (EVERY_MINUTE, "../../etc/passwd", "server.timezone: '../../etc/passwd' is not an IANA time zone name"),
])
def test_bad_tasks_are_refused_naming_the_key(write_config, run_cli, task, timezone_name, expected):
    text = (f'[server]\ntimezone = "{timezone_name}"\n[apps.site]\nrepo = "/srv/git/site.git"\n[[apps.site.tasks]]\n'
            + "".join(f"{key} = {_toml(value)}\n" for key, value in task.items()))
    completed = run_cli("tasks", "site", config=write_config(text))
    assert completed.returncode == 2
    assert expected in completed.stderr, completed.stderr


def test_two_tasks_of_one_name_are_refused(write_config, run_cli):
    text = ('[apps.site]\nrepo = "/srv/git/site.git"\n'
            + '[[apps.site.tasks]]\nname = "a"\nschedule = "@hourly"\ncommand = ["true"]\n' * 2)
    completed = run_cli("tasks", "site", config=write_config(text))
    assert completed.returncode == 2 and "apps.site.tasks[1].name: a names another task of the app too" in completed.stderr


# -- the scheduler on a real store -------------------------------------------------------------------


def test_each_slot_runs_once_with_three_schedulers_racing(write_config, state_dir):
    config = tasks_config(write_config, [EVERY_MINUTE, {**EVERY_MINUTE, "name": "tock"}])
    stores = [Store(state_dir / "hookdeploy.db") for _ in range(3)]
    make_live(stores[0])
    clock = Clock()
    schedulers = [HeldRuns(config, store, f"worker-{index}", clock=clock) for index, store in enumerate(stores)]
    barrier = threading.Barrier(3)
    claimed: list = []

    def race(scheduler: HeldRuns) -> None:
        barrier.wait()
        claimed.extend(scheduler.tick())
        barrier.wait()
        scheduler.finish_all()

    for minute in range(12):
        clock.at(minute + 0.25)
        threads = [threading.Thread(target=race, args=(scheduler,)) for scheduler in schedulers]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    rows = stores[0].query("SELECT task, slot, state, worker FROM task_runs ORDER BY slot, task")
    assert len(rows) == 24 and len(claimed) == 24  # 12 minutes x 2 tasks, each claimed by exactly one
    assert {row["state"] for row in rows} == {"succeeded"}
    assert len({(row["task"], row["slot"]) for row in rows}) == 24
    assert rows[0]["slot"] == "2026-07-01T12:00:00.000Z" and rows[-1]["slot"] == "2026-07-01T12:11:00.000Z"
    assert len({row["worker"] for row in rows}) >= 2  # they really raced; who wins is the store's call
    for store in stores:
        store.close()


def _worker_process(config_path, database, name, barrier, minutes) -> None:
    """One worker process: its own config, store and scheduler, ticking in step with the others."""
    config, store = load(config_path), Store(database)
    clock = Clock()
    scheduler = HeldRuns(config, store, name, clock=clock)
    for minute in range(minutes):
        clock.at(minute + 0.5)
        barrier.wait(timeout=60)
        scheduler.tick()
        barrier.wait(timeout=60)
        scheduler.finish_all()
    store.close()


@pytest.mark.slow
def test_each_slot_runs_once_with_three_worker_processes(write_config, state_dir):
    """As above, across processes (each its own SQLite connection and locks), as three `hookdeploy worker`s."""
    import multiprocessing

    config = tasks_config(write_config, [EVERY_MINUTE])
    store = Store(state_dir / "hookdeploy.db")
    make_live(store)
    context = multiprocessing.get_context("fork")
    barrier = context.Barrier(3)
    processes = [context.Process(target=_worker_process, args=(config.path, store.path, f"process-{index}", barrier, 15))
                 for index in range(3)]
    for process in processes:
        process.start()
    for process in processes:
        process.join(timeout=120)
    assert [process.exitcode for process in processes] == [0, 0, 0]
    rows = store.query("SELECT slot, state, worker FROM task_runs ORDER BY slot")
    assert [row["slot"] for row in rows] == [f"2026-07-01T12:{minute:02d}:00.000Z" for minute in range(15)]
    assert {row["state"] for row in rows} == {"succeeded"}
    store.close()


def test_a_slot_overlapping_the_previous_run_is_skipped(write_config, store):
    config = tasks_config(write_config, [EVERY_MINUTE])
    make_live(store)
    clock = Clock()
    scheduler = HeldRuns(config, store, "w", clock=clock)
    first, = scheduler.tick()
    assert first.state is RunState.RUNNING
    clock.at(1)
    second, = scheduler.tick()
    assert second.state is RunState.SKIPPED and second.reason == f"run {first.id} of the task still runs"
    scheduler.finish_all()
    clock.at(2)
    third, = scheduler.tick()
    assert third.state is RunState.RUNNING and third.slot == "2026-07-01T12:02:00.000Z"
    assert scheduler.tick() == []  # the same minute again: nothing new


def test_after_downtime_only_the_latest_missed_slot_runs(write_config, store):
    config = tasks_config(write_config, [EVERY_MINUTE])
    make_live(store)
    clock = Clock()
    scheduler = HeldRuns(config, store, "w", clock=clock)
    assert [run.state for run in scheduler.tick()] == [RunState.RUNNING]
    scheduler.finish_all()
    clock.at(10.5)  # the workers were down from 12:00:30 to 12:10:30
    caught_up, = HeldRuns(config, store, "w2", clock=clock).tick()
    assert caught_up.state is RunState.RUNNING and caught_up.slot == "2026-07-01T12:10:00.000Z"
    runs = TaskRuns(store).runs("site", "tick", limit=100)
    missed = sorted(run.slot for run in runs if run.state is RunState.MISSED)
    assert missed == [f"2026-07-01T12:{minute:02d}:00.000Z" for minute in range(1, 10)]
    assert all("only the latest missed slot runs" in run.reason for run in runs if run.state is RunState.MISSED)
    assert HeldRuns(config, store, "w3", clock=clock).tick() == []


def test_nothing_live_skips_the_slot(write_config, store):
    config = tasks_config(write_config, [EVERY_MINUTE])
    run, = HeldRuns(config, store, "w", clock=Clock()).tick()
    assert run.state is RunState.SKIPPED and run.reason == "nothing is live to run it in"


def test_a_new_task_starts_with_its_next_slot(write_config, store):
    config = tasks_config(write_config, [{**EVERY_MINUTE, "schedule": "0 * * * *"}])
    make_live(store)
    clock = Clock(T0 + timedelta(minutes=30))
    scheduler = HeldRuns(config, store, "w", clock=clock)
    assert scheduler.tick() == []  # 12:00 went by before the task was known: not run, not missed
    clock.now = T0 + timedelta(hours=1, seconds=2)
    run, = scheduler.tick()
    assert run.slot == "2026-07-01T13:00:00.000Z" and run.state is RunState.RUNNING


def test_slots_are_in_the_server_timezone(write_config, store):
    config = tasks_config(write_config, [{**EVERY_MINUTE, "schedule": "0 3 * * *"}], "Europe/Berlin")
    make_live(store)
    clock = Clock(datetime(2026, 7, 1, 0, 59, tzinfo=timezone.utc))  # 02:59 in Berlin (CEST, UTC+2)
    scheduler = HeldRuns(config, store, "w", clock=clock)
    assert scheduler.tick() == []
    clock.now = datetime(2026, 7, 1, 1, 0, 5, tzinfo=timezone.utc)  # 03:00:05 in Berlin
    run, = scheduler.tick()
    assert run.slot == "2026-07-01T01:00:00.000Z"
    # in winter (CET, UTC+1) the same 03:00 is 02:00 UTC
    schedule = scheduler._schedules[("site", "tick")]
    assert schedule.next_after(datetime(2026, 12, 1, tzinfo=timezone.utc)).astimezone(timezone.utc) == \
        datetime(2026, 12, 1, 2, 0, tzinfo=timezone.utc)


def test_a_run_asked_for_is_claimed_by_one_worker(write_config, state_dir):
    config = tasks_config(write_config, [{**EVERY_MINUTE, "schedule": "@monthly"}])
    stores = [Store(state_dir / "hookdeploy.db") for _ in range(3)]
    make_live(stores[0])
    asked = TaskRuns(stores[0]).queue("site", "tick")
    assert asked.state is RunState.QUEUED and asked.trigger == "manual"
    clock = Clock(T0 + timedelta(days=3))
    claimed = [run for index, store in enumerate(stores) for run in HeldRuns(config, store, f"w{index}", clock=clock).tick()]
    assert [(run.id, run.state) for run in claimed] == [(asked.id, RunState.RUNNING)]
    for store in stores:
        store.close()


def test_the_run_of_a_worker_that_stopped_answering_is_ended_failed(write_config, store, monkeypatch):
    from hookdeploy.engine import scheduler as scheduler_module

    config = tasks_config(write_config, [EVERY_MINUTE])
    make_live(store)
    clock = Clock()
    dead = HeldRuns(config, store, "dead-worker", clock=clock)
    run, = dead.tick()
    monkeypatch.setattr(scheduler_module, "STALE_SECONDS", -1.0)
    alive = HeldRuns(config, store, "alive-worker", clock=clock)
    monkeypatch.setattr(alive, "sweep", lambda: None)
    alive.housekeep()
    ended = TaskRuns(store).run(run.id)
    assert ended.state is RunState.FAILED and ended.reason == "its worker stopped answering during the run"


# -- the command line, without a worker ------------------------------------------------------------------


def test_task_queues_a_run_that_tasks_shows_and_run_needs_a_live_release(write_config, run_cli):
    text = ('[server]\ntimezone = "Europe/Berlin"\n[apps.site]\nrepo = "/srv/git/site.git"\n'
            '[[apps.site.tasks]]\nname = "nightly"\nschedule = "@daily"\ncommand = ["true"]\n')
    config = write_config(text)
    completed = run_cli("task", "site", "nightly", "--json", config=config)
    assert completed.returncode == 0, completed.stderr
    import json

    asked = json.loads(completed.stdout)
    assert asked["state"] == "queued" and asked["trigger"] == "manual" and asked["task"] == "nightly"
    listed = json.loads(run_cli("tasks", "site", "--json", config=config).stdout)
    assert [task["name"] for task in listed] == ["nightly"]
    # @daily in Berlin is midnight there: 22:00 or 23:00 UTC
    assert listed[0]["next_slot"][11:] in ("22:00:00.000Z", "23:00:00.000Z")
    assert listed[0]["last_run"]["id"] == asked["id"] and listed[0]["last_run"]["state"] == "queued"
    text_output = run_cli("tasks", "site", config=config).stdout
    assert text_output.startswith("nightly  '@daily' (Europe/Berlin)  next ") and "queued" in text_output
    completed = run_cli("run", "site", "--", "true", config=config)
    assert completed.returncode == 2
    assert completed.stderr == "hookdeploy: error: site has nothing live to run it in (deploy it first)\n"


def test_zones_come_from_the_tzdata_package_where_the_system_has_none(write_config, run_cli):
    """A fresh Debian 12 may lack /usr/share/zoneinfo: PYTHONTZPATH="" hides the system's zones, as there."""
    text = ('[server]\ntimezone = "America/New_York"\n[apps.site]\nrepo = "/srv/git/site.git"\n'
            '[[apps.site.tasks]]\nname = "hourly"\nschedule = "@hourly"\ncommand = ["true"]\n')
    completed = run_cli("tasks", "site", config=write_config(text), env={"PYTHONTZPATH": ""})
    assert completed.returncode == 0, completed.stderr
    assert "'@hourly' (America/New_York)" in completed.stdout


def test_a_task_added_by_a_reload_is_scheduled_by_the_running_worker(write_config, store):
    """A worker started with no task at all takes one added to deploy.toml by a reload (SIGHUP) from
    its next tick, as it takes new apps from its next job."""
    from hookdeploy.core.reload import LiveConfig
    from hookdeploy.engine.worker import Worker

    live = LiveConfig(tasks_config(write_config, []))
    make_live(store)
    clock = Clock()
    worker = Worker(live, store, "w", clock=clock)
    worker.scheduler = HeldRuns(worker.config, store, "w", clock=clock)  # as run() makes it, with no container
    assert worker.scheduler.tick() == []
    tasks_config(write_config, [EVERY_MINUTE])  # the file changes; SIGHUP makes the worker read it
    assert live.reload()
    worker._take_config()
    clock.at(1)
    run, = worker.scheduler.tick()
    assert (run.task, run.state) == ("tick", RunState.RUNNING)
