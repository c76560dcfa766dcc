"""`hookdeploy doctor`'s look at apps that deploy only signed commits: their key files, their pre-receive
hook, and who signed the release that is live."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

from hookdeploy.core.config import AppConfig, Config
from hookdeploy.core.errors import HookdeployError
from hookdeploy.core.models import release_tag
from hookdeploy.engine import signatures

Check = Callable[[bool, str, str], None]
Report = Callable[[str], None]


def check_signatures(config: Config, check: Check, report: Report) -> None:
    """For each app with [apps.X.signatures]: the files read, the hook installed, the live release's signer."""
    for app in config.apps.values():
        if not signatures.required(app):
            continue
        for fine, said in signatures.file_problems(config, app):
            check(fine, f"{app.name}: signatures: {said}",
                  f"{app.name}: signatures: {said}: fix the file named in apps.{app.name}.signatures")
        if app.is_local_repo and (Path(app.repo) / "HEAD").exists():
            _check_hook(config, app, check)
        _report_live(config, app, report)


def _check_hook(config: Config, app: AppConfig, check: Check) -> None:
    """The bare repo's pre-receive hook runs this hookdeploy with this config: pushes are checked as they come."""
    from hookdeploy.cli import hook

    hook_file = Path(app.repo) / "hooks" / "pre-receive"
    text = hook_file.read_text(errors="replace") if hook_file.exists() else ""
    command = hook.hookdeploy_command()[0]
    check(command in text and str(config.path) in text and "pre-receive" in text and os.access(hook_file, os.X_OK),
          f"{app.name}: pre-receive hook refuses pushes of unsigned heads",
          f"{app.name}: pre-receive hook is missing or points elsewhere (unsigned pushes land, and only their jobs "
          f"fail): hookdeploy init-repo {app.name}")


def _report_live(config: Config, app: AppConfig, report: Report) -> None:
    """Who signed the live release, checked again now against the files as they are: a key taken out since
    is said (the release serves on; a redeploy or rollback to it would be refused)."""
    from hookdeploy.core.store import Store
    from hookdeploy.engine import gitops

    if not config.server.database.exists():
        return  # nothing deployed yet; doctor makes no store
    try:
        store = Store(config.server.database)
        live = store.live_release(app.name)
        store.close()
        if live is None:
            return
        signer = signatures.verify(config, app, gitops.open_repo(app, config.server.state_dir).git_dir, live.sha)
    except signatures.NotSigned as error:
        report(f"WARN  {app.name}: the live release: {error}; it serves on, but a redeploy or a rollback to it "
               "would be refused")
        return
    except HookdeployError as error:
        report(f"WARN  {app.name}: cannot check who signed the live release: {error}")
        return
    report(f"ok    {app.name}: live release {release_tag(live.sha)} is signed by {signer.describe()}")
