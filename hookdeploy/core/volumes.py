"""An app's `volumes` entries and its `memory` limit, read from their deploy.toml text.

`NAME:PATH[:ro]` is a named volume (the Docker volume `N-APP-NAME`), `/HOST/PATH:PATH[:ro]` a bind
mount. A bind mount may not hand a container the host: never `/`, the Docker socket (or a folder
holding it) or anything under state_dir (the job store, the proxy's config), nor a folder holding
state_dir. This module reads no file; `os.path.realpath` follows the symlinks a path has now, so
`/var/run/docker.sock` and `/run/docker.sock` are one path here as they are to the kernel.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

VOLUME_NAME = re.compile(r"[a-z0-9][a-z0-9_.-]{0,62}\Z")
DOCKER_SOCKETS = ("/var/run/docker.sock", "/run/docker.sock")
MEMORY = re.compile(r"([0-9]+(?:\.[0-9]+)?) ?([kmgt]?)(?:i?b)?\Z", re.IGNORECASE)
MEMORY_UNITS = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4}
MIN_MEMORY = 6 * 1024**2  # the least the engine accepts for --memory


@dataclass(frozen=True)
class Mount:
    """One entry of an app's `volumes`: a named volume or a host folder, at `target` in each container."""

    source: str  # a volume NAME (the app's own), or an absolute host path
    target: str
    read_only: bool = False

    @property
    def named(self) -> bool:
        """True for a named volume, False for a bind mount."""
        return not self.source.startswith("/")

    def volume_name(self, instance: str, app: str) -> str:
        """The Docker volume of a named mount: `N-APP-NAME`."""
        return f"{instance}-{app}-{self.source}"


def parse_mount(entry: str) -> Mount | str:
    """The Mount an entry names, or why it cannot be one (state_dir and the socket are bind_problem's)."""
    parts = entry.split(":")
    read_only = False
    if len(parts) == 3 and parts[2] in ("ro", "rw"):
        read_only = parts.pop() == "ro"
    if len(parts) != 2 or not all(parts):
        return "must be NAME:PATH or /HOST/PATH:PATH, optionally followed by :ro"
    source, target = parts
    if not target.startswith("/"):
        return "the path in the container must be absolute"
    if _normal(target) == "/":
        return "cannot mount over the container's /"
    if source.startswith("/"):
        if _normal(source) == "/":
            return "the host's / cannot be mounted (it holds the Docker socket and every secret)"
        return Mount(_normal(source), _normal(target), read_only)
    if "/" in source or source.startswith(("~", ".")):
        return "a relative host path; write the host folder as an absolute path (/srv/...)"
    if not VOLUME_NAME.match(source):
        return "a volume name must match [a-z0-9][a-z0-9_.-]{0,62}"
    return Mount(source, _normal(target), read_only)


def bind_problem(host_path: str, state_dir: str | None) -> str | None:
    """Why a container must not see `host_path` (the Docker socket, state_dir (unless None), or a folder
    holding either), or None. Both are compared as given and with symlinks resolved."""
    given = {_normal(host_path), os.path.realpath(host_path)}
    sockets = {path for socket in DOCKER_SOCKETS for path in (socket, os.path.realpath(socket))}
    for path in given:
        for socket in sockets:
            if _within(socket, path):
                what = "is" if path == socket else "holds"
                return f"the host path {what} the Docker socket (a container with it controls the host)"
    states = {_normal(state_dir), os.path.realpath(state_dir)} if state_dir else set()
    for path in given:
        for state in states:
            if _within(path, state):
                return "the host path is under server.state_dir (the job store and proxy config)"
            if _within(state, path):
                return "the host path holds server.state_dir (the job store and proxy config)"
    return None


def memory_bytes(text: str) -> int | None:
    """`512m`, `1g`, `1.5GiB`, `268435456` as bytes (units of 1024, as docker run --memory); None if not one."""
    match = MEMORY.match(text.strip())
    if match is None:
        return None
    return int(float(match.group(1)) * MEMORY_UNITS[match.group(2).lower()])


def _normal(path: str) -> str:
    """`path` without `.`, `..`, repeated or trailing slashes (POSIX keeps a leading `//`; the kernel does not)."""
    normal = os.path.normpath(path)
    return "/" + normal.lstrip("/") if normal.startswith("/") else normal


def _within(path: str, folder: str) -> bool:
    """True if `path` is `folder` or inside it."""
    return path == folder or path.startswith(folder.rstrip("/") + "/")
