"""Step events carry their step's name in the store (events.step, schema 5): /metrics, the dashboard's
step chart and the push output go by it, not by the wording of the message (issue 23, item 6)."""

from __future__ import annotations

import sqlite3

from hookdeploy.cli.follow import _push_line
from hookdeploy.core.models import Event
from hookdeploy.core.schema import MIGRATIONS
from hookdeploy.core.store import Store
from hookdeploy.engine.deploy import STEPS
from hookdeploy.web.charts import step_spans

SHA = "a" * 40
# What deploys logged before schema 5, with the step each is for.
OLD_STEPS = [("checked out aaaaaaaaaaaa", "checkout"), ("built image 3/site:aaaaaaaaaaaa in 4.0 s", "build"),
             ("proxy ready", "proxy"), ("started candidate t-site-3 at 172.18.0.4:80", "candidate"),
             ("health check passed in 0.3 s", "health"), ("switched proxy", "switch"),
             ("verified through the proxy in 0.1 s", "verify"), ("drained and retired old container", "drain"),
             ("no images to prune", "prune"), ("release command exited 0 in 1.2 s", "release"),
             ("live: site serves aaaaaaaaaaaa", "live"), ("something new", "other")]


def test_migration_names_the_steps_of_earlier_events(tmp_path):
    path = tmp_path / "hookdeploy.db"
    connection = sqlite3.connect(path)
    before = next(version for version, script in enumerate(MIGRATIONS) if "ADD COLUMN step" in script)
    for script in MIGRATIONS[:before]:
        connection.executescript(script)
    connection.execute("INSERT INTO jobs (app, kind, trigger, ref, sha, state, created_at) "
                       "VALUES ('site', 'deploy', 'push', 'deploy', ?, 'succeeded', '2026-01-01T00:00:00.000Z')", (SHA,))
    connection.executemany("INSERT INTO events (job, at, kind, message, duration) VALUES "
                           "(1, '2026-01-01T00:00:01.000Z', 'step', ?, 1.0)", [(message,) for message, _ in OLD_STEPS])
    connection.execute("INSERT INTO events (job, at, kind, message) VALUES (1, '2026-01-01T00:00:02.000Z', 'log', "
                       "'built image? no: a build output line')")
    connection.execute(f"PRAGMA user_version = {before}")
    connection.commit()
    connection.close()

    events = Store(path).events(1)
    assert [(event.message, event.step) for event in events] == OLD_STEPS + [("built image? no: a build output line", None)]


def test_a_step_is_stored_with_its_name_whatever_its_message_says(tmp_path):
    store = Store(tmp_path / "hookdeploy.db")
    job = store.enqueue("site", SHA)
    store.log(job.id, "the image came from the cache in 0.2 s", kind="step", duration=0.2, step="build")
    [event] = [event for event in store.events(job.id) if event.kind == "step"]
    assert (event.step, event.duration) == ("build", 0.2)
    [span] = step_spans([event])
    assert span.label == "build"


def test_every_step_has_a_short_name_fit_for_a_metric_label():
    assert all(name.replace("_", "").isalpha() and name.islower() for name in STEPS.values())
    assert len(set(STEPS.values())) == len(STEPS), "two steps share a label"


def test_the_push_output_goes_by_the_step_not_the_wording():
    def event(message, step, duration=None):
        return Event(1, 1, "2026-01-01T00:00:00.000Z", "step", message, duration, step)

    url = "http://site.example"
    assert _push_line(event("live: site serves aaaaaaaaaaaa (was bbbbbbbbbbbb)", "live"), url) == \
        "Switched: http://site.example serves aaaaaaaaaaaa (was bbbbbbbbbbbb)"
    assert _push_line(event("started candidate t-site-3 at 172.18.0.4:80", "candidate", 0.5), url) == \
        "Starting candidate: t-site-3 at 172.18.0.4:80 (0.5 s)"
    # A log line that happens to read like a step is output, nothing more.
    assert _push_line(Event(1, 1, "2026-01-01T00:00:00.000Z", "log", "live: not a step"), url) == "       live: not a step"
    assert _push_line(event("building 3/site:aaaaaaaaaaaa with BuildKit", "build"), url) == \
        "Building 3/site:aaaaaaaaaaaa with BuildKit"
