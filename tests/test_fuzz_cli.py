"""The command line fuzzed (hypothesis): any arguments to any command exit 0 or 2 (doctor: 1 when it found
problems), never a traceback; each line printed is printable (control characters escaped); a refusal
(exit 2) is one `hookdeploy: ...` line a problem on stderr, nothing on stdout, and queues nothing.

In-process through click's CliRunner (catch_exceptions=False: an exception fails the test) for speed, then a
few runs of the installed script for the real exit status and stderr. Left out: `serve` and `worker`, which
run until stopped, and `logs --follow`/`--wait` on a job that could still run (the store's jobs have ended).
"""

from __future__ import annotations

import os
import subprocess
import tempfile
from pathlib import Path

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from conftest import HOOKDEPLOY, fake_sha
from hookdeploy.cli.main import cli
from hookdeploy.core.models import JobState
from hookdeploy.core.store import Store

pytestmark = pytest.mark.slow

FUZZ = settings(max_examples=int(os.environ.get("HOOKDEPLOY_FUZZ_EXAMPLES", 1000)), deadline=None,
                derandomize=not os.environ.get("HOOKDEPLOY_FUZZ_RANDOM"), database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

COMMANDS = [["status"], ["history"], ["logs"], ["deploy"], ["replay"], ["rollback"], ["token", "create"], ["init-repo"],
            ["hook"], ["doctor"], ["token"], ["token", "list"], ["token", "revoke"], ["app-logs"], ["remove"], ["tasks"],
            [], ["nosuch"]]
# Not here: stop, start and task queue jobs no worker runs (a later --wait or logs --follow of them would wait
# forever); run starts a container and exits with its command's status.
WORDS = ["site", "blog", "--json", "--limit", "--ref", "--to", "--image", "--wait", "--follow", "--scope", "--ttl",
         "--no-follow", "--tail", "--since", "--volumes", "--help", "-h", "--", "-", "--config", "read", "deploy", "0", "1", "2", "-1", "9223372036854775807",
         "9223372036854775808", "9" * 400, "nan", "1e400", "abcd", "ABCD", fake_sha(1), fake_sha(1)[:7],
         "@sha256:" + "a" * 64, "@sha256:x", "latest", "HEAD", "refs/heads/deploy", "a..b", "Site", "site\n", "\x1b[2J",
         "\x1b]0;title\x07", "a\nb", "\u2028", "\u00b2", "", " ", "--json=1", "--limit=0", "-x", "--version"]
# Anything argv can hold: no NUL (the kernel cannot pass one), no lone surrogates (not text).
ARGUMENT = st.one_of(st.sampled_from(WORDS), st.text(alphabet=st.characters(exclude_categories=["Cs"], exclude_characters="\x00"),
                                                     max_size=20),
                     st.integers(min_value=-(2**70), max_value=2**70).map(str))
VALUE = st.one_of(st.sampled_from(["site", "1", "2", fake_sha(1), fake_sha(2)[:7], "deploy"]), ARGUMENT)


def option(name: str, values=VALUE):
    """Either nothing or `name VALUE`."""
    return st.one_of(st.just([]), values.map(lambda value: [name, value]))


def flag(name: str):
    return st.sampled_from([[], [name]])


# Each command with its own arguments and options in their places, the values hostile: what gets past click's
# parser to hookdeploy's own checks. Then any words at all after any command: click's usage errors.
SHAPES = {
    "status": [st.one_of(st.just([]), VALUE.map(lambda value: [value])), flag("--json")],
    "history": [VALUE.map(lambda value: [value]), option("--limit"), flag("--json")],
    "logs": [VALUE.map(lambda value: [value]), flag("--follow")],
    "deploy": [VALUE.map(lambda value: [value]), option("--ref"), option("--image"), flag("--json"), flag("--wait")],
    "replay": [VALUE.map(lambda value: [value]), VALUE.map(lambda value: [value]), flag("--json"), flag("--wait")],
    "rollback": [VALUE.map(lambda value: [value]), option("--to"), flag("--json"), flag("--wait")],
    "token create": [option("--scope", st.one_of(st.sampled_from(["read", "deploy"]), VALUE)), option("--ttl")],
    "init-repo": [VALUE.map(lambda value: [value])],
    "hook": [VALUE.map(lambda value: [value]), flag("--no-follow")],
    "doctor": [],
    "token revoke": [VALUE.map(lambda value: [value])],
    "app-logs": [VALUE.map(lambda value: [value]), option("--tail"), option("--since")],
    "remove": [VALUE.map(lambda value: [value]), flag("--volumes")],
    "tasks": [VALUE.map(lambda value: [value]), flag("--json")],
}
SHAPED = st.sampled_from(sorted(SHAPES)).flatmap(
    lambda name: st.tuples(*SHAPES[name]).map(lambda parts: (name.split(), [word for part in parts for word in part])))
COMMAND_LINE = st.one_of(SHAPED, SHAPED, SHAPED, st.tuples(st.sampled_from(COMMANDS), st.lists(ARGUMENT, max_size=5)))


def make_instance(folder: Path) -> tuple[Path, Store]:
    """A config with an app `site` (its bare repo not made) and a store holding ended jobs of it."""
    state = folder / "state"
    config = folder / "deploy.toml"
    config.write_text(f'[server]\nstate_dir = "{state}"\nsecret_env = "FUZZ_SECRET"\n'
                      '[proxy]\nimage = "hookdeploy-nginx:local"\npublish = "127.0.0.1:18081"\n'
                      f'[apps.site]\nrepo = "{folder / "site.git"}"\n')
    store = Store(state / "hookdeploy.db")
    # One live release and one failed job: nothing to roll back to, nothing that could still run (so no
    # --wait or --follow waits), and a deploy or replay fails on the missing repo: no command line queues.
    for number, final in ((1, JobState.SUCCEEDED), (2, JobState.FAILED)):
        store.enqueue("site", fake_sha(number))
        job = store.claim("fuzz")
        if final is JobState.SUCCEEDED:
            store.record_live("site", job.sha, "fuzz/site:1", "fuzz-site-1", job.id)
        store.log(job.id, "a line")
        store.finish(job.id, final, error=None if final is JobState.SUCCEEDED else "it failed")
    return config, store


def jobs_of(store: Store) -> list:
    return [(job.id, job.state, job.sha) for job in store.jobs(limit=1000)]


def check_result(arguments: list[str], exit_code: int, stdout: str, stderr: str) -> None:
    """The property every command line keeps, whatever it asked."""
    lines = stderr.splitlines()
    for line in stdout.splitlines() + lines:
        assert line.isprintable(), repr(line)
    if "doctor" in arguments and exit_code == 1:
        assert stdout.rstrip().endswith(("problem found", "problems found")), stdout
        return
    assert exit_code in (0, 2), (exit_code, stdout, stderr)
    if exit_code == 2 and not stderr.startswith("Usage:"):  # a bare group (`hookdeploy token`) shows its help
        assert stdout == "", stdout
        assert lines and all(line.startswith("hookdeploy: ") for line in lines), lines


@pytest.fixture(scope="module")
def instance():
    with tempfile.TemporaryDirectory() as folder:
        config, store = make_instance(Path(folder))
        yield Path(folder), config, store


@FUZZ
@given(COMMAND_LINE)
def test_any_command_line_exits_0_or_2_in_one_line_a_problem(instance, command_line):
    folder, config, store = instance
    command, extra = command_line
    arguments = ["--config", str(config), *command, *extra]
    before = jobs_of(store)
    result = CliRunner().invoke(cli, arguments, env={"HOOKDEPLOY_CONFIG": None, "FUZZ_SECRET": "s" * 32},
                                catch_exceptions=False)
    event(f"{' '.join(command) or '(none)'}: exit {result.exit_code}")
    check_result(arguments, result.exit_code, result.stdout, result.stderr)
    if result.exit_code == 2:
        assert jobs_of(store) == before, "a refused command queued or changed a job"


@settings(FUZZ, max_examples=12)
@given(COMMAND_LINE)
def test_the_installed_script_keeps_it_too(instance, command_line):
    """The real process: its exit status and stderr, through __main__ (the hook's fast path included)."""
    folder, config, store = instance
    command, extra = command_line
    arguments = ["--config", str(config), *command, *extra]
    before = jobs_of(store)
    environment = {key: value for key, value in os.environ.items() if key != "HOOKDEPLOY_CONFIG"}
    completed = subprocess.run([str(HOOKDEPLOY), *arguments], capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL,
                               env={**environment, "LC_ALL": "C.UTF-8", "FUZZ_SECRET": "s" * 32}, errors="surrogateescape")
    assert "Traceback" not in completed.stderr
    check_result(arguments, completed.returncode, completed.stdout, completed.stderr)
    if completed.returncode == 2:
        assert jobs_of(store) == before
