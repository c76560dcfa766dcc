"""The steps that turn a commit into a live release, each a plain function.

deploy.py owns their order and the worker (worker.py) every job state change; a step returns a value
or raises StepFailed with the reason a person needs, and writes no job state or job log. Owns: the
checkout into the app's build folder, a build with its retries and the build lock, the proxy and
network made ready (under the setup lock), verification through the proxy, and image pruning (the
rollback target kept: Store.rollback_target). Imports hookdeploy.core and the modules of those
steps (builders, certs, containers, gitops, health, proxy, registry, runtime, traffic).
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import shutil
import threading
from pathlib import Path
from typing import Callable, Iterator

import docker
import git

from hookdeploy.core.config import AppConfig, Config
from hookdeploy.core.errors import Aborted, GitError, StepFailed
from hookdeploy.core.models import Job, ReleaseState, release_tag
from hookdeploy.core.names import split_address
from hookdeploy.core.store import Store
from hookdeploy.engine import builders, certs, containers, gitops, health, proxy, registry, runtime, traffic

log = logging.getLogger(__name__)

VERIFY_DEADLINE = 15.0
BUILD_TRIES = 3  # builds of one job in all, when the engine loses an image under them
BUILD_AGAIN_AFTER = (1.0, 3.0)  # seconds before the second and third: the prune that took it may still be at work


def build_dir(config: Config, job: Job) -> Path:
    """The folder of the app's source tree: one per app, kept between its jobs (the store runs one job of an
    app at a time) and refreshed to each job's commit, as BuildKit's file sync remembers a build context
    by its path and then sends only what changed (a new folder per job sent all of it every time)."""
    return Path(config.server.state_dir) / "builds" / job.app


def source(config: Config, app: AppConfig, fetch: bool = True) -> git.Repo:
    """The app's repo, its mirror fetched first (unless `fetch` is False) when `repo` is a clone URL."""
    try:
        return gitops.open_repo(app, config.server.state_dir, fetch=fetch and not app.is_local_repo)
    except GitError as error:
        raise StepFailed(str(error)) from None


def checkout(config: Config, app: AppConfig, job: Job, fetch: bool = True) -> Path:
    """Export exactly the job's commit into the app's build folder (the mirror fetched first unless
    `fetch` is False: the job fetched it already); return the build context."""
    repo = source(config, app, fetch)
    try:
        source_tree = gitops.export(repo, job.sha, build_dir(config, job), refresh=True)
    except GitError as error:
        raise StepFailed(str(error)) from None
    except OSError as error:  # a full disk, most likely
        raise StepFailed(f"checkout of {release_tag(job.sha)} into {build_dir(config, job)} failed: "
                         f"{error.strerror or error}") from None
    context = source_tree / app.context
    if not (context / app.dockerfile).is_file():
        raise StepFailed(f"{app.dockerfile} not found in {app.context!r} at {release_tag(job.sha)}")
    return context


def build(builder: builders.Builder, config: Config, app: AppConfig, job: Job, context: Path, name: str,
          on_lines: Callable[[list[str]], None], stop: threading.Event | None = None,
          on_note: Callable[[str], None] = lambda text: None) -> str:
    """Build the job's image `name` (containers.image_name) from the checked-out context; return the image id,
    or the registry's digest for a builder that builds elsewhere (Aborted once `stop` is set).

    A build the engine lost an image under (a prune elsewhere: builders.lost_image) is built again,
    `BUILD_TRIES` times in all, each new try told to `on_note`; any other failure ends it at once."""
    request = builders.BuildRequest(
        context, app.dockerfile, name, containers.release_labels(config.server.name, app.name, job.sha, job.id),
        app.build_args, app.build_target, app.build_secrets, app.build_timeout, registry.build_cache(config, app))
    with building(config, builder):
        for attempt in range(1, BUILD_TRIES + 1):
            try:
                return builder.build(request, on_lines, stop)
            except StepFailed as error:
                lost = builders.lost_image(str(error))
                if lost is None:
                    raise
                if attempt == BUILD_TRIES:
                    raise StepFailed(f"{error} (the engine lost an image under each of {BUILD_TRIES} builds)") from None
                on_note(f"build: the engine lost an image under the build ({lost}); "
                        f"building again ({attempt + 1} of {BUILD_TRIES})")
            if (stop or threading.Event()).wait(BUILD_AGAIN_AFTER[attempt - 1]):
                raise Aborted()
    raise AssertionError("unreachable")


