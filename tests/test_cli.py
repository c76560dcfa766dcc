"""The CLI as users see it: in-process through click.testing and as the installed script."""

from __future__ import annotations

import json
import os
import re
import stat
import subprocess
from pathlib import Path

import pytest

from hookdeploy.core.models import JobKind, JobState, Trigger
from hookdeploy.core.store import Store

from conftest import HOOKDEPLOY, fake_sha, git

JOB_KEYS = {"id", "app", "kind", "trigger", "ref", "sha", "state", "created_at", "started_at", "finished_at", "digest", "signer", "preview",
            "error", "image"}
ISO_UTC = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|\+00:00)\Z")


def queued_jobs(state_dir: Path) -> list:
    """Every job in the store the site config uses, newest first."""
    store = Store(state_dir / "hookdeploy.db")
    try:
        return store.jobs(limit=100_000)
    finally:
        store.close()


def assert_job_json(data: dict) -> None:
    """`data` has exactly DESIGN's job JSON keys with DESIGN's value shapes."""
    assert set(data) == JOB_KEYS
    assert isinstance(data["id"], int) and isinstance(data["app"], str)
    assert data["kind"] in ("deploy", "rollback")
    assert data["trigger"] in ("push", "webhook", "manual", "replay", "rollback", "retry")
    assert re.fullmatch(r"[0-9a-f]{40}", data["sha"])
    assert data["state"] in ("queued", "running", "succeeded", "failed", "rolled_back", "superseded", "interrupted")
    assert ISO_UTC.match(data["created_at"])
    for key in ("started_at", "finished_at"):
        assert data[key] is None or ISO_UTC.match(data[key])
    assert data["error"] is None or isinstance(data["error"], str)


def one_error_line(stderr: str) -> str:
    lines = stderr.splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith("hookdeploy: error: ")
    return lines[0]


# -- init-repo ------------------------------------------------------------------------------------------------


def test_init_repo_creates_a_bare_repo_with_an_absolute_hook(site_config, run_cli, site_repo_path, state_dir):
    completed = run_cli("init-repo", "site", config=site_config)
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.splitlines() == [
        f"created bare repo {site_repo_path} (branch deploy)",
        f"installed {site_repo_path / 'hooks' / 'post-receive'}",
        f"push with: git push {site_repo_path} HEAD:deploy",
    ]
    assert git("rev-parse", "--is-bare-repository", cwd=site_repo_path).stdout.strip() == "true"
    assert git("symbolic-ref", "HEAD", cwd=site_repo_path).stdout.strip() == "refs/heads/deploy"
    hook = site_repo_path / "hooks" / "post-receive"
    assert hook.stat().st_mode & stat.S_IXUSR
    text = hook.read_text()
    assert f"exec {HOOKDEPLOY} --config {site_config} hook site" in text
    assert Path(HOOKDEPLOY).is_absolute() and site_config.is_absolute()
    assert [p.name for p in (site_repo_path / "hooks").iterdir() if p.name.startswith(".")] == []  # no temp left
    assert (state_dir / "hookdeploy.db").is_file()  # the store exists before the first push


def test_init_repo_is_idempotent_and_keeps_history(site_config, run_cli, pushed_clone, site_repo_path):
    head = git("rev-parse", "deploy", cwd=site_repo_path).stdout.strip()
    hook = site_repo_path / "hooks" / "post-receive"
    hook.write_text("#!/bin/sh\necho stale\n")
    completed = run_cli("init-repo", "site", config=site_config)
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.splitlines()[0] == f"found bare repo {site_repo_path} (branch deploy)"
    assert git("rev-parse", "deploy", cwd=site_repo_path).stdout.strip() == head == pushed_clone.head()
    assert "hook site" in hook.read_text() and os.access(hook, os.X_OK)


def test_init_repo_in_process_with_a_relative_config(tmp_path, write_config, invoke, monkeypatch):
    write_config('[server]\nstate_dir = "state"\n[apps.docs]\nrepo = "repos/docs.git"\nbranch = "main"\n'
                 'hostnames = ["docs.example"]\n', name="relative.toml")
    monkeypatch.chdir(tmp_path)
    result = invoke("init-repo", "docs", config="relative.toml")
    assert result.exit_code == 0, result.stderr
    repo = tmp_path / "repos" / "docs.git"
    assert git("symbolic-ref", "HEAD", cwd=repo).stdout.strip() == "refs/heads/main"
    # From git's environment the hook must work with no venv and another cwd: every path is absolute.
    assert f"--config {tmp_path / 'relative.toml'} hook docs" in (repo / "hooks" / "post-receive").read_text()


