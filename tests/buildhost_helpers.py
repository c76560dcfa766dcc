"""A real build host for the tests of `[build] host`: a second Docker engine (dockerd nested in a container
of the host engine, from scripts/cluster.sh's node image hookdeploy-node:local) with a real sshd in it,
reached over ssh with a key the test makes, and over plain tcp.

What the rig makes, all named hdbuild-* with the label hdbuild.rig=1:
  - a container running sshd (host keys made at its start; root logs in with the test's key only) and
    dockerd on unix:///var/run/docker.sock and tcp://0.0.0.0:2375 (plain TCP: published on 127.0.0.1
    only, a test rig); ports 22 and 2375 published on 127.0.0.1 at free ports;
  - hookdeploy-nginx:local loaded into it, so the test sites' `FROM` needs no registry;
  - in a folder of the test: the key pair, a known_hosts holding exactly the container's host key,
    an ssh_config using both (StrictHostKeyChecking yes, BatchMode), and bin/ssh, a wrapper that runs
    the system's ssh with that config. With bin/ on PATH, the docker CLI's and the docker SDK's
    `ssh ... docker system dial-stdio` reach the build host as a worker user's ~/.ssh would.

The registry (tests/registry_helpers.py) listens on 127.0.0.1:PORT of this machine; `BuildHost.forward`
makes 127.0.0.1:PORT inside the build host lead there (an `ssh -R` over the same sshd), so the one
[registry] url names the registry for both engines, and both treat 127.0.0.0/8 as insecure (plain HTTP).

Fixtures (module scope; they depend on docker_engine, so tests using them are marked docker): `build_host`,
and `tls_build_host`, whose dockerd serves tcp with --tlsverify and certificates made by openssl for the
test (`.tls`: ca.pem, cert.pem, key.pem for the client; the server's own beside them).
"""

from __future__ import annotations

import contextlib
import glob
import os
import secrets
import shutil
import subprocess
import time
from pathlib import Path
from typing import Iterator

import pytest

from docker_helpers import BASE_IMAGE, unavailable

CLUSTER_SH = Path(__file__).resolve().parent.parent / "scripts" / "cluster.sh"
NODE_IMAGE = "hookdeploy-node:local"
LABEL = "hdbuild.rig=1"
START = r"""
set -e
rm -f /etc/ssh/ssh_host_*
ssh-keygen -A >/dev/null
mkdir -p /run/sshd /root/.ssh
chmod 700 /root/.ssh
printf '%s\n' "$AUTHORIZED_KEY" > /root/.ssh/authorized_keys
chmod 600 /root/.ssh/authorized_keys
/usr/sbin/sshd -o PasswordAuthentication=no -o PermitRootLogin=prohibit-password -o AllowTcpForwarding=yes
if [ -f /tls/ca.pem ]; then
    set -- --tlsverify --tlscacert /tls/ca.pem --tlscert /tls/server.pem --tlskey /tls/server-key.pem
else
    set -- --tls=false
fi
exec dockerd --host unix:///var/run/docker.sock --host tcp://0.0.0.0:2375 "$@" \
    --storage-driver overlay2 --cgroup-parent "/$HOSTNAME" --log-level warn
"""


def run(*arguments: str, timeout: float = 120, input: bytes | None = None, check: bool = True
        ) -> subprocess.CompletedProcess:
    """A command on the host engine's side (DOCKER_HOST unset: the host engine)."""
    env = {key: value for key, value in os.environ.items() if key != "DOCKER_HOST"}
    return subprocess.run(list(arguments), capture_output=True, timeout=timeout, input=input, env=env,
                          check=check, stdin=None if input is not None else subprocess.DEVNULL)


