"""`hookdeploy remove APP [--volumes]` on a real engine and a real proxy, through the real CLI.

One instance for the module with two apps: `site` (a named volume, a task running in its container,
two releases, a queued job, a certificate) and `other`. `site` leaves deploy.toml; doctor names it;
remove is refused while a job of it runs; then remove takes its route (under load on `other`: not one
failed request), containers, images, certificate, folders and store state, keeps its history and
volume, says so, and a second remove finds nothing; `--volumes` then takes the volume.
"""

from __future__ import annotations

import time
from datetime import datetime, timezone

import pytest

from cluster_helpers import Hey
from docker_helpers import BASE_IMAGE, Instance, Load, site_files, wait_for

from hookdeploy.core.models import JobState, ReleaseState
from hookdeploy.core.taskruns import RunState, TaskRuns
from hookdeploy.engine.scheduler import Scheduler

LONG_TASK = {"name": "long", "schedule": "0 6 1 1 *", "timeout": 600.0, "command": ["sleep", "300"]}
SLOT = datetime(2027, 1, 1, 6, 0, 10, tzinfo=timezone.utc)
SITE = {"hostnames": ["site.test", "www.site.test"], "volumes": ["data:/data"], "tasks": [LONG_TASK]}
OTHER = {"hostnames": ["other.test"]}



@pytest.fixture(scope="module")
def instance(docker_engine, tmp_path_factory):
    """`site` (v1 then v2 live, data written to its volume) and `other` (live), both on the proxy."""
    made = Instance(tmp_path_factory.mktemp("remove"), docker_engine)
    try:
        made.configure({"site": SITE, "other": OTHER})
        for app, version in (("site", "v1"), ("site", "v2"), ("other", "o1")):
            job = made.deploy(app, site_files(version))
            assert job.state is JobState.SUCCEEDED, job.error
        written = made.cli("run", "site", "--", "sh", "-c", "echo kept > /data/file")
        assert written.returncode == 0, written.stderr
        yield made
    finally:
        made.cleanup()


def site_objects(instance: Instance) -> dict[str, list[str]]:
    """Every Docker object of `site` this instance could have left: by its labels, names and aliases."""
    client, name = instance.client, instance.name
    labels = {"label": [f"hookdeploy.instance={name}", "hookdeploy.app=site"]}
    network = client.networks.get(name)
    network.reload()
    attached = [member["Name"] for member in (network.attrs.get("Containers") or {}).values()]
    return {
        "containers": [container.name for container in client.containers.list(all=True, filters=labels)],
        "images": [raw["Id"] for raw in client.api.images(filters=labels) + client.api.images(name=f"{name}/site")],
        "volumes": [volume["Name"] for volume in client.api.volumes(filters=labels)["Volumes"] or []],
        "on the network": [member for member in attached if member.startswith(f"{name}-site-")],
    }


def test_remove_is_refused_for_an_app_in_deploy_toml_and_while_its_job_runs(instance):
    before = site_objects(instance)
    refused = instance.cli("remove", "site")
    assert refused.returncode == 2 and refused.stdout == ""
    assert refused.stderr == ("hookdeploy: error: site is still in deploy.toml: remove its table [apps.site] first "
                              "(and reload the running service), then run hookdeploy remove site again\n")

    instance.configure({"other": OTHER})
    job = instance.enqueue("site", instance.store.live_release("site").sha)
    claimed = instance.store.claim("test-worker")  # as a worker that still has site in its config
    assert claimed.id == job.id
    refused = instance.cli("remove", "site")
    assert refused.returncode == 2, refused.stdout
    assert refused.stderr == (f"hookdeploy: error: site has job {job.id} running: wait for it to end (hookdeploy "
                              f"logs {job.id} --follow; if its worker died, the next worker to start ends it), "
                              "then remove site\n")
    assert instance.get(host="site.test").status == 200 and site_objects(instance) == before
    instance.store.finish(job.id, JobState.FAILED, "ended by the test")
    instance.configure({"site": SITE, "other": OTHER})


