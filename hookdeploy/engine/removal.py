"""Removing an app gone from deploy.toml (`hookdeploy remove APP [--volumes]`), and finding such apps
that were not removed yet (`doctor`).

What goes, in this order: the app's queued jobs (ended superseded, so no worker claims one) and
unfinished task runs; its route (conf.d/app-APP.conf, then `nginx -t` and the graceful reload every
switch uses, so other apps' requests are never cut); every container and Swarm service labelled with
the app, whatever their role; its images (labelled with it, or named N/APP or URL/N/APP); its
certificates; its build folder, mirror and access log under state_dir; and, only when asked, its named
volumes. What stays: its history (jobs, their logs, releases, task runs: the store never deletes
them; its live release is recorded retired), its bare repo (the user's, outside state_dir) and what
a registry or another swarm node holds.

The app is no longer in the config, so everything is found from what the engine's labels, the
store and its route file know. Certificates are found from the route's server names (the proxy
served exactly those); a name another app of deploy.toml now claims keeps its certificate.
Imports hookdeploy.core, containers, maintenance, proxy, runtime, swarm and traffic; the CLI and `doctor` call it.
"""

from __future__ import annotations

import logging
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import docker
import docker.errors

from hookdeploy.core.config import Config
from hookdeploy.core.errors import BadInput, StepFailed
from hookdeploy.core.names import DNS_NAME, check_app_name, preview_parts
from hookdeploy.core.store import Store
from hookdeploy.core.taskruns import TaskRun, TaskRuns
from hookdeploy.core.models import release_tag
from hookdeploy.engine import containers, maintenance, proxy, runtime, signatures, swarm, traffic

log = logging.getLogger(__name__)

REASON = "{app} was removed (hookdeploy remove)"


@dataclass
class Removal:
    """What `remove` did to one app, for the person who asked."""

    app: str
    jobs: list[int] = field(default_factory=list)  # queued jobs ended superseded
    task_runs: list[TaskRun] = field(default_factory=list)  # unfinished runs ended
    route: bool = False  # its conf.d file was there and is gone
    runtime: list[str] = field(default_factory=list)  # containers and services removed
    images: list[str] = field(default_factory=list)
    images_kept: list[str] = field(default_factory=list)  # "NAME (why)"
    certificates: list[str] = field(default_factory=list)
    files: list[str] = field(default_factory=list)  # build folder, mirror, access log
    volumes: list[str] = field(default_factory=list)
    volumes_kept: list[str] = field(default_factory=list)

    @property
    def nothing(self) -> bool:
        """True when there was nothing left to remove (kept volumes aside)."""
        return not (self.jobs or self.task_runs or self.route or self.runtime or self.images or self.images_kept
                    or self.certificates or self.files or self.volumes)

    def lines(self) -> list[str]:
        """What was done, a line each, for the command line."""
        app = self.app
        said = []
        if self.jobs:
            said.append(f"{app}: ended {_count(self.jobs, 'queued job')} superseded "
                        f"({', '.join(str(job) for job in self.jobs)})")
        if self.task_runs:
            runs = ", ".join(f"run {run.id} of {run.task} {run.state.value}" for run in self.task_runs)
            said.append(f"{app}: ended {_count(self.task_runs, 'unfinished task run')} ({runs})")
        if self.route:
            said.append(f"{app}: route removed (conf.d/app-{app}.conf; nginx reloaded)")
        if self.runtime:
            said.append(f"{app}: removed {_count(self.runtime, 'container or service', 'containers and services')}: "
                        f"{', '.join(self.runtime)}")
        if self.images:
            said.append(f"{app}: removed {_count(self.images, 'image')}: {', '.join(self.images)}")
        if self.images_kept:
            said.append(f"{app}: kept {_count(self.images_kept, 'image')}: {', '.join(self.images_kept)}")
        if self.certificates:
            said.append(f"{app}: removed {_count(self.certificates, 'certificate')}: {', '.join(self.certificates)}")
        if self.files:
            said.append(f"{app}: removed {', '.join(self.files)}")
        if self.volumes:
            said.append(f"{app}: removed {_count(self.volumes, 'volume')} and its data: {', '.join(self.volumes)}")
        if self.volumes_kept:
            said.append(f"{app}: kept {_count(self.volumes_kept, 'volume')} (its data): {', '.join(self.volumes_kept)}; "
                        f"`hookdeploy remove {app} --volumes` removes {'it' if len(self.volumes_kept) == 1 else 'them'}")
        history = f"its history stays (hookdeploy history {app})"
        said.append(f"{app}: nothing left to remove; {history}" if self.nothing else f"{app}: removed; {history}")
        return said


def _count(items: list, one: str, many: str | None = None) -> str:
    return f"1 {one}" if len(items) == 1 else f"{len(items)} {many or one + 's'}"