class BuildHost:
    """One running build host container and the ssh files that reach it."""

    def __init__(self, root: Path, tls: bool = False):
        self.root = root
        self.tls = root / "tls" if tls else None  # with TLS: dockerd --tlsverify, the files made by make_tls
        self.name = f"hdbuild-{secrets.token_hex(4)}"
        self.key = root / "id_ed25519"
        self.known_hosts = root / "known_hosts"
        self.ssh_config = root / "ssh_config"
        self.bin = root / "bin"
        self.ssh_port = 0
        self.tcp_port = 0
        self._forwards: list[subprocess.Popen] = []

    # -- how hookdeploy names it

    @property
    def ssh_url(self) -> str:
        return f"ssh://root@127.0.0.1:{self.ssh_port}"

    @property
    def tcp_url(self) -> str:
        return f"tcp://127.0.0.1:{self.tcp_port}"

    def path(self) -> str:
        """PATH with the ssh wrapper first."""
        return f"{self.bin}{os.pathsep}{os.environ.get('PATH', os.defpath)}"

    # -- making it

    def start(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        if self.tls:
            make_tls(self.tls)
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "hookdeploy-test", "-f", str(self.key)],
                       check=True, capture_output=True, timeout=30)
        run("docker", "run", "-d", "--name", self.name, "--hostname", self.name, "--label", LABEL,
            "--cap-add", "ALL", "--cap-drop", "SYS_RESOURCE",
            "--security-opt", "seccomp=unconfined", "--security-opt", "apparmor=unconfined",
            "--device-cgroup-rule", "a *:* rwm", "--cgroupns=host", "-v", "/sys/fs/cgroup:/sys/fs/cgroup:rw",
            "-v", "/var/lib/docker", "--init",
            "-p", "127.0.0.1::22", "-p", "127.0.0.1::2375",
            *(["-v", f"{self.tls}:/tls:ro"] if self.tls else []),
            "-e", f"AUTHORIZED_KEY={self.key.with_suffix('.pub').read_text().strip()}",
            NODE_IMAGE, "bash", "-c", START)
        self.ssh_port = self._published(22)
        self.tcp_port = self._published(2375)
        self._wait_for_engine()
        host_key = self.exec("cat", "/etc/ssh/ssh_host_ed25519_key.pub").split()[:2]
        self.known_hosts.write_text(f"[127.0.0.1]:{self.ssh_port} {' '.join(host_key)}\n")
        self.ssh_config.write_text(
            f"Host *\n  IdentityFile {self.key}\n  IdentitiesOnly yes\n  UserKnownHostsFile {self.known_hosts}\n"
            "  StrictHostKeyChecking yes\n  BatchMode yes\n  ConnectTimeout 10\n  LogLevel ERROR\n")
        self.bin.mkdir(exist_ok=True)
        wrapper = self.bin / "ssh"
        wrapper.write_text(f"#!/bin/sh\nexec {shutil.which('ssh')} -F {self.ssh_config} \"$@\"\n")
        wrapper.chmod(0o755)
        saved = run("docker", "save", BASE_IMAGE, timeout=300).stdout
        run("docker", "exec", "-i", self.name, "docker", "load", input=saved, timeout=300)

    def _published(self, port: int) -> int:
        text = run("docker", "port", self.name, f"{port}/tcp").stdout.decode().split()[0]
        return int(text.rpartition(":")[2])

    def _wait_for_engine(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if run("docker", "exec", self.name, "docker", "info", check=False, timeout=20).returncode == 0:
                return
            if run("docker", "inspect", "--format", "{{.State.Running}}", self.name).stdout.strip() != b"true":
                break
            time.sleep(0.5)
        logs = run("docker", "logs", "--tail", "15", self.name, check=False).stderr.decode(errors="replace")
        raise RuntimeError(f"the build host's dockerd did not come up: {logs}")

    def exec(self, *command: str, check: bool = True) -> str:
        """A command inside the build host container; its output."""
        return run("docker", "exec", self.name, *command, check=check).stdout.decode(errors="replace")

    def docker(self, *arguments: str) -> str:
        """The build host's own docker CLI."""
        return self.exec("docker", *arguments)

    def build_cache_records(self) -> int:
        """How many records the build host's BuildKit cache holds (`docker system df`)."""
        for line in self.docker("system", "df", "--format", "{{.Type}}\t{{.TotalCount}}").splitlines():
            kind, _, count = line.partition("\t")
            if kind == "Build Cache":
                return int(count)
        raise RuntimeError("docker system df names no build cache")

    # -- the registry, reached from inside

    def forward(self, port: int) -> None:
        """127.0.0.1:`port` inside the build host leads to 127.0.0.1:`port` here (the test's registry)."""
        process = subprocess.Popen(
            ["ssh", "-F", str(self.ssh_config), "-N", "-o", "ExitOnForwardFailure=yes",
             "-R", f"127.0.0.1:{port}:127.0.0.1:{port}", "-p", str(self.ssh_port), "root@127.0.0.1"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        self._forwards.append(process)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            status = self.exec("sh", "-c", f"curl -s -o /dev/null -w '%{{http_code}}' http://127.0.0.1:{port}/v2/",
                               check=False)
            if status == "401":
                return
            if process.poll() is not None:
                raise RuntimeError(f"ssh -R for port {port} ended: {process.stderr.read().decode(errors='replace')}")
            time.sleep(0.2)
        raise RuntimeError(f"the registry on port {port} does not answer inside {self.name}")

    def end_forwards(self) -> None:
        for process in self._forwards:
            if process.poll() is None:
                process.terminate()
                with contextlib.suppress(subprocess.TimeoutExpired):
                    process.wait(10)
            if process.poll() is None:
                process.kill()
                process.wait(10)
        self._forwards.clear()

    # -- taking it down, and back

    @contextlib.contextmanager
    def down(self) -> Iterator[None]:
        """The build host stops answering (the container stopped: its published ports refuse), and
        comes back afterwards (at new ports, with new host keys, which known_hosts then holds)."""
        self.end_forwards()
        run("docker", "stop", "-t", "5", self.name)
        try:
            yield
        finally:
            run("docker", "start", self.name)
            self.ssh_port = self._published(22)
            self.tcp_port = self._published(2375)
            self._wait_for_engine()
            host_key = self.exec("cat", "/etc/ssh/ssh_host_ed25519_key.pub").split()[:2]
            self.known_hosts.write_text(f"[127.0.0.1]:{self.ssh_port} {' '.join(host_key)}\n")

    def remove(self) -> None:
        self.end_forwards()
        run("docker", "rm", "-f", "-v", self.name, check=False)
        # The nested engine's container cgroups (--cgroup-parent /NAME), empty once it is gone.
        for top in glob.glob(f"/sys/fs/cgroup/*/{self.name}") + glob.glob(f"/sys/fs/cgroup/{self.name}"):
            for folder, _, _ in sorted(os.walk(top), key=lambda entry: -len(entry[0])):
                with contextlib.suppress(OSError):
                    os.rmdir(folder)


def make_tls(folder: Path) -> None:
    """A CA, a server certificate for 127.0.0.1 and a client certificate (openssl), as Docker's
    "Protect the Docker daemon socket" guide makes them: ca.pem, server.pem, server-key.pem, cert.pem, key.pem."""
    folder.mkdir(parents=True, exist_ok=True)

    def openssl(*arguments: str) -> None:
        subprocess.run(["openssl", *arguments], cwd=folder, check=True, capture_output=True, timeout=60)

    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=hookdeploy test CA",
            "-keyout", "ca-key.pem", "-out", "ca.pem")
    for name, subject, extensions in (
            ("server", "/CN=127.0.0.1", "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n"),
            ("client", "/CN=hookdeploy", "extendedKeyUsage=clientAuth\n")):
        (folder / f"{name}.ext").write_text(extensions)
        openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", subject, "-keyout", f"{name}-key.pem",
                "-out", f"{name}.csr")
        openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca-key.pem", "-CAcreateserial",
                "-days", "2", "-extfile", f"{name}.ext", "-out", f"{name}.pem")
    (folder / "client.pem").rename(folder / "cert.pem")
    (folder / "client-key.pem").rename(folder / "key.pem")
    for path in folder.iterdir():
        path.chmod(0o644)  # dockerd in the container reads them as root; a test rig


