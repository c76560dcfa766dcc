"""Builds beside prunes (issue 21): a prune elsewhere on the engine (another app's job, another instance,
someone's `docker image prune`) may take an image from under a build; the job builds again instead of
failing a good commit, and a Dockerfile's own error still fails at once. Our own prunes wait for a
quiet moment while a legacy build of ours runs (its steps may be on the untagged parents a prune takes).

The legacy builder's messages below were seen for real on Docker 20.10: two builds on a cached prefix
while an image on that prefix was removed with its parents, or `docker image prune` ran (the stress
test below meets them in about one build of two). BuildKit's builds hold what they use: 15 rounds of
two builds in a nested engine beside `docker image prune -f` and `docker builder prune -af` in a loop
never failed; its not-found errors are the Dockerfile's (a COPY of a missing file), never built again.

The stress test prunes only what it made: its images carry a label of its own, and the other
engineers' and CI's images on the same engine are never touched.
"""

from __future__ import annotations

import contextlib
import io
import os
import secrets
import subprocess
import threading
import time

import docker
import pytest

from docker_helpers import BASE_IMAGE, site_files
from hookdeploy.core.config import load
from hookdeploy.core.errors import Aborted, StepFailed
from hookdeploy.core.models import Job, JobKind, JobState, Trigger
from hookdeploy.engine import builders, pipeline
from hookdeploy.engine.worker import Worker

ROUNDS = int(os.environ.get("HD_TEST_PRUNE_ROUNDS", "20"))
RETRY = "build: the engine lost an image under the build ("


@pytest.mark.parametrize("error, lost", [
    ('build failed: unable to find image "sha256:5d2d4a1c5c3e9f6a7b8c9d0e1f2a3b4c5d6e7f8a9b0c1d2e3f4a5b6c7d8e9f0a"',
     'unable to find image "sha256:5d2d4a1c5c3e9f6a7b8c9d0e1f2a3b4c5d6e7f8a9b0c1d2e3f4a5b6c7d8e9f0a"'),
    ("build failed: No such image: sha256:597bb7ba7d67c7bbf776a7aaa4d981e6ebd498dea267805a96a24238060d9217",
     "No such image: sha256:597bb7ba7d67c7bbf776a7aaa4d981e6ebd498dea267805a96a24238060d9217"),
    ("build failed: failed to get digest sha256:40ee71977b65e351d48c7f912ade7b604ebd07d8a9a8e66440a8bf0a4e9ba213: "
     "open /var/lib/docker/image/overlay2/imagedb/content/sha256/40ee71977b65e351d48c7f912ade7b604ebd07d8a9a8e66440a8bf0a"
     "4e9ba213: no such file or directory",
     "failed to get digest sha256:40ee71977b65e351d48c7f912ade7b604ebd07d8a9a8e66440a8bf0a4e9ba213: open /var/lib/docker/"
     "image/overlay2/imagedb/content/sha256/40ee71977b65e351d48c7f912ade7b604ebd07d8a9a8e66440a8bf0a4e9ba213: "
     "no such file or directory"),
    ("build failed: failed to export image: failed to set parent sha256:f8c3b64b27f4249620b41bafdd07e262c5868ae77b02"
     "d95bb4eaba1d0e86c56e: unknown parent image ID sha256:f8c3b64b27f4249620b41bafdd07e262c5868ae77b02d95bb4eaba1d0e86c56e",
     "unknown parent image ID sha256:f8c3b64b27f4249620b41bafdd07e262c5868ae77b02d95bb4eaba1d0e86c56e"),
    # The commit's own errors: never built again.
    ("build failed: The command '/bin/sh -c exit 1' returned a non-zero code: 1", None),
    ('build failed: process "/bin/sh -c exit 1" did not complete successfully: exit code: 1', None),
    ("build failed: failed to compute cache key: \"/nope\" not found: not found", None),
    ("build failed: COPY failed: file not found in build context or excluded by .dockerignore: stat nope: "
     "file does not exist", None),
    ("build failed: pull access denied for nosuchimage, repository does not exist or may require 'docker login'", None),
    ("build failed: No such image: nosuchbase:latest", None),
])
def test_only_an_image_lost_under_the_build_counts_as_the_engines_fault(error, lost):
    assert builders.lost_image(error) == lost


class Flaky:
    """A builder whose first builds end as the engine's error did when a prune took an image from under them."""

    elsewhere = False
    intermediate_images = False

    def __init__(self, failures: int):
        self.failures, self.calls = failures, 0

    def build(self, request, on_lines, stop):
        self.calls += 1
        if self.calls <= self.failures:
            raise StepFailed(f"build failed: No such image: sha256:{secrets.token_hex(32)}")
        return "sha256:" + "ab" * 32


