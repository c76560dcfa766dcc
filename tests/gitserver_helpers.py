"""Private git servers for the tests of `repo_key_file`, `repo_host_key` and `repo_token_env`.

GitSshd: a real sshd (in a container of scripts/cluster.sh's node image hookdeploy-node:local, as the build
host rig runs one) serving a bare repo of the test over ssh, to the test's key only. The node image has no
git: this machine's git (the same Debian 12) is mounted in. The repo folder is mounted too, so the test
commits here and the container serves it. `rekey()` gives sshd new host keys (a changed host key), `restore()`
the old ones back.

GitHttp: `git http-backend` behind a small WSGI app on waitress, on a free port, that answers 401 unless the
request carries `Authorization: Basic` with the token; while a request is served it looks through every
process's command line (/proc/*/cmdline) for the token, which must never be there.
"""

from __future__ import annotations

import base64
import hmac
import os
import secrets
import shutil
import subprocess
import threading
import time
from pathlib import Path

from buildhost_helpers import LABEL, NODE_IMAGE, ensure_node_image, run
from docker_helpers import Repo, free_port, unavailable

START = r"""
set -e
ssh-keygen -A >/dev/null
mkdir -p /run/sshd /root/.ssh
chmod 700 /root/.ssh
printf '%s\n' "$AUTHORIZED_KEY" > /root/.ssh/authorized_keys
chmod 600 /root/.ssh/authorized_keys
exec /usr/sbin/sshd -D -e -o PasswordAuthentication=no -o PermitRootLogin=prohibit-password
"""


def keygen(path: Path) -> Path:
    """A new ed25519 key pair at `path` (and path.pub), mode 0600, no passphrase."""
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "hookdeploy-test", "-f", str(path)],
                   check=True, capture_output=True, timeout=30)
    return path


