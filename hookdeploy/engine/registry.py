"""The private registry, through the engine: push a built release, resolve a tag, pull by digest.

Credentials come from deploy.toml's [registry] only and go to the engine with each call (the
X-Registry-Auth header the docker SDK builds from `auth_config`), so the worker user's
~/.docker/config.json is never read and the password is never logged, stored or shown: errors
carry the registry's message, which never contains it. Progress (layers, bytes) reaches the job
log like the build's output, one line per layer state and at most one progress line a second.
A push or pull is a long call of streams.py: a stop is seen within half a second, and it fails after
TRANSFER_TIMEOUT s without a word from the engine. Imports hookdeploy.core, containers.py and streams.py.
"""

from __future__ import annotations

import re
import threading
import time
from typing import Callable, Iterable

import docker
import docker.errors
import requests.exceptions
import urllib3.exceptions

from hookdeploy.core.config import AppConfig, Config
from hookdeploy.core.errors import DockerUnavailable, StepFailed
from hookdeploy.core.names import DIGEST, split_image
from hookdeploy.core.models import release_tag
from hookdeploy.engine import containers, streams

PROGRESS_EVERY = 1.0  # seconds between two progress lines of one layer
CACHE_TAG = "buildcache"  # URL/N/APP:buildcache, an image whose config carries its build cache (inline)
TRANSFER_TIMEOUT = 600  # seconds a push or pull may go without a word from the engine
# What reading a stream raises when the engine stops talking, besides OSError and DockerException.
STREAM_ERRORS = (requests.exceptions.RequestException, urllib3.exceptions.HTTPError)


def auth_config(config: Config) -> dict[str, str]:
    """What the engine gets to log in to the registry: [registry]'s credentials, or none at all."""
    registry = config.registry
    if registry is None or not registry.username:
        return {"username": "", "password": ""}  # explicit: never fall back to ~/.docker/config.json
    password = registry.password()
    if password is None:
        raise StepFailed(f"the registry password is not set (registry.password_env or password_file); "
                         f"cannot log in to {registry.url} as {registry.username}")
    return {"username": registry.username, "password": password.decode(), "serveraddress": registry.url}


def remote_repository(config: Config, app: AppConfig) -> str:
    """Where an app's releases go in the registry: URL/N/APP (tagged SHA12)."""
    return f"{config.registry.url}/{config.server.name}/{app.name}"


def build_cache(config: Config, app: AppConfig) -> str:
    """Where `[build] cache = "registry"` keeps an app's build cache: URL/N/APP:buildcache; "" for "local"."""
    if config.build.cache != "registry" or config.registry is None:
        return ""
    return f"{remote_repository(config, app)}:{CACHE_TAG}"


def push(client: docker.DockerClient, config: Config, app: AppConfig, local_image: str, sha: str,
         on_lines: Callable[[list[str]], None], stop: threading.Event | None = None,
         tag: str = "") -> tuple[str, str]:
    """Tag a built release URL/N/APP:SHA12 (or `tag`) and push it; return (that name, the registry's digest).

    StepFailed with the registry's reason when the push fails (down, refused credentials, full disk)."""
    repository, tag = remote_repository(config, app), tag or release_tag(sha)
    try:
        client.images.get(local_image).tag(repository, tag=tag)
        auth = auth_config(config)
        outcome = _transfer(client, "push", stop, on_lines,
                            lambda api: api.push(repository, tag=tag, stream=True, decode=True, auth_config=auth))
    except docker.errors.APIError as error:
        raise StepFailed(f"push to {config.registry.url} failed: {error.explanation or error}") from None
    except (docker.errors.DockerException, OSError, *STREAM_ERRORS) as error:
        raise _silent_engine("push", error) from None
    if "error" in outcome:
        raise StepFailed(f"push to {config.registry.url} failed: {outcome['error']}")
    digest = outcome.get("digest")
    if digest is None:
        raise StepFailed(f"push to {config.registry.url} ended without a digest")
    return f"{repository}:{tag}", digest


def resolve_tag(client: docker.DockerClient, config: Config, app: AppConfig, tag: str) -> str:
    """The digest `app.image:tag` has in its registry now (asked of the registry, nothing pulled)."""
    try:
        return client.images.get_registry_data(f"{app.image}:{tag}", auth_config=auth_config(config)).id
    except docker.errors.NotFound:
        raise StepFailed(f"{app.image}:{tag} does not exist in the registry") from None
    except docker.errors.APIError as error:
        raise StepFailed(f"cannot look up {app.image}:{tag}: {error.explanation or error}") from None
    except (docker.errors.DockerException, OSError) as error:
        raise DockerUnavailable(f"the Docker engine does not answer: {error}") from None


