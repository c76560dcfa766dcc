"""Fetching a private repo: over ssh with a deploy key (pinned or recorded host key) from a real sshd in a
container, and over https with a token from `git http-backend` behind a token check (gitserver_helpers).

A webhook deploys end to end through `hookdeploy serve`; a refused key, a changed host key and a refused
token fail the job with one clear line before anything is built, and `doctor` names the same; the token
is never in a command line, the job log, an error or serve's log.
"""

from __future__ import annotations

import secrets
import time
from pathlib import Path

import pytest

from docker_helpers import Instance, site_files
from gitserver_helpers import GitHttp, GitSshd, keygen
from hookdeploy.core.models import JobState
from webhook_helpers import SECRETS, Server, request, signed_headers, push_body

SECRET = {"provider": "github", "secret_env": "SITE_SECRET"}


@pytest.fixture(scope="module")
def sshd(docker_engine, tmp_path_factory):
    server = GitSshd(tmp_path_factory.mktemp("gitsshd"))
    try:
        yield server.start()
    finally:
        server.remove()


def private_instance(root: Path, client, repo, app: dict) -> Instance:
    """An instance whose app `site` fetches `app["repo"]`; its commits go to `repo` (served by the test)."""
    root.mkdir(parents=True, exist_ok=True)
    made = Instance(root, client)
    made.repos["site"] = repo
    made.configure({"site": {"hostnames": ["site.test"], **app}})
    return made


