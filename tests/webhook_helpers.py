"""Helpers for the receiver, API, dashboard and token tests: real git repos, configs with webhook
tables, signed deliveries, the Flask app in process (WebApp), and `hookdeploy serve --no-worker` as a
subprocess on a free port (Served, Server). conftest.py makes fixtures of them: `served`, `web_app`.
"""

from __future__ import annotations

import hashlib
import hmac
import http.client
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, NamedTuple

from hookdeploy.core import config as configuration
from hookdeploy.core import tokens
from hookdeploy.core.models import JobState
from hookdeploy.core.store import Store
from hookdeploy.web.app import create_app

FIXTURES = Path(__file__).parent / "fixtures" / "webhooks"
HOOKDEPLOY = Path(sys.executable).parent / "hookdeploy"
GIT = ["git", "-c", "user.name=t", "-c", "user.email=t@t"]

SECRETS = {"SITE_SECRET": "site webhook secret", "GITLAB_SECRET": "gitlab token value",
           "GITEA_SECRET": "gitea webhook secret", "PINNED_SECRET": "pinned secret",
           "HOOKDEPLOY_SECRET": "server secret for API tokens"}
PROVIDER_OF = {"site": "github", "lab": "gitlab", "tea": "gitea", "pinned": "github"}
SECRET_OF = {"site": "SITE_SECRET", "lab": "GITLAB_SECRET", "tea": "GITEA_SECRET", "pinned": "PINNED_SECRET"}
FIXTURE_OF = {"github": "github-push.json", "gitlab": "gitlab-push.json", "gitea": "gitea-push.json"}
# What signs API tokens and dashboard sessions (server.secret_env is HOOKDEPLOY_SECRET).
API_SECRET = SECRETS["HOOKDEPLOY_SECRET"].encode()
# The Origin a browser sends with a form from a dashboard page the test client (Host: localhost) got.
ORIGIN = {"Origin": "http://localhost"}


def fixture(name: str) -> dict:
    """A payload sample from tests/fixtures/webhooks as a dict."""
    return json.loads((FIXTURES / name).read_text())


def git(*arguments: str, cwd: Path | None = None) -> str:
    """Run git; return stdout."""
    return subprocess.run([*GIT, *arguments], cwd=cwd, capture_output=True, text=True, check=True,
                          timeout=60).stdout.strip()


def make_repo(root: Path) -> tuple[Path, list[str]]:
    """A bare repo with three commits on `deploy` and one on `other`; (its path, the deploy SHAs)."""
    bare, work = root / "site.git", root / "work"
    git("init", "-q", "--bare", "-b", "deploy", str(bare))
    git("init", "-q", "-b", "deploy", str(work))
    shas = []
    for number in range(3):
        (work / "index.html").write_text(f"<p>{number}</p>\n")
        git("add", "index.html", cwd=work)
        git("commit", "-q", "-m", f"commit {number}", cwd=work)
        shas.append(git("rev-parse", "HEAD", cwd=work))
    git("checkout", "-q", "-b", "other", cwd=work)
    git("commit", "-q", "--allow-empty", "-m", "on other", cwd=work)
    git("push", "-q", str(bare), "deploy", "other", cwd=work)
    return bare, shas


def write_config(root: Path, repo: Path, port: int = 18080, max_body: int = 65536, threads: int = 8) -> Path:
    """deploy.toml with a github (site), gitlab (lab), gitea (tea), pinned-github (pinned) and a
    webhook-less (plain) app, all on one repo; secrets come from SECRETS' environment names."""
    apps = {
        "site": "",
        "lab": 'hostnames = ["lab.example"]',
        "tea": 'hostnames = ["tea.example"]',
        "pinned": 'hostnames = ["pinned.example"]',
        "plain": 'hostnames = ["plain.example"]',
    }
    text = (f'[server]\nstate_dir = "{root / "state"}"\nlisten = "127.0.0.1:{port}"\nmax_body = {max_body}\n'
            f'threads = {threads}\n')
    for name, extra in apps.items():
        text += f'\n[apps.{name}]\nrepo = "{repo}"\nbranch = "deploy"\n{extra}\n'
        if name in PROVIDER_OF:
            text += f'[apps.{name}.webhook]\nprovider = "{PROVIDER_OF[name]}"\nsecret_env = "{SECRET_OF[name]}"\n'
            if name == "pinned":
                text += 'repository = "octo-org/site"\n'
    path = root / "deploy.toml"
    path.write_text(text)
    return path