def test_doctor_names_an_app_gone_from_deploy_toml_until_it_is_removed(instance):
    instance.configure({"other": OTHER})
    try:
        doctor = instance.cli("doctor")
        lines = [line for line in doctor.stdout.splitlines() if "app site" in line]
        assert doctor.returncode == 1
        live = instance.store.live_release("site").sha[:12]
        assert lines == [f"FIX   app site is not in deploy.toml but still has live release {live}, a route in the "
                         "proxy, 1 container or service, 2 images: run hookdeploy remove site (its history stays)"]
        assert "app other" not in doctor.stdout
    finally:
        instance.configure({"site": SITE, "other": OTHER})


def test_remove_takes_everything_but_the_history_and_the_volume_without_cutting_other_apps(instance):
    store, state = instance.store, instance.state_dir
    certs = state / "proxy" / "conf.d" / "certs"
    for host in ("site.test", "www.site.test", "other.test"):  # as certs.py keeps them (the content is not read)
        (certs / f"host-{host}.pem").write_text("pem\n")
    live = store.live_release("site")
    # A task of site running in its container, and a deploy of it queued.
    scheduler = Scheduler(instance.config, store, "test-worker", clock=lambda: SLOT)
    scheduler.tick()
    task = wait_for(lambda: instance.containers(app="site", role="task"), what="the task's container")[0]
    queued = instance.enqueue("site", live.sha)
    history_before = [job.id for job in store.jobs("site")]

    instance.configure({"other": OTHER})  # site's table leaves deploy.toml
    hey = Hey(f"http://{instance.address}:{instance.port}/", seconds=8, concurrency=8, host="other.test")
    with Load(instance.port, host="other.test", threads=2) as load:
        time.sleep(1.0)
        started = time.monotonic()
        removed = instance.cli("remove", "site")
        took = time.monotonic() - started
    answered = hey.result()
    assert removed.returncode == 0, removed.stderr
    print(f"remove took {took:.1f} s; meanwhile on other: hey {answered.total} requests "
          f"({answered.requests_per_second:.0f}/s), {answered.failed} not 200; {load.requests} more, "
          f"{len(load.errors)} failed")
    assert answered.total > 100 and answered.failed == 0, answered.output
    assert load.requests > 20 and load.errors == [], load.errors[:5]
    run = TaskRuns(store).runs("site", "long")[0]
    lines = removed.stdout.splitlines()
    assert lines[0] == f"site: ended 1 queued job superseded ({queued.id})"
    assert lines[1] == f"site: ended 1 unfinished task run (run {run.id} of long failed)"
    assert lines[2] == "site: route removed (conf.d/app-site.conf; nginx reloaded)"
    assert lines[3].startswith("site: removed 2 containers and services: ") and task.name in lines[3]
    assert live.container in lines[3]
    assert lines[4].startswith("site: removed 2 images: ") and live.image in lines[4]
    assert lines[5] == "site: removed 2 certificates: host-site.test.pem, host-www.site.test.pem"
    assert lines[6] == (f"site: removed {state / 'builds' / 'site'}, {state / 'proxy' / 'logs' / 'app-site.log'}")
    assert lines[7] == (f"site: kept 1 volume (its data): {instance.name}-site-data; "
                        "`hookdeploy remove site --volumes` removes it")
    assert lines[8] == "site: removed; its history stays (hookdeploy history site)" and len(lines) == 9

    # Nothing of site is left in the engine but its volume, nor in the proxy; other still serves.
    assert site_objects(instance) == {"containers": [], "images": [], "volumes": [f"{instance.name}-site-data"],
                                      "on the network": []}
    assert "app-site.conf" not in instance.proxy_files() and "app-other.conf" in instance.proxy_files()
    assert instance.get(host="site.test").status == 404  # the catch-all: no app answers the name any more
    assert instance.get(host="other.test").status == 200
    assert sorted(path.name for path in certs.iterdir()) == ["host-other.test.pem"]
    assert not (state / "builds" / "site").exists()

    # The history stays, the queued job and the task run say why they ended, nothing is live.
    assert [job.id for job in store.jobs("site")] == history_before
    ended = store.job(queued.id)
    assert ended.state is JobState.SUPERSEDED and ended.error == "site was removed (hookdeploy remove)"
    assert run.state is RunState.FAILED and run.reason == "site was removed (hookdeploy remove)"
    assert store.live_release("site") is None
    assert {release.state for release in store.releases("site")} == {ReleaseState.PRUNED}
    history = instance.cli("history", "site")
    assert history.returncode == 0 and len(history.stdout.splitlines()) == len(history_before)
    assert f"{queued.id}  superseded" in history.stdout
    for thread in list(scheduler._threads.values()):
        thread.join(timeout=30)
    assert TaskRuns(store).run(run.id).reason == "site was removed (hookdeploy remove)"  # the worker's end changed nothing
    doctor = instance.cli("doctor")
    assert "app site" not in doctor.stdout, doctor.stdout

    # Again: nothing left but the volume; then --volumes takes it; then nothing at all.
    again = instance.cli("remove", "site")
    assert again.returncode == 0, again.stderr
    assert again.stdout.splitlines() == [
        f"site: kept 1 volume (its data): {instance.name}-site-data; `hookdeploy remove site --volumes` removes it",
        "site: nothing left to remove; its history stays (hookdeploy history site)"]
    volumes = instance.cli("remove", "site", "--volumes")
    assert volumes.returncode == 0, volumes.stderr
    assert volumes.stdout.splitlines() == [
        f"site: removed 1 volume and its data: {instance.name}-site-data",
        "site: removed; its history stays (hookdeploy history site)"]
    assert site_objects(instance)["volumes"] == []
    last = instance.cli("remove", "site", "--volumes")
    assert last.returncode == 0 and last.stdout == "site: nothing left to remove; its history stays (hookdeploy history site)\n"
    unknown = instance.cli("remove", "nosuch")
    assert unknown.returncode == 2 and unknown.stderr == (
        "hookdeploy: error: unknown app nosuch: neither deploy.toml nor the job store knows it, and the engine has "
        "nothing of it\n")


