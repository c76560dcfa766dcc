"""A worker node killed under load on the real 3-node cluster (scripts/cluster.sh): how slow the slowest
request is, how many take over 2 s, and how long the lost task stays in the proxy's upstream.

One hookdeploy instance (tests/cluster_helpers.py's SwarmInstance) with one app, `site`: 3 tasks, one
per node, read_timeout 2 s (a GET in flight to a lost task goes to another after that), health
timeout 1 s. A worker runs in this process as `hookdeploy worker` does, so the follower
(Recovery.follow, every FOLLOW_SECONDS) probes every task from the proxy. Load: THREADS threads GET /
through the proxy, one new connection each time, every request timed; after WARM seconds a worker
node with a task is killed (`scripts/cluster.sh kill-node`), the load goes on for AFTER seconds,
then the node is revived.

Goal (issue 24, item 4): no request slower than 5 s, none failed; the lost task out of the upstream
after 2 failed probes 1 s apart, whatever Swarm says of its node.

    flock /tmp/hdcluster.lock .venv/bin/python bench/swarm_node_loss.py [--after 30] [--threads 8]

Needs root, the host engine with hookdeploy-nginx:local and the cluster (brought up if it is not).
The rig is shared: run it under `flock /tmp/hdcluster.lock`, as the tests that use it are.
"""

from __future__ import annotations

import argparse
import http.client
import os
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(1, str(Path(__file__).resolve().parent.parent / "tests"))
from cluster_helpers import REGISTRY_PASSWORD_ENV, Cluster, SwarmInstance, cluster_problem, run_cluster_sh  # noqa: E402
from docker_helpers import site_files  # noqa: E402
from swarm import remove_from_nodes  # noqa: E402

from hookdeploy.core.models import JobState  # noqa: E402
from hookdeploy.engine import proxy  # noqa: E402
from hookdeploy.engine.worker import Worker  # noqa: E402

WARM = 5.0  # seconds of load before the kill
SLOW = 2.0  # a request over this is counted
GOAL = 5.0  # no request may take longer


class TimedLoad:
    """THREADS threads GETting / through the proxy until stopped; (started, seconds, error or None) of each."""

    def __init__(self, address: str, port: int, threads: int):
        self.address, self.port = address, port
        self.done = threading.Event()
        self.results: list[tuple[float, float, str | None]] = []
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self.hammer, daemon=True) for _ in range(threads)]

    def hammer(self) -> None:
        while not self.done.is_set():
            started = time.monotonic()
            error = None
            connection = http.client.HTTPConnection(self.address, self.port, timeout=60)
            try:
                connection.request("GET", "/")
                response = connection.getresponse()
                response.read()
                if response.status != 200:
                    error = f"status {response.status}"
            except (OSError, http.client.HTTPException) as failure:
                error = f"{type(failure).__name__}: {failure}"
            finally:
                connection.close()
            with self.lock:
                self.results.append((started, time.monotonic() - started, error))

    def __enter__(self) -> "TimedLoad":
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.done.set()
        for thread in self.threads:
            thread.join(90)


def routed(instance: SwarmInstance) -> set[str]:
    return set(proxy.routed_addresses(proxy.app_file(instance.config, "site")))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--after", type=float, default=30.0, help="seconds of load after the kill")
    parser.add_argument("--threads", type=int, default=8)
    options = parser.parse_args()
    problem = cluster_problem()
    if problem:
        sys.exit(problem)
    if run_cluster_sh("status", timeout=60).returncode != 0:
        completed = run_cluster_sh("up")
        if completed.returncode != 0:
            sys.exit(f"scripts/cluster.sh up failed ({completed.returncode}):\n{completed.stderr[-3000:]}")
    cluster = Cluster.from_state()
    os.environ["DOCKER_HOST"] = cluster.docker_host
    os.environ[REGISTRY_PASSWORD_ENV] = cluster.registry_password
    root = Path(tempfile.mkdtemp(prefix="hookdeploy-bench-node-loss-"))
    instance = SwarmInstance(root, cluster)
    stop = threading.Event()
    victim = None
    try:
        instance.configure({"site": {"replicas": 3, "read_timeout": 2.0, "drain_seconds": 1.0,
                                     "health": {"timeout": 1.0, "interval": 0.5, "deadline": 60.0}}})
        job = instance.deploy("site", site_files("v1"))
        if job.state is not JobState.SUCCEEDED:
            sys.exit(f"deploy ended {job.state.value}: {job.error}")
        tasks = instance.task_nodes(instance.store.live_release("site").container)
        victim = next(node for node in cluster.workers if node in tasks.values())
        lost = {address for address, node in tasks.items() if node == victim}
        worker = threading.Thread(target=Worker(instance.config, instance.store).run, args=(stop,), daemon=True)
        worker.start()
        print(f"3 tasks on {sorted(set(tasks.values()))}; killing {victim} (tasks {sorted(lost)}) after {WARM:g} s "
              f"of load from {options.threads} threads", flush=True)
        with TimedLoad(instance.address, instance.port, options.threads) as load:
            time.sleep(WARM)
            killed = run_cluster_sh("kill-node", victim, timeout=60)
            if killed.returncode != 0:
                sys.exit(f"kill-node failed: {killed.stderr}")
            killed_at = time.monotonic()
            dropped_after = None
            while time.monotonic() - killed_at < options.after:
                if dropped_after is None and not lost & routed(instance):
                    dropped_after = time.monotonic() - killed_at
                time.sleep(0.1)
    finally:
        stop.set()
        if victim is not None:
            run_cluster_sh("revive-node", victim, timeout=180)
        for step in (instance.cleanup, lambda: remove_from_nodes(cluster, instance), cluster.close):
            try:
                step()
            except Exception as error:  # noqa: BLE001 - every other step must still run
                print(f"cleanup: {error}", file=sys.stderr)
        shutil.rmtree(root, ignore_errors=True)
    results = load.results
    after_kill = [result for result in results if result[0] + result[1] >= killed_at]
    failed = [result for result in results if result[2]]
    slowest = max(seconds for _, seconds, _ in results)
    print(f"{len(results)} requests ({len(after_kill)} ending after the kill); failed: {len(failed)}; "
          f"slowest {slowest:.2f} s; over {SLOW:g} s: {sum(seconds > SLOW for _, seconds, _ in results)}; "
          f"over {GOAL:g} s: {sum(seconds > GOAL for _, seconds, _ in results)}")
    print("the lost task left the proxy " + (f"{dropped_after:.1f} s after the kill" if dropped_after is not None
                                             else f"not within {options.after:g} s"))
    for started, seconds, error in failed[:10]:
        print(f"  failed at {started - killed_at:+.1f} s after {seconds:.2f} s: {error}")
    print("goal " + ("met" if not failed and slowest <= GOAL else "NOT met"))


if __name__ == "__main__":
    main()
