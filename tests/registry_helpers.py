"""A real Distribution registry for the tests that push and pull release images: Debian's
`docker-registry` (v2.8, installed by scripts/ensure-tools.sh) run as `docker-registry serve
config.yml` on a free 127.0.0.1 port, with htpasswd (bcrypt) basic auth, filesystem storage in the
test's tmp dir and, when asked, one notification endpoint; and a tiny HTTP server that receives
those notifications.

The Docker engine treats registries on 127.0.0.0/8 as insecure (plain HTTP) without any daemon
config, so `docker_engine.images.push(registry.image("rig/app", "v1"), auth_config=registry.auth_config)`
works as is. Every local tag a test makes under `registry.url` is removed by
`Registry.remove_local_tags` (ports are unique, so those tags belong to that registry alone).

What docker-registry 2.8 sends (see tests/fixtures/webhooks/registry-push.json for a real envelope):
one POST per event with Content-Type `application/vnd.docker.distribution.events.v1+json`, body
{"events": [...]}; a manifest PUT gives action "push" with target.mediaType the manifest's type,
target.digest, target.tag and target.repository; blob events (target.mediaType
`application/octet-stream`) are left out by `ignoredmediatypes`; a HEAD or GET of a manifest (as in
`Registry.manifest_digest`, or a pull) gives action "pull". Pushing the same tag again sends "push" again.

Fixtures (load with `pytest_plugins = ["registry_helpers"]`): registry (running, no notifications),
notification_sink (listening), notifying_registry (running, notifying notification_sink with
NOTIFY_AUTHORIZATION). Helpers: Registry, NotificationSink, Delivery, Response, registry_problem.
"""

from __future__ import annotations

import base64
import http.server
import json
import secrets
import shutil
import subprocess
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

import pytest

from docker_helpers import free_port, unavailable

REGISTRY = "docker-registry"
HTPASSWD = "htpasswd"
EVENTS_MEDIA_TYPE = "application/vnd.docker.distribution.events.v1+json"
MANIFEST_MEDIA_TYPES = (
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.oci.image.index.v1+json",
)
NOTIFY_AUTHORIZATION = "Bearer registry-notify-token"
REALM = "hookdeploy-test-registry"


def registry_problem() -> str | None:
    """Why no registry can be run here (a program missing), or None."""
    for program in (REGISTRY, HTPASSWD):
        if shutil.which(program) is None:
            return f"{program} is not installed; run scripts/ensure-tools.sh"
    return None


def basic_authorization(username: str, password: str) -> str:
    """The value of an `Authorization: Basic ...` header."""
    return "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode()


# -- the registry ----------------------------------------------------------------------------------


