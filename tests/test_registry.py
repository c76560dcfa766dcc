"""Images built elsewhere: `deploy --image`, the registry's push notifications at /hooks/APP, and
the digests a job carries. The parts that need no engine run on a Flask test client and a real
SQLite store; the registry itself is tested in the module's Docker tests.
"""

from __future__ import annotations

import pytest

from hookdeploy import actions
from hookdeploy.core.config import load
from hookdeploy.core.errors import BadInput
from hookdeploy.core.models import Trigger
from hookdeploy.web.receiver import NOT_ACCEPTED
from test_registry_events import EVENTS_TYPE, MANIFEST_V2, envelope, registry_event

TOKEN = "Bearer registry-says-this"
DIGEST = "sha256:" + "5e" * 32


@pytest.fixture
def image_config(write_config, state_dir, monkeypatch):
    monkeypatch.setenv("API_REGISTRY_TOKEN", TOKEN)
    monkeypatch.setenv("HOOKDEPLOY_SECRET", "s" * 32)
    text = (f'[server]\nstate_dir = "{state_dir}"\n\n'
            '[apps.api]\nimage = "registry.example.com:5000/team/api"\n'
            '[apps.api.webhook]\nprovider = "registry"\nsecret_env = "API_REGISTRY_TOKEN"\ntag = "stable"\n\n'
            '[apps.site]\nrepo = "/srv/git/site.git"\nhostnames = ["site.example"]\n')
    return load(write_config(text))


@pytest.fixture
def client(image_config, store):
    from hookdeploy.web.app import create_app

    return create_app(image_config, store).test_client()


def notify(client, body: bytes, authorization: str | None = TOKEN):
    headers = {"Content-Type": EVENTS_TYPE}
    if authorization is not None:
        headers["Authorization"] = authorization
    return client.post("/hooks/api", data=body, headers=headers)


def test_a_push_of_the_deploy_tag_queues_its_digest_once(client, store):
    body = envelope(registry_event(repository="team/api", tag="stable", digest=DIGEST, media_type=MANIFEST_V2))
    answer = notify(client, body)
    assert answer.status_code == 202, answer.get_data(as_text=True)
    job = store.job(answer.get_json()["job"])
    assert (job.app, job.sha, job.digest, job.ref, job.trigger) == ("api", "5e" * 20, DIGEST, "stable", Trigger.WEBHOOK)
    assert job.to_json()["digest"] == DIGEST
    again = notify(client, body)
    assert (again.status_code, again.get_json()) == (200, {"duplicate": job.id})
    assert len(store.jobs("api")) == 1


@pytest.mark.parametrize("event, reason", [
    (registry_event("pull", repository="team/api", tag="stable", digest=DIGEST, media_type=MANIFEST_V2),
     "pull of team/api"),
    (registry_event(repository="team/api", tag="latest", digest=DIGEST, media_type=MANIFEST_V2),
     "tag latest is not the deploy tag stable"),
    (registry_event(repository="other/api", tag="stable", digest=DIGEST, media_type=MANIFEST_V2),
     "repository other/api is not team/api"),
])
def test_what_is_not_a_push_of_the_tag_is_answered_200_and_queues_nothing(client, store, event, reason):
    answer = notify(client, envelope(event))
    assert (answer.status_code, answer.get_json()) == (200, {"ignored": reason})
    assert store.jobs("api") == []


@pytest.mark.parametrize("authorization", [None, "Bearer wrong", TOKEN + " "])
def test_a_notification_without_the_configured_authorization_is_refused(client, store, authorization, caplog):
    body = envelope(registry_event(repository="team/api", tag="stable", digest=DIGEST, media_type=MANIFEST_V2))
    with caplog.at_level("INFO", logger="hookdeploy.web.receiver"):
        answer = notify(client, body, authorization)
    assert answer.status_code == 401 and answer.get_json()["error"] == NOT_ACCEPTED
    assert any("Authorization header" in line for line in caplog.messages)  # the reason is the server's log's
    assert store.jobs("api") == []