def test_init_repo_refuses_a_clone_url_and_a_non_repo_folder(write_config, run_cli, tmp_path):
    occupied = tmp_path / "occupied"
    occupied.mkdir()
    (occupied / "file").write_text("mine")
    config = write_config({"remote": {"repo": "https://example.com/site.git"},
                           "local": {"repo": str(occupied), "hostnames": ["local.example"]}})
    for app in ("remote", "local"):
        completed = run_cli("init-repo", app, config=config)
        assert completed.returncode == 2
        one_error_line(completed.stderr)
    assert [p.name for p in occupied.iterdir()] == ["file"]


# -- deploy -------------------------------------------------------------------------------------------------------


def test_deploy_queues_the_head_of_the_branch(site_config, run_cli, pushed_clone, state_dir):
    completed = run_cli("deploy", "site", config=site_config)
    assert completed.returncode == 0, completed.stderr
    head = pushed_clone.head()
    [job] = queued_jobs(state_dir)
    assert (job.app, job.sha, job.kind, job.trigger, job.state) == (
        "site", head, JobKind.DEPLOY, Trigger.MANUAL, JobState.QUEUED)
    assert completed.stdout == f"queued job {job.id} (site @ {head[:7]}, deploy, manual)\n"


def test_deploy_ref_tag_branch_and_full_ref(site_config, invoke, pushed_clone, state_dir):
    first = pushed_clone.head("HEAD~2")
    pushed_clone.git("tag", "-a", "-m", "v1", "v1", first)  # annotated: must resolve to the commit
    pushed_clone.git("branch", "other", "HEAD~1")
    assert pushed_clone.push("v1", "other", hooks=False).returncode == 0
    for ref, sha in (("v1", first), ("other", pushed_clone.head("HEAD~1")), ("refs/tags/v1", first),
                     ("refs/heads/deploy", pushed_clone.head())):
        result = invoke("deploy", "site", "--ref", ref, "--json", config=site_config)
        assert result.exit_code == 0, result.stderr
        data = json.loads(result.stdout)
        assert_job_json(data)
        assert (data["sha"], data["ref"], data["trigger"], data["state"]) == (sha, ref, "manual", "queued")
    assert len(queued_jobs(state_dir)) == 4


def test_deploy_of_an_unknown_or_invalid_ref_queues_nothing(site_config, run_cli, invoke, pushed_clone, state_dir,
                                                             tmp_path):
    completed = run_cli("deploy", "site", "--ref", "nope", config=site_config)
    assert completed.returncode == 2 and completed.stdout == ""
    assert one_error_line(completed.stderr).startswith("hookdeploy: error: ref 'nope' does not exist in ")
    for ref in ("refs/heads/nope", "$(touch x)", "a..b", "--upload-pack=touch x", "-x", "HEAD~1",
                "deploy^{tree}", "deploy@{1}", ""):
        result = invoke("deploy", "site", "--ref", ref, config=site_config)
        assert result.exit_code == 2, ref
        one_error_line(result.stderr)
        assert result.stdout == ""
    assert queued_jobs(state_dir) == []
    assert not (tmp_path / "x").exists()


def test_deploy_with_an_empty_repo_says_so(site_config, run_cli, site_bare_repo, state_dir):
    completed = run_cli("deploy", "site", config=site_config)
    assert completed.returncode == 2
    assert "does not exist" in one_error_line(completed.stderr)
    assert queued_jobs(state_dir) == []


def test_deploy_before_init_repo_names_the_fix(site_config, run_cli, state_dir):
    completed = run_cli("deploy", "site", config=site_config)
    assert completed.returncode == 2
    assert one_error_line(completed.stderr).endswith("(create it with: hookdeploy init-repo site)")


def test_deploy_coalesces_older_queued_jobs(site_config, invoke, pushed_clone, state_dir):
    for _ in range(3):
        assert invoke("deploy", "site", config=site_config).exit_code == 0
    assert [job.state for job in queued_jobs(state_dir)] == [JobState.QUEUED, JobState.SUPERSEDED,
                                                              JobState.SUPERSEDED]


# -- replay -------------------------------------------------------------------------------------------------------


