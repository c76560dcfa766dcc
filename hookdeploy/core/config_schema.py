"""deploy.toml's schema: every table as a frozen dataclass, and the values its keys may take.

The dataclasses hold every default; their annotations are the types a key's value must have (the
parser reads them, so they stay strings: keep `from __future__ import annotations`). A Config is
built only from a validated document (config_parse.py's job) and reads nothing when built: secrets
and `from_env` values are read when asked for. This module imports no other config module.
"""

from __future__ import annotations

import dataclasses
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Mapping

from hookdeploy.core.errors import UnknownApp, UnknownTask
from hookdeploy.core.names import preview_parts, printable
from hookdeploy.core.volumes import Mount

PROVIDERS = ("github", "gitlab", "gitea", "registry")
TARGETS = ("local", "swarm")
MAX_REPLICAS = 64
TLS_MODES = ("off", "acme")  # or a table {cert_file, key_file}: the user's own certificate
LETS_ENCRYPT = "https://acme-v02.api.letsencrypt.org/directory"
NOTIFY_EVENTS = ("succeeded", "failed", "rolled_back", "interrupted", "task_failed")  # task_failed: a scheduled
# or asked-for task run failed or timed out (engine/notify.py send_task)
NOTIFY_FORMATS = ("json", "slack")
BUILDERS = ("buildkit", "classic")
BUILD_CACHES = ("local", "registry")
# The forwarding headers waitress can be told to believe from server.trusted_proxy.
PROXY_HEADERS = ("x-forwarded-for", "x-forwarded-host", "x-forwarded-proto", "x-forwarded-port",
                 "x-forwarded-by", "forwarded")


@dataclass(frozen=True)
class HealthConfig:
    """How a candidate container is judged healthy."""

    path: str = "/"
    status: int | str = 200
    contains: str = ""
    timeout: float = 2.0
    interval: float = 0.2
    deadline: float = 30.0

    def accepts(self, status: int) -> bool:
        """True if an HTTP status answers the check."""
        if self.status == "2xx":
            return 200 <= status < 300
        return status == self.status


@dataclass(frozen=True)
class GuardConfig:
    """After the switch (and, with a canary, before it): what the proxy answers for the new release,
    and when that switches back (DESIGN "After the switch: the guard")."""

    watch_seconds: float = 0.0  # > 0: watch this long after the switch; the old release drains after
    max_error_ratio: float = 0.05  # share of 5xx above which the release is switched back
    min_requests: int = 20  # fewer requests than this decide nothing
    canary_percent: float = 0.0  # > 0: this share of requests goes to the candidate first ...
    canary_seconds: float = 30.0  # ... for this long, judged by the same rule

    def fails(self, requests: int, failed: int) -> bool:
        """True when this many requests, of which `failed` failed, call for a switch back."""
        return requests >= self.min_requests and failed / requests > self.max_error_ratio


@dataclass(frozen=True)
class WebhookConfig:
    """Where an app's forge webhooks come from and how they are verified."""

    provider: str = "github"
    secret_env: str | None = None
    secret_file: str | None = None
    repository: str | None = None
    tag: str = "latest"  # provider "registry": the tag whose pushes are deployed

    def secret(self) -> bytes | None:
        """The shared secret, read now from the environment or file; None if unset."""
        return read_secret(self.secret_env, self.secret_file)


@dataclass(frozen=True)
class TlsFiles:
    """A certificate the user brings: its PEM chain and key, copied for the proxy at each deploy."""

    cert_file: str
    key_file: str


@dataclass(frozen=True)
class BuildSecret:
    """One of an app's `build_secrets`: where its value is read when a build needs it (never before)."""

    from_file: str = ""
    from_env: str = ""


@dataclass(frozen=True)
class SignaturesConfig:
    """`[apps.X.signatures]`: only a commit signed by one of these keys is deployed (DESIGN "signed commits only")."""

    allowed_signers: str = ""  # git's SSH allowed-signers file (gpg.ssh.allowedSignersFile), absolute once parsed
    gpg_keyring: str = ""  # a file of OpenPGP public keys (gpg --export) whose keys may sign, absolute once parsed


@dataclass(frozen=True)
class TaskConfig:
    """One `[[apps.X.tasks]]` entry: a command run on a schedule in the live release's image."""

    name: str
    schedule: str  # five-field cron or @hourly/@daily/@weekly/@monthly, in [server] timezone
    command: tuple[str, ...]
    timeout: float = 300.0


@dataclass(frozen=True)
class PreviewsConfig:
    """`[apps.X.previews]`: pushes to matching branches deploy previews (DESIGN "Previews of branches")."""

    branches: tuple[str, ...] = ()  # fnmatch patterns: a push to a matching branch deploys a preview of it
    hostname: str = ""  # the preview's hostname; {branch} becomes the branch as one DNS label (a-z0-9-, <= 63)
    max: int = 5  # previews of the app at once; one more is refused, naming the ones to remove
    ttl_hours: float = 168.0  # a preview with no push for this long is removed by the worker
    env: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))  # over the app's env