def pull(client: docker.DockerClient, config: Config, app: AppConfig, digest: str, local_image: str,
         on_lines: Callable[[list[str]], None], stop: threading.Event | None = None, source: str = "") -> str:
    """Pull `app.image@digest` (`source@digest`: a release a build host pushed) and name it `local_image`
    (N/APP:SHA12, as built releases are); return it."""
    if not DIGEST.match(digest):
        raise StepFailed(f"{digest!r} is not an image digest")
    image = source or app.image
    host, _ = split_image(image)
    try:
        auth = auth_config(config)
        outcome = _transfer(client, "pull", stop, on_lines,
                            lambda api: api.pull(image, tag=digest, stream=True, decode=True, auth_config=auth))
        if "error" in outcome:
            raise StepFailed(f"pull of {image}@{digest[:19]} from {host} failed: {outcome['error']}")
        repository, _, tag = local_image.rpartition(":")
        client.images.get(f"{image}@{digest}").tag(repository, tag=tag)
    except docker.errors.APIError as error:
        raise StepFailed(f"pull of {image}@{digest[:19]} from {host} failed: {error.explanation or error}") from None
    except (docker.errors.DockerException, OSError, *STREAM_ERRORS) as error:
        raise _silent_engine("pull", error) from None
    return local_image


def revision(client: docker.DockerClient, image: str) -> str | None:
    """The commit an image says it was built from (label org.opencontainers.image.revision), if any."""
    try:
        labels = client.images.get(image).labels or {}
    except docker.errors.DockerException:
        return None
    value = labels.get("org.opencontainers.image.revision", "")
    return value if re.fullmatch(r"[0-9a-f]{7,64}", value) else None


def forget(client: docker.DockerClient, config: Config, app: AppConfig, sha: str) -> None:
    """Remove the local URL/N/APP:SHA12 name a push left (the registry keeps the release)."""
    if config.registry is not None:
        containers.remove_image(client, f"{remote_repository(config, app)}:{release_tag(sha)}")


def _silent_engine(what: str, error: BaseException) -> Exception:
    """A push or pull whose engine went quiet: stalled (StepFailed, the job fails) or gone (DockerUnavailable)."""
    if isinstance(error, (requests.exceptions.Timeout, urllib3.exceptions.ReadTimeoutError)):
        return StepFailed(f"the {what} made no progress for {TRANSFER_TIMEOUT} s")
    return DockerUnavailable(f"the Docker engine stopped answering during the {what}: {error}")


def _transfer(client: docker.DockerClient, what: str, stop: threading.Event | None,
              on_lines: Callable[[list[str]], None], call: Callable) -> dict:
    """A push or pull (`call(api)`, its stream) on a connection of its own, followed by streams.py: a stop
    is seen within half a second even while the engine says nothing, and the transfer fails after
    TRANSFER_TIMEOUT s without a word from it; either closes the connection, which ends the transfer."""
    connection = streams.Connection(client, TRANSFER_TIMEOUT)
    chunks, _ = streams.feed(lambda: call(connection.api), f"registry-{what}")
    try:
        return _follow(streams.items(chunks, stop, connection.close, TRANSFER_TIMEOUT, what, quiet=True), on_lines)
    finally:
        connection.close()


def _follow(chunks: Iterable[dict], on_lines: Callable[[list[str]], None]) -> dict:
    """Read a push or pull stream to its end: log its progress, return {"digest"} or {"error"}."""
    outcome: dict = {}
    last_status: dict[str, str] = {}
    last_progress: dict[str, float] = {}
    for chunk in chunks:
        if "error" in chunk:
            outcome["error"] = " ".join(str(chunk.get("errorDetail", {}).get("message") or chunk["error"]).split())
            break
        aux = chunk.get("aux") or {}
        if isinstance(aux, dict) and DIGEST.match(str(aux.get("Digest", ""))):
            outcome["digest"] = aux["Digest"]
        status, layer = str(chunk.get("status", "")), str(chunk.get("id", ""))
        found = re.search(r"(?:digest|Digest): (sha256:[0-9a-f]{64})", status)
        if found:
            outcome.setdefault("digest", found.group(1))
        line = _progress_line(chunk, status, layer, last_status, last_progress)
        if line:
            on_lines([line])
    return outcome


def _progress_line(chunk: dict, status: str, layer: str, last_status: dict, last_progress: dict) -> str | None:
    if not status:
        return None
    detail = chunk.get("progressDetail") or {}
    if layer and detail.get("total"):
        now = time.monotonic()
        if now - last_progress.get(layer, 0.0) < PROGRESS_EVERY:
            return None
        last_progress[layer] = now
        return f"{layer}: {status} {_size(detail.get('current', 0))} of {_size(detail['total'])}"
    if layer:
        kind = re.sub(r"[0-9]+", "N", status)  # "Retrying in 5 seconds", 4, 3...: one line, not five
        if last_status.get(layer) == kind:
            return None
        last_status[layer] = kind
        return f"{layer}: {status}"
    return status


def _size(count: int) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if count < 1000 or unit == "GB":
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1000
    return ""
