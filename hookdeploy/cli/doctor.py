"""`hookdeploy doctor`: check each thing a deploy needs and say how to fix what is wrong."""

from __future__ import annotations

import ipaddress
import os
import shutil
from pathlib import Path
from typing import Callable

from hookdeploy.cli import doctor_signatures, doctor_swarm, doctor_tls, previews
from hookdeploy.core.config import Config, missing_secrets
from hookdeploy.core.errors import HookdeployError
from hookdeploy.core.names import split_address

Report = Callable[[str], None]

LS_REMOTE_TIMEOUT = 20.0  # seconds `git ls-remote` may take before a clone URL counts as unreachable


def run(config: Config, report: Report) -> int:
    """Run every check, reporting each line; return how many problems were found."""
    problems = 0

    def check(ok: bool, good: str, bad: str) -> None:
        nonlocal problems
        report(f"ok    {good}" if ok else f"FIX   {bad}")
        problems += not ok

    check(True, f"config {config.path} is valid ({len(config.apps)} app{'s' if len(config.apps) != 1 else ''})", "")
    check(shutil.which("git") is not None, "git is installed", "git is not on PATH: apt-get install git")
    state = Path(config.server.state_dir)
    state_ok = state.is_dir() and os.access(state, os.W_OK)
    check(state_ok, f"state_dir {state} is writable",
          f"state_dir {state} is missing or not writable: mkdir -p {state} and give it to the hookdeploy user")
    if state_ok:
        free = shutil.disk_usage(state).free
        check(free > 2 * 1024**3, f"{free / 1024**3:.1f} GiB free in {state}",
              f"only {free / 1024**2:.0f} MiB free in {state}: builds need room; prune images or grow the disk")
    _check_listen(config, report)
    has_webhooks = any(app.webhook is not None for app in config.apps.values())
    for problem in missing_secrets(config, tokens=has_webhooks, webhooks=True, app_env=True):
        check(False, "", f"{problem}: {_secret_fix(problem)}")
    for app in config.apps.values():
        _check_app(config, app, check)
    doctor_signatures.check_signatures(config, check, report)
    _check_builds(config, check)
    if config.registry is not None:
        _check_registry(config, check)
    if any(app.tls_mode != "off" for app in config.apps.values()):
        doctor_tls.check_tls(config, check)
    _check_docker(config, check)
    _check_orphans(config, check)
    previews.check_previews(config, check)
    return problems


def _check_orphans(config: Config, check) -> None:
    """Apps the job store knows that deploy.toml does not, with something of them left (`hookdeploy remove`)."""
    from hookdeploy.core.store import Store
    from hookdeploy.engine import containers, removal

    if not config.server.database.exists():
        return  # nothing deployed yet; doctor makes no store
    try:
        engine = containers.engine()
    except HookdeployError:
        engine = None  # said by the Docker check; the store and the routes still tell
    try:
        store = Store(config.server.database)
        found = removal.orphans(config, store, engine)
        store.close()
    except HookdeployError as error:
        check(False, "", f"cannot look for apps removed from deploy.toml: {error}")
        return
    finally:
        if engine is not None:
            engine.close()
    for app, left in found.items():
        check(False, "", f"app {app} is not in deploy.toml but still has {', '.join(left)}: "
                         f"run hookdeploy remove {app} (its history stays)")


def _check_listen(config: Config, report: Report) -> None:
    """Warn (not a problem: a firewall may stand in front) when serve takes public traffic itself."""
    listen = config.server.listen
    host, _ = split_address(listen)
    if host == "localhost" or ipaddress.ip_address(host).is_loopback:
        report(f"ok    server.listen {listen} is loopback: only this machine (and a proxy on it) reaches serve")
    elif config.server.trusted_proxy:
        report(f"ok    server.listen {listen} is not loopback, with a reverse proxy in front "
               f"(server.trusted_proxy = \"{config.server.trusted_proxy}\")")
    else:
        report(f"WARN  server.listen {listen} is not a loopback address and no server.trusted_proxy is set: "
               f"{config.server.connection_limit} slow clients would leave serve answering no one; "
               "listen on 127.0.0.1 behind a TLS proxy (the handbook's guides/tls-proxy.md), "
               "or set server.trusted_proxy to the proxy's address")


