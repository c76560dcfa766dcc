"""The front nginx proxy: one server block per app in a bind-mounted conf.d, switched atomically.

A switch writes the app's file to a temp name and renames it over the old one (nginx reads
whole files only on reload), tests the whole config with `nginx -t`, then reloads gracefully:
old workers finish the requests they hold while new ones take the new upstream. Switches are
serialised across apps and processes by a lock file beside conf.d. A deploy may test its file
before that, beside the candidate's health check (Pretest): then the switch is a rename and a
reload signal, as long as conf.d is still exactly what was tested.

Owns the files of conf.d and what they say: `render` (an app's server blocks, with the addresses
they route to kept as a data line that `routed` reads back), `switch`, `switch_back`, the locks.
It knows no certificate (certs.render_routes hands it the app's) and no release; of Docker it only
execs in and signals the proxy container it is handed. Imports hookdeploy.core and traffic.py.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import signal
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Mapping, Sequence

import docker

from hookdeploy.core import private
from hookdeploy.core.config import AppConfig, Config
from hookdeploy.core.errors import StepFailed
from hookdeploy.core.models import release_tag
from hookdeploy.engine import traffic

DEFAULT_SERVER_FILE = "00-default.conf"
HTTP_SETTINGS_FILE = "00-http.conf"
# nginx's default bucket (64 bytes, on most CPUs) rejects server names of about 47 characters
# or more; 128 takes any hostname a person would use.
# TLS: 1.2 and 1.3 only, forward-secret AEAD ciphers (Mozilla's "intermediate" set, without DHE).
HTTP_SETTINGS = ("# written by hookdeploy: http-level settings for the app server blocks\n"
                 "server_names_hash_bucket_size 128;\n"
                 "ssl_protocols TLSv1.2 TLSv1.3;\n"
                 "ssl_ciphers ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384:"
                 "ECDHE-RSA-AES256-GCM-SHA384:ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305;\n"
                 "ssl_prefer_server_ciphers off;\n"
                 "ssl_session_cache shared:hookdeploy_tls:10m;\n"
                 "ssl_session_timeout 1d;\n"
                 "ssl_session_tickets off;\n"
                 f"{traffic.LOG_FORMAT}\n")
# Beside the server blocks in conf.d (nginx includes only conf.d/*.conf): the PEMs it serves (key and
# full chain in one file, so one rename switches both) and the HTTP-01 answers, under /etc/nginx/conf.d.
CERTS_DIR = "certs"
CHALLENGE_DIR = "acme-challenge"
IN_PROXY = "/etc/nginx/conf.d"
CHALLENGE_LOCATION = (f"    location ^~ /.well-known/acme-challenge/ {{\n"
                      f"        alias {IN_PROXY}/{CHALLENGE_DIR}/;\n"
                      f"        default_type text/plain;\n"
                      f"    }}\n")
HSTS_SECONDS = 31536000  # a year
ROUTES_MARK = "# routes: "  # the line of an app's file that keeps what it routes to, as JSON

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

# A test before the switch copies conf.d's files, with the app's new one, to a folder nginx does not
# read, and runs `nginx -t` on a copy of nginx.conf whose conf.d include names that folder. Only the
# stock include line is swapped: a proxy image that reads conf.d some other way is tested in the switch.
INCLUDE_LINE = "include /etc/nginx/conf.d/*.conf;"
UNTESTABLE = 3  # the exit status that says so
STAGED_KEPT_SECONDS = 600  # a staging folder older than this is a leftover, no test's
RELOAD_WAIT_SECONDS = 5.0  # as RELOAD_AND_WAIT: how long a signalled reload is waited for


def conf_dir(config: Config) -> Path:
    """The host directory bind-mounted as the proxy's /etc/nginx/conf.d."""
    return Path(config.server.state_dir) / "proxy" / "conf.d"


def app_file(config: Config, app: str) -> Path:
    """The file holding an app's server block."""
    return conf_dir(config) / f"app-{app}.conf"


@dataclass(frozen=True)
class Tls:
    """How an app is served over HTTPS: the certificates it has now and what its HTTP side does."""

    port: int  # proxy.publish_tls's port, where redirects send visitors
    certificates: Mapping[str, str] = field(default_factory=dict)  # server name ("_": default) -> PEM in the proxy
    redirect: bool = True  # http:// of a name with a certificate answers 308 to https://
    hsts: bool = False


