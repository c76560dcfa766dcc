"""deploy.toml: finding, parsing and validating it into frozen dataclasses.

Every default lives in the dataclasses below; validation walks the parsed TOML
against them and reports every problem at once, each naming its key path.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import json
import os
import re
import tomllib
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from types import MappingProxyType
from typing import Any, Mapping

from hookdeploy.core.errors import ConfigError, UnknownApp
from hookdeploy.core.names import APP_NAME, INSTANCE_NAME, branch_problem, printable

ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
HOSTNAME = re.compile(r"(\*\.)?[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*\Z")
PROVIDERS = ("github", "gitlab", "gitea")
NOTIFY_EVENTS = ("succeeded", "failed", "rolled_back", "interrupted")
NOTIFY_FORMATS = ("json", "slack")
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
class WebhookConfig:
    """Where an app's forge webhooks come from and how they are verified."""

    provider: str = "github"
    secret_env: str | None = None
    secret_file: str | None = None
    repository: str | None = None

    def secret(self) -> bytes | None:
        """The shared secret, read now from the environment or file; None if unset."""
        return read_secret(self.secret_env, self.secret_file)


@dataclass(frozen=True)
class AppConfig:
    """One deployed app."""

    name: str
    repo: str
    branch: str = "deploy"
    dockerfile: str = "Dockerfile"
    context: str = "."
    port: int = 80
    hostnames: tuple[str, ...] = ()
    keep: int = 5
    drain_seconds: float = 5.0
    coalesce: bool = True
    follow_push: bool = True
    build_timeout: float = 900.0
    env: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    build_args: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    health: HealthConfig = HealthConfig()
    webhook: WebhookConfig | None = None

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
    state_dir: str = "/var/lib/hookdeploy"
    listen: str = "127.0.0.1:8080"
    max_body: int = 5242880
    secret_env: str | None = "HOOKDEPLOY_SECRET"
    secret_file: str | None = None
    threads: int = 64
    # The reverse proxy in front (its address as `serve` sees it, or "*"); empty: believe no forwarding headers.
    trusted_proxy: str = ""
    trusted_proxy_headers: tuple[str, ...] = ("x-forwarded-for", "x-forwarded-host", "x-forwarded-proto")

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

    def app(self, name: str) -> AppConfig:
        """The app called `name`, or UnknownApp naming the apps there are."""
        try:
            return self.apps[name]
        except KeyError:
            known = ", ".join(sorted(self.apps)) or "none"
            raise UnknownApp(f"unknown app {printable(name)} (apps in {self.path}: {known})") from None


def read_secret(env_name: str | None, file_name: str | None) -> bytes | None:
    """A secret from a file (stripped of trailing newline) or environment variable."""
    if file_name:
        try:
            return Path(file_name).read_bytes().rstrip(b"\r\n") or None
        except OSError:
            return None
    if env_name:
        value = os.environ.get(env_name)
        return value.encode() if value else None
    return None


def is_local_path(repo: str) -> bool:
    """True for a filesystem path, False for a clone URL (scheme:// or user@host:path)."""
    return "://" not in repo and not re.match(r"[^/]+@[^/:]+:", repo)


def config_path(explicit: str | os.PathLike | None = None) -> Path:
    """`--config PATH`, else $HOOKDEPLOY_CONFIG, else ./deploy.toml."""
    chosen = explicit or os.environ.get("HOOKDEPLOY_CONFIG") or "deploy.toml"
    return Path(chosen).absolute()


def load(path: str | os.PathLike | None = None) -> Config:
    """Read and validate deploy.toml; ConfigError lists every problem found."""
    resolved = config_path(path)
    try:
        raw = tomllib.loads(resolved.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{resolved}: no such file (use --config PATH or $HOOKDEPLOY_CONFIG)") from None
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigError(f"{resolved}: cannot read: {error}") from None
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"{resolved}: not valid TOML: {error}") from None
    return parse(raw, resolved)


def parse(raw: Mapping[str, Any], path: Path) -> Config:
    """Validate a parsed TOML document; relative paths are resolved against its folder."""
    problems: list[str] = []
    _unknown(raw, ("server", "proxy", "apps", "notify"), "", problems)
    server = _section(ServerConfig, raw.get("server", {}), "server", problems)
    proxy = _section(ProxyConfig, raw.get("proxy", {}), "proxy", problems)
    server = _check_server(server, path.parent, problems)
    _check_address(proxy.get("publish"), "proxy.publish", problems)

    apps: dict[str, AppConfig] = {}
    raw_apps = raw.get("apps", {})
    if not isinstance(raw_apps, Mapping):
        problems.append("apps: must be a table of [apps.NAME] tables")
        raw_apps = {}
    for name, table in raw_apps.items():
        key = f"apps.{name}"
        if not APP_NAME.match(name):
            problems.append(f"{key}: app name must match [a-z0-9][a-z0-9-]{{0,62}}")
        if not isinstance(table, Mapping):
            problems.append(f"{key}: must be a table")
            continue
        app = _app(name, table, key, path.parent, problems)
        if app is not None:
            apps[name] = app
    default_servers = [name for name, app in apps.items() if not app.hostnames]
    if len(default_servers) > 1:
        problems.append(f"apps: at most one app may have no hostnames (the default server); found {', '.join(default_servers)}")
    notify = _notify(raw.get("notify", []), problems)
    if problems:
        raise ConfigError(problems)
    return Config(
        path=path,
        server=ServerConfig(**server),
        proxy=ProxyConfig(**proxy),
        apps=MappingProxyType(apps),
        notify=notify,
    )


