"""The front nginx proxy: one server block per app in a bind-mounted conf.d, switched atomically.

A switch writes the app's file to a temp name and renames it over the old one (nginx reads
whole files only on reload), tests the whole config with `nginx -t`, then reloads gracefully:
old workers finish the requests they hold while new ones take the new upstream. Switches are
serialised across apps and processes by a lock file beside conf.d.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import tempfile
from pathlib import Path
from typing import Iterator, Sequence

from hookdeploy.core.config import AppConfig, Config
from hookdeploy.core.errors import StepFailed

DEFAULT_SERVER_FILE = "00-default.conf"
HTTP_SETTINGS_FILE = "00-http.conf"
# nginx's default bucket (64 bytes, on most CPUs) rejects server names of about 47 characters
# or more; 128 takes any hostname a person would use.
HTTP_SETTINGS = ("# written by hookdeploy: http-level settings for the app server blocks\n"
                 "server_names_hash_bucket_size 128;\n")

# `nginx -s reload` returns before the old workers stop accepting: for ~0.1 s both generations
# answer new connections. Wait (up to 5 s) until every worker from before the reload is shutting
# down (it closes its listening sockets as it says so) or gone, so that once a switch returns,
# every new connection gets the new config. The [s]/[n] keep this script from matching itself.
RELOAD_AND_WAIT = (
    'old=$(grep -ls "nginx: worker proces[s]" /proc/[0-9]*/cmdline); '
    'nginx -s reload || exit 1; '
    'i=0; while [ $i -lt 250 ]; do busy=; '
    'for f in $old; do [ -e "$f" ] && ! grep -qs "shutting dow[n]" "$f" && busy=1; done; '
    '[ -z "$busy" ] && exit 0; i=$((i+1)); sleep 0.02; done')


def conf_dir(config: Config) -> Path:
    """The host directory bind-mounted as the proxy's /etc/nginx/conf.d."""
    return Path(config.server.state_dir) / "proxy" / "conf.d"


def app_file(config: Config, app: str) -> Path:
    """The file holding an app's server block."""
    return conf_dir(config) / f"app-{app}.conf"


def render(app: AppConfig, addresses: Sequence[str], sha: str) -> str:
    """The app's server block, routing to the release's container or tasks and naming the release.

    With several addresses (a swarm release's tasks) nginx spreads requests over them and hands a
    request whose connection fails to the next one, after a short connect timeout: a task on a
    node that just vanished costs a retry, not a failed request."""
    servers = "".join(f"    server {ip}:{app.port};\n" for ip in addresses)
    connect_timeout = "5s" if len(addresses) == 1 else "2s"
    if app.hostnames:
        listen, names = "listen 80;", " ".join(app.hostnames)
    else:
        listen, names = "listen 80 default_server;", "_"
    upstream = f"hookdeploy_{app.name.replace('-', '_')}"
    return f"""# written by hookdeploy: {app.name} @ {sha[:12]}; edits are overwritten on the next deploy
upstream {upstream} {{
{servers}    keepalive 32;
}}

server {{
    {listen}
    server_name {names};
    client_max_body_size 64m;

    location / {{
        proxy_pass http://{upstream};
        proxy_http_version 1.1;
        proxy_set_header Connection "";
        proxy_set_header Host $host;
        proxy_set_header X-Real-IP $remote_addr;
        proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
        proxy_set_header X-Forwarded-Proto $scheme;
        proxy_connect_timeout {connect_timeout};
        proxy_send_timeout 60s;
        proxy_read_timeout {nginx_time(app.read_timeout)};
        proxy_next_upstream error timeout;
        add_header X-Hookdeploy-Release {sha[:12]} always;
    }}
}}
"""


def nginx_time(seconds: float) -> str:
    """Seconds as nginx writes a time: 60 -> "60s", 2.5 -> "2500ms"."""
    milliseconds = max(1, round(seconds * 1000))
    return f"{milliseconds // 1000}s" if milliseconds % 1000 == 0 else f"{milliseconds}ms"


