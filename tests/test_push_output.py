"""What the pusher sees: a real `git push` into a repo made by `init-repo`, with a worker running."""

from __future__ import annotations

import re
import subprocess
import threading
import time

import pytest

from docker_helpers import HOOKDEPLOY, Instance, git, hooked_site_with_worker, site_files


@pytest.fixture
def pushing(instance: Instance):
    """An instance whose app repo has the post-receive hook and a worker process running."""
    with hooked_site_with_worker(instance):
        yield instance


def push(instance: Instance, files: dict[str, str]) -> tuple[str, str]:
    """Commit `files` as the whole tree and `git push` it; return (sha, what the pusher saw)."""
    work = instance.repos["site"].work
    for path in sorted(work.rglob("*"), reverse=True):
        if ".git" not in path.relative_to(work).parts:
            path.unlink() if path.is_file() else path.rmdir()
    for name, text in files.items():
        (work / name).parent.mkdir(parents=True, exist_ok=True)
        (work / name).write_text(text)
    git("add", "--all", cwd=work)
    git("commit", "-q", "-m", "change", cwd=work)
    sha = git("rev-parse", "HEAD", cwd=work)
    completed = subprocess.run(["git", "push", "production", "HEAD:deploy"], cwd=work, capture_output=True,
                               text=True, timeout=180)
    assert completed.returncode == 0, completed.stderr
    lines = [line.removeprefix("remote: ").rstrip() for line in completed.stderr.splitlines()
             if line.startswith("remote: ")]
    return sha, "\n".join(lines)


def test_push_shows_the_build_the_health_check_and_the_switch(pushing):
    first, _ = push(pushing, site_files("one"))
    second, seen = push(pushing, site_files("two"))
    job = pushing.store.jobs("site", limit=1)[0]
    assert f"queued job {job.id} (site @ {second[:7]})" in seen
    assert f"-----> Building {pushing.name}/site:{second[:12]}" in seen
    assert re.search(r"\n       #1 \[internal\] load build definition from ", seen), \
        "build output (BuildKit's plain progress) is indented under its step"
    assert "-----> Starting candidate" in seen
    assert "-----> Health check passed in " in seen
    assert f"-----> Switched: http://127.0.0.1:{pushing.port} serves {second[:12]} (was {first[:12]})" in seen
    assert pushing.get().release == second[:12]


def test_push_of_a_broken_build_says_why_and_that_the_live_release_is_unchanged(pushing):
    good, _ = push(pushing, site_files("good"))
    _, seen = push(pushing, site_files("bad", dockerfile_tail="RUN exit 3\n"))
    assert "-----> failed: build failed" in seen
    assert seen.rstrip().endswith(f"-----> live release unchanged: {good[:7]}")
    assert pushing.get().release == good[:12]


def test_push_of_an_unhealthy_candidate_says_why_and_that_the_live_release_is_unchanged(pushing):
    good, _ = push(pushing, site_files("good"))
    _, seen = push(pushing, site_files("no health page", health=None))
    assert "-----> failed: unhealthy after" in seen and "status 404" in seen
    assert "-----> Health check passed" not in seen
    assert seen.rstrip().endswith(f"-----> live release unchanged: {good[:7]}")
    assert pushing.get().release == good[:12]


def test_push_without_a_worker_returns_at_once_and_says_so(instance):
    instance.configure({"site": {}})
    assert instance.cli("init-repo", "site").returncode == 0
    _, seen = push(instance, site_files("one"))
    job = instance.store.jobs("site", limit=1)[0]
    assert seen.splitlines()[-1] == f"queued as job {job.id}; no worker is running (start it with: hookdeploy worker)"
    assert job.state.value == "queued"


def test_follow_push_off_in_config_returns_once_queued(pushing):
    pushing.configure({"site": {"follow_push": False}})
    _, seen = push(pushing, site_files("one"))
    assert seen.startswith("queued job ") and "----->" not in seen


def test_wait_exits_0_when_live_and_1_when_not_and_logs_follow_ends_with_the_job(pushing):
    instance = pushing
    instance.configure({"site": {"follow_push": False}})
    good, _ = push(instance, site_files("good"))
    waited = instance.cli("replay", "site", good[:8], "--wait")
    assert waited.returncode == 0, waited.stderr
    assert waited.stdout.splitlines()[-1].endswith("succeeded")

    bad, _ = push(instance, site_files("bad", dockerfile_tail="RUN exit 3\n"))
    job = instance.store.jobs("site", limit=1)[0]
    followed = subprocess.Popen([str(HOOKDEPLOY), "--config", str(instance.config_path), "logs", str(job.id),
                                 "--follow"], stdout=subprocess.PIPE, text=True)
    output, _ = followed.communicate(timeout=180)
    assert followed.returncode == 0
    assert instance.store.job(job.id).state.value == "failed"
    assert "state failed: build failed" in output.splitlines()[-1]
    failed = instance.cli("replay", "site", bad, "--wait")
    assert failed.returncode == 1 and "failed" in failed.stdout.splitlines()[-1]
    assert instance.get().release != bad[:12]


def test_a_restart_during_the_build_tells_the_pusher_and_follows_the_retry_live(instance):
    instance.configure({"site": {}})
    assert instance.cli("init-repo", "site").returncode == 0
    command = [str(HOOKDEPLOY), "--config", str(instance.config_path), "worker"]
    first = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    second = None
    try:
        deadline = time.monotonic() + 20
        while not instance.store.worker_alive(10) and time.monotonic() < deadline:
            time.sleep(0.05)
        seen: list[str] = []
        pushing = threading.Thread(target=lambda: seen.append(push(instance, site_files(
            "after a restart", dockerfile_tail="RUN sleep 3 && echo slow step\n"))[1]))
        pushing.start()
        deadline = time.monotonic() + 60
        while not any("RUN sleep 3" in event.message for job in instance.store.jobs("site", limit=1)
                      for event in instance.store.events(job.id)):
            assert time.monotonic() < deadline, "the build never reached its RUN step"
            time.sleep(0.05)
        first.terminate()  # what `systemctl restart` sends
        assert first.wait(30) == 0
        second = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        pushing.join(180)
        assert not pushing.is_alive()
    finally:
        for worker in (first, second):
            if worker is not None and worker.poll() is None:
                worker.terminate()
                worker.wait(60)
    [interrupted, retry] = sorted(instance.store.jobs("site"), key=lambda job: job.id)
    assert f"-----> interrupted: the worker is restarting; queued again as job {retry.id}" in seen[0]
    assert f"-----> Switched: http://127.0.0.1:{instance.port} serves {retry.sha[:12]}" in seen[0]
    assert instance.get().release == retry.sha[:12]
