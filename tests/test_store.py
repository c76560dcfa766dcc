"""The job store against real SQLite files, and real processes racing for and dying over it."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from hookdeploy.core.errors import StoreError
from hookdeploy.core.models import JobKind, JobState, ReleaseState, Trigger, parse_time
from hookdeploy.core.schema import MIGRATIONS, SCHEMA_VERSION
from hookdeploy.core.store import Store

from conftest import fake_sha

SHA_A, SHA_B, SHA_C = fake_sha(0xA), fake_sha(0xB), fake_sha(0xC)


def states(store: Store, app: str) -> dict[int, str]:
    """Every job of an app, oldest first, with its state."""
    return {job.id: job.state.value for job in reversed(store.jobs(app, limit=10_000))}


def log_messages(store: Store, job_id: int) -> list[str]:
    return [f"{event.kind}: {event.message}" for event in store.events(job_id)]


def raw(path: Path, query: str, params: tuple = ()) -> list[tuple]:
    """A query through a plain sqlite3 connection of its own."""
    connection = sqlite3.connect(path)
    try:
        return connection.execute(query, params).fetchall()
    finally:
        connection.close()


# -- the file ---------------------------------------------------------------------------------------------


def test_a_new_store_is_a_wal_database_at_the_current_schema(tmp_path):
    path = tmp_path / "deep" / "folder" / "hookdeploy.db"
    store = Store(path)
    store.enqueue("site", SHA_A)
    assert path.is_file()
    assert raw(path, "PRAGMA journal_mode") == [("wal",)]
    assert raw(path, "PRAGMA user_version") == [(SCHEMA_VERSION,)]
    connection = store._connection()
    assert connection.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    assert connection.execute("PRAGMA busy_timeout").fetchone()[0] >= 5000


def test_an_unusable_path_is_a_store_error(tmp_path):
    (tmp_path / "file").write_text("not a folder")
    with pytest.raises(StoreError, match="job store"):
        Store(tmp_path / "file" / "hookdeploy.db")


def test_a_newer_schema_is_refused_not_touched(tmp_path):
    path = tmp_path / "hookdeploy.db"
    Store(path).close()
    connection = sqlite3.connect(path)
    connection.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    connection.close()
    with pytest.raises(StoreError, match="newer than this hookdeploy"):
        Store(path)
    assert raw(path, "PRAGMA user_version") == [(SCHEMA_VERSION + 1,)]


# -- enqueue, claim, finish ------------------------------------------------------------------------------


def test_enqueue_claim_finish_with_events(store):
    queued = store.enqueue("site", SHA_A, trigger=Trigger.PUSH, ref="refs/heads/deploy")
    assert (queued.app, queued.kind, queued.trigger, queued.ref, queued.sha, queued.state) == (
        "site", JobKind.DEPLOY, Trigger.PUSH, "refs/heads/deploy", SHA_A, JobState.QUEUED)
    assert queued.started_at is None and queued.finished_at is None and queued.error is None
    assert store.queued_count("site") == 1

    claimed = store.claim("worker-1")
    assert claimed.id == queued.id and claimed.state is JobState.RUNNING and claimed.worker == "worker-1"
    assert claimed.started_at is not None and claimed.heartbeat_at is not None
    assert store.running("site") == claimed
    assert store.queued_count("site") == 0
    assert store.claim("worker-2") is None  # nothing else queued

    store.set_image(claimed.id, "hookdeploy/site:00000000000a")
    store.log(claimed.id, "build", kind="step", duration=1.5)
    store.log_many(claimed.id, ["Step 1/2", "Step 2/2"])
    done = store.finish(claimed.id, JobState.SUCCEEDED)
    assert done.state is JobState.SUCCEEDED and done.image == "hookdeploy/site:00000000000a"
    assert parse_time(done.created_at) <= parse_time(done.started_at) <= parse_time(done.finished_at)
    assert store.running("site") is None
    assert log_messages(store, done.id) == [
        f"state: queued (push, deploy {SHA_A[:12]})", "state: running (worker worker-1)",
        "step: build", "log: Step 1/2", "log: Step 2/2", "state: succeeded"]
    assert store.events(done.id)[2].duration == 1.5
    assert [event.message for event in store.events(done.id, after=store.events(done.id)[3].id)] == [
        "Step 2/2", "succeeded"]


@pytest.mark.parametrize("final", [JobState.FAILED, JobState.ROLLED_BACK, JobState.INTERRUPTED])
def test_finish_with_an_error_keeps_it(store, final):
    job = store.enqueue("site", SHA_A)
    store.claim("w")
    finished = store.finish(job.id, final, error="health check: 502")
    assert finished.state is final and finished.error == "health check: 502"
    assert log_messages(store, job.id)[-1] == f"state: {final.value}: health check: 502"


def test_interrupt_queues_one_retry_in_the_same_commit_unless_a_newer_job_is_queued(store):
    store.enqueue("site", fake_sha(1))
    running = store.claim("w1")
    interrupted, retry = store.interrupt(running.id, "the worker is restarting")
    assert interrupted.state is JobState.INTERRUPTED
    assert interrupted.error == f"the worker is restarting; queued again as job {retry.id}"
    assert (retry.sha, retry.kind, retry.trigger, retry.state, retry.retry_of) == (
        fake_sha(1), JobKind.DEPLOY, Trigger.RETRY, JobState.QUEUED, running.id)
    assert store.retry_of(running.id) == retry

    again = store.claim("w1")
    newer = store.enqueue("site", fake_sha(2))  # pushed while the retry ran
    interrupted, none = store.interrupt(again.id, "the worker is restarting")
    assert none is None and store.retry_of(again.id) is None
    assert interrupted.error == f"the worker is restarting; job {newer.id} is queued after it"
    assert [job.id for job in store.jobs("site", states=(JobState.QUEUED,))] == [newer.id]
    with pytest.raises(StoreError, match="is not running"):
        store.interrupt(again.id, "twice")


def test_only_running_jobs_can_finish_and_only_in_final_states(store):
    job = store.enqueue("site", SHA_A)
    with pytest.raises(StoreError, match="is not running"):
        store.finish(job.id, JobState.SUCCEEDED)  # still queued
    store.claim("w")
    with pytest.raises(StoreError, match="not a final state"):
        store.finish(job.id, JobState.QUEUED)
    store.finish(job.id, JobState.SUCCEEDED)
    with pytest.raises(StoreError, match="is not running"):
        store.finish(job.id, JobState.FAILED)  # a finished job never changes again
    assert store.job(job.id).state is JobState.SUCCEEDED


def test_the_database_refuses_bad_rows(store):
    with pytest.raises(sqlite3.IntegrityError):
        store.enqueue("site", "not-a-sha")
    with pytest.raises(sqlite3.IntegrityError):
        store.enqueue("site", SHA_A.upper())
    job = store.enqueue("site", SHA_A)
    with pytest.raises(sqlite3.IntegrityError):
        with store.transaction() as db:
            db.execute("UPDATE jobs SET state = 'lost'")
    with pytest.raises(sqlite3.IntegrityError):
        with store.transaction() as db:
            db.execute("UPDATE jobs SET kind = 'redeploy'")
    assert store.jobs() == [job]  # the failed transactions left nothing behind


def test_claim_takes_the_oldest_job_of_an_idle_app(store):
    first = store.enqueue("site", SHA_A, coalesce=False)
    second = store.enqueue("site", SHA_B, coalesce=False)
    other = store.enqueue("api", SHA_C, coalesce=False)
    assert store.claim("w").id == first.id
    assert store.claim("w").id == other.id  # site is busy, api runs independently
    assert store.claim("w") is None  # site's second job waits for its first
    store.finish(first.id, JobState.FAILED, error="x")
    assert store.claim("w").id == second.id


def test_claim_can_be_limited_to_some_apps(store):
    site = store.enqueue("site", SHA_A)
    api = store.enqueue("api", SHA_B)
    assert store.claim("w", apps=["api"]).id == api.id
    assert store.claim("w", apps=["api"]) is None
    assert store.claim("w", apps=["site", "docs"]).id == site.id


def test_the_database_refuses_a_second_running_job_per_app(store):
    first = store.enqueue("site", SHA_A, coalesce=False)
    second = store.enqueue("site", SHA_B, coalesce=False)
    store.claim("w")
    with pytest.raises(sqlite3.IntegrityError, match="UNIQUE"):
        with store.transaction() as db:
            db.execute("UPDATE jobs SET state = 'running' WHERE id = ?", (second.id,))
    assert store.job(second.id).state is JobState.QUEUED
    # Through a plain connection too: the rule lives in the file, not in Python.
    connection = sqlite3.connect(store.path)
    with pytest.raises(sqlite3.IntegrityError, match="UNIQUE"):
        connection.execute("UPDATE jobs SET state = 'running' WHERE id = ?", (second.id,))
    connection.close()
    store.finish(first.id, JobState.SUCCEEDED)
    assert store.claim("w").id == second.id


def test_heartbeat_and_stale_running_jobs(store):
    job = store.enqueue("site", SHA_A)
    store.claim("w")
    assert store.stale_running(older_than=60) == []
    with store.transaction() as db:
        db.execute("UPDATE jobs SET heartbeat_at = '2000-01-01T00:00:00.000Z' WHERE id = ?", (job.id,))
    assert [stale.id for stale in store.stale_running(older_than=60)] == [job.id]
    store.heartbeat(job.id)
    assert store.stale_running(older_than=60) == []


# -- coalescing ---------------------------------------------------------------------------------------------


def test_a_newer_job_supersedes_older_queued_ones_of_its_app(store):
    running = store.enqueue("site", SHA_A)
    store.claim("w")
    older = store.enqueue("site", SHA_B)
    other_app = store.enqueue("api", SHA_B)
    newest = store.enqueue("site", SHA_C)
    assert states(store, "site") == {running.id: "running", older.id: "superseded", newest.id: "queued"}
    assert states(store, "api") == {other_app.id: "queued"}  # other apps are untouched
    assert store.job(older.id).finished_at is not None
    assert log_messages(store, older.id)[-1] == f"state: superseded by job {newest.id}"
    assert store.claim("w").id == other_app.id  # site is still busy


def test_coalescing_happens_in_the_enqueue_transaction(store):
    older = store.enqueue("site", SHA_A)
    # Make the last write of the next enqueue (the superseded job's event) fail: nothing of it may stay.
    with store.transaction() as db:
        db.execute("CREATE TEMP TRIGGER fail_supersede BEFORE INSERT ON events WHEN NEW.message LIKE 'superseded%' "
                   "BEGIN SELECT RAISE(ABORT, 'no superseding today'); END")
    with pytest.raises(sqlite3.IntegrityError, match="no superseding today"):
        store.enqueue("site", SHA_B)
    assert states(store, "site") == {older.id: "queued"}
    assert log_messages(store, older.id) == [f"state: queued (manual, deploy {SHA_A[:12]})"]
    with store.transaction() as db:
        db.execute("DROP TRIGGER fail_supersede")
    newest = store.enqueue("site", SHA_C)
    assert store.jobs("site", states=(JobState.QUEUED,)) == [newest]


def test_without_coalescing_every_job_stays_queued(store):
    jobs = [store.enqueue("site", sha, coalesce=False) for sha in (SHA_A, SHA_B, SHA_C)]
    assert states(store, "site") == {job.id: "queued" for job in jobs}
    assert store.claim("w").id == jobs[0].id


def test_jobs_are_never_deleted(store):
    for number in range(30):
        job = store.enqueue("site", fake_sha(number))
        if number % 3 == 0:
            store.claim("w")
            store.finish(job.id, JobState.SUCCEEDED)
    history = store.jobs("site", limit=1000)
    assert [job.id for job in history] == list(range(30, 0, -1))  # newest first, all kept
    assert {job.state for job in history} == {JobState.SUCCEEDED, JobState.SUPERSEDED, JobState.QUEUED}
    assert store.jobs("site", limit=5) == history[:5]
    assert store.jobs(states=(JobState.QUEUED,)) == [history[0]]


# -- deliveries, releases, workers ---------------------------------------------------------------------------


def test_a_delivery_is_queued_once(store):
    job, duplicate = store.enqueue_delivery("site", "github", "delivery-1", SHA_A, ref="refs/heads/deploy")
    assert duplicate is None and job.trigger is Trigger.WEBHOOK and job.ref == "refs/heads/deploy"
    again, duplicate = store.enqueue_delivery("site", "github", "delivery-1", SHA_B, ref="refs/heads/deploy")
    assert again is None and duplicate == job.id
    assert [j.id for j in store.jobs("site")] == [job.id]
    other_app, _ = store.enqueue_delivery("api", "github", "delivery-1", SHA_A, ref="refs/heads/deploy")
    assert other_app is not None  # ids are unique per app
    with pytest.raises(sqlite3.IntegrityError):
        with store.transaction() as db:
            db.execute("INSERT INTO deliveries (app, delivery_id, provider, job, received_at) "
                       "VALUES ('site', 'delivery-1', 'github', NULL, 'now')")


def test_record_live_retires_the_previous_release(store):
    first_job = store.enqueue("site", SHA_A)
    second_job = store.enqueue("site", SHA_B)
    assert store.live_release("site") is None
    first = store.record_live("site", SHA_A, "hookdeploy/site:a", "hookdeploy-site-a-1", first_job.id)
    assert store.live_release("site") == first and first.state is ReleaseState.LIVE
    second = store.record_live("site", SHA_B, "hookdeploy/site:b", "hookdeploy-site-b-2", second_job.id)
    releases = store.releases("site")
    assert [(r.sha, r.state) for r in releases] == [(SHA_B, ReleaseState.LIVE), (SHA_A, ReleaseState.RETIRED)]
    assert releases[1].retired_at is not None
    assert store.live_release("site") == second
    assert second.to_json() == {"sha": SHA_B, "image": "hookdeploy/site:b", "container": "hookdeploy-site-b-2",
                                "since": second.live_since, "job": second_job.id}
    store.mark_pruned([releases[1].id, second.id])  # a live release is never marked pruned
    assert [r.state for r in store.releases("site")] == [ReleaseState.LIVE, ReleaseState.PRUNED]
    with pytest.raises(sqlite3.IntegrityError, match="UNIQUE"):
        with store.transaction() as db:
            db.execute("UPDATE releases SET state = 'live' WHERE id = ?", (first.id,))


def test_worker_beat_and_alive(store):
    assert not store.worker_alive(within=10)
    store.worker_beat("worker-1")
    assert store.worker_alive(within=10)
    store.worker_beat("worker-1", stopped=True)
    assert not store.worker_alive(within=10)
    store.worker_beat("worker-2")
    with store.transaction() as db:
        db.execute("UPDATE workers SET heartbeat_at = '2000-01-01T00:00:00.000Z' WHERE id = 'worker-2'")
    assert not store.worker_alive(within=10)  # beat too long ago: it died
    store.worker_beat("worker-2")
    assert store.worker_alive(within=10)


# -- migration ------------------------------------------------------------------------------------------------


def test_migration_from_version_1_keeps_the_data(tmp_path):
    path = tmp_path / "hookdeploy.db"
    connection = sqlite3.connect(path)
    connection.executescript(MIGRATIONS[0])
    connection.executescript(f"""
        INSERT INTO jobs (app, kind, trigger, ref, sha, state, created_at, started_at, finished_at, error, image)
        VALUES ('site', 'deploy', 'push', 'refs/heads/deploy', '{SHA_A}', 'succeeded',
                '2026-01-01T00:00:00.000Z', '2026-01-01T00:00:01.000Z', '2026-01-01T00:00:09.000Z', NULL,
                'hookdeploy/site:{SHA_A[:12]}');
        INSERT INTO jobs (app, kind, trigger, ref, sha, state, created_at)
        VALUES ('site', 'deploy', 'manual', 'deploy', '{SHA_B}', 'queued', '2026-01-02T00:00:00.000Z');
        INSERT INTO events (job, at, kind, message) VALUES (1, '2026-01-01T00:00:00.000Z', 'state', 'queued');
        INSERT INTO events (job, at, kind, message) VALUES (1, '2026-01-01T00:00:09.000Z', 'state', 'succeeded');
        INSERT INTO releases (app, sha, image, container, job, state, live_since)
        VALUES ('site', '{SHA_A}', 'hookdeploy/site:{SHA_A[:12]}', 'c1', 1, 'live', '2026-01-01T00:00:09.000Z');
        PRAGMA user_version = 1;
    """)
    connection.close()

    store = Store(path)
    assert raw(path, "PRAGMA user_version") == [(SCHEMA_VERSION,)]
    old, queued = store.job(1), store.job(2)
    assert (old.state, old.image, old.finished_at, old.retry_of) == (
        JobState.SUCCEEDED, f"hookdeploy/site:{SHA_A[:12]}", "2026-01-01T00:00:09.000Z", None)
    assert (queued.state, queued.trigger, queued.ref) == (JobState.QUEUED, Trigger.MANUAL, "deploy")
    assert [event.message for event in store.events(1)] == ["queued", "succeeded"]
    assert store.live_release("site").sha == SHA_A
    # What version 2 added works on the migrated file.
    job, _ = store.enqueue_delivery("site", "github", "d-1", SHA_C, ref="refs/heads/deploy")
    assert store.enqueue_delivery("site", "github", "d-1", SHA_C, ref="refs/heads/deploy") == (None, job.id)
    retry = store.enqueue("site", SHA_A, trigger=Trigger.RETRY, retry_of=1)
    assert store.job(retry.id).retry_of == 1
    store.worker_beat("w")
    assert store.worker_alive(within=10)
    assert store.claim("w").id == retry.id  # job 2 and the delivery's job were superseded
    assert store.migrate() == SCHEMA_VERSION  # opening again migrates nothing


# -- several processes ---------------------------------------------------------------------------------------

CLAIMER = textwrap.dedent("""
    import json, os, sys, time
    from hookdeploy.core.models import JobState
    from hookdeploy.core.store import Store

    path, name, go = sys.argv[1], sys.argv[2], sys.argv[3]
    store = Store(path)
    while not os.path.exists(go):
        time.sleep(0.001)
    claimed, overlaps = [], 0
    while True:
        job = store.claim(name)
        if job is None:
            if store.jobs(states=(JobState.QUEUED,), limit=1):
                continue  # every queued job's app is busy in the other process for a moment
            break
        running = store._connection().execute(
            "SELECT count(*) FROM jobs WHERE app = ? AND state = 'running'", (job.app,)).fetchone()[0]
        overlaps += running != 1
        claimed.append(job.id)
        store.finish(job.id, JobState.SUCCEEDED)
        time.sleep(0.001)  # a moment outside any transaction, as a real worker has, so others get the lock
    print(json.dumps({"claimed": claimed, "overlaps": overlaps}))
