"""Shared fixtures: a deploy.toml in a temp dir, a real bare repo made by `hookdeploy init-repo`,
a work clone with commits, the CLI run in-process (click) and as a subprocess, the job store, and
the web app (Flask test client) or `hookdeploy serve` on a config with webhooks, with API tokens.

Everything here is real: git, SQLite files, the installed `hookdeploy` script. The Docker fixtures
(docker_engine, instance, make_instance) live in docker_helpers.py, loaded as a plugin below, so
every test module can ask for them without importing them.

Markers (registered in pyproject.toml): a test using docker_engine (directly or through instance,
make_instance or another fixture) is marked `docker` here; tests taking seconds (sleeps past an
expiry, fuzzing, a real `hookdeploy serve` or other processes) carry `slow`. The quick run leaves
both out: `pytest -m "not docker and not slow"`.

Fixtures are shared by several test modules: add new ones, never rename or remove one.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

import pytest

if TYPE_CHECKING:
    from webhook_helpers import Served, WebApp

pytest_plugins = ["docker_helpers", "registry_helpers", "cluster_helpers", "pebble_helpers", "buildhost_helpers"]

HOOKDEPLOY = Path(sys.executable).parent / "hookdeploy"
GIT_IDENTITY = ("-c", "user.name=t", "-c", "user.email=t@t")
# Passed as --receive-pack: the remote side of the push then finds no hooks, so nothing is queued.
RECEIVE_PACK_WITHOUT_HOOKS = "git -c core.hooksPath=/dev/null receive-pack"
ZERO_SHA = "0" * 40


# -- markers -----------------------------------------------------------------------------------------


@pytest.hookimpl(tryfirst=True)  # before `-m` deselects by marker
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark `docker` every test that needs the engine, however it reaches the docker_engine fixture."""
    for item in items:
        if "docker_engine" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.docker)


# -- TOML -------------------------------------------------------------------------------------------


def toml_value(value: Any) -> str:
    """A Python value as a TOML value (tables become inline tables)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        escaped = "".join(c if c.isprintable() and c not in '"\\' else f"\\u{ord(c):04x}" if ord(c) < 0x10000
                          else f"\\U{ord(c):08x}" for c in value)
        return f'"{escaped}"'
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(toml_value(item) for item in value) + "]"
    if isinstance(value, Mapping):
        return "{" + ", ".join(f"{toml_key(key)} = {toml_value(item)}" for key, item in value.items()) + "}"
    raise TypeError(f"no TOML form for {value!r}")


def toml_key(key: str) -> str:
    """A bare TOML key when it can be one, else a quoted one."""
    if key and all(c.isascii() and (c.isalnum() or c in "-_") for c in key):
        return key
    return toml_value(key)


def toml_table(name: str, table: Mapping[str, Any]) -> str:
    """`[name]` and its keys; sub-tables are written as inline tables."""
    lines = [f"[{name}]"] + [f"{toml_key(key)} = {toml_value(value)}" for key, value in table.items()]
    return "\n".join(lines) + "\n"


def toml_document(apps: Mapping[str, Mapping[str, Any]], server: Mapping[str, Any] | None = None,
                  proxy: Mapping[str, Any] | None = None) -> str:
    """A deploy.toml with [server], [proxy] and one [apps.NAME] table per app."""
    parts = []
    if server is not None:
        parts.append(toml_table("server", server))
    if proxy is not None:
        parts.append(toml_table("proxy", proxy))
    for name, table in apps.items():
        parts.append(toml_table(f"apps.{toml_key(name)}", table))
    return "\n".join(parts)


# -- config --------------------------------------------------------------------------------------------


def with_state_dir(text: str, state_dir: Path) -> str:
    """deploy.toml text with `state_dir = <state_dir>` in its [server] table, unless it names one already
    (or has a top-level `server` key that is no table: that is what such a test is about)."""
    if "state_dir" in text or re.search(r"^\s*server\s*=", text, re.MULTILINE):
        return text
    line = f"state_dir = {toml_value(str(state_dir))}\n"
    if re.search(r"^\[server\]\s*$", text, re.MULTILINE):
        return re.sub(r"^\[server\]\s*$\n?", lambda match: f"[server]\n{line}", text, count=1, flags=re.MULTILINE)
    return text + ("" if not text or text.endswith("\n") else "\n") + "\n[server]\n" + line


@pytest.fixture
def state_dir(tmp_path: Path) -> Path:
    """The state_dir every config written by `write_config` uses (unless told otherwise)."""
    return tmp_path / "state"


@pytest.fixture
def write_config(tmp_path: Path, state_dir: Path):
    """A function writing tmp_path/deploy.toml (or `name`) and returning its absolute path.

    `content` is either TOML text or a dict of apps ({"site": {"repo": ...}}); for a dict, [server]
    gets state_dir=<tmp>/state, listen on 127.0.0.1:18080 and the offline proxy image unless
    `server=`/`proxy=` override keys. Text that names no state_dir (server.state_dir is required)
    gets state_dir=<tmp>/state in its [server] table (added at the end if it has none), unless
    `add_state_dir=False`: then it is written as is.
    """

    def write(content: str | Mapping[str, Mapping[str, Any]], *, server: Mapping[str, Any] | None = None,
              proxy: Mapping[str, Any] | None = None, name: str = "deploy.toml", add_state_dir: bool = True) -> Path:
        if isinstance(content, str):
            text = with_state_dir(content, state_dir) if add_state_dir else content
        else:
            text = toml_document(
                content,
                server={"state_dir": str(state_dir), "listen": "127.0.0.1:18080", **(server or {})},
                proxy={"image": "hookdeploy-nginx:local", "publish": "127.0.0.1:18081", **(proxy or {})},
            )
        path = tmp_path / name
        path.write_text(text, encoding="utf-8")
        return path.absolute()

    return write


@pytest.fixture
def site_repo_path(tmp_path: Path) -> Path:
    """Where the `site` app's bare repo lives (not created by this fixture)."""
    return tmp_path / "git" / "site.git"


