"""`hookdeploy doctor`'s checks of a swarm: the engine is a manager, the nodes are ready (and some
fit each app's placement), the instance network is an attachable overlay, the proxy sees hookdeploy's
conf.d, and every node can start the live release with [registry]'s login (asked of the nodes
themselves, through a short-lived global service). doctor.py calls them for configs with swarm apps.
"""

from __future__ import annotations

import ipaddress
import os
import re
import time
import urllib.parse
from pathlib import Path

from hookdeploy.core.config import Config
from hookdeploy.core.errors import HookdeployError
from hookdeploy.core.models import release_tag

PULL_CHECK_TIMEOUT = 40.0  # seconds the nodes get to pull a live release for the pull check
PULLED_STATES = ("starting", "running", "complete")  # a task that got this far had its image


def engine_address() -> str:
    """The engine as DOCKER_HOST names it (any password left out), or the local socket."""
    value = os.environ.get("DOCKER_HOST")
    if not value:
        return "the local socket"
    parts = urllib.parse.urlsplit(value)
    if parts.password is not None:
        host = parts.hostname or ""
        value = parts._replace(netloc=f"{parts.username}@{host}" + (f":{parts.port}" if parts.port else "")).geturl()
    return f"DOCKER_HOST={value}"


def check_swarm(config: Config, engine, apps: list, check) -> list[dict] | None:
    """The engine is a swarm manager, its nodes are ready, each app's placement fits some ready node.
    Returns the nodes (as the API describes them), or None when the engine is no manager."""
    from hookdeploy.engine import swarm

    manager, why = swarm.is_manager(engine)
    check(manager, f"the engine ({engine_address()}) is a swarm manager", f"{why} ({engine_address()})")
    if not manager:
        return None
    nodes = [node.attrs for node in engine.nodes.list()]
    usable = [node for node in nodes if _node_usable(node)]
    check(bool(usable), f"swarm: {len(usable)} of {len(nodes)} nodes are ready and active",
          f"swarm: none of its {len(nodes)} nodes is ready and active, so no task can run: start their Docker "
          "engines, or `docker node update --availability active NODE`")
    for node in nodes:
        state, availability, name = _node_state(node), _node_availability(node), _hostname(node)
        if state != "ready":
            check(False, "", f"swarm: node {name} is {state} ({availability}), so Swarm runs nothing there: start "
                             "its Docker engine, or if it is gone for good remove it from the swarm (docker node rm)")
        elif availability != "active":
            said = {"drain": "drained", "pause": "paused"}.get(availability, availability)
            check(True, f"swarm: node {name} is {said} on purpose: "
                        f"Swarm puts no new tasks there (docker node update --availability active {name} to use it)",
                  "")
    for app in apps:
        if not app.placement:
            continue
        fitting = [node for node in usable if all(meets(node, constraint) for constraint in app.placement)]
        wanted = ", ".join(app.placement)
        check(bool(fitting), f"{app.name}: placement [{wanted}] fits {len(fitting)} of {len(usable)} ready nodes",
              f"{app.name}: no ready node meets placement [{wanted}], so its tasks would wait forever: change "
              f"apps.{app.name}.placement, or label a node to fit (docker node update --label-add KEY=VALUE NODE)")
    return nodes


def _node_state(node: dict) -> str:
    return (node.get("Status") or {}).get("State") or "unknown"


def _node_availability(node: dict) -> str:
    return (node.get("Spec") or {}).get("Availability") or "active"


def _node_usable(node: dict) -> bool:
    """Ready and active: a node Swarm places new tasks on."""
    return _node_state(node) == "ready" and _node_availability(node) == "active"


def _hostname(node: dict) -> str:
    return (node.get("Description") or {}).get("Hostname") or node.get("ID", "?")[:12]


CONSTRAINT_PARTS = re.compile(r"\s*(?P<key>[^=!\s]+)\s*(?P<operator>==|!=)\s*(?P<value>.*?)\s*\Z")


