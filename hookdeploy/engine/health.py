"""HTTP health checks: of a candidate straight at its address, and of a release through the proxy.

Owns the probe (one GET judged by the app's [health]: status and `contains`) and the wait for a
healthy answer, whose pauses end at once on a stop. Imports hookdeploy.core only; runtime (candidates),
swarm (its own probe from inside the proxy container judges with `judge`) and pipeline (verify) call it.
"""

from __future__ import annotations

import http.client
import socket
import ssl
import threading
import time
from dataclasses import dataclass
from typing import Callable

from hookdeploy.core.config import HealthConfig

MAX_BODY = 1024 * 1024
_UNCHECKED = ssl.create_default_context()
_UNCHECKED.check_hostname = False
_UNCHECKED.verify_mode = ssl.CERT_NONE


@dataclass(frozen=True)
class Probe:
    """One HTTP answer, or why there was none."""

    ok: bool
    status: int | None
    detail: str
    release: str | None = None


def probe(host: str, port: int, health: HealthConfig, host_header: str | None = None,
          tls_name: str | None = None) -> Probe:
    """GET health.path once and judge the answer by status and `contains`; with `tls_name`, over TLS
    with that name as SNI (the certificate is not checked: this asks whether the release answers)."""
    connection = http.client.HTTPConnection(host, port, timeout=health.timeout)
    try:
        if tls_name:
            connection.sock = _UNCHECKED.wrap_socket(socket.create_connection((host, port), timeout=health.timeout),
                                                     server_hostname=tls_name)
        headers = {"Host": host_header} if host_header else {}
        headers["User-Agent"] = "hookdeploy-health"
        connection.request("GET", health.path, headers=headers)
        response = connection.getresponse()
        body = response.read(MAX_BODY).decode(errors="replace")
        release = response.getheader("X-Hookdeploy-Release")
    except (OSError, http.client.HTTPException) as error:
        reason = "timed out" if isinstance(error, (socket.timeout, TimeoutError)) else str(error) or type(error).__name__
        return Probe(False, None, f"no answer: {reason}")
    finally:
        connection.close()
    return judge(response.status, body, release, health)


def judge(status: int, body: str, release: str | None, health: HealthConfig) -> Probe:
    """An answer judged by the app's health check: its status and `contains`."""
    if not health.accepts(status):
        return Probe(False, status, f"status {status}, want {health.status}", release)
    if health.contains and health.contains not in body:
        return Probe(False, status, f"body lacks {health.contains!r}", release)
    return Probe(True, status, f"status {status}", release)


def wait_healthy(host: str, port: int, health: HealthConfig, still_running: Callable[[], bool],
                 host_header: str | None = None, expect_release: str | None = None,
                 deadline: float | None = None, tls_name: str | None = None,
                 stop: threading.Event | None = None) -> tuple[float, Probe]:
    """Probe every `interval` until healthy or the deadline passes; return (seconds taken, last probe).

    Returns early with the last probe when `still_running()` turns False (the container
    exited), and treats an answer from another release (header mismatch) as not yet healthy.
    A wait between probes ends when `stop` is set, and `still_running()` is asked at once (it may abort).
    """
    started = time.monotonic()
    limit = started + (deadline if deadline is not None else health.deadline)
    last = Probe(False, None, "not probed")
    while True:
        last = probe(host, port, health, host_header, tls_name)
        if last.ok and expect_release and last.release != expect_release:
            last = Probe(False, last.status, f"answered by release {last.release}, want {expect_release}", last.release)
        if last.ok:
            return time.monotonic() - started, last
        if not still_running() or time.monotonic() + health.interval > limit:
            return time.monotonic() - started, last
        if (stop or threading.Event()).wait(health.interval) and not still_running():
            return time.monotonic() - started, last
