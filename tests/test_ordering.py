"""An old commit never replaces a newer one: a job a push asked for deploys its commit only while it is
the head of the branch (after the fetch), and a webhook never puts an older commit or image back.

The rules (engine/ordering.py) on a real git repo and a real store first; then end to end, as a
forge does it: signed deliveries to a real `hookdeploy serve`, a clone URL fetched by the worker,
real containers behind the real proxy, a late delivery of v1 after v2 went live.
"""

from __future__ import annotations

import git as gitpython
import pytest

from hookdeploy.core.config import AppConfig
from hookdeploy.core.models import JobKind, JobState, Trigger
from hookdeploy.engine import ordering
from webhook_helpers import git, make_repo, release

# -- the rules, on a real repo and store ---------------------------------------------------------------


@pytest.fixture
def repo(tmp_path):
    """A bare repo whose `deploy` branch has three commits (oldest first) and an `other` branch."""
    bare, shas = make_repo(tmp_path)
    return gitpython.Repo(bare), shas


SITE = AppConfig(name="site", repo="/unused", branch="deploy")


def job_of(store, sha: str, trigger: Trigger = Trigger.WEBHOOK):
    return store.enqueue("site", sha, trigger=trigger, ref="refs/heads/deploy", coalesce=False)


def test_the_head_of_the_branch_may_go_live(store, repo):
    bare, shas = repo
    assert ordering.stale_commit(store, SITE, job_of(store, shas[2]), bare, Trigger.WEBHOOK) is None


@pytest.mark.parametrize("trigger", [Trigger.WEBHOOK, Trigger.PUSH])
def test_a_commit_that_is_not_the_head_any_more_is_superseded_naming_the_head(store, repo, trigger):
    bare, shas = repo
    why = ordering.stale_commit(store, SITE, job_of(store, shas[0], trigger), bare, trigger)
    assert why == f"not the head of deploy any more (head is {shas[2][:12]})"


def test_a_commit_of_another_branch_is_not_the_head(store, repo):
    bare, shas = repo
    other = bare.git.rev_parse("refs/heads/other")
    assert ordering.stale_commit(store, SITE, job_of(store, other), bare, Trigger.WEBHOOK).startswith(
        "not the head of deploy any more")


def test_a_deleted_branch_deploys_nothing(store, repo):
    bare, shas = repo
    bare.git.update_ref("-d", "refs/heads/deploy")
    assert ordering.stale_commit(store, SITE, job_of(store, shas[2]), bare, Trigger.WEBHOOK) == \
        "branch deploy does not exist any more"


def test_a_webhook_never_deploys_an_ancestor_of_the_live_release(store, repo):
    bare, shas = repo
    release(store, "site", shas[2])
    bare.git.update_ref("refs/heads/deploy", shas[0])  # force-pushed back: the head is the old commit
    why = ordering.stale_commit(store, SITE, job_of(store, shas[0]), bare, Trigger.WEBHOOK)
    assert why == (f"{shas[0][:12]} is older than the live release {shas[2][:12]} (its ancestor); a webhook never "
                   f"deploys an older commit (hookdeploy replay site {shas[0][:12]} does)")


def test_a_push_through_the_hook_may_go_back_a_person_pushed_it(store, repo):
    bare, shas = repo
    release(store, "site", shas[2])
    bare.git.update_ref("refs/heads/deploy", shas[0])  # git push -f production OLD:deploy
    assert ordering.stale_commit(store, SITE, job_of(store, shas[0], Trigger.PUSH), bare, Trigger.PUSH) is None


def test_the_live_commit_itself_is_not_older_than_itself(store, repo):
    bare, shas = repo
    release(store, "site", shas[2])
    assert ordering.stale_commit(store, SITE, job_of(store, shas[2]), bare, Trigger.WEBHOOK) is None


def test_a_webhook_does_not_undo_a_rollback(store, repo):
    """v2 went live, a person rolled back to v1; a late delivery of v2 (the branch head) must not bring it back."""
    bare, shas = repo
    release(store, "site", shas[1])
    release(store, "site", shas[2])
    release(store, "site", shas[1])  # the rollback (job 3)
    why = ordering.stale_commit(store, SITE, job_of(store, shas[2]), bare, Trigger.WEBHOOK)
    assert why == (f"{shas[2][:12]} was live before {shas[1][:12]} (job 2); a webhook never brings back "
                   f"an older commit (hookdeploy replay site {shas[2][:12]} does)")


