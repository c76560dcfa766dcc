"""`remove` without an engine: what it refuses before asking Docker (through the real CLI), what it
records in a real store (queued jobs superseded, task runs ended, the live release retired, the
history kept and shown), and which route names and certificates it takes."""

from __future__ import annotations

import pytest

from hookdeploy.core.config import load
from hookdeploy.core.models import JobState, ReleaseState
from hookdeploy.core.taskruns import RunState, TaskRuns
from hookdeploy.engine import removal

from conftest import fake_sha

SHA_A, SHA_B = fake_sha(0xA), fake_sha(0xB)


@pytest.mark.slow  # three CLI processes, one waiting for an engine that does not answer
def test_remove_refuses_an_app_still_in_deploy_toml_and_a_bad_name_before_anything(run_cli, site_config, store):
    job = store.enqueue("site", SHA_A)
    refused = run_cli("remove", "site", config=site_config, env={"DOCKER_HOST": "tcp://127.0.0.1:9"})
    assert refused.returncode == 2 and refused.stdout == ""
    assert refused.stderr == ("hookdeploy: error: site is still in deploy.toml: remove its table [apps.site] first "
                              "(and reload the running service), then run hookdeploy remove site again\n")
    assert store.job(job.id).state is JobState.QUEUED
    bad = run_cli("remove", "Site/..", config=site_config)
    assert bad.returncode == 2 and bad.stderr == "hookdeploy: error: app name 'Site/..': must match [a-z0-9][a-z0-9-]{0,62}\n"
    unusable = run_cli("remove", "gone", config=site_config, env={"DOCKER_HOST": "tcp://127.0.0.1:9"})
    assert unusable.returncode == 2 and unusable.stderr.startswith("hookdeploy: error: the Docker engine does not answer")
    assert store.jobs("gone") == []


def test_closing_an_app_supersedes_its_queued_jobs_unless_one_runs(store):
    first, second = store.enqueue("gone", SHA_A, coalesce=False), store.enqueue("gone", SHA_B, coalesce=False)
    other = store.enqueue("site", SHA_A)
    claimed = store.claim("worker-1")
    assert claimed.id == first.id
    running, ended = store.close_app("gone", "gone was removed (hookdeploy remove)")
    assert running.id == first.id and ended == []
    assert store.job(second.id).state is JobState.QUEUED  # nothing changed
    store.finish(first.id, JobState.FAILED, "boom")
    running, ended = store.close_app("gone", "gone was removed (hookdeploy remove)")
    assert running is None and [job.id for job in ended] == [second.id]
    assert ended[0].state is JobState.SUPERSEDED and ended[0].error == "gone was removed (hookdeploy remove)"
    assert [event.message for event in store.events(second.id)][-1] == "superseded: gone was removed (hookdeploy remove)"
    assert store.claim("worker-1").id == other.id  # gone's job is no longer there to claim
    assert store.known_apps() == ["gone", "site"]
    assert store.close_app("gone", "again") == (None, [])


def test_retiring_an_app_leaves_nothing_live_and_prunes_the_releases_whose_images_went(store):
    for sha, image in ((SHA_A, "t/gone:a"), (SHA_B, "t/gone:b")):
        job = store.enqueue("gone", sha)
        store.claim("worker-1")
        store.record_live("gone", sha, image, f"t-gone-{job.id}", job.id)
        store.finish(job.id, JobState.SUCCEEDED)
    store.retire_app("gone", {"t/gone:b"})
    assert store.live_release("gone") is None
    assert {release.sha: release.state for release in store.releases("gone")} == {
        SHA_B: ReleaseState.PRUNED, SHA_A: ReleaseState.RETIRED}
    assert all(release.retired_at for release in store.releases("gone"))


def test_ending_an_apps_task_runs_skips_the_queued_and_fails_the_running(store):
    runs = TaskRuns(store)
    waiting = runs.queue("gone", "cleanup")
    job = store.enqueue("gone", SHA_A)
    store.claim("worker-1")
    live = store.record_live("gone", SHA_A, "t/gone:a", "t-gone-a-1", job.id)
    running = runs.claim_slot("gone", "nightly", "2027-01-01T04:00:00.000Z", [], "worker-1", live)
    kept = runs.queue("site", "cleanup")
    ended = runs.end_app("gone", "gone was removed (hookdeploy remove)")
    assert [(run.id, run.state) for run in ended] == [(waiting.id, RunState.SKIPPED), (running.id, RunState.FAILED)]
    assert all(run.reason == "gone was removed (hookdeploy remove)" and run.finished_at for run in ended)
    assert ended[1].duration is not None
    assert runs.finish(running.id, RunState.SUCCEEDED) is None  # the worker's own end changes nothing
    assert runs.run(kept.id).state is RunState.QUEUED


def test_history_shows_an_app_removed_from_deploy_toml_and_refuses_a_name_nothing_knows(run_cli, site_config, store):
    job = store.enqueue("gone", SHA_A)
    shown = run_cli("history", "gone", "--json", config=site_config)
    assert shown.returncode == 0, shown.stderr
    assert '"id": %d' % job.id in shown.stdout
    unknown = run_cli("history", "never", config=site_config)
    assert unknown.returncode == 2 and "unknown app 'never'" in unknown.stderr


ROUTE = """# written by hookdeploy: gone @ abc
server {
    listen 80;
    server_name gone.test www.gone.test;
}
server {
    listen 443 ssl http2;
    server_name gone.test;
}
"""


def test_the_names_a_route_served_and_only_unclaimed_certificates_go(write_config, state_dir):
    assert removal.served_names(ROUTE) == ["gone.test", "www.gone.test"]
    assert removal.served_names("server {\n    listen 80 default_server;\n    server_name _;\n}\n") == []
    config = load(write_config({"site": {"repo": "/srv/site.git", "hostnames": ["www.gone.test"]}}))
    certs = state_dir / "proxy" / "conf.d" / "certs"
    certs.mkdir(parents=True)
    for name in ("host-gone.test.pem", "host-www.gone.test.pem", "app-gone.pem", "app-site.pem"):
        (certs / name).write_text("pem\n")
    status = state_dir / "tls" / "status"
    status.mkdir(parents=True)
    (status / "gone.test.json").write_text("{}")
    removed = removal.remove_certificates(config, "gone", ["gone.test", "www.gone.test", "../app-site"])
    assert removed == ["app-gone.pem", "host-gone.test.pem"]  # www.gone.test is site's now
    assert sorted(path.name for path in certs.iterdir()) == ["app-site.pem", "host-www.gone.test.pem"]
    assert not (status / "gone.test.json").exists()


def test_a_stopped_app_removed_and_added_again_is_not_stopped(store):
    """Removing a stopped app forgets that it was stopped: added again, its first release serves."""
    job = store.enqueue("gone", SHA_A)
    store.claim("worker-1")
    live = store.record_live("gone", SHA_A, "t/gone:a", "t-gone-1", job.id)
    store.finish(job.id, JobState.SUCCEEDED)
    store.set_stopped("gone", live.id, job.id)
    assert store.stopped("gone") is not None
    store.retire_app("gone", {"t/gone:a"})
    with store.transaction() as db:
        assert db.execute("SELECT count(*) FROM stopped_apps WHERE app = 'gone'").fetchone()[0] == 0
    again = store.enqueue("gone", SHA_B)
    store.claim("worker-1")
    store.record_live("gone", SHA_B, "t/gone:b", "t-gone-2", again.id)
    assert store.stopped("gone") is None