def remove(config: Config, store: Store, app: str, volumes: bool = False, reason: str = REASON) -> Removal:
    """Remove everything of `app` but its history (see the module's docstring); BadInput, with nothing
    changed, for an app still in deploy.toml, one with a running job, or a name nothing knows. `app`
    may be a preview's release set, APP.LABEL (engine/previews.py removes previews so)."""
    if preview_parts(app) is None:
        check_app_name(app)
    if app in config.apps:
        raise BadInput(f"{app} is still in deploy.toml: remove its table [apps.{app}] first "
                       f"(and reload the running service), then run hookdeploy remove {app} again")
    client = containers.engine()  # before the store changes: an engine that does not answer changes nothing
    try:
        known = app in store.known_apps()
        running, superseded = store.close_app(app, reason.format(app=app))
        if running is not None:
            raise BadInput(f"{app} has job {running.id} running: wait for it to end (hookdeploy logs {running.id} "
                           f"--follow; if its worker died, the next worker to start ends it), then remove {app}")
        done = Removal(app, jobs=[job.id for job in superseded])
        done.task_runs = TaskRuns(store).end_app(app, reason.format(app=app))
        done.route, hostnames = remove_route(config, client, app)
        done.runtime = runtime.remove_app(client, config.server.name, app)
        done.images, done.images_kept, gone = remove_images(client, config, app)
        store.retire_app(app, gone)
        done.certificates = remove_certificates(config, app, hostnames)
        done.files = remove_files(config, app)
        found = app_volumes(client, config.server.name, app)
        if volumes:
            done.volumes, done.volumes_kept = remove_volumes(client, found)
        else:
            done.volumes_kept = found
    finally:
        client.close()
    if done.nothing and not done.volumes_kept and not known:
        raise BadInput(f"unknown app {app}: neither deploy.toml nor the job store knows it, and the engine has "
                       "nothing of it")
    log.info("%s: %s", app, "nothing left to remove" if done.nothing else "removed")
    return done


# -- the parts -----------------------------------------------------------------------------------------


def remove_route(config: Config, client: docker.DockerClient, app: str) -> tuple[bool, list[str]]:
    """Take the app's server blocks out of the proxy: its conf.d file goes, the catch-all server comes
    back if it was the default one, then `nginx -t` and a graceful reload (requests in flight, of any
    app, finish; a refused config is put back as it was, StepFailed). Returns whether there was a
    route and the hostnames it served."""
    path = proxy.app_file(config, app)
    default = proxy.conf_dir(config) / proxy.DEFAULT_SERVER_FILE
    with proxy.locked(config):
        text = proxy.read(path)
        if text is not None:
            default_before = proxy.read(default)
            path.unlink()
            proxy.prepare(config)
            running = containers.get_container(client, containers.proxy_name(config.server.name))
            if running is not None and running.status == "running":
                try:
                    proxy.test_and_reload(running)
                except StepFailed:
                    proxy.restore(path, text)
                    proxy.restore(default, default_before)
                    raise
    return text is not None, served_names(text or "")


def served_names(route: str) -> list[str]:
    """The hostnames a route file's server blocks answer (the default server's `_` left out)."""
    names = []
    for line in re.findall(r"^\s*server_name\s+([^;]*);", route, re.MULTILINE):
        names += [name for name in line.split() if name != "_" and name not in names]
    return names


def remove_images(client: docker.DockerClient, config: Config, app: str) -> tuple[list[str], list[str], set[str]]:
    """Remove the app's images: those labelled with it and those named N/APP or URL/N/APP (an image
    app's pulls carry no label of ours). Only the app's own names are taken off an image; one that keeps
    another name, or that a container of something else uses, stays. Returns (removed, kept with the
    reason, every N/APP name now gone)."""
    instance = config.server.name
    repositories = {f"{instance}/{app}"}
    if config.registry is not None:
        repositories.add(f"{config.registry.url}/{instance}/{app}")
    # The engine's lists as they are: images.list() inspects each image and fails if one goes meanwhile.
    found = {raw["Id"]: raw for raw in
             client.api.images(filters={"label": [f"{containers.INSTANCE}={instance}", f"{containers.APP}={app}"]})}
    for repository in sorted(repositories):
        found.update({raw["Id"]: raw for raw in client.api.images(name=repository)})
    removed, kept, gone = [], [], set()
    for image_id in found:
        # A list filtered by name shows only the matching names: the image's own are asked for.
        references = _references(client, image_id)
        if references is None:
            continue  # gone meanwhile (the untagged parent of one removed)
        tags = references[0]
        ours = [tag for tag in tags if tag.rpartition(":")[0] in repositories]
        refused = False
        for name in ours or ([] if tags else [image_id]):  # an untagged one goes by its id
            refusal = _remove(client.api.remove_image, name)
            if refusal:
                kept.append(f"{_short(name)} ({refusal})")
                refused = True
                continue
            removed.append(_short(name))
            gone.add(name)
        if ours and not refused:
            # A swarm release's image keeps URL/N/APP@DIGEST from its push; the engine drops a digest only
            # with the last tag of its own repository, so N/APP's going last would leave the image behind.
            left = [digest for digest in (_references(client, image_id) or ([], []))[1]
                    if digest.partition("@")[0] in repositories]
            for refusal in filter(None, (_remove(client.api.remove_image, digest) for digest in left)):
                kept.append(f"{_short(image_id)} ({refusal})")
                refused = True
        others = [tag for tag in (_references(client, image_id) or ([], []))[0]
                  if tag not in ours] if tags and not refused else []
        if others:
            kept.append(f"{_short(image_id)} (also named {', '.join(others)})")
    return removed, kept, gone