class GitSshd:
    """A running sshd serving `repo` (a docker_helpers.Repo) at /srv/git/repo.git to `key`."""

    def __init__(self, root: Path):
        self.root = root
        self.name = f"hdgitssh-{secrets.token_hex(4)}"
        self.key = root / "deploy_key"
        self.repo: Repo | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"ssh://root@127.0.0.1:{self.port}/srv/git/repo.git"

    @property
    def known_host(self) -> str:
        """sshd's ed25519 host key as a known_hosts line (as `ssh-keyscan -p PORT 127.0.0.1` prints it)."""
        key = self.exec("cat", "/etc/ssh/ssh_host_ed25519_key.pub").split()[:2]
        return f"[127.0.0.1]:{self.port} {' '.join(key)}"

    def start(self) -> "GitSshd":
        if os.geteuid() != 0:
            unavailable("the git sshd rig needs root (debootstrap of the node image)")
        if shutil.which("ssh") is None:
            unavailable("ssh is not installed; run scripts/ensure-tools.sh")
        ensure_node_image()
        keygen(self.key)
        self.repo = Repo.create(self.root / "git")
        git = shutil.which("git")
        run("docker", "run", "-d", "--name", self.name, "--label", LABEL, "-p", "127.0.0.1::22",
            "-v", f"{git}:/usr/bin/git:ro", "-v", f"{git}:/usr/bin/git-upload-pack:ro",
            "-v", "/usr/lib/git-core:/usr/lib/git-core:ro", "-v", "/usr/share/git-core:/usr/share/git-core:ro",
            "-v", f"{self.root / 'git'}:/srv/git:ro",
            "-e", f"AUTHORIZED_KEY={self.key.with_suffix('.pub').read_text().strip()}",
            NODE_IMAGE, "bash", "-c", START)
        text = run("docker", "port", self.name, "22/tcp").stdout.decode().split()[0]
        self.port = int(text.rpartition(":")[2])
        self._wait()
        return self

    def _wait(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            scanned = subprocess.run(["ssh-keyscan", "-T", "2", "-t", "ed25519", "-p", str(self.port), "127.0.0.1"],
                                     capture_output=True, text=True, timeout=10)
            if "ssh-ed25519" in scanned.stdout:
                return
            time.sleep(0.2)
        logs = run("docker", "logs", "--tail", "15", self.name, check=False).stderr.decode(errors="replace")
        raise RuntimeError(f"sshd in {self.name} does not answer: {logs}")

    def exec(self, *command: str) -> str:
        return run("docker", "exec", self.name, *command).stdout.decode(errors="replace")

    def rekey(self) -> None:
        """New host keys (the old ones kept aside), picked up by sshd for the next connection."""
        self.exec("sh", "-c", "mkdir -p /root/old && cp -p /etc/ssh/ssh_host_* /root/old/ && "
                              "rm /etc/ssh/ssh_host_* && ssh-keygen -A >/dev/null")

    def restore(self) -> None:
        """The host keys from before `rekey`."""
        self.exec("sh", "-c", "cp -p /root/old/ssh_host_* /etc/ssh/")

    def remove(self) -> None:
        run("docker", "rm", "-f", "-v", self.name, check=False)


class GitHttp:
    """`git http-backend` over HTTP on 127.0.0.1:port, for the bare repos under `root`, behind a token."""

    def __init__(self, root: Path, token: str, user: str = "x-access-token"):
        self.root, self.token = root, token
        self.expected = "Basic " + base64.b64encode(f"{user}:{token}".encode()).decode()
        self.port = free_port()
        self.requests: list[tuple[str, int]] = []  # (path, status)
        self.leaks: list[str] = []  # command lines that held the token
        self._server = None

    def url(self, name: str = "repo.git") -> str:
        return f"http://127.0.0.1:{self.port}/{name}"

    def __call__(self, environ, start_response):
        self.leaks += _command_lines_with(self.token)
        offered = environ.get("HTTP_AUTHORIZATION", "")
        if not hmac.compare_digest(offered.encode(), self.expected.encode()):
            self.requests.append((environ["PATH_INFO"], 401))
            start_response("401 Unauthorized", [("WWW-Authenticate", 'Basic realm="git"'),
                                                ("Content-Type", "text/plain")])
            return [b"token required\n"]
        env = {"PATH": os.environ["PATH"], "GIT_PROJECT_ROOT": str(self.root), "GIT_HTTP_EXPORT_ALL": "1",
               "PATH_INFO": environ["PATH_INFO"], "REQUEST_METHOD": environ["REQUEST_METHOD"],
               "QUERY_STRING": environ.get("QUERY_STRING", ""), "CONTENT_TYPE": environ.get("CONTENT_TYPE", ""),
               "REMOTE_ADDR": "127.0.0.1", "REMOTE_USER": "test"}
        for name in ("HTTP_GIT_PROTOCOL", "HTTP_CONTENT_ENCODING"):
            if name in environ:
                env[name] = environ[name]
        body = environ["wsgi.input"].read()
        env["CONTENT_LENGTH"] = str(len(body))
        output = subprocess.run(["git", "http-backend"], input=body, env=env, capture_output=True, timeout=60).stdout
        head, _, content = output.partition(b"\r\n\r\n")
        status, headers = "200 OK", []
        for line in head.decode("latin-1").split("\r\n"):
            name, _, value = line.partition(":")
            if name.lower() == "status":
                status = value.strip()
            elif name:
                headers.append((name, value.strip()))
        self.requests.append((environ["PATH_INFO"], int(status.split()[0])))
        start_response(status, headers)
        return [content]

    def start(self) -> "GitHttp":
        from waitress.server import create_server

        self._server = create_server(self, host="127.0.0.1", port=self.port, threads=4)
        threading.Thread(target=self._server.run, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.close()


def _command_lines_with(text: str) -> list[str]:
    """The command lines of this machine's processes that contain `text`."""
    found, needle = [], text.encode()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                line = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            if needle in line:
                found.append(line.replace(b"\0", b" ").decode(errors="replace"))
    return found
