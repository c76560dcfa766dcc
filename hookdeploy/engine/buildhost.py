"""A build host: another Docker engine that builds releases and pushes them to [registry].

The same docker CLI as for local builds (buildkit.py) is pointed at the build host with `--host`
(and the TLS files for tcp://); for ssh:// the CLI runs the system's `ssh` itself (`ssh user@host
docker system dial-stdio`), so keys and known hosts are the worker user's own (~/.ssh), and nothing
of hookdeploy's is installed there. The push goes from the build host (`docker push` through the
same CLI): the registry login is in a DOCKER_CONFIG folder of that one push (mode 0700, on this
machine, removed when the push ends), so no config file keeps it on either machine, and the
worker user's ~/.docker/config.json is never read. The serving engine then pulls the release by
digest, as it pulls an image app's. Imports hookdeploy.core, buildkit.py (the CLI, its stream) and
registry.py (the login, the repository); builders.py picks it.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import re
import shutil
import subprocess
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

from hookdeploy.core.config import AppConfig, Config
from hookdeploy.core.errors import StepFailed
from hookdeploy.engine import buildkit, registry

PROBE_SECONDS = 30.0  # `docker version` on a build host that answers: well under that, even over ssh
MIN_API = (1, 39)  # Docker 18.09, the first engine with BuildKit built in


@dataclass(frozen=True)
class BuildHost:
    """Where a build runs: ssh://user@host[:port] or tcp://host:port, with the TLS files for tcp://."""

    url: str
    tls_ca: str = ""
    tls_cert: str = ""
    tls_key: str = ""

    @classmethod
    def of(cls, config: Config, url: str) -> "BuildHost":
        """The build host `url`, with [build]'s TLS files when it is a tcp:// one."""
        build = config.build
        if url.startswith("tcp://"):
            return cls(url, build.tls_ca, build.tls_cert, build.tls_key)
        return cls(url)

    @property
    def tls(self) -> bool:
        """True when the tcp:// connection is TLS (a CA to verify the engine, or a client certificate)."""
        return bool(self.tls_ca or self.tls_cert)

    def engine_options(self) -> list[str]:
        """The docker CLI's options that name this engine."""
        options = ["--host", self.url]
        if self.tls:
            options.append("--tlsverify" if self.tls_ca else "--tls")
            if self.tls_ca:
                options.append(f"--tlscacert={self.tls_ca}")
            if self.tls_cert:
                options += [f"--tlscert={self.tls_cert}", f"--tlskey={self.tls_key}"]
        return options

    def check(self, cli: buildkit.Client) -> str:
        """The build host's Docker version, asked through the CLI builds go through; StepFailed naming
        the build host if it does not answer or its engine has no BuildKit."""
        try:
            completed = subprocess.run(
                [cli.path, *self.engine_options(), "version", "--format", "{{.Server.Version}} {{.Server.APIVersion}}"],
                capture_output=True, text=True, timeout=PROBE_SECONDS, env=buildkit.environment(elsewhere=True),
                stdin=subprocess.DEVNULL, check=False)
        except subprocess.TimeoutExpired:
            raise StepFailed(f"build host {self.url} does not answer (no word in {PROBE_SECONDS:.0f} s)") from None
        except OSError as error:
            raise StepFailed(f"cannot run {cli.path}: {error.strerror or error}") from None
        words = completed.stdout.split()
        if completed.returncode != 0 or len(words) != 2:
            lines = [line.strip() for line in (completed.stderr or completed.stdout).splitlines() if line.strip()]
            raise StepFailed(f"build host {self.url} does not answer: "
                             f"{lines[-1] if lines else f'exit status {completed.returncode}'}")
        version, api = words
        numbers = tuple(int(part) for part in re.findall(r"\d+", api)[:2])
        if numbers < MIN_API:
            raise StepFailed(f"build host {self.url} runs Docker {version} (API {api}): BuildKit needs 18.09 or later")
        return version


