"""Docker fixtures and helpers for the pipeline tests: a hookdeploy instance of its own per test
(unique `server.name`, free proxy port, own state_dir), real git repos, the worker run in-process
or as a subprocess, HTTP requests to the published proxy port, and cleanup by label.

Every Docker object an instance makes carries `hookdeploy.instance=NAME`; `Instance.cleanup`
removes exactly those (containers, images, network), so concurrent runs never touch each other.

conftest.py loads this module as a plugin (pytest_plugins): its fixtures (docker_engine, instance,
make_instance) reach every test module without an import, and each test using docker_engine is
marked `docker`. Import only the helpers (site_files, Instance, Load, ...).
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Mapping, NamedTuple, NoReturn

import pytest

BASE_IMAGE = "hookdeploy-nginx:local"
HOOKDEPLOY = Path(sys.executable).parent / "hookdeploy"
GIT = ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-c", "init.defaultBranch=deploy"]

# Fast but not flaky on a loaded two-core machine: a good nginx answers well inside the deadline.
FAST_HEALTH = {"path": "/health", "contains": "healthy", "timeout": 0.5, "interval": 0.1, "deadline": 4.0}


# -- the engine ----------------------------------------------------------------------------------------


def engine_problem() -> str | None:
    """Why the Docker engine cannot be used here, or None when it answers with the base image."""
    try:
        import docker

        client = docker.from_env(timeout=20)
        client.ping()
        client.images.get(BASE_IMAGE)
    except ImportError:
        return "the docker SDK is not installed"
    except Exception as error:  # noqa: BLE001 - any failure means no usable engine
        return f"{type(error).__name__}: {error}"
    return None


def unavailable(message: str) -> NoReturn:
    """Skip the test for want of the engine (or the browser), or fail it with HOOKDEPLOY_REQUIRE_DOCKER=1
    (scripts/test.sh, CI), where a missing piece is a broken machine, not a reason to pass."""
    if os.environ.get("HOOKDEPLOY_REQUIRE_DOCKER") == "1":
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture(scope="session")
def docker_engine():
    """A docker SDK client; skip (or fail, with HOOKDEPLOY_REQUIRE_DOCKER=1) when no engine answers."""
    problem = engine_problem()
    if problem is not None:
        unavailable(f"no usable Docker engine ({problem}); run scripts/ensure-docker.sh")
    import docker

    client = docker.from_env(timeout=120)
    yield client
    client.close()


def free_port() -> int:
    """A TCP port on 127.0.0.1 nobody listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


# -- the site: files of one commit ---------------------------------------------------------------------


def site_files(version: str, *, health: str | None = "healthy\n", dockerfile_tail: str = "",
               extra: Mapping[str, "str | Link"] | None = None) -> dict[str, "str | Link"]:
    """The whole tree of a static site commit: nginx serving `version` at / and `health` at /health."""
    files = {
        "Dockerfile": f"FROM {BASE_IMAGE}\nCOPY site/ /usr/share/nginx/html/\n{dockerfile_tail}",
        "site/index.html": f"<p>{version}</p>\n",
    }
    if health is not None:
        files["site/health"] = health
    files.update(extra or {})
    return files


def api_site_files(version: str, api_status: int) -> dict[str, "str | Link"]:
    """The test site, with /api answering `api_status` (a release healthy at /health that fails elsewhere)."""
    conf = ("server {\n    listen 80;\n    root /usr/share/nginx/html;\n"
            f"    location /api {{\n        return {api_status} \"{version} api\\n\";\n    }}\n}}\n")
    return site_files(version, dockerfile_tail="COPY default.conf /etc/nginx/conf.d/default.conf\n",
                      extra={"default.conf": conf})


# -- git -----------------------------------------------------------------------------------------------


def git(*arguments: str, cwd: Path | None = None) -> str:
    """Run git with a fixed identity; return stdout."""
    return subprocess.run([*GIT, *arguments], cwd=cwd, check=True, capture_output=True, text=True,
                          timeout=60).stdout.strip()


class Link(NamedTuple):
    """A symlink in a commit (as a value of the files mapping): where it points."""

    target: str