def test_malformed_notifications_get_one_line_and_no_job(client, store):
    for body in (b"{", b"[]", b'{"events": 3}'):
        answer = notify(client, body)
        assert answer.status_code == 400 and "\n" not in answer.get_json()["error"]
    assert store.jobs("api") == []


def test_deploy_image_by_digest_pins_it_and_replay_finds_it_again(image_config, store):
    app = image_config.app("api")
    job = actions.deploy_image(image_config, store, app, "@" + DIGEST)
    assert (job.sha, job.digest, job.ref, job.trigger) == ("5e" * 20, DIGEST, None, Trigger.MANUAL)
    replayed = actions.replay_sha(image_config, store, app, "5e5e5e5e")
    assert (replayed.sha, replayed.digest, replayed.trigger) == (job.sha, DIGEST, Trigger.REPLAY)
    with pytest.raises(BadInput, match="matches none"):
        actions.replay_sha(image_config, store, app, "abcdef12")


@pytest.mark.parametrize("image, problem", [
    ("", "the image is empty"), ("@sha256:abc", "is not an image digest"), ("a b", "is not a valid image tag"),
])
def test_deploy_image_refuses_bad_input_and_queues_nothing(image_config, store, image, problem):
    with pytest.raises(BadInput, match=problem):
        actions.deploy_image(image_config, store, image_config.app("api"), image)
    assert store.jobs("api") == []


def test_image_and_ref_belong_to_their_kind_of_app(image_config, store, invoke):
    with pytest.raises(BadInput, match="built from git"):
        actions.deploy_image(image_config, store, image_config.app("site"), "@" + DIGEST)
    with pytest.raises(BadInput, match="not git refs"):
        actions.deploy_ref(image_config, store, image_config.app("api"), "main")
    result = invoke("init-repo", "api", config=image_config.path)
    assert result.exit_code == 2 and "image app" in result.stderr
    result = invoke("deploy", "api", "--ref", "x", "--image", "v1", config=image_config.path)
    assert result.exit_code == 2 and "not both" in result.stderr
    assert store.jobs() == []


def test_a_tag_cannot_be_resolved_without_the_engine_and_the_api_says_retry(client, store, monkeypatch):
    from hookdeploy.core import tokens

    monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent/docker.sock")
    token = tokens.issue(b"s" * 32, store, "deploy", 60)
    answer = client.post("/api/apps/api/deploy", json={"image": "v1"}, headers={"Authorization": f"Bearer {token}"})
    assert answer.status_code == 503 and answer.headers["Retry-After"].isdigit()
    assert answer.get_json()["error"].startswith("the Docker engine does not answer")
    by_digest = client.post("/api/apps/api/deploy", json={"image": "@" + DIGEST},
                            headers={"Authorization": f"Bearer {token}"})
    assert by_digest.status_code == 202 and store.job(by_digest.get_json()["id"]).digest == DIGEST


def test_push_progress_says_each_layer_state_once_and_a_stalled_engine_fails_the_job():
    import urllib3.exceptions

    from hookdeploy.core.errors import DockerUnavailable, StepFailed
    from hookdeploy.engine import registry

    chunks = [{"status": "The push refers to repository [127.0.0.1:5000/n/site]"},
              {"status": "Preparing", "id": "abc"}, {"status": "Retrying in 5 seconds", "id": "abc"},
              {"status": "Retrying in 4 seconds", "id": "abc"}, {"status": "Retrying in 3 seconds", "id": "abc"},
              {"status": "Pushed", "id": "abc"}, {"status": f"0123456789ab: digest: {DIGEST} size: 528"},
              {"progressDetail": {}, "aux": {"Tag": "0123456789ab", "Digest": DIGEST, "Size": 528}}]
    lines: list[str] = []
    assert registry._follow(iter(chunks), lines.extend) == {"digest": DIGEST}
    assert lines == ["The push refers to repository [127.0.0.1:5000/n/site]", "abc: Preparing",
                     "abc: Retrying in 5 seconds", "abc: Pushed", f"0123456789ab: digest: {DIGEST} size: 528"]
    refused = [{"status": "Preparing", "id": "abc"},
               {"errorDetail": {"message": "unauthorized: authentication required"}, "error": "unauthorized: ..."}]
    assert registry._follow(iter(refused), lines.extend) == {"error": "unauthorized: authentication required"}
    stalled = registry._silent_engine("push", urllib3.exceptions.ReadTimeoutError(None, "/images/push", "timed out"))
    assert isinstance(stalled, StepFailed) and str(stalled) == f"the push made no progress for {registry.TRANSFER_TIMEOUT} s"
    assert isinstance(registry._silent_engine("pull", ConnectionResetError("reset")), DockerUnavailable)


