"""Following a job's log as it grows, for the pusher (post-receive), `--wait` and `logs --follow`.

Plain print, no click: the post-receive hook imports this and must start fast.
"""

from __future__ import annotations

import sys
import time
from typing import Iterator

from hookdeploy.core.models import Event, Job, JobState
from hookdeploy.core.names import one_line, split_address
from hookdeploy.core.store import Store

WORKER_ALIVE_SECONDS = 10.0
POLL_SECONDS = 0.1


def watch(store: Store, job_id: int) -> Iterator[tuple[Job, list[Event]]]:
    """The job and the events logged since the last turn, about ten times a second, until the caller stops.

    The job is read before its events, so the turn that sees it finished also has its last events.
    """
    after = 0
    while True:
        job = store.job(job_id)
        events = store.events(job_id, after)
        if events:
            after = events[-1].id
        yield job, events
        time.sleep(POLL_SECONDS)


def follow(store: Store, job_id: int, prefix: str | None, show_all: bool = False) -> Job:
    """Print a job's log as it grows until the job ends; return the final job.

    `prefix` marks steps and states (output lines are indented under them); None prints nothing;
    `show_all` prints whole log lines with times.
    """
    warned = False
    for job, events in watch(store, job_id):
        for event in events if prefix is not None else ():
            print(one_line(_log_line(event, prefix, show_all)), flush=True)
        if job.state.finished:
            return job
        if not warned and job.state is JobState.QUEUED and not store.worker_alive(WORKER_ALIVE_SECONDS):
            print("waiting: no worker is running (start it with: hookdeploy worker)", file=sys.stderr, flush=True)
            warned = True
    raise AssertionError("watch() never ends")


def _log_line(event: Event, prefix: str, show_all: bool) -> str:
    if show_all:
        return event.render()
    if event.kind == "log":
        return " " * len(prefix) + event.message
    took = f" ({event.duration:.1f} s)" if event.duration is not None else ""
    return f"{prefix}{event.message}{took}"


def site_url(publish: str, hostnames: tuple[str, ...]) -> str:
    """Where visitors reach an app: its first hostname, or the proxy's published address."""
    host, port = split_address(publish)
    if hostnames:
        host = hostnames[0].replace("*", "www")
    elif host in ("0.0.0.0", "::"):
        import socket

        host = socket.gethostname()
    elif ":" in host:
        host = f"[{host}]"
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
    waited_for, retried_at = None, None
    while True:  # one turn per job followed: the pushed one, then whatever supersedes or retries it
        for current, events in watch(store, job.id):
            for event in events:
                line = _push_line(event, url)
                if line is not None:
                    say(line if event.kind == "log" or line.startswith(" ") else arrow + line)
            newer = store.jobs(job.app, limit=1)[0] if current.state is JobState.SUPERSEDED else None
            if newer is not None and newer.id > job.id:
                say(f"{arrow}superseded by job {newer.id} ({newer.app} @ {newer.sha[:7]}); following it")
                job, waited_for = newer, None
                break
            then = _after_interruption(store, job) if current.state is JobState.INTERRUPTED else None
            if then is not None:
                # "interrupted: the worker is restarting; queued again as job N" (its retry), or
                # "...; job N is queued after it" (a newer push, which deploys instead of a retry)
                say(f"{arrow}interrupted: {current.error}")
                if then.retry_of != job.id:
                    say(f"{arrow}following job {then.id} ({then.app} @ {then.sha[:7]})")
                job, waited_for, retried_at = then, None, time.monotonic()
                break
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


def _after_interruption(store: Store, job: Job) -> Job | None:
    """What runs in place of the interrupted `job`: its retry, else the newest job of its app queued
    after it (which is why no retry was queued), else None."""
    retry = store.retry_of(job.id)
    if retry is not None:
        return retry
    newest = store.jobs(job.app, limit=1)
    return newest[0] if newest and newest[0].id > job.id else None


def _push_line(event: Event, url: str) -> str | None:
    """An event as the pusher sees it, or None for what only the job log needs."""
    message = event.message
    if event.kind == "log":
        return " " * 7 + message
    if event.kind == "state":
        return None  # the queued line, the outcome and its reason are said separately
    took = f" ({event.duration:.1f} s)" if event.duration is not None else ""
    if event.step == "live":
        # "live: site serves abc123456789 (was 9f8e7d6a1b2c)"
        return f"Switched: {url} serves " + message.split(" serves ", 1)[-1]
    if event.step == "candidate" and event.duration is not None:
        return "Starting candidate: " + message.removeprefix("started candidate ") + took
    if " in " in message and message.endswith(" s"):  # says its own duration already
        took = ""
    return message[0].upper() + message[1:] + took
