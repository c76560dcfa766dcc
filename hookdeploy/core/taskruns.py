"""Task runs: every run of an app's scheduled task (or one asked for by hand), as rows of the store.

The database decides what runs: a schedule slot is recorded once per task (unique index
one_run_per_slot), and a task has at most one running run (one_running_run_per_task). A worker
claims a slot in one `BEGIN IMMEDIATE` transaction that also records the older slots it missed,
so whichever of several workers commits first runs it and the others find it taken. Runs are
never deleted. The container side (starting, timing out, killing) is engine/taskrunner.py's.
"""

from __future__ import annotations

import enum
import sqlite3
from dataclasses import asdict, dataclass

from hookdeploy.core.models import Release, parse_time, utcnow
from hookdeploy.core.store import Store

OUTPUT_LIMIT = 64 * 1024  # characters of a run's output kept: the last ones (where errors are)


class RunState(str, enum.Enum):
    """queued (asked for by hand) → running → succeeded | failed | timed_out; or at once skipped | missed."""

    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    TIMED_OUT = "timed_out"
    SKIPPED = "skipped"
    MISSED = "missed"

    @property
    def finished(self) -> bool:
        """True for the states a run never leaves."""
        return self not in (RunState.QUEUED, RunState.RUNNING)


@dataclass(frozen=True)
class TaskRun:
    """One run (or skipped or missed slot) of a task."""

    id: int
    app: str
    task: str
    slot: str  # the schedule's slot (UTC), or when it was asked for
    trigger: str  # schedule | manual
    state: RunState
    reason: str | None
    exit_code: int | None
    sha: str | None
    image: str | None
    container: str | None
    worker: str | None
    created_at: str
    started_at: str | None
    finished_at: str | None
    heartbeat_at: str | None
    duration: float | None
    output: str

    def to_json(self, output: bool = True) -> dict:
        """The run as the CLI and the API show it (`output` False: without its output)."""
        data = asdict(self)
        data["state"] = self.state.value
        for internal in ("worker", "heartbeat_at") + (() if output else ("output",)):
            data.pop(internal)
        return data


_COLUMNS = ("id, app, task, slot, trigger, state, reason, exit_code, sha, image, container, worker, created_at, "
            "started_at, finished_at, heartbeat_at, duration, output")


def capped(output: str) -> str:
    """`output` cut to its last OUTPUT_LIMIT characters, saying so at the top."""
    if len(output) <= OUTPUT_LIMIT:
        return output
    return f"[... {len(output) - OUTPUT_LIMIT} earlier characters not kept ...]\n" + output[-OUTPUT_LIMIT:]