# -- against a real registry and a real engine --------------------------------------------------------

import json  # noqa: E402
import time  # noqa: E402

from docker_helpers import site_files  # noqa: E402
from hookdeploy.core.models import JobState  # noqa: E402
from registry_helpers import Registry  # noqa: E402
from webhook_helpers import Server  # noqa: E402


def serving(instance) -> str:
    """What the proxy answers at /, or "" while there is no proxy yet."""
    try:
        return instance.get().body
    except OSError:
        return ""


def registry_table(registry: Registry) -> str:
    return (f'[registry]\nurl = "{registry.url}"\nusername = "{registry.username}"\n'
            'password_env = "REGISTRY_PASSWORD"\ninsecure = true\n')


def build_elsewhere(client, registry: Registry, root, version: str, tag: str, revision: str = "") -> str:
    """What CI does: build a site image and push it as team/api:TAG; return the digest the registry has."""
    context = root / f"ci-{version}"
    for name, text in site_files(version).items():
        (context / name).parent.mkdir(parents=True, exist_ok=True)
        (context / name).write_text(text)
    labels = {"org.opencontainers.image.revision": revision} if revision else {}
    client.images.build(path=str(context), tag=f"{registry.url}/team/api:{tag}", labels=labels, rm=True)
    lines = list(client.images.push(f"{registry.url}/team/api", tag, auth_config=registry.auth_config,
                                    stream=True, decode=True))
    assert not any("error" in line for line in lines), lines
    return registry.manifest_digest("team/api", tag)


@pytest.fixture
def pushing(instance, registry, monkeypatch):
    """An instance whose app `site` pushes each release to a real registry (right password set)."""
    monkeypatch.setenv("REGISTRY_PASSWORD", registry.password)
    instance.configure({"site": {"push": True}}, extra=registry_table(registry))
    yield instance
    registry.remove_local_tags(instance.client)


def test_push_true_puts_each_release_in_the_registry_with_its_digest(pushing, registry):
    job = pushing.deploy("site", site_files("v1"))
    assert job.state is JobState.SUCCEEDED, pushing.events(job.id)
    repository = f"{pushing.name}/site"
    assert registry.tags(repository) == [job.sha[:12]]
    assert job.digest == registry.manifest_digest(repository, job.sha[:12])
    assert pushing.store.live_release("site").digest == job.digest
    events = pushing.events(job.id)
    assert f"pushed {registry.url}/{repository}:{job.sha[:12]} ({job.digest})" in events
    assert any(": Pushed" in line or "Layer already exists" in line for line in events), events
    assert registry.password not in "\n".join(events)
    assert registry.local_tags(pushing.client) == []  # the registry keeps the release, not a second local name
    assert "v1" in pushing.get().body
    history = json.loads(pushing.cli("history", "site", "--json").stdout)
    assert history[0]["digest"] == job.digest


