"""Failed requests under steady load: hookdeploy deploys and rollbacks vs stop-then-start.

Both methods serve the same site images on a published port while hey sends a steady rate;
the baseline removes the old container and runs the new one on the same port, as people do
by hand. Goal: hookdeploy 0 failed requests across >= 6 deploys and 2 rollbacks.

    .venv/bin/python bench/zero_downtime.py [--deploys 6] [--rollbacks 2] [--rate 400]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from harness import Instance, Load, free_port, remove_by_label, run  # noqa: E402


def hookdeploy_run(instance: Instance, deploys: int, rollbacks: int, rate: int) -> tuple[dict, int]:
    instance.commit()
    instance.push()
    instance.wait_for_release(instance.git("rev-parse", "HEAD").strip())
    load = Load(f"http://127.0.0.1:{instance.port}/", rate=rate)
    time.sleep(1)
    switches = 0
    for _ in range(deploys):
        sha = instance.commit()
        instance.push()  # the hook follows the job until it is over, drain included
        instance.wait_for_release(sha)
        switches += 1
    for _ in range(rollbacks):
        instance.cli("rollback", "site", "--wait")
        switches += 1
    time.sleep(1)
    return load.stop(), switches


def stop_then_start_run(instance: Instance, swaps: int, rate: int) -> dict:
    """The baseline: `docker rm -f old && docker run -p PORT:80 new`, with the images hookdeploy built."""
    images = run("docker", "images", "--format", "{{.Repository}}:{{.Tag}}",
                 "--filter", f"label=hookdeploy.instance={instance.name}").stdout.split()
    port = free_port()
    label = f"hookdeploy.bench={instance.name}"
    name = f"{instance.name}-baseline"
    run("docker", "run", "-d", "--name", name, "--label", label, "-p", f"127.0.0.1:{port}:80", images[0])
    time.sleep(1)
    load = Load(f"http://127.0.0.1:{port}/", rate=rate)
    time.sleep(1)
    for swap in range(swaps):
        run("docker", "rm", "-f", name)
        run("docker", "run", "-d", "--name", name, "--label", label, "-p", f"127.0.0.1:{port}:80",
            images[(swap + 1) % len(images)])
        time.sleep(1.5)
    result = load.stop()
    subprocess.run(["docker", "rm", "-f", name], capture_output=True)
    remove_by_label(label)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--deploys", type=int, default=6)
    parser.add_argument("--rollbacks", type=int, default=2)
    parser.add_argument("--rate", type=int, default=400)
    options = parser.parse_args()
    instance = Instance(drain_seconds=1.0)
    try:
        instance.start_worker()
        started = time.monotonic()
        ours, switches = hookdeploy_run(instance, options.deploys, options.rollbacks, options.rate)
        ours_seconds = time.monotonic() - started
        baseline = stop_then_start_run(instance, switches, options.rate)
    finally:
        instance.close()
    print(f"load: hey at {options.rate} req/s, 8 connections")
    print(f"{'method':<22}{'switches':>9}{'requests':>10}{'failed':>8}{'failed %':>10}")
    for method, result in (("hookdeploy", ours), ("stop-then-start", baseline)):
        share = 100 * result["failed"] / max(1, result["total"])
        print(f"{method:<22}{switches:>9}{result['total']:>10}{result['failed']:>8}{share:>9.2f}%")
    print(f"hookdeploy: {options.deploys} deploys + {options.rollbacks} rollbacks in {ours_seconds:.1f} s; "
          f"statuses {ours['statuses']}, connection errors {ours['errors']}")
    print(f"stop-then-start: statuses {baseline['statuses']}, connection errors {baseline['errors']}; "
          f"{baseline['failed'] / switches:.0f} failed per swap")
    print("goal: 0 failed for hookdeploy —", "met" if ours["failed"] == 0 else "NOT met")


if __name__ == "__main__":
    main()
