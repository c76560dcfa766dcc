"""The pre-receive side: a push whose head hookdeploy would deploy must be signed by an allowed key.

git runs the hook before any ref moves, the pushed objects in a quarantine its environment names; exit
status 1 refuses the whole push (every ref stays where it was) and what is printed reaches the pusher.
init-repo installs the hook for an app with [apps.X.signatures]; the worker checks every job again
(deploy.py), so a push that got past (a repo without the hook) deploys nothing unsigned either.
"""

from __future__ import annotations

import os
import sys
from typing import TextIO

from hookdeploy import actions
from hookdeploy.cli.hook import RefUpdate, parse_updates
from hookdeploy.core import config as configuration
from hookdeploy.core import previews
from hookdeploy.core.config import AppConfig, Config
from hookdeploy.core.errors import ConfigError, HookdeployError, UnknownApp
from hookdeploy.core.names import ZERO_SHA, one_line
from hookdeploy.engine import signatures


def checked(app: AppConfig, ref: str, new_sha: str) -> bool:
    """True when a pushed update of `ref` to `new_sha` must be signed: the app checks signatures, the update
    deletes nothing, and hookdeploy would deploy it (actions.ignored_push says which refs those are; a
    preview branch's push deploys its preview)."""
    return signatures.required(app) and new_sha != ZERO_SHA and (
        actions.ignored_push(app, ref, new_sha) is None or previews.wanted(app, ref) is not None)


def refusals(config: Config, app: AppConfig, git_dir: str, updates: list[RefUpdate]) -> list[str]:
    """Why each update that must be signed is not (one line each); [] when the push may go on."""
    found = []
    for update in updates:
        if not checked(app, update.ref, update.new):
            continue
        try:
            signatures.verify(config, app, git_dir, update.new)
        except HookdeployError as error:
            found.append(str(error))
    return found


def run(config_option: str | None, app_name: str, out: TextIO = sys.stdout) -> int:
    """The pre-receive hook: 0 lets the push in, 1 refuses all of it, saying why."""
    try:
        config = configuration.load(config_option)
        app = actions.find_app(config, app_name)
    except UnknownApp:
        print(f"hookdeploy: {app_name} is not in deploy.toml: nothing deploys from here, so nothing is checked",
              file=out)
        return 0
    except Exception as error:  # noqa: BLE001 - which refs must be signed is unknown: refuse, never a traceback
        lines = error.problems if isinstance(error, ConfigError) else [str(error)]
        for line in lines:
            print(f"hookdeploy: error: {one_line(line)}", file=out)
        print("hookdeploy: push refused: without deploy.toml, which commits must be signed is unknown", file=out)
        return 1
    refused = refusals(config, app, os.environ.get("GIT_DIR", "."), parse_updates(sys.stdin, out))
    for line in refused:
        print(f"hookdeploy: {one_line(line)}", file=out)
    if refused:
        print(f"hookdeploy: push refused, no ref moved: {app.name} deploys only commits signed by a key in "
              f"apps.{app.name}.signatures (sign with: git commit -S)", file=out)
        return 1
    return 0
