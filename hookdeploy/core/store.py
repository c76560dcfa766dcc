"""The durable job store: jobs, their events (the job log), releases, webhook deliveries, worker
heartbeats, API tokens by id and ended dashboard sessions, as the queries on one SQLite file.

Every write runs in `BEGIN IMMEDIATE`, so writers queue on the busy timeout instead of failing
half-way. The database enforces the rules (one running job per app, one delivery id once, one
live release per app); jobs are never deleted. The file itself (schema, migrations, WAL with
synchronous=FULL so a committed job survives a crash or power loss, errors that name the file)
is schema.py's.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
from pathlib import Path
from typing import Iterator

from hookdeploy.core import private, schema
from hookdeploy.core.errors import StoreError
from hookdeploy.core.models import (ApiToken, Event, Job, JobKind, JobState, Release, ReleaseState, Trigger,
                                    parse_time, release_tag, utcnow)

_JOB_COLUMNS = ("id, app, kind, trigger, ref, sha, state, created_at, started_at, finished_at, "
                "error, image, heartbeat_at, retry_of, worker, digest, signer_fingerprint, signer_principal")


class Store:
    """One SQLite file; a connection per thread; safe to share across threads and processes."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self._local = threading.local()
        try:
            # Job logs and deliveries are nobody else's: the folder (state_dir) 0700, the file 0600 before
            # SQLite opens it, so its -wal and -shm, which SQLite makes with the file's mode, are 0600 too.
            private.folder(self.path.parent)
            private.file(self.path)
            self.migrate()
            for companion in ("-wal", "-shm"):  # made by an older version, when the file was looser
                private.tighten(self.path.with_name(self.path.name + companion), private.FILE_MODE)
        except OSError as error:
            raise schema.store_error(self.path, error.strerror or error) from None

    # -- connections and transactions --------------------------------------------------

    def _connection(self) -> sqlite3.Connection:
        connection = getattr(self._local, "connection", None)
        if connection is None:
            connection = self._local.connection = schema.connect(self.path)
        return connection

    @contextlib.contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """A write transaction: BEGIN IMMEDIATE, COMMIT on success, ROLLBACK on any error."""
        connection = self._connection()
        connection.execute("BEGIN IMMEDIATE")
        try:
            yield connection
            connection.execute("COMMIT")
        except BaseException:
            with contextlib.suppress(StoreError):  # a failed statement may have ended it already
                connection.execute("ROLLBACK")
            raise

    def close(self) -> None:
        """Close this thread's connection."""
        connection = getattr(self._local, "connection", None)
        if connection is not None:
            connection.close()
            self._local.connection = None

    def migrate(self) -> int:
        """Bring the schema up to schema.SCHEMA_VERSION, keeping all data; return the version found."""
        connection = self._connection()
        connection.execute("PRAGMA foreign_keys = OFF")  # a migration may make a table anew (no-op in a transaction)
        try:
            with self.transaction() as db:
                return schema.migrate(db, self.path)
        finally:
            connection.execute("PRAGMA foreign_keys = ON")

    # -- queueing jobs (each webhook delivery once) ------------------------------------

    def enqueue(self, app: str, sha: str, *, kind: JobKind = JobKind.DEPLOY, trigger: Trigger = Trigger.MANUAL,
                ref: str | None = None, coalesce: bool = True, retry_of: int | None = None,
                digest: str | None = None) -> Job:
        """Queue a job; with `coalesce`, older queued jobs of the app become superseded in the same commit.

        `digest` pins an image app's job to one image in its registry."""
        with self.transaction() as db:
            return self._insert_job(db, app, sha, kind, trigger, ref, coalesce, retry_of, digest)

    def enqueue_delivery(self, app: str, provider: str, delivery_id: str, sha: str, *, ref: str | None,
                         coalesce: bool = True) -> tuple[Job | None, int | None]:
        """Queue a webhook job unless `delivery_id` was seen: (new job, None) or (None, earlier job id)."""
        return self.enqueue_deliveries([{"app": app, "provider": provider, "delivery_id": delivery_id,
                                         "sha": sha, "ref": ref, "coalesce": coalesce}])[0]

    def enqueue_deliveries(self, deliveries: list[dict]) -> list[tuple[Job | None, int | None]]:
        """enqueue_delivery for each dict of its arguments, in order, all in one commit (one fsync)."""
        results: list[tuple[Job | None, int | None]] = []
        with self.transaction() as db:
            for delivery in deliveries:
                app, delivery_id = delivery["app"], delivery["delivery_id"]
                seen = db.execute("SELECT job FROM deliveries WHERE app = ? AND delivery_id = ?",
                                  (app, delivery_id)).fetchone()
                if seen is not None:
                    results.append((None, seen["job"]))
                    continue
                job = self._insert_job(db, app, delivery["sha"], JobKind.DEPLOY, Trigger.WEBHOOK, delivery["ref"],
                                       delivery.get("coalesce", True), None, delivery.get("digest"))
                db.execute("INSERT INTO deliveries (app, delivery_id, provider, job, received_at) "
                           "VALUES (?, ?, ?, ?, ?)", (app, delivery_id, delivery["provider"], job.id, job.created_at))
                results.append((job, None))
        return results

    def _insert_job(self, db, app, sha, kind, trigger, ref, coalesce, retry_of, digest=None) -> Job:
        now = utcnow()
        cursor = db.execute(
            "INSERT INTO jobs (app, kind, trigger, ref, sha, state, created_at, retry_of, digest) "
            "VALUES (?, ?, ?, ?, ?, 'queued', ?, ?, ?)",
            (app, JobKind(kind).value, Trigger(trigger).value, ref, sha, now, retry_of, digest))
        job_id = cursor.lastrowid
        self._event(db, job_id, "state", f"queued ({Trigger(trigger).value}, {JobKind(kind).value} {release_tag(sha)})")
        if coalesce:
            older = db.execute("SELECT id FROM jobs WHERE app = ? AND state = 'queued' AND id < ?",
                               (app, job_id)).fetchall()
            for row in older:
                db.execute("UPDATE jobs SET state = 'superseded', finished_at = ? WHERE id = ?", (now, row["id"]))
                self._event(db, row["id"], "state", f"superseded by job {job_id}")
        return self._job(db, job_id)

    # -- running jobs ------------------------------------------------------------------

    def claim(self, worker: str, apps: list[str] | None = None) -> Job | None:
        """Atomically take the oldest queued job of an app with nothing running; None if there is none."""
        with self.transaction() as db:
            candidates = db.execute(
                "SELECT id, app FROM jobs WHERE state = 'queued' "
                "AND app NOT IN (SELECT app FROM jobs WHERE state = 'running') ORDER BY id").fetchall()
            for row in candidates:
                if apps is not None and row["app"] not in apps:
                    continue
                now = utcnow()
                db.execute("UPDATE jobs SET state = 'running', started_at = ?, heartbeat_at = ?, worker = ? "
                           "WHERE id = ? AND state = 'queued'", (now, now, worker, row["id"]))
                self._event(db, row["id"], "state", f"running (worker {worker})")
                return self._job(db, row["id"])
        return None

    def heartbeat(self, job_id: int) -> None:
        """Mark a running job as still being worked on."""
        with self.transaction() as db:
            db.execute("UPDATE jobs SET heartbeat_at = ? WHERE id = ? AND state = 'running'", (utcnow(), job_id))

    def set_image(self, job_id: int, image: str) -> None:
        """Record the image a job built or reuses."""
        with self.transaction() as db:
            db.execute("UPDATE jobs SET image = ? WHERE id = ?", (image, job_id))

    def set_digest(self, job_id: int, digest: str) -> None:
        """Record the registry digest of the image a job pushed."""
        with self.transaction() as db:
            db.execute("UPDATE jobs SET digest = ? WHERE id = ?", (digest, job_id))

    def set_signer(self, job_id: int, fingerprint: str, principal: str) -> None:
        """Record who signed a job's commit: the key's fingerprint and its principal or user id."""
        with self.transaction() as db:
            db.execute("UPDATE jobs SET signer_fingerprint = ?, signer_principal = ? WHERE id = ?",
                       (fingerprint, principal, job_id))

    def digests(self, app: str, prefix: str) -> list[str]:
        """The distinct registry digests recorded for the app whose hexadecimal part starts with `prefix`."""
        rows = self._connection().execute(
            "SELECT DISTINCT digest FROM jobs WHERE app = ? AND digest GLOB ? ORDER BY digest",
            (app, f"sha256:{prefix}*")).fetchall()
        return [row["digest"] for row in rows]

    def digest_of(self, app: str, sha: str) -> str | None:
        """The newest registry digest recorded for the app's release `sha` (pushed or pulled), or None."""
        row = self._connection().execute(
            "SELECT digest FROM jobs WHERE app = ? AND sha = ? AND digest IS NOT NULL ORDER BY id DESC LIMIT 1",
            (app, sha)).fetchone()
        return row["digest"] if row else None

    def finish(self, job_id: int, state: JobState, error: str | None = None) -> Job:
        """Move a running job to a final state; StoreError if it is not running."""
        state = JobState(state)
        if not state.finished:
            raise StoreError(f"job {job_id}: {state.value} is not a final state")
        with self.transaction() as db:
            return self._finish(db, job_id, state, error)

    def _finish(self, db, job_id: int, state: JobState, error: str | None) -> Job:
        changed = db.execute("UPDATE jobs SET state = ?, finished_at = ?, error = ? WHERE id = ? AND state = 'running'",
                             (state.value, utcnow(), error, job_id)).rowcount
        if not changed:
            raise StoreError(f"job {job_id} is not running")
        self._event(db, job_id, "state", state.value + (f": {error}" if error else ""))
        return self._job(db, job_id)

    def interrupt(self, job_id: int, reason: str, retry: bool = True) -> tuple[Job, Job | None]:
        """End a running job `interrupted` and, with `retry`, queue its one retry in the same commit,
        unless a newer job of the app is queued already (DESIGN: "queued once unless a newer one is").

        The reason then names what runs next ("...; queued again as job N" or "...; job N is queued
        after it"), so whoever follows the job knows which one to follow. StoreError if it is not running."""
        with self.transaction() as db:
            job = self._job(db, job_id)
            if job is None or job.state is not JobState.RUNNING:
                raise StoreError(f"job {job_id} is not running")
            again = None
            newer = db.execute("SELECT id FROM jobs WHERE app = ? AND state = 'queued' AND id > ? ORDER BY id DESC",
                               (job.app, job_id)).fetchone()
            if retry and newer is not None:
                reason = f"{reason}; job {newer['id']} is queued after it"
            elif retry:
                again = self._insert_job(db, job.app, job.sha, job.kind, Trigger.RETRY, job.ref, False, job.id,
                                         job.digest)
                reason = f"{reason}; queued again as job {again.id}"
            return self._finish(db, job_id, JobState.INTERRUPTED, reason), again

    def retry_of(self, job_id: int) -> Job | None:
        """The job queued to retry job `job_id`, if any."""
        found = self._jobs("WHERE retry_of = ? ORDER BY id LIMIT 1", (job_id,))
        return found[0] if found else None

    def stale_running(self, older_than: float) -> list[Job]:
        """Running jobs whose heartbeat is older than `older_than` seconds."""
        now = parse_time(utcnow())
        return [job for job in self._jobs("WHERE state = 'running' ORDER BY id", ())
                if (now - parse_time(job.heartbeat_at or job.started_at or job.created_at)).total_seconds() > older_than]

    # -- reading jobs ------------------------------------------------------------------

    def job(self, job_id: int) -> Job | None:
        """One job, or None."""
        return self._job(self._connection(), job_id)

    def jobs(self, app: str | None = None, limit: int = 50, states: tuple[JobState, ...] = ()) -> list[Job]:
        """Jobs newest first, optionally of one app and in some states."""
        clauses, params = [], []
        if app is not None:
            clauses.append("app = ?")
            params.append(app)
        if states:
            clauses.append(f"state IN ({', '.join('?' * len(states))})")
            params.extend(JobState(s).value for s in states)
        where = f"WHERE {' AND '.join(clauses)} " if clauses else ""
        return self._jobs(f"{where}ORDER BY id DESC LIMIT ?", (*params, limit))

    def data_version(self) -> int:
        """A number that changes when another connection commits to the store (SQLite's data_version):
        cheap enough for an idle worker to look at every few milliseconds."""
        return self._connection().execute("PRAGMA data_version").fetchone()[0]

    def queued_count(self, app: str) -> int:
        """How many jobs of the app wait."""
        return self._connection().execute("SELECT count(*) FROM jobs WHERE state = 'queued' AND app = ?",
                                          (app,)).fetchone()[0]

    def running(self, app: str) -> Job | None:
        """The app's running job, if any."""
        found = self._jobs("WHERE state = 'running' AND app = ?", (app,))
        return found[0] if found else None

    def _job(self, db, job_id: int) -> Job | None:
        row = db.execute(f"SELECT {_JOB_COLUMNS} FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return _job_from_row(row) if row else None

    def _jobs(self, tail: str, params: tuple) -> list[Job]:
        rows = self._connection().execute(f"SELECT {_JOB_COLUMNS} FROM jobs {tail}", params).fetchall()
        return [_job_from_row(row) for row in rows]

    # -- events (the job log) ----------------------------------------------------------

    def log(self, job_id: int, message: str, *, kind: str = "log", duration: float | None = None,
            step: str | None = None) -> None:
        """Append a line to a job's log (a step event names its `step`)."""
        with self.transaction() as db:
            self._event(db, job_id, kind, message, duration, step)

    def log_many(self, job_id: int, messages: list[str]) -> None:
        """Append several output lines in one commit."""
        with self.transaction() as db:
            now = utcnow()
            db.executemany("INSERT INTO events (job, at, kind, message) VALUES (?, ?, 'log', ?)",
                           [(job_id, now, message) for message in messages])

    def events(self, job_id: int, after: int = 0) -> list[Event]:
        """A job's log lines with id greater than `after`, oldest first."""
        rows = self._connection().execute(
            "SELECT id, job, at, kind, message, duration, step FROM events WHERE job = ? AND id > ? ORDER BY id",
            (job_id, after)).fetchall()
        return [Event(**dict(row)) for row in rows]

    @staticmethod
    def _event(db, job_id: int, kind: str, message: str, duration: float | None = None, step: str | None = None) -> None:
        db.execute("INSERT INTO events (job, at, kind, message, duration, step) VALUES (?, ?, ?, ?, ?, ?)",
                   (job_id, utcnow(), kind, message, duration, step))

    # -- releases ----------------------------------------------------------------------

    def record_live(self, app: str, sha: str, image: str, container: str, job_id: int) -> Release:
        """Make a release the app's live one; the previous live release becomes retired."""
        with self.transaction() as db:
            now = utcnow()
            db.execute("UPDATE releases SET state = 'retired', retired_at = ? WHERE app = ? AND state = 'live'",
                       (now, app))
            db.execute("DELETE FROM stopped_apps WHERE app = ?", (app,))  # a new live release runs
            cursor = db.execute(
                "INSERT INTO releases (app, sha, image, container, job, state, live_since, digest) "
                "VALUES (?, ?, ?, ?, ?, 'live', ?, (SELECT digest FROM jobs WHERE id = ?))",
                (app, sha, image, container, job_id, now, job_id))
            return self._release(db, "WHERE id = ?", (cursor.lastrowid,))[0]

    def undo_live(self, app: str, release_id: int, previous_id: int, stopped_by: int | None = None) -> None:
        """Take back a release the guard switched away from: it is no release (a rollback never goes
        to it; its image may be pruned), and the one live before it is live again; stopped again by
        job `stopped_by` if it was stopped when the release replaced it."""
        with self.transaction() as db:
            db.execute("DELETE FROM releases WHERE id = ? AND app = ?", (release_id, app))
            db.execute("UPDATE releases SET state = 'live', retired_at = NULL WHERE id = ? AND app = ?",
                       (previous_id, app))
            if stopped_by is not None:
                db.execute("INSERT OR REPLACE INTO stopped_apps (app, release, job, stopped_at) VALUES (?, ?, ?, ?)",
                           (app, previous_id, stopped_by, utcnow()))

    def live_release(self, app: str) -> Release | None:
        """The release the app serves now, or None."""
        found = self._release(self._connection(), "WHERE app = ? AND state = 'live'", (app,))
        return found[0] if found else None

    def releases(self, app: str) -> list[Release]:
        """Every release of the app, newest first."""
        return self._release(self._connection(), "WHERE app = ? ORDER BY id DESC", (app,))

    def rollback_target(self, app: str) -> Release | None:
        """The release `rollback APP` goes back to: the newest whose commit is not the live one's
        (its image may have been pruned: the rollback then builds or pulls it again). Prune keeps
        this release's image whatever `keep` says; nothing else decides it."""
        live = self.live_release(app)
        return next((release for release in self.releases(app) if live is None or release.sha != live.sha), None)

    def mark_pruned(self, release_ids: list[int]) -> None:
        """Record that these releases' images were removed."""
        with self.transaction() as db:
            db.executemany("UPDATE releases SET state = 'pruned' WHERE id = ? AND state = 'retired'",
                           [(release_id,) for release_id in release_ids])

    def stopped(self, app: str) -> Release | None:
        """The live release of an app stopped on purpose (`stop APP`), or None if it is not stopped."""
        found = self._release(self._connection(), "WHERE state = 'live' AND id = (SELECT release FROM stopped_apps "
                                                  "WHERE app = ?)", (app,))
        return found[0] if found else None

    def stopped_by(self, app: str) -> int | None:
        """The job that stopped the app's live release (`stop APP`), or None if it is not stopped."""
        row = self._connection().execute(
            "SELECT stopped_apps.job FROM stopped_apps JOIN releases ON releases.id = stopped_apps.release "
            "WHERE stopped_apps.app = ? AND releases.state = 'live'", (app,)).fetchone()
        return row[0] if row else None

    def set_stopped(self, app: str, release_id: int, job_id: int) -> None:
        """Record that the app's live release `release_id` is stopped, until start_app or a new live release."""
        with self.transaction() as db:
            db.execute("INSERT OR REPLACE INTO stopped_apps (app, release, job, stopped_at) VALUES (?, ?, ?, ?)",
                       (app, release_id, job_id, utcnow()))

    def set_started(self, app: str) -> None:
        """Record that the app runs again."""
        with self.transaction() as db:
            db.execute("DELETE FROM stopped_apps WHERE app = ?", (app,))

    def release_command_ran(self, app: str, sha: str) -> int | None:
        """The job whose release command succeeded for the app's commit (or image) `sha`, or None."""
        row = self._connection().execute("SELECT job FROM release_commands WHERE app = ? AND sha = ?",
                                         (app, sha)).fetchone()
        return row["job"] if row else None

    def record_release_command(self, app: str, sha: str, job_id: int) -> None:
        """Record that the release command succeeded for `sha`, so later jobs of it do not run it again."""
        with self.transaction() as db:
            db.execute("INSERT OR IGNORE INTO release_commands (app, sha, job, finished_at) VALUES (?, ?, ?, ?)",
                       (app, sha, job_id, utcnow()))

    @staticmethod
    def _release(db, tail: str, params: tuple) -> list[Release]:
        rows = db.execute("SELECT id, app, sha, image, container, job, state, live_since, retired_at, digest "
                          f"FROM releases {tail}", params).fetchall()
        return [Release(**{**dict(row), "state": ReleaseState(row["state"])}) for row in rows]

    # -- an app gone from deploy.toml ---------------------------------------------------

    def known_apps(self) -> list[str]:
        """Every app the store has a job or a release of, by name."""
        rows = self._connection().execute("SELECT app FROM jobs UNION SELECT app FROM releases ORDER BY app").fetchall()
        return [row["app"] for row in rows]

    def close_app(self, app: str, reason: str) -> tuple[Job | None, list[Job]]:
        """In one commit: (the app's running job, []) when one runs, and then nothing changes; else
        (None, its queued jobs), each ended superseded with `reason`, so no worker claims one after."""
        with self.transaction() as db:
            running = db.execute("SELECT id FROM jobs WHERE app = ? AND state = 'running'", (app,)).fetchone()
            if running is not None:
                return self._job(db, running["id"]), []
            queued = db.execute("SELECT id FROM jobs WHERE app = ? AND state = 'queued' ORDER BY id", (app,)).fetchall()
            now = utcnow()
            for row in queued:
                db.execute("UPDATE jobs SET state = 'superseded', finished_at = ?, error = ? WHERE id = ?",
                           (now, reason, row["id"]))
                self._event(db, row["id"], "state", f"superseded: {reason}")
            return None, [self._job(db, row["id"]) for row in queued]

    def retire_app(self, app: str, images_gone: set[str]) -> None:
        """Record that nothing of the app runs any more: its live release is retired (and not stopped),
        and the releases whose image is in `images_gone` are pruned (a rollback to one builds or pulls it
        again)."""
        with self.transaction() as db:
            db.execute("UPDATE releases SET state = 'retired', retired_at = ? WHERE app = ? AND state = 'live'",
                       (utcnow(), app))
            db.executemany("UPDATE releases SET state = 'pruned' WHERE app = ? AND image = ? AND state = 'retired'",
                           [(app, image) for image in sorted(images_gone)])
            db.execute("DELETE FROM stopped_apps WHERE app = ?", (app,))  # an app added again starts afresh

    # -- workers -----------------------------------------------------------------------

    def worker_beat(self, worker: str, stopped: bool = False) -> None:
        """Record that a worker process is alive (or, with `stopped`, that it exited cleanly)."""
        now = utcnow()
        with self.transaction() as db:
            db.execute("INSERT INTO workers (id, pid, started_at, heartbeat_at) VALUES (?, ?, ?, ?) "
                       "ON CONFLICT (id) DO UPDATE SET heartbeat_at = excluded.heartbeat_at",
                       (worker, os.getpid(), now, now))
            if stopped:
                db.execute("UPDATE workers SET stopped_at = ? WHERE id = ?", (now, worker))

    def worker_alive(self, within: float) -> bool:
        """True if some worker that has not stopped beat its heart in the last `within` seconds."""
        now = parse_time(utcnow())
        rows = self._connection().execute("SELECT heartbeat_at FROM workers WHERE stopped_at IS NULL").fetchall()
        return any((now - parse_time(row[0])).total_seconds() <= within for row in rows)

    # -- API tokens and dashboard sessions ----------------------------------------------

    def add_token(self, token: ApiToken) -> None:
        """Record a new API token (its id, scope and lifetime; never the token)."""
        with self.transaction() as db:
            db.execute("INSERT INTO tokens (id, scope, created_at, expires_at) VALUES (?, ?, ?, ?)",
                       (token.id, token.scope, token.created_at, token.expires_at))

    def token(self, token_id: str) -> ApiToken | None:
        """The API token recorded with this id, or None."""
        row = self._connection().execute("SELECT id, scope, created_at, expires_at, revoked_at FROM tokens "
                                         "WHERE id = ?", (token_id,)).fetchone()
        return ApiToken(**dict(row)) if row else None

    def tokens(self) -> list[ApiToken]:
        """Every API token recorded, oldest first."""
        rows = self._connection().execute("SELECT id, scope, created_at, expires_at, revoked_at FROM tokens "
                                          "ORDER BY rowid").fetchall()
        return [ApiToken(**dict(row)) for row in rows]

    def revoke_token(self, token_id: str) -> ApiToken | None:
        """Revoke the token `token_id` now (kept as it was if revoked before); None if there is none."""
        with self.transaction() as db:
            db.execute("UPDATE tokens SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL", (utcnow(), token_id))
        return self.token(token_id)

    def end_session(self, session_id: str, expires_at: str) -> None:
        """Record that a dashboard session was signed out, until `expires_at` (when its cookie stops
        working anyway); sessions past their expiry are forgotten in the same commit."""
        with self.transaction() as db:
            db.execute("DELETE FROM ended_sessions WHERE expires_at < ?", (utcnow(),))
            db.execute("INSERT OR IGNORE INTO ended_sessions (id, expires_at) VALUES (?, ?)", (session_id, expires_at))

    def session_ended(self, session_id: str) -> bool:
        """True if the dashboard session `session_id` was signed out."""
        return self._connection().execute("SELECT 1 FROM ended_sessions WHERE id = ?",
                                          (session_id,)).fetchone() is not None

    # -- reports across tables ---------------------------------------------------------

    def query(self, sql: str, params: tuple = ()) -> list[sqlite3.Row]:
        """The rows of a read-only query, for reports across tables (metrics)."""
        return self._connection().execute(sql, params).fetchall()


def _job_from_row(row: sqlite3.Row) -> Job:
    data = dict(row)
    data["kind"], data["trigger"], data["state"] = (JobKind(data["kind"]), Trigger(data["trigger"]),
                                                    JobState(data["state"]))
    return Job(**data)
