"""Bad state on disk (issue 8): a corrupted or locked job store and an unusable state_dir each
give one clear line that names what is wrong, and change nothing: no job queued, no traceback.
"""

from __future__ import annotations

import sqlite3

import pytest

from conftest import ZERO_SHA


def one_line(completed) -> str:
    lines = completed.stderr.strip().splitlines()
    assert len(lines) == 1, completed.stderr
    assert "Traceback" not in completed.stderr + completed.stdout
    return lines[0]


@pytest.mark.parametrize("command", [("status",), ("history", "site"), ("deploy", "site"),
                                     ("worker", "--drain"), ("logs", "1")])
def test_a_corrupted_store_is_named_with_what_to_do_and_left_as_it_is(run_cli, site_config, state_dir,
                                                                       pushed_clone, command):
    database = state_dir / "hookdeploy.db"
    state_dir.mkdir(parents=True, exist_ok=True)
    garbage = b"this was a job store before the disk went bad\n" * 100
    database.write_bytes(garbage)

    completed = run_cli(*command, config=site_config)

    assert completed.returncode == 2
    line = one_line(completed)
    assert line.startswith(f"hookdeploy: error: job store {database}: file is not a database"), line
    assert "restore it from a backup" in line
    assert database.read_bytes() == garbage


def test_the_post_receive_hook_with_a_corrupted_store_tells_the_pusher_nothing_was_queued(
        run_cli, site_config, state_dir, pushed_clone):
    database = state_dir / "hookdeploy.db"
    database.write_bytes(b"\0" * 4096 + b"garbage" * 100)
    completed = run_cli("hook", "site", input=f"{ZERO_SHA} {pushed_clone.head()} refs/heads/deploy\n",
                        config=site_config)
    # A post-receive hook cannot refuse a push: it says what went wrong to the pusher.
    assert completed.returncode == 0
    assert completed.stdout.splitlines() == [
        f"hookdeploy: error: job store {database}: file is not a database "
        "(restore it from a backup, or move it away to start an empty store)",
        "hookdeploy: the push was received, but nothing was queued"]


@pytest.mark.slow
def test_a_store_locked_by_another_process_fails_the_enqueue_after_the_busy_timeout_and_queues_nothing(
        run_cli, site_config, state_dir, pushed_clone, store):
    holder = sqlite3.connect(state_dir / "hookdeploy.db", isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        completed = run_cli("deploy", "site", config=site_config)
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert completed.returncode == 2
    line = one_line(completed)
    assert line.startswith(f"hookdeploy: error: job store {state_dir / 'hookdeploy.db'}: database is locked"), line
    assert "another process" in line
    assert store.jobs("site") == []


@pytest.mark.parametrize("how", ["under a file", "a file"])
def test_an_unusable_state_dir_is_named(run_cli, write_config, site_repo_path, tmp_path, how):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where a folder should be\n")
    state = blocker / "state" if how == "under a file" else blocker
    config = write_config({"site": {"repo": str(site_repo_path)}}, server={"state_dir": str(state)})
    completed = run_cli("status", config=config)
    assert completed.returncode == 2
    line = one_line(completed)
    assert line.startswith(f"hookdeploy: error: job store {state / 'hookdeploy.db'}: "), line
    assert blocker.read_text() == "a file where a folder should be\n"
