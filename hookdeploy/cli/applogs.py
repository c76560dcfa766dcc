"""`app-logs APP [--follow] [--since DURATION] [--tail N]`: what the live release prints, `[LABEL] line`.

Each line is prefixed with its replica (`[replica 2]`) or Swarm task (`[task 2@node-b]`), as the app's
runtime reads them (engine/runtime.py `logs`, labelled as engine/applogs.py says), and escaped (an
app's output may carry terminal escape sequences). `--follow` keeps printing; when another
release goes live it says so in a line of its own (`hookdeploy: switched to release SHA12 (job N)`)
and goes on with the new release's lines, from their start.
"""

from __future__ import annotations

import os
import re
import sys
import time
from typing import Callable

from hookdeploy.core.config import AppConfig, Config
from hookdeploy.core.errors import BadInput, StepFailed
from hookdeploy.core.models import Release, release_tag
from hookdeploy.core.names import one_line, printable
from hookdeploy.core.store import Store

DURATION = re.compile(r"([0-9]{1,9})([smhd])\Z")
SECONDS_PER = {"s": 1, "m": 60, "h": 3600, "d": 86400}
POLL_SECONDS = 1.0


def parse_duration(text: str) -> int:
    """`30s`, `10m`, `2h` or `7d` as seconds; BadInput naming the form otherwise."""
    match = DURATION.match((text or "").strip())
    if not match or int(match.group(1)) == 0:
        raise BadInput(f"--since {printable(text)}: give a duration like 30s, 10m, 2h or 7d")
    return int(match.group(1)) * SECONDS_PER[match.group(2)]


def live_release(store: Store, app: AppConfig) -> Release:
    """The app's live release; BadInput when there is none."""
    live = store.live_release(app.name)
    if live is None or not live.container:
        raise BadInput(f"{app.name} has no live release (deploy it first)")
    return live


def show(label: str, line: str, echo: Callable[[str], None]) -> None:
    echo(f"[{label}] {one_line(line)}")


def app_logs(store: Store, config: Config, app: AppConfig, tail: int | None, since: str | None, follow: bool,
             echo: Callable[[str], None]) -> None:
    """Print the live release's lines; with `follow`, until interrupted, across deploys."""
    from hookdeploy.engine import containers, runtime

    since_time = time.time() - parse_duration(since) if since is not None else None
    live = live_release(store, app)
    client = containers.engine()
    where = runtime.runtime_for(config, app, client)
    try:
        if not follow:
            for label, line in where.logs(live.container, tail, since_time):
                show(label, line, echo)
            return
        while True:
            def replaced(current: Release = live) -> bool:
                now = store.live_release(app.name)
                return now is not None and now.job != current.job

            lines = where.logs(live.container, tail, since_time, follow=True, until=replaced)
            try:
                for label, line in lines:
                    show(label, line, echo)
            finally:
                lines.close()
            live = _next_release(store, app, live)
            echo(f"hookdeploy: switched to release {release_tag(live.sha)} (job {live.job})")
            tail, since_time = None, None  # the new release's lines from its start
    except StepFailed as error:  # the release is gone from the engine: nothing to show, nothing changed (exit 2)
        raise BadInput(str(error)) from None
    finally:
        client.close()


def _next_release(store: Store, app: AppConfig, current: Release) -> Release:
    """Wait for a live release other than `current` (its streams ended: retired, or stopped)."""
    while True:
        now = store.live_release(app.name)
        if now is not None and now.job != current.job and now.container:
            return now
        time.sleep(POLL_SECONDS)


def stdout_echo(text: str) -> None:
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def run(store: Store, config: Config, app: AppConfig, tail: int | None, since: str | None, follow: bool) -> None:
    """app_logs to stdout; Ctrl-C ends a --follow (exit 0), and so does a reader that went (`| head`)."""
    try:
        app_logs(store, config, app, tail, since, follow, stdout_echo)
    except KeyboardInterrupt:
        pass
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # so the exit's flush does not fail again