def wait_for(job_id: int, instance: Instance, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not instance.store.job(job_id).state.finished:
        assert time.monotonic() < deadline, instance.events(job_id)
        time.sleep(0.1)


def webhook_deploy(instance: Instance, sha: str, log: Path, env: dict | None = None):
    """POST a signed push of `sha` to `hookdeploy serve` (with its worker) on the instance; the finished job,
    which must have succeeded and made `sha` live."""
    port = int(instance.config.server.listen.rpartition(":")[2])
    body = push_body("github", sha)
    with Server(instance.config_path, port, log, worker=True, env=env):
        status, answer, _ = request(port, "POST", "/hooks/site", body,
                                    signed_headers("github", SECRETS["SITE_SECRET"], body))
        assert status == 202, answer
        wait_for(answer["job"], instance)
    job = instance.store.job(answer["job"])
    assert job.state is JobState.SUCCEEDED, (job.error, instance.events(job.id))
    assert instance.get(host="site.test")[:2] == (200, sha[:12])
    return job


def doctor_line(instance: Instance, env: dict | None = None) -> str:
    """doctor's line about the site's repo."""
    completed = instance.cli("doctor", env=env)
    lines = [line for line in completed.stdout.splitlines() if "site: repo" in line]
    assert len(lines) == 1, completed.stdout + completed.stderr
    return lines[0]


def test_a_webhook_deploys_from_a_private_repo_over_ssh_with_a_deploy_key(sshd, docker_engine, tmp_path):
    instance = private_instance(tmp_path, docker_engine, sshd.repo, {
        "repo": sshd.url, "repo_key_file": str(sshd.key), "repo_host_key": sshd.known_host, "webhook": SECRET})
    try:
        sha = instance.commit("site", site_files("private over ssh"))
        assert doctor_line(instance).startswith("ok    site: repo ssh://")
        webhook_deploy(instance, sha, tmp_path / "serve.log")
        # The pinned line is the whole known_hosts ssh used; nothing was recorded beside it.
        assert (instance.state_dir / "ssh" / "site.known_hosts").read_text() == sshd.known_host + "\n"
        assert not (instance.state_dir / "known_hosts").exists()
    finally:
        instance.cleanup()


def test_a_key_the_server_does_not_know_is_refused_and_nothing_is_built(sshd, docker_engine, tmp_path):
    other_key = keygen(tmp_path / "not_a_deploy_key")
    instance = private_instance(tmp_path / "site", docker_engine, sshd.repo, {
        "repo": sshd.url, "repo_key_file": str(other_key), "repo_host_key": sshd.known_host})
    try:
        job = instance.enqueue("site", instance.commit("site", site_files("never fetched")))
        instance.work()
        failed = instance.store.job(job.id)
        assert failed.state is JobState.FAILED
        assert f"key refused: [127.0.0.1]:{sshd.port} does not accept the deploy key {other_key}" in failed.error
        assert instance.images() == set()
        line = doctor_line(instance)
        assert line.startswith("FIX   site: repo") and "key refused" in line
    finally:
        instance.cleanup()
    elsewhere = private_instance(tmp_path / "elsewhere", docker_engine, sshd.repo, {
        "repo": sshd.url.replace("repo.git", "nosuch.git"), "repo_key_file": str(sshd.key)})
    try:
        job = elsewhere.enqueue("site", sshd.repo.commit(site_files("not there")))
        elsewhere.work()
        assert "repository not found, or not readable with these credentials (fatal: '/srv/git/nosuch.git' " \
               "does not appear to be a git repository)" in elsewhere.store.job(job.id).error
    finally:
        elsewhere.cleanup()


def test_a_changed_host_key_is_refused_recorded_or_pinned(sshd, docker_engine, tmp_path):
    instance = private_instance(tmp_path / "site", docker_engine, sshd.repo,
                                {"repo": sshd.url, "repo_key_file": str(sshd.key)})
    pinned = private_instance(tmp_path / "pinned", docker_engine, sshd.repo, {
        "repo": sshd.url, "repo_key_file": str(sshd.key), "repo_host_key": sshd.known_host})
    try:
        instance.commit("site", site_files("first"))
        queued = instance.cli("deploy", "site")  # the first fetch records the host key
        assert queued.returncode == 0, queued.stderr
        recorded = (instance.state_dir / "known_hosts").read_text()
        assert sshd.known_host.split()[1:] == recorded.split()[1:3]
        sshd.rekey()
        try:
            second = instance.commit("site", site_files("after the host changed"))
            jobs = [instance.enqueue("site", second), pinned.enqueue("site", second)]
            for each in (instance, pinned):
                each.work()
            errors = [instance.store.job(jobs[0].id).error, pinned.store.job(jobs[1].id).error]
            assert all(job.state is JobState.FAILED for job in
                       (instance.store.job(jobs[0].id), pinned.store.job(jobs[1].id))), errors
            assert "host key changed: [127.0.0.1]:%d no longer has the key recorded in %s" % (
                sshd.port, instance.state_dir / "known_hosts") in errors[0]
            assert "ssh-keygen -R" in errors[0] and "SHA256:" in errors[0]
            assert "does not have the key pinned in apps.site.repo_host_key" in errors[1]
            assert instance.images() == set() and pinned.images() == set()
            assert (instance.state_dir / "known_hosts").read_text() == recorded  # not overwritten
            assert "host key changed" in doctor_line(instance)
        finally:
            sshd.restore()
    finally:
        instance.cleanup()
        pinned.cleanup()


@pytest.fixture
def token_server(tmp_path):
    token = f"tok-{secrets.token_hex(16)}"
    server = GitHttp(tmp_path / "served", token).start()
    try:
        yield server
    finally:
        server.stop()


def test_https_token_fetches_and_is_never_shown(token_server, docker_engine, tmp_path, monkeypatch):
    from docker_helpers import Repo

    repo = Repo.create(token_server.root)
    token = token_server.token
    instance = private_instance(tmp_path / "site", docker_engine, repo, {
        "repo": token_server.url(), "repo_token_env": "SITE_REPO_TOKEN", "webhook": SECRET})
    env = {"SITE_REPO_TOKEN": token}
    try:
        sha = instance.commit("site", site_files("private over https"))
        assert doctor_line(instance, env).startswith("ok    site: repo http://")
        job = webhook_deploy(instance, sha, tmp_path / "serve.log", env)
        assert any(status == 200 for _, status in token_server.requests)

        wrong = {"SITE_REPO_TOKEN": "tok-wrong-" + secrets.token_hex(8)}
        refused = instance.cli("deploy", "site", env=wrong)
        assert refused.returncode != 0 and "token refused" in refused.stderr, refused.stderr
        assert wrong["SITE_REPO_TOKEN"] not in refused.stderr + refused.stdout
        line = doctor_line(instance, wrong)
        assert "token refused" in line and wrong["SITE_REPO_TOKEN"] not in line
        monkeypatch.setenv("SITE_REPO_TOKEN", wrong["SITE_REPO_TOKEN"])
        failed = instance.enqueue("site", instance.commit("site", site_files("never fetched")))
        instance.work()
        failed = instance.store.job(failed.id)
        assert failed.state is JobState.FAILED and "token refused: 127.0.0.1 does not accept" in failed.error
        failed_log = "\n".join(instance.events(failed.id)) + failed.error
        assert wrong["SITE_REPO_TOKEN"] not in failed_log and token not in failed_log
        log = "\n".join(instance.events(job.id))
        for text in (log, (tmp_path / "serve.log").read_text(), job.error or ""):
            assert token not in text
        assert token_server.leaks == [], "the token was in a command line"
    finally:
        instance.cleanup()
