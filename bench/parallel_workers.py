"""Time to deploy N apps with one `hookdeploy worker --drain` vs K of them started together.

One instance with N static nginx sites, each on its own hostname. A first round of K workers on
the fresh instance creates the network and the proxy (not timed; it checks they exist once). Then
each timed round commits a new version of every app, queues one deploy each and times the workers
from their start until the last one exits (all jobs finished): first 1 worker, then K. Both timed
rounds do the same work: N builds of new commits, N candidates, N switches, N old releases retired.
After each round every app must answer its own new version through the proxy, and the instance
must have exactly one network named after it and one proxy. Goal: K workers well under 1 worker.

    .venv/bin/python bench/parallel_workers.py [--apps 12] [--workers 3]
"""

from __future__ import annotations

import argparse
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).parent.parent / "tests"))
from docker_helpers import HOOKDEPLOY, Instance, site_files  # noqa: E402
from harness import run  # noqa: E402

import docker  # noqa: E402


def queue_new_versions(instance: Instance, apps: list[str], label: str) -> dict[str, str]:
    """Commit a new version of every app and queue its deploy; return app → the version's text."""
    versions = {}
    for app in apps:
        versions[app] = f"{app} {label} {secrets.token_hex(4)}"
        instance.enqueue(app, instance.commit(app, site_files(versions[app])))
    return versions


def drain_with(instance: Instance, workers: int, label: str) -> tuple[float, list[str]]:
    """Start `workers` `hookdeploy worker --drain` back to back; seconds until the last exits, and problems."""
    command = [str(HOOKDEPLOY), "--config", str(instance.config_path), "worker", "--drain"]
    logs = [instance.root / f"worker-{label}-{number}.log" for number in range(workers)]
    started = time.monotonic()
    processes = [subprocess.Popen(command, stdout=log.open("w"), stderr=subprocess.STDOUT) for log in logs]
    codes = [process.wait(timeout=900) for process in processes]
    took = time.monotonic() - started
    problems = []
    for code, log in zip(codes, logs):
        output = log.read_text()
        lines = [line for line in output.splitlines() if "WARNING" in line or "ERROR" in line or "Traceback" in line]
        if code != 0 or lines:
            problems.append(f"{label} {log.name}: exit {code}; " + " | ".join(lines[:5]))
    return took, problems


def check(instance: Instance, versions: dict[str, str]) -> tuple[list[str], int]:
    """What is wrong after a round (empty if nothing), and how many workers ran its jobs."""
    wrong, ran_by = [], set()
    for app, version in versions.items():
        job = instance.store.jobs(app, limit=1)[0]
        ran_by.add(job.worker)
        if job.state.value != "succeeded":
            wrong.append(f"{app}: job {job.id} {job.state.value}: {job.error}")
            continue
        answer = instance.get(host=f"{app}.bench")
        if (answer.status, answer.body, answer.release) != (200, f"<p>{version}</p>\n", job.sha[:12]):
            wrong.append(f"{app}: answers {answer.status} {answer.release} {answer.body.strip()!r}")
    networks = [network for network in instance.client.networks.list(names=[instance.name])
                if network.name == instance.name]
    proxies = instance.containers(role="proxy")
    if len(networks) != 1:
        wrong.append(f"{len(networks)} networks named {instance.name}")
    if [proxy.name for proxy in proxies] != [f"{instance.name}-proxy"]:
        wrong.append(f"proxies: {[proxy.name for proxy in proxies]}")
    return wrong, len(ran_by)


def leftovers(name: str) -> int:
    """Docker objects still labelled with the instance."""
    label = f"label=hookdeploy.instance={name}"
    return sum(len(run("docker", kind, *listing, "--filter", label).stdout.split())
               for kind, listing in (("ps", ["-aq"]), ("images", ["-q"]), ("network", ["ls", "-q"])))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--apps", type=int, default=12)
    parser.add_argument("--workers", type=int, default=3)
    options = parser.parse_args()
    apps = [f"app{number}" for number in range(options.apps)]
    client = docker.from_env(timeout=120)
    instance = Instance(Path(tempfile.mkdtemp(prefix="hookdeploy-bench-")), client,
                        name="bench" + secrets.token_hex(3))
    results, problems = {}, []
    try:
        instance.configure({app: {"hostnames": [f"{app}.bench"]} for app in apps})
        for label, workers in (("first", options.workers), ("one", 1), ("several", options.workers)):
            versions = queue_new_versions(instance, apps, label)
            took, round_problems = drain_with(instance, workers, label)
            wrong, ran_by = check(instance, versions)
            results[label] = (took, ran_by, wrong)
            problems += round_problems + [f"{label}: {line}" for line in wrong]
    finally:
        instance.cleanup()
        left = leftovers(instance.name)
        shutil.rmtree(instance.root, ignore_errors=True)
    first, one, several = results["first"], results["one"], results["several"]
    print(f"{'round':<40}{'workers':>8}{'apps':>6}{'seconds':>9}{'ran jobs':>10}{'all live':>10}")
    for name, workers, (took, ran_by, wrong) in (
            ("fresh instance: makes network + proxy", options.workers, first),
            ("new commits, 1 worker", 1, one), (f"new commits, {options.workers} workers", options.workers, several)):
        print(f"{name:<40}{workers:>8}{options.apps:>6}{took:>9.1f}{ran_by:>10}{'yes' if not wrong else 'NO':>10}")
    print(f"{options.apps} apps: 1 worker {one[0]:.1f} s, {options.workers} workers {several[0]:.1f} s, "
          f"ratio {one[0] / several[0]:.2f}x; one network and one proxy, every app live: "
          f"{'yes' if not (first[2] or one[2] or several[2]) else 'NO'}")
    print(f"Docker objects left with hookdeploy.instance={instance.name}: {left}")
    for line in problems:
        print("problem:", line)


if __name__ == "__main__":
    main()