@dataclass
class Response:
    """One HTTP response from the registry (errors included: status says what happened)."""

    status: int
    headers: Mapping[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


class Registry:
    """One docker-registry process: config, htpasswd file, storage and log under `root`.

    Registry(root, username=..., password=..., notify_url=..., notify_authorization=...); start(),
    stop() and start() again keep the port and the storage (and http.secret, so the registry still
    knows its upload sessions). Also a context manager (start, then stop).
    """

    def __init__(self, root: Path, *, username: str = "hookdeploy", password: str | None = None,
                 port: int | None = None, notify_url: str | None = None,
                 notify_authorization: str | None = NOTIFY_AUTHORIZATION):
        self.root = Path(root)
        self.username = username
        self.password = password if password is not None else secrets.token_hex(8)
        self._port_fixed = port is not None
        self.port = port if port is not None else free_port()
        self.config_path = self.root / "config.yml"
        self.htpasswd_path = self.root / "htpasswd"
        self.storage = self.root / "storage"
        self.log_path = self.root / "registry.log"
        self.notify_url = notify_url
        self.notify_authorization = notify_authorization
        self._secret = secrets.token_hex(16)
        self._process: subprocess.Popen | None = None
        self._started_once = False

    # -- what tests use to reach it

    @property
    def url(self) -> str:
        """host:port, the way image names and the engine spell the registry: 127.0.0.1:PORT."""
        return f"127.0.0.1:{self.port}"

    @property
    def auth_config(self) -> dict[str, str]:
        """The `auth_config` for the docker SDK's push and pull."""
        return {"username": self.username, "password": self.password}

    def image(self, repository: str, tag: str) -> str:
        """The full image name of `repository:tag` in this registry."""
        return f"{self.url}/{repository}:{tag}"

    # -- config

    def notify_to(self, url: str, authorization: str | None = NOTIFY_AUTHORIZATION) -> None:
        """Send notifications to `url` with this Authorization header (None: none); a running
        registry is restarted to take it."""
        self.notify_url, self.notify_authorization = url, authorization
        if self.running:
            self.stop()
            self.start()

    def config(self) -> dict[str, Any]:
        """The registry's configuration (written as JSON, which is YAML)."""
        config: dict[str, Any] = {
            "version": "0.1",
            "log": {"level": "info", "formatter": "text"},
            "storage": {"filesystem": {"rootdirectory": str(self.storage)}, "delete": {"enabled": True}},
            "http": {"addr": self.url, "secret": self._secret},
            "auth": {"htpasswd": {"realm": REALM, "path": str(self.htpasswd_path)}},
        }
        if self.notify_url is not None:
            headers = {"Authorization": [self.notify_authorization]} if self.notify_authorization else {}
            config["notifications"] = {"endpoints": [{
                "name": "hookdeploy-test", "url": self.notify_url, "headers": headers,
                "timeout": "2s", "threshold": 3, "backoff": "1s",
                "ignoredmediatypes": ["application/octet-stream"],
            }]}
        return config

    def write_config(self) -> Path:
        """Write config.yml and the bcrypt htpasswd file (`htpasswd -Bbn USER PASSWORD`)."""
        self.root.mkdir(parents=True, exist_ok=True)
        self.storage.mkdir(exist_ok=True)
        line = subprocess.run([HTPASSWD, "-Bbn", self.username, self.password], check=True,
                              capture_output=True, text=True, timeout=30).stdout.strip()
        self.htpasswd_path.write_text(line + "\n")
        self.config_path.write_text(json.dumps(self.config(), indent=2) + "\n")
        return self.config_path

    # -- the process

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start(self, timeout: float = 20.0) -> None:
        """Start `docker-registry serve config.yml`; return once GET /v2/ answers 401 (auth on).
        The first start moves to another free port if the chosen one was taken meanwhile."""
        if self.running:
            return
        for attempt in range(3):
            self.write_config()
            with open(self.log_path, "ab") as log:
                self._process = subprocess.Popen([REGISTRY, "serve", str(self.config_path)], stdout=log,
                                                 stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                                 cwd=self.root)
            try:
                self._wait_ready(timeout)
            except RuntimeError:
                taken = "address already in use" in self.log_text()
                self.stop()
                if taken and not self._port_fixed and not self._started_once and attempt < 2:
                    self.port = free_port()
                    continue
                raise
            self._started_once = True
            return

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            if self._process.poll() is not None:
                raise RuntimeError(f"docker-registry exited ({self._process.returncode}):\n{self.log_text()[-3000:]}")
            try:
                status = self.request("GET", "/v2/", auth=False, timeout=1).status
            except OSError:
                status = None
            if status == 401 and self._process.poll() is None:
                return
            if status is not None and status != 401:
                raise RuntimeError(f"GET /v2/ on {self.url} answered {status}, not 401")
            if time.monotonic() > deadline:
                raise RuntimeError(f"docker-registry not ready on {self.url} after {timeout}s:\n"
                                   f"{self.log_text()[-3000:]}")
            time.sleep(0.05)

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the process: SIGTERM, then SIGKILL after `timeout` seconds."""
        process, self._process = self._process, None
        if process is None:
            return
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout)

    def kill(self) -> None:
        """Stop the process abruptly (SIGKILL), as a crash would."""
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.kill()
            process.wait(10)

    def __enter__(self) -> "Registry":
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def log_text(self) -> str:
        """Everything the registry logged so far (across restarts)."""
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    # -- the HTTP API

    def request(self, method: str, path: str, headers: Mapping[str, str] | None = None, *,
                auth: bool = True, timeout: float = 10.0) -> Response:
        """One request to http://URL/PATH (basic auth unless auth=False); HTTP errors are returned."""
        sent = dict(headers or {})
        if auth:
            sent["Authorization"] = basic_authorization(self.username, self.password)
        request = urllib.request.Request(f"http://{self.url}{path}", method=method, headers=sent)
        try:
            with urllib.request.urlopen(request, timeout=timeout) as answer:
                return Response(answer.status, dict(answer.headers), answer.read())
        except urllib.error.HTTPError as error:
            with error:
                return Response(error.code, dict(error.headers), error.read())

    def tags(self, repository: str) -> list[str]:
        """The repository's tags, sorted (GET /v2/REPO/tags/list); [] for a repository it does not know."""
        response = self.request("GET", f"/v2/{repository}/tags/list")
        if response.status == 404:
            return []
        if response.status != 200:
            raise RuntimeError(f"tags/list of {repository}: {response.status} {response.body!r}")
        return sorted(response.json().get("tags") or [])

    def manifest_digest(self, repository: str, tag: str) -> str | None:
        """The Docker-Content-Digest of REPO:TAG's manifest (HEAD, docker v2 / OCI accepted), or None
        when there is none. The registry counts this HEAD as a "pull" event."""
        response = self.request("HEAD", f"/v2/{repository}/manifests/{tag}",
                                {"Accept": ", ".join(MANIFEST_MEDIA_TYPES)})
        if response.status == 404:
            return None
        if response.status != 200:
            raise RuntimeError(f"manifest of {repository}:{tag}: {response.status}")
        return response.headers.get("Docker-Content-Digest")

    # -- the engine's side

    def push(self, client, source: str, repository: str, tag: str, *,
             password: str | None = None) -> list[dict[str, Any]]:
        """Tag the local image `source` as URL/REPO:TAG and push it with the docker SDK (with
        `password` instead of the right one when given); return the decoded progress stream.
        A failure is in the stream (a line with "error"/"errorDetail"), never raised."""
        client.images.get(source).tag(f"{self.url}/{repository}", tag)
        auth = {"username": self.username, "password": self.password if password is None else password}
        return list(client.images.push(f"{self.url}/{repository}", tag, auth_config=auth, stream=True, decode=True))

    def local_tags(self, client) -> list[str]:
        """Local image tags that name this registry (URL/...)."""
        return [tag for image in client.images.list() for tag in image.tags if tag.startswith(f"{self.url}/")]

    def remove_local_tags(self, client) -> None:
        """Untag every local image tag under this registry (the images themselves stay if tagged elsewhere)."""
        for tag in self.local_tags(client):
            try:
                client.images.remove(tag)
            except Exception:  # noqa: BLE001 - cleanup goes on whatever one tag does
                pass


def push_error(lines: list[dict[str, Any]]) -> str | None:
    """The error a docker push progress stream ended with, or None when it carries none."""
    for line in lines:
        if "error" in line or "errorDetail" in line:
            return line.get("error") or line.get("errorDetail", {}).get("message") or json.dumps(line)
    return None


def pushed_digest(lines: list[dict[str, Any]]) -> str | None:
    """The manifest digest a successful push reported (its `aux` line), or None."""
    for line in lines:
        if isinstance(line.get("aux"), dict) and "Digest" in line["aux"]:
            return line["aux"]["Digest"]
    return None


# -- the notification endpoint ---------------------------------------------------------------------


@dataclass
class Delivery:
    """One POST the sink received: path, headers (as sent) and the raw body."""

    path: str
    headers: Mapping[str, str]
    body: bytes

    def header(self, name: str) -> str | None:
        """A header's value, whatever its case."""
        return next((value for key, value in self.headers.items() if key.lower() == name.lower()), None)

    @property
    def envelope(self) -> dict[str, Any]:
        return json.loads(self.body)

    @property
    def events(self) -> list[dict[str, Any]]:
        return self.envelope.get("events", [])


@dataclass
class NotificationSink:
    """A tiny HTTP server on a free 127.0.0.1 port recording every POST; answers `status` (settable,
    e.g. 500 to make the registry retry)."""

    status: int = 200
    deliveries: list[Delivery] = field(default_factory=list)

    def __post_init__(self):
        self._lock = threading.Condition()
        sink = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with sink._lock:
                    sink.deliveries.append(Delivery(self.path, dict(self.headers.items()), body))
                    sink._lock.notify_all()
                self.send_response(sink.status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *arguments):
                pass

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="notification-sink", daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/events"

    def events(self, action: str | None = None) -> list[tuple[Delivery, dict[str, Any]]]:
        """Every (delivery, event) received so far, optionally only those of `action`."""
        with self._lock:
            deliveries = list(self.deliveries)
        return [(delivery, event) for delivery in deliveries for event in delivery.events
                if action is None or event.get("action") == action]

    def wait_for(self, predicate: Callable[[dict[str, Any]], bool], timeout: float = 15.0
                 ) -> tuple[Delivery, dict[str, Any]]:
        """The first (delivery, event) whose event satisfies `predicate`, waiting up to `timeout` s."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while True:
                for delivery in self.deliveries:
                    for event in delivery.events:
                        if predicate(event):
                            return delivery, event
                left = deadline - time.monotonic()
                if left <= 0:
                    seen = [(event.get("action"), event.get("target", {}).get("tag"))
                            for delivery in self.deliveries for event in delivery.events]
                    raise AssertionError(f"no matching notification within {timeout}s; received {seen}")
                self._lock.wait(left)

    def wait_for_push(self, repository: str, tag: str, timeout: float = 15.0) -> tuple[Delivery, dict[str, Any]]:
        """The first "push" event of REPO:TAG (a manifest push)."""
        return self.wait_for(lambda event: event.get("action") == "push"
                             and event.get("target", {}).get("repository") == repository
                             and event.get("target", {}).get("tag") == tag, timeout)

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)


# -- fixtures --------------------------------------------------------------------------------------


def _require_registry() -> None:
    problem = registry_problem()
    if problem is not None:
        unavailable(problem)


@pytest.fixture
def registry(tmp_path: Path) -> Iterator[Registry]:
    """A running registry of its own (tmp storage, free port, random password), no notifications;
    stopped afterwards. Call registry.notify_to(url) to add an endpoint (it restarts)."""
    _require_registry()
    made = Registry(tmp_path / "registry")
    made.start()
    try:
        yield made
    finally:
        made.stop()


@pytest.fixture
def notification_sink() -> Iterator[NotificationSink]:
    """A listening NotificationSink, closed afterwards."""
    sink = NotificationSink()
    try:
        yield sink
    finally:
        sink.close()


@pytest.fixture
def notifying_registry(tmp_path: Path, notification_sink: NotificationSink) -> Iterator[Registry]:
    """A running registry whose one endpoint is notification_sink (Authorization: NOTIFY_AUTHORIZATION)."""
    _require_registry()
    made = Registry(tmp_path / "notifying-registry", notify_url=notification_sink.url,
                    notify_authorization=NOTIFY_AUTHORIZATION)
    made.start()
    try:
        yield made
    finally:
        made.stop()