def test_a_retry_follows_the_branch_when_the_job_it_retries_did(store, repo):
    bare, shas = repo
    first = job_of(store, shas[0])
    assert store.claim("w").id == first.id
    _, retry = store.interrupt(first.id, "the worker died")
    assert retry.trigger is Trigger.RETRY
    assert ordering.origin(store, retry) is Trigger.WEBHOOK
    assert store.claim("w").id == retry.id
    _, again = store.interrupt(retry.id, "died again")
    assert ordering.origin(store, again) is Trigger.WEBHOOK
    replayed = store.enqueue("site", shas[0], trigger=Trigger.REPLAY)
    assert ordering.origin(store, replayed) is Trigger.REPLAY


def test_an_image_deploys_only_while_its_tag_points_at_it(store):
    api = AppConfig(name="api", image="registry.example.com:5000/team/api")
    digests = ["sha256:" + digit * 64 for digit in "12"]
    jobs = [store.enqueue("api", digest[7:47], trigger=Trigger.WEBHOOK, ref="stable", digest=digest, coalesce=False)
            for digest in digests]
    assert ordering.stale_image(store, api, jobs[1], "stable", digests[1]) is None
    assert ordering.stale_image(store, api, jobs[0], "stable", digests[1]) == (
        f"not the newest push of registry.example.com:5000/team/api:stable any more (the tag is {digests[1][:19]})")


def test_an_image_that_was_live_before_is_not_brought_back_by_a_notification(store):
    api = AppConfig(name="api", image="registry.example.com:5000/team/api")
    old, new = "1" * 40, "2" * 40
    release(store, "api", old)
    release(store, "api", new)
    late = store.enqueue("api", old, trigger=Trigger.WEBHOOK, ref="stable", digest="sha256:" + "1" * 64)
    why = ordering.stale_image(store, api, late, "stable", "sha256:" + "1" * 64)  # the tag was pushed back to it
    assert why.startswith(f"{old[:12]} was live before {new[:12]}") and "never brings back an older image" in why


def test_the_pusher_is_told_why_and_that_the_live_release_is_unchanged(store, repo, capsys):
    from hookdeploy.cli.follow import follow_push

    bare, shas = repo
    release(store, "site", shas[2])
    job = job_of(store, shas[1], Trigger.PUSH)
    store.claim("w")
    store.finish(job.id, JobState.SUPERSEDED, f"not the head of deploy any more (head is {shas[2][:12]})")
    assert follow_push(store, job, "http://site.example").state is JobState.SUPERSEDED
    assert capsys.readouterr().out.splitlines() == [
        f"-----> superseded: not the head of deploy any more (head is {shas[2][:12]})",
        f"-----> live release unchanged: {shas[2][:7]}"]


# -- end to end: a forge's late delivery, a real serve, worker, engine and proxy ------------------------

from docker_helpers import Repo, site_files  # noqa: E402
from webhook_helpers import SECRETS, Server, free_port, push_body, request, signed_headers  # noqa: E402


def deliver(port: int, sha: str, delivery: str):
    """POST a signed GitHub push of `sha` to deploy, with delivery id `delivery`: (status, JSON)."""
    body = push_body("github", sha)
    headers = signed_headers("github", SECRETS["SITE_SECRET"], body, delivery=delivery)
    status, answer, _ = request(port, "POST", "/hooks/site", body, headers)
    return status, answer


@pytest.fixture
def forge_site(instance, tmp_path):
    """An instance whose app `site` deploys from a clone URL (the forge: a bare repo), with GitHub webhooks,
    and `hookdeploy serve --no-worker` answering them on a free port: (instance, forge repo, port)."""
    forge = Repo.create(tmp_path / "forge")
    port = free_port()
    instance.configure({"site": {"repo": f"file://{forge.bare}",
                                 "webhook": {"provider": "github", "secret_env": "SITE_SECRET"}}})
    text = instance.config_path.read_text()
    instance.config_path.write_text(text.replace(instance.config.server.listen, f"127.0.0.1:{port}"))
    with Server(instance.config_path, port, tmp_path / "serve.log"):
        yield instance, forge, port