@pytest.fixture
def site_config(write_config, site_repo_path: Path) -> Path:
    """A valid deploy.toml with one app, `site`, deploying branch `deploy` from a local bare repo."""
    return write_config({"site": {"repo": str(site_repo_path), "branch": "deploy"}})


# -- the CLI -------------------------------------------------------------------------------------------


@pytest.fixture
def hookdeploy_env() -> dict[str, str]:
    """The environment the CLI subprocess gets: no HOOKDEPLOY_CONFIG leaking in from outside."""
    env = {key: value for key, value in os.environ.items() if key != "HOOKDEPLOY_CONFIG"}
    env.setdefault("LC_ALL", "C.UTF-8")
    return env


@pytest.fixture
def run_cli(hookdeploy_env: dict[str, str], tmp_path: Path):
    """A function running the installed `hookdeploy` script as a subprocess; returns CompletedProcess.

    run_cli("status", "--json", config=path, input="...", env={...}, cwd=...): `config` adds
    `--config PATH` in front; `env` entries are added to (or, when None, removed from) the
    environment; cwd defaults to tmp_path. Output is text; the exit status is not checked.
    """

    def run(*arguments: str, config: str | os.PathLike | None = None, input: str | bytes | None = None,
            env: Mapping[str, str | None] | None = None, cwd: str | os.PathLike | None = None,
            timeout: float = 60) -> subprocess.CompletedProcess:
        command = [str(HOOKDEPLOY)] + (["--config", str(config)] if config is not None else []) + list(arguments)
        environment = dict(hookdeploy_env)
        for key, value in (env or {}).items():
            if value is None:
                environment.pop(key, None)
            else:
                environment[key] = value
        return subprocess.run(command, input=input, capture_output=True, text=not isinstance(input, bytes),
                              env=environment, cwd=cwd or tmp_path, timeout=timeout)

    return run


@pytest.fixture
def invoke(monkeypatch):
    """A function running the CLI in-process through click.testing.CliRunner; returns the click Result.

    invoke("status", "--json", config=path, input="..."): `config` adds `--config PATH` in front.
    result.stdout and result.stderr are separate; result.exit_code is the exit status.
    """
    from click.testing import CliRunner

    from hookdeploy.cli.main import cli

    monkeypatch.delenv("HOOKDEPLOY_CONFIG", raising=False)

    def run(*arguments: str, config: str | os.PathLike | None = None, input: str | None = None,
            env: Mapping[str, str | None] | None = None):
        command = (["--config", str(config)] if config is not None else []) + list(arguments)
        return CliRunner().invoke(cli, command, input=input, env=dict(env or {}), catch_exceptions=False)

    return run


# -- git -----------------------------------------------------------------------------------------------


def git(*arguments: str, cwd: str | os.PathLike | None = None, input: str | None = None,
        check: bool = True) -> subprocess.CompletedProcess:
    """Run git with a fixed identity; return the CompletedProcess (text output)."""
    return subprocess.run(["git", *GIT_IDENTITY, *arguments], cwd=cwd, input=input, capture_output=True,
                          text=True, check=check, timeout=60)