@contextlib.contextmanager
def building(config: Config, builder: builders.Builder) -> Iterator[None]:
    """Hold the instance's build lock shared while a builder with intermediate images builds: a prune
    (which takes it alone) must not remove an untagged parent image a build has reached by its cache."""
    if not builder.intermediate_images:
        yield
        return
    with open(_lock_path(config.server.database.parent, "build"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_SH)
        yield


def _lock_path(folder: Path, name: str) -> Path:
    """A lock of everything sharing the store in `folder` (state_dir): the instance's workers."""
    folder.mkdir(parents=True, exist_ok=True)
    return folder / f"{name}.lock"


def clean_build_dir(config: Config, job: Job) -> None:
    """Remove the job's own build folder, which versions before the per-app folder made (builds/JOB);
    the app's folder stays for its next build."""
    shutil.rmtree(Path(config.server.state_dir) / "builds" / str(job.id), ignore_errors=True)


def ensure_proxy(client: docker.DockerClient, config: Config):
    """The instance network and running proxy, created on first use by one process at a time."""
    with proxy.locked(config, "setup"):
        proxy.prepare(config)
        runtime.ensure_network(client, config)
        return containers.ensure_proxy(client, config.server.name, config.proxy.image, config.proxy.publish,
                                       proxy.conf_dir(config), config.proxy.publish_tls, traffic.log_dir(config))


def refresh_proxy(client: docker.DockerClient, config: Config) -> None:
    """If the proxy exists, make it what the config wants (published ports, mounts): a proxy made by
    an older version would not write the access logs the new server blocks name."""
    if containers.get_container(client, containers.proxy_name(config.server.name)) is not None:
        ensure_proxy(client, config)


def heal_networks(client: docker.DockerClient, config: Config) -> set[str]:
    """Merge duplicate instance networks (left by workers of older versions); return the apps moved."""
    with proxy.locked(config, "setup"):
        moved = containers.heal_networks(client, config.server.name)
    return {container.labels.get(containers.APP) for container in moved} - {None}


def verify_through_proxy(config: Config, app: AppConfig, sha: str) -> tuple[float, health.Probe]:
    """Ask the proxy, as a visitor would, until the new release answers healthily: over HTTPS when
    the app's first name is redirected there, else over HTTP."""
    host_header = app.hostnames[0].replace("*", "hookdeploy-verify") if app.hostnames else None
    tls = certs.tls_routes(config, app)
    secure = tls is not None and tls.redirect and (app.hostnames[0] if app.hostnames else "_") in tls.certificates
    host, port = split_address(config.proxy.publish_tls if secure else config.proxy.publish)
    host = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(host, host)
    deadline = min(app.health.deadline, VERIFY_DEADLINE)
    return health.wait_healthy(host, int(port), app.health, lambda: True, host_header=host_header,
                               expect_release=release_tag(sha), deadline=deadline,
                               tls_name=(host_header or "hookdeploy-verify") if secure else None)


def prune(client: docker.DockerClient, store: Store, app: AppConfig) -> list[str] | None:
    """Remove release images beyond the newest `keep` (live included); never the live one or the rollback target.

    None (nothing removed; the app's next job prunes) while a build of this instance with the legacy
    builder runs: removing an image takes its untagged parents along, and such a build may be at one
    of them (a step its cache found). Removals hold the build lock, so no such build starts meanwhile."""
    releases = [release for release in store.releases(app.name) if release.state is not ReleaseState.PRUNED]
    kept: list[str] = []
    for release in releases:
        if release.image not in kept and len(kept) < app.keep:
            kept.append(release.image)
    protected = set(kept) | {release.image for release in (store.live_release(app.name),
                                                           store.rollback_target(app.name)) if release}
    unwanted = list(dict.fromkeys(release.image for release in releases if release.image not in protected))
    if not unwanted:
        return []
    pruned: list[str] = []
    # One prune at a time (two apps' jobs may end together); then none while such a build runs.
    folder = store.path.parent
    with open(_lock_path(folder, "prune"), "a") as prune_lock, open(_lock_path(folder, "build"), "a") as lock:
        fcntl.flock(prune_lock, fcntl.LOCK_EX)
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return None
        for image in unwanted:
            if containers.remove_image(client, image):
                store.mark_pruned([release.id for release in releases if release.image == image])
                pruned.append(image)
    return pruned


def discard_image(client: docker.DockerClient, store: Store, app: AppConfig, image: str | None) -> None:
    """Remove an image no release uses (one that never went live, or was taken back by the guard);
    a pruned release's image is none of its own any more."""
    if image and all(release.image != image for release in store.releases(app.name)
                     if release.state is not ReleaseState.PRUNED):
        containers.remove_image(client, image)