@dataclass
class Repo:
    """An app's bare repo and a work clone that pushes to it; every commit is a whole snapshot."""

    bare: Path
    work: Path

    @classmethod
    def create(cls, root: Path) -> "Repo":
        bare, work = root / "repo.git", root / "work"
        git("init", "-q", "--bare", str(bare))
        git("init", "-q", str(work))
        git("remote", "add", "production", str(bare), cwd=work)
        return cls(bare, work)

    def commit(self, files: Mapping[str, "str | Link"], message: str = "change") -> str:
        """Replace the tree with `files`, commit, push to the bare repo; return the SHA."""
        for path in sorted(self.work.rglob("*"), reverse=True):
            if ".git" not in path.relative_to(self.work).parts:
                path.unlink() if path.is_symlink() or path.is_file() else path.rmdir()
        for name, text in files.items():
            target = self.work / name
            target.parent.mkdir(parents=True, exist_ok=True)
            if isinstance(text, Link):
                target.symlink_to(text.target)
            else:
                target.write_text(text)
        git("add", "--all", cwd=self.work)
        git("commit", "--allow-empty", "-q", "-m", message, cwd=self.work)
        git("push", "-q", "production", "HEAD:deploy", cwd=self.work)
        return git("rev-parse", "HEAD", cwd=self.work)


# -- HTTP through the proxy ----------------------------------------------------------------------------


class Answer(NamedTuple):
    """One HTTP response."""

    status: int
    release: str | None
    body: str


def get(port: int, path: str = "/", host: str | None = None, timeout: float = 5.0,
        address: str = "127.0.0.1") -> Answer:
    """GET http://ADDRESS:PORT/PATH (with Host: `host` when given)."""
    connection = http.client.HTTPConnection(address, port, timeout=timeout)
    try:
        connection.request("GET", path, headers={"Host": host} if host else {})
        response = connection.getresponse()
        return Answer(response.status, response.getheader("X-Hookdeploy-Release"), response.read().decode())
    finally:
        connection.close()


@dataclass
class Load:
    """Modest, bounded load on the proxy: a few threads GETting / until stopped; every outcome recorded."""

    port: int
    host: str | None = None
    threads: int = 3
    path: str = "/"
    pause: float = 0.01
    address: str = "127.0.0.1"
    releases: dict[str, int] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    requests: int = 0

    def __post_init__(self):
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._pool = ThreadPoolExecutor(self.threads, thread_name_prefix="load")

    def _get(self) -> Answer:
        """One request (TlsLoad makes it over HTTPS)."""
        return get(self.port, self.path, self.host, timeout=10, address=self.address)

    def _hammer(self) -> None:
        while not self._stop.is_set():
            try:
                answer = self._get()
                outcome = None if answer.status == 200 and answer.release else f"status {answer.status}"
            except (OSError, http.client.HTTPException) as error:
                answer, outcome = None, f"{type(error).__name__}: {error}"
            with self._lock:
                self.requests += 1
                if outcome:
                    self.errors.append(outcome)
                else:
                    self.releases[answer.release] = self.releases.get(answer.release, 0) + 1
            self._stop.wait(self.pause)

    def __enter__(self) -> "Load":
        self._futures = [self._pool.submit(self._hammer) for _ in range(self.threads)]
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        for future in self._futures:
            future.result()
        self._pool.shutdown()


