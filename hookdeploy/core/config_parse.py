"""deploy.toml's validation: turning a parsed TOML mapping into a Config.

Each table is walked against its dataclass in config_schema.py (an unknown key or a value of the
wrong type is a problem), then through its own checks. Every problem is collected, not just the
first, each naming its key path (`apps.site.health.path: ...`), and ConfigError lists them all.
Relative paths are resolved against the config file's folder; nothing here reads a file or the
environment (but the time zone database, which names the zones [server] timezone may take). Imports config_schema.py, never config.py.
"""

from __future__ import annotations

import base64
import dataclasses
import ipaddress
import json
import math
import os
import re
import urllib.parse
from pathlib import Path, PurePosixPath
from types import MappingProxyType
from typing import Any, Mapping

from hookdeploy.core.config_schema import (BUILD_CACHES, BUILDERS, MAX_REPLICAS, NOTIFY_EVENTS, NOTIFY_FORMATS, PROVIDERS, PROXY_HEADERS, TARGETS, TLS_MODES,
                                           AppConfig, BuildConfig, PreviewsConfig, BuildSecret, Config, GuardConfig,
                                           HealthConfig, NotifyConfig, ProxyConfig, RegistryConfig, ServerConfig,
                                           SignaturesConfig, TaskConfig, TlsConfig, TlsFiles, WebhookConfig, is_local_path,
                                           ssh_host)
from hookdeploy.core import schedule
from hookdeploy.core.previews import previews_problems
from hookdeploy.core.errors import ConfigError
from hookdeploy.core.names import (APP_NAME, INSTANCE_NAME, TAG, TASK_NAME, branch_problem, host_and_port, image_problem,
                                   printable, reference_problem, registry_host_problem, split_address)
from hookdeploy.core.volumes import MIN_MEMORY, bind_problem, memory_bytes, parse_mount

ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
# A Swarm placement constraint: node.role==worker, node.labels.zone != b, engine.labels.x==y
CONSTRAINT = re.compile(r"(node|engine)\.[A-Za-z0-9_.-]+\s*(==|!=)\s*[A-Za-z0-9_.:/-]+\Z")
# waitress holds every connection in one poll loop: past these, a typo rather than a choice.
MAX_CONNECTIONS = 100_000
MAX_CHANNEL_TIMEOUT = 3600
HOSTNAME = re.compile(r"(\*\.)?[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*\Z")
# Bounds every value of its type must keep, whatever its key means (each key's own range is checked after):
# an integer fits SQLite's INTEGER and a C long; a float key is seconds, a ratio or a share, where more than
# 1e9 (about 31 years) is a typo, and nan or inf would make every comparison and sleep with it meaningless.
INTEGER_LIMIT = 2**63
NUMBER_LIMIT = 1e9
TEXT_LIMIT = 4096  # characters of any string value
STATE_DIR_LIMIT = 1024  # characters: hookdeploy makes files several levels deep inside, all under PATH_MAX (4096)
FREE_TEXT = ("contains",)  # string keys that may hold control characters (a newline in the body looked for)
# What a terminal acts on or a reader is fooled by: C0 and C1 controls (C1's \x9b is ESC [ to some terminals),
# DEL, line and paragraph separators, bidirectional overrides and isolates ("Trojan Source").
CONTROL_CHARACTERS = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")
# Where git may fetch from: a path, user@host:path, or these URL schemes. Never a `transport::address` (ext::
# runs a command) or anything starting with '-' (git would read it as an option, like --upload-pack=COMMAND).
CLONE_SCHEMES = ("file", "ssh", "git", "http", "https")
# A build host: ssh://user@host[:port] (the docker CLI and the system's ssh reach it) or tcp://host:port.
BUILD_HOST = re.compile(r"(ssh://[A-Za-z0-9._-]+@|tcp://)([A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?|\[[0-9A-Fa-f:.]+\])"
                        r"(:(?P<port>[0-9]{1,5}))?\Z")