def fast_import_commits(clone, branch: str, count: int) -> None:
    """Create `count` chained commits on `branch` in one git process (fixed dates, so the same SHAs each run)."""
    stream = []
    for number in range(count):
        stream.append(f"commit refs/heads/{branch}\nmark :{number + 1}\n"
                      f"committer t <t@t> {1_700_000_000 + number} +0000\n"
                      f"data {len(f'commit {number}')}\ncommit {number}\n")
        if number:
            stream.append(f"from :{number}\n")
        stream.append("\n")
    clone.git("fast-import", "--quiet", input="".join(stream))


@pytest.fixture
def many_commits(pushed_clone):
    """The site repo with 1,500 more commits on branch `many`: enough that two share a 4-hex prefix."""
    fast_import_commits(pushed_clone, "many", 1500)
    assert pushed_clone.push("many", hooks=False).returncode == 0
    return pushed_clone.git("rev-list", "--all").stdout.split()


def test_replay_full_sha_and_unique_prefix(site_config, run_cli, pushed_clone, many_commits, state_dir):
    first = pushed_clone.head("HEAD~2")
    completed = run_cli("replay", "site", first, "--json", config=site_config)
    assert completed.returncode == 0, completed.stderr
    data = json.loads(completed.stdout)
    assert_job_json(data)
    assert (data["sha"], data["trigger"], data["kind"]) == (first, "replay", "deploy")

    unique = next(sha for sha in many_commits if sum(other.startswith(sha[:7]) for other in many_commits) == 1)
    completed = run_cli("replay", "site", unique[:7].upper(), config=site_config)
    assert completed.returncode == 0, completed.stderr
    assert queued_jobs(state_dir)[0].sha == unique


def test_replay_of_an_ambiguous_prefix_queues_nothing(site_config, run_cli, many_commits, state_dir):
    by_prefix: dict[str, list[str]] = {}
    for sha in many_commits:
        by_prefix.setdefault(sha[:4], []).append(sha)
    prefix = next(p for p, shas in sorted(by_prefix.items()) if len(shas) > 1)
    completed = run_cli("replay", "site", prefix, config=site_config)
    assert completed.returncode == 2
    assert "ambiguous" in one_error_line(completed.stderr)
    assert queued_jobs(state_dir) == []


def test_replay_of_an_unknown_or_malformed_sha_queues_nothing(site_config, invoke, pushed_clone, state_dir):
    for sha in ("0" * 40, "deadbeef", "abc", "xyz12", "HEAD", "--all", "1" * 41, "", "$(id)"):
        result = invoke("replay", "site", "--", sha, config=site_config)
        assert result.exit_code == 2, sha
        one_error_line(result.stderr)
    assert queued_jobs(state_dir) == []


def test_replay_of_a_tree_is_not_a_commit(site_config, run_cli, pushed_clone, state_dir):
    tree = pushed_clone.git("rev-parse", "HEAD^{tree}").stdout.strip()
    completed = run_cli("replay", "site", tree, config=site_config)
    assert completed.returncode == 2
    assert queued_jobs(state_dir) == []


# -- rollback -----------------------------------------------------------------------------------------------------


def record_releases(state_dir: Path, shas: list[str]) -> list[int]:
    """Pretend each SHA went live in turn (oldest first): a succeeded job and a live release each."""
    store = Store(state_dir / "hookdeploy.db")
    job_ids = []
    for sha in shas:
        job = store.enqueue("site", sha, coalesce=False)
        store.claim("test")
        store.finish(job.id, JobState.SUCCEEDED)
        store.record_live("site", sha, f"hookdeploy/site:{sha[:12]}", f"hookdeploy-site-{sha[:12]}-{job.id}", job.id)
        job_ids.append(job.id)
    store.close()
    return job_ids


def test_rollback_without_an_earlier_release_is_refused(site_config, run_cli, state_dir):
    completed = run_cli("rollback", "site", config=site_config)
    assert completed.returncode == 2
    assert one_error_line(completed.stderr) == "hookdeploy: error: site has no earlier release to roll back to"
    record_releases(state_dir, [fake_sha(1)])
    completed = run_cli("rollback", "site", config=site_config)
    assert completed.returncode == 2
    assert one_error_line(completed.stderr) == "hookdeploy: error: site has no earlier release to roll back to"
    assert all(job.kind is JobKind.DEPLOY for job in queued_jobs(state_dir))