class RemoteBuilder:
    """BuildKit on a build host; the release is pushed from there and comes back by digest."""

    elsewhere = True
    intermediate_images = False

    def __init__(self, cli: buildkit.Client, host: BuildHost, config: Config, app: AppConfig):
        self.cli, self.host, self.config, self.app = cli, host, config, app

    def describe(self) -> str:
        return f"BuildKit on {self.host.url} ({self.cli.describe()})"

    def announce(self, name: str) -> str:
        return (f"building on {self.host.url} (BuildKit): {registry.remote_repository(self.config, self.app)}:"
                f"{name.rpartition(':')[2]}, through {self.cli.describe()}")

    def build(self, request, on_lines: Callable[[list[str]], None], stop: threading.Event | None) -> str:
        """Build on the build host tagged URL/N/APP:SHA12, push it from there; return the registry's digest.
        With `request.cache_from` the build takes its cache from there, and the image (its cache inline)
        is pushed there too."""
        remote = f"{registry.remote_repository(self.config, self.app)}:{request.tag.rpartition(':')[2]}"
        _untagged(self.host.url)  # a rebuild of the same SHA must not lose its new tag to the last job's removal
        names = [remote, request.cache_from] if request.cache_from else [remote]
        try:
            with (login(self.config, build=True) if request.cache_from else contextlib.nullcontext("")) as folder:
                buildkit.build(self.cli, request.context, request.dockerfile, remote, request.labels,
                               request.build_args, request.target, request.secrets, request.timeout, on_lines, stop,
                               engine_options=self.host.engine_options(), cache_from=request.cache_from,
                               docker_config=folder)
            digest = self._push(remote, on_lines, stop)
            if request.cache_from:
                self._push_cache(remote, request.cache_from, on_lines, stop)
            return digest
        finally:  # the build cache stays there; the tags would only pile up
            self._untag(names)

    def _untag(self, names: list[str]) -> None:
        """Remove the pushed tags on the build host, beside the pull and start that follow: over ssh it is one
        more connection (a few tenths of a second), and nothing waits for it but the next build there."""
        command = [self.cli.path, *self.host.engine_options(), "image", "rm", *names]

        def run() -> None:
            with contextlib.suppress(OSError, subprocess.SubprocessError):
                subprocess.run(command, capture_output=True, timeout=PROBE_SECONDS,
                               env=buildkit.environment(elsewhere=True), stdin=subprocess.DEVNULL, check=False)

        thread = threading.Thread(target=run, name="buildhost-untag", daemon=True)
        with _untagging_lock:
            _untagging[self.host.url] = thread
        thread.start()

    def _push_cache(self, remote: str, cache: str, on_lines: Callable[[list[str]], None],
                    stop: threading.Event | None) -> None:
        """The release just pushed, tagged `cache` too: the next build's cache, for any builder. Its layers
        are there already, so this is a manifest; a failure costs the next build time only, so it is logged."""
        try:
            tagged = subprocess.run([self.cli.path, *self.host.engine_options(), "tag", remote, cache],
                                    capture_output=True, text=True, timeout=PROBE_SECONDS,
                                    env=buildkit.environment(elsewhere=True), stdin=subprocess.DEVNULL, check=False)
        except (OSError, subprocess.SubprocessError) as error:
            on_lines([f"build cache not pushed: {error}"])
            return
        if tagged.returncode != 0:
            on_lines([f"build cache not pushed: {(tagged.stderr.strip().splitlines() or ['docker tag failed'])[-1]}"])
            return
        try:
            self._push(cache, on_lines, stop)
        except StepFailed as error:
            on_lines([f"build cache not pushed: {error}"])

    def _push(self, remote: str, on_lines: Callable[[list[str]], None], stop: threading.Event | None) -> str:
        """`docker push` on the build host, logged in for this push alone; the digest the registry gave."""
        on_lines([f"pushing {remote} from {self.host.url}"])
        with login(self.config) as docker_config:
            env = {**buildkit.environment(elsewhere=True), "DOCKER_CONFIG": docker_config}
            try:
                status, lines = buildkit.stream([self.cli.path, *self.host.engine_options(), "push", remote], env,
                                                on_lines, registry.TRANSFER_TIMEOUT, stop)
            except StepFailed as error:
                raise StepFailed(f"build host {self.host.url}: push to {self.config.registry.url}: {error}") from None
        digest = next((found.group(1) for line in reversed(lines)
                       if (found := re.search(r"digest: (sha256:[0-9a-f]{64})", line))), None)
        if status != 0 or digest is None:
            reason = lines[-1] if lines else f"exit status {status}"
            raise StepFailed(f"build host {self.host.url}: push to {self.config.registry.url} failed: {reason}")
        return digest