def parse(raw: Mapping[str, Any], path: Path) -> Config:
    """Validate a parsed TOML document; relative paths are resolved against its folder."""
    problems: list[str] = []
    _unknown(raw, ("server", "proxy", "apps", "notify", "registry", "tls", "build"), "", problems)
    server = _section(ServerConfig, raw.get("server", {}), "server", problems)
    _require_state_dir(raw.get("server", {}), server, problems)
    proxy = _section(ProxyConfig, raw.get("proxy", {}), "proxy", problems)
    server = _check_server(server, path.parent, problems)
    _check_address(proxy.get("publish"), "proxy.publish", problems)
    if isinstance(proxy.get("image"), str) and (problem := reference_problem(proxy["image"])):
        problems.append(f"proxy.image: {printable(proxy['image'], 60)} is not an image reference: {problem}")
    if proxy.get("publish_tls"):
        _check_address(proxy["publish_tls"], "proxy.publish_tls", problems)
        if proxy["publish_tls"] == proxy.get("publish", ProxyConfig.publish):
            problems.append("proxy.publish_tls: must differ from proxy.publish")
    tls = _tls(raw.get("tls"), path.parent, problems)

    apps: dict[str, AppConfig] = {}
    raw_apps = raw.get("apps", {})
    if not isinstance(raw_apps, Mapping):
        problems.append("apps: must be a table of [apps.NAME] tables")
        raw_apps = {}
    for name, table in raw_apps.items():
        key = _child("apps", name)
        if not APP_NAME.match(name):
            problems.append(f"{key}: app name must match [a-z0-9][a-z0-9-]{{0,62}}")
        if not isinstance(table, Mapping):
            problems.append(f"{key}: must be a table")
            continue
        app = _app(name, table, key, path.parent, problems)
        if app is not None:
            apps[name] = app
    _check_unique_hostnames(apps, problems)
    default_servers = [name for name, app in apps.items() if not app.hostnames]
    if len(default_servers) > 1:
        shown = ", ".join(_child("", name) for name in default_servers)
        problems.append(f"apps: at most one app may have no hostnames (the default server); found {shown}")
    notify = _notify(raw.get("notify", []), problems)
    registry = _registry(raw.get("registry"), problems)
    build = _build(raw.get("build"), apps, registry, path.parent, problems)
    for name, app in apps.items():
        key = _child("apps", name)
        if app.push and registry is None:
            problems.append(f"{key}.push: needs a [registry] table to push to")
        if app.on_swarm and app.builds and registry is None:
            problems.append(f"{key}.target: \"swarm\" needs a [registry] table (the nodes pull each release from it)")
        for entry in raw_apps[name].get("volumes", ()):  # all valid entries, as the file has them
            mount = parse_mount(entry)
            if not mount.named and (problem := bind_problem(mount.source, server.get("state_dir"))):
                problems.append(f"{key}.volumes: {printable(entry, 200)}: {problem}")
        if app.tls_mode != "off" and not proxy.get("publish_tls"):
            problems.append(f"{key}.tls: needs proxy.publish_tls (the address HTTPS is served on, like \"0.0.0.0:443\")")
    if problems:
        raise ConfigError(problems)
    return Config(
        path=path,
        server=ServerConfig(**server),
        proxy=ProxyConfig(**proxy),
        apps=MappingProxyType(apps),
        notify=notify,
        registry=registry,
        tls=tls,
        build=build,
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
    if not 1 <= server.get("connection_limit", 1) <= MAX_CONNECTIONS:
        problems.append(f"server.connection_limit: must be between 1 and {MAX_CONNECTIONS} open connections")
    if not 1 <= server.get("channel_timeout", 1) <= MAX_CHANNEL_TIMEOUT:
        problems.append(f"server.channel_timeout: must be between 1 and {MAX_CHANNEL_TIMEOUT} seconds")
    _check_secret_source(server, "server", problems)
    _check_trusted_proxy(server, problems)
    _check_dashboard_hosts(server, problems)
    if server.get("max_token_ttl", 1) < 1:
        problems.append("server.max_token_ttl: must be a positive number of seconds")
    if "timezone" in server and (problem := schedule.zone_problem(server["timezone"])):
        problems.append(f"server.timezone: {problem}")
    return server


def _check_dashboard_hosts(server: dict, problems: list[str]) -> None:
    names = server.get("hostnames")
    if names is None:
        return
    normal = []
    for name in names:
        host, port = host_and_port(name) if isinstance(name, str) else (None, None)
        if host is None:
            problems.append(f"server.hostnames: {printable(name, 60)} is not a hostname or hostname:port")
        else:
            shown = f"[{host}]" if ":" in host else host  # as a Host header carries an IPv6 address
            normal.append(shown if port is None else f"{shown}:{port}")
    server["hostnames"] = tuple(normal)


def _require_state_dir(raw: Any, server: dict, problems: list[str]) -> None:
    """`server.state_dir` is named (no silent default under /var/lib) and is a path this system can hold."""
    if not isinstance(raw, Mapping):
        return  # "server: must be a table" is reported already
    if "state_dir" not in raw:
        problems.append("server.state_dir: required (the folder for the job store, mirrors and proxy config, "
                        "e.g. /var/lib/hookdeploy)")
    elif "state_dir" in server and (problem := _path_problem(server["state_dir"], STATE_DIR_LIMIT)):
        problems.append(f"server.state_dir: {problem}")
        del server["state_dir"]


def _path_problem(path: str, limit: int = TEXT_LIMIT - 1) -> str | None:
    """Why `path` cannot name a file here (empty, too long, a name over NAME_MAX), or None."""
    if not path:
        return "must not be empty"
    if len(path) > limit:
        return f"must be at most {limit} characters long, not {len(path)}"
    if any(len(part.encode()) > 255 for part in path.split("/")):
        return f"{printable(path, 60)} has a name longer than 255 bytes (the most a file system takes)"
    return None


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
    """One `[apps.NAME]` table; None if it has any problem."""
    before = len(problems)
    values = _section(AppConfig, {k: v for k, v in table.items() if k not in ("health", "webhook", "tls", "guard", "signatures", "previews")}, key, problems,
                      skip=("name",))
    health = _section(HealthConfig, table.get("health", {}), f"{key}.health", problems)
    guard = _section(GuardConfig, table.get("guard", {}), f"{key}.guard", problems)
    _check_guard(guard, f"{key}.guard", problems)
    webhook = _check_webhook(table.get("webhook"), f"{key}.webhook", problems)
    _check_repo(table, values, key, base, problems)
    _check_repo_access(values, key, base, problems)
    provider = (webhook or {}).get("provider", "github")
    if webhook is not None and provider in PROVIDERS and ("image" in table) != (provider == "registry"):
        problems.append(f"{key}.webhook.provider: \"registry\" is for image apps, and image apps take only it")
    if "branch" in values and (problem := branch_problem(values["branch"])):
        problems.append(f"{key}.branch: not a valid git branch name ({problem})")
    _check_paths(values, key, problems)
    _check_numbers(values, key, problems)
    _check_hostnames(values, key, problems)
    _check_target(values, key, problems)
    _check_run_options(values, key, problems)
    _check_app_tls(table.get("tls", "off"), values, key, base, problems)
    if "env" in values:
        values["env"] = MappingProxyType(_check_env(values["env"], f"{key}.env", problems))
    _check_build_args(values, key, problems)
    _check_tasks(values, key, problems)
    _check_build_options(table, values, key, base, problems)
    if values.get("build_host"):
        if "image" in table:
            problems.append(f"{key}.build_host: an image app is built elsewhere already")
        elif problem := _build_host_problem(values["build_host"]):
            problems.append(f"{key}.build_host: {problem}")
    _check_health(health, f"{key}.health", problems)
    _check_maintenance_page(values, key, base, problems)
    signatures = _signatures(table.get("signatures"), "image" in table, f"{key}.signatures", base, problems)
    previews = _previews(table.get("previews"), values, f"{key}.previews", problems)

    if len(problems) > before:
        return None
    return AppConfig(
        name=name,
        **values,
        health=HealthConfig(**health),
        guard=GuardConfig(**guard),
        webhook=WebhookConfig(**webhook) if webhook is not None else None,
        signatures=signatures,
        previews=previews,
    )


def _previews(table: Any, values: dict, key: str, problems: list[str]) -> PreviewsConfig | None:
    """`[apps.X.previews]` (DESIGN "Previews of branches"): its rules are core/previews.py's; None when absent."""
    if table is None:
        return None
    found = _section(PreviewsConfig, table, key, problems)
    if "env" in found:
        found["env"] = MappingProxyType(_check_env(found["env"], f"{key}.env", problems))
    if "branches" in found:
        found["branches"] = tuple(found["branches"])
    for problem in previews_problems(found, values.get("hostnames", ())):
        problems.append(f"{key}.{problem}")
    return PreviewsConfig(**found)


MAINTENANCE_PAGE_LIMIT = 1 << 20  # bytes; the proxy sends it whole with every 503


def _check_maintenance_page(values: dict, key: str, base: Path, problems: list[str]) -> None:
    """`maintenance_page` is a readable file of at most MAINTENANCE_PAGE_LIMIT bytes, resolved against the
    config's folder."""
    if not values.get("maintenance_page") or not isinstance(values["maintenance_page"], str):
        return
    path = (base / values["maintenance_page"]).resolve()
    try:
        if not path.is_file():  # before opening: a FIFO would block
            problems.append(f"{key}.maintenance_page: {printable(str(path), 80)} is not a file")
            return
        size = path.stat().st_size
        with open(path, "rb"):
            pass
    except OSError as error:
        problems.append(f"{key}.maintenance_page: cannot read {printable(str(path), 80)} "
                        f"({error.strerror or type(error).__name__})")
        return
    if size > MAINTENANCE_PAGE_LIMIT:
        problems.append(f"{key}.maintenance_page: {printable(str(path), 80)} is {size} bytes, more than "
                        f"{MAINTENANCE_PAGE_LIMIT}")
    values["maintenance_page"] = str(path)


def _signatures(raw: Any, image_app: bool, key: str, base: Path, problems: list[str]) -> SignaturesConfig | None:
    """`[apps.X.signatures]`: allowed_signers and/or gpg_keyring, each a readable file (resolved against the
    config's folder); for apps built from git only. None when the app has no such table."""
    if raw is None or not _is_table(raw, key, problems):
        return None
    values = _section(SignaturesConfig, raw, key, problems)
    if image_app:
        problems.append(f"{key}: an image app deploys images, not git commits; signatures are for apps built from a repo")
        return None
    if not any(values.values()):
        problems.append(f"{key}: needs allowed_signers (an SSH allowed-signers file) or gpg_keyring (OpenPGP public keys)")
        return None
    for name, value in values.items():
        if not value:
            continue
        if problem := _path_problem(value):
            problems.append(f"{key}.{name}: {problem}")
            continue
        path = (base / value).resolve()
        if not path.is_file() or not os.access(path, os.R_OK):
            problems.append(f"{key}.{name}: {path} is not a readable file")
        values[name] = str(path)
    return SignaturesConfig(**values)


def _check_webhook(raw: Any, key: str, problems: list[str]) -> dict | None:
    """An app's `webhook` table's values; None if it has none (or it is not a table)."""
    if raw is None or not _is_table(raw, key, problems):
        return None
    webhook = _section(WebhookConfig, raw, key, problems)
    if webhook.get("provider", "github") not in PROVIDERS:
        problems.append(f"{key}.provider: must be one of {', '.join(PROVIDERS)}")
    _check_secret_source(webhook, key, problems)
    if "repository" in webhook and not re.fullmatch(r"[\w.-]+(/[\w.-]+)+", webhook["repository"]):
        problems.append(f"{key}.repository: must look like owner/name")
    if "tag" in webhook and not TAG.match(webhook["tag"]):
        problems.append(f"{key}.tag: not a valid image tag")
    return webhook


def _check_repo(table: Mapping, values: dict, key: str, base: Path, problems: list[str]) -> None:
    """`repo` or `image`, not both; a local path is resolved against the config's folder."""
    if "image" in table:
        if "repo" in table:
            problems.append(f"{key}: give repo (built here) or image (built elsewhere), not both")
        elif isinstance(values.get("image"), str) and (problem := image_problem(values["image"])):
            problems.append(f"{key}.image: {problem}")
        if values.get("push"):
            problems.append(f"{key}.push: an image app's releases come from its registry already")
    elif "repo" not in table:
        problems.append(f"{key}.repo: required (a bare repo path or a clone URL), or image (REGISTRY/REPOSITORY)")
    elif isinstance(values.get("repo"), str):
        if not values["repo"]:
            problems.append(f"{key}.repo: must not be empty")
        elif problem := _repo_problem(values["repo"]):
            problems.append(f"{key}.repo: {problem}, not {printable(values['repo'], 60)}")
        elif is_local_path(values["repo"]):
            values["repo"] = str((base / values["repo"]).resolve())


# The key types ssh writes in known_hosts lines (ssh-keyscan, ~/.ssh/known_hosts).
HOST_KEY_TYPES = ("ssh-ed25519", "ssh-rsa", "ecdsa-sha2-nistp256", "ecdsa-sha2-nistp384", "ecdsa-sha2-nistp521",
                  "sk-ssh-ed25519@openssh.com", "sk-ecdsa-sha2-nistp256@openssh.com")


def _check_repo_access(values: dict, key: str, base: Path, problems: list[str]) -> None:
    """repo_key_file and repo_host_key go with an ssh clone URL, repo_token_env with an https one."""
    repo = values.get("repo")
    if not isinstance(repo, str) or not repo:
        for option in ("repo_key_file", "repo_host_key", "repo_token_env"):
            if values.get(option):
                problems.append(f"{key}.{option}: only for an app built from a clone URL (repo)")
        return
    host = ssh_host(repo)
    for option in ("repo_key_file", "repo_host_key"):
        if values.get(option) and host is None:
            problems.append(f"{key}.{option}: only for an ssh clone URL (ssh://... or user@host:path), "
                            f"not {printable(repo, 60)}")
    if values.get("repo_key_file") and host is not None:
        values["repo_key_file"] = str((base / values["repo_key_file"]).resolve())
    if values.get("repo_host_key") and host is not None:
        if problem := _host_key_problem(values["repo_host_key"], host):
            problems.append(f"{key}.repo_host_key: {problem}")
    token_env = values.get("repo_token_env")
    if token_env:
        url = urllib.parse.urlsplit(repo) if "://" in repo else None
        if url is None or url.scheme.lower() not in ("https", "http"):
            problems.append(f"{key}.repo_token_env: only for an https:// clone URL, not {printable(repo, 60)}")
        elif url.password is not None:
            problems.append(f"{key}.repo: the clone URL carries a password; with repo_token_env the token is "
                            "sent as a header, keep it out of the URL")
        if not ENV_NAME.match(token_env):
            problems.append(f"{key}.repo_token_env: not an environment variable name")


def _host_key_problem(line: str, host: str) -> str | None:
    """Why `line` is not a known_hosts line for `host` (as ssh names it: host or [host]:port), or None."""
    fields = line.split()
    if len(fields) < 3 or "\n" in line:
        return f"must be one known_hosts line \"{host} KEYTYPE BASE64\" (as ssh-keyscan prints it)"
    names, kind, blob = fields[:3]
    if host not in [name.lower() for name in names.split(",")]:
        return (f"names {printable(names, 60)}, not the repo's host {host} (write it as ssh-keyscan"
                f"{'' if host[:1] != '[' else ' -p PORT'} prints it)")
    if kind not in HOST_KEY_TYPES:
        return f"key type {printable(kind, 40)} is not one of {', '.join(HOST_KEY_TYPES)}"
    try:
        decoded = base64.b64decode(blob, validate=True)
    except ValueError:
        decoded = b""
    if not decoded.startswith(len(kind).to_bytes(4, "big") + kind.encode()):
        return f"the key is not a base64 {kind} public key"
    return None


def _repo_problem(repo: str) -> str | None:
    """Why git must not be handed `repo` (see CLONE_SCHEMES), or None for a path or a clone URL it may fetch."""
    if repo.startswith("-"):
        return "must not start with '-' (git would take it for an option)"
    if re.match(r"[A-Za-z][A-Za-z0-9+.-]*::", repo):
        return "must not be a transport::address (git would run a command for ext:: or fd::)"
    if "://" in repo:
        try:
            url = urllib.parse.urlsplit(repo)
            url.port  # noqa: B018 - raises ValueError on a port out of range
        except ValueError:
            return "is not a valid URL"
        if url.scheme.lower() not in CLONE_SCHEMES:
            return f"must be a path, user@host:path or a {', '.join(scheme + '://' for scheme in CLONE_SCHEMES)} URL"
        if url.scheme.lower() != "file" and not (url.hostname and url.hostname[0].isalnum()):
            return "must name a host (starting with a letter or digit)"
        if (url.username or "").startswith("-"):
            return "must not name a user starting with '-' (ssh would take it for an option)"
    elif not is_local_path(repo) and repo.partition("@")[2][:1] in ("-", ":", ""):
        return "must name a host after '@' (starting with a letter or digit)"
    elif is_local_path(repo) and (problem := _path_problem(repo)):
        return problem
    return None


def _check_paths(values: dict, key: str, problems: list[str]) -> None:
    """`context`, and `dockerfile` within it, stay inside the repository."""
    for name_key in ("context", "dockerfile"):
        if name_key in values and not _stays_inside(values.get("context", "."), values[name_key], name_key):
            problems.append(f"{key}.{name_key}: must be a relative path that stays inside the repository")


def _check_numbers(values: dict, key: str, problems: list[str]) -> None:
    """`port`, `keep` and the durations are in range."""
    if "port" in values and not 1 <= values["port"] <= 65535:
        problems.append(f"{key}.port: must be between 1 and 65535")
    if "keep" in values and values["keep"] < 2:
        problems.append(f"{key}.keep: must be at least 2 (the live release and one to roll back to)")
    for duration in ("drain_seconds", "build_timeout", "read_timeout"):
        if duration in values and not values[duration] > 0:
            problems.append(f"{key}.{duration}: must be greater than 0")


def _check_hostnames(values: dict, key: str, problems: list[str]) -> None:
    """`hostnames` is a list of valid hostnames (a leading `*.` allowed), kept as a tuple."""
    if "hostnames" not in values:
        return
    hostnames = values["hostnames"]
    if not isinstance(hostnames, list) or not all(isinstance(h, str) for h in hostnames):
        problems.append(f"{key}.hostnames: must be a list of strings")
        del values["hostnames"]  # the checks after this one take hostnames to be strings
        return
    for hostname in hostnames:
        if not HOSTNAME.match(hostname) or len(hostname) > 253:
            problems.append(f"{key}.hostnames: {printable(hostname)} is not a valid hostname")
    values["hostnames"] = tuple(hostnames)


def _check_unique_hostnames(apps: Mapping[str, AppConfig], problems: list[str]) -> None:
    """A hostname (compared as DNS does, ignoring case) routes to one app only."""
    owners: dict[str, str] = {}
    for name, app in apps.items():
        for hostname in app.hostnames:
            owner = owners.setdefault(hostname.lower(), name)
            if owner != name:
                problems.append(f"{_child('apps', name)}.hostnames: {hostname} is also a hostname of {_child('apps', owner)} "
                                "(a hostname routes to one app)")


def _check_target(values: dict, key: str, problems: list[str]) -> None:
    """`target`, `replicas` and `placement` (a tuple of Swarm constraints, swarm only)."""
    if "target" in values and values["target"] not in TARGETS:
        problems.append(f"{key}.target: must be one of {', '.join(TARGETS)}, not {printable(values['target'], 40)}")
    swarm = values.get("target") == "swarm"
    if not 1 <= values.get("replicas", 1) <= MAX_REPLICAS:
        problems.append(f"{key}.replicas: must be between 1 and {MAX_REPLICAS}")
    if "placement" not in values:
        return
    placement = values["placement"]
    if not all(isinstance(constraint, str) for constraint in placement):
        problems.append(f"{key}.placement: must be a list of strings")
        return
    if placement and not swarm:
        problems.append(f"{key}.placement: only for target = \"swarm\"")
    for constraint in placement:
        if not CONSTRAINT.match(constraint):
            problems.append(f"{key}.placement: {printable(constraint, 60)} is not a Swarm constraint "
                            f"(like node.role==worker or node.labels.zone!=b)")
    values["placement"] = tuple(placement)


# A constraint that can hold on one node only: its hostname or id.
ONE_NODE = re.compile(r"node\.(hostname|id)\s*==")


def _check_run_options(values: dict, key: str, problems: list[str]) -> None:
    """`volumes` (Mounts, one per container path; a swarm app's named ones need a placement on one node),
    `release_command` and `release_timeout`, `memory` and `cpus`."""
    mounts = []
    for entry in values.get("volumes", ()):
        mount = parse_mount(entry) if isinstance(entry, str) else "must be a string"
        if isinstance(mount, str):
            shown = printable(entry, 200) if isinstance(entry, str) else json.dumps(entry, default=str)[:40]
            problems.append(f"{key}.volumes: {shown}: {mount}")
        elif any(other.target == mount.target for other in mounts):
            problems.append(f"{key}.volumes: {printable(entry, 200)}: another entry mounts at {printable(mount.target)} already")
        else:
            mounts.append(mount)
    values["volumes"] = tuple(mounts)
    named = [mount.source for mount in mounts if mount.named]
    one_node = any(isinstance(constraint, str) and ONE_NODE.match(constraint) for constraint in values.get("placement", ()))
    if named and values.get("target") == "swarm" and not one_node:
        problems.append(f"{key}.volumes: the named volume {named[0]} lives on one node, so a swarm app with named "
                        "volumes needs a placement on one node (like placement = [\"node.hostname==db1\"])")
    command = values.get("release_command", ())
    if not all(isinstance(part, str) and part for part in command):
        problems.append(f"{key}.release_command: must be a list of non-empty strings (the program and its arguments)")
    values["release_command"] = tuple(command)
    if not values.get("release_timeout", 1) > 0:
        problems.append(f"{key}.release_timeout: must be greater than 0")
    memory = values.get("memory", "")
    if memory and ((size := memory_bytes(memory)) is None or size < MIN_MEMORY):
        problems.append(f"{key}.memory: must be a size like \"512m\" or \"1g\" of at least 6m "
                        f"(the least Docker takes), not {printable(memory, 40)}")
    if not (values.get("cpus", 0) == 0 or 0.01 <= values["cpus"] <= 1024):
        problems.append(f"{key}.cpus: must be 0 (no limit) or between 0.01 and 1024")


def _check_app_tls(raw: Any, values: dict, key: str, base: Path, problems: list[str]) -> None:
    """`tls`: "off", "acme" (hostnames, none a wildcard) or {cert_file, key_file} (resolved paths)."""
    if isinstance(raw, Mapping):
        paths = {name: raw.get(name) for name in ("cert_file", "key_file")}
        extra = sorted(set(raw) - set(paths))
        if extra or not all(isinstance(value, str) and value for value in paths.values()):
            problems.append(f"{key}.tls: a table must be {{cert_file = \"PATH\", key_file = \"PATH\"}}"
                            + (f" (unknown key {printable(extra[0], 40)})" if extra else ""))
            return
        bad_paths = {name: problem for name, value in paths.items()
                     if (problem := _value_problem(name, value, (str,)))}
        for name, problem in bad_paths.items():
            problems.append(f"{key}.tls.{name}: {problem}")
        if bad_paths:
            return
        values["tls"] = TlsFiles(**{name: str((base / value).resolve()) for name, value in paths.items()})
        return
    if raw not in TLS_MODES:
        shown = printable(raw, 40) if isinstance(raw, str) else json.dumps(raw, default=str)[:40]
        problems.append(f"{key}.tls: must be \"off\", \"acme\" or {{cert_file = \"...\", key_file = \"...\"}}, not {shown}")
        return
    values["tls"] = raw
    if raw == "acme":
        hostnames = values.get("hostnames", ())
        if not hostnames:
            problems.append(f"{key}.tls: \"acme\" needs hostnames (a certificate names them; "
                            f"the default server has none)")
        for hostname in hostnames:
            if hostname.startswith("*."):
                problems.append(f"{key}.tls: \"acme\" cannot get a certificate for {hostname} (a wildcard needs a DNS "
                                f"challenge); bring one with tls = {{cert_file, key_file}}")


def _tls(raw: Any, base: Path, problems: list[str]) -> TlsConfig:
    """The optional `[tls]` table."""
    if raw is None or not _is_table(raw, "tls", problems):
        return TlsConfig()
    values = _section(TlsConfig, raw, "tls", problems)
    directory = values.get("acme_directory")
    if isinstance(directory, str) and not (_is_http_url(directory) and directory.startswith("https://")):
        problems.append(f"tls.acme_directory: must be an https:// URL, not {printable(directory, 60)}")
    email = values.get("email")
    if email and not re.fullmatch(r"[^@\s,:]+@[^@\s,:]+\.[^@\s,:]+", email):
        problems.append(f"tls.email: not an email address: {printable(email, 60)}")
    if values.get("ca_bundle"):
        values["ca_bundle"] = str((base / values["ca_bundle"]).resolve())
    return TlsConfig(**values)


def _check_build_args(values: dict, key: str, problems: list[str]) -> None:
    """`build_args` is a table of scalars, kept as strings."""
    if "build_args" not in values:
        return
    args = values["build_args"]
    bad = [k for k, v in args.items() if not isinstance(v, (str, int, float, bool))] if isinstance(args, Mapping) else None
    if bad is None or bad:
        problems.append(f"{key}.build_args: must be a table of strings")
    elif problem := _build_args_problem(args):
        problems.append(f"{key}.build_args: {problem}")
    else:
        values["build_args"] = MappingProxyType({k: str(v) for k, v in args.items()})


def _build_args_problem(args: Mapping) -> str | None:
    """Why a table of scalar build arguments cannot be given to a build (`docker build --build-arg NAME=VALUE`)."""
    for name, value in args.items():
        if not ENV_NAME.match(name):
            return f"{printable(name, 40)} is not a build argument name (letters, digits and _)"
        if "\0" in str(value):
            return f"{name}: must not contain a NUL character"
    return None


SECRET_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}\Z")  # what RUN --mount=type=secret,id= names
STAGE_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_.-]{0,127}\Z")  # a Dockerfile's FROM ... AS NAME