def wait_for(condition, timeout: float = 30.0, what: str = "condition"):
    """What `condition()` returns once it is true, asked every 0.1 s; AssertionError after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = condition()
        if found:
            return found
        time.sleep(0.1)
    raise AssertionError(f"no {what} within {timeout} s")


# -- an instance -------------------------------------------------------------------------------------


def toml_value(value: Any) -> str:
    """A Python value as TOML (json's strings are valid TOML basic strings)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float, str)):
        return json.dumps(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(toml_value(item) for item in value) + "]"
    return "{" + ", ".join(f"{key} = {toml_value(item)}" for key, item in value.items()) + "}"


class Instance:
    """One hookdeploy instance: its own name, proxy port, state_dir, deploy.toml, apps and repos."""

    def __init__(self, root: Path, client, name: str | None = None):
        self.root = root
        self.client = client
        self.name = name or f"t{secrets.token_hex(4)}"
        self.address = "127.0.0.1"  # where the proxy publishes, on this machine
        self.port = free_port()
        self.state_dir = root / "state"
        self.config_path = root / "deploy.toml"
        self.repos: dict[str, Repo] = {}
        self._store = None

    # config and store

    def configure(self, apps: Mapping[str, Mapping[str, Any]], extra: str = "",
                  proxy: Mapping[str, Any] | None = None) -> Path:
        """Write deploy.toml: these apps (repo defaults to the app's own bare repo, unless the app
        names an `image`), fast health and drain; `proxy` keys besides image and publish (say,
        publish_tls); `extra` TOML (say, a [registry] table) at the end."""
        lines = ["[server]", f"name = {toml_value(self.name)}", f"state_dir = {toml_value(str(self.state_dir))}",
                 f"listen = \"127.0.0.1:{free_port()}\"", "",
                 "[proxy]", f"image = {toml_value(BASE_IMAGE)}", f"publish = \"{self.address}:{self.port}\"",
                 *(f"{key} = {toml_value(value)}" for key, value in (proxy or {}).items()), ""]
        for app, table in apps.items():
            if app not in self.repos and "image" not in table:
                self.repos[app] = Repo.create(self.root / "git" / app)
            source = {} if "image" in table else {"repo": str(self.repos[app].bare)}
            table = {**source, "drain_seconds": 0.3, **table,
                     "health": {**FAST_HEALTH, **table.get("health", {})}}
            lines.append(f"[apps.{app}]")
            lines += [f"{key} = {toml_value(value)}" for key, value in table.items()]
            lines.append("")
        self.config_path.write_text("\n".join(lines + [extra]))
        return self.config_path

    @property
    def config(self):
        from hookdeploy.core.config import load

        return load(self.config_path)

    @property
    def store(self):
        if self._store is None:
            from hookdeploy.core.store import Store

            self._store = Store(self.state_dir / "hookdeploy.db")
        return self._store

    # jobs

    def commit(self, app: str, files: Mapping[str, str], message: str = "change") -> str:
        """Commit a whole tree to the app's repo; return its SHA (nothing is queued)."""
        return self.repos[app].commit(files, message)

    def enqueue(self, app: str, sha: str, **options):
        """Queue a deploy (or, with kind=JobKind.ROLLBACK, a rollback) of `sha`; return the job."""
        return self.store.enqueue(app, sha, **options)

    def work(self) -> None:
        """Run a worker in this process until nothing is queued."""
        from hookdeploy.engine.worker import Worker

        Worker(self.config, self.store).run(threading.Event(), drain=True)

    def deploy(self, app: str, files: Mapping[str, str], message: str = "change"):
        """Commit, queue and run a deploy; return the finished job."""
        job = self.enqueue(app, self.commit(app, files, message))
        self.work()
        return self.store.job(job.id)

    def cli(self, *arguments: str, env: Mapping[str, str] | None = None, timeout: float = 120
            ) -> subprocess.CompletedProcess:
        """Run the installed `hookdeploy` script against this instance's config."""
        environment = {key: value for key, value in os.environ.items()
                       if key not in ("HOOKDEPLOY_CONFIG", "HOOKDEPLOY_FAULT")}
        environment.update(env or {})
        return subprocess.run([str(HOOKDEPLOY), "--config", str(self.config_path), *arguments],
                              capture_output=True, text=True, env=environment, timeout=timeout)

    def worker_process(self, fault: str | None = None) -> subprocess.CompletedProcess:
        """`hookdeploy worker --drain` as a subprocess, optionally killed at a step by HOOKDEPLOY_FAULT."""
        return self.cli("worker", "--drain", env={"HOOKDEPLOY_FAULT": fault} if fault else None)

    def events(self, job_id: int) -> list[str]:
        return [event.message for event in self.store.events(job_id)]

    # looking

    def get(self, path: str = "/", host: str | None = None) -> Answer:
        return get(self.port, path, host, address=self.address)

    def containers(self, **labels: str) -> list:
        """This instance's containers (all states), with optional extra hookdeploy.* labels."""
        filters = [f"hookdeploy.instance={self.name}"] + [f"hookdeploy.{key}={value}" for key, value in labels.items()]
        return self.client.containers.list(all=True, filters={"label": filters})

    def container_names(self) -> set[str]:
        return {container.name for container in self.containers()}

    def images(self) -> set[str]:
        """Tags of this instance's images."""
        images = self.client.images.list(filters={"label": f"hookdeploy.instance={self.name}"})
        return {tag for image in images for tag in image.tags}

    def proxy_files(self) -> dict[str, str]:
        """conf.d as the proxy sees it: file name → text."""
        directory = self.state_dir / "proxy" / "conf.d"
        return {path.name: path.read_text() for path in sorted(directory.glob("*.conf"))}

    def expected_containers(self, *apps: str) -> set[str]:
        """The proxy plus the live container of each app: all an idle instance should run."""
        live = {self.store.live_release(app).container for app in (apps or self.repos)}
        return live | {f"{self.name}-proxy"}

    def cleanup(self) -> None:
        """Remove every container, image, network and volume labelled with this instance."""
        if self._store is not None:
            self._store.close()
        label = {"label": f"hookdeploy.instance={self.name}"}
        for container in self.client.containers.list(all=True, filters=label):
            _quietly(container.remove, force=True)
        # The engine's list as it is (images.list() inspects each image after listing, and fails when
        # another test on this engine removes one in between); an image app's pulls carry no label of ours.
        pulled = [image["Id"] for image in self.client.api.images()
                  if any(tag.startswith(f"{self.name}/") for tag in image.get("RepoTags") or ())]
        for image in [image["Id"] for image in self.client.api.images(filters=label)] + pulled:
            _quietly(self.client.images.remove, image, force=True)
        for network in self.client.networks.list(filters=label):
            _quietly(network.remove)
        for volume in self.client.volumes.list(filters=label):  # apps' named volumes
            _quietly(volume.remove, force=True)


@contextlib.contextmanager
def live_instance(root: Path, client, app: Mapping[str, Any], version: str) -> Iterator[Instance]:
    """An instance whose one app `site` (configured with `app`) has `version` live; removed afterwards."""
    made = Instance(root, client)
    try:
        made.configure({"site": app})
        job = made.deploy("site", site_files(version))
        assert job.state.value == "succeeded", job.error
        yield made
    finally:
        made.cleanup()


def _quietly(function, *arguments, **options) -> None:
    try:
        function(*arguments, **options)
    except Exception:  # noqa: BLE001 - cleanup goes on whatever one object does
        pass


@pytest.fixture
def instance(docker_engine, tmp_path):
    """A fresh instance for one test; everything it made in Docker is removed afterwards."""
    made = Instance(tmp_path, docker_engine)
    try:
        yield made
    finally:
        made.cleanup()


@pytest.fixture
def make_instance(docker_engine, tmp_path):
    """A function making further instances for one test (each removed afterwards)."""
    made: list[Instance] = []

    def make() -> Instance:
        new = Instance(tmp_path / f"instance{len(made)}", docker_engine)
        new.root.mkdir()
        made.append(new)
        return new

    try:
        yield make
    finally:
        for each in made:
            each.cleanup()


def died_of_sigkill(completed: subprocess.CompletedProcess) -> bool:
    """True if the process was ended by SIGKILL."""
    return completed.returncode == -signal.SIGKILL


@contextlib.contextmanager
def hooked_site_with_worker(instance: "Instance") -> Iterator["Instance"]:
    """The app `site` with its post-receive hook installed and a `hookdeploy worker` process running (alive in
    the store, so a push follows its job), as a pusher finds a server; the worker is stopped after."""
    instance.configure({"site": {}})
    assert instance.cli("init-repo", "site").returncode == 0
    worker = subprocess.Popen([str(HOOKDEPLOY), "--config", str(instance.config_path), "worker"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 20
    while not instance.store.worker_alive(10) and time.monotonic() < deadline:
        time.sleep(0.05)
    try:
        yield instance
    finally:
        worker.terminate()
        worker.wait(60)