def push_body(provider: str, sha: str, ref: str = "refs/heads/deploy", **changes) -> bytes:
    """A fixture push payload for `provider` announcing `sha` on `ref`, as raw bytes."""
    payload = fixture(FIXTURE_OF[provider])
    payload.update(after=sha, ref=ref, **changes)
    if provider == "gitlab":
        payload["checkout_sha"] = sha
    return json.dumps(payload, indent=1).encode()


def signed_headers(provider: str, secret: str, body: bytes, *, event: str | None = None,
                   delivery: str | None = None, content_type: str = "application/json") -> dict[str, str]:
    """The headers `provider` sends with `body`, signed with `secret` (Gitea signs a form body's payload)."""
    delivery = delivery or str(uuid.uuid4())
    digest = hmac.new(secret.encode(), signed_content(provider, body, content_type), hashlib.sha256).hexdigest()
    if provider == "github":
        return {"X-GitHub-Event": event or "push", "X-GitHub-Delivery": delivery,
                "X-Hub-Signature-256": f"sha256={digest}", "Content-Type": content_type}
    if provider == "gitea":
        return {"X-Gitea-Event": event or "push", "X-Gitea-Delivery": delivery, "X-Gitea-Signature": digest,
                "Content-Type": content_type}
    return {"X-Gitlab-Event": event or "Push Hook", "X-Gitlab-Event-UUID": delivery, "X-Gitlab-Token": secret,
            "Content-Type": content_type}


def signed_content(provider: str, body: bytes, content_type: str) -> bytes:
    """What `provider` signs: GitHub the body as sent; Gitea/Forgejo the JSON, for a form body
    the value of its `payload` field (services/webhook/deliver.go signs PayloadContent)."""
    if provider == "gitea" and content_type == "application/x-www-form-urlencoded" and not body.startswith(b"{"):
        return urllib.parse.parse_qs(body.decode("ascii")).get("payload", [""])[0].encode()
    return body


def delivery(app: str, sha: str, **options) -> tuple[bytes, dict[str, str]]:
    """A correctly signed push of `sha` to `app`'s deploy branch: (body, headers)."""
    provider = PROVIDER_OF[app]
    body = push_body(provider, sha)
    return body, signed_headers(provider, SECRETS[SECRET_OF[app]], body, **options)


def form_encoded(body: bytes) -> bytes:
    """The application/x-www-form-urlencoded form of a JSON body, as GitHub and Gitea send it."""
    return urllib.parse.urlencode({"payload": body.decode()}).encode()


def free_port() -> int:
    """A TCP port nothing listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def environment(extra: Mapping[str, str | None] | None = None) -> dict[str, str]:
    """The CLI's environment: the test secrets set, no HOOKDEPLOY_CONFIG from outside."""
    env = {key: value for key, value in os.environ.items() if key != "HOOKDEPLOY_CONFIG"}
    env.update(SECRETS)
    for key, value in (extra or {}).items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = value
    return env


def request(port: int, method: str, path: str, body: bytes = b"", headers: Mapping[str, str] | None = None,
            timeout: float = 10) -> tuple[int, dict, http.client.HTTPMessage]:
    """One HTTP request to 127.0.0.1:port: (status, JSON body, headers (case-insensitive))."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        connection.request(method, path, body=body, headers=dict(headers or {}))
        response = connection.getresponse()
        data = response.read()
        return response.status, json.loads(data), response.headers
    finally:
        connection.close()


class Server:
    """`hookdeploy serve` (--no-worker unless `worker`) in a subprocess, ready once /healthz answers."""

    def __init__(self, config: Path, port: int, log: Path, worker: bool = False, env: Mapping[str, str] | None = None):
        self.config, self.port, self.log_path, self.worker = config, port, log, worker
        self.env = env
        self.process: subprocess.Popen | None = None

    def start(self, timeout: float = 20) -> "Server":
        self.log = open(self.log_path, "ab")
        command = [str(HOOKDEPLOY), "--config", str(self.config), "serve"] + ([] if self.worker else ["--no-worker"])
        self.process = subprocess.Popen(command, env=environment(self.env), stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"serve exited with {self.process.returncode}: {self.log_path.read_text()}")
            try:
                if request(self.port, "GET", "/healthz", timeout=1)[0] == 200:
                    return self
            except OSError:
                time.sleep(0.05)
        raise AssertionError(f"serve did not answer /healthz within {timeout} s: {self.log_path.read_text()}")

    def stop(self, signum: int | None = signal.SIGTERM, timeout: float = 20) -> int:
        """Send `signum` (None: the caller signalled it already) and wait; return the exit status."""
        if self.process is None:
            return 0
        if signum is not None and self.process.poll() is None:
            self.process.send_signal(signum)
        try:
            status = self.process.wait(timeout)
        finally:
            self.log.close()
        return status

    def rss_kib(self) -> int:
        """The server process's resident memory in KiB."""
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        raise AssertionError("no VmRSS")

    def __enter__(self) -> "Server":
        return self.start()

    def __exit__(self, *exc) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)
            self.log.close()