def _check_build_options(table: Mapping, values: dict, key: str, base: Path, problems: list[str]) -> None:
    """`build_target` names a stage; `build_secrets` is NAME = {from_file = PATH} or {from_env = VAR},
    files resolved against the config's folder. Both only for apps built here."""
    for option in ("build_target", "build_secrets"):
        if option in table and "image" in table:
            problems.append(f"{key}.{option}: only for apps built here from a repo (an image app is built elsewhere)")
    target = values.get("build_target")
    if target and not STAGE_NAME.match(target):
        problems.append(f"{key}.build_target: must name a stage of the Dockerfile (FROM ... AS NAME), "
                        f"not {printable(target, 40)}")
    if "build_secrets" not in values:
        return
    secrets = {}
    for name, source in values["build_secrets"].items():
        where = f"{key}.build_secrets.{name if SECRET_ID.match(name) else printable(name, 40)}"
        if not SECRET_ID.match(name):
            problems.append(f"{where}: a secret's name must match [A-Za-z0-9][A-Za-z0-9_.-]{{0,63}}")
        elif (not isinstance(source, Mapping) or len(source) != 1
              or not isinstance(next(iter(source.values())), str) or next(iter(source)) not in ("from_file", "from_env")):
            problems.append(f"{where}: must be {{ from_file = \"PATH\" }} or {{ from_env = \"VARIABLE\" }} "
                            "(the value itself never goes in the file)")
        elif "from_env" in source and not ENV_NAME.match(source["from_env"]):
            problems.append(f"{where}.from_env: must name an environment variable, not {printable(source['from_env'], 40)}")
        elif "from_file" in source and not source["from_file"]:
            problems.append(f"{where}.from_file: must not be empty")
        elif "from_file" in source:
            secrets[name] = BuildSecret(from_file=str((base / source["from_file"]).resolve()))
        else:
            secrets[name] = BuildSecret(from_env=source["from_env"])
    values["build_secrets"] = MappingProxyType(secrets)


