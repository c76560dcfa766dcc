"""Previews of branches without Docker: branch -> DNS label, the [apps.X.previews] table's checks (one line
each, through the real CLI), the store's record of previews (labels claimed once, collisions, max, ttl,
deletion), the hook's and `deploy --ref`'s preview jobs, and the job JSON's "preview"."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from hookdeploy.core import config, previews
from hookdeploy.core.errors import ConfigError
from hookdeploy.core.schema import MIGRATIONS, SCHEMA_VERSION
from hookdeploy.core.store import Store

from conftest import fake_sha, git

PREVIEWS = {"branches": ["feature/*", "fix-*"], "hostname": "{branch}.preview.example.com", "max": 2, "ttl_hours": 1}


@pytest.mark.parametrize("branch, label", [
    ("feature/login", "feature-login"),
    ("Feature/Login_Page", "feature-login-page"),
    ("--x--", "x"),
    ("fix/ünïcode", "fix-n-code"),
    ("a" * 80, "a" * 63),
    ("feature/" + "b" * 54 + "-c", "feature-" + "b" * 54),  # cut at 63, no dash left at the end
    ("日本", "branch"),
])
def test_a_branch_becomes_one_dns_label(branch: str, label: str):
    made = previews.label_for(branch)
    assert made == label
    assert len(made) <= 63 and not made.startswith("-") and not made.endswith("-")


def test_a_suffixed_label_stays_a_label_and_differs_per_branch():
    first, second = previews.suffixed("a" * 63, "x"), previews.suffixed("a" * 63, "y")
    assert first != second and len(first) == len(second) == 63
    assert previews.suffixed("feature-a", "feature/a").startswith("feature-a-")


def _load(write_config, table) -> config.Config:
    return config.load(write_config({"site": {"repo": "/srv/git/site.git", "hostnames": ["site.example.com"],
                                               "previews": table}}))


def test_a_valid_table_is_read_with_its_defaults(write_config):
    app = _load(write_config, {"branches": ["feature/*"], "hostname": "{branch}.pr.example.com",
                               "env": {"MODE": "preview"}}).app("site")
    assert app.previews.branches == ("feature/*",)
    assert (app.previews.max, app.previews.ttl_hours) == (5, 168.0)
    assert previews.wanted(app, "refs/heads/feature/x") == "feature/x"
    assert previews.wanted(app, "refs/heads/deploy") is None  # the app's own branch is never a preview
    assert previews.wanted(app, "refs/tags/feature/x") is None
    assert previews.wanted(app, "refs/heads/main") is None


@pytest.mark.parametrize("table, problem", [
    ({"branches": ["feature/*"], "hostname": "preview.example.com"},
     "apps.site.previews.hostname: 'preview.example.com' must hold {branch} once"),
    ({"branches": ["feature/*"], "hostname": "pr-{branch}.example.com"},
     "apps.site.previews.hostname: 'pr-{branch}.example.com' is not a hostname with {branch} as one whole DNS label"),
    ({"branches": ["feature/[*"], "hostname": "{branch}.example.com"},
     "apps.site.previews.branches: 'feature/[*' is not a branch pattern"),
    ({"branches": [], "hostname": "{branch}.example.com"}, "apps.site.previews.branches: give at least one"),
    ({"branches": ["f/*"], "hostname": "{branch}.example.com", "max": 0}, "apps.site.previews.max: must be at least 1"),
    ({"branches": ["f/*"], "hostname": "{branch}.example.com", "ttl": 3}, "apps.site.previews.ttl"),
    ({"branches": ["f/*"], "hostname": "{branch}.example.com", "ttl_hours": 0},
     "apps.site.previews.ttl_hours: must be greater than 0"),
])
def test_a_bad_table_is_one_line_naming_the_key(write_config, table, problem):
    with pytest.raises(ConfigError) as raised:
        _load(write_config, table)
    assert len(raised.value.problems) == 1, raised.value.problems
    assert raised.value.problems[0].startswith(problem)


def test_the_cli_says_a_bad_hostname_in_one_line_exit_2(write_config, run_cli):
    path = write_config({"site": {"repo": "/srv/git/site.git", "previews": {"branches": ["feature/*"],
                                                                             "hostname": "preview.example.com"}}})
    completed = run_cli("status", config=path)
    assert completed.returncode == 2
    assert completed.stderr.strip().splitlines() == [
        "hookdeploy: config: apps.site.previews.hostname: 'preview.example.com' must hold {branch} once, like "
        "\"{branch}.preview.example.com\""]


def test_a_preview_runs_as_its_own_release_set(write_config):
    loaded = config.load(write_config({"site": {"repo": "/srv/git/site.git", "hostnames": ["site.example.com"],
                                                 "env": {"A": "app", "B": "app"}, "memory": "256m",
                                                 "guard": {"watch_seconds": 5}, "previews": {**PREVIEWS, "env": {"B": "preview"}}}}))
    preview = loaded.app("site.feature-x")
    assert preview.name == "site.feature-x" and preview.hostnames == ("feature-x.preview.example.com",)
    assert preview.container_env() == {"A": "app", "B": "preview"}
    assert preview.memory == "256m" and preview.guard.watch_seconds == 0 and preview.previews is None
    assert previews.for_job(preview, "refs/heads/feature/x").branch == "feature/x"
    assert loaded.app("site").branch == "deploy"  # untouched
    with pytest.raises(Exception):
        loaded.app("other.feature-x")


def _app(write_config):
    return _load(write_config, PREVIEWS).app("site")


def test_the_store_claims_a_label_once_per_branch_and_tells_collisions_apart(write_config, store):
    app = _app(write_config)
    recorded = previews.Previews(store)
    first = recorded.claim(app, "feature/a")
    again = recorded.claim(app, "feature/a")
    other = recorded.claim(app, "fix-feature-a")  # a different branch
    assert first.label == again.label == "feature-a"
    assert other.label == "fix-feature-a"
    recorded.forget("site", "fix-feature-a")
    colliding = recorded.claim(app, "feature-a")  # not a preview pattern on its own, but claimable
    assert colliding.label.startswith("feature-a-") and colliding.label != first.label
    assert recorded.find("site", "feature/a").label == "feature-a"  # a later push finds its preview
    assert sorted(preview.label for preview in recorded.of("site")) == sorted(["feature-a", colliding.label])


def test_max_refuses_one_more_naming_the_ones_there_are(write_config, store):
    app = _app(write_config)
    recorded = previews.Previews(store)
    recorded.claim(app, "feature/a")
    recorded.claim(app, "feature/b")
    with pytest.raises(previews.PreviewRefused) as refused:
        recorded.claim(app, "feature/c")
    assert "feature/a (feature-a), feature/b (feature-b)" in str(refused.value)
    assert "hookdeploy preview-remove site" in str(refused.value)
    assert len(recorded.of("site")) == 2 and recorded.find("site", "feature/c") is None
    assert recorded.claim(app, "feature/a").label == "feature-a"  # a push to one there is still deploys


def test_due_previews_deleted_branch_and_ttl(write_config, store):
    loaded = _load(write_config, PREVIEWS)
    app = loaded.app("site")
    recorded = previews.Previews(store)
    recorded.claim(app, "feature/old", now="2026-01-01T00:00:00.000Z")
    recorded.claim(app, "feature/new", now="2026-01-01T00:50:00.000Z")
    assert recorded.due(loaded, "2026-01-01T00:59:00.000Z") == []
    due = recorded.due(loaded, "2026-01-01T01:00:01.000Z")
    assert [(preview.branch, why) for preview, why in due] == [("feature/old", "no push for 1 hours (ttl_hours)")]
    recorded.request_removal("site", "feature/new")
    assert {preview.branch for preview, _ in recorded.due(loaded, "2026-01-01T00:51:00.000Z")} == {"feature/new"}
    recorded.claim(app, "feature/new", now="2026-01-01T00:52:00.000Z")  # pushed again: it stays
    assert recorded.due(loaded, "2026-01-01T00:53:00.000Z") == []


def test_migration_adds_the_table_keeping_jobs(tmp_path: Path):
    path = tmp_path / "hookdeploy.db"
    connection = sqlite3.connect(path)
    for script in MIGRATIONS[:-1]:
        connection.executescript(script)
    connection.executescript(f"INSERT INTO jobs (app, kind, trigger, sha, state, created_at) VALUES "
                             f"('site', 'deploy', 'push', '{fake_sha(1)}', 'queued', 'x'); "
                             f"PRAGMA user_version = {len(MIGRATIONS) - 1};")
    connection.close()
    store = Store(path)
    assert store.query("PRAGMA user_version")[0][0] == SCHEMA_VERSION
    assert store.job(1).app == "site" and previews.Previews(store).of() == []


def test_job_json_names_the_preview(store):
    app_job = store.enqueue("site", fake_sha(1))
    preview_job = store.enqueue("site.feature-a", fake_sha(2), ref="refs/heads/feature/a")
    assert (app_job.to_json()["app"], app_job.to_json()["preview"]) == ("site", None)
    assert (preview_job.to_json()["app"], preview_job.to_json()["preview"]) == ("site", "feature-a")
    # its own release set: the app's queue, running job and history never show it
    assert store.queued_count("site") == 1 and [job.id for job in store.jobs("site")] == [app_job.id]


def test_hook_and_deploy_ref_queue_preview_jobs_and_a_deletion_marks_removal(write_config, run_cli, tmp_path):
    repo = tmp_path / "git" / "site.git"
    path = write_config({"site": {"repo": str(repo), "branch": "deploy", "hostnames": ["site.example.com"],
                                  "previews": PREVIEWS}})
    assert run_cli("init-repo", "site", config=path).returncode == 0
    work = tmp_path / "work"
    git("init", "-q", "-b", "deploy", str(work))
    (work / "index.html").write_text("v1")
    git("add", ".", cwd=work)
    git("commit", "-qm", "one", cwd=work)
    git("remote", "add", "production", str(repo), cwd=work)
    git("push", "-q", "--no-verify", "production", "deploy", "deploy:feature/a", "deploy:feature/b", "deploy:fix-c",
        cwd=work, check=False)  # hooks ran: 3 preview branches, max 2
    sha = git("rev-parse", "HEAD", cwd=work).stdout.strip()
    opened = Store(config.load(path).server.database)
    names = sorted(preview.name for preview in previews.Previews(opened).of("site"))
    assert names == ["site.feature-a", "site.feature-b"]
    assert [job.sha for job in opened.jobs("site.feature-a")] == [sha]
    assert opened.queued_count("site") == 1  # the app's own push, apart
    pushed = git("push", "production", ":fix-c", ":feature/b", cwd=work, check=False)
    assert "the worker removes its preview feature-b" in pushed.stderr
    assert "deletion of refs/heads/fix-c: it has no preview" in pushed.stderr
    assert previews.Previews(opened).find("site", "feature/b").remove_requested_at is not None
    completed = run_cli("deploy", "site", "--ref", "feature/a", "--json", config=path)
    assert completed.returncode == 0, completed.stderr
    shown = json.loads(completed.stdout)
    assert (shown["app"], shown["preview"], shown["ref"]) == ("site", "feature-a", "refs/heads/feature/a")
    listed = run_cli("previews", "site", "--json", config=path)
    assert [entry["label"] for entry in json.loads(listed.stdout)] == ["feature-a", "feature-b"]
    status = json.loads(run_cli("status", "--json", config=path).stdout)["apps"]["site"]["previews"]
    assert status["feature-a"] == {"url": "http://feature-a.preview.example.com:18081/", "sha": None, "since": None}


def test_a_preview_branch_push_must_be_signed_when_the_app_checks_signatures(write_config, tmp_path):
    from hookdeploy.cli.prereceive import checked

    signers = tmp_path / "allowed_signers"
    signers.write_text("")
    loaded = config.load(write_config({"site": {"repo": "/srv/git/site.git", "previews": PREVIEWS,
                                                 "signatures": {"allowed_signers": str(signers)}}}))
    app = loaded.app("site")
    assert checked(app, "refs/heads/feature/x", fake_sha(1))  # a preview's head deploys: it is checked
    assert checked(app, "refs/heads/deploy", fake_sha(1))
    assert not checked(app, "refs/heads/main", fake_sha(1))  # deploys nothing
    assert not checked(app, "refs/heads/feature/x", "0" * 40)  # a deletion
    assert loaded.app("site.feature-x").signatures == app.signatures  # its jobs are checked as the app's
