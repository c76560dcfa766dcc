"""Builds with BuildKit, through a docker CLI that can drive it.

The docker SDK speaks only the legacy builder's API, so BuildKit is reached the way Docker's own
tools reach it: the docker CLI as a subprocess, against the engine the SDK talks to. Which CLI is
decided once per process (`client()`): the first `docker` on PATH with the buildx plugin (`docker
buildx build`), else the first of version 20.10 to 22.x, whose own `docker build` is BuildKit when
DOCKER_BUILDKIT=1 (Debian 12's docker.io). A CLI of 23 or later without buildx cannot build with
BuildKit at all (it says "the buildx component is missing"), so it is passed over: on a machine where
one comes first on PATH, Debian's /usr/bin/docker next to it still builds.

The CLI's output is followed by streams.py (a stop or the build's timeout ends the CLI, and with it
the build). Imports hookdeploy.core and streams.py; builders.py and buildhost.py call it.
"""

from __future__ import annotations

import collections
import csv
import ctypes
import io
import logging
import os
import queue
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from hookdeploy.core.errors import Aborted, StepFailed
from hookdeploy.engine import streams

log = logging.getLogger(__name__)

LEGACY_VERSIONS = ((20, 10), (23, 0))  # a `docker build` that is BuildKit with DOCKER_BUILDKIT=1: from, before
PROBE_SECONDS = 20.0  # `docker --version` and `docker buildx version` answer in well under a second
CANCEL_GRACE = 5.0  # seconds a CLI told to stop (SIGTERM: it cancels the build) has before SIGKILL
DEFAULT_HOST = "unix:///var/run/docker.sock"  # the docker SDK's engine when DOCKER_HOST is unset
INSTALL = ("apt-get install docker.io (Debian's docker CLI builds with BuildKit), or install the docker "
           "buildx plugin (docker-buildx-plugin); or set [build] builder = \"classic\"")
# Plain progress names each step's cache key on a line of its own: nothing a person reads.
VERTEX_DIGEST = re.compile(r"#\d+ sha256:[0-9a-f]{64}\s*\Z")
PR_SET_PDEATHSIG = 1
_libc = ctypes.CDLL(None, use_errno=True) if sys.platform == "linux" else None


@dataclass(frozen=True)
class Client:
    """A docker CLI that builds with BuildKit."""

    path: str
    version: str
    buildx: str = ""  # the buildx plugin's version when builds go through `docker buildx build`

    def command(self) -> list[str]:
        """The build command, before its options. buildx's own default builder is the engine's
        BuildKit; `--load` puts the image there whichever builder buildx was told to use."""
        return [self.path, "buildx", "build", "--load"] if self.buildx else [self.path, "build"]

    def describe(self) -> str:
        """`/usr/bin/docker 20.10.24, DOCKER_BUILDKIT=1` or `/usr/bin/docker 27.1.1, buildx v0.16.1`."""
        return f"{self.path} {self.version}, " + (f"buildx {self.buildx}" if self.buildx else "DOCKER_BUILDKIT=1")


@dataclass(frozen=True)
class Found:
    """What a search of PATH found: the client to use (or None), and why each CLI before it was passed over."""

    client: Client | None
    passed_over: tuple[str, ...] = ()

    def problem(self) -> str:
        """One line: no BuildKit client, why, and the fix."""
        why = "; ".join(self.passed_over) or "no docker CLI on PATH"
        return f"no BuildKit client ({why}): {INSTALL}"


_found: Client | None = None
_found_lock = threading.Lock()


def client() -> Client:
    """The docker CLI builds go through, found once per process; StepFailed (one line with the fix) if none can."""
    global _found
    with _found_lock:
        if _found is None:
            found = discover()
            if found.client is None:
                raise StepFailed(found.problem())  # looked for again next time: it may be installed by then
            _found = found.client
            log.info("BuildKit builds go through %s", _found.describe())
            for reason in found.passed_over:
                log.info("passed over %s", reason)
        return _found


def forget() -> None:
    """Look for the client again at the next build."""
    global _found
    with _found_lock:
        _found = None