class TaskRuns:
    """The task-run queries on one store (its file, connections and transactions)."""

    def __init__(self, store: Store):
        self.store = store

    # -- deciding what runs -------------------------------------------------------------

    def claim_slot(self, app: str, task: str, slot: str, missed: list[str], worker: str,
                   live: Release | None) -> TaskRun | None:
        """Record the schedule slot `slot` of a task, and the older `missed` ones, in one commit; None if
        another worker recorded it first. The run is running (this worker starts it), or skipped when
        nothing is live or the task's previous run still runs."""
        try:
            with self.store.transaction() as db:
                if db.execute("SELECT 1 FROM task_runs WHERE app = ? AND task = ? AND slot = ? AND trigger = 'schedule'",
                              (app, task, slot)).fetchone():
                    return None
                now = utcnow()
                reason = "no worker ran the schedule then; only the latest missed slot runs"
                for older in missed:
                    db.execute("INSERT OR IGNORE INTO task_runs (app, task, slot, trigger, state, reason, created_at, "
                               "finished_at) VALUES (?, ?, ?, 'schedule', 'missed', ?, ?, ?)",
                               (app, task, older, reason, now, now))
                cursor = db.execute("INSERT INTO task_runs (app, task, slot, trigger, state, created_at) "
                                    "VALUES (?, ?, ?, 'schedule', 'queued', ?)", (app, task, slot, now))
                return self._start(db, cursor.lastrowid, worker, live)
        except sqlite3.IntegrityError:
            return None  # a slot recorded by a worker whose transaction ended between our look and insert

    def queue(self, app: str, task: str) -> TaskRun:
        """Ask for a run of a task now (a worker starts it): recorded like a scheduled run."""
        with self.store.transaction() as db:
            now = utcnow()
            cursor = db.execute("INSERT INTO task_runs (app, task, slot, trigger, state, created_at) "
                                "VALUES (?, ?, ?, 'manual', 'queued', ?)", (app, task, now, now))
            return self._run(db, cursor.lastrowid)

    def claim_queued(self, worker: str, live_of, apps: list[str]) -> list[TaskRun]:
        """Start every run asked for by hand (of `apps`) that waits: running, or skipped; `live_of(app)`
        gives the app's live release."""
        started = []
        if not self.store.query("SELECT 1 FROM task_runs WHERE state = 'queued' LIMIT 1"):
            return started  # the usual case, each second: no write lock taken for nothing
        with self.store.transaction() as db:
            rows = db.execute("SELECT id, app FROM task_runs WHERE state = 'queued' ORDER BY id").fetchall()
            for row in rows:
                if row["app"] in apps:
                    started.append(self._start(db, row["id"], worker, live_of(row["app"])))
        return started

    def _start(self, db, run_id: int, worker: str, live: Release | None) -> TaskRun:
        run = self._run(db, run_id)
        now = utcnow()
        busy = db.execute("SELECT id FROM task_runs WHERE app = ? AND task = ? AND state = 'running'",
                          (run.app, run.task)).fetchone()
        if live is None or busy is not None:
            reason = "nothing is live to run it in" if live is None else f"run {busy['id']} of the task still runs"
            db.execute("UPDATE task_runs SET state = 'skipped', reason = ?, finished_at = ? WHERE id = ?",
                       (reason, now, run_id))
        else:
            db.execute("UPDATE task_runs SET state = 'running', sha = ?, image = ?, worker = ?, started_at = ?, "
                       "heartbeat_at = ? WHERE id = ?", (live.sha, live.image, worker, now, now, run_id))
        return self._run(db, run_id)

    # -- a run as it goes -----------------------------------------------------------------

    def set_container(self, run_id: int, container: str) -> None:
        """Record the container a run runs in."""
        with self.store.transaction() as db:
            db.execute("UPDATE task_runs SET container = ? WHERE id = ?", (container, run_id))

    def set_output(self, run_id: int, output: str) -> None:
        """Record a running run's output so far (capped)."""
        with self.store.transaction() as db:
            db.execute("UPDATE task_runs SET output = ? WHERE id = ? AND state = 'running'", (capped(output), run_id))

    def heartbeat(self, worker: str) -> None:
        """Mark the worker's running runs as still watched."""
        with self.store.transaction() as db:
            db.execute("UPDATE task_runs SET heartbeat_at = ? WHERE worker = ? AND state = 'running'", (utcnow(), worker))

    def finish(self, run_id: int, state: RunState, *, exit_code: int | None = None, output: str | None = None,
               reason: str | None = None) -> TaskRun | None:
        """End a running run; None if it was not running (another worker ended it as stale)."""
        with self.store.transaction() as db:
            run = self._run(db, run_id)
            if run is None or run.state is not RunState.RUNNING:
                return None
            now = utcnow()
            took = (parse_time(now) - parse_time(run.started_at)).total_seconds() if run.started_at else None
            db.execute("UPDATE task_runs SET state = ?, exit_code = ?, output = ?, reason = ?, finished_at = ?, "
                       "duration = ? WHERE id = ?",
                       (RunState(state).value, exit_code, capped(output if output is not None else run.output),
                        reason, now, took, run_id))
            return self._run(db, run_id)

    def stale(self, older_than: float, worker: str) -> list[TaskRun]:
        """Running runs of other workers whose heartbeat is older than `older_than` seconds."""
        now = parse_time(utcnow())
        return [run for run in self._runs("WHERE state = 'running' AND worker != ? ORDER BY id", (worker,))
                if (now - parse_time(run.heartbeat_at or run.started_at or run.created_at)).total_seconds() > older_than]

    def end_app(self, app: str, reason: str) -> list[TaskRun]:
        """End every unfinished run of an app being removed, with `reason`: a queued one skipped, a
        running one failed (its worker's own finish then changes nothing). Returns them as they ended."""
        with self.store.transaction() as db:
            rows = db.execute("SELECT id, state, started_at FROM task_runs WHERE app = ? AND state IN "
                              "('queued', 'running') ORDER BY id", (app,)).fetchall()
            now = utcnow()
            for row in rows:
                took = (parse_time(now) - parse_time(row["started_at"])).total_seconds() if row["started_at"] else None
                db.execute("UPDATE task_runs SET state = ?, reason = ?, finished_at = ?, duration = ? WHERE id = ?",
                           ("skipped" if row["state"] == "queued" else "failed", reason, now, took, row["id"]))
            return [self._run(db, row["id"]) for row in rows]

    # -- reading ----------------------------------------------------------------------------

    def run(self, run_id: int) -> TaskRun | None:
        """One run, or None."""
        found = self._runs("WHERE id = ?", (run_id,))
        return found[0] if found else None

    def runs(self, app: str, task: str, limit: int = 20) -> list[TaskRun]:
        """A task's runs, newest first."""
        return self._runs("WHERE app = ? AND task = ? ORDER BY id DESC LIMIT ?", (app, task, limit))

    def last_slot(self, app: str, task: str) -> str | None:
        """The newest schedule slot recorded for a task, or None."""
        row = self.store.query("SELECT max(slot) FROM task_runs WHERE app = ? AND task = ? AND trigger = 'schedule'",
                               (app, task))
        return row[0][0] if row else None

    def last_run(self, app: str, task: str) -> TaskRun | None:
        """The task's newest run that ran or was asked for (neither skipped nor missed), else its newest record."""
        found = self._runs("WHERE app = ? AND task = ? AND state NOT IN ('skipped', 'missed') ORDER BY id DESC LIMIT 1",
                           (app, task)) or self._runs("WHERE app = ? AND task = ? ORDER BY id DESC LIMIT 1", (app, task))
        return found[0] if found else None

    def _run(self, db, run_id: int) -> TaskRun | None:
        row = db.execute(f"SELECT {_COLUMNS} FROM task_runs WHERE id = ?", (run_id,)).fetchone()
        return _from_row(row) if row else None

    def _runs(self, tail: str, params: tuple) -> list[TaskRun]:
        return [_from_row(row) for row in self.store.query(f"SELECT {_COLUMNS} FROM task_runs {tail}", params)]


def _from_row(row: sqlite3.Row) -> TaskRun:
    data = dict(row)
    data["state"] = RunState(data["state"])
    return TaskRun(**data)