@dataclass(frozen=True)
class AppConfig:
    """One deployed app."""

    name: str
    repo: str = ""  # built here from this git repo ...
    image: str = ""  # ... or built elsewhere: REGISTRY/REPOSITORY, deployed by tag or digest
    push: bool = False  # also push each built release to [registry] (a swarm app always does)
    target: str = "local"  # local: containers on this engine | swarm: a Swarm service per release
    replicas: int = 1  # containers (local) or tasks (swarm) of a release, all behind the proxy
    placement: tuple[str, ...] = ()  # swarm: placement constraints, e.g. ("node.role==worker",)
    branch: str = "deploy"
    dockerfile: str = "Dockerfile"
    context: str = "."
    port: int = 80
    hostnames: tuple[str, ...] = ()
    keep: int = 5
    drain_seconds: float = 5.0
    read_timeout: float = 60.0  # seconds the proxy waits for an answer; then a GET goes to another task
    maintenance_page: str = ""  # the HTML page (a path) the proxy answers with 503 while the app is stopped; "": built in
    coalesce: bool = True
    follow_push: bool = True
    build_timeout: float = 900.0
    tls: str | TlsFiles = "off"  # "off" | "acme" | TlsFiles (DESIGN "HTTPS")
    redirect_http: bool = True  # once a hostname has a certificate, http:// answers 308 to https://
    hsts: bool = False  # HTTPS answers carry Strict-Transport-Security
    env: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    build_args: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    build_target: str = ""  # the stage of a multi-stage Dockerfile to build (--target); "": the last
    build_secrets: Mapping[str, BuildSecret] = field(default_factory=lambda: MappingProxyType({}))
    build_host: str = ""  # this app's build host, instead of [build] host
    # DESIGN "Data, schedules and one-off commands": what every container of the app runs with
    volumes: tuple[Mount, ...] = ()  # from "NAME:PATH[:ro]" (the volume N-APP-NAME) and "/HOST/PATH:PATH[:ro]"
    release_command: tuple[str, ...] = ()  # run once per new release, before its candidate starts
    release_timeout: float = 600.0
    memory: str = ""  # docker run --memory, e.g. "512m"; "": no limit
    cpus: float = 0.0  # docker run --cpus; 0: no limit
    health: HealthConfig = HealthConfig()
    guard: GuardConfig = GuardConfig()
    webhook: WebhookConfig | None = None
    tasks: tuple[TaskConfig, ...] = ()  # DESIGN "Data, schedules and one-off commands"
    signatures: SignaturesConfig | None = None  # set: only commits signed by its keys deploy (push, webhook, rollback...)
    previews: PreviewsConfig | None = None  # DESIGN "Previews of branches"; None: pushes to other branches are ignored

    def task(self, name: str) -> TaskConfig:
        """The app's task called `name`, or UnknownTask naming the tasks there are."""
        for task in self.tasks:
            if task.name == name:
                return task
        known = ", ".join(task.name for task in self.tasks) or "none"
        raise UnknownTask(f"{self.name} has no task {printable(name)} (its tasks: {known})")

    @property
    def builds(self) -> bool:
        """True when releases are built here from `repo`; False for an `image` app."""
        return not self.image

    @property
    def on_swarm(self) -> bool:
        """True when each release is a Swarm service rather than a container of this engine."""
        return self.target == "swarm"

    @property
    def pushes(self) -> bool:
        """True when a built release goes to [registry]: asked for, or needed (swarm nodes pull it)."""
        return self.builds and (self.push or self.on_swarm)

    @property
    def tls_mode(self) -> str:
        """"off", "acme" (certificates from [tls]'s ACME server) or "files" (the user's own)."""
        return "files" if isinstance(self.tls, TlsFiles) else self.tls

    @property
    def is_local_repo(self) -> bool:
        """True when `repo` is a path on this machine rather than a clone URL."""
        return is_local_path(self.repo)

    def container_env(self) -> dict[str, str]:
        """The container environment, `{from_env=NAME}` values read now."""
        resolved = {}
        for key, value in self.env.items():
            resolved[key] = os.environ.get(value["from_env"], "") if isinstance(value, Mapping) else str(value)
        return resolved


@dataclass(frozen=True)
class ServerConfig:
    """The instance: its name, state and listening address."""

    name: str = "hookdeploy"
    state_dir: str = "/var/lib/hookdeploy"  # deploy.toml must name it (config_parse); this is the example's
    listen: str = "127.0.0.1:8080"
    max_body: int = 5242880
    secret_env: str | None = "HOOKDEPLOY_SECRET"
    secret_file: str | None = None
    threads: int = 64
    connection_limit: int = 1600  # waitress: open connections at most; past it, new ones wait in the backlog
    channel_timeout: int = 30  # waitress: seconds a connection may stay idle before it is closed
    # The reverse proxy in front (its address as `serve` sees it, or "*"); empty: believe no forwarding headers.
    trusted_proxy: str = ""
    trusted_proxy_headers: tuple[str, ...] = ("x-forwarded-for", "x-forwarded-host", "x-forwarded-proto")
    # Host values the dashboard answers (name or name:port); empty: the listen address and loopback names.
    hostnames: tuple[str, ...] = ()
    max_token_ttl: int = 90 * 24 * 3600  # seconds; `token create --ttl` longer is refused
    metrics_public: bool = False  # GET /metrics without a token (else it takes a read-scope one)
    timezone: str = "UTC"  # the IANA zone of scheduled tasks' cron expressions

    @property
    def database(self) -> Path:
        """The SQLite job store."""
        return Path(self.state_dir) / "hookdeploy.db"

    def secret(self) -> bytes | None:
        """The token-signing secret, read now; None if unset."""
        return read_secret(self.secret_env, self.secret_file)


