"""`hookdeploy doctor`: check each thing a deploy needs and say how to fix what is wrong."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Callable

from hookdeploy.config import Config, missing_secrets
from hookdeploy.errors import HookdeployError

Report = Callable[[str], None]


def run(config: Config, report: Report) -> int:
    """Run every check, reporting each line; return how many problems were found."""
    problems = 0

    def check(ok: bool, good: str, bad: str) -> None:
        nonlocal problems
        report(f"ok    {good}" if ok else f"FIX   {bad}")
        problems += not ok

    check(True, f"config {config.path} is valid ({len(config.apps)} app{'s' if len(config.apps) != 1 else ''})", "")
    check(shutil.which("git") is not None, "git is installed", "git is not on PATH: apt-get install git")
    state = Path(config.server.state_dir)
    state_ok = state.is_dir() and os.access(state, os.W_OK)
    check(state_ok, f"state_dir {state} is writable",
          f"state_dir {state} is missing or not writable: mkdir -p {state} and give it to the hookdeploy user")
    if state_ok:
        free = shutil.disk_usage(state).free
        check(free > 2 * 1024**3, f"{free / 1024**3:.1f} GiB free in {state}",
              f"only {free / 1024**2:.0f} MiB free in {state}: builds need room; prune images or grow the disk")
    for problem in missing_secrets(config, webhooks=True, app_env=True):
        check(False, "", problem)
    for app in config.apps.values():
        _check_app(config, app, check)
    _check_docker(config, check)
    return problems


def _check_app(config: Config, app, check) -> None:
    from hookdeploy import hook

    if not app.is_local_repo:
        check(True, f"{app.name}: deploys from {app.repo} (mirrored under state_dir)", "")
        return
    repo = Path(app.repo)
    is_repo = (repo / "HEAD").exists()
    check(is_repo, f"{app.name}: repo {repo} exists",
          f"{app.name}: repo {repo} does not exist: hookdeploy init-repo {app.name}")
    hook_file = repo / "hooks" / "post-receive"
    if is_repo and (repo / "objects").is_dir() and not (repo / ".git").exists():
        text = hook_file.read_text(errors="replace") if hook_file.exists() else ""
        command = hook.hookdeploy_command()[0]
        check(command in text and str(config.path) in text and os.access(hook_file, os.X_OK),
              f"{app.name}: post-receive hook runs {command} with {config.path}",
              f"{app.name}: post-receive hook is missing or points elsewhere: hookdeploy init-repo {app.name}")


def _check_docker(config: Config, check) -> None:
    try:
        from hookdeploy import containers

        engine = containers.engine()
        version = engine.version().get("Version", "?")
    except HookdeployError as error:
        check(False, "", f"{error} (start it with: scripts/ensure-docker.sh, or systemctl start docker)")
        return
    check(True, f"Docker engine {version} answers", "")
    has_image = containers.image_exists(engine, config.proxy.image)
    check(has_image, f"proxy image {config.proxy.image} is present",
          f"proxy image {config.proxy.image} is not present: docker pull it, or build the offline one "
          "with scripts/build-nginx-image.sh and set proxy.image = \"hookdeploy-nginx:local\"")
