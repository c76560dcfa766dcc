"""Long engine calls followed to their end: a build, a push, a pull, a release command, a docker CLI run.

What the call says is read by a thread of its own onto a queue (`feed`, or the caller's own
readers), and the caller's thread only waits on that queue (`batches`, `relay`), so it sees:
- a stop: one convention, a `threading.Event`, seen within POLL_SECONDS whether the call is
  chatty or silent (a RUN sleep, a registry that does not answer): Aborted;
- a timeout: one rule, `timeout` seconds counted from the call's start, or with `quiet` (a push
  or pull, long but talking) from the last thing it said: StepFailed naming the call.
On either, `cancel` runs first and must end the call: `Connection.close` for an engine API call
(the engine cancels a build or transfer whose client is gone), ending the process for a CLI.
Imports hookdeploy.core and the docker SDK only.
"""

from __future__ import annotations

import contextlib
import queue
import threading
import time
from dataclasses import dataclass
from typing import Callable, Iterable, Iterator

import docker
from docker.types import CancellableStream

from hookdeploy.core.errors import Aborted, StepFailed

POLL_SECONDS = 0.5  # how soon a stop is seen while the call says nothing
MARGIN_SECONDS = 60  # a call's own connection waits this much longer than its timeout: the limit is ours
END = None  # what a reader puts on the queue when the call's output has ended


@dataclass(frozen=True)
class _Failed:
    """What a reader puts on the queue when reading raised: raised again in the caller's thread."""

    error: BaseException


class Connection:
    """An engine API client of one long call: the call must not hold the worker's connection, and
    `close()` cuts just its responses off (which makes the engine cancel the build or transfer)."""

    def __init__(self, client: docker.DockerClient, timeout: float):
        self.api = docker.from_env(version=client.api.api_version, timeout=int(timeout) + MARGIN_SECONDS).api
        self._responses: list = []
        self.api.hooks["response"].append(self._keep)

    def _keep(self, response, *args, **kwargs):
        self._responses.append(response)
        return response

    def close(self) -> None:
        """Shut the call's sockets (a read blocked in another thread ends at once), then the client."""
        for response in self._responses:
            with contextlib.suppress(Exception):  # ended already, or a transport without a socket
                CancellableStream(None, response).close()
        self.api.close()


def feed(items: Callable[[], Iterable], name: str) -> tuple[queue.Queue, threading.Thread]:
    """Start `items()` in a daemon thread `name` that puts each item on a new queue, then END
    (an error it raises is raised again by `batches`); return the queue and the thread."""
    chunks: queue.Queue = queue.Queue()

    def read() -> None:
        try:
            for item in items():
                chunks.put(item)
        except BaseException as error:  # noqa: BLE001 - handed to the caller's thread
            chunks.put(_Failed(error))
        finally:
            chunks.put(END)

    thread = threading.Thread(target=read, name=name, daemon=True)
    thread.start()
    return chunks, thread


def batches(chunks: queue.Queue, stop: threading.Event | None, cancel: Callable[[], None], timeout: float,
            what: str, quiet: bool = False) -> Iterator[list]:
    """What arrived on `chunks` since the last batch (one job-log commit per batch, not per line),
    until END; Aborted on `stop`, StepFailed on the timeout (see the module), `cancel` called first.
    A caller that leaves early (an error of its own) cancels the call too."""
    started = last = time.monotonic()
    finished = False
    try:
        while True:
            if stop is not None and stop.is_set():
                raise Aborted()
            deadline = (last if quiet else started) + timeout
            try:
                item = chunks.get(timeout=max(0.0, min(POLL_SECONDS, deadline - time.monotonic())))
            except queue.Empty:
                if time.monotonic() >= deadline:
                    raise StepFailed(f"the {what} made no progress for {timeout:g} s" if quiet else
                                     f"{what} timed out after {timeout:g} s") from None
                continue
            last = time.monotonic()
            batch = [item]
            while batch[-1] is not END:
                try:
                    batch.append(chunks.get_nowait())
                except queue.Empty:
                    break
            failure = next((each for each in batch if isinstance(each, _Failed)), None)
            items = [each for each in batch if each is not END and not isinstance(each, _Failed)]
            if items:
                yield items
            if failure is not None:
                finished = True  # the call ended with it
                raise failure.error
            if batch[-1] is END:
                finished = True
                return
    finally:
        if not finished:
            cancel()


def items(chunks: queue.Queue, stop: threading.Event | None, cancel: Callable[[], None], timeout: float,
          what: str, quiet: bool = False) -> Iterator:
    """`batches`, one item at a time."""
    for batch in batches(chunks, stop, cancel, timeout, what, quiet):
        yield from batch


def relay(chunks: queue.Queue, on_lines: Callable[[list[str]], None], stop: threading.Event | None,
          cancel: Callable[[], None], timeout: float, what: str = "build", quiet: bool = False) -> None:
    """Hand a call's text output (chunks of any size) to `on_lines` a batch of whole lines at a time,
    the last line even without its newline; Aborted and StepFailed as `batches`."""
    pending = ""
    for batch in batches(chunks, stop, cancel, timeout, what, quiet):
        pending += "".join(batch)
        *complete, pending = pending.split("\n")
        complete = [line.rstrip() for line in complete if line.strip()]
        if complete:
            on_lines(complete)
    if pending.strip():
        on_lines([pending.rstrip()])