def _references(client: docker.DockerClient, image_id: str) -> tuple[list[str], list[str]] | None:
    """The names (tags) and digest references an image has now; None once it is gone."""
    try:
        raw = client.api.inspect_image(image_id)
    except docker.errors.NotFound:
        return None
    return ([tag for tag in raw.get("RepoTags") or () if tag != "<none>:<none>"],
            [digest for digest in raw.get("RepoDigests") or () if "@" in digest])


def _short(name: str) -> str:
    """An image name, or an image id shortened as docker shows it."""
    return name.removeprefix("sha256:")[:12] if name.startswith("sha256:") else name


def remove_certificates(config: Config, app: str, hostnames: list[str]) -> list[str]:
    """Remove the PEMs the proxy served for the app (its own certificate, and each of its hostnames'
    that no app of deploy.toml claims now) and those names' ACME retry records; their file names."""
    certificates = proxy.conf_dir(config) / proxy.CERTS_DIR
    claimed = {name for other in config.apps.values() for name in other.hostnames}
    names = [name for name in hostnames if DNS_NAME.match(name) and name not in claimed]
    removed = []
    for path in [certificates / f"app-{app}.pem"] + [certificates / f"host-{name}.pem" for name in names]:
        if path.exists():
            path.unlink()
            removed.append(path.name)
    for name in names:  # certs.py's tls/status/HOST.json
        (Path(config.server.state_dir) / "tls" / "status" / f"{name}.json").unlink(missing_ok=True)
    return removed


def remove_files(config: Config, app: str) -> list[str]:
    """Remove the app's build folder, mirror of its clone URL, proxy access log, maintenance page and imported
    signing keys; those that were there."""
    state_dir = Path(config.server.state_dir)
    removed = []
    # pipeline.build_dir, gitops.mirror_path (both name the folder after the app), traffic.log_path
    for path in (state_dir / "builds" / app, state_dir / "mirrors" / f"{app}.git", traffic.log_path(config, app),
                 maintenance.page_path(config, app), signatures.keys_folder(config, app)):
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()
        else:
            continue
        removed.append(str(path))
    return removed


def app_volumes(client: docker.DockerClient, instance: str, app: str) -> list[str]:
    """The app's named volumes on this engine (N-APP-NAME, labelled with the app), by name."""
    found = client.api.volumes(filters={"label": [f"{containers.INSTANCE}={instance}", f"{containers.APP}={app}"]})
    return sorted(volume["Name"] for volume in (found or {}).get("Volumes") or [])


def remove_volumes(client: docker.DockerClient, names: list[str]) -> tuple[list[str], list[str]]:
    """Remove these volumes; (removed, kept with the engine's reason)."""
    removed, kept = [], []
    for name in names:
        refusal = _remove(client.api.remove_volume, name)
        if refusal:
            kept.append(f"{name} ({refusal})")
        else:
            removed.append(name)
    return removed, kept


def _remove(remove: Callable[[str], object], name: str) -> str | None:
    """Remove one engine object by name (gone already is fine); the engine's reason if it refused, else None."""
    try:
        remove(name)
    except docker.errors.NotFound:
        pass
    except docker.errors.APIError as error:
        return str(error.explanation or error)
    return None


# -- apps not removed yet ---------------------------------------------------------------------------


def orphans(config: Config, store: Store, client: docker.DockerClient | None) -> dict[str, list[str]]:
    """Apps the store knows that deploy.toml does not, with what of each remains (a live release,
    queued jobs, a route, containers, services, images); removed apps, with nothing left, are not
    named. Without `client` (no engine) only the store and the route are asked."""
    found = {}
    for app in store.known_apps():
        preview = preview_parts(app)  # a preview of an app in deploy.toml is the worker's to remove
        if app not in config.apps and not (preview and preview[0] in config.apps):
            left = leftovers(config, store, client, app)
            if left:
                found[app] = left
    return found


def leftovers(config: Config, store: Store, client: docker.DockerClient | None, app: str) -> list[str]:
    """What of an app remains that `remove` takes, a phrase each; empty once it was removed."""
    left = []
    live = store.live_release(app)
    if live is not None:
        left.append(f"live release {release_tag(live.sha)}")
    queued = store.queued_count(app)
    if queued:
        left.append(_count([0] * queued, "queued job"))
    if proxy.app_file(config, app).exists():
        left.append("a route in the proxy")
    if client is not None:
        instance = config.server.name
        running = containers.find_containers(client, instance, app=app)
        if swarm.swarm_active(client):
            running += swarm.find_services(client, instance, app=app)
        if running:
            left.append(_count(running, "container or service", "containers and services"))
        labelled = client.api.images(filters={"label": [f"{containers.INSTANCE}={instance}", f"{containers.APP}={app}"]})
        named = client.api.images(name=f"{instance}/{app}")
        images = {raw["Id"] for raw in labelled + named}
        if images:
            left.append(_count(list(images), "image"))
    return left
