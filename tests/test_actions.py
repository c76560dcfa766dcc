"""The service layer on its own (no click, no Flask), and the doors agreeing because they use it:
the CLI, the API and the dashboard resolve refs, pick rollback targets and refuse the same way.
"""

from __future__ import annotations

import json

import pytest

from hookdeploy import actions
from hookdeploy.core.config import load
from hookdeploy.core.errors import BadInput, UnknownApp, UnknownJob
from hookdeploy.core.models import JobKind, Trigger
from conftest import ZERO_SHA, fake_sha


@pytest.fixture
def config(site_config):
    return load(site_config)


def test_deploy_ref_defaults_to_the_branch_and_refuses_an_empty_ref(config, store, pushed_clone):
    app = actions.find_app(config, "site")
    job = actions.deploy_ref(config, store, app)
    assert (job.sha, job.ref, job.trigger) == (pushed_clone.head(), "deploy", Trigger.MANUAL)
    for empty in ("", "  "):
        with pytest.raises(BadInput) as refused:
            actions.deploy_ref(config, store, app, empty)
        assert str(refused.value) == "the ref is empty; leave it out to deploy site's branch (deploy)"
    assert [queued.id for queued in store.jobs("site")] == [job.id]


def test_the_cli_and_the_api_refuse_an_empty_ref_with_the_same_words(invoke, site_config, pushed_clone, store,
                                                                     monkeypatch):
    said = "the ref is empty; leave it out to deploy site's branch (deploy)"
    result = invoke("deploy", "site", "--ref", "", config=site_config)
    assert result.exit_code == 2 and result.stdout == ""
    assert result.stderr == f"hookdeploy: error: {said}\n"

    from hookdeploy.core import tokens
    from hookdeploy.web.app import create_app

    monkeypatch.setenv("HOOKDEPLOY_SECRET", "s" * 32)
    token = tokens.issue(b"s" * 32, store, "deploy", 60)
    client = create_app(load(site_config), store).test_client()
    response = client.post("/api/apps/site/deploy", json={"ref": " "}, headers={"Authorization": f"Bearer {token}"})
    assert (response.status_code, response.get_json()) == (400, {"error": said})
    assert store.jobs("site") == []


def test_replay_needs_a_well_formed_sha_prefix(config, store, pushed_clone):
    app = config.app("site")
    first = pushed_clone.head("HEAD~2")
    assert actions.replay_sha(config, store, app, first[:7]).sha == first
    for bad in ("", "abc", "g" * 7, "HEAD"):
        with pytest.raises(BadInput):
            actions.replay_sha(config, store, app, bad)
    assert len(store.jobs("site")) == 1


def test_rollback_goes_to_the_newest_earlier_release_or_the_one_named(config, store):
    app = config.app("site")
    with pytest.raises(BadInput, match="no earlier release"):
        actions.rollback(store, app)
    shas = {letter: letter * 40 for letter in "abc"}
    for letter, sha in shas.items():
        job = store.enqueue("site", sha, trigger=Trigger.PUSH)
        store.record_live("site", sha, f"image-{letter}", f"container-{letter}", job.id)
    assert actions.rollback_target(store, "site", None) == shas["b"]
    assert actions.rollback_target(store, "site", "aaaaaaa") == shas["a"]
    with pytest.raises(BadInput, match="already live"):
        actions.rollback_target(store, "site", shas["c"])
    with pytest.raises(BadInput, match="never a release"):
        actions.rollback_target(store, "site", "abcdef12")
    job = actions.rollback(store, app)
    assert (job.sha, job.kind, job.trigger) == (shas["b"], JobKind.ROLLBACK, Trigger.ROLLBACK)
    status = actions.app_status(store, "site")
    assert status.can_roll_back and status.live.sha == shas["c"] and status.queued == 1


def test_pushes_queue_only_the_deploy_branch(config, store):
    app = config.app("site")
    sha = fake_sha(7)
    assert actions.ignored_push(app, "refs/heads/other", sha) == "refs/heads/other: site deploys refs/heads/deploy"
    assert actions.ignored_push(app, "refs/heads/deploy", ZERO_SHA).startswith("deletion of refs/heads/deploy")
    assert "not a valid ref name" in actions.ignored_push(app, "refs/heads/a..b", sha)
    with pytest.raises(BadInput):
        actions.queue_push(store, app, "refs/tags/v1", sha)
    job = actions.queue_push(store, app, "refs/heads/deploy", sha)
    assert (job.sha, job.trigger, job.ref) == (sha, Trigger.PUSH, "refs/heads/deploy")


def test_looking_up_apps_and_jobs(config, store):
    with pytest.raises(UnknownApp):
        actions.find_app(config, "nope")
    with pytest.raises(BadInput):
        actions.find_app(config, "../etc")
    with pytest.raises(UnknownJob, match="no job 5"):
        actions.job_log(store, 5)
    job = store.enqueue("site", fake_sha(1), trigger=Trigger.MANUAL)
    found, events = actions.job_log(store, job.id)
    assert found.id == job.id and [event.kind for event in events] == ["state"]
    assert [status.to_json() for status in actions.status(config, store)] == [
        {"live": None, "queued": 1, "running": None, "stopped": False, "previews": {}}]
    assert json.dumps(actions.status(config, store, "site")[0].to_json())
