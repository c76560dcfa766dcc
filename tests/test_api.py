"""The JSON API: bearer tokens and their scopes, looking at apps and jobs, and queueing deploys,
replays and rollbacks resolved against a real git repo, as the CLI resolves them."""

from __future__ import annotations

import time

import pytest

from hookdeploy.core import tokens
from hookdeploy.core.models import JobKind, JobState, Trigger
from webhook_helpers import API_SECRET as SECRET, request


@pytest.fixture
def api(web_app):
    """The Flask app on a real repo and store: web_app.call() is one API request."""
    return web_app


# -- tokens and scopes ---------------------------------------------------------------------------


def test_missing_bad_and_foreign_tokens_are_401(api):
    genuine = tokens.create(SECRET, "deploy")
    payload, timestamp, signature = genuine.split(".")
    for header in (None, "", "Bearer", "Bearer ", f"Basic {genuine}", f"Token {genuine}", "Bearer garbage",
                   f"Bearer {payload}.{timestamp}.{signature[::-1]}", f"Bearer {tokens.create(b'old secret', 'deploy')}"):
        headers = {"Authorization": header} if header is not None else {}
        for method, path in (("GET", "/api/apps"), ("POST", "/api/apps/site/deploy")):
            response = api.client.open(path, method=method, headers=headers)
            assert response.status_code == 401, (header, path)
            assert response.headers["WWW-Authenticate"].startswith("Bearer")
            assert "token" in response.get_json()["error"]
    assert api.store.jobs() == []


@pytest.mark.slow
def test_expired_token_is_401(api):
    # itsdangerous stamps whole seconds, so a token lives between ttl - 1 and ttl seconds.
    token = api.token("read", ttl=3)
    assert api.call("GET", "/api/apps", token)[0] == 200
    time.sleep(3.2)
    status, answer = api.call("GET", "/api/apps", token)
    assert status == 401 and "expired" in answer["error"]


def test_read_scope_reads_and_cannot_enqueue(api, read_token):
    assert api.call("GET", "/api/apps", read_token)[0] == 200
    for path, body in (("deploy", {}), ("replay", {"sha": api.shas[0]}), ("rollback", {})):
        status, answer = api.call("POST", f"/api/apps/site/{path}", read_token, body)
        assert status == 403 and "deploy scope" in answer["error"]
    assert api.store.jobs() == []


def test_deploy_scope_includes_read(api, deploy_token):
    assert api.call("GET", "/api/apps", deploy_token)[0] == 200
    assert api.call("POST", "/api/apps/site/deploy", deploy_token)[0] == 202


def test_changing_the_server_secret_revokes_every_token(api, read_token, monkeypatch):
    assert api.call("GET", "/api/apps", read_token)[0] == 200
    monkeypatch.setenv("HOOKDEPLOY_SECRET", "a new server secret")
    assert api.call("GET", "/api/apps", read_token)[0] == 401
    assert api.call("GET", "/api/apps", tokens.issue(b"a new server secret", api.store, "read"))[0] == 200
    monkeypatch.delenv("HOOKDEPLOY_SECRET")
    status, answer = api.call("GET", "/api/apps", read_token)
    assert status == 503 and "server secret" in answer["error"]


# -- looking ------------------------------------------------------------------------------------------


def test_apps_jobs_and_logs(api, read_token):
    first = api.store.enqueue("site", api.shas[0], trigger=Trigger.MANUAL, ref="deploy", coalesce=False)
    second = api.store.enqueue("site", api.shas[1], trigger=Trigger.REPLAY, coalesce=False)
    status, apps = api.call("GET", "/api/apps", read_token)
    assert status == 200 and set(apps["apps"]) == {"site", "lab", "tea", "pinned", "plain"}
    assert apps["apps"]["site"] == {"live": None, "queued": 2, "running": None, "stopped": False, "previews": {}}

    status, jobs = api.call("GET", "/api/apps/site/jobs", read_token)
    assert status == 200 and [job["id"] for job in jobs] == [second.id, first.id]
    assert jobs[1] == first.to_json()
    assert api.call("GET", "/api/apps/site/jobs?limit=1", read_token)[1] == [second.to_json()]
    for bad in ("0", "-1", "x", "1001", "١"):
        assert api.call("GET", f"/api/apps/site/jobs?limit={bad}", read_token)[0] == 400
    assert api.call("GET", "/api/apps/lab/jobs", read_token) == (200, [])

    assert api.call("GET", f"/api/jobs/{first.id}", read_token) == (200, first.to_json())
    api.store.log(first.id, "building")
    status, log = api.call("GET", f"/api/jobs/{first.id}/log", read_token)
    assert status == 200 and log["job"]["id"] == first.id
    assert [event["message"] for event in log["events"]][-1] == "building"
    last = log["events"][-2]["id"]
    status, tail = api.call("GET", f"/api/jobs/{first.id}/log?after={last}", read_token)
    assert [event["message"] for event in tail["events"]] == ["building"]


