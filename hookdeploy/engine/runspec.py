"""What every container of an app runs with: the one place candidates, replicas, release commands,
tasks and one-off runs get their environment, network, volumes and limits from.

Rules:
- Every container hookdeploy starts for an app (any role) takes its options from `run_options`;
  nothing else builds them, so a key added to an app reaches all of them at once. A Swarm
  service's tasks take the same from `service_options`.
- A named volume is `N-APP-NAME`, labelled `hookdeploy.instance`, `hookdeploy.app` and
  `hookdeploy.volume=NAME`. It is made by the engine the first time a container mounts it (the
  mount carries the labels, so it is labelled whoever mounts it first, on whichever node), and
  nothing hookdeploy does removes it: containers are removed without their volumes, and pruning
  removes images only.
Imports hookdeploy.core and containers.py (names and labels).
"""

from __future__ import annotations

from docker.types import Mount, Resources

from hookdeploy.core.config import AppConfig, Config
from hookdeploy.core.volumes import memory_bytes
from hookdeploy.engine import containers

VOLUME = "hookdeploy.volume"


def run_options(config: Config, app: AppConfig) -> dict:
    """The docker SDK `containers.run`/`create` keyword arguments every container of `app` shares."""
    options = {"network": config.server.name, "environment": app.container_env(), "mounts": mounts(config, app)}
    if app.memory:
        options["mem_limit"] = memory_bytes(app.memory)
    if app.cpus:
        options["nano_cpus"] = nano_cpus(app.cpus)
    return options


def service_options(config: Config, app: AppConfig) -> dict:
    """The docker SDK `services.create` keyword arguments for a swarm release of `app` (its tasks'
    environment, mounts and limits; the network and placement are the service's own)."""
    options = {"env": [f"{key}={value}" for key, value in app.container_env().items()],
               "mounts": mounts(config, app)}
    if app.memory or app.cpus:
        options["resources"] = Resources(cpu_limit=nano_cpus(app.cpus) if app.cpus else None,
                                         mem_limit=memory_bytes(app.memory) if app.memory else None)
    return options


def mounts(config: Config, app: AppConfig) -> list[Mount]:
    """The app's `volumes` as engine mounts: named ones as the volume `N-APP-NAME`, made labelled on first use."""
    instance = config.server.name
    made = []
    for mount in app.volumes:
        if mount.named:
            labels = {containers.INSTANCE: instance, containers.APP: app.name, VOLUME: mount.source}
            made.append(Mount(mount.target, mount.volume_name(instance, app.name), type="volume",
                              read_only=mount.read_only, labels=labels))
        else:
            made.append(Mount(mount.target, mount.source, type="bind", read_only=mount.read_only))
    return made


def nano_cpus(cpus: float) -> int:
    """`cpus` (docker run --cpus) in the engine's unit, billionths of a CPU."""
    return round(cpus * 1e9)
