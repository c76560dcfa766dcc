"""How long a real delivery takes while slow clients hang on `hookdeploy serve`: straight to serve
(64 threads, connection_limit 1600) against through the README's nginx in front of it.

For each case a fresh `serve --no-worker` (and, through nginx, the README's nginx from
tests/readme_nginx.py with TLS), then N slowloris connections from 127.0.0.2 (tests/slowloris.py:
the start of a request head, then a byte a second, never finished), then one signed GitHub push
delivery from 127.0.0.1 on a new connection, timed until its answer (or --timeout). Prints one line
a case: where, slow connections opened, the delivery's status and seconds.

    .venv/bin/python bench/slow_clients.py [--clients 0,1000,1600,2000] [--timeout 10]

Needs the Docker engine with hookdeploy-nginx:local (scripts/ensure-docker.sh).
"""

from __future__ import annotations

import argparse
import socket
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
import readme_nginx  # noqa: E402
from pebble_helpers import self_signed  # noqa: E402
from slowloris import SlowClients  # noqa: E402
from webhook_helpers import Served, delivery, free_port  # noqa: E402


def deliver(port: int, body: bytes, headers: dict, timeout: float, context=None) -> tuple[str, float]:
    """POST the delivery to 127.0.0.1:port (TLS with `context`); (status or what went wrong, seconds)."""
    import http.client

    started = time.monotonic()
    connection = http.client.HTTPConnection("localhost", port, timeout=timeout)
    try:
        plain = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        connection.sock = context.wrap_socket(plain, server_hostname="localhost") if context else plain
        connection.request("POST", "/hooks/site", body=body, headers=headers)
        response = connection.getresponse()
        response.read()
        return str(response.status), time.monotonic() - started
    except TimeoutError:
        return f"no answer within {timeout:.0f} s", time.monotonic() - started
    except OSError as error:
        return f"{type(error).__name__}", time.monotonic() - started
    finally:
        connection.close()


def run_case(root: Path, clients: int, through_nginx: bool, timeout: float, docker_client) -> str:
    served = Served.make(root, threads=64)
    proxy = None
    with served.server() as server:
        try:
            port, context = server.port, None
            if through_nginx:
                folder = root / "nginx"
                cafile, _ = self_signed(folder, "localhost")
                port = free_port()
                proxy = readme_nginx.start(docker_client, folder, port, server.port, "bench-slow-clients")
                context = readme_nginx.client_context(cafile)
            started = time.monotonic()
            with SlowClients(port, clients, tls=through_nginx) as slow:
                opening = time.monotonic() - started
                body, headers = delivery("site", served.shas[-1])
                status, seconds = deliver(port, body, headers, timeout, context)
                hanging = slow.open_now
        finally:
            if proxy is not None:
                proxy.remove(force=True)
    where = "through nginx" if through_nginx else "straight to serve"
    return (f"{where:18} {clients:5d} slow clients ({slow.opened} opened in {opening:4.1f} s, {hanging} hanging): "
            f"delivery {status} in {seconds:.3f} s")


def main() -> None:
    import docker

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", default="0,1000,1600,2000", help="comma-separated numbers of slow clients")
    parser.add_argument("--timeout", type=float, default=10.0, help="seconds to wait for the delivery's answer")
    options = parser.parse_args()
    counts = [int(count) for count in options.clients.split(",")]
    docker_client = docker.from_env()
    for through_nginx in (False, True):
        for clients in counts:
            with tempfile.TemporaryDirectory(prefix="hookdeploy-bench-slow-") as root:
                print(run_case(Path(root), clients, through_nginx, options.timeout, docker_client), flush=True)


if __name__ == "__main__":
    main()