def test_unknown_things_are_404(api, read_token):
    assert api.call("GET", "/api/apps/nosuch/jobs", read_token)[0] == 404
    assert api.call("GET", "/api/jobs/999", read_token)[0] == 404
    assert api.call("GET", "/api/jobs/999/log", read_token)[0] == 404
    assert api.call("GET", "/api/jobs/abc", read_token)[0] == 404
    assert api.call("GET", "/api/nothing", read_token)[0] == 404


# -- enqueueing ----------------------------------------------------------------------------------


def test_deploy_resolves_the_branch_or_a_ref(api, deploy_token):
    status, job = api.call("POST", "/api/apps/site/deploy", deploy_token)
    assert status == 202 and job["sha"] == api.shas[-1] and job["ref"] == "deploy"
    assert (job["kind"], job["trigger"], job["state"]) == ("deploy", "manual", "queued")
    assert api.store.job(job["id"]).to_json() == job
    status, other = api.call("POST", "/api/apps/site/deploy", deploy_token, {"ref": "other"})
    assert status == 202 and other["sha"] == api.other_sha
    status, full = api.call("POST", "/api/apps/site/deploy", deploy_token, {"ref": "refs/heads/deploy"})
    assert status == 202 and full["sha"] == api.shas[-1]


def test_bad_enqueue_input_is_400_and_queues_nothing(api, deploy_token):
    cases = [
        ("deploy", {"ref": "no-such-branch"}, "does not exist"),
        ("deploy", {"ref": "../../etc"}, "ref"),
        ("deploy", {"ref": 7}, "string"),
        ("deploy", {"branch": "deploy"}, "unknown field"),
        ("deploy", [], "object"),
        ("replay", {}, "required"),
        ("replay", {"sha": "xyz"}, "hexadecimal"),
        ("replay", {"sha": "0000000"}, "no commit"),
        ("rollback", {}, "no earlier release"),
        ("rollback", {"to": api.shas[0]}, "never a release"),
    ]
    for verb, body, reason in cases:
        status, answer = api.call("POST", f"/api/apps/site/{verb}", deploy_token, body)
        assert status == 400 and reason in answer["error"], (verb, body, answer)
    status, answer = api.call("POST", "/api/apps/site/deploy", deploy_token, raw=b"{not json")
    assert status == 400 and "JSON" in answer["error"]
    assert api.call("POST", "/api/apps/nosuch/deploy", deploy_token)[0] == 404
    assert api.store.jobs() == []


def test_replay_resolves_an_abbreviated_sha(api, deploy_token):
    status, job = api.call("POST", "/api/apps/site/replay", deploy_token, {"sha": api.shas[0][:8].upper()})
    assert status == 202 and job["sha"] == api.shas[0] and job["trigger"] == "replay"


def test_rollback_to_the_previous_or_a_named_release(api, deploy_token):
    for sha in api.shas:
        job = api.store.enqueue("site", sha, coalesce=False)
        api.store.record_live("site", sha, f"hookdeploy/site:{sha[:12]}", f"c-{sha[:12]}", job.id)
    status, job = api.call("POST", "/api/apps/site/rollback", deploy_token)
    assert status == 202 and job["sha"] == api.shas[1]
    assert (job["kind"], job["trigger"]) == (JobKind.ROLLBACK.value, Trigger.ROLLBACK.value)
    status, named = api.call("POST", "/api/apps/site/rollback", deploy_token, {"to": api.shas[0][:10]})
    assert status == 202 and named["sha"] == api.shas[0]
    status, answer = api.call("POST", "/api/apps/site/rollback", deploy_token, {"to": api.shas[2]})
    assert status == 400 and "already live" in answer["error"]
    assert api.store.job(named["id"]).state is JobState.QUEUED


@pytest.mark.slow
def test_api_through_a_real_server(served, deploy_token):
    port, shas, token = served.port, served.shas, deploy_token
    with served.server() as server:
        status, job, _ = request(port, "POST", "/api/apps/site/deploy", b'{"ref": "deploy"}',
                                 {"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
        assert status == 202 and job["sha"] == shas[-1]
        status, seen, _ = request(port, "GET", f"/api/jobs/{job['id']}", headers={"Authorization": f"Bearer {token}"})
        assert status == 200 and seen == job
        status, answer, headers = request(port, "GET", "/api/apps")
        assert status == 401 and headers["WWW-Authenticate"].startswith("Bearer")
        assert server.stop() == 0