def _build(raw: Any, apps: Mapping[str, AppConfig], registry: RegistryConfig | None, base: Path,
           problems: list[str]) -> BuildConfig:
    """The optional `[build]` table; the classic builder has no secret mounts to give an app's build_secrets
    and builds on no build host; a build host pushes to [registry], so it needs one."""
    values = {} if raw is None or not _is_table(raw, "build", problems) else _section(BuildConfig, raw, "build", problems)
    builder = values.get("builder", BuildConfig.builder)
    if builder not in BUILDERS:
        problems.append(f"build.builder: must be one of {', '.join(BUILDERS)}, not {printable(builder, 40)}")
    elif builder == "classic":
        for name, app in apps.items():
            if app.build_secrets:
                problems.append(f"apps.{name}.build_secrets: need [build] builder = \"buildkit\" "
                                "(the classic builder has no secret mounts)")
    if values.get("host") and (problem := _build_host_problem(values["host"])):
        problems.append(f"build.host: {problem}")
    cache = values.get("cache", BuildConfig.cache)
    if cache not in BUILD_CACHES:
        problems.append(f"build.cache: must be one of {', '.join(BUILD_CACHES)}, not {printable(cache, 40)}")
    elif cache == "registry" and builder == "classic":
        problems.append('build.cache: "registry" needs [build] builder = "buildkit" (the classic builder has no cache import)')
    elif cache == "registry" and registry is None:
        problems.append('build.cache: "registry" needs a [registry] table (the build cache is kept there as '
                        'URL/N/APP:buildcache)')
    hosts = {"build.host": values.get("host", "")} if any(app.builds for app in apps.values()) else {}
    hosts.update({f"apps.{name}.build_host": app.build_host for name, app in apps.items() if app.build_host})
    for key, host in hosts.items():
        if not host:
            continue
        if builder == "classic":
            problems.append(f"{key}: a build host builds with BuildKit; remove it or set [build] builder = \"buildkit\"")
        if registry is None:
            problems.append(f"{key}: needs a [registry] table (the build host pushes each release there, "
                            "and this engine pulls it by digest)")
    _check_build_tls(values, any(host.startswith("tcp://") for host in [values.get("host", ""), *hosts.values()]),
                     base, problems)
    return BuildConfig(**values)


