"""What a release's app prints: the output of its containers (`replica N`) or Swarm tasks (`task SLOT@NODE`).

`logs(client, release_name, tail, since, follow)` yields (label, line) pairs. Without `follow` the
lines of every replica or task are merged by the engine's timestamps, oldest first; `tail` is per
replica or task (as `docker compose logs` and `docker service logs` count it). With `follow` the
lines come as the engine sends them until every stream ends (the containers stopped, the service
went) or `until()` is true (asked about once a second). Lines are returned as the app wrote them:
whoever shows them escapes them.
Imports hookdeploy.core, containers, swarm and runtime (a release's containers); the API and `app-logs` call it.
"""

from __future__ import annotations

import queue
import threading
import time
import urllib.parse
from typing import Callable, Iterator

import docker
import docker.errors

from hookdeploy.core.errors import BadInput
from hookdeploy.engine import containers, swarm
from hookdeploy.engine.runtime import release_containers

# How long a log read without --follow may take: a Swarm node that is gone never answers for its tasks.
READ_SECONDS = 15.0
POLL_SECONDS = 1.0
TASK_ID = "com.docker.swarm.task.id"


def logs(client: docker.DockerClient, release_name: str, tail: int | None = None, since: float | None = None,
         follow: bool = False, until: Callable[[], bool] = lambda: False) -> Iterator[tuple[str, str]]:
    """(replica or task label, line) of the release running as `release_name`: its containers, else its service."""
    container = containers.get_container(client, release_name)
    if container is not None:
        return container_logs(client, container, tail, since, follow, until)
    service = swarm.get_service(client, release_name) if swarm.swarm_active(client) else None
    if service is not None:
        return service_logs(client, service, tail, since, follow, until)
    raise BadInput(f"the live release's containers ({release_name}) are gone from the engine")


def container_logs(client: docker.DockerClient, container, tail: int | None, since: float | None, follow: bool,
                   until: Callable[[], bool]) -> Iterator[tuple[str, str]]:
    """The lines of the release's containers (the one named and its job's other replicas)."""
    release = release_containers(client, container)
    first = release[0].name
    sources = []
    for each in release:
        label = "replica 1" if each.name == first else f"replica {each.name.removeprefix(first + '-')}"
        try:
            chunks = each.logs(stdout=True, stderr=True, timestamps=True, stream=True, follow=follow,
                               **_window(tail, since))
        except docker.errors.NotFound:
            continue  # retired between the listing and now
        sources.append((chunks, lambda stamped, label=label: _stamped(stamped, label)))
    return _merged(sources, follow, until)


def service_logs(client: docker.DockerClient, service, tail: int | None, since: float | None, follow: bool,
                 until: Callable[[], bool]) -> Iterator[tuple[str, str]]:
    """The lines of the service's tasks, each labelled with its slot and node (`task 2@node-b`)."""
    names = {task.id: f"task {task.slot}@{task.node}" for task in swarm.tasks(client, service, "")}
    chunks = service.logs(stdout=True, stderr=True, timestamps=True, details=True, follow=follow, **_window(tail, since))

    def parse(stamped: str) -> tuple[str, str, str]:
        # `TIMESTAMP k=v,k=v LINE`: the details are the task's attributes, URL-encoded
        stamp, _, rest = stamped.partition(" ")
        details, _, line = rest.partition(" ")
        task = dict(urllib.parse.parse_qsl(details.replace(",", "&"))).get(TASK_ID, "")
        if task and task not in names:  # a task Swarm started since (a replacement): look again, once
            names.update({found.id: f"task {found.slot}@{found.node}" for found in swarm.tasks(client, service, "")})
            names.setdefault(task, f"task {task[:12]}")
        return stamp, names.get(task, "task ?"), line

    return _merged([(chunks, parse)], follow, until)


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


def _merged(sources: list[tuple[object, Parse]], follow: bool, until: Callable[[], bool]) -> Iterator[tuple[str, str]]:
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