def test_an_image_that_has_another_name_only_loses_the_apps_names(instance):
    """An image app's pull is named N/APP:SHA12 beside its own name: remove takes the app's names, never the image."""
    client, name = instance.client, instance.name
    base = client.images.get(BASE_IMAGE)
    for tag in ("abc", "def"):
        base.tag(f"{name}/gone", tag)
    job = instance.enqueue("gone", "a" * 40)
    removed = instance.cli("remove", "gone")
    assert removed.returncode == 0, removed.stderr
    lines = removed.stdout.splitlines()
    assert lines[:2] == [f"gone: ended 1 queued job superseded ({job.id})",
                         f"gone: removed 2 images: {name}/gone:abc, {name}/gone:def"]
    assert lines[2].startswith(f"gone: kept 1 image: {base.id.removeprefix('sha256:')[:12]} (also named ")
    assert BASE_IMAGE in lines[2] and len(lines) == 4
    assert client.images.get(BASE_IMAGE).id == base.id and client.api.images(name=f"{name}/gone") == []


def test_removing_the_default_server_app_brings_back_the_catch_all(make_instance):
    """The app without hostnames answered every other name; once it is removed the proxy's own 404 does,
    never the remaining app (nginx would take its first server block as the default)."""
    made = make_instance()
    made.configure({"site": {}, "other": OTHER})
    for app in ("site", "other"):
        assert made.deploy(app, site_files(f"{app} v1")).state is JobState.SUCCEEDED
    assert "00-default.conf" not in made.proxy_files() and made.get(host="elsewhere.test").status == 200
    made.configure({"other": OTHER})
    removed = made.cli("remove", "site")
    assert removed.returncode == 0, removed.stderr
    assert "00-default.conf" in made.proxy_files() and "app-site.conf" not in made.proxy_files()
    for host in (None, "elsewhere.test"):
        answer = made.get(host=host)
        assert answer.status == 404 and answer.release is None, answer
    assert made.get(host="other.test").body == "<p>other v1</p>\n"