def render_default_server() -> str:
    """A catch-all that answers 404 when no app is the default server."""
    return ("# written by hookdeploy: requests for no configured hostname\n"
            "server {\n    listen 80 default_server;\n    server_name _;\n    return 404;\n}\n")


def prepare(config: Config) -> None:
    """Create conf.d and keep the catch-all server in step with the config."""
    directory = conf_dir(config)
    directory.mkdir(parents=True, exist_ok=True)
    if read(directory / HTTP_SETTINGS_FILE) != HTTP_SETTINGS:
        write_atomically(directory / HTTP_SETTINGS_FILE, HTTP_SETTINGS)
    default = directory / DEFAULT_SERVER_FILE
    has_default_app = any(not app.hostnames for app in config.apps.values())
    if has_default_app:
        default.unlink(missing_ok=True)
    elif not default.exists():
        write_atomically(default, render_default_server())


@contextlib.contextmanager
def locked(config: Config, name: str = "switch") -> Iterator[None]:
    """Hold one of the instance's locks across apps and processes (all workers share state_dir).

    "switch": one change to the proxy's routes at a time. "setup": one process at a time creates
    the network and the proxy (Docker allows several networks of one name, and then every
    container start on "the" network fails as ambiguous). Never take one while holding the same."""
    lock_path = conf_dir(config).parent / f"{name}.lock"
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def write_atomically(path: Path, text: str) -> None:
    """Replace `path` with `text` through a temp file and rename, so readers see old or new, whole."""
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".swp")
    try:
        with os.fdopen(handle, "w") as file:
            file.write(text)
            file.flush()
            os.fsync(file.fileno())
        os.chmod(temporary, 0o644)
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise


def read(path: Path) -> str | None:
    """A config file's text, or None if there is none."""
    try:
        return path.read_text()
    except FileNotFoundError:
        return None


def restore(path: Path, previous: str | None) -> None:
    """Put back what a file held before a switch (removing it if it did not exist)."""
    if previous is None:
        path.unlink(missing_ok=True)
    else:
        write_atomically(path, previous)


def test_and_reload(proxy) -> None:
    """`nginx -t`, then a graceful reload (new workers take the new config, old ones finish their
    requests), in one exec; StepFailed with nginx's own message if the config is invalid."""
    code, output = proxy.exec_run(["sh", "-c", "nginx -t -q || exit 1; " + RELOAD_AND_WAIT])
    if code != 0:
        text = output.decode(errors="replace")
        lines = [line for line in text.splitlines() if "emerg" in line or "failed" in line or "error" in line]
        raise StepFailed(f"nginx rejected the config: {' / '.join(lines) or text.strip()}")


def reload(proxy) -> None:
    """Graceful reload of a config that nginx accepted before."""
    code, output = proxy.exec_run(["sh", "-c", RELOAD_AND_WAIT])
    if code != 0:
        raise StepFailed(f"nginx -s reload failed: {output.decode(errors='replace').strip()}")


def switch(proxy, path: Path, text: str) -> str | None:
    """Write an app's new server block, test and reload; return what it replaced.

    If nginx rejects the config the previous file is restored (and nothing reloaded).
    Call with the lock held.
    """
    previous = read(path)
    write_atomically(path, text)
    try:
        test_and_reload(proxy)
    except StepFailed:
        restore(path, previous)
        raise
    return previous


def routes_exactly(path: Path, addresses: Sequence[str], port: int) -> bool:
    """True if the app's file sends traffic to those addresses on `port`, and nowhere else."""
    return set(routed(path)) == {f"{ip}:{port}" for ip in addresses}


def routed(path: Path) -> list[str]:
    """The `ip:port` servers the app's file sends traffic to, in its order (none if there is no file)."""
    servers = re.findall(r"^\s*server (\S+):(\d+);$", read(path) or "", re.MULTILINE)
    return [f"{ip}:{port}" for ip, port in servers]
