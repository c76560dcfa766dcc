"""Containers, images, the instance network and the proxy container on the local Docker engine,
through the docker SDK: the client (`engine`), names and labels of DESIGN ("Docker objects"), the
legacy builder, a candidate's start, retire and removal.

Every object made here carries those labels, so an instance finds, and only ever touches, its own
network, proxy, candidates and images. Other modules talk to the engine too, each for its own
concept: swarm.py (services), registry.py (push, pull), buildkit.py (the CLI), release.py,
runtime.py, certs.py and recovery.py (the proxy container). Imports hookdeploy.core and streams.py.
"""

from __future__ import annotations

import json
import logging
import threading
from pathlib import Path
from typing import Callable, Iterator

import docker
import docker.errors

from hookdeploy.core.errors import DockerUnavailable, StepFailed
from hookdeploy.core.models import release_tag
from hookdeploy.core.names import preview_parts, split_address
from hookdeploy.engine import streams

log = logging.getLogger(__name__)

INSTANCE = "hookdeploy.instance"
APP = "hookdeploy.app"
SHA = "hookdeploy.sha"
JOB = "hookdeploy.job"
ROLE = "hookdeploy.role"
PREVIEW = "hookdeploy.preview"  # a preview's release set (hookdeploy.app is then APP.LABEL)


def engine(timeout: int = 60) -> docker.DockerClient:
    """A client for the local engine ($DOCKER_HOST or the default socket); DockerUnavailable if it does not answer."""
    try:
        client = docker.from_env(timeout=timeout)
        client.ping()
        return client
    except docker.errors.DockerException as error:
        raise DockerUnavailable(f"the Docker engine does not answer: {error}") from None


def image_exists(client: docker.DockerClient, name: str) -> bool:
    """True if the engine has an image of that name locally."""
    try:
        client.images.get(name)
        return True
    except docker.errors.ImageNotFound:
        return False


def release_labels(instance: str, app: str, sha: str, job: int) -> dict[str, str]:
    """The labels every app container and image carries (a preview's also hookdeploy.preview=LABEL)."""
    preview = preview_parts(app)
    return {INSTANCE: instance, APP: app, SHA: sha, JOB: str(job), **({PREVIEW: preview[1]} if preview else {})}


def image_name(instance: str, app: str, sha: str) -> str:
    """`N/APP:SHA12`."""
    return f"{instance}/{app}:{release_tag(sha)}"


def proxy_name(instance: str) -> str:
    """`N-proxy`: the instance's front proxy container."""
    return f"{instance}-proxy"


def container_name(instance: str, app: str, sha: str, job: int) -> str:
    """`N-APP-SHA12-JOB`."""
    return f"{instance}-{app}-{release_tag(sha)}-{job}"


def find_networks(client: docker.DockerClient, instance: str) -> list:
    """Every network named exactly `instance`, oldest first: Docker allows several of one name."""
    found = [network for network in client.networks.list(names=[instance]) if network.name == instance]
    return sorted(found, key=lambda network: (network.attrs.get("Created") or "", network.id))


def ensure_network(client: docker.DockerClient, instance: str):
    """The instance's one bridge network, created on first use; duplicates are merged into it.

    Callers hold the instance's setup lock, so two workers never both create it."""
    networks = find_networks(client, instance)
    if len(networks) > 1:
        heal_networks(client, instance)
        networks = find_networks(client, instance)
    if networks:
        return networks[0]
    log.info("creating network %s", instance)
    return client.networks.create(instance, driver="bridge", labels={INSTANCE: instance}, check_duplicate=True)


def heal_networks(client: docker.DockerClient, instance: str) -> list:
    """Keep one network named `instance` and remove the others, moving their containers to it.

    The one kept is the proxy's, else the one with most containers, else the oldest. Returns the
    containers that were moved: their addresses changed, so routes to them need repair."""
    networks = find_networks(client, instance)
    if len(networks) < 2:
        return []
    for network in networks:
        network.reload()  # a listed network does not say which containers it has

    def rank(network) -> tuple:
        attached = network.attrs.get("Containers") or {}
        has_proxy = any(member.get("Name") == proxy_name(instance) for member in attached.values())
        return (not has_proxy, -len(attached), networks.index(network))

    keeper, *extras = sorted(networks, key=rank)
    log.warning("network %s exists %d times; keeping %s and removing the others", instance, len(networks),
                keeper.short_id)
    moved = []
    for extra in extras:
        for container_id in list(extra.attrs.get("Containers") or {}):
            container = client.containers.get(container_id)
            extra.disconnect(container, force=True)
            if container_id not in (keeper.attrs.get("Containers") or {}):
                keeper.connect(container)
            moved.append(container)
        try:
            extra.remove()
        except docker.errors.NotFound:
            pass
    return moved