def test_a_build_the_engine_lost_an_image_under_is_built_again_a_bounded_number_of_times(tmp_path, monkeypatch):
    monkeypatch.setattr(pipeline, "BUILD_AGAIN_AFTER", (0.0, 0.0))
    (tmp_path / "deploy.toml").write_text(f'[server]\nstate_dir = "{tmp_path / "state"}"\n[apps.site]\nrepo = "/r"\n')
    config = load(tmp_path / "deploy.toml")
    job = Job(7, "site", JobKind.DEPLOY, Trigger.MANUAL, None, "c" * 40, JobState.RUNNING, "", None, None, None, None)
    notes: list[str] = []
    builder = Flaky(2)
    built = pipeline.build(builder, config, config.apps["site"], job, tmp_path, "n/site:cccccccccccc",
                           lambda lines: None, on_note=notes.append)
    assert (builder.calls, built) == (3, "sha256:" + "ab" * 32)
    assert [note.split("); ")[1] for note in notes] == ["building again (2 of 3)", "building again (3 of 3)"]
    assert all(note.startswith(RETRY + "No such image: sha256:") for note in notes)

    builder, notes = Flaky(3), []
    with pytest.raises(StepFailed) as raised:
        pipeline.build(builder, config, config.apps["site"], job, tmp_path, "n/site:cccccccccccc", lambda lines: None,
                       on_note=notes.append)
    assert builder.calls == 3 and len(notes) == 2
    assert raised.value.args[0].endswith("(the engine lost an image under each of 3 builds)")

    # A worker told to stop while it waits to build again stops there.
    monkeypatch.setattr(pipeline, "BUILD_AGAIN_AFTER", (30.0, 30.0))
    builder, stop = Flaky(1), threading.Event()
    threading.Timer(0.2, stop.set).start()
    started = time.monotonic()
    with pytest.raises(Aborted):
        pipeline.build(builder, config, config.apps["site"], job, tmp_path, "n/site:cccccccccccc", lambda lines: None,
                       stop, notes.append)
    assert builder.calls == 1 and time.monotonic() - started < 5


# -- for real ------------------------------------------------------------------------------------------------


def layered(nonce: str, round_: int, app: str) -> dict[str, str]:
    """A commit of `app` for `round_`: its first steps the same as the other app's (and as the image the
    round's prune takes), so each build walks cached images a prune may remove; then steps of its own."""
    shared = "".join(f"ENV STEP{step}={nonce}-{round_}-{step}\n" for step in range(4))  # an image each, cheaply
    files = site_files(f"{app} round {round_}")
    files["Dockerfile"] = (f"FROM {BASE_IMAGE}\nLABEL hdprunes.test={nonce}\n{shared}"
                           f"COPY site/ /usr/share/nginx/html/\nRUN echo {app}-{round_} > /usr/share/nginx/html/app\n")
    return files


def build_other(nonce: str, round_: int, tag: str) -> None:
    """What another instance built on the round's shared steps (legacy builder: an image per step); built
    again if the round's `docker image prune` took an image from under it too."""
    dockerfile = layered(nonce, round_, "other")["Dockerfile"].split("COPY")[0]
    for _ in range(5):
        if subprocess.run(["docker", "build", "-q", "-t", tag, "-"], input=dockerfile.encode(), capture_output=True,
                          env={"DOCKER_BUILDKIT": "0", "PATH": "/usr/bin:/bin"}, timeout=120).returncode == 0:
            return