@dataclass(frozen=True)
class Canary:
    """A share of requests for the candidate while the live release keeps the rest."""

    addresses: Sequence[str]
    sha: str
    percent: float


def render(app: AppConfig, addresses: Sequence[str], sha: str, tls: Tls | None = None,
           canary: Canary | None = None) -> str:
    """The app's server blocks, routing to the release's container or tasks and naming the release.

    With several addresses (replicas, a swarm release's tasks) nginx spreads requests over them and
    hands a request whose connection fails to the next one, after a short connect timeout: a task
    on a node that just vanished costs a retry, not a failed request. Every server block answers
    ACME's HTTP-01 challenges from the files the worker writes, whether the app answers or not.
    With `tls`, each certificate gets a server block on 443 for the names it covers, and a name
    with a certificate is redirected from http:// unless the app said not to. With `canary`, that
    share of requests (drawn per request) goes to the candidate's addresses instead. Every request
    is logged for the guard and /metrics (engine/traffic.py). The file's second line keeps the addresses
    it routes to as data (ROUTES_MARK and JSON), read back by `routed`: what the engine routed, never
    parsed out of the nginx directives."""
    connect_timeout = "5s" if len(addresses) == 1 and (canary is None or len(canary.addresses) == 1) else "2s"
    upstream = f"hookdeploy_{app.name.replace('-', '_')}"
    pools = _upstream(upstream, addresses, app.port)
    target, release = upstream, release_tag(sha)
    if canary is not None:
        pools += _upstream(f"{upstream}_canary", canary.addresses, app.port)
        pools += (f"split_clients \"${{request_id}}\" ${upstream}_pool {{\n    {canary.percent:g}% {upstream}_canary;\n"
                  f"    * {upstream};\n}}\n"
                  f"map ${upstream}_pool ${upstream}_release {{\n    {upstream}_canary {release_tag(canary.sha)};\n"
                  f"    default {release_tag(sha)};\n}}\n")
        target, release = f"${upstream}_pool", f"${upstream}_release"
    names = list(app.hostnames) or ["_"]
    certificates = {name: pem for name, pem in (tls.certificates if tls else {}).items() if name in names}
    redirected = [name for name in names if name in certificates] if tls and tls.redirect else []
    plain = [name for name in names if name not in redirected]
    log = f"    access_log {traffic.in_proxy(app.name)} hookdeploy_json;\n"
    location = _location(target, release, connect_timeout, app, hsts=False)
    blocks = []
    if plain:
        blocks.append(_server(_listen(80, plain), plain, location, log))
    if redirected:
        port = "" if tls.port == 443 else f":{tls.port}"
        blocks.append(_server(_listen(80, redirected), redirected,
                              f"    location / {{\n        return 308 https://$host{port}$request_uri;\n    }}\n", log))
    for pem in dict.fromkeys(certificates.values()):
        covered = [name for name in names if certificates.get(name) == pem]
        blocks.append(_server(_listen(443, covered), covered, _location(target, release, connect_timeout, app, tls.hsts),
                              f"    ssl_certificate {pem};\n    ssl_certificate_key {pem};\n" + log))
    return (f"# written by hookdeploy: {app.name} @ {release_tag(sha)}; edits are overwritten on the next deploy\n"
            + ROUTES_MARK + json.dumps({"addresses": list(addresses), "port": app.port}) + "\n"
            + pools + "".join(blocks))


def _upstream(name: str, addresses: Sequence[str], port: int) -> str:
    servers = "".join(f"    server {ip}:{port};\n" for ip in addresses)
    return f"upstream {name} {{\n{servers}    keepalive 32;\n}}\n"


def _listen(port: int, names: Sequence[str]) -> str:
    options = " ssl http2" if port == 443 else ""
    return f"listen {port}{options}{' default_server' if names == ['_'] else ''};"


def _server(listen: str, names: Sequence[str], location: str, settings: str = "") -> str:
    # server_tokens here, not at http level, where an image's own nginx.conf may set it already
    # (a duplicate would fail `nginx -t`): no nginx version in the Server header and error pages.
    return f"""
server {{
    {listen}
    server_name {" ".join(names)};
{settings}    client_max_body_size 64m;
    server_tokens off;
{CHALLENGE_LOCATION}{location}}}
"""


