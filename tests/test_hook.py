"""The post-receive hook: real pushes into a repo made by `hookdeploy init-repo`, and hostile input."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from hookdeploy.core.models import JobState, Trigger
from hookdeploy.core.store import Store

from conftest import ZERO_SHA, fake_sha, git


def jobs_in(state_dir: Path) -> list:
    """Every job in the store, newest first ([] when the store was never created)."""
    if not (state_dir / "hookdeploy.db").exists():
        return []
    store = Store(state_dir / "hookdeploy.db")
    try:
        return store.jobs(limit=100_000)
    finally:
        store.close()


def remote_lines(push: subprocess.CompletedProcess) -> list[str]:
    """What the hook printed to the pusher (git prefixes it with `remote: ` on stderr)."""
    return [line[len("remote: "):].rstrip() for line in push.stderr.splitlines() if line.startswith("remote: ")]


def files_named(root: Path, *names: str) -> list[Path]:
    return [path for path in root.rglob("*") if path.name in names]


# -- real pushes ----------------------------------------------------------------------------------------------


def test_a_push_to_the_branch_queues_exactly_one_job(work_clone, state_dir):
    work_clone.commit("second")
    head = work_clone.head()
    push = work_clone.push()
    assert push.returncode == 0, push.stderr
    [job] = jobs_in(state_dir)
    assert (job.app, job.sha, job.ref, job.trigger, job.state) == (
        "site", head, "refs/heads/deploy", Trigger.PUSH, JobState.QUEUED)
    assert remote_lines(push) == [
        f"queued job {job.id} (site @ {head[:7]})",
        f"queued as job {job.id}; no worker is running (start it with: hookdeploy worker)",
    ]
    assert git("rev-parse", "deploy", cwd=work_clone.remote).stdout.strip() == head  # the push itself landed


def test_each_push_is_one_job_and_a_newer_one_supersedes(work_clone, state_dir):
    assert work_clone.push().returncode == 0
    work_clone.commit("a")
    work_clone.commit("b")  # two commits, one push: one job for the new head
    push = work_clone.push()
    assert push.returncode == 0
    newest, older = jobs_in(state_dir)
    assert newest.sha == work_clone.head() and newest.state is JobState.QUEUED
    assert older.state is JobState.SUPERSEDED
    assert remote_lines(push)[0] == f"queued job {newest.id} (site @ {newest.sha[:7]})"


def test_pushes_to_other_refs_are_reported_and_ignored(work_clone, state_dir):
    work_clone.git("branch", "feature")
    work_clone.git("tag", "v1")
    push = work_clone.push("feature", "v1")
    assert push.returncode == 0, push.stderr
    assert jobs_in(state_dir) == []
    assert sorted(remote_lines(push)) == [
        "hookdeploy: ignored refs/heads/feature: site deploys refs/heads/deploy",
        "hookdeploy: ignored refs/tags/v1: site deploys refs/heads/deploy",
    ]


def test_a_push_of_several_refs_queues_only_the_branch(work_clone, state_dir):
    work_clone.git("branch", "feature")
    push = work_clone.push("feature", "deploy")
    assert push.returncode == 0
    [job] = jobs_in(state_dir)
    assert job.ref == "refs/heads/deploy"
    assert "hookdeploy: ignored refs/heads/feature: site deploys refs/heads/deploy" in remote_lines(push)


def test_deleting_the_branch_is_reported_and_ignored(work_clone, state_dir):
    assert work_clone.push().returncode == 0
    git("config", "receive.denyDeleteCurrent", "ignore", cwd=work_clone.remote)  # git refuses it by default
    push = work_clone.push(":deploy")
    assert push.returncode == 0, push.stderr
    assert len(jobs_in(state_dir)) == 1  # only the first push's
    assert remote_lines(push) == ["hookdeploy: ignored deletion of refs/heads/deploy; the live release is unchanged"]


def test_no_follow_only_prints_the_queued_line(site_config, site_bare_repo, run_cli, state_dir):
    line = f"{ZERO_SHA} {fake_sha(1)} refs/heads/deploy\n"
    completed = run_cli("hook", "site", "--no-follow", config=site_config, input=line)
    assert completed.returncode == 0
    [job] = jobs_in(state_dir)
    assert completed.stdout == f"queued job {job.id} (site @ {fake_sha(1)[:7]})\n"


# -- hostile and malformed input ----------------------------------------------------------------------------

HOSTILE_REFS = [
    "refs/heads/$(touch x)",
    "refs/heads/;touch x",
    "refs/heads/`touch x`",
    "refs/heads/deploy;touch${IFS}x",
    "refs/heads/deploy$(touch${IFS}x)",
    "refs/heads/deploy|touch${IFS}x",
    "refs/heads/deploy&&touch${IFS}x",
    "refs/heads/deploy\ttouch x",
    "refs/heads/deploy\rtouch x",
    "refs/heads/../../deploy",
    "refs/heads/deploy/",
    "refs/heads/deploy.lock",
    "refs/heads/deploy\x1b[2J",
    "-refs/heads/deploy",
    "refs/heads/deploy ",
    "refs/heads/deploy\\",
]


def run_installed_hook(repo: Path, stdin: bytes, cwd: Path) -> subprocess.CompletedProcess:
    """Run hooks/post-receive the way git does: the script itself, GIT_DIR set, lines on stdin."""
    env = {key: value for key, value in os.environ.items() if key != "HOOKDEPLOY_CONFIG"}
    env["GIT_DIR"] = "."
    return subprocess.run([str(repo / "hooks" / "post-receive")], input=stdin, capture_output=True, cwd=cwd,
                          env=env, timeout=60)


def test_hostile_refs_queue_nothing_and_run_nothing(tmp_path, site_bare_repo, state_dir):
    lines = "".join(f"{ZERO_SHA} {fake_sha(n)} {ref}\n" for n, ref in enumerate(HOSTILE_REFS, 1))
    for cwd in (site_bare_repo, tmp_path):
        completed = run_installed_hook(site_bare_repo, lines.encode(), cwd)
        assert completed.returncode == 0, completed.stderr
        assert completed.stderr == b""
        assert b"queued job" not in completed.stdout
        out = completed.stdout.decode()
        assert out.count("hookdeploy: ignored ") == len(HOSTILE_REFS)
        assert "\x1b" not in out  # an escape sequence in a ref never reaches the pusher's terminal raw
    assert jobs_in(state_dir) == []
    assert files_named(tmp_path, "x", "pwned") == []


def test_malformed_lines_are_reported_and_skipped(site_config, site_bare_repo, run_cli, state_dir, tmp_path):
    good = f"{ZERO_SHA} {fake_sha(9)} refs/heads/deploy"
    lines = [
        "garbage",
        "abc def refs/heads/deploy",
        f"{ZERO_SHA[:39]} {fake_sha(1)} refs/heads/deploy",
        f"{ZERO_SHA} {fake_sha(0xABC).upper()} refs/heads/deploy",
        f"{ZERO_SHA} {fake_sha(1)}",
        f"{ZERO_SHA} {fake_sha(1)} refs/heads/deploy extra",
        f"{ZERO_SHA}  {fake_sha(1)} refs/heads/deploy",
        f"{ZERO_SHA} $(touch x) refs/heads/deploy",
        "",
        good,
        "\x00\x01\x02",
    ]
    completed = run_cli("hook", "site", config=site_config, input="\n".join(lines) + "\n")
    assert completed.returncode == 0
    [job] = jobs_in(state_dir)
    assert job.sha == fake_sha(9)
    out = completed.stdout.splitlines()
    assert sum(line.startswith("hookdeploy: ignored malformed update line ") for line in out) == 9
    assert f"queued job {job.id} (site @ {fake_sha(9)[:7]})" in out
    assert files_named(tmp_path, "x") == []


def test_bytes_that_are_not_utf8_do_not_break_the_hook(site_bare_repo, state_dir, tmp_path):
    stdin = f"{ZERO_SHA} {fake_sha(1)} refs/heads/caf\xe9\n".encode("latin-1") + b"\xff\xfe garbage\n"
    for locale in ("C.UTF-8", "C"):
        env_before = os.environ.get("LC_ALL")
        os.environ["LC_ALL"] = locale
        try:
            completed = run_installed_hook(site_bare_repo, stdin, tmp_path)
        finally:
            if env_before is None:
                del os.environ["LC_ALL"]
            else:
                os.environ["LC_ALL"] = env_before
        assert completed.returncode == 0, completed.stderr
        assert b"Traceback" not in completed.stderr + completed.stdout
        assert completed.stdout.count(b"hookdeploy: ignored") == 2
    assert jobs_in(state_dir) == []


def test_a_real_push_of_a_hostile_branch_name(work_clone, state_dir, tmp_path):
    names = ["$(touch${IFS}pwned)", "`touch${IFS}pwned`", ";touch${IFS}pwned", "caf\u00e9"]
    for name in names:
        work_clone.git("branch", name)
    push = work_clone.push(*names)
    assert push.returncode == 0, push.stderr
    for name in names:
        assert git("rev-parse", "--verify", f"refs/heads/{name}", cwd=work_clone.remote).returncode == 0
    assert jobs_in(state_dir) == []
    lines = remote_lines(push)
    assert len(lines) == len(names) and all(line.startswith("hookdeploy: ignored refs/heads/") for line in lines)
    assert files_named(tmp_path, "pwned") == []


def test_a_config_path_with_shell_characters_is_quoted_in_the_hook(tmp_path, write_config, run_cli):
    folder = tmp_path / "my $(touch pwned) `touch pwned` 'configs'"
    folder.mkdir()
    config = folder / "deploy.toml"
    config.write_text('[server]\nstate_dir = "state"\n[apps.site]\nrepo = "site.git"\n')
    assert run_cli("init-repo", "site", config=config).returncode == 0
    work = tmp_path / "work"
    git("init", "-q", "-b", "deploy", str(work))
    git("commit", "--allow-empty", "-q", "-m", "one", cwd=work)
    push = git("push", str(folder / "site.git"), "deploy", cwd=work)
    assert push.returncode == 0
    [job] = jobs_in(folder / "state")
    assert remote_lines(push)[0] == f"queued job {job.id} (site @ {job.sha[:7]})"
    assert files_named(tmp_path, "pwned") == []


# -- the hook never fails the push ---------------------------------------------------------------------------


def test_a_broken_config_is_reported_to_the_pusher_and_the_push_lands(work_clone, site_config, state_dir):
    site_config.write_text(site_config.read_text() + "keeep = 3\nport = 0\n")
    push = work_clone.push()
    assert push.returncode == 0, push.stderr
    assert git("rev-parse", "deploy", cwd=work_clone.remote).stdout.strip() == work_clone.head()
    assert remote_lines(push) == [
        "hookdeploy: error: apps.site.keeep: unknown key",
        "hookdeploy: error: apps.site.port: must be between 1 and 65535",
        "hookdeploy: the push was received, but nothing was queued",
    ]
    assert jobs_in(state_dir) == []


def test_a_missing_config_is_reported_to_the_pusher(work_clone, site_config):
    site_config.unlink()
    push = work_clone.push()
    assert push.returncode == 0
    assert remote_lines(push) == [
        f"hookdeploy: error: {site_config}: no such file (use --config PATH or $HOOKDEPLOY_CONFIG)",
        "hookdeploy: the push was received, but nothing was queued",
    ]


def test_an_unusable_store_is_reported_to_the_pusher(work_clone, state_dir):
    for path in sorted(state_dir.iterdir(), reverse=True):
        path.unlink()
    state_dir.rmdir()
    state_dir.write_text("a file where the state folder should be")
    push = work_clone.push()
    assert push.returncode == 0
    lines = remote_lines(push)
    assert lines[0].startswith("hookdeploy: error: job store ")
    assert lines[-1] == "hookdeploy: the push was received, but nothing was queued"


def test_a_failing_write_is_reported_to_the_pusher(work_clone, state_dir):
    # The disk filling up mid-push, as SQLite reports it: the hook must say so and still exit 0.
    store = Store(state_dir / "hookdeploy.db")
    with store.transaction() as db:
        db.execute("CREATE TRIGGER disk_full BEFORE INSERT ON jobs "
                   "BEGIN SELECT RAISE(FAIL, 'database or disk is full'); END")
    store.close()
    push = work_clone.push()
    assert push.returncode == 0
    lines = remote_lines(push)
    assert "Traceback (most recent call last):" not in lines
    assert lines == ["hookdeploy: error: database or disk is full (IntegrityError)",
                     "hookdeploy: the push was received, but nothing was queued"]
