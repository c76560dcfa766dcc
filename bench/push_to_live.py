"""Time from `git push` to the new release answering through the proxy, against the raw floor.

The floor, measured in the same run with the same site: `docker build` of the same context,
start a container from it, and the first healthy HTTP answer from it — what any deployer must
at least spend. Also: a rollback to a kept image, from the command to the old release answering.
Goals: push-to-live <= 1.3x the floor and <= 1 s over it; rollback < 2 s.

    .venv/bin/python bench/push_to_live.py [--rounds 5]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from harness import Instance, remove_by_label  # noqa: E402

import docker  # noqa: E402


def floor(instance: Instance, client: docker.DockerClient) -> float:
    """docker build + container start + first healthy probe, for a fresh version of the site."""
    instance.commit()
    context = Path(tempfile.mkdtemp(prefix="hookdeploy-floor-"))
    shutil.copy(instance.work / "Dockerfile", context)
    shutil.copy(instance.work / "index.html", context)
    label = {"hookdeploy.bench": instance.name}
    started = time.monotonic()
    image, _ = client.images.build(path=str(context), labels=label, rm=True)
    container = client.containers.run(image.id, detach=True, labels=label)
    container.reload()
    ip = container.attrs["NetworkSettings"]["IPAddress"]
    while served_release_status(ip) != 200:
        time.sleep(0.005)
    took = time.monotonic() - started
    container.remove(force=True)
    shutil.rmtree(context)
    return took


def served_release_status(ip: str) -> int | None:
    import http.client
    connection = http.client.HTTPConnection(ip, 80, timeout=1)
    try:
        connection.request("GET", "/")
        return connection.getresponse().status
    except OSError:
        return None
    finally:
        connection.close()


PUSHED: list[str] = []  # releases in the order they went live


def push_to_live(instance: Instance) -> float:
    sha = instance.commit()
    PUSHED.append(sha)
    started = time.monotonic()
    pusher = instance.push(wait=False)
    live = instance.wait_for_release(sha)
    pusher.wait()
    return live - started


def rollback(instance: Instance) -> float:
    previous = PUSHED[-2]  # the release that was live before the current one
    PUSHED.append(previous)
    started = time.monotonic()
    instance.cli("rollback", "site")
    live = instance.wait_for_release(previous)
    return live - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    options = parser.parse_args()
    client = docker.from_env()
    instance = Instance(drain_seconds=0.2)
    try:
        instance.start_worker()
        push_to_live(instance)  # first deploy creates the network and proxy: not measured
        floors, ours = [], []
        for _ in range(options.rounds):
            floors.append(floor(instance, client))
            ours.append(push_to_live(instance))
            time.sleep(0.5)  # let the drain of the previous release end
        rollbacks = []
        for _ in range(2):
            rollbacks.append(rollback(instance))
            time.sleep(0.5)
            ours_again = push_to_live(instance)  # move forward again so the next rollback has a target
            ours.append(ours_again)
            time.sleep(0.5)
    finally:
        instance.close()
        remove_by_label(f"hookdeploy.bench={instance.name}")
    floor_median, ours_median = statistics.median(floors), statistics.median(ours)
    print(f"{'measure':<34}{'median s':>9}{'min s':>8}{'max s':>8}{'n':>4}")
    for name, values in (("floor: build + start + healthy", floors), ("hookdeploy: git push -> live", ours),
                         ("hookdeploy: rollback -> live", rollbacks)):
        print(f"{name:<34}{statistics.median(values):>9.2f}{min(values):>8.2f}{max(values):>8.2f}{len(values):>4}")
    overhead = ours_median - floor_median
    print(f"push-to-live / floor = {ours_median / floor_median:.2f}x (goal <= 1.3x); "
          f"overhead {overhead:.2f} s (goal <= 1 s)")
    print(f"rollback median {statistics.median(rollbacks):.2f} s (goal < 2 s)")


if __name__ == "__main__":
    main()
