"""A command in a container of an app's live release: a task run (recorded) or a one-off `run`.

Both containers take the app's options from runspec.run_options (environment, network, and
whatever every container of the app gets: volumes, limits), run the live release's image, and
are removed once they end. A task container is `N-APP-task-TASK-RUN`, a one-off one
`N-APP-run-HEX8`; both carry the instance's labels with `hookdeploy.role` task or run, which
recovery's repair leaves alone (the scheduler, or the command line, removes them).
Output is read through an attach made before the start, so nothing printed early is lost.
Imports hookdeploy.core, containers and runspec; the scheduler and `hookdeploy run` call it.
"""

from __future__ import annotations

import codecs
import logging
import threading
import time
from typing import Callable

import docker
import docker.errors
import requests.exceptions

from hookdeploy.core.config import AppConfig, Config, TaskConfig
from hookdeploy.core.errors import StepFailed
from hookdeploy.core.models import Release
from hookdeploy.core.taskruns import OUTPUT_LIMIT, RunState, TaskRun, TaskRuns
from hookdeploy.engine import containers, runspec

log = logging.getLogger(__name__)

TASK_LABEL = "hookdeploy.task"
RUN_LABEL = "hookdeploy.run"
POLL_SECONDS = 0.5  # how often a wait looks at the stop flag and the deadline
OUTPUT_SECONDS = 1.0  # how often a running task's output so far is written to the store
KILL_WAIT_SECONDS = 10


def task_container_name(instance: str, app: str, task: str, run_id: int) -> str:
    """`N-APP-task-TASK-RUN`."""
    return f"{instance}-{app}-task-{task}-{run_id}"


def labels(config: Config, app: AppConfig, live: Release, role: str, **extra: str) -> dict[str, str]:
    """The release's labels, with the container's role (task, run) and its own (task, run id)."""
    made = {**containers.release_labels(config.server.name, app.name, live.sha, live.job), containers.ROLE: role}
    made.update({f"hookdeploy.{key}": value for key, value in extra.items()})
    return made


def create(client: docker.DockerClient, config: Config, app: AppConfig, live: Release, name: str,
           command: list[str], made_labels: dict[str, str]):
    """A created (not started) container of the live release's image running `command`."""
    if not containers.image_exists(client, live.image):
        try:
            client.images.pull(live.image)
        except docker.errors.APIError as error:
            raise StepFailed(f"the live image {live.image} is not on this engine and cannot be pulled: "
                             f"{error.explanation or error}") from None
    try:
        return client.containers.create(live.image, command=list(command), name=name, labels=made_labels,
                                        detach=True, **runspec.run_options(config, app))
    except docker.errors.APIError as error:
        raise StepFailed(f"cannot create {name}: {error.explanation or error}") from None


def watch(container, on_output: Callable[[bytes | None, bytes | None], None], stop: threading.Event,
          timeout: float | None = None, on_tick: Callable[[], None] = lambda: None) -> tuple[str, int | None]:
    """Start `container` and wait for its end, handing its (stdout, stderr) chunks to `on_output` from a
    thread of their own: ("exited", status), or ("timed_out" | "stopped", None) when `timeout` passed or
    `stop` was set first and it was killed. `on_tick` is called every POLL_SECONDS while it runs."""
    stream = container.attach(stdout=True, stderr=True, stream=True, logs=True, demux=True)

    def read() -> None:
        try:
            for out, err in stream:
                on_output(out, err)
        except Exception as error:  # noqa: BLE001 - the engine closing the stream ends the reading
            log.debug("%s: output stream ended: %s", container.name, error)

    reader = threading.Thread(target=read, name=f"output-{container.name}", daemon=True)
    reader.start()
    try:
        container.start()
    except docker.errors.APIError as error:  # say, the command is not in the image
        raise StepFailed(f"cannot start {container.name}: {error.explanation or error}") from None
    deadline = None if timeout is None else time.monotonic() + timeout
    outcome = None
    while outcome is None:
        if stop.is_set():
            outcome = ("stopped", None)
        elif deadline is not None and time.monotonic() >= deadline:
            outcome = ("timed_out", None)
        else:
            try:
                return _ended(reader, ("exited", container.wait(timeout=POLL_SECONDS)["StatusCode"]))
            except requests.exceptions.RequestException:
                on_tick()
    kill(container)
    return _ended(reader, outcome)