@pytest.mark.slow
@pytest.mark.parametrize("builder", ["classic", "buildkit"])
def test_two_apps_build_at_once_beside_prunes_and_no_job_fails(instance, builder):
    nonce = secrets.token_hex(4)
    instance.configure({"one": {"keep": 2}, "two": {"keep": 2, "hostnames": ["two.example"]}},
                       extra=f'[build]\nbuilder = "{builder}"\n')
    store, config = instance.store, instance.config
    stop = threading.Event()
    workers = [threading.Thread(target=Worker(config, store, name=f"w{index}").run, args=(stop,), daemon=True)
               for index in (1, 2)]
    for worker in workers:
        worker.start()
    other = f"{instance.name}/other:round"
    jobs, lost, postponed = [], 0, 0
    started = time.monotonic()
    build_other(nonce, 0, f"{other}0")
    try:
        for round_ in range(ROUNDS):
            # The next round's stand-in for another instance's image is built while this round runs.
            ahead = threading.Thread(target=build_other, args=(nonce, round_ + 1, f"{other}{round_ + 1}"))
            ahead.start()
            round_jobs = [instance.enqueue(app, instance.commit(app, layered(nonce, round_, app))) for app in ("one", "two")]
            # Once both build: another instance prunes its release (with the untagged parents our builds
            # walk), and someone's `docker image prune` (kept to this test's images by their label).
            deadline = time.monotonic() + 60
            while sum(any(line.startswith("building ") for line in instance.events(job.id)) for job in round_jobs) < 2:
                assert time.monotonic() < deadline, "the builds did not start"
                time.sleep(0.02)
            time.sleep(0.05 * (round_ % 5))
            with contextlib.suppress(docker.errors.ImageNotFound):
                instance.client.images.remove(f"{other}{round_}", noprune=False)
            subprocess.run(["docker", "image", "prune", "-f", "--filter", f"label=hdprunes.test={nonce}"],
                           check=True, capture_output=True, timeout=60)
            deadline = time.monotonic() + 120
            while not all(store.job(job.id).state.finished for job in round_jobs):
                assert time.monotonic() < deadline, "the jobs did not end"
                time.sleep(0.05)
            jobs += [store.job(job.id) for job in round_jobs]
            ahead.join()
    finally:
        stop.set()
        for worker in workers:
            worker.join(60)
        subprocess.run(["docker", "image", "prune", "-f", "--filter", f"label=hdprunes.test={nonce}"],
                       capture_output=True, timeout=60)
    took = time.monotonic() - started
    for job in jobs:
        events = instance.events(job.id)
        lost += sum(line.startswith(RETRY) for line in events)
        postponed += any(line.startswith("pruned none now") for line in events)
    print(f"{builder}: {len(jobs)} jobs in {took:.1f} s; builds again after a lost image: {lost}; "
          f"prunes postponed beside a build: {postponed}")
    failed = [(job.app, job.id, job.state.value, job.error) for job in jobs if job.state is not JobState.SUCCEEDED]
    assert failed == []
    assert instance.get().body == f"<p>one round {ROUNDS - 1}</p>\n"
    assert instance.get(host="two.example").body == f"<p>two round {ROUNDS - 1}</p>\n"
    # A prune put off while a build ran is done by the app's next job: live and rollback target stay.
    for app in ("one", "two"):
        instance.enqueue(app, instance.commit(app, layered(nonce, ROUNDS, app)))
    instance.work()
    for app in ("one", "two"):
        tags = {tag for tag in instance.images() if tag.startswith(f"{instance.name}/{app}:")}
        assert len(tags) == 2, tags


@pytest.mark.parametrize("builder, says", [("classic", "returned a non-zero code: 3"), ("buildkit", "exit code: 3")])
def test_a_dockerfile_error_fails_at_once_and_is_never_built_again(instance, builder, says):
    instance.configure({"site": {}}, extra=f'[build]\nbuilder = "{builder}"\n')
    marker = secrets.token_hex(6)
    job = instance.deploy("site", site_files("broken", dockerfile_tail=f"RUN echo ran-{marker} && exit 3\n"))
    assert job.state is JobState.FAILED
    assert job.error.startswith("build failed: ") and job.error.endswith(says), job.error
    events = instance.events(job.id)
    assert not [line for line in events if line.startswith(RETRY)]
    assert sum(line.startswith("building ") for line in events) == 1
    assert sum(f"ran-{marker}" in line and "echo" not in line for line in events) == 1, events


def test_our_prune_waits_while_a_classic_build_of_ours_runs_and_never_for_buildkit(instance):
    instance.configure({"other": {"keep": 2}}, extra='[build]\nbuilder = "classic"\n')
    store, config = instance.store, instance.config
    images = []
    for number in range(3):  # three releases: the oldest is beyond keep and not the rollback target
        sha = f"{number}" * 40
        image = f"{instance.name}/other:{sha[:12]}"
        dockerfile = f"FROM {BASE_IMAGE}\nLABEL hookdeploy.instance={instance.name} number={number}\n"
        instance.client.images.build(fileobj=io.BytesIO(dockerfile.encode()), tag=image, rm=True)
        store.record_live("other", sha, image, f"{instance.name}-other-{sha[:12]}-1", store.enqueue("other", sha).id)
        images.append(image)
    app = config.apps["other"]
    with pipeline.building(config, builders.ClassicBuilder(instance.client)):  # as another job's build holds it
        assert pipeline.prune(instance.client, store, app) is None
        assert set(images) <= instance.images()
        assert [release.state.value for release in store.releases("other")] == ["live", "retired", "retired"]
    # A BuildKit build holds nothing: its steps are in BuildKit's own cache, not parents a prune takes.
    with pipeline.building(config, builders.BuildKitBuilder(None)):
        assert pipeline.prune(instance.client, store, app) == [images[0]]
    assert instance.images() == set(images[1:])
    assert [release.state.value for release in store.releases("other")] == ["live", "retired", "pruned"]
