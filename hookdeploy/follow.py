"""Following a job's log as it grows, for the pusher (post-receive), `--wait` and `logs --follow`.

Plain print, no click: the post-receive hook imports this and must start fast.
"""

from __future__ import annotations

import sys
import time

from hookdeploy.models import Job, JobState
from hookdeploy.store import Store

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