def _check_server(server: dict, base: Path, problems: list[str]) -> dict:
    if "name" in server and not INSTANCE_NAME.match(server["name"]):
        problems.append("server.name: must match [a-z0-9][a-z0-9_.-]{0,39} (it prefixes Docker object names)")
    if "state_dir" in server:
        server["state_dir"] = str((base / server["state_dir"]).resolve())
    _check_address(server.get("listen"), "server.listen", problems)
    if server.get("max_body", 1) < 1:
        problems.append("server.max_body: must be a positive number of bytes")
    if not 1 <= server.get("threads", 1) <= 256:
        problems.append("server.threads: must be between 1 and 256")
    _check_secret_source(server, "server", problems)
    _check_trusted_proxy(server, problems)
    return server


def _check_trusted_proxy(server: dict, problems: list[str]) -> None:
    proxy = server.get("trusted_proxy", "")
    if proxy and proxy != "*":
        try:
            # waitress compares it, as text, with the peer's address, which comes in this normal form
            server["trusted_proxy"] = str(ipaddress.ip_address(proxy))
        except ValueError:
            problems.append(f"server.trusted_proxy: must be an IP address (or \"*\" for any peer), not {printable(proxy)}")
    headers = server.get("trusted_proxy_headers")
    if headers is None:
        return
    if not all(isinstance(header, str) for header in headers):
        problems.append("server.trusted_proxy_headers: must be a list of strings")
        return
    headers = tuple(dict.fromkeys(header.lower() for header in headers))
    unknown = [header for header in headers if header not in PROXY_HEADERS]
    for header in unknown:
        problems.append(f"server.trusted_proxy_headers: {printable(header, 40)} is not one of {', '.join(PROXY_HEADERS)}")
    if not headers:
        problems.append("server.trusted_proxy_headers: must name at least one header "
                        "(leave trusted_proxy empty to believe none)")
    elif "forwarded" in headers and len(headers) > 1 and not unknown:
        problems.append("server.trusted_proxy_headers: \"forwarded\" and the x-forwarded-* headers exclude each other")
    server["trusted_proxy_headers"] = headers


def _app(name: str, table: Mapping, key: str, base: Path, problems: list[str]) -> AppConfig | None:
    before = len(problems)
    health_raw = table.get("health", {})
    webhook_raw = table.get("webhook")
    values = _section(AppConfig, {k: v for k, v in table.items() if k not in ("health", "webhook")}, key, problems,
                      skip=("name",))
    health = _section(HealthConfig, health_raw, f"{key}.health", problems) if _is_table(health_raw, f"{key}.health", problems) else {}
    webhook = None
    if webhook_raw is not None and _is_table(webhook_raw, f"{key}.webhook", problems):
        webhook = _section(WebhookConfig, webhook_raw, f"{key}.webhook", problems)
        if webhook.get("provider", "github") not in PROVIDERS:
            problems.append(f"{key}.webhook.provider: must be one of {', '.join(PROVIDERS)}")
        _check_secret_source(webhook, f"{key}.webhook", problems)
        if "repository" in webhook and not re.fullmatch(r"[\w.-]+(/[\w.-]+)+", webhook["repository"]):
            problems.append(f"{key}.webhook.repository: must look like owner/name")

    if "repo" not in table:
        problems.append(f"{key}.repo: required (a bare repo path or a clone URL)")
    elif isinstance(values.get("repo"), str):
        if not values["repo"]:
            problems.append(f"{key}.repo: must not be empty")
        elif is_local_path(values["repo"]):
            values["repo"] = str((base / values["repo"]).resolve())
    if "branch" in values and (problem := branch_problem(values["branch"])):
        problems.append(f"{key}.branch: not a valid git branch name ({problem})")
    for name_key in ("context", "dockerfile"):
        if name_key in values and not _stays_inside(values.get("context", "."), values[name_key], name_key):
            problems.append(f"{key}.{name_key}: must be a relative path that stays inside the repository")
    if "port" in values and not 1 <= values["port"] <= 65535:
        problems.append(f"{key}.port: must be between 1 and 65535")
    if "keep" in values and values["keep"] < 2:
        problems.append(f"{key}.keep: must be at least 2 (the live release and one to roll back to)")
    for duration in ("drain_seconds", "build_timeout"):
        if duration in values and not values[duration] > 0:
            problems.append(f"{key}.{duration}: must be greater than 0")
    if "hostnames" in values:
        hostnames = values["hostnames"]
        if not isinstance(hostnames, list) or not all(isinstance(h, str) for h in hostnames):
            problems.append(f"{key}.hostnames: must be a list of strings")
        else:
            for hostname in hostnames:
                if not HOSTNAME.match(hostname) or len(hostname) > 253:
                    problems.append(f"{key}.hostnames: {printable(hostname)} is not a valid hostname")
            values["hostnames"] = tuple(hostnames)
    if "env" in values:
        values["env"] = MappingProxyType(_check_env(values["env"], f"{key}.env", problems))
    if "build_args" in values:
        args = values["build_args"]
        bad = [k for k, v in args.items() if not isinstance(v, (str, int, float, bool))] if isinstance(args, Mapping) else None
        if bad is None or bad:
            problems.append(f"{key}.build_args: must be a table of strings")
        else:
            values["build_args"] = MappingProxyType({k: str(v) for k, v in args.items()})
    _check_health(health, f"{key}.health", problems)

    if len(problems) > before:
        return None
    return AppConfig(
        name=name,
        **values,
        health=HealthConfig(**health),
        webhook=WebhookConfig(**webhook) if webhook is not None else None,
    )


