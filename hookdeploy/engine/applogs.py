"""What a release's app prints, read from the engine's log streams and labelled by where it ran.

The one labelling convention, for `app-logs`, the API and the runtime alike: a container of a
release is `replica N` (1 for the release's first container `N-APP-SHA12-JOB`, N for its
`...-N`), a Swarm task `task SLOT@NODE`. Which streams a release has is the runtime's to say
(runtime.py `logs`: its containers, or its service); this module reads them.

Without `follow` the lines of every replica or task are merged by the engine's timestamps, oldest
first; `tail` is per replica or task (as `docker compose logs` and `docker service logs` count it).
With `follow` the lines come as the engine sends them until every stream ends (the containers
stopped, the service went) or `until()` is true (asked about once a second). Lines are returned as
the app wrote them: whoever shows them escapes them. Imports the engine's swarm module only.
"""

from __future__ import annotations

import queue
import threading
import time
import urllib.parse
from typing import Callable, Iterator

import docker
import docker.errors

from hookdeploy.engine import swarm

# How long a log read without --follow may take: a Swarm node that is gone never answers for its tasks.
READ_SECONDS = 15.0
POLL_SECONDS = 1.0
TASK_ID = "com.docker.swarm.task.id"

Until = Callable[[], bool]
Lines = Iterator[tuple[str, str]]


def replica_label(first: str, name: str) -> str:
    """`replica N` for the container `name` of the release whose first container is `first`."""
    return "replica 1" if name == first else f"replica {name.removeprefix(first + '-')}"


def task_label(task: swarm.Task) -> str:
    """`task SLOT@NODE` (the task's id when Swarm gave it no slot)."""
    return f"task {task.slot if task.slot is not None else task.id[:12]}@{task.node}"


def container_lines(members: list, tail: int | None, since: float | None, follow: bool, until: Until) -> Lines:
    """(`replica N`, line) of a release's containers, `members` the first one first."""
    first = members[0].name
    sources = []
    for each in members:
        label = replica_label(first, each.name)
        try:
            chunks = each.logs(stdout=True, stderr=True, timestamps=True, stream=True, follow=follow,
                               **_window(tail, since))
        except docker.errors.NotFound:
            continue  # retired between the listing and now
        sources.append((chunks, lambda stamped, label=label: _stamped(stamped, label)))
    return _merged(sources, follow, until)


def service_lines(client: docker.DockerClient, service, tail: int | None, since: float | None, follow: bool,
                  until: Until) -> Lines:
    """(`task SLOT@NODE`, line) of the service's tasks, a task Swarm started since (a replacement) included."""
    names = {task.id: task_label(task) for task in swarm.tasks(client, service, "")}
    chunks = service.logs(stdout=True, stderr=True, timestamps=True, details=True, follow=follow, **_window(tail, since))

    def parse(stamped: str) -> tuple[str, str, str]:
        stamp, task, line = task_line(stamped)
        if task and task not in names:  # look again, once per new task
            names.update({found.id: task_label(found) for found in swarm.tasks(client, service, "")})
            names.setdefault(task, f"task {task[:12]}")
        return stamp, names.get(task, "task ?"), line

    return _merged([(chunks, parse)], follow, until)


def task_line(stamped: str) -> tuple[str, str, str]:
    """(timestamp, task id, text) of a `docker service logs --details --timestamps` line:
    `TIMESTAMP k=v,k=v TEXT`, the details being the task's attributes, URL-encoded."""
    stamp, _, rest = stamped.partition(" ")
    details, _, line = rest.partition(" ")
    return stamp, dict(urllib.parse.parse_qsl(details.replace(",", "&"))).get(TASK_ID, ""), line


def _window(tail: int | None, since: float | None) -> dict:
    return {"tail": tail if tail is not None else "all"} | ({"since": int(since)} if since is not None else {})


def _stamped(stamped: str, label: str) -> tuple[str, str, str]:
    stamp, _, line = stamped.partition(" ")
    return stamp, label, line


def _lines(chunks) -> Iterator[str]:
    """Whole lines (a chunk may end inside one), decoded."""
    pending = b""
    for chunk in chunks:
        pending += chunk
        *whole, pending = pending.split(b"\n")
        for line in whole:
            yield line.decode(errors="replace").removesuffix("\r")
    if pending:
        yield pending.decode(errors="replace")


Parse = Callable[[str], tuple[str, str, str]]


def _merged(sources: list[tuple[object, Parse]], follow: bool, until: Until) -> Lines:
    """Each engine stream read by a thread of its own into one queue; sorted by timestamp when not following.
    Leaving (the caller closes the iterator, or `until()`) closes the streams, which ends their readers."""
    found: queue.Queue = queue.Queue()
    done = object()

    def read(chunks, parse: Parse) -> None:
        try:
            for stamped in _lines(chunks):
                found.put(parse(stamped))
        except (docker.errors.APIError, OSError, ValueError, AttributeError):
            pass  # the stream was cut: by the engine (container removed) or by us (closed)
        finally:
            found.put(done)

    readers = [threading.Thread(target=read, args=source, name="app-logs", daemon=True) for source in sources]
    for reader in readers:
        reader.start()
    try:
        if not follow:
            collected, ended = [], 0
            while ended < len(readers):
                try:
                    item = found.get(timeout=READ_SECONDS)
                except queue.Empty:
                    break  # a node that does not answer: what came is the answer
                if item is done:
                    ended += 1
                else:
                    collected.append(item)
            collected.sort(key=lambda each: each[0])  # RFC 3339 with fixed nanoseconds: sorts as text
            for _, label, line in collected:
                yield label, line
            return
        ended, asked = 0, time.monotonic()
        while ended < len(readers):
            if time.monotonic() - asked >= POLL_SECONDS:  # not for every line: until() may ask the store
                if until():
                    return
                asked = time.monotonic()
            try:
                item = found.get(timeout=POLL_SECONDS)
            except queue.Empty:
                continue
            if item is done:
                ended += 1
                continue
            yield item[1], item[2]
    finally:
        for chunks, _ in sources:
            close = getattr(chunks, "close", None)  # containers' streams close their socket; a service's may not
            if close is not None:
                try:
                    close()
                except (OSError, ValueError, RuntimeError):
                    pass