def _check_app(config: Config, app, check) -> None:
    from hookdeploy.cli import hook

    if not app.builds:
        return  # an image app has no repo; the registry is checked once, for all
    if not app.is_local_repo:
        if app.repo_key_file:
            problem = _key_file_problem(app.repo_key_file)
            check(problem is None, f"{app.name}: deploy key {app.repo_key_file} is readable by this user only",
                  f"{app.name}: deploy key {app.repo_key_file}: {problem}")
        error = _ls_remote(app, config.server.state_dir)
        check(error is None, f"{app.name}: repo {app.repo} answers (mirrored under state_dir)",
              f"{app.name}: repo {app.repo} cannot be reached ({error}): check the URL in apps.{app.name}.repo, "
              "the network, and that the hookdeploy user can read it (its ssh key or a deploy key)")
        return
    repo = Path(app.repo)
    is_repo = (repo / "HEAD").exists()
    check(is_repo, f"{app.name}: repo {repo} exists",
          f"{app.name}: repo {repo} does not exist: hookdeploy init-repo {app.name}")
    hook_file = repo / "hooks" / "post-receive"
    if is_repo and (repo / "objects").is_dir() and not (repo / ".git").exists():
        text = hook_file.read_text(errors="replace") if hook_file.exists() else ""
        command = hook.hookdeploy_command()[0]
        check(command in text and str(config.path) in text and os.access(hook_file, os.X_OK),
              f"{app.name}: post-receive hook runs {command} with {config.path}",
              f"{app.name}: post-receive hook is missing or points elsewhere: hookdeploy init-repo {app.name}")


def _check_builds(config: Config, check) -> None:
    """The BuildKit client builds go through (when an app builds with BuildKit), and each build secret's source."""
    building = [app for app in config.apps.values() if app.builds]
    if building and config.build.builder == "buildkit":
        from hookdeploy.engine import buildkit

        found = buildkit.discover()
        passed = f" (passed over {'; '.join(found.passed_over)})" if found.passed_over else ""
        check(found.client is not None, f"BuildKit builds go through {found.client.describe() if found.client else ''}"
              f"{passed}", found.problem())
        if found.client is not None:
            for host in sorted({config.build_host(app) for app in building} - {""}):
                _check_build_host(config, host, found.client, check)
    for app in building:
        for name, secret in app.build_secrets.items():
            key = f"apps.{app.name}.build_secrets.{name}"
            if secret.from_env:
                check(secret.from_env in os.environ, f"{key}: environment variable {secret.from_env} is set",
                      f"{key}: environment variable {secret.from_env} is not set: set it in the environment "
                      "hookdeploy runs with (for the systemd units: /etc/hookdeploy/env)")
            else:
                check(os.access(secret.from_file, os.R_OK), f"{key}: {secret.from_file} is readable",
                      f"{key}: {secret.from_file} is missing or unreadable: write the secret there, readable "
                      "by the hookdeploy user only")


def _check_build_host(config: Config, url: str, cli, check) -> None:
    """A build host answers, its engine has BuildKit, and it can log in to [registry] (which it pushes to)."""
    from hookdeploy.engine import buildhost

    host = buildhost.BuildHost.of(config, url)
    try:
        version = host.check(cli)
    except HookdeployError as error:
        check(False, "", f"{error}: start Docker there, and check that this user reaches it "
                         "(ssh: its key and known_hosts in ~/.ssh; tcp: the address and the TLS files in [build])")
        return
    check(True, f"build host {url} answers: Docker {version}, BuildKit built in", "")
    try:
        buildhost.check_login(config, host, cli)
    except HookdeployError as error:
        check(False, "", f"build host {url} cannot log in to the registry {config.registry.url}: {error}")
        return
    username = config.registry.username
    check(True, f"build host {url} logs in to the registry {config.registry.url}"
          + (f" as {username}" if username else " (no login needed)"), "")


