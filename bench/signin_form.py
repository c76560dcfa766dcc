"""What a hostile sign-in form costs `hookdeploy serve`: POST /signin with N fields and no login
(the dashboard's forms have three fields at most), timed from the client and in the server's own CPU
time (from /proc), against a normal sign-in on the same server.

Run from the repository root with the project's venv (no Docker needed):
    .venv/bin/python bench/signin_form.py [FIELDS]        (default 400000)

Issue 20: 400,000 fields cost 1.3 s of CPU (0.57 to 0.65 s on the 2-core test machine) before the
dashboard refused forms over 16 KB or 4 fields unread; now 413 in about 20 ms of CPU (receiving the body).
"""

from __future__ import annotations

import html
import http.client
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HOOKDEPLOY = str(Path(sys.executable).parent / "hookdeploy")
SECRET = "bench secret for signing tokens"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of process `pid` so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def post(port: int, body: bytes) -> tuple[int, float, bytes]:
    """(status, seconds, answer) of POST /signin with `body` as the form, sent as a browser would."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    headers = {"Content-Type": "application/x-www-form-urlencoded", "Origin": f"http://127.0.0.1:{port}"}
    started = time.perf_counter()
    connection.request("POST", "/signin", body=body, headers=headers)
    response = connection.getresponse()
    answer = response.read()
    took = time.perf_counter() - started
    connection.close()
    return response.status, took, answer


def main() -> None:
    fields = int(sys.argv[1]) if len(sys.argv) > 1 else 400_000
    root = Path(tempfile.mkdtemp(prefix="hookdeploy-bench-signin-"))
    port = free_port()
    config = root / "deploy.toml"
    config.write_text(f'[server]\nstate_dir = "state"\nlisten = "127.0.0.1:{port}"\n')
    env = {**os.environ, "HOOKDEPLOY_CONFIG": str(config), "HOOKDEPLOY_SECRET": SECRET}
    token = subprocess.run([HOOKDEPLOY, "token", "create"], env=env, capture_output=True, text=True,
                           check=True).stdout.strip()
    server = subprocess.Popen([HOOKDEPLOY, "serve", "--no-worker"], env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    try:
        for _ in range(200):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                time.sleep(0.05)
        body = b"&".join([b"a=1"] * fields)
        before = cpu_seconds(server.pid)
        status, took, answer = post(port, body)
        cpu = cpu_seconds(server.pid) - before
        said = re.search(rb'<p class="problem"[^>]*>(.*?)</p>', answer, re.S)
        print(f"{fields} fields ({len(body)} bytes): {status} in {took * 1000:.0f} ms, server CPU {cpu * 1000:.0f} ms"
              f": {html.unescape((said.group(1) if said else answer[:100]).decode(errors='replace')).strip()}")
        before = cpu_seconds(server.pid)
        status, took, _ = post(port, f"token={token}".encode())
        cpu = cpu_seconds(server.pid) - before
        print(f"a normal sign-in: {status} in {took * 1000:.0f} ms, server CPU {cpu * 1000:.0f} ms")
    finally:
        server.terminate()
        server.wait(timeout=30)


if __name__ == "__main__":
    main()