def test_rollback_queues_a_switch_to_the_previous_release(site_config, invoke, state_dir):
    shas = [fake_sha(1), fake_sha(2), fake_sha(3)]
    record_releases(state_dir, shas)
    result = invoke("rollback", "site", "--json", config=site_config)
    assert result.exit_code == 0, result.stderr
    data = json.loads(result.stdout)
    assert_job_json(data)
    assert (data["kind"], data["trigger"], data["sha"], data["state"]) == ("rollback", "rollback", shas[1], "queued")


def test_rollback_to_a_named_release(site_config, run_cli, state_dir):
    shas = ["aaaa" + fake_sha(1)[4:], "bbbb" + fake_sha(2)[4:], "aaab" + fake_sha(3)[4:], "cccc" + fake_sha(4)[4:]]
    record_releases(state_dir, shas)
    completed = run_cli("rollback", "site", "--to", "BBBB", config=site_config)
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.startswith("queued job ") and "rollback, rollback)" in completed.stdout
    job = queued_jobs(state_dir)[0]
    assert (job.kind, job.trigger, job.sha) == (JobKind.ROLLBACK, Trigger.ROLLBACK, shas[1])
    assert run_cli("rollback", "site", "--to", "aaaa", config=site_config).returncode == 0  # unique: not aaab
    assert queued_jobs(state_dir)[0].sha == shas[0]
    before = len(queued_jobs(state_dir))
    for to, message in (("aaa", "must be 4 to 40 hexadecimal digits"), ("dddd", "was never a release of site"),
                        ("cccc", "is already live for site"), ("$(id)", "must be 4 to 40 hexadecimal digits")):
        completed = run_cli("rollback", "site", "--to", to, config=site_config)
        assert completed.returncode == 2, (to, completed.stdout)
        assert message in one_error_line(completed.stderr)
    assert len(queued_jobs(state_dir)) == before


def test_rollback_prefix_ambiguous_among_releases(site_config, run_cli, state_dir):
    record_releases(state_dir, ["abcd" + fake_sha(1)[4:], "abcd" + fake_sha(2)[4:], fake_sha(3)])
    completed = run_cli("rollback", "site", "--to", "abcd", config=site_config)
    assert completed.returncode == 2
    assert "ambiguous" in one_error_line(completed.stderr)


# -- status, history, logs ---------------------------------------------------------------------------------------


@pytest.fixture
def two_apps(write_config, tmp_path):
    return write_config({"site": {"repo": str(tmp_path / "site.git")},
                         "api": {"repo": str(tmp_path / "api.git"), "hostnames": ["api.example"]}})


def test_status_json_shape(two_apps, run_cli, state_dir):
    empty = run_cli("status", "--json", config=two_apps)
    assert empty.returncode == 0, empty.stderr
    assert json.loads(empty.stdout) == {"apps": {"api": {"live": None, "queued": 0, "running": None, "stopped": False, "previews": {}},
                                                 "site": {"live": None, "queued": 0, "running": None, "stopped": False, "previews": {}}}}
    [live_job] = record_releases(state_dir, [fake_sha(1)])
    store = Store(state_dir / "hookdeploy.db")
    running = store.enqueue("site", fake_sha(2))
    store.claim("w")
    store.enqueue("site", fake_sha(3))
    store.enqueue("api", fake_sha(4), coalesce=False)
    store.enqueue("api", fake_sha(5), coalesce=False)
    live = store.live_release("site")
    data = json.loads(run_cli("status", "--json", config=two_apps).stdout)
    assert data == {"apps": {
        "site": {"live": {"sha": fake_sha(1), "image": f"hookdeploy/site:{fake_sha(1)[:12]}",
                          "container": f"hookdeploy-site-{fake_sha(1)[:12]}-{live_job}", "since": live.live_since,
                          "job": live_job},
                 "queued": 1, "running": running.id, "stopped": False, "previews": {}},
        "api": {"live": None, "queued": 2, "running": None, "stopped": False, "previews": {}}}}
    assert ISO_UTC.match(live.live_since)
    one = json.loads(run_cli("status", "site", "--json", config=two_apps).stdout)
    assert one == {"apps": {"site": data["apps"]["site"]}}
    text = run_cli("status", config=two_apps)
    assert text.returncode == 0
    assert text.stdout.splitlines() == [
        "api: live: none; 2 queued; nothing running",
        f"site: live {fake_sha(1)[:12]} (job {live_job}, since {live.live_since}); 1 queued; running job {running.id}"]