def _location(target: str, release: str, connect_timeout: str, app: AppConfig, hsts: bool) -> str:
    """`location /`: the request handed to the release (an upstream, or the canary split's choice),
    its answer naming it."""
    strict = f"        add_header Strict-Transport-Security \"max-age={HSTS_SECONDS}\" always;\n" if hsts else ""
    return f"""    location / {{
        proxy_pass http://{target};
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
        add_header X-Hookdeploy-Release {release} always;
{strict}    }}
"""


def nginx_time(seconds: float) -> str:
    """Seconds as nginx writes a time: 60 -> "60s", 2.5 -> "2500ms"."""
    milliseconds = max(1, round(seconds * 1000))
    return f"{milliseconds // 1000}s" if milliseconds % 1000 == 0 else f"{milliseconds}ms"


def render_default_server(http: bool, https: bool) -> str:
    """Catch-alls for requests no app's names match: 404 on HTTP (challenges still answered, so a
    hostname gets its certificate before it is first routed), a refused handshake on HTTPS."""
    text = "# written by hookdeploy: requests for no configured hostname\n"
    if http:
        text += _server("listen 80 default_server;", ["_"], "    location / {\n        return 404;\n    }\n")
    if https:
        text += ("\nserver {\n    listen 443 ssl http2 default_server;\n    server_name _;\n"
                 "    ssl_reject_handshake on;\n}\n")
    return text


def prepare(config: Config) -> None:
    """Create conf.d (with the folders for certificates and challenge answers) and keep the
    http-level settings and the catch-all servers in step with the config."""
    directory = conf_dir(config)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / CERTS_DIR).mkdir(mode=0o700, exist_ok=True)
    (directory / CHALLENGE_DIR).mkdir(mode=0o755, exist_ok=True)
    for readable in (directory, directory / CHALLENGE_DIR):  # by nginx's workers, whatever our umask was
        if readable.stat().st_mode & 0o755 != 0o755:
            os.chmod(readable, 0o755)
    for staged in directory.glob(".staged-*"):  # a worker killed during a test before the switch left it
        with contextlib.suppress(OSError):
            if staged.stat().st_mtime < time.time() - STAGED_KEPT_SECONDS:
                shutil.rmtree(staged)
    traffic.log_dir(config).mkdir(exist_ok=True)
    for app in config.apps:
        # Made here, so they are hookdeploy's to empty (nginx, as root, would make them root's); 0600:
        # nginx's master opens them as root in its container, and no other user of the host need read them.
        private.file(traffic.log_path(config, app))
    if read(directory / HTTP_SETTINGS_FILE) != HTTP_SETTINGS:
        write_atomically(directory / HTTP_SETTINGS_FILE, HTTP_SETTINGS)
    default = directory / DEFAULT_SERVER_FILE
    default_app = next((app for app in config.apps.values() if not app.hostnames), None)
    http = default_app is None
    https = bool(config.proxy.publish_tls) and (default_app is None or default_app.tls_mode != "files")
    if http or https:
        text = render_default_server(http, https)
        if read(default) != text:
            write_atomically(default, text)
    else:
        default.unlink(missing_ok=True)


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


def write_atomically(path: Path, data: str | bytes, mode: int = 0o644) -> None:
    """Replace `path` with `data` through a temp file and rename, so readers see old or new, whole;
    the file gets `mode` (0600 for keys) before it takes the name."""
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".swp")  # made 0600
    try:
        with os.fdopen(handle, "wb") as file:
            file.write(data.encode() if isinstance(data, str) else data)
            file.flush()
            os.fsync(file.fileno())
        os.chmod(temporary, mode)
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
        raise StepFailed(_rejection(output.decode(errors="replace")))


def _rejection(text: str) -> str:
    """nginx -t's complaint in one line."""
    lines = [line for line in text.splitlines() if "emerg" in line or "failed" in line or "error" in line]
    return f"nginx rejected the config: {' / '.join(lines) or text.strip()}"


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


def switch_back(proxy, path: Path, previous: str | None) -> None:
    """Switch an app back to the routes it had (`previous`, what `switch` returned: None for no file)
    and reload gracefully; nginx accepted that config before. Call with the lock held."""
    restore(path, previous)
    reload(proxy)


@dataclass(frozen=True)
class Staged:
    """What a test before the switch found: `text` as `path` beside conf.d as it was then (`state`),
    accepted, or refused with nginx's message."""

    path: Path
    text: str
    state: tuple
    refused: str | None = None