@pytest.fixture
def site_bare_repo(site_config: Path, run_cli, site_repo_path: Path) -> Path:
    """The `site` app's bare repo, made by `hookdeploy init-repo site` (post-receive hook installed)."""
    completed = run_cli("init-repo", "site", config=site_config)
    assert completed.returncode == 0, completed.stderr
    return site_repo_path


@dataclass
class WorkClone:
    """A working repository whose remote `production` is the app's bare repo."""

    path: Path
    remote: Path
    branch: str = "deploy"

    def git(self, *arguments: str, check: bool = True, input: str | None = None) -> subprocess.CompletedProcess:
        """Run git in the clone."""
        return git(*arguments, cwd=self.path, check=check, input=input)

    def commit(self, message: str = "change", files: Mapping[str, str] | None = None) -> str:
        """Write `files` (default: one file named after the message) and commit them; return the SHA."""
        for name, text in (files or {f"{message}.txt": f"{message}\n"}).items():
            target = self.path / name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(text)
        self.git("add", "--all")
        self.git("commit", "--allow-empty", "-q", "-m", message)
        return self.head()

    def head(self, ref: str = "HEAD") -> str:
        """The full SHA `ref` points at."""
        return self.git("rev-parse", f"{ref}^{{commit}}").stdout.strip()

    def push(self, *refspecs: str, hooks: bool = True, check: bool = False) -> subprocess.CompletedProcess:
        """`git push production REFSPEC...` (default: the branch); with hooks=False no hook runs remotely."""
        options = [] if hooks else [f"--receive-pack={RECEIVE_PACK_WITHOUT_HOOKS}"]
        return self.git("push", *options, "production", *(refspecs or (self.branch,)), check=check)


@pytest.fixture
def work_clone(tmp_path: Path, site_bare_repo: Path) -> WorkClone:
    """A work repo on branch `deploy` with one commit (not pushed), remote `production` = the site repo."""
    path = tmp_path / "work"
    git("init", "-q", "-b", "deploy", str(path))
    clone = WorkClone(path=path, remote=site_bare_repo)
    clone.git("remote", "add", "production", str(site_bare_repo))
    clone.commit("first", {"index.html": "<p>first</p>\n"})
    return clone


@pytest.fixture
def pushed_clone(work_clone: WorkClone) -> WorkClone:
    """The work clone with three commits on `deploy`, pushed without running the hook (nothing queued)."""
    work_clone.commit("second")
    work_clone.commit("third")
    completed = work_clone.push(hooks=False)
    assert completed.returncode == 0, completed.stderr
    return work_clone


# -- the store -----------------------------------------------------------------------------------------


@pytest.fixture
def store(state_dir: Path):
    """The job store at <tmp>/state/hookdeploy.db: the one configs from `write_config` use."""
    from hookdeploy.core.store import Store

    opened = Store(state_dir / "hookdeploy.db")
    yield opened
    opened.close()


def fake_sha(number: int) -> str:
    """A well-formed 40-hex SHA derived from a number (for store tests that need no real commit)."""
    return f"{number:040x}"


# -- the web app and `hookdeploy serve` ------------------------------------------------------------


@pytest.fixture
def secrets_in_environment(monkeypatch) -> dict[str, str]:
    """webhook_helpers.SECRETS (the apps' webhook secrets and HOOKDEPLOY_SECRET) set in the environment."""
    from webhook_helpers import SECRETS

    for key, value in SECRETS.items():
        monkeypatch.setenv(key, value)
    return SECRETS


@pytest.fixture
def served(tmp_path: Path) -> Served:
    """(config path, port, deploy SHAs): webhook_helpers.write_config's apps site (github), lab (gitlab),
    tea (gitea), pinned and plain on one repo from make_repo, listening on a free port.
    served.server() is `hookdeploy serve --no-worker` on it (a Server, not started)."""
    from webhook_helpers import Served

    return Served.make(tmp_path)


@pytest.fixture
def web_app(served: Served, secrets_in_environment) -> WebApp:
    """The Flask app in process (test client, store, config, SHAs) on `served`'s config."""
    from webhook_helpers import WebApp

    return WebApp.of(served)


@pytest.fixture
def read_token(served: Served) -> str:
    """An API token of scope `read`, signed with the HOOKDEPLOY_SECRET of webhook_helpers.SECRETS and
    recorded in `served`'s store."""
    from webhook_helpers import issue_token

    return issue_token(served.config, "read")


@pytest.fixture
def deploy_token(served: Served) -> str:
    """An API token of scope `deploy` (which includes read), recorded in `served`'s store."""
    from webhook_helpers import issue_token

    return issue_token(served.config, "deploy")