def ensure_node_image() -> None:
    """hookdeploy-node:local as scripts/cluster.sh makes it (debootstrap, once)."""
    completed = subprocess.run(["bash", str(CLUSTER_SH), "image"], capture_output=True, text=True, timeout=900,
                               stdin=subprocess.DEVNULL,
                               env={key: value for key, value in os.environ.items() if key != "DOCKER_HOST"})
    if completed.returncode != 0:
        raise RuntimeError(f"scripts/cluster.sh image failed: {completed.stderr[-2000:]}")


def _started(root: Path, tls: bool) -> BuildHost:
    if os.geteuid() != 0:
        unavailable("the build host rig needs root (a privileged container, debootstrap)")
    for program in ("ssh", "ssh-keygen", "openssl"):
        if shutil.which(program) is None:
            unavailable(f"{program} is not installed; run scripts/ensure-tools.sh")
    ensure_node_image()
    host = BuildHost(root, tls=tls)
    try:
        host.start()
    except BaseException:
        host.remove()
        raise
    return host


@pytest.fixture(scope="module")
def build_host(docker_engine, tmp_path_factory) -> Iterator[BuildHost]:
    """A running build host (ssh, and plain tcp), removed at the end of the module."""
    host = _started(tmp_path_factory.mktemp("buildhost"), tls=False)
    try:
        yield host
    finally:
        host.remove()


@pytest.fixture(scope="module")
def tls_build_host(docker_engine, tmp_path_factory) -> Iterator[BuildHost]:
    """A running build host whose tcp port is TLS with client certificates (`.tls`: ca.pem, cert.pem, key.pem)."""
    host = _started(tmp_path_factory.mktemp("tlsbuildhost"), tls=True)
    try:
        yield host
    finally:
        host.remove()
