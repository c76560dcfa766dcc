"""Previews through the web doors, without Docker: forge webhooks to a preview branch (queued once, deletion
marked for the worker), the API (list, remove: deploy scope), the dashboard (URL, commit, age, a Remove
button for deploy scope only), /metrics' hookdeploy_previews{app} and doctor's lines, on a real store and
repo."""

from __future__ import annotations

import json

import pytest

from hookdeploy.cli.previews import check_previews
from hookdeploy.core import previews
from webhook_helpers import ORIGIN, SECRETS, WebApp, push_body, signed_headers

TABLE = ('\n[apps.site.previews]\nbranches = ["feature/*", "other"]\nhostname = "{branch}.pr.example"\nmax = 2\n'
         '\n[apps.lab.previews]\nbranches = ["other"]\nhostname = "{branch}.lab.example"\n')


@pytest.fixture
def web(served, secrets_in_environment) -> WebApp:
    with open(served.config, "a") as config:
        config.write(TABLE)
    return WebApp.of(served)


def github_push(web: WebApp, ref: str, sha: str, **changes):
    body = push_body("github", sha, ref=ref, **changes)
    response = web.post("site", body, signed_headers("github", SECRETS["SITE_SECRET"], body, delivery=f"d-{ref}-{sha}"))
    return response.status_code, response.get_json()


def test_a_webhook_push_to_a_preview_branch_queues_the_preview_once_and_a_deletion_marks_it(web):
    sha = web.other_sha
    status, answer = github_push(web, "refs/heads/other", sha)
    assert status == 202
    job = web.store.job(answer["job"])
    assert (job.app, job.to_json()["preview"], job.ref) == ("site.other", "other", "refs/heads/other")
    assert github_push(web, "refs/heads/other", sha) == (200, {"duplicate": job.id})  # redelivered
    assert web.store.queued_count("site") == 0  # the app's own queue: nothing
    status, answer = github_push(web, "refs/heads/feature/gone", "0" * 40, deleted=True)
    assert (status, answer) == (200, {"ignored": "deletion of refs/heads/feature/gone: it has no preview"})
    status, answer = github_push(web, "refs/heads/other", "0" * 40, deleted=True)
    assert (status, answer) == (200, {"ignored": "deletion of refs/heads/other: the worker removes its preview other"})
    assert previews.Previews(web.store).find("site", "other").remove_requested_at is not None
    # another branch than the previews' still says why it deploys nothing
    status, answer = github_push(web, "refs/heads/main", sha)
    assert status == 200 and "is not the deploy branch" in answer["ignored"]


def test_a_gitlab_push_to_a_preview_branch_and_its_deletion(web):
    sha = web.other_sha
    body = push_body("gitlab", sha, ref="refs/heads/other")
    response = web.post("lab", body, signed_headers("gitlab", SECRETS["GITLAB_SECRET"], body))
    assert response.status_code == 202
    assert web.store.job(response.get_json()["job"]).to_json()["preview"] == "other"
    body = push_body("gitlab", "0" * 40, ref="refs/heads/other")  # GitLab deletes a branch with a zero after
    response = web.post("lab", body, signed_headers("gitlab", SECRETS["GITLAB_SECRET"], body))
    assert (response.status_code, response.get_json()) == (
        200, {"ignored": "deletion of refs/heads/other: the worker removes its preview other"})


def test_a_webhook_past_max_is_answered_200_naming_the_previews(web):
    app = web.config.app("site")
    for branch in ("feature/a", "feature/b"):
        previews.Previews(web.store).claim(app, branch)
    status, answer = github_push(web, "refs/heads/other", web.other_sha)
    assert status == 200 and answer["ignored"].startswith("no preview: site has 2 previews, its max")
    assert web.store.jobs("site.other") == []


def test_api_lists_and_removes_previews_with_deploy_scope(web, read_token, deploy_token):
    status, answer = web.call("POST", "/api/apps/site/deploy", deploy_token, {"ref": "other"})
    assert (status, answer["app"], answer["preview"]) == (202, "site", "other")
    status, listed = web.call("GET", "/api/apps/site/previews", read_token)
    assert status == 200 and [(entry["label"], entry["branch"], entry["url"], entry["sha"]) for entry in listed] == [
        ("other", "other", "http://other.pr.example/", None)]
    status, answer = web.call("POST", "/api/apps/site/previews/other/remove", read_token)
    assert status == 403
    status, answer = web.call("POST", "/api/apps/site/previews/nothing/remove", deploy_token)
    assert status == 400 and answer["error"] == "site has no preview of 'nothing' (its previews: other (other))"
    status, answer = web.call("POST", "/api/apps/site/previews/other/remove", deploy_token)
    assert status == 202 and answer["removing"] is True
    status, apps = web.call("GET", "/api/apps", read_token)
    assert apps["apps"]["site"]["previews"] == {"other": {"url": "http://other.pr.example/", "sha": None,
                                                          "since": None}}


def test_dashboard_shows_previews_and_a_remove_button_for_deploy_scope_only(web):
    previews.Previews(web.store).claim(web.config.app("site"), "feature/login")
    assert web.sign_in("read").status_code == 303
    page = web.client.get("/apps/site").get_data(as_text=True)
    assert "http://feature-login.pr.example/" in page and "feature/login" in page and "not live yet" in page
    assert "/apps/site/previews/feature-login/remove" not in page
    web.client.post("/signout", data={"csrf": web.csrf()}, headers=ORIGIN)
    assert web.sign_in("deploy").status_code == 303
    page = web.client.get("/apps/site").get_data(as_text=True)
    assert 'action="/apps/site/previews/feature-login/remove"' in page
    response = web.client.post("/apps/site/previews/feature-login/remove", data={"csrf": web.csrf("/apps/site")},
                               headers=ORIGIN)
    assert response.status_code == 303 and response.headers["Location"].endswith("/apps/site")
    assert previews.Previews(web.store).find("site", "feature/login").remove_requested_at is not None


def test_metrics_count_previews_per_app(web, read_token):
    previews.Previews(web.store).claim(web.config.app("site"), "feature/a")
    response = web.client.get("/metrics", headers={"Authorization": f"Bearer {read_token}"})
    lines = response.get_data(as_text=True).splitlines()
    assert 'hookdeploy_previews{app="site"} 1.0' in lines
    assert 'hookdeploy_previews{app="lab"} 0.0' in lines
    assert not any(line.startswith('hookdeploy_previews{app="tea"}') for line in lines)  # no previews table


def test_doctor_lists_previews_with_their_age_and_names_an_overdue_one(web):
    recorded = previews.Previews(web.store)
    recorded.claim(web.config.app("site"), "feature/a")
    recorded.claim(web.config.app("site"), "other", now="2020-01-01T00:00:00.000Z")  # far past ttl_hours
    said = []
    check_previews(web.config, lambda ok, good, bad: said.append(f"ok    {good}" if ok else f"FIX   {bad}"))
    assert said[1] == "ok    preview feature-a of site (feature/a): http://feature-a.pr.example/, not live, last push 0 min ago"
    assert said[0].startswith("FIX   preview other of site (other): http://other.pr.example/, not live, last push ")
    assert said[0].endswith(" days ago: due for removal, but no worker removed it (is one running? or: hookdeploy "
                            "preview-remove site other)")
    assert json.dumps(said)  # plain text lines
