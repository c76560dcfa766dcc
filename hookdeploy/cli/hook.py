"""The post-receive side: installing the hook into a bare repo, and queuing what a push sends it.

This runs inside every `git push`, so it imports nothing heavy (no git, no Docker, no Flask).
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, TextIO

from hookdeploy import actions
from hookdeploy.cli.follow import WORKER_ALIVE_SECONDS, follow_push, site_url
from hookdeploy.core import config as configuration
from hookdeploy.core import previews
from hookdeploy.core.config import AppConfig
from hookdeploy.core.errors import ConfigError, HookdeployError
from hookdeploy.core.models import Job, JobState
from hookdeploy.core.names import is_full_sha, one_line, preview_parts, printable
from hookdeploy.core.previews import branch_of
from hookdeploy.core.store import Store

TEMPLATE_NAME = "post-receive"


@dataclass(frozen=True)
class RefUpdate:
    """One `<old> <new> <ref>` line from git."""

    old: str
    new: str
    ref: str


def parse_updates(lines: Iterable[str], out: TextIO) -> list[RefUpdate]:
    """The well-formed update lines; malformed ones are reported to the pusher and skipped."""
    updates = []
    for line in lines:
        parts = line.rstrip("\n").split(" ")
        if len(parts) != 3 or not (is_full_sha(parts[0]) and is_full_sha(parts[1])):
            if line.strip():
                print(f"hookdeploy: ignored malformed update line {printable(line.strip())}", file=out)
            continue
        updates.append(RefUpdate(*parts))
    return updates


def queue_pushes(store: Store, app: AppConfig, updates: list[RefUpdate], out: TextIO) -> list[Job]:
    """Queue a `push` job for each update of the app's branch; report and skip the rest."""
    jobs = []
    for update in updates:
        try:
            preview = previews.on_push(store, app, update.ref, update.new)
        except previews.PreviewRefused as refused:
            print(f"hookdeploy: no preview: {refused}", file=out)
            continue
        if preview is not None:  # a preview branch's push or deletion (DESIGN "Previews of branches")
            print(f"queued job {preview[0].id} ({preview[1]})" if preview[0] else f"hookdeploy: {preview[1]}", file=out)
            jobs.extend([preview[0]] if preview[0] else [])
            continue
        reason = actions.ignored_push(app, update.ref, update.new)
        if reason is not None:
            print(f"hookdeploy: ignored {reason}", file=out)
            continue
        job = actions.queue_push(store, app, update.ref, update.new)
        print(f"queued job {job.id} ({app.name} @ {update.new[:7]})", file=out)
        if (stopped := actions.stopped_note(store, app)) is not None:
            print(f"hookdeploy: {stopped}", file=out)
        jobs.append(job)
    return jobs


def run(config_option: str | None, app_name: str, follow_job: bool = True) -> int:
    """The post-receive hook: queue the pushes read from stdin, follow the job; always 0.

    A post-receive hook cannot reject a push, so every failure is reported to the pusher.
    """
    try:
        config = configuration.load(config_option)
        app = actions.find_app(config, app_name)
        store = Store(config.server.database)
        jobs = queue_pushes(store, app, parse_updates(sys.stdin, sys.stdout), sys.stdout)
    except Exception as error:  # noqa: BLE001 - also SQLite's "disk is full": say it, never a traceback
        lines = error.problems if isinstance(error, ConfigError) else str(error).splitlines()
        if not isinstance(error, HookdeployError):
            lines = [f"{error} ({type(error).__name__})"]
        for line in lines:
            print(f"hookdeploy: error: {one_line(line)}")
        print("hookdeploy: the push was received, but nothing was queued")
        return 0
    if jobs and follow_job and app.follow_push:
        if store.worker_alive(WORKER_ALIVE_SECONDS):
            try:
                preview = preview_parts(jobs[-1].app)
                url = previews.url(config, app, preview[1]) if preview else site_url(config.proxy.publish, app.hostnames)
                final = follow_push(store, jobs[-1], url)
                if preview and final.state is JobState.SUCCEEDED:
                    print(f"-----> preview of {branch_of(final.ref)}: {url}")
            except KeyboardInterrupt:
                print(f"stopped following; job {jobs[-1].id} goes on (hookdeploy logs {jobs[-1].id} --follow)")
        else:
            print(f"queued as job {jobs[-1].id}; no worker is running (start it with: hookdeploy worker)")
    return 0


def fast_path_arguments(argv: list[str]) -> tuple[str | None, str, bool] | None:
    """(config, app, follow) when argv is exactly `[--config PATH] hook APP [--no-follow]`, else None."""
    config_option = None
    if len(argv) >= 2 and argv[0] == "--config":
        config_option, argv = argv[1], argv[2:]
    elif argv and argv[0].startswith("--config="):
        config_option, argv = argv[0].partition("=")[2], argv[1:]
    if len(argv) == 3 and argv[0] == "hook" and argv[2] == "--no-follow" and not argv[1].startswith("-"):
        return config_option, argv[1], False
    if len(argv) == 2 and argv[0] == "hook" and not argv[1].startswith("-"):
        return config_option, argv[1], True
    return None


def template_path(name: str = TEMPLATE_NAME) -> Path:
    """The hook template `name`: inside the installed package, or at the top of a source checkout."""
    package = Path(__file__).resolve().parent.parent
    packaged = package / "hooks" / name
    return packaged if packaged.exists() else package.parent / "hooks" / name


def hookdeploy_command() -> list[str]:
    """The absolute command that runs this hookdeploy, usable with no venv activated."""
    script = Path(sys.executable).parent / "hookdeploy"
    if script.exists():
        return [str(script)]
    return [str(Path(sys.executable).absolute()), "-m", "hookdeploy"]


def install(repo: Path, app_name: str, config_file: Path, name: str = TEMPLATE_NAME) -> Path:
    """Write the hook `name` (post-receive, or pre-receive) into a bare repo atomically and make it executable."""
    import shlex  # here: the hook itself, inside every push, needs neither
    import tempfile

    text = template_path(name).read_text()
    text = (text.replace("@HOOKDEPLOY@", shlex.join(hookdeploy_command()))
                .replace("@CONFIG@", shlex.quote(str(config_file.absolute())))
                .replace("@APP_COMMENT@", app_name)
                .replace("@APP@", shlex.quote(app_name)))
    hooks = repo / "hooks"
    hooks.mkdir(exist_ok=True)
    target = hooks / name
    handle, temporary = tempfile.mkstemp(dir=hooks, prefix=f".{name}.")
    try:
        with os.fdopen(handle, "w") as file:
            file.write(text)
        os.chmod(temporary, 0o755)
        os.replace(temporary, target)
    except BaseException:
        os.unlink(temporary)
        raise
    return target