def _secret_fix(problem: str) -> str:
    """How to fix a problem reported by `missing_secrets`."""
    if ".secret_file:" in problem:
        return "write the secret into that file, readable only by the hookdeploy user"
    if ".secret_env:" in problem:
        return ("set it in the environment hookdeploy runs with (for the systemd units: /etc/hookdeploy/env, "
                "mode 0600), e.g. to the output of: openssl rand -hex 32")
    if ".env." in problem or ".password_env:" in problem or ".repo_token_env:" in problem:
        return "set it in the environment hookdeploy runs with (for the systemd units: /etc/hookdeploy/env)"
    if ".password_file:" in problem:
        return "write the password into that file, readable only by the hookdeploy user"
    return "add secret_env or secret_file to that table"


def _check_registry(config: Config, check) -> None:
    """The registry answers its API and takes [registry]'s credentials (asked over HTTP, as the engine will)."""
    import base64
    import urllib.error
    import urllib.request

    registry = config.registry
    url = f"{'http' if registry.insecure else 'https'}://{registry.url}/v2/"
    request = urllib.request.Request(url)
    password = registry.password()
    if registry.username and password is not None:
        pair = f"{registry.username}:".encode() + password
        request.add_header("Authorization", "Basic " + base64.b64encode(pair).decode())
    try:
        with urllib.request.urlopen(request, timeout=10):
            status = 200
    except urllib.error.HTTPError as error:
        status = error.code
    except (urllib.error.URLError, OSError) as error:
        reason = getattr(error, "reason", error)
        check(False, "", f"registry {registry.url} does not answer ({reason}): check registry.url, that it runs, "
                         "and registry.insecure (true for plain HTTP)")
        return
    who = f"as {registry.username}" if registry.username else "without credentials"
    check(status == 200, f"registry {registry.url} answers and accepts the login {who}",
          f"registry {registry.url} refuses the login {who} (HTTP {status}): check registry.username and "
          "the password in registry.password_env or password_file")


def _ls_remote(app, state_dir: str, timeout: float = LS_REMOTE_TIMEOUT) -> str | None:
    """None if `git ls-remote` of the app's clone URL answers within `timeout` seconds with the app's
    credentials (gitauth), else why not (one line: key refused, host key changed, repository not found...)."""
    import git

    from hookdeploy.engine import gitauth

    try:
        environment = gitauth.environment(app, state_dir)
        if not app.repo_key_file and not app.repo_host_key:
            # The user's own ssh setup, but never a host-key question: doctor runs unattended too.
            environment["GIT_SSH_COMMAND"] = os.environ.get("GIT_SSH_COMMAND", "ssh") + " -o BatchMode=yes"
        git.cmd.Git().ls_remote("--heads", "--", app.repo, kill_after_timeout=timeout, env=environment)
    except git.GitCommandError as error:
        if error.status == -9 or "Timeout" in str(error.stderr or ""):
            return f"no answer within {timeout:.0f} s"
        return gitauth.explain(app, state_dir, str(error.stderr or error))
    except (HookdeployError, OSError) as error:
        return str(error)
    return None


def _key_file_problem(path: str) -> str | None:
    """Why ssh would not use the deploy key at `path`, or None."""
    try:
        mode = os.stat(path).st_mode
        with open(path, "rb"):
            pass
    except OSError as error:
        return f"cannot read it ({error.strerror})"
    if mode & 0o077:
        return f"others may read it (mode {mode & 0o777:o}; ssh refuses such a key): chmod 600 {path}"
    return None


