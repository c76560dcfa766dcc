"""The release phase: an app's `release_command` (a migration, say), run once per new release in a
container of the new image, after the build and before the candidate starts (for a swarm app, the
container of a one-task Swarm job placed as the app's releases are: run_as_job).

The container `N-APP-SHA12-JOB-release` (labels of the release, and `hookdeploy.role=release`) has
the app's run options (runspec: env, volumes, network, limits) and no restart policy. Its output
goes to the job log line by line as it comes, as a build's does. A non-zero exit or the
`release_timeout` (the container is killed) is a StepFailed; a stop kills it too (Aborted). The
container is removed however it ends; its volumes stay. The output is followed by streams.py.
Imports hookdeploy.core, containers, runspec, streams and swarm; runtime.py calls it.
"""

from __future__ import annotations

import codecs
import queue
import threading
from typing import Callable

import docker
import docker.errors
from docker.types import NetworkAttachmentConfig, RestartPolicy, ServiceMode

from hookdeploy.core.config import AppConfig, Config
from hookdeploy.core.errors import StepFailed
from hookdeploy.core.models import Job, release_tag
from hookdeploy.core.names import printable
from hookdeploy.engine import containers, runspec, streams, swarm

ROLE = "release"


def container_name(config: Config, app: AppConfig, job: Job) -> str:
    """`N-APP-SHA12-JOB-release`."""
    return containers.container_name(config.server.name, app.name, job.sha, job.id) + "-release"


def run_command(client: docker.DockerClient, config: Config, app: AppConfig, job: Job, image: str,
                on_lines: Callable[[list[str]], None], stop: threading.Event | None = None) -> None:
    """Run the app's release command in a new container of `image` until it exits 0; StepFailed if it
    exits otherwise, cannot start or outlives `release_timeout`, Aborted once `stop` is set."""
    name = container_name(config, app, job)
    leftover = containers.get_container(client, name)
    if leftover is not None:  # of this job, from a crash
        containers.remove(leftover)
    labels = {**containers.release_labels(config.server.name, app.name, job.sha, job.id), containers.ROLE: ROLE}
    try:
        container = client.containers.create(image, command=list(app.release_command), name=name, labels=labels,
                                             detach=True, **runspec.run_options(config, app))
    except docker.errors.APIError as error:
        raise StepFailed(f"cannot create the release container {name}: {error.explanation or error}") from None
    try:
        try:
            container.start()
        except docker.errors.APIError as error:  # e.g. the command is not in the image
            raise StepFailed(f"release command cannot start: {error.explanation or error}") from None
        _relay(client, container, app.release_timeout, on_lines, stop)
        try:
            status = container.wait(timeout=60).get("StatusCode")
        except Exception as error:  # noqa: BLE001 - the engine went away or the output stream broke early
            raise StepFailed(f"release command {describe(app)}: no exit status came ({error})") from None
        if status != 0:
            raise StepFailed(f"release command {describe(app)} exited with status {status}; "
                             f"{release_tag(job.sha)} did not go live")
    finally:
        containers.remove(container)


def run_as_job(client: docker.DockerClient, config: Config, app: AppConfig, job: Job, image: str, auth: dict[str, str],
               on_lines: Callable[[list[str]], None], stop: threading.Event | None = None) -> None:
    """A swarm app's release command: a one-task Swarm job `N-APP-SHA12-JOB-release` of the pinned `image`
    under the app's placement (so it mounts the volumes of the node its releases run on), its output
    relayed as it comes; StepFailed and Aborted as run_command's. The service is removed however it ends."""
    name = container_name(config, app, job)
    leftover = swarm.get_service(client, name)
    if leftover is not None:
        swarm.remove_service(leftover)
    labels = {**containers.release_labels(config.server.name, app.name, job.sha, job.id), containers.ROLE: ROLE}
    try:
        swarm.login(client, auth)
        service = client.services.create(
            image, args=list(app.release_command), name=name, labels=labels, container_labels=labels,
            networks=[NetworkAttachmentConfig(target=config.server.name)], constraints=list(app.placement),
            mode=ServiceMode("replicated-job", replicas=1), restart_policy=RestartPolicy(condition="none"),
            **runspec.service_options(config, app))
    except docker.errors.APIError as error:
        raise StepFailed(f"cannot create the release job {name}: {error.explanation or error}") from None
    api = docker.from_env(version=client.api.api_version, timeout=int(app.release_timeout) + 60).api
    chunks: queue.Queue = queue.Queue()
    ended = threading.Event()
    outcome: dict = {}

    def stream() -> None:
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        try:
            for chunk in api.service_logs(service.id, stdout=True, stderr=True, follow=True):
                chunks.put(decoder.decode(chunk))
        except Exception:  # noqa: BLE001 - closed when the task ended; its exit status still counts
            pass

    def watch() -> None:
        # The log stream of a service does not end with its task: the task's state does.
        while not ended.wait(0.5):
            try:
                task = next(iter(service.tasks()), None)
            except docker.errors.APIError:
                continue
            status = (task or {}).get("Status") or {}
            if status.get("State") in ("complete", "failed", "rejected", "shutdown", "orphaned"):
                outcome.update(state=status["State"], error=(status.get("Err") or "").strip(),
                               exit=((status.get("ContainerStatus") or {}).get("ExitCode")))
                ended.wait(1.0)  # the last lines reach the manager's log stream
                chunks.put(None)
                return

    threads = [threading.Thread(target=target, name=f"release-{part}-{name}", daemon=True)
               for part, target in (("logs", stream), ("watch", watch))]
    for thread in threads:
        thread.start()
    try:
        streams.relay(chunks, on_lines, stop, ended.set, app.release_timeout, "release command")
    finally:
        ended.set()
        api.close()
        swarm.remove_service(service)
    if outcome.get("state") != "complete":
        why = (f"exited with status {outcome['exit']}" if outcome.get("exit") else
               f"did not run: {outcome.get('error') or outcome.get('state')}")
        raise StepFailed(f"release command {describe(app)} {why}; {release_tag(job.sha)} did not go live")


def _relay(client: docker.DockerClient, container, timeout: float, on_lines: Callable[[list[str]], None],
           stop: threading.Event | None) -> None:
    """Hand the container's output to `on_lines` until it exits; kill it on a timeout or a stop."""
    # A connection of its own, whose reads wait as long as the command may run quietly.
    api = docker.from_env(version=client.api.api_version, timeout=int(timeout) + 60).api
    chunks: queue.Queue = queue.Queue()

    def stream() -> None:
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        try:
            for chunk in api.logs(container.id, stream=True, follow=True, stdout=True, stderr=True):
                chunks.put(decoder.decode(chunk))
        except Exception as error:  # noqa: BLE001 - a broken stream ends the output, the exit status still counts
            chunks.put(f"(output stream ended: {error})\n")
        finally:
            rest = decoder.decode(b"", final=True)
            if rest:
                chunks.put(rest)
            chunks.put(None)

    def kill() -> None:
        try:
            container.kill()
        except docker.errors.APIError:
            pass  # it exited already
        reader.join(timeout=5)

    reader = threading.Thread(target=stream, name=f"release-{container.name}", daemon=True)
    reader.start()
    try:
        streams.relay(chunks, on_lines, stop, kill, timeout, "release command")
    finally:
        api.close()


def describe(app: AppConfig) -> str:
    """The command as a person would type it, shortened."""
    return printable(" ".join(app.release_command), 60)
