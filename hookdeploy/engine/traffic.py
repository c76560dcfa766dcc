"""What the proxy answered for each app: its JSON access log, read incrementally.

The proxy writes one line per request of an app to state_dir/proxy/logs/app-APP.log (bind-mounted
read-write as /var/log/hookdeploy; format LOG_FORMAT, declared in proxy.HTTP_SETTINGS): the time,
the status the visitor got, the release that answered (the X-Hookdeploy-Release header the proxy
adds), and the upstream address and status (a failed connection shows as 502 or 504). The guard
(deploy.py) reads it from the switch on; /metrics and the job page count it by release. Nothing
here asks the site itself.
Imports hookdeploy.core only.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from hookdeploy.core.config import Config

IN_PROXY = "/var/log/hookdeploy"
LOG_FORMAT = ("log_format hookdeploy_json escape=json '{\"time\":$msec,\"status\":$status,"
              "\"release\":\"$sent_http_x_hookdeploy_release\",\"upstream\":\"$upstream_addr\","
              "\"upstream_status\":\"$upstream_status\"}';")
MAX_READ = 64 * 1024 * 1024  # a read never takes more than this much of a log (the newest part)
ROTATE_BYTES = 64 * 1024 * 1024  # the worker empties a log grown past this (between watches)


def log_dir(config: Config) -> Path:
    """The host folder the proxy writes its access logs into."""
    return Path(config.server.state_dir) / "proxy" / "logs"


def log_path(config: Config, app: str) -> Path:
    return log_dir(config) / f"app-{app}.log"


def in_proxy(app: str) -> str:
    """The app's log as the proxy container names it."""
    return f"{IN_PROXY}/app-{app}.log"


@dataclass(frozen=True)
class Hit:
    """One request the proxy answered."""

    time: float
    status: int
    release: str  # SHA12 of the release that answered; "" for the proxy's own answers (redirects, 404)
    upstream: str = ""
    upstream_status: str = ""

    @property
    def failed(self) -> bool:
        """A 5xx the visitor saw: the release's own, or the proxy's when no upstream answered."""
        return self.status >= 500


@dataclass
class Tally:
    """Requests and failed ones (5xx) of one release."""

    requests: int = 0
    failed: int = 0

    @property
    def ratio(self) -> float:
        return self.failed / self.requests if self.requests else 0.0

    def add(self, hit: Hit) -> None:
        self.requests += 1
        self.failed += hit.failed

    def describe(self) -> str:
        """"41 of 52 requests failed (79 %)"."""
        return f"{self.failed} of {self.requests} request{'s' if self.requests != 1 else ''} failed " \
               f"({int(100 * self.ratio + 0.5)} %)"


class LogReader:
    """Reads an access log from a position on, a call at a time: each read returns the requests
    logged since the last one (whole lines only). A log emptied or replaced meanwhile is read from
    its start."""

    def __init__(self, path: Path, from_end: bool = True):
        self.path = path
        self.offset = self._size() if from_end else 0
        self._inode = self._stat_inode()

    def read(self) -> list[Hit]:
        try:
            with open(self.path, "rb") as file:
                status = os.fstat(file.fileno())  # of the file opened, whatever the path names meanwhile
                size, inode = status.st_size, status.st_ino
                if size < self.offset or inode != self._inode:
                    self.offset, self._inode = 0, inode
                if size <= self.offset:
                    return []
                start = max(self.offset, size - MAX_READ)
                file.seek(start)
                data = file.read(size - start)
        except FileNotFoundError:
            return []
        end = data.rfind(b"\n") + 1  # a line being written is read next time, whole
        self.offset = start + end
        return parse(data[:end])

    def _size(self) -> int:
        try:
            return self.path.stat().st_size
        except FileNotFoundError:
            return 0

    def _stat_inode(self) -> int | None:
        try:
            return self.path.stat().st_ino
        except FileNotFoundError:
            return None


def parse(data: bytes) -> list[Hit]:
    """The requests in whole log lines; a line that is not ours is skipped."""
    hits = []
    for line in data.splitlines():
        try:
            entry = json.loads(line)
            hits.append(Hit(float(entry["time"]), int(entry["status"]), str(entry.get("release") or ""),
                            str(entry.get("upstream") or ""), str(entry.get("upstream_status") or "")))
        except (ValueError, KeyError, TypeError):
            continue
    return hits


def by_release(hits: list[Hit]) -> dict[str, Tally]:
    """Requests and failures per release (the proxy's own answers left out)."""
    tallies: dict[str, Tally] = {}
    for hit in hits:
        if hit.release:
            tallies.setdefault(hit.release, Tally()).add(hit)
    return tallies


def rotate(config: Config, app: str) -> bool:
    """Empty the app's log once it grew past ROTATE_BYTES; True if it did. nginx appends (O_APPEND),
    so it goes on writing at the new end; readers start over from the beginning."""
    path = log_path(config, app)
    try:
        if path.stat().st_size <= ROTATE_BYTES:
            return False
        with open(path, "r+b") as file:
            file.truncate(0)
        return True
    except OSError:  # gone, or the proxy's and not ours to write: left as it is
        return False