def _build_host_problem(host: str) -> str | None:
    """Why `host` is not ssh://user@host[:port] or tcp://host:port."""
    match = BUILD_HOST.match(host)
    if match is None or (host.startswith("tcp://") and not match.group("port")):
        return f"must be ssh://user@host[:port] or tcp://host:port, not {printable(host, 60)}"
    if match.group("port") and not 1 <= int(match.group("port")) <= 65535:
        return f"port {match.group('port')} is not between 1 and 65535"
    return None


def _check_build_tls(values: dict, tcp: bool, base: Path, problems: list[str]) -> None:
    """tls_ca, tls_cert and tls_key: for a tcp:// build host only; readable files, resolved against the
    config's folder; a client certificate goes with its key."""
    given = [key for key in ("tls_ca", "tls_cert", "tls_key") if values.get(key)]
    if given and not tcp:
        problems.append(f"build.{given[0]}: TLS files are for a tcp:// build host, and none is set")
        return
    if bool(values.get("tls_cert")) != bool(values.get("tls_key")):
        problems.append("build.tls_cert: a client certificate and its key (tls_key) go together")
    for key in given:
        path = (base / values[key]).resolve()
        if not path.is_file() or not os.access(path, os.R_OK):
            problems.append(f"build.{key}: {path} is not a readable file")
        values[key] = str(path)


