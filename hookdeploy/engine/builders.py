"""How a release's image is built: one Builder per `[build] builder`, picked once per job.

"buildkit" (the default) builds through a docker CLI that drives the engine's BuildKit (buildkit.py):
cache and secret mounts, `--target`, stages not needed skipped. "classic" is the Engine API's legacy
builder through the docker SDK (containers.build), as before BuildKit. With a build host ([build]
host, an app's build_host), BuildKit there (buildhost.py): the image is pushed from there and this
engine pulls it by digest. The deploy only ever calls the interface. Imports hookdeploy.core and the
builders' modules (buildkit, buildhost, containers, registry).
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Callable, Mapping, Protocol

import docker

from hookdeploy.core.config import AppConfig, Config
from hookdeploy.core.errors import StepFailed
from hookdeploy.engine import buildhost, buildkit, containers, registry

Lines = Callable[[list[str]], None]

# What the engine says when an image a build was at went away under it (another worker's or
# instance's prune took it): the legacy builder's lookups of a step's image ("No such image",
# "unable to find image", "failed to get digest ...: no such file or directory" for an image
# record removed as it was read, "unknown parent image ID" for a step committed onto one). Not
# the commit's fault: the same build run again succeeds.
LOST_IMAGE = re.compile(r'No such image: sha256:[0-9a-f]{12,64}|unable to find image "?sha256:[0-9a-f]{12,64}"?'
                        r"|failed to get digest sha256:[0-9a-f]{12,64}: open \S+: no such file or directory"
                        r"|unknown parent image ID sha256:[0-9a-f]{12,64}")


@dataclass(frozen=True)
class BuildRequest:
    """One image to build: what `docker build` is given."""

    context: Path
    dockerfile: str  # relative to context
    tag: str
    labels: Mapping[str, str]
    build_args: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    target: str = ""  # a stage of a multi-stage Dockerfile; "": the last
    secrets: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))  # NAME: BuildSecret
    timeout: float = 900.0
    cache_from: str = ""  # [build] cache = "registry": URL/N/APP:buildcache, the cache taken and kept there


class Builder(Protocol):
    """What the deploy needs of a builder."""

    elsewhere: bool  # True: the image is built on another engine and reaches ours through [registry], by digest
    intermediate_images: bool  # True: each step leaves an image, the parent of the next (the legacy builder)

    def describe(self) -> str:
        """How the job log names it: `BuildKit (/usr/bin/docker 20.10.24, DOCKER_BUILDKIT=1)`."""

    def announce(self, name: str) -> str:
        """The job log's line as the build of the release `name` (N/APP:SHA12) starts."""

    def build(self, request: BuildRequest, on_lines: Lines, stop: threading.Event | None) -> str:
        """Build `request.tag`, its output handed to `on_lines` as it comes; return the image id (for a
        builder `elsewhere`: the digest [registry] gave the image pushed from there).

        StepFailed with the build's error line, or on its timeout; Aborted once `stop` is set. Either
        way the build is cancelled in the builder first."""


class BuildKitBuilder:
    """BuildKit on the engine releases run on, through a docker CLI (buildkit.py)."""

    elsewhere = False
    intermediate_images = False  # BuildKit keeps its steps in its own cache, which holds what a build uses

    def __init__(self, cli: buildkit.Client, client: docker.DockerClient | None = None, config: Config | None = None,
                 app: AppConfig | None = None):
        self.cli, self.client, self.config, self.app = cli, client, config, app

    def describe(self) -> str:
        return f"BuildKit ({self.cli.describe()})"

    def announce(self, name: str) -> str:
        return f"building {name} with {self.describe()}"

    def build(self, request: BuildRequest, on_lines: Lines, stop: threading.Event | None) -> str:
        if not request.cache_from:
            return buildkit.build(self.cli, request.context, request.dockerfile, request.tag, request.labels,
                                  request.build_args, request.target, request.secrets, request.timeout, on_lines, stop)
        with buildhost.login(self.config, build=True) as folder:
            built = buildkit.build(self.cli, request.context, request.dockerfile, request.tag, request.labels,
                                   request.build_args, request.target, request.secrets, request.timeout, on_lines,
                                   stop, cache_from=request.cache_from, docker_config=folder)
        self._push_cache(request, on_lines, stop)
        return built

    def _push_cache(self, request: BuildRequest, on_lines: Lines, stop: threading.Event | None) -> None:
        """The image just built (its cache inline) pushed as URL/N/APP:buildcache, for the next build on any
        builder; a failure costs that build time only, so it is logged and the deploy goes on."""
        on_lines([f"pushing build cache {request.cache_from}"])
        try:
            registry.push(self.client, self.config, self.app, request.tag, "", on_lines, stop, tag=registry.CACHE_TAG)
        except StepFailed as error:
            on_lines([f"build cache not pushed: {error}"])
        finally:
            containers.remove_image(self.client, request.cache_from)  # the tag; the release keeps its own name


class ClassicBuilder:
    """The Engine API's legacy builder, through the docker SDK."""

    elsewhere = False
    intermediate_images = True

    def __init__(self, client: docker.DockerClient):
        self.client = client

    def describe(self) -> str:
        return "the classic builder"

    def announce(self, name: str) -> str:
        return f"building {name} with {self.describe()}"

    def build(self, request: BuildRequest, on_lines: Lines, stop: threading.Event | None) -> str:
        if request.secrets:  # the config refuses this; a secret must never go in as a build arg instead
            raise StepFailed("build secrets need [build] builder = \"buildkit\"")
        return containers.build(self.client, request.context, request.dockerfile, request.tag, dict(request.labels),
                                dict(request.build_args), request.timeout, on_lines, stop, request.target)


def lost_image(error: str) -> str | None:
    """The words of a build's error that say the engine lost an image under the build, else None."""
    found = LOST_IMAGE.search(error)
    return found.group(0) if found else None


def chosen(config: Config, client: docker.DockerClient, app: AppConfig) -> Builder:
    """The builder `[build] builder` and the app's build host name; StepFailed in one line (with the
    fix, or naming the build host) when it cannot build: a build host is asked first that it answers."""
    if config.build.builder == "classic":
        return ClassicBuilder(client)
    host = config.build_host(app)
    if host:
        build_host = buildhost.BuildHost.of(config, host)
        cli = buildkit.client()
        build_host.check(cli)
        return buildhost.RemoteBuilder(cli, build_host, config, app)
    return BuildKitBuilder(buildkit.client(), client, config, app)
