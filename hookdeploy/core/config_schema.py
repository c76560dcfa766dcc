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
import urllib.parse
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

    path: str = "/"  # the path probed on each candidate container
    status: int | str = 200  # the answer's status that counts as healthy, or "2xx" for any of them
    contains: str = ""  # text the body must contain too; "": any body
    timeout: float = 2.0  # seconds one probe may take
    interval: float = 0.2  # seconds between probes
    deadline: float = 30.0  # seconds after which a candidate that never answered so is unhealthy (the job fails)

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
    canary_percent: float = 0.0  # > 0: this percentage of requests goes to the candidate before the switch
    canary_seconds: float = 30.0  # how long the canary runs, judged by the same rule

    def fails(self, requests: int, failed: int) -> bool:
        """True when this many requests, of which `failed` failed, call for a switch back."""
        return requests >= self.min_requests and failed / requests > self.max_error_ratio


@dataclass(frozen=True)
class WebhookConfig:
    """Where an app's forge webhooks come from and how they are verified."""

    provider: str = "github"  # who sends the webhooks: github | gitlab | gitea (Forgejo too) | registry
    secret_env: str | None = None  # the environment variable holding the shared secret (no secret: webhooks refused)
    secret_file: str | None = None  # or a file holding it (read at each delivery)
    repository: str | None = None  # owner/name: deliveries from another repository are ignored
    tag: str = "latest"  # provider "registry": the tag whose pushes are deployed

    def secret(self) -> bytes | None:
        """The shared secret, read now from the environment or file; None if unset."""
        return read_secret(self.secret_env, self.secret_file)


@dataclass(frozen=True)
class TlsFiles:
    """A certificate the user brings: its PEM chain and key, copied for the proxy at each deploy."""

    cert_file: str  # the PEM certificate chain (relative: to deploy.toml's folder)
    key_file: str  # its private key, PEM


@dataclass(frozen=True)
class BuildSecret:
    """One of an app's `build_secrets`: where its value is read when a build needs it (never before)."""

    from_file: str = ""  # the secret is this file's content
    from_env: str = ""  # or this environment variable's value


@dataclass(frozen=True)
class SignaturesConfig:
    """`[apps.X.signatures]`: only a commit signed by one of these keys is deployed (DESIGN "signed commits only")."""

    allowed_signers: str = ""  # git's SSH allowed-signers file (gpg.ssh.allowedSignersFile), absolute once parsed
    gpg_keyring: str = ""  # a file of OpenPGP public keys (gpg --export) whose keys may sign, absolute once parsed


