"""The swarm target on the real 3-node cluster (scripts/cluster.sh): requests/s through the proxy with
1 task vs 3 tasks, and deploy time with 3 tasks on one node vs spread over the three nodes.

One hookdeploy instance (tests/cluster_helpers.py's SwarmInstance: state_dir in the cluster's shared
folder, proxy on the manager published on MANAGER_IP:PORT, releases pushed to the cluster registry and
pinned by digest) with one app, `site`: nginx serving a small static page and /health
(tests/docker_helpers.py's site_files). Each round deploys a new commit as each of
  1 task, a worker:  replicas = 1, placement ["node.role==worker"]
  1 task, manager:   replicas = 1, placement ["node.role==manager"] (the proxy's node: no VXLAN hop)
  3 tasks, manager:  replicas = 3, placement ["node.role==manager"]
  3 tasks, 3 nodes:  replicas = 3, no placement (Swarm spreads them, one per node)
in this order, and runs hey through the proxy after each, so that drift over the run (other work on
the machine) falls on every variant alike. A first deploy (overlay network and proxy made) is
warm-up, not measured. What it compares: requests/s of 3 tasks over 3 nodes vs 1 task (and the same
on the proxy's node alone, to tell what replicas do from what the overlay does), and deploy time of
3 tasks on one node vs spread over three.

Requests/s: `hey -z SECONDSs -c CONNECTIONS http://MANAGER_IP:PORT/` from this host, after a short
unmeasured burst; hey's Requests/sec, p50/p99 latency, and the answers that were not 200 (plus
connection errors). Deploy time: from the job's created_at (queued) to its "live:" event in the
store, with the per-step durations the worker records (named as /metrics names them). The worker
runs in this process (SwarmInstance.deploy), so "queued" is also "worker picked it up".

All three nodes are containers on this one machine: they, hey, the proxy and every task share its
CPUs, so 3 replicas cannot add CPU; the ratio shows what the proxy and the overlay cost, not what
real hosts would gain.

    .venv/bin/python bench/swarm.py [--rounds 3] [--seconds 10] [--connections 20]

Needs root, the host engine with hookdeploy-nginx:local and the cluster (run as is, it brings the
cluster up with `scripts/cluster.sh up` if `status` says it is not), and hey.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(1, str(Path(__file__).resolve().parent.parent / "tests"))
from harness import parse_hey  # noqa: E402
from cluster_helpers import REGISTRY_PASSWORD_ENV, Cluster, SwarmInstance, cluster_problem, run_cluster_sh  # noqa: E402
from docker_helpers import site_files  # noqa: E402

from hookdeploy.core.models import JobState, parse_time  # noqa: E402

# Generous: 3 tasks on a loaded 2-core machine, some pulling; the time to healthy is measured, not capped.
HEALTH = {"timeout": 2.0, "deadline": 60.0}
ON_MANAGER = ["node.role==manager"]  # where the proxy runs: no VXLAN hop between proxy and tasks
ON_A_WORKER = ["node.role==worker"]
STEPS = ("build", "push", "candidate", "health", "switch", "verify")
ONE_WORKER, ONE_MANAGER, THREE_MANAGER, THREE_SPREAD = ("1 task, a worker", "1 task, manager", "3 tasks, manager",
                                                        "3 tasks, 3 nodes")
VARIANTS = (
    (ONE_WORKER, {"replicas": 1, "placement": ON_A_WORKER}),
    (ONE_MANAGER, {"replicas": 1, "placement": ON_MANAGER}),
    (THREE_MANAGER, {"replicas": 3, "placement": ON_MANAGER}),
    (THREE_SPREAD, {"replicas": 3}),
)


def hey(url: str, seconds: int, connections: int) -> dict:
    """hey for `seconds` at `connections` concurrent connections: rps, p50/p99 (s), non-200 answers, errors."""
    subprocess.run(["hey", "-n", str(connections * 20), "-c", str(connections), url],  # warm the keepalives
                   capture_output=True, check=True, timeout=60)
    output = subprocess.run(["hey", "-z", f"{seconds}s", "-c", str(connections), url], capture_output=True,
                            text=True, check=True, timeout=seconds + 60).stdout
    counts = parse_hey(output)
    rps = re.search(r"Requests/sec:\s+([\d.]+)", output)
    percentiles = dict(re.findall(r"^\s+(\d+)% in ([\d.]+) secs", output, re.MULTILINE))
    if rps is None or "50" not in percentiles or "99" not in percentiles:
        raise RuntimeError(f"cannot read hey's report:\n{output[-2000:]}")
    return {"rps": float(rps.group(1)), "p50": float(percentiles["50"]), "p99": float(percentiles["99"]),
            "not_ok": counts["failed"], "total": counts["total"]}


def deploy(instance: SwarmInstance, table: dict, version: str) -> dict:
    """Configure `site` with `table` and deploy a new commit; return its queued->live and step seconds, task nodes."""
    instance.configure({"site": {**table, "health": HEALTH}})
    job = instance.deploy("site", site_files(version))
    if job.state is not JobState.SUCCEEDED:
        log = "\n".join(instance.events(job.id))
        raise RuntimeError(f"deploy of {version} ended {job.state.value}: {job.error}\n{log}")
    events = instance.store.events(job.id)
    live = next(event for event in events if event.kind == "step" and event.message.startswith("live: "))
    steps: dict[str, float] = {}
    for event in events:
        if event.kind == "step" and event.duration is not None:
            label = event.step or event.message
            steps[label] = steps.get(label, 0.0) + event.duration
    answer = instance.get()
    if answer.status != 200 or answer.release != job.sha[:12] or version not in answer.body:
        raise RuntimeError(f"{version} is live but the proxy answers {answer.status} {answer.release} "
                           f"{answer.body[:80]!r}")
    release = instance.store.live_release("site")
    tasks = instance.task_nodes(release.container)
    routed = instance.proxy_files()["app-site.conf"].count("    server ")
    if routed != table["replicas"]:
        raise RuntimeError(f"the proxy routes to {routed} addresses, not {table['replicas']}")
    return {"live": (parse_time(live.at) - parse_time(job.created_at)).total_seconds(),
            "finished": (parse_time(job.finished_at) - parse_time(job.created_at)).total_seconds(),
            "steps": steps, "nodes": sorted(tasks.values())}


def others_on_cluster(instance: SwarmInstance) -> int:
    """Services on the cluster that are not this bench's (someone's tests running alongside)."""
    return sum(1 for service in instance.client.services.list()
               if service.attrs["Spec"].get("Labels", {}).get("hookdeploy.instance") != instance.name)


def remove_from_nodes(cluster: Cluster, instance: SwarmInstance, timeout: float = 30.0) -> list[str]:
    """Remove the task containers and release images the nodes still hold for this instance (its cleanup
    reaches the manager's engine only; Swarm removes a removed service's containers in its own time);
    return what is left after `timeout`."""
    label = f"label=hookdeploy.instance={instance.name}"
    deadline = time.monotonic() + timeout
    while True:
        left = []
        for node in cluster.nodes:
            found = {}
            for kind, listing, removal in (("container", ["ps", "-aq"], ["rm", "-f"]),
                                           ("image", ["images", "-q"], ["rmi", "-f"])):
                ids = sorted(set(cluster.exec(node, "docker", *listing, "--filter", label, check=False).stdout.split()))
                if ids:
                    cluster.exec(node, "docker", *removal, *ids, check=False)
                    found[kind] = len(ids)
            left += [f"{count} {kind}(s) on {node}" for kind, count in found.items()]
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(1)


def short_node(name: str) -> str:
    return name.removeprefix("hdcluster-")


def interrupted(*_) -> None:
    """SIGTERM: clean up as on Ctrl-C."""
    raise KeyboardInterrupt


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=10, help="length of each hey run")
    parser.add_argument("--connections", type=int, default=20, help="hey's concurrent connections")
    options = parser.parse_args()
    problem = cluster_problem() or (None if shutil.which("hey") else "hey is missing (apt-get install hey)")
    if problem:
        sys.exit(problem)
    signal.signal(signal.SIGTERM, interrupted)
    began = time.monotonic()
    if run_cluster_sh("status", timeout=60).returncode != 0:
        print("cluster: not up; scripts/cluster.sh up ...", flush=True)
        completed = run_cluster_sh("up")
        if completed.returncode != 0:
            sys.exit(f"scripts/cluster.sh up failed ({completed.returncode}):\n{completed.stderr[-3000:]}")
    cluster = Cluster.from_state()
    os.environ["DOCKER_HOST"] = cluster.docker_host  # the in-process worker's engine
    os.environ[REGISTRY_PASSWORD_ENV] = cluster.registry_password
    root = Path(tempfile.mkdtemp(prefix="hookdeploy-bench-swarm-"))
    instance = SwarmInstance(root, cluster)
    url = f"http://{instance.address}:{instance.port}/"
    load: dict[str, list[dict]] = {name: [] for name, _ in VARIANTS}
    deploys: dict[str, list[dict]] = {name: [] for name, _ in VARIANTS}
    others: list[int] = []
    loads: list[float] = []  # the host's 1-minute load average as each hey run starts
    left: list[str] = []
    versions = 0
    try:
        info = cluster.client.info()
        print(f"machine: {os.cpu_count()} CPUs, shared by this process, hey, the proxy, the 3 nested engines and every "
              f"task; cluster: {len(cluster.nodes)} nodes, Docker {info.get('ServerVersion')} on the manager")
        print(f"instance {instance.name}, proxy {url} (nginx on the manager, upstream = every task's overlay address, "
              f"keepalive 32); "
              f"load: hey -z {options.seconds}s -c {options.connections}")
        started = time.monotonic()
        deploy(instance, VARIANTS[0][1], "warm-up")
        print(f"warm-up deploy (overlay network + proxy made, not measured): {time.monotonic() - started:.1f} s",
              flush=True)
        for round_number in range(1, options.rounds + 1):
            for name, table in VARIANTS:
                versions += 1
                result = deploy(instance, table, f"round {round_number} {name} v{versions}")
                deploys[name].append(result)
                others.append(others_on_cluster(instance))
                loads.append(os.getloadavg()[0])
                measured = hey(url, options.seconds, options.connections)
                load[name].append(measured)
                nodes = ", ".join(short_node(node) for node in result["nodes"])
                print(f"round {round_number} {name:<17} live in {result['live']:5.2f} s (tasks on: {nodes}); "
                      f"{measured['rps']:7.0f} req/s, p50 {measured['p50'] * 1000:5.1f} ms, "
                      f"p99 {measured['p99'] * 1000:6.1f} ms, not 200: {measured['not_ok']}", flush=True)
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not cut the cleanup short
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        steps = [instance.cleanup, lambda: left.extend(remove_from_nodes(cluster, instance)),
                 lambda: left.extend(f"service {name}" for name in instance.service_names()), cluster.close]
        for step in steps:
            try:
                step()
            except Exception as error:  # noqa: BLE001 - every other step must still run
                print(f"cleanup: {error}", file=sys.stderr)
        shutil.rmtree(root, ignore_errors=True)
        signal.signal(signal.SIGINT, signal.default_int_handler)

    report(options, load, deploys, others, loads, left)
    print(f"run took {time.monotonic() - began:.0f} s")


def report(options, load: dict[str, list[dict]], deploys: dict[str, list[dict]], others: list[int],
           loads: list[float], left: list[str]) -> None:
    """The tables, the ratios and the one-line summary."""
    def rps(name: str) -> float:
        return median([run["rps"] for run in load[name]])

    def live(name: str) -> float:
        return median([run["live"] for run in deploys[name]])

    def step(name: str, label: str) -> float:
        return median([run["steps"].get(label, 0.0) for run in deploys[name]])

    print()
    print(f"requests through the proxy (medians of {options.rounds} runs of {options.seconds} s; not-200 summed)")
    print(f"{'variant':<20}{'req/s':>8}{'min':>7}{'max':>7}{'p50 ms':>8}{'p99 ms':>8}{'not 200':>9}{'requests':>10}"
          f"{'vs 1 task, a worker':>21}")
    for name, _ in VARIANTS:
        runs = load[name]
        print(f"{name:<20}{rps(name):>8.0f}{min(r['rps'] for r in runs):>7.0f}{max(r['rps'] for r in runs):>7.0f}"
              f"{median([r['p50'] for r in runs]) * 1000:>8.1f}"
              f"{median([r['p99'] for r in runs]) * 1000:>8.1f}{sum(r['not_ok'] for r in runs):>9}"
              f"{sum(r['total'] for r in runs):>10}{rps(name) / rps(ONE_WORKER):>20.2f}x")
    print(f"  replicas 3 vs 1: {rps(THREE_SPREAD) / rps(ONE_WORKER):.2f}x spread over the nodes (vs 1 task on a "
          f"worker), {rps(THREE_MANAGER) / rps(ONE_MANAGER):.2f}x all on the proxy's node (vs 1 task there); "
          f"1 task on the proxy's node vs on a worker: {rps(ONE_MANAGER) / rps(ONE_WORKER):.2f}x")
    print(f"  all three nodes are containers sharing this machine's {os.cpu_count()} CPUs with hey and the proxy: "
          f"3 replicas add no CPU here, so these ratios say what the proxy spreading over 3 upstreams and the "
          f"overlay (VXLAN between nodes) cost or save, not what 3 real hosts would gain")

    print()
    print(f"deploy: job queued -> live (medians of {options.rounds}; steps in s from the job's events)")
    header = "".join(f"{label:>10}" for label in STEPS)
    print(f"{'variant':<20}{'live s':>8}{'min':>7}{'max':>7}{header}{'done s':>8}")
    for name, _ in VARIANTS:
        lives = [run["live"] for run in deploys[name]]
        steps = "".join(f"{step(name, label):>10.2f}" for label in STEPS)
        print(f"{name:<20}{live(name):>8.2f}{min(lives):>7.2f}{max(lives):>7.2f}{steps}"
              f"{median([run['finished'] for run in deploys[name]]):>8.2f}")
    print("  candidate = the service created; health = until every task is running and passed its check (the "
          "nodes' pulls and the task starts fall here); done = queued -> job finished (adds the old release's "
          "drain, its removal and pruning)")
    gap = live(THREE_SPREAD) - live(THREE_MANAGER)
    print(f"  3 tasks spread over 3 nodes vs all on the manager: {gap:+.2f} s queued -> live "
          f"({live(THREE_SPREAD) / live(THREE_MANAGER):.2f}x), of which health "
          f"{step(THREE_SPREAD, 'health') - step(THREE_MANAGER, 'health'):+.2f} s. The manager built the image and "
          f"has every layer; the workers pull each release's own small layer (page + /health), the base image's "
          f"layers being cached on them after the first pull")

    print()
    busy = max(others) if others else 0
    print(f"noise: other services on the cluster as each hey run started (others' tests): max {busy}; this "
          f"machine's 1-minute load average then: median {median(loads):.1f}, max {max(loads, default=0):.1f} "
          f"on {os.cpu_count()} CPUs" + (" — the numbers shared the machine with other work" if busy or
                                         max(loads, default=0) > (os.cpu_count() or 1) else ""))
    print(f"left behind: {', '.join(left) if left else 'nothing'} (the releases stay in the cluster registry)")
    print(f"summary: through the proxy, 3 tasks over 3 nodes serve {rps(THREE_SPREAD) / rps(ONE_WORKER):.2f}x the "
          f"req/s of 1 task ({rps(THREE_MANAGER) / rps(ONE_MANAGER):.2f}x when all sit on the proxy's node; one "
          f"{os.cpu_count()}-CPU machine); a 3-task deploy is live in {live(THREE_SPREAD):.1f} s spread vs "
          f"{live(THREE_MANAGER):.1f} s on one node ({gap:+.1f} s)")

if __name__ == "__main__":
    main()