def test_history_json_newest_first_with_limit(site_config, invoke, run_cli, state_dir):
    store = Store(state_dir / "hookdeploy.db")
    ids = [store.enqueue("site", fake_sha(n), coalesce=False, trigger=Trigger.PUSH, ref="refs/heads/deploy").id
           for n in range(30)]
    store.enqueue("other", fake_sha(99))
    store.claim("w")
    store.finish(ids[0], JobState.FAILED, error="build failed: exit 1")
    completed = run_cli("history", "site", "--json", config=site_config)
    assert completed.returncode == 0, completed.stderr
    jobs = json.loads(completed.stdout)
    assert [job["id"] for job in jobs] == ids[::-1][:20]  # default limit 20, newest first
    for job in jobs:
        assert_job_json(job)
    result = invoke("history", "site", "--limit", "50", "--json", config=site_config)
    everything = json.loads(result.stdout)
    assert [job["id"] for job in everything] == ids[::-1]
    oldest = everything[-1]
    assert (oldest["state"], oldest["error"], oldest["trigger"], oldest["ref"]) == (
        "failed", "build failed: exit 1", "push", "refs/heads/deploy")
    assert ISO_UTC.match(oldest["started_at"]) and ISO_UTC.match(oldest["finished_at"])
    assert [job["id"] for job in json.loads(invoke("history", "site", "--limit", "3", "--json",
                                                   config=site_config).stdout)] == ids[::-1][:3]
    text = invoke("history", "site", "--limit", "50", config=site_config).stdout.splitlines()
    assert len(text) == 30
    assert text[-1].split()[:2] == [str(ids[0]), "failed"] and text[-1].endswith("build failed: exit 1")
    for bad in ("0", "-1", "many"):
        assert invoke("history", "site", "--limit", bad, config=site_config).exit_code == 2


def test_logs_prints_the_job_log(site_config, run_cli, invoke, state_dir):
    store = Store(state_dir / "hookdeploy.db")
    job = store.enqueue("site", fake_sha(7))
    store.claim("w")
    store.log(job.id, "build", kind="step", duration=2.5)
    store.log(job.id, "Step 1/2 : FROM nginx")
    store.finish(job.id, JobState.SUCCEEDED)
    completed = run_cli("logs", str(job.id), config=site_config)
    assert completed.returncode == 0, completed.stderr
    lines = completed.stdout.splitlines()
    assert [line.split(" ", 1)[1] for line in lines] == [
        f"state queued (manual, deploy {fake_sha(7)[:12]})", "state running (worker w)", "step  build (2.50 s)",
        "log   Step 1/2 : FROM nginx", "state succeeded"]
    assert all(ISO_UTC.match(line.split(" ", 1)[0]) for line in lines)
    followed = invoke("logs", str(job.id), "--follow", config=site_config)  # a finished job: returns at once
    assert followed.exit_code == 0 and followed.stdout.splitlines() == lines


def test_logs_of_an_unknown_job(site_config, run_cli):
    completed = run_cli("logs", "999", config=site_config)
    assert completed.returncode == 2
    assert one_error_line(completed.stderr) == "hookdeploy: error: no job 999"
    assert run_cli("logs", "abc", config=site_config).returncode == 2


# -- unknown apps, bad config, usage ---------------------------------------------------------------------------


@pytest.mark.parametrize("arguments", [
    ("init-repo", "nope"), ("deploy", "nope"), ("replay", "nope", "abcd"), ("rollback", "nope"),
    ("status", "nope"), ("history", "nope"), ("hook", "nope"),
])
def test_unknown_app_is_one_line_exit_2(site_config, run_cli, state_dir, arguments):
    completed = run_cli(*arguments, config=site_config, input="")
    if arguments[0] == "hook":  # a post-receive hook cannot reject a push: it says so and exits 0
        assert completed.returncode == 0
        assert "unknown app 'nope'" in completed.stdout
        return
    assert completed.returncode == 2
    assert one_error_line(completed.stderr) == (
        f"hookdeploy: error: unknown app 'nope' (apps in {site_config}: site)")
    assert not (state_dir / "hookdeploy.db").exists() or queued_jobs(state_dir) == []


@pytest.mark.parametrize("name", ["Bad", "../etc", "-x", "a b"])
def test_malformed_app_name_is_one_line_exit_2(site_config, invoke, name):
    result = invoke("history", "--", name, config=site_config)
    assert result.exit_code == 2
    assert one_error_line(result.stderr).startswith("hookdeploy: error: app name ")