def test_a_refused_or_absent_registry_fails_the_job_before_the_switch(pushing, registry, monkeypatch):
    first = pushing.deploy("site", site_files("v1"))
    assert first.state is JobState.SUCCEEDED, pushing.events(first.id)
    monkeypatch.setenv("REGISTRY_PASSWORD", "not-the-password")
    refused = pushing.deploy("site", site_files("v2"))
    assert refused.state is JobState.FAILED
    assert refused.error.startswith(f"push to {registry.url} failed: ") and "unauthorized" in refused.error
    assert "not-the-password" not in "\n".join(pushing.events(refused.id))
    assert "v1" in pushing.get().body and pushing.container_names() == pushing.expected_containers("site")

    monkeypatch.setenv("REGISTRY_PASSWORD", registry.password)
    registry.stop()
    down = pushing.deploy("site", site_files("v3"))
    assert down.state is JobState.FAILED and down.error.startswith(f"push to {registry.url} failed: "), down.error
    assert "v1" in pushing.get().body and pushing.container_names() == pushing.expected_containers("site")
    assert pushing.store.live_release("site").sha == first.sha


def test_an_image_built_elsewhere_is_deployed_by_tag_pinned_by_digest(instance, registry, tmp_path, monkeypatch):
    monkeypatch.setenv("REGISTRY_PASSWORD", registry.password)
    digest = build_elsewhere(instance.client, registry, tmp_path, "ci-v1", "v1", revision="ab" * 20)
    instance.configure({"api": {"image": f"{registry.url}/team/api"}}, extra=registry_table(registry))
    try:
        queued = instance.cli("deploy", "api", "--image", "v1", "--json")
        assert queued.returncode == 0, queued.stderr
        job = json.loads(queued.stdout)
        assert (job["digest"], job["ref"], job["sha"]) == (digest, "v1", digest[7:47])
        build_elsewhere(instance.client, registry, tmp_path, "ci-v2", "v1")  # the tag moves on: the job does not
        instance.work()
        done = instance.store.job(job["id"])
        assert done.state is JobState.SUCCEEDED, instance.events(done.id)
        assert "ci-v1" in instance.get().body
        assert any(line.startswith(f"pulled {registry.url}/team/api@{digest[:19]}") for line in instance.events(done.id))
        assert instance.store.live_release("api").digest == digest
        assert digest in instance.cli("status", "api").stdout
        assert f"built from commit {'ab' * 20} (org.opencontainers.image.revision)" in instance.events(done.id)

        by_digest = instance.cli("deploy", "api", "--image", "@" + registry.manifest_digest("team/api", "v1"))
        assert by_digest.returncode == 0, by_digest.stderr
        instance.work()
        assert "ci-v2" in instance.get().body
        back = instance.cli("rollback", "api")
        assert back.returncode == 0, back.stderr
        instance.work()
        assert "ci-v1" in instance.get().body
    finally:
        registry.remove_local_tags(instance.client)


def test_the_registrys_notification_deploys_the_pushed_digest(instance, registry, tmp_path, monkeypatch):
    token = "Bearer from-the-registry"
    env = {"REGISTRY_PASSWORD": registry.password, "API_REGISTRY_TOKEN": token, "HOOKDEPLOY_SECRET": "s" * 32}
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    instance.configure({"api": {"image": f"{registry.url}/team/api",
                                "webhook": {"provider": "registry", "secret_env": "API_REGISTRY_TOKEN",
                                            "tag": "stable"}}},
                       extra=registry_table(registry))
    port = int(instance.config.server.listen.rpartition(":")[2])
    registry.notify_to(f"http://127.0.0.1:{port}/hooks/api", token)
    server = Server(instance.config_path, port, tmp_path / "serve.log", worker=True, env=env).start()
    try:
        build_elsewhere(instance.client, registry, tmp_path, "ci-v1", "v1")  # not the deploy tag: ignored
        digest = build_elsewhere(instance.client, registry, tmp_path, "ci-v2", "stable")
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and "ci-v2" not in serving(instance):
            time.sleep(0.2)
        assert "ci-v2" in serving(instance), (tmp_path / "serve.log").read_text()[-3000:]
        while time.monotonic() < deadline and not all(job.state.finished for job in instance.store.jobs("api")):
            time.sleep(0.1)  # live before the job ends: the old release drains first
        jobs = instance.store.jobs("api")
        assert [(job.trigger.value, job.digest, job.state) for job in jobs] == [("webhook", digest, JobState.SUCCEEDED)]
    finally:
        server.stop()
        registry.remove_local_tags(instance.client)