def conf_state(directory: Path) -> tuple:
    """What of conf.d a config test reads: each *.conf's name and text, and each certificate's name and
    identity (certificates are only ever replaced by a rename, so a new one is a new inode)."""
    files = tuple(sorted((each.name, read(each)) for each in directory.glob("*.conf")))
    certificates = []
    with contextlib.suppress(FileNotFoundError):
        for entry in os.scandir(directory / CERTS_DIR):
            with contextlib.suppress(FileNotFoundError):
                stat = entry.stat(follow_symlinks=False)
                certificates.append((entry.name, stat.st_ino, stat.st_mtime_ns, stat.st_size))
    return files, tuple(sorted(certificates))


def test_staged(proxy, path: Path, text: str) -> Staged | None:
    """`nginx -t` of conf.d as it is now with `text` as `path`, on copies nginx does not serve from: nothing
    live changes, so no lock is needed. None if this proxy cannot be tested so."""
    directory = path.parent
    state = conf_state(directory)
    staging = Path(tempfile.mkdtemp(dir=directory, prefix=".staged-"))
    inside = f"{IN_PROXY}/{staging.name}"
    main = f"/etc/nginx/.hookdeploy{staging.name}.conf"  # beside nginx.conf: its relative includes still resolve
    try:
        os.chmod(staging, 0o755)
        files = {name: content for name, content in state[0] if content is not None}
        files[path.name] = text
        for name, content in files.items():
            (staging / name).write_text(content)
        escaped = INCLUDE_LINE.replace("*", "\\*")
        code, output = proxy.exec_run(["sh", "-c", (
            f"grep -qF '{INCLUDE_LINE}' /etc/nginx/nginx.conf || exit {UNTESTABLE}; "
            f"sed 's#{escaped}#include {inside}/*.conf;#' /etc/nginx/nginx.conf > {main} || exit {UNTESTABLE}; "
            f"nginx -t -q -c {main}; status=$?; rm -f {main}; exit $status")])
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    if code == UNTESTABLE:
        return None
    said = output.decode(errors="replace").replace(inside + "/", IN_PROXY + "/").replace(main, "/etc/nginx/nginx.conf")
    refused = None if code == 0 else _rejection(said)
    return Staged(path, text, state, refused)


def placeholders(count: int) -> list[str]:
    """Stand-ins for a candidate's addresses before it has any (TEST-NET-1, RFC 5737, never routed): nginx -t
    judges a file's syntax, certificates and includes, which do not depend on which addresses it names, so
    routes rendered with these test as the real ones will."""
    return [f"192.0.2.{number}" for number in range(1, count + 1)]


class Pretest:
    """test_staged() in a thread, started before the candidate runs (with placeholders() for its addresses),
    so that it runs beside the candidate's start and health check; result() waits for it (None if it could
    not run)."""

    def __init__(self, proxy, path: Path, text: str):
        self._staged: Staged | None = None
        self._thread = threading.Thread(target=self._run, args=(proxy, path, text), daemon=True,
                                        name="hookdeploy-pretest")
        self._thread.start()

    def _run(self, proxy, path: Path, text: str) -> None:
        with contextlib.suppress(Exception):  # the switch then tests as it always did
            self._staged = test_staged(proxy, path, text)

    def result(self) -> Staged | None:
        self._thread.join()
        return self._staged


def switch_tested(proxy, staged: Staged | None, path: Path, text: str, tested_as: str | None = None) -> str | None:
    """switch(), without testing again when `staged` tested exactly `text` (or `tested_as`: the same routes
    with stand-in addresses, see placeholders()) as `path` beside conf.d as it is now: rename, SIGHUP to the
    proxy's nginx, wait until the workers from before stop taking connections.

    A refusal is StepFailed with nginx's message, nothing changed. If conf.d changed since the test (another
    app's switch, a certificate) or the proxy's nginx cannot be signalled, switch() tests in the switch as
    before. Call with the lock held."""
    if staged is None or staged.path != path or staged.text not in (text, tested_as) \
            or conf_state(path.parent) != staged.state:
        return switch(proxy, path, text)
    if staged.refused is not None:
        raise StepFailed(staged.refused)
    workers = nginx_workers(proxy)
    if workers is None:
        return switch(proxy, path, text)
    previous = read(path)
    write_atomically(path, text)
    try:
        proxy.kill(signal="HUP")
    except docker.errors.APIError as error:
        restore(path, previous)
        raise StepFailed(f"cannot signal the proxy to reload: {error.explanation or error}") from None
    wait_retired(proxy, workers)
    return previous