def meets(node: dict, constraint: str) -> bool:
    """Whether a node meets one placement constraint, decided as Swarm does (swarmkit's NodeMatches):
    values compared without case, a missing label counts as "", an unknown key matches no node."""
    parts = CONSTRAINT_PARTS.match(constraint)
    if parts is None:
        return False
    key, equal, value = parts["key"], parts["operator"] == "==", parts["value"]
    description = node.get("Description") or {}
    lowered = key.lower()
    if lowered == "node.ip":
        try:
            address = ipaddress.ip_address((node.get("Status") or {}).get("Addr") or "")
            within = address in ipaddress.ip_network(value, strict=False)
        except ValueError:
            return False
        return within == equal
    if lowered.startswith("node.labels.") and len(key) > len("node.labels."):
        actual = ((node.get("Spec") or {}).get("Labels") or {}).get(key[len("node.labels."):], "")
    elif lowered.startswith("engine.labels.") and len(key) > len("engine.labels."):
        actual = ((description.get("Engine") or {}).get("Labels") or {}).get(key[len("engine.labels."):], "")
    else:
        known = {"node.id": node.get("ID"), "node.hostname": description.get("Hostname"),
                 "node.role": (node.get("Spec") or {}).get("Role"),
                 "node.platform.os": (description.get("Platform") or {}).get("OS"),
                 "node.platform.arch": (description.get("Platform") or {}).get("Architecture")}
        if lowered not in known:
            return False
        actual = known[lowered]
    return (str(actual or "").casefold() == value.casefold()) == equal


def check_overlay(config: Config, engine, proxy_exists: bool, check) -> None:
    """The instance network is the attachable overlay a swarm release and the proxy meet on."""
    from hookdeploy.engine import containers

    instance = config.server.name
    networks = containers.find_networks(engine, instance)
    if not networks:
        if not proxy_exists:  # with a proxy, its check has said the network is missing
            check(True, f"network {instance} does not exist yet: the first deploy creates it as an attachable overlay",
                  "")
        return
    driver = networks[0].attrs.get("Driver") or "unknown"
    attachable = bool(networks[0].attrs.get("Attachable"))
    check(driver == "overlay" and attachable, f"network {instance} is an attachable overlay",
          f"network {instance} is a{'n' if driver[0] in 'aeiou' else ''} {driver} network"
          f"{'' if attachable else ', not attachable'}, but swarm apps need an attachable overlay: remove the proxy "
          f"and the network (docker rm -f {instance}-proxy; docker network rm {instance}) and deploy again")


def check_proxy_sees_conf_d(config: Config, proxy, check) -> None:
    """The proxy reads the conf.d hookdeploy writes: it bind-mounts that path from the ENGINE's
    filesystem, which is this one only when hookdeploy runs beside the engine or shares the folder."""
    from hookdeploy.engine import proxy as proxy_files

    conf_dir = proxy_files.conf_dir(config)
    name = proxy.name
    source = next((mount.get("Source") for mount in proxy.attrs.get("Mounts") or ()
                   if mount.get("Destination") == "/etc/nginx/conf.d"), None)
    if source is not None and Path(source) != conf_dir:
        first_app = next(iter(config.apps), "APP")
        check(False, "", f"proxy {name} reads its conf.d from {source}, not from {conf_dir}: another config made it; "
                         f"docker rm -f {name}, then hookdeploy deploy {first_app} (the worker recreates it)")
        return
    if proxy.status != "running":
        return  # said already; a stopped container cannot be asked
    # The shared settings file and every app's file: the app files differ from one instance to the next.
    names = [proxy_files.HTTP_SETTINGS_FILE] + sorted(path.name for path in conf_dir.glob("app-*.conf"))
    same = _proxy_shows(proxy, conf_dir, names)
    if not same:
        time.sleep(0.5)  # a deploy may have switched an app's file between the two reads
        same = _proxy_shows(proxy, conf_dir, names)
    where = "the swarm manager" if any(app.on_swarm for app in config.apps.values()) else "the engine's host"
    check(same, f"proxy {name} sees {conf_dir} (the engine shares that folder)",
          f"the proxy {name} on the engine does not see {conf_dir} (it mounts that path from the engine's own "
          f"filesystem): run hookdeploy on {where} ({engine_address()}), or share that folder with it "
          "at the same path")