# -- a config served, in process or as a subprocess ----------------------------------------------------


class Served(NamedTuple):
    """A deploy.toml (write_config's five apps on one repo from make_repo) listening on a free port."""

    config: Path
    port: int
    shas: list[str]  # the `deploy` branch's commits, oldest first

    @classmethod
    def make(cls, root: Path, **config_options) -> "Served":
        """make_repo and write_config in `root` (which must not hold them yet)."""
        bare, shas = make_repo(root)
        port = free_port()
        return cls(write_config(root, bare, port=port, **config_options), port, shas)

    def server(self, log: Path | None = None, **options) -> Server:
        """`hookdeploy serve` on this config, not started; it logs to serve.log beside the config unless `log`."""
        return Server(self.config, self.port, log or self.config.parent / "serve.log", **options)


@dataclass
class WebApp:
    """The Flask app (a test client) on a real config, SQLite store and git repo, with a helper per door:
    the JSON API (`call`), the webhooks (`post`) and the dashboard (`sign_in`, `csrf`)."""

    client: Any
    store: Store
    config: configuration.Config
    shas: list[str]  # the `deploy` branch's commits, oldest first

    @classmethod
    def of(cls, served: Served) -> "WebApp":
        """The app on `served`'s config and store (the secrets must be in the environment to use it)."""
        config = configuration.load(served.config)
        store = Store(config.server.database)
        return cls(create_app(config, store).test_client(), store, config, served.shas)

    @property
    def other_sha(self) -> str:
        """The one commit on the repo's `other` branch."""
        return git("rev-parse", "refs/heads/other", cwd=self.config.apps["site"].repo)

    def job_count(self) -> int:
        return len(self.store.jobs(limit=100_000))

    # the API

    def call(self, method: str, path: str, token: str | None = None, body: object = None, raw: bytes | None = None):
        """One API request (with `Authorization: Bearer TOKEN` when given); (status, its one line of JSON)."""
        headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else b"")
        response = self.client.open(path, method=method, data=data, headers=headers,
                                    content_type="application/json")
        text = response.get_data(as_text=True)
        assert text.endswith("\n") and text.count("\n") == 1 and response.mimetype == "application/json", text
        return response.status_code, json.loads(text)

    # webhooks

    def post(self, app: str, body: bytes, headers: dict, path: str | None = None):
        """POST a delivery to /hooks/APP (or `path`); the Flask response."""
        return self.client.post(path or f"/hooks/{app}", data=body, headers=headers)

    # the dashboard

    def token(self, scope: str = "deploy", **options) -> str:
        """A new API token of `scope` recorded in the store (tokens.issue options, e.g. ttl=3)."""
        return tokens.issue(API_SECRET, self.store, scope, **options)

    def sign_in(self, scope: str = "deploy", **options):
        """POST /signin, as the sign-in page does, with a fresh token of `scope` (tokens.issue options)."""
        return self.client.post("/signin", data={"token": self.token(scope, **options)}, headers=ORIGIN)

    def csrf(self, path: str = "/") -> str:
        """The CSRF field of the page at `path`."""
        found = re.search(r'name="csrf" value="([0-9a-f]+)"', self.client.get(path).get_data(as_text=True))
        assert found, "no CSRF field on the page"
        return found.group(1)


def issue_token(config_path: Path, scope: str = "deploy", **options) -> str:
    """A new API token of `scope` signed with API_SECRET and recorded in the store of the config at `config_path`."""
    store = Store(configuration.load(config_path).server.database)
    try:
        return tokens.issue(API_SECRET, store, scope, **options)
    finally:
        store.close()


def release(store: Store, app: str, sha: str) -> None:
    """Record `sha` as the app's live release, through a job that ran and succeeded."""
    job = store.enqueue(app, sha)
    assert store.claim("test", [app]).id == job.id
    store.finish(job.id, JobState.SUCCEEDED)
    store.record_live(app, sha, f"hookdeploy/{app}:{sha[:12]}", f"hookdeploy-{app}-{sha[:12]}-{job.id}", job.id)
