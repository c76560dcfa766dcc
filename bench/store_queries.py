"""How fast a big job store answers `status` and `history APP --limit 50`.

Fills a fresh store with 10,000 jobs over four apps (each with its state events and a few log
lines, releases for the succeeded ones, something queued and running), then times the queries
behind the two commands in-process (Store methods, as the CLI calls them) and the commands
themselves as subprocesses (wall time, including Python start-up and imports).

Run from the repository root with the project's venv (no Docker needed):
    .venv/bin/python bench/store_queries.py [JOBS]        (default 10000)

Goal (issue 2): the queries answer in well under 100 ms.
"""

from __future__ import annotations

import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from hookdeploy.core.models import utcnow
from hookdeploy.core.store import Store

HOOKDEPLOY = str(Path(sys.executable).parent / "hookdeploy")
APPS = ("site", "api", "docs", "shop")


def fill(store: Store, count: int) -> None:
    """`count` finished jobs with events and releases, then per app one running and two queued jobs."""
    rng = random.Random(2)
    now = utcnow()
    with store.transaction() as db:
        for number in range(count):
            app = APPS[number % len(APPS)]
            sha = f"{rng.getrandbits(160):040x}"
            state = rng.choices(["succeeded", "failed", "superseded", "rolled_back"], [70, 15, 10, 5])[0]
            error = None if state in ("succeeded", "superseded") else "health check: got 502 from candidate"
            image = f"hookdeploy/{app}:{sha[:12]}"
            job = db.execute(
                "INSERT INTO jobs (app, kind, trigger, ref, sha, state, created_at, started_at, finished_at, "
                "error, image) VALUES (?, 'deploy', 'push', 'refs/heads/deploy', ?, ?, ?, ?, ?, ?, ?)",
                (app, sha, state, now, now, now, error, image)).lastrowid
            events = [("state", "queued (push, deploy)"), ("state", "running (worker bench)"),
                      ("step", "checkout"), ("log", "Step 1/2 : FROM hookdeploy-nginx:local"),
                      ("log", "Step 2/2 : COPY . /usr/share/nginx/html"), ("step", "build"),
                      ("state", state + (f": {error}" if error else ""))]
            db.executemany("INSERT INTO events (job, at, kind, message) VALUES (?, ?, ?, ?)",
                           [(job, now, kind, message) for kind, message in events])
            if state == "succeeded":
                db.execute("UPDATE releases SET state = 'retired', retired_at = ? WHERE app = ? AND state = 'live'",
                           (now, app))
                db.execute("INSERT INTO releases (app, sha, image, container, job, state, live_since) "
                           "VALUES (?, ?, ?, ?, ?, 'live', ?)", (app, sha, image, f"hookdeploy-{app}-{job}", job, now))
    for app in APPS:
        store.enqueue(app, f"{rng.getrandbits(160):040x}", coalesce=False)
        store.claim("bench", apps=[app])
        store.enqueue(app, f"{rng.getrandbits(160):040x}", coalesce=False)
        store.enqueue(app, f"{rng.getrandbits(160):040x}", coalesce=False)


def status_queries(store: Store) -> dict:
    """What `hookdeploy status --json` reads, for every app."""
    apps = {}
    for name in APPS:
        live = store.live_release(name)
        running = store.running(name)
        apps[name] = {"live": live.to_json() if live else None, "queued": store.queued_count(name),
                      "running": running.id if running else None}
    return {"apps": apps}


def history_queries(store: Store) -> list:
    """What `hookdeploy history site --limit 50 --json` reads."""
    return [job.to_json() for job in store.jobs("site", limit=50)]


def timings(function, repeat: int) -> list[float]:
    seconds = []
    for _ in range(repeat):
        started = time.perf_counter()
        function()
        seconds.append(time.perf_counter() - started)
    return seconds


def describe(name: str, seconds: list[float]) -> str:
    ms = sorted(s * 1000 for s in seconds)
    return (f"{name:<52} first {seconds[0] * 1000:7.2f} ms   median {statistics.median(ms):7.2f} ms   "
            f"max {ms[-1]:7.2f} ms")


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="hookdeploy-bench-") as folder:
        measure(Path(folder))


def measure(root: Path) -> None:
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 10_000
    config = root / "deploy.toml"
    config.write_text('[server]\nstate_dir = "state"\n' + "".join(
        f'[apps.{app}]\nrepo = "{app}.git"\n' + (f'hostnames = ["{app}.example"]\n' if app != "site" else "")
        for app in APPS))
    database = root / "state" / "hookdeploy.db"

    started = time.perf_counter()
    store = Store(database)
    fill(store, count)
    store.close()
    total = Store(database)
    jobs = total._connection().execute("SELECT count(*) FROM jobs").fetchone()[0]
    events = total._connection().execute("SELECT count(*) FROM events").fetchone()[0]
    total.close()
    print(f"store {database}: {jobs} jobs, {events} events, {len(APPS)} apps "
          f"(filled in {time.perf_counter() - started:.1f} s, {database.stat().st_size / 1e6:.1f} MB)")

    fresh = Store(database)  # a new connection, as each CLI run has
    print(describe("in-process: status (all apps)", timings(lambda: status_queries(fresh), 200)))
    print(describe("in-process: history site --limit 50", timings(lambda: history_queries(fresh), 200)))
    print(describe("in-process: open store + status + history", timings(
        lambda: (lambda s: (status_queries(s), history_queries(s), s.close()))(Store(database)), 50)))

    env = {key: value for key, value in os.environ.items() if key != "HOOKDEPLOY_CONFIG"}

    def cli(*arguments: str) -> str:
        completed = subprocess.run([HOOKDEPLOY, "--config", str(config), *arguments], capture_output=True,
                                   text=True, check=True, env=env)
        return completed.stdout

    assert len(json.loads(cli("history", "site", "--limit", "50", "--json"))) == 50
    assert set(json.loads(cli("status", "--json"))["apps"]) == set(APPS)
    floor = [sys.executable, "-c", "import hookdeploy.cli"]
    print(describe("start-up floor: python -c 'import hookdeploy.cli'",
                   timings(lambda: subprocess.run(floor, check=True, env=env), 10)))
    print(describe("CLI wall: hookdeploy status --json", timings(lambda: cli("status", "--json"), 10)))
    print(describe("CLI wall: hookdeploy history site --limit 50 --json",
                   timings(lambda: cli("history", "site", "--limit", "50", "--json"), 10)))
    print(describe("CLI wall: hookdeploy history site --limit 50",
                   timings(lambda: cli("history", "site", "--limit", "50"), 10)))
    print("goal: the queries well under 100 ms")


if __name__ == "__main__":
    main()