def discover(search_path: str | None = None) -> Found:
    """The first docker CLI on `search_path` ($PATH) that builds with BuildKit, each one found only once."""
    passed_over: list[str] = []
    seen: set[str] = set()
    for directory in (os.environ.get("PATH", os.defpath) if search_path is None else search_path).split(os.pathsep):
        path = shutil.which("docker", path=directory or ".")
        if path is None or os.path.realpath(path) in seen:
            continue
        seen.add(os.path.realpath(path))
        version = _version(path)
        if version is None:
            passed_over.append(f"{path} does not say its version")
            continue
        buildx = _buildx_version(path)
        if buildx:
            return Found(Client(path, version, buildx), tuple(passed_over))
        number = _version_number(version)
        if LEGACY_VERSIONS[0] <= number < LEGACY_VERSIONS[1]:
            return Found(Client(path, version), tuple(passed_over))
        passed_over.append(f"{path} {version} has no buildx plugin" if number >= LEGACY_VERSIONS[1] else
                           f"{path} {version} is older than 20.10")
    return Found(None, tuple(passed_over))


def _version(path: str) -> str | None:
    """The CLI's own version ("Docker version 20.10.24+dfsg1, build 297e128"), asked without the engine."""
    output = _probe([path, "--version"])
    match = re.search(r"version v?(\d+\.\d+[^\s,]*)", output or "")
    return match.group(1) if match else None


def _buildx_version(path: str) -> str:
    """The buildx plugin's version ("github.com/docker/buildx v0.16.1 ..."), or "" when the CLI has none."""
    output = _probe([path, "buildx", "version"])
    match = re.search(r"\sv?(\d+\.\d+\S*)", output or "")
    return ("v" + match.group(1)) if match else ""


def _version_number(version: str) -> tuple[int, int]:
    major, minor = re.match(r"(\d+)\.(\d+)", version).groups()
    return int(major), int(minor)


