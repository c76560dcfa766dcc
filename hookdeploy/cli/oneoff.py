"""`run APP -- CMD...` and `task APP NAME --wait`: a command in the live release, its output streamed.

`run` starts the container itself (taskrunner: the app's run options, the live image, role `run`),
copies its stdout and stderr to ours as they come, removes it, and exits with the command's
status; SIGTERM or Ctrl-C kills it first (exit 130). No terminal and no standard input are given
to the command. `task --wait` follows a run a worker starts, printing its output as the store
gets it (about once a second).
"""

from __future__ import annotations

import secrets
import signal
import sys
import threading
import time

from hookdeploy.core.config import AppConfig, Config
from hookdeploy.core.errors import BadInput
from hookdeploy.core.store import Store
from hookdeploy.core.taskruns import RunState, TaskRun, TaskRuns

FOLLOW_SECONDS = 0.5
TIMED_OUT_STATUS = 124  # as timeout(1) exits when it killed its command
STOPPED_STATUS = 130


def run_command(config: Config, store: Store, app: AppConfig, command: list[str]) -> int:
    """Run `command` in a new container of the app's live release; return its exit status."""
    from hookdeploy.engine import containers, taskrunner

    if not command:
        raise BadInput(f"give the command to run, like: hookdeploy run {app.name} -- sh -c 'echo hi'")
    live = store.live_release(app.name)
    if live is None:
        raise BadInput(f"{app.name} has nothing live to run it in (deploy it first)")
    client = containers.engine()
    name = f"{config.server.name}-{app.name}-run-{secrets.token_hex(4)}"
    stop = threading.Event()
    previous = {signum: signal.signal(signum, lambda *_: stop.set()) for signum in (signal.SIGTERM, signal.SIGINT)}
    container = None
    try:
        container = taskrunner.create(client, config, app, live, name, command,
                                      taskrunner.labels(config, app, live, "run"))
        how, status = taskrunner.watch(container, _copy_out, stop)
    finally:
        if container is not None:
            containers.remove(container)
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        client.close()
    return status if how == "exited" else STOPPED_STATUS


def _copy_out(out: bytes | None, err: bytes | None) -> None:
    for stream, data in ((sys.stdout, out), (sys.stderr, err)):
        if data:
            stream.buffer.write(data)
            stream.flush()


def follow_run(store: Store, run_id: int) -> TaskRun:
    """Print a task run's output as it grows until the run ends; return it ended."""
    runs, shown = TaskRuns(store), 0
    while True:
        run = runs.run(run_id)
        text = run.output
        if len(text) < shown:  # the kept output was cut at its head (OUTPUT_LIMIT): go on from its new end
            sys.stdout.write("\n[hookdeploy: the output grew past what is kept; later lines may be missing]\n")
            shown = len(text)
        if len(text) > shown:
            sys.stdout.write(text[shown:])
            sys.stdout.flush()
            shown = len(text)
        if run.state.finished:
            return run
        time.sleep(FOLLOW_SECONDS)


def exit_status(run: TaskRun) -> int:
    """What `task --wait` exits with: the command's status; 124 timed out; 1 skipped or failed without one."""
    if run.state is RunState.SUCCEEDED:
        return 0
    if run.state is RunState.TIMED_OUT:
        return TIMED_OUT_STATUS
    return run.exit_code if run.exit_code else 1