@dataclass(frozen=True)
class ProxyConfig:
    """The front nginx proxy container."""

    image: str = "nginx:stable-alpine"
    publish: str = "0.0.0.0:80"
    publish_tls: str = ""  # HOST:PORT HTTPS is served on; empty: none


@dataclass(frozen=True)
class TlsConfig:
    """The ACME server certificates come from (apps with tls = "acme")."""

    acme_directory: str = LETS_ENCRYPT
    email: str = ""  # the account's contact, optional
    ca_bundle: str = ""  # a CA to trust for the ACME server, besides the usual ones (tests: pebble's)


@dataclass(frozen=True)
class RegistryConfig:
    """The private registry releases are pushed to (Distribution HTTP API v2)."""

    url: str
    username: str = ""
    password_env: str | None = None
    password_file: str | None = None
    insecure: bool = False  # plain HTTP (the engine must allow it; 127.0.0.0/8 always is)

    def password(self) -> bytes | None:
        """The password, read now; None if unset."""
        return read_secret(self.password_env, self.password_file)


@dataclass(frozen=True)
class BuildConfig:
    """How images are built (DESIGN "Builds: BuildKit, and a build host")."""

    builder: str = "buildkit"  # "buildkit" | "classic": the Engine API's legacy builder
    host: str = ""  # where images are built: "" = the engine releases run on; ssh://user@host[:port] | tcp://host:port
    tls_ca: str = ""  # tcp:// with TLS: the CA, client certificate and key files (absolute once parsed)
    tls_cert: str = ""
    tls_key: str = ""
    cache: str = "local"  # "local": the builder's own cache | "registry": also kept at [registry] as URL/N/APP:buildcache


@dataclass(frozen=True)
class NotifyConfig:
    """One `[[notify]]` entry: where to POST when a job ends in one of `events`."""

    url: str
    events: tuple[str, ...] = NOTIFY_EVENTS
    format: str = "json"


@dataclass(frozen=True)
class Config:
    """A whole validated deploy.toml."""

    path: Path
    server: ServerConfig = ServerConfig()
    proxy: ProxyConfig = ProxyConfig()
    apps: Mapping[str, AppConfig] = field(default_factory=lambda: MappingProxyType({}))
    notify: tuple[NotifyConfig, ...] = ()
    registry: RegistryConfig | None = None
    tls: TlsConfig = TlsConfig()
    build: BuildConfig = BuildConfig()

    def build_host(self, app: AppConfig) -> str:
        """Where `app` is built: its own build_host, else [build] host; "" for the engine releases run on."""
        return app.build_host or self.build.host if app.builds else ""

    def app(self, name: str) -> AppConfig:
        """The app called `name`, or UnknownApp naming the apps there are."""
        try:
            return self.apps[name]
        except KeyError:
            if (preview := self.preview(name)) is not None:
                return preview
            known = ", ".join(sorted(self.apps)) or "none"
            raise UnknownApp(f"unknown app {printable(name)} (apps in {self.path}: {known})",
                             public=f"unknown app {printable(name)}") from None


    def preview(self, name: str) -> AppConfig | None:
        """The app config a preview's jobs run with, for its release set's name `APP.LABEL` (None for any
        other name; core/previews.py has the rules): the app's build, health check, limits and TLS; its
        own hostname, env (the app's, then previews.env), one image kept besides the live one and the
        rollback target, one replica, no guard, no tasks. Its `branch` is the job's (previews.for_job)."""
        parts = preview_parts(name)
        app = self.apps.get(parts[0]) if parts else None
        if app is None or app.previews is None:
            return None
        return dataclasses.replace(app, name=name, hostnames=(app.previews.hostname.replace("{branch}", parts[1]),),
                                   branch="", env=MappingProxyType({**app.env, **app.previews.env}), keep=1,
                                   guard=GuardConfig(), tasks=(), previews=None, replicas=1)


def read_secret(env_name: str | None, file_name: str | None) -> bytes | None:
    """A secret from a file (stripped of trailing newline) or environment variable."""
    if file_name:
        try:
            return Path(file_name).read_bytes().rstrip(b"\r\n") or None
        except (OSError, ValueError):  # ValueError: a NUL in the name (config_parse refuses it; others may not)
            return None
    if env_name:
        value = os.environ.get(env_name)
        return value.encode() if value else None
    return None


def is_local_path(repo: str) -> bool:
    """True for a filesystem path, False for a clone URL (scheme:// or user@host:path)."""
    return "://" not in repo and not re.match(r"[^/]+@[^/:]+:", repo)