def _notify(raw: Any, problems: list[str]) -> tuple[NotifyConfig, ...]:
    """The `[[notify]]` array of tables."""
    if not isinstance(raw, list):
        problems.append("notify: must be an array of [[notify]] tables")
        return ()
    entries = []
    for index, table in enumerate(raw):
        key = f"notify[{index}]"
        before = len(problems)
        values = _section(NotifyConfig, table, key, problems)
        if isinstance(table, Mapping) and "url" not in table:
            problems.append(f"{key}.url: required (an http:// or https:// URL)")
        elif isinstance(values.get("url"), str):
            if not _is_http_url(values["url"]):
                problems.append(f"{key}.url: must be an http:// or https:// URL, not {printable(values['url'], 40)}")
        if "events" in values:
            events = values["events"]
            if not all(isinstance(event, str) for event in events):
                problems.append(f"{key}.events: must be a list of strings")
            else:
                for event in events:
                    if event not in NOTIFY_EVENTS:
                        problems.append(f"{key}.events: {printable(event, 40)} is not one of {', '.join(NOTIFY_EVENTS)}")
                values["events"] = tuple(dict.fromkeys(events))
        if "format" in values and values["format"] not in NOTIFY_FORMATS:
            problems.append(f"{key}.format: must be one of {', '.join(NOTIFY_FORMATS)}")
        if len(problems) == before:
            entries.append(NotifyConfig(**values))
    return tuple(entries)


def _is_http_url(text: str) -> bool:
    try:
        url = urllib.parse.urlsplit(text)
        url.port  # noqa: B018 - raises ValueError on a port out of range
    except ValueError:
        return False
    return url.scheme in ("http", "https") and bool(url.hostname) and not re.search(r"[\s\x00-\x1f]", text)


def _check_health(health: dict, key: str, problems: list[str]) -> None:
    if "path" in health and not health["path"].startswith("/"):
        problems.append(f"{key}.path: must start with '/'")
    if "path" in health and re.search(r"[\s\x00-\x1f]", health["path"]):
        problems.append(f"{key}.path: must not contain spaces or control characters")
    status = health.get("status", 200)
    if isinstance(status, bool) or not (status == "2xx" or (isinstance(status, int) and 100 <= status <= 599)):
        problems.append(f"{key}.status: must be an HTTP status (100-599) or \"2xx\"")
    for duration in ("timeout", "interval", "deadline"):
        if duration in health and not health[duration] > 0:
            problems.append(f"{key}.{duration}: must be greater than 0")


def _check_env(env: Any, key: str, problems: list[str]) -> dict:
    if not isinstance(env, Mapping):
        problems.append(f"{key}: must be a table")
        return {}
    checked = {}
    for name, value in env.items():
        if not ENV_NAME.match(name):
            problems.append(f"{key}.{name}: not a valid environment variable name")
        elif isinstance(value, Mapping):
            if set(value) != {"from_env"} or not isinstance(value["from_env"], str) or not ENV_NAME.match(value["from_env"]):
                problems.append(f"{key}.{name}: a table value must be {{from_env = \"NAME\"}}")
            else:
                checked[name] = MappingProxyType(dict(value))
        elif isinstance(value, (str, int, float, bool)):
            checked[name] = str(value)
        else:
            problems.append(f"{key}.{name}: must be a string or {{from_env = \"NAME\"}}")
    return checked


