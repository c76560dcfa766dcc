"""Crash recovery: `hookdeploy worker --drain` SIGKILLed right after each step of a deploy
(HOOKDEPLOY_FAULT=<step>) leaves the site serving; the next worker marks the job interrupted,
removes its leftovers, repairs the proxy and queues one retry unless the release went live.

The cases share one instance and run in order: each deploys a new commit over whatever the
previous case left live, under a modest load that must see no failed request throughout.
"""

from __future__ import annotations

import pytest

from docker_helpers import Load, died_of_sigkill, live_instance, site_files
from hookdeploy.core.models import JobState, Trigger

pytestmark = pytest.mark.docker

# After these steps the proxy already routes to the new release when the worker dies.
SWITCHED = ("switch", "drain")


@pytest.fixture(scope="module")
def crash_site(docker_engine, tmp_path_factory):
    """An instance with a release live, shared by the crash cases."""
    with live_instance(tmp_path_factory.mktemp("crash-site"), docker_engine, {}, "before any crash") as made:
        yield made


@pytest.mark.parametrize("step", ["checkout", "build", "candidate", "health", "switch", "drain"])
def test_worker_killed_after_a_step_recovers_and_the_site_keeps_serving(crash_site, step):
    site = crash_site
    old = site.store.live_release("site")
    sha = site.commit("site", site_files(f"killed after {step}"), message=step)
    job = site.enqueue("site", sha)

    with Load(site.port, threads=2, pause=0.02) as load:
        killed = site.worker_process(fault=step)
        assert died_of_sigkill(killed), f"exit status {killed.returncode}\n{killed.stderr}"

        # The moment after the crash: the job is still `running` (its worker is dead), and the
        # site answers: the old release, or the new one if the proxy had been switched to it.
        assert site.store.job(job.id).state is JobState.RUNNING
        serving = sha if step in SWITCHED else old.sha
        answer = site.get()
        assert (answer.status, answer.release) == (200, serving[:12])
        if step not in ("checkout", "build"):
            assert site.containers(job=str(job.id)), "the candidate was running when the worker died"

        recovered = site.worker_process()
        assert recovered.returncode == 0, recovered.stderr

    interrupted = site.store.job(job.id)
    assert interrupted.state is JobState.INTERRUPTED
    assert "worker died" in interrupted.error
    retries = [other for other in site.store.jobs("site") if other.retry_of == job.id]
    if step == "drain":
        # It went live before the worker died: nothing to retry.
        assert retries == []
        assert any("had gone live before the worker died" in line for line in site.events(job.id))
        assert site.store.live_release("site").job == job.id
    else:
        [retry] = retries
        assert (retry.trigger, retry.sha, retry.state) == (Trigger.RETRY, sha, JobState.SUCCEEDED), retry.error
        assert f"queued retry as job {retry.id}" in site.events(job.id)
        assert site.store.live_release("site").job == retry.id

    answer = site.get()
    assert (answer.status, answer.release, answer.body) == (200, sha[:12], f"<p>killed after {step}</p>\n")
    assert site.container_names() == site.expected_containers(), "only the live release and the proxy run"
    assert not site.containers(job=str(job.id)) or step == "drain"
    assert site.store.jobs("site", states=(JobState.RUNNING, JobState.QUEUED)) == []
    builds = site.state_dir / "builds"
    assert not builds.exists() or [path.name for path in builds.iterdir()] in ([], ["site"]), \
        "no build folder is left behind but the app's own, kept for its next build"
    assert old.image in site.images(), "the previous release is kept for rollback"
    assert load.errors == [], f"{len(load.errors)} of {load.requests} requests failed: {load.errors[:5]}"
    assert load.requests > 0


def test_a_worker_starting_while_another_switches_leaves_the_new_release_routed(docker_engine, tmp_path, monkeypatch):
    """Repair decides under the proxy lock on what it reads under it: a worker that starts (and
    repairs every app) while another worker's job holds the lock to switch must not route back to
    the release that was live before the switch, nor remove the new one's containers."""
    import threading
    import time

    from hookdeploy.core.store import Store
    from hookdeploy.engine import pipeline
    from hookdeploy.engine.worker import Worker

    with live_instance(tmp_path, docker_engine, {}, "before the race") as site:
        sha = site.commit("site", site_files("switched while a worker starts"))
        job = site.enqueue("site", sha)
        verify, starting = pipeline.verify_through_proxy, []

        def verify_while_a_worker_starts(config, app, checked_sha):
            # Routed to the candidate, not yet recorded live, the proxy lock held: a second worker
            # starts now and repairs the app; it gets the lock once this job has recorded its release.
            other = Worker(site.config, Store(site.state_dir / "hookdeploy.db"))
            repairing = threading.Thread(target=other.heal, kwargs={"repair_all": True})
            repairing.start()
            starting.append(repairing)
            time.sleep(1.0)  # long enough for it to read whatever it reads before the lock
            return verify(config, app, checked_sha)

        monkeypatch.setattr(pipeline, "verify_through_proxy", verify_while_a_worker_starts)
        site.work()
        [repairing] = starting
        repairing.join(timeout=60)

        assert site.store.job(job.id).state is JobState.SUCCEEDED, site.store.job(job.id).error
        assert site.store.live_release("site").sha == sha
        answer = site.get()
        assert (answer.status, answer.release) == (200, sha[:12]), "the new release stays routed"
        assert site.container_names() == site.expected_containers(), "the new release's container kept"
