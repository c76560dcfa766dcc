"""An idle worker wakes when another process queues a job (the store's data_version), not only at its poll."""

from __future__ import annotations

import threading
import time
from types import SimpleNamespace

from conftest import fake_sha
from hookdeploy.core.store import Store
from hookdeploy.engine import worker


def test_the_data_version_changes_when_another_connection_commits(tmp_path):
    watching, queuing = Store(tmp_path / "hookdeploy.db"), Store(tmp_path / "hookdeploy.db")
    before = watching.data_version()
    assert watching.data_version() == before  # looking changes nothing
    watching.worker_beat("w1")  # nor does its own commit
    assert watching.data_version() == before
    queuing.enqueue("site", fake_sha(1))
    assert watching.data_version() != before


def test_an_idle_worker_wakes_when_a_job_is_queued_not_at_its_next_poll(tmp_path, monkeypatch):
    monkeypatch.setattr(worker, "POLL_SECONDS", 60.0)
    watching, queuing = Store(tmp_path / "hookdeploy.db"), Store(tmp_path / "hookdeploy.db")
    stop = threading.Event()
    threading.Timer(0.2, lambda: queuing.enqueue("site", fake_sha(1))).start()
    started = time.monotonic()
    worker.Worker._idle(SimpleNamespace(store=watching), stop)
    assert time.monotonic() - started < 30  # not the 60 s poll


def test_an_idle_worker_still_stops_at_once(tmp_path, monkeypatch):
    monkeypatch.setattr(worker, "POLL_SECONDS", 60.0)
    stop = threading.Event()
    threading.Timer(0.2, stop.set).start()
    started = time.monotonic()
    worker.Worker._idle(SimpleNamespace(store=Store(tmp_path / "hookdeploy.db")), stop)
    assert time.monotonic() - started < 30