""")


@pytest.mark.slow
@pytest.mark.parametrize("round_number", range(4))
def test_processes_claiming_at_once_each_job_is_won_exactly_once(tmp_path, round_number):
    path = tmp_path / "hookdeploy.db"
    store = Store(path)
    # Many apps (any process may take any job) and two apps with queues (one running job each at a time).
    expected = [store.enqueue(f"app-{n}", fake_sha(n)).id for n in range(30)]
    expected += [store.enqueue(app, fake_sha(100 + n), coalesce=False).id for n in range(15) for app in ("x", "y")]
    go = tmp_path / "go"
    claimers = [subprocess.Popen([sys.executable, "-c", CLAIMER, str(path), f"claimer-{n}", str(go)],
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for n in range(3)]
    time.sleep(0.3)  # let each open the store and wait at the line
    go.touch()
    results = []
    for claimer in claimers:
        out, err = claimer.communicate(timeout=60)
        assert claimer.returncode == 0, err
        results.append(json.loads(out))
    won = [job_id for result in results for job_id in result["claimed"]]
    assert sorted(won) == sorted(expected)  # every job won, none twice
    assert all(result["overlaps"] == 0 for result in results)
    for result, number in zip(results, range(3)):
        for job_id in result["claimed"]:
            job = store.job(job_id)
            assert job.worker == f"claimer-{number}" and job.state is JobState.SUCCEEDED
            assert [m for m in log_messages(store, job_id) if m.startswith("state: running")] == [
                f"state: running (worker claimer-{number})"]
    # The work was really shared (otherwise this did not test a race).
    assert sum(1 for result in results if result["claimed"]) >= 2


COMMIT_THEN_DIE = textwrap.dedent("""
    import os, signal, sys
    from hookdeploy.core.models import Trigger
    from hookdeploy.core.store import Store

    store = Store(sys.argv[1])
    job = store.enqueue("site", sys.argv[2], trigger=Trigger.PUSH, ref="refs/heads/deploy")
    print(job.id, flush=True)
    if sys.argv[3] == "mid-transaction":
        with store.transaction() as db:
            db.execute("INSERT INTO jobs (app, kind, trigger, sha, state, created_at) "
                       "VALUES ('site', 'deploy', 'push', ?, 'queued', 'now')", (sys.argv[2],))
            os.kill(os.getpid(), signal.SIGKILL)
    os.kill(os.getpid(), signal.SIGKILL)
""")


@pytest.mark.parametrize("where", ["after-commit", "mid-transaction"])
def test_a_committed_job_survives_its_process_being_killed(tmp_path, where):
    path = tmp_path / "hookdeploy.db"
    child = subprocess.run([sys.executable, "-c", COMMIT_THEN_DIE, str(path), SHA_A, where],
                           capture_output=True, text=True, timeout=60)
    assert child.returncode == -9, child.stderr
    job_id = int(child.stdout)
    store = Store(path)  # a fresh process-level view of the file the dead process left
    job = store.job(job_id)
    assert (job.app, job.sha, job.state, job.trigger) == ("site", SHA_A, JobState.QUEUED, Trigger.PUSH)
    assert log_messages(store, job_id) == [f"state: queued (push, deploy {SHA_A[:12]})"]
    assert [j.id for j in store.jobs()] == [job_id]  # the uncommitted insert is gone
    # The dead process holds no lock: writing works at once.
    started = time.monotonic()
    store.enqueue("site", SHA_B)
    assert time.monotonic() - started < 2