def test_a_late_delivery_of_v1_after_v2_leaves_v2_live(forge_site, monkeypatch):
    instance, forge, port = forge_site
    for name, value in SECRETS.items():
        monkeypatch.setenv(name, value)
    v1 = forge.commit(site_files("v1"))
    v2 = forge.commit(site_files("v2"))

    assert deliver(port, v2, "delivery-v2") == (202, {"job": 1})
    instance.work()
    assert instance.store.job(1).state is JobState.SUCCEEDED, instance.events(1)
    assert "v2" in instance.get().body

    # GitHub retries v1's delivery late; a replay of it under a new id (the id is not signed) alike
    for number, delivery in ((2, "delivery-v1"), (3, "delivery-v1-replayed")):
        assert deliver(port, v1, delivery) == (202, {"job": number})
        instance.work()
        late = instance.store.job(number)
        assert (late.state, late.error) == (JobState.SUPERSEDED, f"not the head of deploy any more (head is {v2[:12]})")
        assert f"checked: not the head of deploy any more (head is {v2[:12]})" in instance.events(number)
        answer = instance.get()
        assert (answer.release, "v2" in answer.body) == (v2[:12], True)
    assert deliver(port, v2, "delivery-v2") == (200, {"duplicate": 1})
    assert instance.store.live_release("site").sha == v2
    assert instance.container_names() == instance.expected_containers("site")  # nothing was started for v1

    # the forge's branch forced back to v1: the head now, but older than what is live
    git("push", "-q", "-f", "production", f"{v1}:refs/heads/deploy", cwd=forge.work)
    assert deliver(port, v1, "delivery-forced-back") == (202, {"job": 4})
    instance.work()
    assert instance.store.job(4).state is JobState.SUPERSEDED
    assert instance.store.job(4).error.startswith(f"{v1[:12]} is older than the live release {v2[:12]}")
    assert instance.get().release == v2[:12]

    # a person may go back: replay is not a webhook
    replayed = instance.cli("replay", "site", v1[:12])
    assert replayed.returncode == 0, replayed.stdout + replayed.stderr
    instance.work()
    assert instance.get().release == v1[:12]
    history = [(job.id, job.trigger, job.state) for job in instance.store.jobs("site")]
    assert history == [(5, Trigger.REPLAY, JobState.SUCCEEDED), (4, Trigger.WEBHOOK, JobState.SUPERSEDED),
                       (3, Trigger.WEBHOOK, JobState.SUPERSEDED), (2, Trigger.WEBHOOK, JobState.SUPERSEDED),
                       (1, Trigger.WEBHOOK, JobState.SUCCEEDED)]
    assert all(job.kind is JobKind.DEPLOY for job in instance.store.jobs("site"))


def test_a_late_registry_notification_never_brings_back_an_older_image(instance, registry, tmp_path, monkeypatch):
    from test_registry import build_elsewhere, registry_table
    from test_registry_events import EVENTS_TYPE, MANIFEST_V2, envelope, registry_event

    token = "Bearer from-the-registry"
    env = {"REGISTRY_PASSWORD": registry.password, "API_REGISTRY_TOKEN": token}
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    port = free_port()
    instance.configure({"api": {"image": f"{registry.url}/team/api",
                                "webhook": {"provider": "registry", "secret_env": "API_REGISTRY_TOKEN",
                                            "tag": "stable"}}},
                       extra=registry_table(registry))
    text = instance.config_path.read_text()
    instance.config_path.write_text(text.replace(instance.config.server.listen, f"127.0.0.1:{port}"))

    def notify(digest: str, number: int) -> int:
        event = registry_event(repository="team/api", tag="stable", digest=digest, media_type=MANIFEST_V2,
                               number=number)
        status, answer, _ = request(port, "POST", "/hooks/api", envelope(event),
                                    {"Content-Type": EVENTS_TYPE, "Authorization": token})
        assert status == 202, answer
        instance.work()
        return answer["job"]

    repository = f"{registry.url}/team/api"
    try:
        with Server(instance.config_path, port, tmp_path / "serve.log", env=env):
            first = build_elsewhere(instance.client, registry, tmp_path, "ci-v1", "stable")
            instance.client.images.get(f"{repository}:stable").tag(repository, tag="kept-v1")
            assert instance.store.job(notify(first, 1)).state is JobState.SUCCEEDED
            second = build_elsewhere(instance.client, registry, tmp_path, "ci-v2", "stable")
            assert instance.store.job(notify(second, 2)).state is JobState.SUCCEEDED
            assert "ci-v2" in instance.get().body

            late = instance.store.job(notify(first, 3))  # v1's notification, retried by the registry late
            assert (late.state, late.error) == (
                JobState.SUPERSEDED, f"not the newest push of {repository}:stable any more (the tag is {second[:19]})")
            assert "ci-v2" in instance.get().body

            # CI pushes the v1 image as stable again: the tag's head, but a release older than the live one
            registry.push(instance.client, f"{repository}:kept-v1", "team/api", "stable")
            assert registry.manifest_digest("team/api", "stable") == first
            back = instance.store.job(notify(first, 4))
            assert back.state is JobState.SUPERSEDED
            assert back.error.startswith(f"{first[7:19]} was live before {second[7:19]} (job 1)"), back.error
            assert "ci-v2" in instance.get().body
    finally:
        registry.remove_local_tags(instance.client)