def _registry(raw: Any, problems: list[str]) -> RegistryConfig | None:
    """The optional `[registry]` table."""
    if raw is None or not _is_table(raw, "registry", problems):
        return None
    before = len(problems)
    values = _section(RegistryConfig, raw, "registry", problems)
    if "url" not in raw:
        problems.append("registry.url: required (HOST[:PORT] of the registry)")
    elif isinstance(values.get("url"), str) and (problem := registry_host_problem(values["url"])):
        problems.append(f"registry.url: {problem}, not {printable(values['url'], 60)}")
    for source in ("password_env", "password_file"):
        if source in values and not values[source]:
            problems.append(f"registry.{source}: must not be empty")
    if values.get("password_env") and not ENV_NAME.match(values["password_env"]):
        problems.append("registry.password_env: must name an environment variable (the password never goes in the file)")
    if values.get("username") and not (raw.get("password_env") or raw.get("password_file")):
        problems.append("registry: a username needs password_env or password_file")
    return RegistryConfig(**values) if len(problems) == before else None


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
        port = url.port  # raises ValueError on a port out of range
    except ValueError:
        return False
    # the host as the idna codec will take it: labels of 1-63 characters, 253 in all
    labels = (url.hostname or "").rstrip(".").split(".")
    host_ok = bool(url.hostname) and len(url.hostname) <= 253 and all(0 < len(label) <= 63 for label in labels)
    return url.scheme in ("http", "https") and host_ok and port != 0 and not re.search(r"[\s\x00-\x1f]", text)


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


