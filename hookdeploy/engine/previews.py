"""The engine side of previews (DESIGN "Previews of branches"): removing one, and the worker's sweep
of the previews that are due to go (branch deleted, ttl_hours without a push, table gone).

A preview is removed as `remove` removes an app, its release set `APP.LABEL` being the app: its
queued jobs end superseded, its route goes (nginx tested and reloaded gracefully), then its
containers, images, certificates, build folder, mirror and named volumes; its jobs and releases
stay as history. Then its record goes, so the branch pushed again gets a preview afresh. The app's
own release, route and images are never touched: nothing of them is named APP.LABEL.
Imports hookdeploy.core, removal.py and traffic.py; the worker and the CLI call it.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Callable

from hookdeploy.core import private
from hookdeploy.core.config import Config
from hookdeploy.core.models import iso_time, utcnow
from hookdeploy.core.previews import Preview, Previews
from hookdeploy.core.store import Store
from hookdeploy.engine import removal, traffic

log = logging.getLogger("hookdeploy.engine.worker")


def remove(config: Config, store: Store, preview: Preview, why: str) -> removal.Removal:
    """Remove the preview and forget it; BadInput (nothing changed) while a job of it runs."""
    done = removal.remove(config, store, preview.name, volumes=True,
                          reason=f"its preview was removed ({why})")
    Previews(store).forget(preview.app, preview.label)
    log.info("%s: preview %s of %s removed (%s)", preview.app, preview.label, preview.branch, why)
    return done


def lines(preview: Preview, done: removal.Removal) -> list[str]:
    """What removing the preview did, a line each, for the command line."""
    said = [line.replace(f"{done.app}: ", "  ", 1) for line in done.lines()[:-1]]
    return [f"preview {preview.label} of {preview.app} ({preview.branch}) removed", *said]


def sweep(config: Config, store: Store, now: Callable[[], datetime] | None = None) -> list[Preview]:
    """Remove every preview that is due (Previews.due) and has no job running; return those removed.
    A preview that cannot be removed now (the engine away, a reload refused) is tried again next time."""
    removed = []
    for preview in Previews(store).of():  # made here, as proxy.prepare makes the apps': hookdeploy's to rotate
        path = traffic.log_path(config, preview.name)
        if path.parent.is_dir() and not path.exists():
            private.file(path)
    at = iso_time(now().timestamp()) if now is not None else utcnow()
    for preview, why in Previews(store).due(config, at):
        if store.running(preview.name) is not None:
            continue  # its job ends first; the next sweep removes it
        try:
            remove(config, store, preview, why)
            removed.append(preview)
        except Exception as error:  # noqa: BLE001 - the engine away, a reload refused: the next sweep tries again
            log.warning("%s: preview %s not removed yet: %s", preview.app, preview.label, error)
    return removed