def _proxy_shows(proxy, conf_dir: Path, names: list[str]) -> bool:
    """Whether `cat` of these conf.d files in the proxy prints what they hold here."""
    import docker.errors

    try:
        code, seen = proxy.exec_run(["cat", *(f"/etc/nginx/conf.d/{name}" for name in names)])
    except (docker.errors.DockerException, OSError):
        return False
    try:
        local = b"".join((conf_dir / name).read_bytes() for name in names)
    except OSError:
        return False
    return code == 0 and seen == local


def check_pull_from_nodes(config: Config, engine, app, nodes: list[dict], check) -> None:
    """Each node that would run the app can start its live release, pulling it with [registry]'s login:
    a short-lived global service `N-doctor-APP` of the pinned image, one task per node, always removed.

    Docker does not pull a digest-pinned image a node already holds, so for such a node this shows
    that it can run the release, not that it reaches the registry (the next release will tell)."""
    import docker.errors
    from docker.types import RestartPolicy, ServiceMode

    from hookdeploy.engine import containers, registry, runtime, swarm

    live = _live_release(config, app)
    if live is None:
        check(True, f"{app.name}: pull from the nodes is checked once {app.name} has a release", "")
        return
    sha, repository, digest = live
    expected = {_hostname(node) for node in nodes
                if _node_usable(node) and all(meets(node, constraint) for constraint in app.placement)}
    if not expected:
        return  # no node to ask: the nodes or the placement check said why
    host = repository.split("/")[0]
    release = f"the live release {release_tag(sha)}"
    try:
        auth = registry.auth_config(config)
    except HookdeployError:
        return  # the missing password is reported with the other secrets
    problem = _registry_problem(engine, auth, f"{repository}@{digest}", release)
    if problem is not None:
        check(False, "", f"{app.name}: {problem}")
        return
    instance = config.server.name
    name = f"{instance}-doctor-{app.name}"
    leftover = swarm.get_service(engine, name)
    if leftover is not None:
        swarm.remove_service(leftover)
    labels = {containers.INSTANCE: instance, containers.ROLE: "doctor"}
    try:
        service = engine.services.create(runtime.service_image(config, app, sha, digest), name=name,
                                         labels=labels, container_labels=labels, mode=ServiceMode("global"),
                                         constraints=list(app.placement),
                                         restart_policy=RestartPolicy(condition="none"))
    except docker.errors.APIError as error:
        check(False, "", f"{app.name}: cannot start the pull check (service {name}): {error.explanation or error}")
        return
    try:
        outcomes = _wait_for_pulls(engine, service, nodes, expected)
    finally:
        swarm.remove_service(service)
    for node in sorted(expected | set(outcomes)):
        state, error, pulled = outcomes.get(node, ("not scheduled", "", False))
        if pulled:
            check(True, f"{app.name}: node {node} can start {release} (pulled from {host}, or its own copy)", "")
        elif state in swarm.FAILED_STATES:
            check(False, "", f"{app.name}: node {node} cannot pull {release} from {host} "
                             f"({error or state}): {pull_fix(config, error, host)}")
        else:
            check(False, "", f"{app.name}: node {node} had not pulled {release} from {host} after "
                             f"{PULL_CHECK_TIMEOUT:.0f} s (task {state}{': ' + error if error else ''}): "
                             f"a slow or blocked way to {host}; try docker pull on that node")


