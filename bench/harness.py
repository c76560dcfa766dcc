"""What the deploy benchmarks share: a throw-away hookdeploy instance with a site repo and a worker.

Run a bench from the repository root with the project's venv, after scripts/ensure-docker.sh:
    .venv/bin/python bench/zero_downtime.py
"""

from __future__ import annotations

import http.client
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HOOKDEPLOY = str(Path(sys.executable).parent / "hookdeploy")
BASE_IMAGE = os.environ.get("HOOKDEPLOY_BASE_IMAGE", "hookdeploy-nginx:local")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def run(*command: str, **options) -> subprocess.CompletedProcess:
    return subprocess.run(list(command), check=True, capture_output=True, text=True, **options)


class Instance:
    """A hookdeploy instance in a temp folder: config, bare repo with hook, a work clone, a worker."""

    def __init__(self, drain_seconds: float = 1.0, keep: int = 5, extra: str = "", env: dict | None = None):
        """`extra`: more config text (a [build] table, a [registry]); `env`: more environment for the CLI and worker."""
        self.name = "bench" + secrets.token_hex(3)
        self.port = free_port()
        self.root = Path(tempfile.mkdtemp(prefix="hookdeploy-bench-"))
        self.config = self.root / "deploy.toml"
        self.config.write_text(f"""
[server]
name = "{self.name}"
state_dir = "state"
[proxy]
image = "{BASE_IMAGE}"
publish = "127.0.0.1:{self.port}"
[apps.site]
repo = "git/site.git"
drain_seconds = {drain_seconds}
keep = {keep}
[apps.site.health]
interval = 0.05
{extra}""")
        self.env = {**os.environ, "HOOKDEPLOY_CONFIG": str(self.config), **(env or {})}
        self.cli("init-repo", "site")
        self.work = self.root / "work"
        self.work.mkdir()
        self.git("init", "-q", "-b", "deploy")
        self.git("remote", "add", "production", str(self.root / "git" / "site.git"))
        (self.work / "Dockerfile").write_text(f"FROM {BASE_IMAGE}\nCOPY index.html /usr/share/nginx/html/index.html\n")
        self.worker = None
        self.versions = 0

    def cli(self, *arguments: str) -> str:
        return run(HOOKDEPLOY, *arguments, env=self.env).stdout

    def git(self, *arguments: str) -> str:
        return run("git", "-c", "user.name=bench", "-c", "user.email=bench@localhost", *arguments, cwd=self.work).stdout

    def start_worker(self) -> None:
        self.worker = subprocess.Popen([HOOKDEPLOY, "worker"], env=self.env, stdout=subprocess.DEVNULL,
                                       stderr=open(self.root / "worker.log", "w"))
        time.sleep(0.5)

    def commit(self) -> str:
        """A new version of the site, committed; returns its SHA."""
        self.versions += 1
        (self.work / "index.html").write_text(f"<h1>version {self.versions} {secrets.token_hex(4)}</h1>\n")
        self.git("add", "-A")
        self.git("commit", "-q", "-m", f"version {self.versions}")
        return self.git("rev-parse", "HEAD").strip()

    def push(self, wait: bool = True) -> subprocess.Popen | None:
        """git push production deploy; with wait=False the push (which follows the job) runs on in the background."""
        command = ["git", "push", "-q", "production", "deploy"]
        if wait:
            run(*command, cwd=self.work)
            return None
        return subprocess.Popen(command, cwd=self.work, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def release_served(self) -> str | None:
        return served_release("127.0.0.1", self.port)

    def wait_for_release(self, sha: str, timeout: float = 120.0) -> float:
        """Poll the proxy every 5 ms until it answers with release `sha`; return when (monotonic)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.release_served() == sha[:12]:
                return time.monotonic()
            time.sleep(0.005)
        raise TimeoutError(f"release {sha[:12]} never answered through the proxy")

    def close(self) -> None:
        if self.worker is not None:
            self.worker.send_signal(signal.SIGTERM)
            try:
                self.worker.wait(30)
            except subprocess.TimeoutExpired:
                self.worker.kill()
        remove_by_label(f"hookdeploy.instance={self.name}")
        subprocess.run(["docker", "network", "rm", self.name], capture_output=True)
        shutil.rmtree(self.root, ignore_errors=True)


def served_release(host: str, port: int) -> str | None:
    connection = http.client.HTTPConnection(host, port, timeout=2)
    try:
        connection.request("GET", "/")
        response = connection.getresponse()
        response.read()
        return response.getheader("X-Hookdeploy-Release") if response.status == 200 else None
    except OSError:
        return None
    finally:
        connection.close()


def remove_by_label(label: str) -> None:
    containers = run("docker", "ps", "-aq", "--filter", f"label={label}").stdout.split()
    if containers:
        subprocess.run(["docker", "rm", "-f", *containers], capture_output=True)
    images = sorted(set(run("docker", "images", "-q", "--filter", f"label={label}").stdout.split()))
    if images:
        subprocess.run(["docker", "rmi", "-f", *images], capture_output=True)


class Load:
    """hey sending a steady rate at a URL until stopped; counts answers by status and errors."""

    def __init__(self, url: str, rate: int = 400, workers: int = 8, seconds: int = 600):
        self.process = subprocess.Popen(
            ["hey", "-z", f"{seconds}s", "-c", str(workers), "-q", str(rate // workers), url],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

    def stop(self) -> dict:
        """Stop hey (SIGINT makes it print its report) and return {'ok', 'failed', 'total', 'statuses', 'errors'}."""
        self.process.send_signal(signal.SIGINT)
        output, _ = self.process.communicate(timeout=60)
        return parse_hey(output)


def parse_hey(output: str) -> dict:
    statuses = {int(code): int(count) for code, count in
                re.findall(r"^\s+\[(\d{3})\]\s+(\d+) responses", output, re.MULTILINE)}
    errors_section = output.split("Error distribution:", 1)[1] if "Error distribution:" in output else ""
    errors = sum(int(count) for count in re.findall(r"^\s+\[(\d+)\]\s", errors_section, re.MULTILINE))
    ok = sum(count for code, count in statuses.items() if 200 <= code < 300)
    failed = errors + sum(count for code, count in statuses.items() if not 200 <= code < 300)
    return {"ok": ok, "failed": failed, "total": ok + failed, "statuses": statuses, "errors": errors}
