"""What the post-receive hook adds to a `git push`: pushes into a repo made by `hookdeploy init-repo`
(hook installed, each push queues a job) against pushes into a plain bare repo, in the same run.

Run from the repository root with the project's venv (no Docker needed):
    .venv/bin/python bench/hook_overhead.py [PUSHES]        (default 20)

Goal (issue 2): the hook adds well under 150 ms to a push.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HOOKDEPLOY = str(Path(sys.executable).parent / "hookdeploy")
GIT = ["git", "-c", "user.name=t", "-c", "user.email=t@t"]


def run(*command: str, cwd: Path | None = None, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(list(command), cwd=cwd, env=env, check=True, capture_output=True, text=True)


def timed_push(work: Path, remote: str) -> float:
    """Seconds one `git push REMOTE deploy` takes, wall clock."""
    started = time.perf_counter()
    run(*GIT, "push", "-q", remote, "deploy", cwd=work)
    return time.perf_counter() - started


def describe(name: str, seconds: list[float]) -> str:
    ms = sorted(s * 1000 for s in seconds)
    p90 = ms[int(0.9 * (len(ms) - 1))]
    return (f"{name:<28} mean {statistics.mean(ms):7.1f} ms   median {statistics.median(ms):7.1f} ms   "
            f"min {ms[0]:7.1f} ms   p90 {p90:7.1f} ms")


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="hookdeploy-bench-") as folder:
        measure(Path(folder))


def measure(root: Path) -> None:
    pushes = int(sys.argv[1]) if len(sys.argv) > 1 else 20
    config = root / "deploy.toml"
    config.write_text('[server]\nstate_dir = "state"\n[apps.site]\nrepo = "hooked.git"\nbranch = "deploy"\n')
    env = {key: value for key, value in os.environ.items() if key != "HOOKDEPLOY_CONFIG"}
    run(HOOKDEPLOY, "--config", str(config), "init-repo", "site", env=env)
    run("git", "init", "-q", "--bare", "-b", "deploy", str(root / "plain.git"))
    work = root / "work"
    run("git", "init", "-q", "-b", "deploy", str(work))
    run(*GIT, "remote", "add", "hooked", str(root / "hooked.git"), cwd=work)
    run(*GIT, "remote", "add", "plain", str(root / "plain.git"), cwd=work)

    # One untimed push each first: both repos then receive only small updates, like a real deploy branch.
    run(*GIT, "commit", "-q", "--allow-empty", "-m", "warm-up", cwd=work)
    timed_push(work, "plain")
    timed_push(work, "hooked")

    times: dict[str, list[float]] = {"plain": [], "hooked": []}
    for number in range(pushes):
        (work / "index.html").write_text(f"<p>push {number}</p>\n")
        run(*GIT, "add", "index.html", cwd=work)
        run(*GIT, "commit", "-q", "-m", f"push {number}", cwd=work)
        # Alternate the order so neither repo always pushes with a warmer cache.
        for remote in (("plain", "hooked") if number % 2 == 0 else ("hooked", "plain")):
            times[remote].append(timed_push(work, remote))

    jobs = run(HOOKDEPLOY, "--config", str(config), "status", "--json", env=env).stdout.strip()
    print(f"{pushes} pushes to each repo, interleaved")
    print(describe("without hook (plain bare)", times["plain"]))
    print(describe("with hookdeploy hook", times["hooked"]))
    added_mean = (statistics.mean(times["hooked"]) - statistics.mean(times["plain"])) * 1000
    added_median = (statistics.median(times["hooked"]) - statistics.median(times["plain"])) * 1000
    print(f"added by the hook: {added_mean:.1f} ms mean, {added_median:.1f} ms median (goal: well under 150 ms)")
    print(f"store after the run: {jobs}")


if __name__ == "__main__":
    main()