@pytest.mark.parametrize("arguments", [("init-repo", "site"), ("deploy", "site"), ("replay", "site", "abcd"),
                                       ("rollback", "site"), ("status",), ("history", "site"), ("logs", "1"),
                                       ("doctor",)])
def test_bad_config_is_exit_2_for_every_command(write_config, invoke, arguments):
    config = write_config('[apps.site]\nrepo = "/srv/git/site.git"\nkeeep = 3\n')
    result = invoke(*arguments, config=config)
    assert result.exit_code == 2
    assert result.stderr == "hookdeploy: config: apps.site.keeep: unknown key\n"
    assert result.stdout == ""


def test_version_and_help(run_cli):
    assert run_cli("--version").stdout.strip().endswith("0.1.0")
    completed = run_cli("--help")
    assert completed.returncode == 0
    for command in ("init-repo", "hook", "deploy", "replay", "rollback", "status", "history", "logs", "doctor"):
        assert command in completed.stdout
    assert run_cli("no-such-command").returncode == 2


# -- doctor ------------------------------------------------------------------------------------------------------


def docker_answers() -> bool:
    try:
        return subprocess.run(["docker", "info"], capture_output=True, timeout=20).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


@pytest.mark.docker
def test_doctor_on_a_healthy_set_up(site_config, run_cli, site_bare_repo):
    if not docker_answers():
        if os.environ.get("HOOKDEPLOY_REQUIRE_DOCKER") == "1":
            pytest.fail("no Docker engine answers; run scripts/ensure-docker.sh")
        pytest.skip("no Docker engine answers")
    completed = run_cli("doctor", config=site_config)
    assert completed.returncode == 0, completed.stdout + completed.stderr
    lines = completed.stdout.splitlines()
    assert lines[-1] == "all checks passed"
    assert all(line.startswith("ok    ") for line in lines[:-1]), lines
    assert f"ok    site: post-receive hook runs {HOOKDEPLOY} with {site_config}" in lines


def test_doctor_names_the_fix_for_a_missing_repo(site_config, run_cli, state_dir, site_repo_path):
    state_dir.mkdir()
    completed = run_cli("doctor", config=site_config)
    assert completed.returncode == 1
    assert (f"FIX   site: repo {site_repo_path} does not exist: hookdeploy init-repo site"
            in completed.stdout.splitlines())
    assert re.search(r"^\d+ problems? found$", completed.stdout, re.MULTILINE)


def test_doctor_names_the_fix_for_a_stale_hook(site_config, invoke, site_bare_repo):
    (site_bare_repo / "hooks" / "post-receive").write_text("#!/bin/sh\nexec /old/venv/bin/hookdeploy hook site\n")
    result = invoke("doctor", config=site_config)
    assert result.exit_code == 1
    assert ("FIX   site: post-receive hook is missing or points elsewhere: hookdeploy init-repo site"
            in result.stdout.splitlines())


def test_deploy_and_replay_from_a_clone_url_use_a_fetched_mirror(write_config, run_cli, pushed_clone, state_dir):
    config = write_config({"remote": {"repo": f"file://{pushed_clone.remote}", "branch": "deploy"}})
    first = run_cli("deploy", "remote", "--json", config=config)
    assert first.returncode == 0, first.stderr
    assert json.loads(first.stdout)["sha"] == pushed_clone.head()
    assert (state_dir / "mirrors" / "remote.git" / "HEAD").is_file()
    newer = pushed_clone.commit("fourth")
    assert pushed_clone.push(hooks=False).returncode == 0
    second = run_cli("deploy", "remote", "--json", config=config)  # fetches before resolving
    assert second.returncode == 0, second.stderr
    assert json.loads(second.stdout)["sha"] == newer
    replay = run_cli("replay", "remote", newer[:10], "--json", config=config)
    assert replay.returncode == 0, replay.stderr
    assert json.loads(replay.stdout)["sha"] == newer


def test_deploy_from_an_unreachable_clone_url_is_one_line(write_config, run_cli, tmp_path, state_dir):
    config = write_config({"remote": {"repo": f"file://{tmp_path / 'nowhere.git'}"}})
    completed = run_cli("deploy", "remote", config=config)
    assert completed.returncode == 2
    assert one_error_line(completed.stderr).startswith(f"hookdeploy: error: fetching file://{tmp_path / 'nowhere.git'} failed: ")
    assert queued_jobs(state_dir) == []