def _probe(arguments: list[str]) -> str | None:
    """A probe's output, or None if it failed."""
    try:
        completed = subprocess.run(arguments, capture_output=True, text=True, timeout=PROBE_SECONDS,
                                   env=environment(), stdin=subprocess.DEVNULL, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    return completed.stdout


def environment(elsewhere: bool = False) -> dict[str, str]:
    """The CLI's environment: ours (DOCKER_HOST and its TLS settings, the secrets' variables), the
    engine pinned to the one the SDK uses (a CLI context must not send the build elsewhere), BuildKit on.
    `elsewhere`: the engine is named by --host options instead, so ours is left out."""
    env = dict(os.environ)
    env.pop("DOCKER_CONTEXT", None)
    if elsewhere:
        for name in ("DOCKER_HOST", "DOCKER_TLS_VERIFY", "DOCKER_CERT_PATH"):
            env.pop(name, None)
    if not env.get("DOCKER_HOST") and not elsewhere:
        env["DOCKER_HOST"] = DEFAULT_HOST
    env.update(DOCKER_BUILDKIT="1", BUILDKIT_PROGRESS="plain", BUILDX_NO_DEFAULT_ATTESTATIONS="1",
               DOCKER_CLI_HINTS="false")
    return env


def secret_options(secrets: Mapping[str, Any]) -> list[str]:
    """`--secret id=NAME,env=VARIABLE|src=FILE` for each build secret: the CLI reads the value itself,
    so it is never on a command line, in a file of ours, or in this process's output. StepFailed
    naming the secret (never its value) if its variable is unset or its file unreadable."""
    options = []
    for name, secret in secrets.items():
        if secret.from_env:
            if secret.from_env not in os.environ:
                raise StepFailed(f"build secret {name}: environment variable {secret.from_env} is not set "
                                 "(set it in the environment hookdeploy runs with)")
            fields = [f"id={name}", f"env={secret.from_env}"]
        else:
            try:
                with open(secret.from_file, "rb"):
                    pass
            except OSError as error:
                raise StepFailed(f"build secret {name}: cannot read {secret.from_file} "
                                 f"({error.strerror or error})") from None
            fields = [f"id={name}", f"src={secret.from_file}"]
        line = io.StringIO()
        csv.writer(line, lineterminator="").writerow(fields)  # the CLI reads it as CSV: a comma in a path is quoted
        options += ["--secret", line.getvalue()]
    return options


def cache_options(cli: Client, reference: str) -> list[str]:
    """The options that take the build cache from the image `reference` in a registry and put this
    build's cache in the image made (inline), to be pushed there as the next build's `reference`.

    Inline, because it is the one cache export both clients have with the engine's own BuildKit:
    `docker build` of a 20.10-22.x CLI has no --cache-to at all, and buildx's builder on the engine
    (the docker driver) refuses `--cache-to type=registry` ("Cache export feature is currently not
    supported for docker driver") unless the engine stores images in containerd. Inline is mode=min:
    the cache of the image made, not of the stages it copied from."""
    if cli.buildx:
        return ["--cache-to", "type=inline", "--cache-from", f"type=registry,ref={reference}"]
    return ["--build-arg", "BUILDKIT_INLINE_CACHE=1", "--cache-from", reference]


def build(cli: Client, context: Path, dockerfile: str, tag: str, labels: Mapping[str, str],
          build_args: Mapping[str, str], target: str, secrets: Mapping[str, Any], timeout: float,
          on_lines: Callable[[list[str]], None], stop: threading.Event | None = None,
          engine_options: Sequence[str] = (), cache_from: str = "", docker_config: str = "") -> str:
    """Build `tag` with BuildKit, handing its plain progress output to `on_lines` as it comes; return the image id.
    `engine_options` (--host, TLS files) send the build to another engine than ours: a build host.
    `cache_from`: an image in a registry to take the build cache from (and to put it in the image made);
    `docker_config`: the DOCKER_CONFIG folder the CLI logs in to registries with for this build.

    A timeout (StepFailed) or `stop` (Aborted) ends the CLI, and with it the build: the engine
    cancels a build whose client is gone. The CLI dies with this thread too (a worker killed outright)."""
    options = secret_options(secrets)
    handle, iidfile = tempfile.mkstemp(prefix="hookdeploy-iid-")
    os.close(handle)
    command = cli.command()
    arguments = [command[0], *engine_options, *command[1:], "--progress=plain", "--file", str(context / dockerfile), "--tag", tag,
                 "--iidfile", iidfile]
    for key, value in labels.items():
        arguments += ["--label", f"{key}={value}"]
    for key, value in build_args.items():
        arguments += ["--build-arg", f"{key}={value}"]
    if target:
        arguments += ["--target", target]
    if cache_from:
        arguments += cache_options(cli, cache_from)
    arguments += [*options, str(context)]
    env = environment(bool(engine_options))
    if docker_config:
        env["DOCKER_CONFIG"] = docker_config
    try:
        process = subprocess.Popen(arguments, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                   stderr=subprocess.STDOUT, env=env,
                                   start_new_session=True,
                                   preexec_fn=_die_with(os.getpid()))
    except OSError as error:
        Path(iidfile).unlink(missing_ok=True)
        forget()  # removed or replaced since it was found: the next build looks again
        raise StepFailed(f"cannot run {cli.path}: {error.strerror or error}") from None
    chunks: queue.Queue = queue.Queue()
    last_lines: collections.deque = collections.deque(maxlen=20)
    reader = threading.Thread(target=_read, args=(process, chunks, last_lines, _masker(secrets)),
                              name="buildkit-output", daemon=True)
    reader.start()
    try:
        streams.relay(chunks, on_lines, stop, lambda: _end(process, reader), timeout, "build")
        status = process.wait()
        reader.join()
        if status != 0:
            raise _failure(status, list(last_lines), stop)
        image_id = Path(iidfile).read_text().strip() if Path(iidfile).exists() else ""
    finally:
        if process.poll() is None:  # on_lines failed (the store): the build must not go on alone
            _end(process, reader)
        process.stdout.close()
        Path(iidfile).unlink(missing_ok=True)  # the CLI removes it first thing
    if not image_id:
        raise StepFailed(f"build finished but {cli.path} wrote no image id")
    return image_id


def stream(arguments: list[str], env: Mapping[str, str], on_lines: Callable[[list[str]], None], timeout: float,
           stop: threading.Event | None = None, what: str = "push") -> tuple[int, list[str]]:
    """Run another docker CLI command (`what`: a push from a build host) as a build runs: its output to
    `on_lines` as it comes, ended by `stop` (Aborted) or after `timeout` s without a line (StepFailed,
    the rule of a push from this engine); return its status and last lines."""
    try:
        process = subprocess.Popen(arguments, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                   stderr=subprocess.STDOUT, env=dict(env), start_new_session=True,
                                   preexec_fn=_die_with(os.getpid()))
    except OSError as error:
        raise StepFailed(f"cannot run {arguments[0]}: {error.strerror or error}") from None
    chunks: queue.Queue = queue.Queue()
    last_lines: collections.deque = collections.deque(maxlen=20)
    reader = threading.Thread(target=_read, args=(process, chunks, last_lines, lambda line: line),
                              name="docker-cli-output", daemon=True)
    reader.start()
    try:
        streams.relay(chunks, on_lines, stop, lambda: _end(process, reader), timeout, what, quiet=True)
        status = process.wait()
        reader.join()
    finally:
        if process.poll() is None:
            _end(process, reader)
        process.stdout.close()
    return status, list(last_lines)


def _read(process: subprocess.Popen, chunks: queue.Queue, last_lines: collections.deque,
          mask: Callable[[str], str]) -> None:
    """Put the CLI's output on `chunks` a line at a time (None at its end), keeping the last lines for an error."""
    try:
        for raw in process.stdout:
            line = mask(raw.decode(errors="replace"))
            if VERTEX_DIGEST.match(line):
                continue
            if line.strip():
                last_lines.append(line.strip())
            chunks.put(line)
    finally:
        chunks.put(None)


def _masker(secrets: Mapping[str, Any]) -> Callable[[str], str]:
    """A function that hides the build secrets' values in a line of output: a RUN step that prints
    one (`cat /run/secrets/token`) must not put it in the job log. Values (and a file's lines) of
    fewer than 4 characters are left alone, as hiding them would blank out ordinary text."""
    values: set[str] = set()
    for secret in secrets.values():
        try:
            value = os.environ.get(secret.from_env, "") if secret.from_env else Path(secret.from_file).read_text(
                errors="replace")
        except OSError:
            continue
        values.update(part.strip() for part in [value, *value.splitlines()])
    values = sorted((value for value in values if len(value) >= 4), key=len, reverse=True)  # longest first

    def mask(line: str) -> str:
        for value in values:
            line = line.replace(value, "****")
        return line

    return mask


def _failure(status: int, last_lines: list[str], stop: threading.Event | None) -> Exception:
    """Why a build failed, in its last line; Aborted when the CLI was stopped along with the worker
    (systemd sends SIGTERM to the whole service, so it may be told before the worker sees its own)."""
    cancelled = status < 0 or (last_lines and "context canceled" in last_lines[-1])
    if stop is not None and (stop.is_set() or (cancelled and stop.wait(2.0))):
        return Aborted()
    reason = next((line for line in reversed(last_lines) if line.strip("- ")), f"exit status {status}")
    reason = re.sub(r"^(ERROR|error):\s*", "", reason)
    return StepFailed(f"build failed: {reason}")


def _end(process: subprocess.Popen, reader: threading.Thread) -> None:
    """Stop the CLI and everything it started: SIGTERM (it cancels the build in BuildKit), then SIGKILL."""
    for signum, wait in ((signal.SIGTERM, CANCEL_GRACE), (signal.SIGKILL, None)):
        try:
            os.killpg(process.pid, signum)
        except ProcessLookupError:
            break
        try:
            process.wait(timeout=wait)
            break
        except subprocess.TimeoutExpired:
            continue
    reader.join(timeout=5)


def _die_with(parent: int) -> Callable[[], None] | None:
    """For the child: be killed when the thread that started it ends, so a worker killed outright
    (SIGKILL, OOM) leaves no build running without it."""
    if _libc is None:
        return None

    def arrange() -> None:
        _libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() != parent:  # the parent died before prctl took effect
            os._exit(1)

    return arrange