def nginx_workers(proxy) -> set[str] | None:
    """The host PIDs of the proxy's nginx workers that take connections, if its main process (what a
    signal to the container reaches) is nginx's master; else None."""
    processes = _processes(proxy)
    if processes is None or not processes.get(_main_pid(proxy), "").startswith("nginx: master process"):
        return None
    return {pid for pid, command in processes.items() if command == "nginx: worker process"}


def wait_retired(proxy, workers: set[str]) -> None:
    """Wait (up to RELOAD_WAIT_SECONDS, as RELOAD_AND_WAIT) until none of `workers` takes new connections:
    each is gone or shutting down.

    nginx's master tells the old workers to shut down 0.1 s after it started the new ones (it sleeps to
    "allow new processes to start"). Where the engine runs here and we may signal its processes, the old
    workers are told as soon as a new one exists instead, with the signal nginx documents for a worker's
    graceful shutdown (QUIT: it stops accepting and finishes the requests it holds, exactly what the
    master's own signal does). The listening sockets are the master's, inherited by every worker, so a
    connection that arrives in between waits in their backlog for a new worker; none is refused."""
    deadline = time.monotonic() + RELOAD_WAIT_SECONDS
    told = False
    while time.monotonic() < deadline:
        processes = _processes(proxy)
        if processes is None:
            return
        serving = {pid for pid, command in processes.items() if command == "nginx: worker process"}
        if not serving & workers:
            return
        if not told and serving - workers and _engine_is_here():
            told = _quit(serving & workers, processes)
        time.sleep(0.005)


def _engine_is_here() -> bool:
    """True if the engine's PIDs are this machine's (its socket is local), so that /proc and signals reach
    its processes."""
    host = os.environ.get("DOCKER_HOST", "")
    return host == "" or host.startswith("unix://")


def _quit(pids: set[str], seen: dict[str, str]) -> bool:
    """SIGQUIT to each of `pids` that is still the nginx worker it was seen as; False if we may not."""
    for pid in pids:
        if _command_line(pid) != seen.get(pid):  # gone, or its PID already another process's
            continue
        try:
            os.kill(int(pid), signal.SIGQUIT)
        except ProcessLookupError:
            continue
        except PermissionError:  # not root, nor the proxy's user: the master tells them, 0.1 s later
            return False
    return True


def _main_pid(proxy) -> str:
    return str((proxy.attrs.get("State") or {}).get("Pid"))


def _processes(proxy) -> dict[str, str] | None:
    """The proxy's main process and its children, host PID -> command line; None if it cannot say. Read
    from /proc when the engine runs here (a millisecond), else asked of the engine (`docker top`, ~20 ms)."""
    main = _main_pid(proxy)
    try:
        children = Path(f"/proc/{main}/task/{main}/children").read_text().split()
        processes = {pid: _command_line(pid) for pid in [main, *children]}
        if (processes[main] or "").startswith("nginx: master process"):
            return {pid: command for pid, command in processes.items() if command is not None}
    except OSError:
        pass
    try:
        return {str(row[0]): row[1] for row in proxy.top(ps_args="-o pid,args")["Processes"]}
    except (docker.errors.APIError, KeyError, IndexError, TypeError):
        return None


def _command_line(pid: str) -> str | None:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:  # gone
        return None


def routes_exactly(path: Path, addresses: Sequence[str], port: int) -> bool:
    """True if the app's file sends traffic to those addresses on `port`, and nowhere else."""
    return set(routed(path)) == {f"{ip}:{port}" for ip in addresses}


def routed_addresses(path: Path) -> list[str]:
    """The addresses (without port) the app's file sends traffic to, in its order."""
    return [server.rpartition(":")[0] for server in routed(path)]


def routed(path: Path) -> list[str]:
    """The `ip:port` servers the app's file sends traffic to, in its order, as `render` recorded them
    (none if there is no file, or it routes to no release: a maintenance page, a file written by a
    version before this record, which the worker's repair at its start writes again)."""
    return routed_in(read(path))


def routed_in(text: str | None) -> list[str]:
    """routed() of a file's text."""
    for line in (text or "").splitlines()[:3]:
        if line.startswith(ROUTES_MARK):
            try:
                data = json.loads(line.removeprefix(ROUTES_MARK))
                return [f"{ip}:{int(data['port'])}" for ip in data["addresses"]]
            except (ValueError, KeyError, TypeError):  # edited by hand: the repair writes it again
                return []
    return []
    return []