def _ended(reader: threading.Thread, outcome: tuple[str, int | None]) -> tuple[str, int | None]:
    reader.join(timeout=5)  # the stream ends with the container; what it printed last is read by then
    return outcome


def kill(container) -> None:
    """Kill a container and wait until it has stopped; one already gone is fine."""
    try:
        container.kill()
        container.wait(timeout=KILL_WAIT_SECONDS)
    except (docker.errors.APIError, requests.exceptions.RequestException):
        pass


class Output:
    """A run's output as text, its last OUTPUT_LIMIT characters kept; filled from the reader thread."""

    def __init__(self):
        self._lock = threading.Lock()
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._text = ""
        self._dropped = 0
        self.changed = False

    def add(self, out: bytes | None, err: bytes | None) -> None:
        with self._lock:
            self._text += self._decoder.decode((out or b"") + (err or b""))
            if len(self._text) > 2 * OUTPUT_LIMIT:
                self._dropped += len(self._text) - OUTPUT_LIMIT
                self._text = self._text[-OUTPUT_LIMIT:]
            self.changed = True

    def text(self) -> str:
        with self._lock:
            self.changed = False
            head = f"[... {self._dropped} earlier characters not kept ...]\n" if self._dropped else ""
            return head + self._text


def execute(client: docker.DockerClient, config: Config, app: AppConfig, task: TaskConfig, run: TaskRun,
            live: Release, runs: TaskRuns, stop: threading.Event) -> TaskRun | None:
    """Run a claimed (running) task run to its end in a new container; record and return how it ended."""
    name = task_container_name(config.server.name, app.name, task.name, run.id)
    output = Output()
    try:
        container = create(client, config, app, live, name, list(task.command),
                           labels(config, app, live, "task", task=task.name, run=str(run.id)))
    except Exception as error:  # noqa: BLE001 - whatever the engine says, the run failed to start
        return runs.finish(run.id, RunState.FAILED, reason=f"could not start: {_one_line(error)}")
    runs.set_container(run.id, name)
    last_write = time.monotonic()

    def tick() -> None:
        nonlocal last_write
        if output.changed and time.monotonic() - last_write >= OUTPUT_SECONDS:
            runs.set_output(run.id, output.text())
            last_write = time.monotonic()

    try:
        how, status = watch(container, output.add, stop, task.timeout, tick)
    except StepFailed as error:
        how, status = "error", None
        output.add(f"[hookdeploy: {error}]\n".encode(), None)
    except Exception as error:  # noqa: BLE001 - the engine failed mid-run
        kill(container)
        how, status = "error", None
        output.add(f"\n[hookdeploy: the engine failed during the run: {_one_line(error)}]\n".encode(), None)
    finally:
        _remove(container)
    if how == "exited":
        state = RunState.SUCCEEDED if status == 0 else RunState.FAILED
        reason = None if status == 0 else f"exit status {status}"
    elif how == "timed_out":
        state, reason = RunState.TIMED_OUT, f"timed out after {task.timeout:g} s; the container was killed"
    elif how == "stopped":
        state, reason = RunState.FAILED, "the worker stopped during the run; the container was killed"
    else:
        state, reason = RunState.FAILED, "the container could not be started or the engine failed (see the output)"
    return runs.finish(run.id, state, exit_code=status, output=output.text(), reason=reason)


def _remove(container) -> None:
    try:
        containers.remove(container)
    except docker.errors.APIError as error:
        log.warning("could not remove %s: %s", container.name, error)


def _one_line(error: object) -> str:
    text = " ".join(str(error).split()) or type(error).__name__
    return text if len(text) <= 300 else text[:297] + "..."
