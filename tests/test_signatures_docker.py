"""Signed commits only, with Docker (issue 26 item 2): a commit signed by an allowed key goes live and its
signer is recorded; once the key is taken out of the file, a rollback to that release fails before anything
starts and the live release serves on; an unsigned commit replayed is never built. One instance for the
module: the two tests follow each other."""

from __future__ import annotations

import json

import pytest

from docker_helpers import Instance, git, site_files
from hookdeploy import actions
from hookdeploy.core.models import JobKind, JobState
from test_signatures import SshKey, allow


@pytest.fixture(scope="module")
def signed(docker_engine, tmp_path_factory):
    """An instance whose app `site` deploys only commits signed by alice; her work clone signs every commit."""
    root = tmp_path_factory.mktemp("signed")
    alice = SshKey(root, "alice")
    allowed = allow(root / "allowed_signers", ("alice@example.com", alice))
    made = Instance(root, docker_engine)
    try:
        made.configure({"site": {"signatures": {"allowed_signers": str(allowed)}}})
        work = made.repos["site"].work
        for key, value in (("gpg.format", "ssh"), ("user.signingkey", str(alice.path)), ("commit.gpgsign", "true")):
            git("config", key, value, cwd=work)
        yield made, alice, allowed
    finally:
        made.cleanup()


def test_a_signed_commit_goes_live_and_history_names_its_signer(signed):
    made, alice, _ = signed
    job = made.deploy("site", site_files("v1"))
    assert job.state is JobState.SUCCEEDED, job.error
    assert "v1" in made.get("/").body
    history = made.cli("history", "site", "--json")
    assert history.returncode == 0, history.stderr
    assert json.loads(history.stdout)[0]["signer"] == {"fingerprint": alice.fingerprint,
                                                       "principal": "alice@example.com"}


def test_a_removed_key_stops_a_rollback_and_an_unsigned_replay_builds_nothing(signed):
    made, alice, allowed = signed
    first = made.store.live_release("site")
    assert first is not None, "runs after the test above"
    second = made.deploy("site", site_files("v2"))
    assert second.state is JobState.SUCCEEDED, second.error
    containers = made.container_names()

    allow(allowed)  # alice's key taken out
    rollback = actions.rollback(made.store, made.config.apps["site"])
    assert (rollback.kind, rollback.sha) == (JobKind.ROLLBACK, first.sha)
    made.work()
    rollback = made.store.job(rollback.id)
    why = f"signed with SSH key {alice.fingerprint}, which allowed_signers does not list"
    assert (rollback.state, rollback.error) == (
        JobState.FAILED, f"commit {first.sha[:12]} is not signed by an allowed key ({why})")
    assert made.store.live_release("site").sha == second.sha and "v2" in made.get("/").body
    assert made.container_names() == containers  # no candidate was started

    images = made.images()
    unsigned = made.repos["site"]
    git("config", "commit.gpgsign", "false", cwd=unsigned.work)
    sha = made.commit("site", site_files("v3"))
    replay = made.store.enqueue("site", sha)
    made.work()
    replay = made.store.job(replay.id)
    assert (replay.state, replay.error) == (
        JobState.FAILED, f"commit {sha[:12]} is not signed by an allowed key (it has no signature)")
    assert made.images() == images and not any(sha[:12] in image for image in images)  # nothing was built
