"""The job store's SQLite file: its schema and the migrations that bring an older file up to it,
how a connection to it is opened, and the one-line errors that name it.

A connection runs in WAL mode with synchronous=FULL, so a committed job survives a crash or power
loss, and waits BUSY_TIMEOUT_MS for a lock instead of failing. Every failure other than a
constraint violation becomes a StoreError naming the file and what to do about it (never a
traceback). Migrations are append-only: never edit one that has shipped, add another. The
queries are store.py's; this module knows nothing of jobs beyond their tables.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from hookdeploy.core.errors import StoreError

BUSY_TIMEOUT_MS = 30_000


# -- connections and errors ------------------------------------------------------------------------

# What a person can do about the errors SQLite reports in a few words.
_ADVICE = {
    "file is not a database": "restore it from a backup, or move it away to start an empty store",
    "database disk image is malformed": "restore it from a backup, or move it away to start an empty store",
    "database is locked": f"another process held it for over {BUSY_TIMEOUT_MS // 1000} s "
                          "(a sqlite3 shell or a backup left open?)",
    "unable to open database file": "check that state_dir exists and the hookdeploy user can write it",
    "attempt to write a readonly database": "give the hookdeploy user write access to it and its folder",
    "disk i/o error": "check the disk (full or failing?)",
    "database or disk is full": "free space on the disk that holds state_dir",
}


def store_error(path: Path, error: BaseException) -> StoreError:
    """One line naming the store, what SQLite (or the OS) said, and what to do about it."""
    text = str(error).strip() or type(error).__name__
    advice = _ADVICE.get(text.lower())
    return StoreError(f"job store {path}: {text}" + (f" ({advice})" if advice else ""))


class _Connection(sqlite3.Connection):
    """A connection whose failures are StoreErrors that name the file (so never a traceback);
    constraint violations stay IntegrityErrors."""

    store_path: Path

    def execute(self, *arguments):
        return self._named(super().execute, arguments)

    def executemany(self, *arguments):
        return self._named(super().executemany, arguments)

    def _named(self, call, arguments: tuple):
        try:
            return call(*arguments)
        except sqlite3.IntegrityError:
            raise  # the database enforcing a rule: callers (and tests) look for exactly this
        except sqlite3.Error as error:
            raise store_error(self.store_path, error) from None


def connect(path: Path) -> sqlite3.Connection:
    """A new connection to the store at `path`, in WAL mode with synchronous=FULL and foreign keys on."""
    try:
        connection = sqlite3.connect(path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None,
                                     check_same_thread=False, factory=_Connection)
    except sqlite3.Error as error:
        raise store_error(path, error) from None
    connection.store_path = path
    connection.row_factory = sqlite3.Row
    connection.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
    connection.execute("PRAGMA journal_mode = WAL")
    connection.execute("PRAGMA synchronous = FULL")
    connection.execute("PRAGMA foreign_keys = ON")
    return connection


# -- the schema ------------------------------------------------------------------------------------

# Each entry moves the schema one version up; never edit one that has shipped, add another.
MIGRATIONS = [
    # 1: jobs, their events, releases
    """
    CREATE TABLE jobs (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        app TEXT NOT NULL,
        kind TEXT NOT NULL CHECK (kind IN ('deploy', 'rollback')),
        trigger TEXT NOT NULL CHECK (trigger IN ('push', 'webhook', 'manual', 'replay', 'rollback', 'retry')),
        ref TEXT,
        sha TEXT NOT NULL CHECK (length(sha) = 40 AND sha NOT GLOB '*[^0-9a-f]*'),
        state TEXT NOT NULL CHECK (state IN ('queued', 'running', 'succeeded', 'failed',
                                             'rolled_back', 'superseded', 'interrupted')),
        created_at TEXT NOT NULL,
        started_at TEXT,
        finished_at TEXT,
        error TEXT,
        image TEXT,
        heartbeat_at TEXT,
        worker TEXT
    );
    CREATE UNIQUE INDEX one_running_job_per_app ON jobs (app) WHERE state = 'running';
    CREATE INDEX jobs_by_app ON jobs (app, id);
    CREATE INDEX jobs_by_state ON jobs (state, app, id);
    CREATE TABLE events (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        job INTEGER NOT NULL REFERENCES jobs (id),
        at TEXT NOT NULL,
        kind TEXT NOT NULL CHECK (kind IN ('state', 'step', 'log', 'error')),
        message TEXT NOT NULL,
        duration REAL
    );
    CREATE INDEX events_by_job ON events (job, id);
    CREATE TABLE releases (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        app TEXT NOT NULL,
        sha TEXT NOT NULL,
        image TEXT NOT NULL,
        container TEXT,
        job INTEGER NOT NULL REFERENCES jobs (id),
        state TEXT NOT NULL CHECK (state IN ('live', 'retired', 'pruned')),
        live_since TEXT NOT NULL,
        retired_at TEXT
    );
    CREATE UNIQUE INDEX one_live_release_per_app ON releases (app) WHERE state = 'live';
    CREATE INDEX releases_by_app ON releases (app, id);
    """,
    # 2: webhook deliveries (each delivery id once per app) and retry links
    """
    CREATE TABLE deliveries (
        app TEXT NOT NULL,
        delivery_id TEXT NOT NULL,
        provider TEXT NOT NULL,
        job INTEGER REFERENCES jobs (id),
        received_at TEXT NOT NULL,
        PRIMARY KEY (app, delivery_id)
    );
    ALTER TABLE jobs ADD COLUMN retry_of INTEGER REFERENCES jobs (id);
    CREATE TABLE workers (
        id TEXT PRIMARY KEY,
        pid INTEGER NOT NULL,
        started_at TEXT NOT NULL,
        heartbeat_at TEXT NOT NULL,
        stopped_at TEXT
    );
    """,
    # 3: image digests (releases pushed to a registry, images built elsewhere)
    """
    ALTER TABLE jobs ADD COLUMN digest TEXT CHECK (digest IS NULL OR digest GLOB 'sha256:*');
    ALTER TABLE releases ADD COLUMN digest TEXT;
    """,
    # 4: API tokens by id (never the token itself) and dashboard sessions ended by signing out
    """
    CREATE TABLE tokens (
        id TEXT PRIMARY KEY,
        scope TEXT NOT NULL CHECK (scope IN ('read', 'deploy')),
        created_at TEXT NOT NULL,
        expires_at TEXT NOT NULL,
        revoked_at TEXT
    );
    CREATE TABLE ended_sessions (
        id TEXT PRIMARY KEY,
        expires_at TEXT NOT NULL
    );
    CREATE INDEX ended_sessions_by_expiry ON ended_sessions (expires_at);
    """,
    # 5: release commands that succeeded, one per app and commit (not run again for a rollback or retry)
    """
    CREATE TABLE release_commands (
        app TEXT NOT NULL,
        sha TEXT NOT NULL,
        job INTEGER NOT NULL REFERENCES jobs (id),
        finished_at TEXT NOT NULL,
        PRIMARY KEY (app, sha)
    );
    """,
    # 6: scheduled and asked-for task runs: each schedule slot once, one running run per task
    """
    CREATE TABLE task_runs (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        app TEXT NOT NULL,
        task TEXT NOT NULL,
        slot TEXT NOT NULL,
        trigger TEXT NOT NULL CHECK (trigger IN ('schedule', 'manual')),
        state TEXT NOT NULL CHECK (state IN ('queued', 'running', 'succeeded', 'failed', 'timed_out',
                                             'skipped', 'missed')),
        reason TEXT,
        exit_code INTEGER,
        sha TEXT,
        image TEXT,
        container TEXT,
        worker TEXT,
        created_at TEXT NOT NULL,
        started_at TEXT,
        finished_at TEXT,
        heartbeat_at TEXT,
        duration REAL,
        output TEXT NOT NULL DEFAULT ''
    );
    CREATE UNIQUE INDEX one_run_per_slot ON task_runs (app, task, slot) WHERE trigger = 'schedule';
    CREATE UNIQUE INDEX one_running_run_per_task ON task_runs (app, task) WHERE state = 'running';
    CREATE INDEX task_runs_by_task ON task_runs (app, task, id);
    CREATE INDEX task_runs_by_state ON task_runs (state, id);
    """,
    # 7: a step event names its step (build, switch, ...), so metrics, charts and the push output need
    # not read it from the message; earlier step events get theirs from the messages they carry
    """
    ALTER TABLE events ADD COLUMN step TEXT;
    UPDATE events SET step = CASE
        WHEN message GLOB 'checked:*' OR message GLOB 'checked order*' THEN 'order'
        WHEN message GLOB 'checked out*' THEN 'checkout'
        WHEN message GLOB 'built*' OR message GLOB 'building *' THEN 'build'
        WHEN message GLOB 'proxy ready*' THEN 'proxy'
        WHEN message GLOB 'started candidate*' THEN 'candidate'
        WHEN message GLOB 'health check*' THEN 'health'
        WHEN message GLOB 'switched proxy*' THEN 'switch'
        WHEN message GLOB 'verified through*' OR message GLOB 'verification through*' THEN 'verify'
        WHEN message GLOB 'drained and retired*' OR message GLOB 'retired*' THEN 'drain'
        WHEN message GLOB 'pruned*' OR message GLOB 'no images to prune*' THEN 'prune'
        WHEN message GLOB 'pulled*' THEN 'pull'
        WHEN message GLOB 'pushed*' THEN 'push'
        WHEN message GLOB 'certificate*' THEN 'certificates'
        WHEN message GLOB 'canary*' THEN 'canary'
        WHEN message GLOB 'guard*' THEN 'watch'
        WHEN message GLOB 'release command*' THEN 'release'
        WHEN message GLOB 'live: *' THEN 'live'
        ELSE 'other' END
    WHERE kind = 'step';
    """,
    # 8: jobs that stop and start an app (SQLite cannot alter a CHECK: the table is made anew, its rows,
    # ids and indexes kept; Store.migrate runs migrations with foreign keys off, as SQLite's docs say),
    # and the apps stopped on purpose (their live release stays live, its containers stopped, the proxy
    # answering the maintenance page) until a start or a deploy
    """
    CREATE TABLE jobs_new (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        app TEXT NOT NULL,
        kind TEXT NOT NULL CHECK (kind IN ('deploy', 'rollback', 'stop', 'start')),
        trigger TEXT NOT NULL CHECK (trigger IN ('push', 'webhook', 'manual', 'replay', 'rollback', 'retry')),
        ref TEXT,
        sha TEXT NOT NULL CHECK (length(sha) = 40 AND sha NOT GLOB '*[^0-9a-f]*'),
        state TEXT NOT NULL CHECK (state IN ('queued', 'running', 'succeeded', 'failed',
                                             'rolled_back', 'superseded', 'interrupted')),
        created_at TEXT NOT NULL,
        started_at TEXT,
        finished_at TEXT,
        error TEXT,
        image TEXT,
        heartbeat_at TEXT,
        worker TEXT,
        retry_of INTEGER REFERENCES jobs (id),
        digest TEXT CHECK (digest IS NULL OR digest GLOB 'sha256:*')
    );
    INSERT INTO jobs_new (id, app, kind, trigger, ref, sha, state, created_at, started_at, finished_at, error,
                          image, heartbeat_at, worker, retry_of, digest)
        SELECT id, app, kind, trigger, ref, sha, state, created_at, started_at, finished_at, error,
               image, heartbeat_at, worker, retry_of, digest FROM jobs;
    DROP TABLE jobs;
    ALTER TABLE jobs_new RENAME TO jobs;
    CREATE UNIQUE INDEX one_running_job_per_app ON jobs (app) WHERE state = 'running';
    CREATE INDEX jobs_by_app ON jobs (app, id);
    CREATE INDEX jobs_by_state ON jobs (state, app, id);
    CREATE TABLE stopped_apps (
        app TEXT PRIMARY KEY,
        release INTEGER NOT NULL REFERENCES releases (id),
        job INTEGER NOT NULL REFERENCES jobs (id),
        stopped_at TEXT NOT NULL
    );
    """,
    # 9: who signed a job's commit (an app with [apps.X.signatures]): the key's fingerprint and the principal
    # (SSH) or user id (GPG), as git reported them when the job checked the signature
    """
    ALTER TABLE jobs ADD COLUMN signer_fingerprint TEXT;
    ALTER TABLE jobs ADD COLUMN signer_principal TEXT;
    """,
    # 10: previews of branches: each branch's DNS label, claimed once per app (its jobs and releases go by
    # APP.LABEL), when it was made and last pushed (ttl_hours), and whether its branch was deleted
    """
    CREATE TABLE previews (
        app TEXT NOT NULL,
        label TEXT NOT NULL,
        branch TEXT NOT NULL,
        created_at TEXT NOT NULL,
        pushed_at TEXT NOT NULL,
        remove_requested_at TEXT,
        PRIMARY KEY (app, label),
        UNIQUE (app, branch)
    );
    """,
]
SCHEMA_VERSION = len(MIGRATIONS)


def migrate(db: sqlite3.Connection, path: Path) -> int:
    """Bring the schema of `path`, open as `db` in a write transaction, up to SCHEMA_VERSION, keeping
    all data; return the version found. StoreError if the file is newer than this hookdeploy."""
    found = db.execute("PRAGMA user_version").fetchone()[0]
    if found > SCHEMA_VERSION:
        raise StoreError(f"job store {path} has schema {found}, newer than this hookdeploy ({SCHEMA_VERSION})")
    for version in range(found, SCHEMA_VERSION):
        for statement in _statements(MIGRATIONS[version]):
            db.execute(statement)
    if found < SCHEMA_VERSION and (broken := db.execute("PRAGMA foreign_key_check").fetchall()):
        raise StoreError(f"job store {path}: {len(broken)} rows refer to rows gone after the migration "
                         f"(first: {tuple(broken[0])}); the file is left as it was")
    db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
    return found


def _statements(script: str) -> list[str]:
    return [statement.strip() for statement in script.split(";") if statement.strip()]
