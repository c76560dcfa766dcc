"""Notifications: when a job ends, POST it to each `[[notify]]` URL that wants its final state.

Sent after the job's state is committed, from a background thread, so a slow or dead
receiver never delays or fails a deploy. Each target gets a few tries with backoff; the
outcome (sent, or failed after N tries) becomes an event of the job. Bodies hold the job
JSON and the live release, never the app's environment; a URL may carry a token (Slack's
do), so events and log lines name only its scheme and host.
Imports hookdeploy.core only (and no Docker); the worker, recovery and the scheduler call it.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import urllib.error
import urllib.parse
import urllib.request

from hookdeploy import __version__
from hookdeploy.core.config import Config, NotifyConfig
from hookdeploy.core.models import Job
from hookdeploy.core.store import Store

log = logging.getLogger(__name__)

TIMEOUT_SECONDS = 5.0
BACKOFF_SECONDS = (0.5, 1.0, 2.0)  # waited before the 2nd, 3rd, ... try
TRIES = 3


def send(config: Config, store: Store, job: Job) -> threading.Thread | None:
    """Notify every target that wants `job`'s final state, in a background thread; None if none does."""
    try:
        targets = [(index, target) for index, target in enumerate(config.notify) if job.state.value in target.events]
        if not targets:
            return None
        live = store.live_release(job.app)
        messages = [(index, target, body(config, job, live, target.format)) for index, target in targets]
        thread = threading.Thread(target=_deliver_all, args=(store, job, messages), name=f"notify-{job.id}")
        thread.start()
        return thread
    except Exception:  # noqa: BLE001 - a notification must never fail the job it reports
        log.exception("%s job %s: notifications not sent", job.app, job.id)
        return None


def body(config: Config, job: Job, live, format: str) -> bytes:
    """The POST body: the job JSON with the app's live release, or Slack's {"text": ...}."""
    if format == "slack":
        return json.dumps({"text": summary(config, job, live)}).encode()
    return json.dumps({"instance": config.server.name, "app": job.app, "event": job.state.value,
                       "job": job.to_json(), "live": live.to_json() if live else None}).encode()


def summary(config: Config, job: Job, live) -> str:
    """One line for people: `site @ abc1234 failed (job 12, push): reason; live: 9f8e7d6`."""
    line = f"{job.app} @ {job.sha[:7]} {job.state.value} (job {job.id}, {job.trigger.value} {job.kind.value})"
    if job.error:
        line += f": {job.error}"
    line += f"; live: {live.sha[:7]}" if live else "; nothing is live"
    return f"[{config.server.name}] {line}"


def deliver(url: str, data: bytes, *, tries: int = TRIES, backoff: tuple[float, ...] = BACKOFF_SECONDS,
            timeout: float = TIMEOUT_SECONDS) -> tuple[bool, int, str]:
    """POST `data` until a 2xx answer or `tries` run out: (sent, tries made, last problem)."""
    problem = ""
    for attempt in range(1, tries + 1):
        request = urllib.request.Request(url, data=data, method="POST", headers={
            "Content-Type": "application/json", "User-Agent": f"hookdeploy/{__version__}"})
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                response.read(65536)
                if 200 <= response.status < 300:
                    return True, attempt, ""
                problem = f"HTTP {response.status}"
        except urllib.error.HTTPError as error:
            problem = f"HTTP {error.code}"
        except (urllib.error.URLError, OSError, ValueError) as error:
            problem = str(getattr(error, "reason", error))
        if attempt < tries:
            time.sleep(backoff[min(attempt - 1, len(backoff) - 1)])
    return False, tries, problem


def where(target: NotifyConfig, index: int) -> str:
    """A target named without the secrets its URL may carry: `notify[0] (json, https://hooks.example)`."""
    url = urllib.parse.urlsplit(target.url)
    return f"notify[{index}] ({target.format}, {url.scheme}://{url.hostname})"


def _deliver_all(store: Store, job: Job, messages: list[tuple[int, NotifyConfig, bytes]]) -> None:
    try:
        for index, target, data in messages:
            sent, tries, problem = deliver(target.url, data)
            named = where(target, index)
            try_word = "try" if tries == 1 else "tries"
            if sent:
                store.log(job.id, f"notification sent to {named} after {tries} {try_word}")
                log.info("%s job %s @ %s: notified %s", job.app, job.id, job.sha[:7], named)
            else:
                store.log(job.id, f"notification to {named} failed after {tries} {try_word}: {problem}", kind="error")
                log.warning("%s job %s @ %s: notifying %s failed: %s", job.app, job.id, job.sha[:7], named, problem)
    except Exception:  # noqa: BLE001 - the thread's end is the only place left to report it
        log.exception("%s job %s: notifications failed", job.app, job.id)
    finally:
        store.close()


# -- task runs ---------------------------------------------------------------------------------------


def send_task(config: Config, run) -> threading.Thread | None:
    """Notify every target that wants `task_failed` of a task run that failed or timed out, in a
    background thread; None if none does. The body carries the run without its output (what a task
    prints is the app's, and may hold what its environment holds): `hookdeploy tasks APP` shows it."""
    try:
        targets = [(index, target) for index, target in enumerate(config.notify) if "task_failed" in target.events]
        if not targets:
            return None
        line = task_summary(config, run)
        messages = [(index, target, json.dumps({"text": line} if target.format == "slack" else {
            "instance": config.server.name, "app": run.app, "event": "task_failed", "task": run.task,
            "run": run.to_json(output=False)}).encode()) for index, target in targets]
        thread = threading.Thread(target=_deliver_task, args=(run, messages), name=f"notify-task-{run.id}")
        thread.start()
        return thread
    except Exception:  # noqa: BLE001 - a notification must never end the scheduler
        log.exception("%s task %s run %s: notifications not sent", run.app, run.task, run.id)
        return None


def task_summary(config: Config, run) -> str:
    """One line for people: `[N] site task cleanup timed_out (run 12, slot ...): reason`."""
    line = f"{run.app} task {run.task} {run.state.value} (run {run.id}, {run.trigger} {run.slot})"
    return f"[{config.server.name}] {line}" + (f": {run.reason}" if run.reason else "")


def _deliver_task(run, messages: list[tuple[int, NotifyConfig, bytes]]) -> None:
    for index, target, data in messages:
        sent, tries, problem = deliver(target.url, data)
        if sent:
            log.info("%s task %s run %s: notified %s", run.app, run.task, run.id, where(target, index))
        else:
            log.warning("%s task %s run %s: notifying %s failed after %d tries: %s", run.app, run.task, run.id,
                        where(target, index), tries, problem)