def ensure_proxy(client: docker.DockerClient, instance: str, image: str, publish: str, conf_dir: Path,
                 publish_tls: str = "", logs_dir: Path | None = None):
    """The running proxy container `N-proxy`, created on first use with conf.d bind-mounted
    read-only and, when given, `logs_dir` read-write as /var/log/hookdeploy (its access logs).

    It publishes port 80 on `publish` and, when given, 443 on `publish_tls`. A proxy that publishes
    or mounts anything else (the config changed, say HTTPS was turned on, or it was made by an older
    hookdeploy) is made anew: visitors see a refused connection for the second or so that takes,
    once per such change."""
    name = proxy_name(instance)
    ports = {"80/tcp": publish, **({"443/tcp": publish_tls} if publish_tls else {})}
    wanted = {port: split_address(address) for port, address in ports.items()}
    volumes = {str(conf_dir): {"bind": "/etc/nginx/conf.d", "mode": "ro"},
               **({str(logs_dir): {"bind": "/var/log/hookdeploy", "mode": "rw"}} if logs_dir else {})}
    binds = {f"{source}:{mount['bind']}:{mount['mode']}" for source, mount in volumes.items()}
    try:
        proxy = client.containers.get(name)
    except docker.errors.NotFound:
        proxy = None
    if proxy is not None and published_ports(proxy.attrs) != wanted:
        log.warning("proxy %s publishes %s; making it anew to publish %s", name,
                    _ports_text(published_ports(proxy.attrs)) or "nothing", _ports_text(wanted))
        remove(proxy)
        proxy = None
    elif proxy is not None and (mounted := set((proxy.attrs.get("HostConfig") or {}).get("Binds") or [])) != binds:
        log.warning("proxy %s mounts %s; making it anew to mount %s", name, ", ".join(sorted(mounted)),
                    ", ".join(sorted(binds)))
        remove(proxy)
        proxy = None
    if proxy is None:
        log.info("creating proxy %s from %s on %s", name, image, _ports_text(wanted))
        try:
            proxy = client.containers.create(
                image, name=name, detach=True, network=instance,
                ports={port: (host, int(number)) for port, (host, number) in wanted.items()},
                volumes=volumes,
                labels={INSTANCE: instance, ROLE: "proxy"},
                restart_policy={"Name": "unless-stopped"})
        except docker.errors.ImageNotFound:
            raise StepFailed(f"proxy image {image} is not on this engine (docker pull it, or set proxy.image)") from None
        except docker.errors.APIError as error:
            if error.status_code != 409:
                raise StepFailed(f"cannot create the proxy {name}: {error.explanation or error}") from None
            proxy = client.containers.get(name)  # made by a process outside the setup lock
    if proxy.status != "running":
        try:
            proxy.start()
        except docker.errors.APIError as error:
            addresses = " and ".join(ports.values())
            raise StepFailed(f"cannot start the proxy {name} (is {addresses} free?): {error.explanation or error}") from None
        proxy.reload()
    return proxy


def published_ports(attrs: dict) -> dict[str, tuple[str, str]]:
    """A container's published ports as configured (also when stopped): {"80/tcp": (HOST, PORT)}."""
    bindings = (attrs.get("HostConfig") or {}).get("PortBindings") or {}
    return {port: (binding[0].get("HostIp") or "0.0.0.0", binding[0].get("HostPort") or "")
            for port, binding in bindings.items() if binding}


def _ports_text(ports: dict[str, tuple[str, str]]) -> str:
    return ", ".join(f"{port.split('/')[0]} on {host}:{number}" for port, (host, number) in sorted(ports.items()))


