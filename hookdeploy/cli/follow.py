"""Following a job's log as it grows, for the pusher (post-receive), `--wait` and `logs --follow`.

Plain print, no click: the post-receive hook imports this and must start fast.
"""

from __future__ import annotations

import sys
import time

from hookdeploy.core.models import Job, JobState
from hookdeploy.core.store import Store

WORKER_ALIVE_SECONDS = 10.0


def follow(store: Store, job_id: int, prefix: str | None, show_all: bool = False) -> Job:
    """Print a job's log as it grows until the job ends; return the final job.

    `prefix` marks steps and states (output lines are indented under them); None prints nothing;
    `show_all` prints whole log lines with times.
    """
    after = 0
    warned = False
    while True:
        job = store.job(job_id)
        for event in store.events(job_id, after):
            after = event.id
            if prefix is None:
                continue
            if show_all:
                print(event.render(), flush=True)
            elif event.kind == "log":
                print(" " * len(prefix) + event.message, flush=True)
            else:
                took = f" ({event.duration:.1f} s)" if event.duration is not None else ""
                print(f"{prefix}{event.message}{took}", flush=True)
        if job.state.finished:
            return job
        if not warned and job.state is JobState.QUEUED and not store.worker_alive(WORKER_ALIVE_SECONDS):
            print("waiting: no worker is running (start it with: hookdeploy worker)", file=sys.stderr, flush=True)
            warned = True
        time.sleep(0.1)


def site_url(publish: str, hostnames: tuple[str, ...]) -> str:
    """Where visitors reach an app: its first hostname, or the proxy's published address."""
    host, _, port = publish.rpartition(":")
    if hostnames:
        host = hostnames[0].replace("*", "www")
    elif host in ("0.0.0.0", "::", "[::]"):
        import socket

        host = socket.gethostname()
    return f"http://{host}" + ("" if port == "80" else f":{port}")


def follow_push(store: Store, job: Job, url: str, out=None) -> Job:
    """Tell the pusher how their deploy goes, in the style of Dokku; follow a superseding job too.

    Ctrl-C in the pusher's terminal ends only this report: the worker runs the job on its own.
    """
    out = out or sys.stdout
    arrow = "-----> "

    def say(text: str) -> None:
        print(text, file=out, flush=True)

    before = store.live_release(job.app)  # the hook has already said "queued job N (APP @ SHA)"
    after, waited_for, retried_at = 0, None, None
    while True:
        current = store.job(job.id)
        for event in store.events(job.id, after):
            after = event.id
            line = _push_line(event, url)
            if line is not None:
                say(line if event.kind == "log" or line.startswith(" ") else arrow + line)
        if current.state is JobState.SUPERSEDED:
            newer = store.jobs(job.app, limit=1)[0]
            say(f"{arrow}superseded by job {newer.id} ({newer.app} @ {newer.sha[:7]}); following it")
            job, after, waited_for = newer, 0, None
            continue
        retry = store.retry_of(job.id) if current.state is JobState.INTERRUPTED else None
        if retry is not None:
            # "interrupted: the worker is restarting; queued again as job N"
            say(f"{arrow}interrupted: {current.error}")
            job, after, waited_for, retried_at = retry, 0, None, time.monotonic()
            continue
        if current.state.finished:
            if current.state is not JobState.SUCCEEDED:
                live = store.live_release(job.app)
                unchanged = live.sha[:7] if live else "none"
                if live and before and live.sha != before.sha:
                    unchanged = f"{live.sha[:7]} (changed by another job)"
                say(f"{arrow}{current.state.value.replace('_', ' ')}: {current.error or 'no reason given'}")
                say(f"{arrow}live release unchanged: {unchanged}")
            return current
        if current.state is JobState.QUEUED:
            running = store.running(job.app)
            if running is not None and running.id != waited_for:
                waited_for = running.id
                say(f"{arrow}waiting for job {running.id} ({running.sha[:7]}) to finish")
            if (retried_at is not None and time.monotonic() - retried_at > WORKER_ALIVE_SECONDS
                    and not store.worker_alive(WORKER_ALIVE_SECONDS)):
                say(f"{arrow}no worker is running now; job {job.id} runs when one starts (hookdeploy worker)")
                return current
        time.sleep(0.1)


def _push_line(event, url: str) -> str | None:
    """An event as the pusher sees it, or None for what only the job log needs."""
    message = event.message
    if event.kind == "log":
        return " " * 7 + message
    if event.kind == "state":
        return None  # the queued line, the outcome and its reason are said separately
    took = f" ({event.duration:.1f} s)" if event.duration is not None else ""
    if message.startswith("building "):
        return "Building " + message.removeprefix("building ")
    if message.startswith("live: "):
        # "live: site serves abc123456789 (was 9f8e7d6a1b2c)"
        rest = message.removeprefix("live: ").split(" serves ", 1)[-1]
        return f"Switched: {url} serves {rest}"
    if message.startswith("started candidate"):
        return "Starting candidate: " + message.removeprefix("started candidate ") + took
    if " in " in message and message.endswith(" s"):  # says its own duration already
        took = ""
    return message[0].upper() + message[1:] + took
