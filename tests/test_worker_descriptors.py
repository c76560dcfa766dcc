"""The worker does not leak store connections: 50 jobs, each with its heartbeat thread beating
(and so opening its own SQLite connection), leave the process's open descriptors where they were.
Garbage collection is off while they run, so a connection only the collector would close counts."""

from __future__ import annotations

import gc
import os
import threading
from pathlib import Path

from hookdeploy.core.config import load
from hookdeploy.core.models import JobState
from hookdeploy.core.store import Store
from hookdeploy.engine import worker as worker_module


def open_descriptors() -> int:
    return len(os.listdir("/proc/self/fd"))


class BeatenDeploy:
    """Stands in for the deploy itself (this test is about the worker around it): it returns once
    the job's heartbeat thread has written twice."""

    def __init__(self, config, store, engine, job, stop):
        self.store, self.job = store, job

    def run(self):
        beats = 0
        last = self.store.job(self.job.id).heartbeat_at
        while beats < 2:
            threading.Event().wait(0.005)
            now = self.store.job(self.job.id).heartbeat_at
            if now != last:
                beats, last = beats + 1, now
        return JobState.SUCCEEDED, None


def test_fifty_jobs_leave_the_open_descriptors_flat(site_config, monkeypatch):
    config = load(site_config)
    store = Store(Path(config.server.state_dir) / "hookdeploy.db")
    monkeypatch.setattr(worker_module, "Deploy", BeatenDeploy)
    monkeypatch.setattr(worker_module, "HEARTBEAT_SECONDS", 0.01)
    worker = worker_module.Worker(config, store)
    stop = threading.Event()

    def one_job():
        job = store.enqueue("site", "a" * 40)
        claimed = store.claim(worker.id)
        assert claimed.id == job.id
        assert worker.run_job(claimed, stop).state is JobState.SUCCEEDED

    one_job()  # the first opens what every later one shares
    gc.disable()
    try:
        before = open_descriptors()
        for _ in range(50):
            one_job()
        after = open_descriptors()
    finally:
        gc.enable()
    assert abs(after - before) <= 2, f"open descriptors went {before} -> {after} over 50 jobs"