def _check_guard(guard: dict, key: str, problems: list[str]) -> None:
    if guard.get("watch_seconds", 0) < 0:
        problems.append(f"{key}.watch_seconds: must be 0 (no watch) or more")
    if not 0 <= guard.get("max_error_ratio", 0.05) < 1:
        problems.append(f"{key}.max_error_ratio: must be at least 0 and below 1 (0.05 is 5 %)")
    if guard.get("min_requests", 1) < 1:
        problems.append(f"{key}.min_requests: must be at least 1")
    if not 0 <= guard.get("canary_percent", 0) < 100:
        problems.append(f"{key}.canary_percent: must be at least 0 (no canary) and below 100")
    if not guard.get("canary_seconds", 1) > 0:
        problems.append(f"{key}.canary_seconds: must be greater than 0")


def _check_tasks(values: dict, key: str, problems: list[str]) -> None:
    """`[[apps.X.tasks]]`: each a table with a unique name, a valid schedule, a command and a timeout."""
    if "tasks" not in values:
        return
    tasks, names = [], set()
    for index, table in enumerate(values["tasks"]):
        task_key = f"{key}.tasks[{index}]"
        task = _section(TaskConfig, table, task_key, problems)
        if not isinstance(table, Mapping):
            continue
        for required in ("name", "schedule", "command"):
            if required not in table:
                problems.append(f"{task_key}.{required}: required")
        name = task.get("name")
        if isinstance(name, str) and not TASK_NAME.match(name):
            problems.append(f"{task_key}.name: must match [a-z0-9-]{{1,40}}, not {printable(name, 50)}")
        elif isinstance(name, str) and name in names:
            problems.append(f"{task_key}.name: {name} names another task of the app too")
        names.add(name)
        if "schedule" in task and (problem := schedule.problem(task["schedule"])):
            problems.append(f"{task_key}.schedule: {problem}")
        command = task.get("command")
        if command is not None and (not command or not all(isinstance(part, str) for part in command)):
            problems.append(f"{task_key}.command: must be a non-empty list of strings (the program and its arguments)")
        if not task.get("timeout", 1) > 0:
            problems.append(f"{task_key}.timeout: must be greater than 0 seconds")
        if all(required in task for required in ("name", "schedule", "command")):
            tasks.append(TaskConfig(**{**task, "command": tuple(task["command"])}))
    values["tasks"] = tuple(tasks)