def _check_secret_source(values: dict, key: str, problems: list[str]) -> None:
    for source in ("secret_env", "secret_file"):
        if source in values and not values[source]:
            problems.append(f"{key}.{source}: must not be empty")
    if values.get("secret_env") and not ENV_NAME.match(values["secret_env"]):
        problems.append(f"{key}.secret_env: must name an environment variable (the secret itself never goes in the file)")


def _check_address(address: Any, key: str, problems: list[str]) -> None:
    if address is None:
        return
    host, _, port = address.rpartition(":")
    host = host.strip("[]")
    try:
        ipaddress.ip_address(host)
        valid_host = True
    except ValueError:
        valid_host = host == "localhost"
    if not valid_host or not port.isdigit() or not 0 < int(port) < 65536:
        problems.append(f"{key}: must be HOST:PORT with an IP address (or localhost) and a port 1-65535, not {printable(address)}")


def _stays_inside(context: Any, name: str, which: str) -> bool:
    if not isinstance(context, str) or not isinstance(name, str):
        return True  # the type error is reported already
    relative = PurePosixPath(name) if which == "context" else PurePosixPath(context) / name
    if PurePosixPath(name).is_absolute() or "\\" in name or not name:
        return False
    depth = 0
    for part in relative.parts:
        depth += -1 if part == ".." else (0 if part == "." else 1)
        if depth < 0:
            return False
    return depth >= (0 if which == "context" else 1)


def _is_table(value: Any, key: str, problems: list[str]) -> bool:
    if isinstance(value, Mapping):
        return True
    problems.append(f"{key}: must be a table")
    return False


def _unknown(table: Mapping, known: tuple[str, ...], prefix: str, problems: list[str]) -> None:
    for name in table:
        if name not in known:
            problems.append(f"{prefix}{name}: unknown key")


_TYPE_NAMES = {bool: "true or false", int: "an integer", float: "a number", str: "a string",
               list: "a list", Mapping: "a table"}


def _section(cls: type, table: Mapping, key: str, problems: list[str], skip: tuple[str, ...] = ()) -> dict:
    """Check a table's keys and value types against a dataclass; return the valid values."""
    if not isinstance(table, Mapping):
        problems.append(f"{key}: must be a table")
        return {}
    fields = {f.name: f for f in dataclasses.fields(cls) if f.name not in skip}
    _unknown(table, tuple(fields), f"{key}.", problems)
    values = {}
    for name, value in table.items():
        if name not in fields:
            continue
        expected = _expected_types(fields[name].type)
        if isinstance(value, bool) and bool not in expected:
            ok = False
        elif float in expected and isinstance(value, int) and not isinstance(value, bool):
            value, ok = float(value), True
        else:
            ok = isinstance(value, expected)
        if ok:
            values[name] = value
        else:
            wanted = " or ".join(_TYPE_NAMES.get(t, t.__name__) for t in expected if t is not type(None))
            shown = printable(value, 40) if isinstance(value, str) else json.dumps(value, default=str)[:40]
            problems.append(f"{key}.{name}: must be {wanted}, not {shown}")
    return values


def _expected_types(annotation: str) -> tuple[type, ...]:
    names = {"int": int, "float": float, "str": str, "bool": bool, "None": type(None)}
    if annotation.startswith("tuple"):
        return (list,)
    if annotation.startswith("Mapping"):
        return (Mapping,)
    return tuple(names[part.strip()] for part in annotation.split("|") if part.strip() in names)


def missing_secrets(config: Config, *, tokens: bool = False, webhooks: bool = False, app_env: bool = False) -> list[str]:
    """Problems with secrets and `from_env` variables the named features need, read now."""
    problems = []
    if tokens and config.server.secret() is None:
        problems.append(_secret_problem("server", config.server.secret_env, config.server.secret_file, "API tokens"))
    for app in config.apps.values():
        if webhooks and app.webhook is not None and app.webhook.secret() is None:
            problems.append(_secret_problem(f"apps.{app.name}.webhook", app.webhook.secret_env,
                                            app.webhook.secret_file, "its webhooks"))
        if app_env:
            for name, value in app.env.items():
                if isinstance(value, Mapping) and value["from_env"] not in os.environ:
                    problems.append(f"apps.{app.name}.env.{name}: environment variable {value['from_env']} is not set")
    return problems


def _secret_problem(key: str, env_name: str | None, file_name: str | None, feature: str) -> str:
    if file_name:
        return f"{key}.secret_file: {file_name} is missing, unreadable or empty ({feature} need it)"
    if env_name:
        return f"{key}.secret_env: environment variable {env_name} is not set ({feature} need it)"
    return f"{key}: no secret_env or secret_file ({feature} need a secret)"