def _live_release(config: Config, app) -> tuple[str, str, str] | None:
    """(SHA, repository, digest) of the app's live release as the registry holds it, or None without one."""
    from hookdeploy.core.store import Store
    from hookdeploy.engine import registry

    if not Path(config.server.database).exists():
        return None  # doctor creates no database
    store = Store(config.server.database)
    try:
        release = store.live_release(app.name)
        digest = None if release is None else release.digest or store.digest_of(app.name, release.sha)
    finally:
        store.close()
    if release is None or digest is None:
        return None
    repository = registry.remote_repository(config, app) if app.builds else app.image
    return release.sha, repository, digest


def _registry_problem(engine, auth: dict[str, str], reference: str, release: str) -> str | None:
    """Log the engine in with [registry]'s credentials (services created next hand them to the nodes)
    and ask the registry for `reference` (the release); None if it has it, else what is wrong."""
    import docker.errors

    from hookdeploy.engine import swarm

    host = reference.split("/")[0]
    try:
        swarm.login(engine, auth)
    except docker.errors.APIError as error:
        return (f"the registry {auth['serveraddress']} refused the login the nodes would pull with "
                f"({error.explanation or error}): check registry.username and the password in "
                "registry.password_env or password_file")
    try:
        engine.images.get_registry_data(reference, auth_config=auth)
    except docker.errors.NotFound:
        return f"the registry {host} does not have {release} any more: deploy it again (or a newer commit)"
    except docker.errors.APIError as error:
        explanation = str(error.explanation or error)
        if "manifest unknown" in explanation.lower() or "not found" in explanation.lower():
            return f"the registry {host} does not have {release} any more: deploy it again (or a newer commit)"
        return f"the engine cannot look up {release} in {host}: {explanation}"
    return None


def _wait_for_pulls(engine, service, nodes: list[dict], expected: set[str]) -> dict[str, tuple[str, str, bool]]:
    """Until every expected node's task has pulled or failed (at most PULL_CHECK_TIMEOUT): node hostname ->
    (task state, task error, whether the image was pulled)."""
    from hookdeploy.engine import swarm

    names = {node.get("ID"): _hostname(node) for node in nodes}
    limit = time.monotonic() + PULL_CHECK_TIMEOUT
    while True:
        outcomes: dict[str, tuple[str, str, bool]] = {}
        for task in service.tasks():
            status = task.get("Status") or {}
            node = names.get(task.get("NodeID") or "", (task.get("NodeID") or "no node")[:12])
            state = status.get("State", "")
            # A container was made, so the image was there: an app that exits at once still pulled.
            pulled = state in PULLED_STATES or bool((status.get("ContainerStatus") or {}).get("ContainerID"))
            outcomes[node] = (state, (status.get("Err") or "").strip(), pulled)
        decided = {node for node, (state, _, pulled) in outcomes.items() if pulled or state in swarm.FAILED_STATES}
        if expected <= decided or time.monotonic() > limit:
            return outcomes
        time.sleep(0.5)


def pull_fix(config: Config, error: str, host: str) -> str:
    """The likely fix for a node that could not pull from `host`, from the task's error."""
    text = error.lower()
    plain_http = config.registry is not None and config.registry.insecure and config.registry.url == host
    if "http response to https client" in text:
        return (f"the node's dockerd needs --insecure-registry {host} (or \"insecure-registries\" in its "
                "/etc/docker/daemon.json) for a plain-HTTP registry")
    if any(word in text for word in ("unauthorized", "authentication required", "denied", "no basic auth")):
        return ("the registry refused the credentials the nodes pull with: check registry.username and the "
                "password in registry.password_env or password_file")
    if any(word in text for word in ("no such host", "dial tcp", "connection refused", "no route to host",
                                     "i/o timeout", "server misbehaving")):
        return f"the node cannot resolve or reach {host}: check its DNS and its network way to the registry"
    if plain_http:
        return (f"run docker pull on that node to see why: most often its dockerd lacks --insecure-registry {host} "
                f"(the registry speaks plain HTTP), or the node cannot resolve or reach {host}")
    return (f"run docker pull on that node to see why: most often it cannot resolve or reach {host}, or does not "
            f"trust its certificate (/etc/docker/certs.d/{host}/ca.crt)")