@dataclass(frozen=True)
class TaskConfig:
    """One `[[apps.X.tasks]]` entry: a command run on a schedule in the live release's image."""

    name: str  # [a-z0-9-]{1,40}, unique within the app
    schedule: str  # five-field cron or @hourly/@daily/@weekly/@monthly, in [server] timezone
    command: tuple[str, ...]  # the command and its arguments, run in a new container of the live image
    timeout: float = 300.0  # seconds; then the container is killed and the run is timed_out


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
    repo: str = ""  # the git repo releases are built from: a bare repo path (post-receive) or a clone URL
    image: str = ""  # instead of repo, an image built elsewhere: REGISTRY/REPOSITORY, deployed by tag or digest
    repo_key_file: str = ""  # a private clone URL over ssh: the deploy key, used alone (IdentitiesOnly); "": ssh's own keys
    repo_host_key: str = ""  # the ssh host's key, a known_hosts line, pinned; "": the first fetch records it
    repo_token_env: str = ""  # a private clone URL over https: the environment variable holding a token, sent as a header
    push: bool = False  # also push each built release to [registry] (a swarm app always does)
    target: str = "local"  # local: containers on this engine | swarm: a Swarm service per release
    replicas: int = 1  # containers (local) or tasks (swarm) of a release, all behind the proxy
    placement: tuple[str, ...] = ()  # swarm: placement constraints, e.g. ["node.role==worker"]
    branch: str = "deploy"  # pushes to this branch deploy; other refs are ignored
    dockerfile: str = "Dockerfile"  # the Dockerfile, relative to context
    context: str = "."  # the build context, a folder of the repository
    port: int = 80  # the port the app listens on inside its container
    hostnames: tuple[str, ...] = ()  # names the proxy routes to the app (*.example.com allowed); none: the default server
    keep: int = 5  # release images kept for rollback, the live one included (at least 2)
    drain_seconds: float = 5.0  # seconds the old release keeps serving after the switch, then it stops
    read_timeout: float = 60.0  # seconds the proxy waits for an answer; then a GET goes to another task
    maintenance_page: str = ""  # the HTML page (a path) the proxy answers with 503 while the app is stopped; "": built in
    coalesce: bool = True  # a newer queued push supersedes older queued ones
    follow_push: bool = True  # git push prints the job (build, health check, switch) until it ends
    build_timeout: float = 900.0  # seconds a build may take; then it is cancelled and the job fails
    tls: str | TlsFiles = "off"  # "off" | "acme" (Let's Encrypt) | {cert_file, key_file}: your own certificate
    redirect_http: bool = True  # once a hostname has a certificate, http:// answers 308 to https://
    hsts: bool = False  # HTTPS answers carry Strict-Transport-Security
    env: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))  # container environment; a value may be {from_env = "NAME"}
    build_args: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))  # docker build --build-arg NAME=VALUE
    build_target: str = ""  # the stage of a multi-stage Dockerfile to build (--target); "": the last
    build_secrets: Mapping[str, BuildSecret] = field(default_factory=lambda: MappingProxyType({}))  # RUN --mount=type=secret,id=NAME
    build_host: str = ""  # this app's build host, instead of [build] host
    # DESIGN "Data, schedules and one-off commands": what every container of the app runs with
    volumes: tuple[Mount, ...] = ()  # from "NAME:PATH[:ro]" (the volume N-APP-NAME) and "/HOST/PATH:PATH[:ro]"
    release_command: tuple[str, ...] = ()  # run once per new release, before its candidate starts
    release_timeout: float = 600.0  # seconds release_command may take; then it is killed and the job fails
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

    name: str = "hookdeploy"  # the instance name, prefix of every Docker object it makes
    state_dir: str = "/var/lib/hookdeploy"  # the folder of the job store, repo mirrors and proxy config (required)
    listen: str = "127.0.0.1:8080"  # HOST:PORT of serve: webhooks, API and dashboard
    max_body: int = 5242880  # bytes; a larger request body is answered 413
    secret_env: str | None = "HOOKDEPLOY_SECRET"  # the environment variable of the secret API tokens are signed with
    secret_file: str | None = None  # or a file holding it
    threads: int = 64  # waitress threads answering requests
    connection_limit: int = 1600  # waitress: open connections at most; past it, new ones wait in the backlog
    channel_timeout: int = 30  # waitress: seconds a connection may stay idle before it is closed
    # The reverse proxy in front (its address as `serve` sees it, or "*"); empty: believe no forwarding headers.
    trusted_proxy: str = ""
    trusted_proxy_headers: tuple[str, ...] = ("x-forwarded-for", "x-forwarded-host", "x-forwarded-proto")  # the forwarding headers believed from trusted_proxy
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

    image: str = "nginx:stable-alpine"  # any image with nginx that includes /etc/nginx/conf.d
    publish: str = "0.0.0.0:80"  # HOST:PORT the proxy serves HTTP on
    publish_tls: str = ""  # HOST:PORT HTTPS is served on; empty: none


@dataclass(frozen=True)
class TlsConfig:
    """The ACME server certificates come from (apps with tls = "acme")."""

    acme_directory: str = LETS_ENCRYPT  # the ACME server's directory URL
    email: str = ""  # the account's contact, optional
    ca_bundle: str = ""  # a CA to trust for the ACME server, besides the usual ones (tests: pebble's)


@dataclass(frozen=True)
class RegistryConfig:
    """The private registry releases are pushed to (Distribution HTTP API v2)."""

    url: str  # HOST[:PORT] of the registry; releases become URL/N/APP:SHA12
    username: str = ""  # the login; "": none
    password_env: str | None = None  # the environment variable holding its password
    password_file: str | None = None  # or a file holding it
    insecure: bool = False  # plain HTTP (the engine must allow it; 127.0.0.0/8 always is)

    def password(self) -> bytes | None:
        """The password, read now; None if unset."""
        return read_secret(self.password_env, self.password_file)


@dataclass(frozen=True)
class BuildConfig:
    """How images are built (DESIGN "Builds: BuildKit, and a build host")."""

    builder: str = "buildkit"  # "buildkit" | "classic": the Engine API's legacy builder
    host: str = ""  # where images are built: "" = the engine releases run on; ssh://user@host[:port] | tcp://host:port
    tls_ca: str = ""  # tcp:// with TLS: the CA file
    tls_cert: str = ""  # tcp:// with TLS: the client certificate file
    tls_key: str = ""  # tcp:// with TLS: the client key file
    cache: str = "local"  # "local": the builder's own cache | "registry": also kept at [registry] as URL/N/APP:buildcache


@dataclass(frozen=True)
class NotifyConfig:
    """One `[[notify]]` entry: where to POST when a job ends in one of `events`."""

    url: str  # where the JSON (or Slack message) is POSTed
    events: tuple[str, ...] = NOTIFY_EVENTS  # which endings are sent
    format: str = "json"  # "json" | "slack"


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


def ssh_host(repo: str) -> str | None:
    """How ssh names the host of an ssh clone URL in known_hosts (`host`, or `[host]:port` off port 22);
    None for a path or another transport."""
    if repo.startswith("ssh://"):
        url = urllib.parse.urlsplit(repo)
        host = url.hostname or ""
        port = url.port
        return host if port in (None, 22) else f"[{host}]:{port}"
    if "://" not in repo and not is_local_path(repo):
        return repo.partition("@")[2].partition(":")[0].lower()
    return None