def _check_docker(config: Config, check) -> None:
    try:
        from hookdeploy.engine import containers

        engine = containers.engine()
        version = engine.version().get("Version", "?")
    except HookdeployError as error:
        check(False, "", f"{error} (start it with: scripts/ensure-docker.sh, or systemctl start docker)")
        return
    check(True, f"Docker engine {version} answers", "")
    swarm_apps = [app for app in config.apps.values() if app.on_swarm]
    nodes = doctor_swarm.check_swarm(config, engine, swarm_apps, check) if swarm_apps else None
    if swarm_apps and nodes is None:
        return  # the proxy and the releases live on the manager: this engine has nothing more to say
    has_image = containers.image_exists(engine, config.proxy.image)
    check(has_image, f"proxy image {config.proxy.image} is present",
          f"proxy image {config.proxy.image} is not present: docker pull it, or build the offline one "
          "with scripts/build-nginx-image.sh and set proxy.image = \"hookdeploy-nginx:local\"")

    proxy = _check_proxy(config, engine, check)
    if nodes is not None:
        doctor_swarm.check_overlay(config, engine, proxy is not None, check)
    # The proxy mounts conf.d from the engine's filesystem: only a remote engine can get that wrong.
    if proxy is not None and (swarm_apps or os.environ.get("DOCKER_HOST")):
        doctor_swarm.check_proxy_sees_conf_d(config, proxy, check)
    if nodes is not None:
        for app in swarm_apps:
            doctor_swarm.check_pull_from_nodes(config, engine, app, nodes, check)


def _check_proxy(config: Config, engine, check):
    """The proxy container `N-proxy`: running, published where proxy.publish says, on network `N` (once).
    Returns the container, or None if there is none yet."""
    from hookdeploy.engine import containers

    instance = config.server.name
    name = containers.proxy_name(instance)
    first_app = next(iter(config.apps), "APP")
    recreate = f"docker rm -f {name}, then hookdeploy deploy {first_app} (the worker recreates it)"
    proxy = containers.get_container(engine, name)
    if proxy is None:
        check(True, f"proxy {name} does not exist yet: it will be created on the first deploy", "")
        return None
    check(proxy.status == "running", f"proxy {name} is running",
          f"proxy {name} is {proxy.status}, so no app is reachable: docker start {name}")
    published = _published(proxy.attrs)
    wanted = _normalize_address(config.proxy.publish)
    check(wanted in published, f"proxy {name} publishes {config.proxy.publish}",
          f"proxy {name} publishes {', '.join(sorted(published)) or 'nothing'}, not proxy.publish = "
          f"\"{config.proxy.publish}\": set proxy.publish to what it publishes, or {recreate}")
    networks = containers.find_networks(engine, instance)
    check(bool(networks), f"network {instance} exists",
          f"network {instance} is missing, so the proxy cannot reach the apps: {recreate}")
    if len(networks) > 1:
        check(False, "", f"network {instance} exists {len(networks)} times "
              f"({', '.join(network.short_id for network in networks)}), so every deploy fails as 'ambiguous': "
              "start `hookdeploy worker` (it keeps the proxy's network and removes the others)")
    return proxy


def _normalize_address(address: str) -> str:
    """`host:port` with the any-address spelled 0.0.0.0 (Docker reports it as "" or 0.0.0.0)."""
    host, port = split_address(address)
    return f"{host if host not in ('', '0.0.0.0') else '0.0.0.0'}:{port}"


def _published(attrs: dict) -> set[str]:
    """The host addresses the proxy's port 80 is published on (as configured, so also when stopped)."""
    bindings = (attrs.get("HostConfig") or {}).get("PortBindings") or {}
    if not bindings.get("80/tcp"):
        bindings = (attrs.get("NetworkSettings") or {}).get("Ports") or {}
    addresses = set()
    for binding in bindings.get("80/tcp") or []:
        host = binding.get("HostIp") or ""
        addresses.add(_normalize_address(f"{host}:{binding.get('HostPort', '')}"))
    return addresses


# -- past one host: the swarm, its overlay network, the proxy's conf.d, pulls from the nodes ----------