def build(client: docker.DockerClient, context: Path, dockerfile: str, tag: str, labels: dict[str, str],
          build_args: dict[str, str], timeout: float, on_lines: Callable[[list[str]], None],
          stop: threading.Event | None = None, target: str = "") -> str:
    """Build an image with the Engine API's legacy builder, handing its output lines to `on_lines` as
    they come; return the image id.

    The build streams through a connection of its own (streams.py): a timeout (StepFailed) or `stop`
    (Aborted) closes it, which cancels the build in the engine, without touching other work."""
    options = {"path": str(context), "dockerfile": _labelled(context, dockerfile, tag, labels), "tag": tag,
               "target": target or None, "buildargs": build_args}
    connection = streams.Connection(client, timeout)
    outcome: dict = {}
    chunks, reader = streams.feed(lambda: _build_output(connection.api, outcome, **options), "docker-build")

    def cancel() -> None:
        connection.close()
        reader.join(timeout=5)

    try:
        streams.relay(chunks, on_lines, stop, cancel, timeout, "build")
    finally:
        connection.close()
    if "error" in outcome:
        raise StepFailed(f"build failed: {outcome['error'].strip()}")
    try:
        return client.images.get(tag).id
    except docker.errors.ImageNotFound:
        raise StepFailed(f"build finished but image {tag} is missing") from None


def _labelled(context: Path, dockerfile: str, tag: str, labels: dict[str, str]) -> str:
    """A copy of the Dockerfile beside it with one LABEL line of `labels` appended; returns its name.

    The classic builder turns each build label into a step of its own; one LABEL line costs one step for all."""
    labelled = context / f".hookdeploy-{tag.rpartition(':')[2]}.Dockerfile"
    label_line = " ".join(f"{key}={json.dumps(value)}" for key, value in labels.items())
    labelled.write_text((context / dockerfile).read_text() + f"\nLABEL {label_line}\n")
    return labelled.name


def _build_output(api, outcome: dict, **options) -> Iterator[str]:
    """The legacy build's text as it comes; its error, or the image id, put in `outcome`."""
    try:
        for chunk in api.build(rm=True, forcerm=True, decode=True, **options):
            if "error" in chunk:
                outcome["error"] = chunk.get("errorDetail", {}).get("message") or chunk["error"]
            elif "aux" in chunk and "ID" in chunk["aux"]:
                outcome["id"] = chunk["aux"]["ID"]
            text = chunk.get("stream") or chunk.get("status") or chunk.get("error")
            if text:
                yield text
    except Exception as error:  # noqa: BLE001 - any engine failure ends the build with its message
        outcome.setdefault("error", str(error))


def start_candidate(client: docker.DockerClient, image: str, name: str, labels: dict[str, str], options: dict):
    """Start an app container with its run options (runspec.run_options); return it."""
    try:
        existing = client.containers.get(name)
        existing.remove(force=True)  # a leftover of the same job, from a crash
    except docker.errors.NotFound:
        pass
    try:
        return client.containers.run(image, name=name, detach=True, labels=labels,
                                     restart_policy={"Name": "unless-stopped"}, **options)
    except docker.errors.APIError as error:
        raise StepFailed(f"cannot start {name}: {error.explanation or error}") from None


def address(container, network: str) -> str:
    """The container's IP address on the instance network."""
    container.reload()
    ip = container.attrs["NetworkSettings"]["Networks"].get(network, {}).get("IPAddress")
    if not ip:
        raise StepFailed(f"container {container.name} has no address on network {network}")
    return ip


def tail_logs(container, lines: int = 20) -> list[str]:
    """The last lines a container printed."""
    try:
        return container.logs(tail=lines).decode(errors="replace").splitlines()
    except docker.errors.APIError:
        return []


def find_containers(client: docker.DockerClient, instance: str, **labels: str) -> list:
    """This instance's containers, running or not, with the given extra labels (app=, job=, role=)."""
    filters = [f"{INSTANCE}={instance}"] + [f"hookdeploy.{key}={value}" for key, value in labels.items()]
    return client.containers.list(all=True, filters={"label": filters})


def get_container(client: docker.DockerClient, name: str):
    """A container by name, or None."""
    try:
        return client.containers.get(name)
    except docker.errors.NotFound:
        return None


def retire(container, grace: int = 10) -> None:
    """Stop a container gracefully and remove it; a container already gone is fine."""
    try:
        container.stop(timeout=grace)
    except docker.errors.NotFound:
        return
    except docker.errors.APIError:
        pass
    remove(container)


def remove(container) -> None:
    """Remove a container at once."""
    try:
        container.remove(force=True)
    except docker.errors.NotFound:
        pass
    except docker.errors.APIError as error:
        if "already in progress" not in str(error):
            raise


def remove_image(client: docker.DockerClient, name: str) -> bool:
    """Remove an image by name; False if a container still uses it. A missing image counts as removed."""
    try:
        client.images.remove(name, noprune=False)
        return True
    except docker.errors.ImageNotFound:
        return True
    except docker.errors.APIError as error:
        log.info("image %s kept: %s", name, error.explanation or error)
        return False