def _check_env(env: Any, key: str, problems: list[str]) -> dict:
    if not isinstance(env, Mapping):
        problems.append(f"{key}: must be a table")
        return {}
    checked = {}
    for name, value in env.items():
        if not ENV_NAME.match(name):
            problems.append(f"{_child(key, name)}: not a valid environment variable name")
        elif isinstance(value, str) and "\0" in value:
            problems.append(f"{key}.{name}: must not contain a NUL character")
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
    host, port = split_address(address)
    try:
        ipaddress.ip_address(host)
        valid_host = True
    except ValueError:
        valid_host = host == "localhost"
    if not valid_host or not re.fullmatch(r"[0-9]{1,5}", port) or not 0 < int(port) < 65536:
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
            problems.append(f"{_child(prefix.removesuffix('.'), name)}: unknown key")


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
        if (problem := _value_problem(name, value, expected)) is not None:
            problems.append(f"{key}.{name}: {problem}")
            continue
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


def _value_problem(name: str, value: Any, expected: tuple[type, ...]) -> str | None:
    """Why a value of the type its key takes is still unusable whatever the key means, or None: a number out
    of bounds (NUMBER_LIMIT, INTEGER_LIMIT), a string with a NUL or (but in FREE_TEXT) another control
    character, or one longer than TEXT_LIMIT; a `*_file` or `*_dir` path no file system takes."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)) and float in expected:
        if isinstance(value, float) and math.isnan(value) or abs(value) > NUMBER_LIMIT:
            return f"must be a finite number between -1e9 and 1e9, not {_shown_number(value)}"
    elif isinstance(value, int) and not -INTEGER_LIMIT <= value < INTEGER_LIMIT:
        return f"must be an integer between -2**63 and 2**63 - 1, not {_shown_number(value)}"
    if isinstance(value, list) and any(isinstance(item, str) and "\0" in item for item in value):
        return "must not contain a NUL character"
    if not isinstance(value, str) or str not in expected:
        return None
    if "\0" in value or (name not in FREE_TEXT and CONTROL_CHARACTERS.search(value)):
        return f"must not contain control characters (like a newline, a tab or NUL), not {printable(value, 60)}"
    if len(value) > TEXT_LIMIT:
        return f"must be at most {TEXT_LIMIT} characters long, not {len(value)}"
    if value and name.endswith(("_file", "_dir")):
        return _path_problem(value)
    return None


def _shown_number(value: int | float) -> str:
    """A number as the file wrote it, bounded: a 400-digit integer is shown by its first digits and length."""
    text = repr(value) if isinstance(value, float) else str(value)
    return text if len(text) <= 24 else f"{text[:20]}... ({len(text)} digits)"


def _child(key: str, name: str) -> str:
    """The key path of table `key`'s child `name`: as is when a bare TOML key, else quoted and escaped (a
    quoted key may hold a newline or an escape sequence, which must not reach a terminal)."""
    shown = name if re.fullmatch(r"[A-Za-z0-9_-]{1,80}", name) else printable(name, 60)
    return f"{key}.{shown}" if key else shown


def _expected_types(annotation: str) -> tuple[type, ...]:
    names = {"int": int, "float": float, "str": str, "bool": bool, "None": type(None)}
    if annotation.startswith("tuple"):
        return (list,)
    if annotation.startswith("Mapping"):
        return (Mapping,)
    return tuple(names[part.strip()] for part in annotation.split("|") if part.strip() in names)