_untagging: dict[str, threading.Thread] = {}  # build host URL -> its last removal of a pushed tag
_untagging_lock = threading.Lock()


def _untagged(url: str) -> None:
    """Wait for the last removal of a pushed tag on the build host `url` to end."""
    with _untagging_lock:
        thread = _untagging.pop(url, None)
    if thread is not None:
        thread.join()


@contextlib.contextmanager
def login(config: Config, build: bool = False) -> Iterator[str]:
    """A DOCKER_CONFIG folder (0700) whose config.json holds [registry]'s login and nothing else,
    removed at the end: a push made with it is logged in, and no file keeps the password.
    `build`: for a build that takes its cache from [registry] (the CLI hands BuildKit the login from
    it): the worker's own docker config comes along too (its CLI plugins, buildx and its builders,
    its other registries' logins), [registry]'s login in place of any it has."""
    folder = tempfile.mkdtemp(prefix="hookdeploy-login-")
    try:
        auth = registry.auth_config(config)
        settings = _own_settings(folder) if build else {}
        url = config.registry.url
        auths = {name: entry for name, entry in settings.get("auths", {}).items() if name != url}
        if auth.get("username"):
            token = base64.b64encode(f"{auth['username']}:{auth['password']}".encode()).decode()
            auths[url] = {"auth": token}
        settings["auths"] = auths
        if settings.get("credsStore") or url in settings.get("credHelpers", {}):
            settings.setdefault("credHelpers", {})[url] = ""  # "": this file, not the credential helper
        handle = os.open(os.path.join(folder, "config.json"), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(handle, "w") as file:
            json.dump(settings, file)
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _own_settings(folder: str) -> dict:
    """The worker's own docker config (DOCKER_CONFIG, else ~/.docker): its plugin and buildx folders
    linked into `folder`, its config.json's settings returned ({} if it has none)."""
    own = Path(os.environ.get("DOCKER_CONFIG") or Path.home() / ".docker")
    for name in ("cli-plugins", "buildx"):  # a buildx installed there, and the builder `docker buildx use` chose
        if (own / name).is_dir():
            os.symlink(own / name, os.path.join(folder, name))
    try:
        settings = json.loads((own / "config.json").read_text())
    except (OSError, ValueError):
        return {}
    if not isinstance(settings, dict) or not isinstance(settings.get("auths", {}), dict):
        return {}
    if not isinstance(settings.get("credHelpers", {}), dict):
        settings.pop("credHelpers")
    return settings


def check_login(config: Config, host: BuildHost, cli: buildkit.Client) -> None:
    """The build host's engine logs in to [registry] (`docker login`, its answer from the registry);
    StepFailed with the reason. The login is kept in a folder removed at once."""
    auth = registry.auth_config(config)
    if not auth.get("username"):
        return
    with login(config) as docker_config:
        env = {**buildkit.environment(elsewhere=True), "DOCKER_CONFIG": docker_config}
        try:
            completed = subprocess.run(
                [cli.path, *host.engine_options(), "login", "--username", auth["username"], "--password-stdin",
                 config.registry.url], input=auth["password"], capture_output=True, text=True,
                timeout=PROBE_SECONDS, env=env, check=False)
        except subprocess.TimeoutExpired:
            raise StepFailed(f"no answer in {PROBE_SECONDS:.0f} s") from None
    if completed.returncode != 0:
        lines = [line.strip() for line in completed.stderr.splitlines() if line.strip()]
        raise StepFailed(re.sub(r"^Error response from daemon:\s*", "",
                                lines[-1] if lines else f"exit status {completed.returncode}"))
