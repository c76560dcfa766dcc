"""The running config of `serve` and `worker`, read again from deploy.toml on SIGHUP.

A valid file replaces the config at once for what reads it next (a request, the next job); a job
that runs keeps the Config it started with, so nothing is cut. An invalid file is refused with
each problem on a line of its own, and the running config stays. [server] is what the listening
socket, the store and the instance's names were made from: it stays as it was until a restart.
"""

from __future__ import annotations

import dataclasses
import logging
import signal
import threading
from typing import Callable

from hookdeploy.core.config import Config, load
from hookdeploy.core.errors import ConfigError
from hookdeploy.core.names import one_line

log = logging.getLogger(__name__)


class LiveConfig:
    """The config in force now; `reload()` (SIGHUP, see `on_hangup`) puts a newly read one in its place."""

    def __init__(self, config: Config, problems: Callable[[Config], list[str]] = lambda config: []):
        self._config = config
        self._problems = problems  # what the process needs of a config besides its validity (secrets set)
        self._lock = threading.Lock()  # one reload at a time: two quick SIGHUPs read the file in turn

    @property
    def current(self) -> Config:
        """The config in force: read it once per request or job and keep that object throughout."""
        return self._config

    def reload(self) -> bool:
        """Read deploy.toml again; True if it now applies, False (problems logged) if refused."""
        with self._lock:
            running = self._config
            try:
                fresh = load(running.path)
                problems = self._problems(fresh)
            except ConfigError as error:
                problems = error.problems
            if problems:
                for problem in problems:
                    log.error("reload refused: %s", one_line(problem))
                log.error("reload refused (%d problem%s): the running config stays", len(problems),
                          "" if len(problems) == 1 else "s")
                return False
            if fresh.server != running.server:
                log.warning("reload: [server] changed (%s); it applies at the next restart",
                            ", ".join(changed_fields(running.server, fresh.server)))
                fresh = dataclasses.replace(fresh, server=running.server)
            self._config = fresh
            log.info("reloaded %s: %s", running.path, changes(running, fresh))
            return True

    def on_hangup(self) -> None:
        """Reload on every SIGHUP to this process (install from the main thread).

        The file is read in a thread of its own: a signal handler interrupts whatever the main
        thread does, and that may hold the log's or the store's lock."""
        signal.signal(signal.SIGHUP, lambda *_: threading.Thread(target=self._reload_quietly, name="reload",
                                                                 daemon=True).start())

    def _reload_quietly(self) -> None:
        try:
            self.reload()
        except Exception:  # noqa: BLE001 - a reload must never end the service
            log.exception("reload failed unexpectedly; the running config stays")


def changes(before: Config, after: Config) -> str:
    """What differs between two configs, in one line: apps added, removed and changed, other tables."""
    added = sorted(set(after.apps) - set(before.apps))
    removed = sorted(set(before.apps) - set(after.apps))
    changed = sorted(name for name in set(before.apps) & set(after.apps) if before.apps[name] != after.apps[name])
    parts = [f"apps {label}: {', '.join(names)}" for label, names in
             (("added", added), ("removed", removed), ("changed", changed)) if names]
    tables = [f"[{field.name}]" for field in dataclasses.fields(Config)
              if field.name not in ("path", "apps", "server") and getattr(before, field.name) != getattr(after, field.name)]
    if tables:
        parts.append(f"{', '.join(tables)} changed")
    return "; ".join(parts) if parts else "nothing changed"


def changed_fields(before: object, after: object) -> list[str]:
    """The names of a dataclass's fields whose values differ."""
    return [field.name for field in dataclasses.fields(before) if getattr(before, field.name) != getattr(after, field.name)]
