"""How fast a big commit is checked out for a build: gitops.export vs `git archive | tar -x`.

Commits 6,000 files of 48 MB in all (random bytes, 1 to 15 KiB each, in 120 folders two levels
deep, a few executables and symlinks) to a temp repo once, then times, in the same process and
alternating, hookdeploy's checkout (every safety check on) and the floor: `git archive SHA | tar -x`
into an empty folder. Each round writes into a fresh folder, removed untimed afterwards.

With --buildkit (needs Docker), then what BuildKit's file sync sends of that commit's build context:
built once from a per-app folder, a second commit (one file changed) refreshed into the same folder
and built again, and that second commit built from a new folder (as a folder per job would be).

Run from the repository root with the project's venv (TMPDIR=/dev/shm leaves a busy disk's stalls,
which hit both sides alike, out of the comparison):
    .venv/bin/python bench/checkout.py [FILES [ROUNDS]] [--buildkit]     (defaults 6000 and 7)

Goal (issue 21): the checkout within 1.5x the floor; the second build sends little.
"""

from __future__ import annotations

import random
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import git

from hookdeploy.engine import buildkit, gitops

GIT = ["git", "-c", "user.name=bench", "-c", "user.email=bench@localhost", "-c", "gc.auto=0"]
TOTAL_BYTES = 48_000_000


def make_commit(work: Path, files: int) -> tuple[git.Repo, str]:
    """A repo whose one commit holds `files` files of TOTAL_BYTES in all; its SHA."""
    subprocess.run([*GIT, "init", "-q", str(work)], check=True)
    rng = random.Random(21)
    sizes = [rng.randint(1024, 15 * 1024) for _ in range(files)]
    scale = TOTAL_BYTES / sum(sizes)
    for number, size in enumerate(sizes):
        folder = work / f"part{number % 12:02d}" / f"group{number % 120:03d}"
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"file{number:05d}.{('html', 'css', 'js', 'png')[number % 4]}"
        path.write_bytes(rng.randbytes(int(size * scale)))
        if number % 500 == 0:
            path.chmod(0o755)
    for number in range(12):
        (work / f"part{number:02d}" / "latest").symlink_to(f"group{number:03d}")
    (work / "Dockerfile").write_text("FROM scratch\nCOPY . /srv/\n")
    subprocess.run([*GIT, "add", "--all"], cwd=work, check=True)
    subprocess.run([*GIT, "commit", "-q", "-m", "big"], cwd=work, check=True)
    subprocess.run([*GIT, "repack", "-a", "-d", "-q"], cwd=work, check=True)  # packed, as a pushed or fetched repo is
    repo = git.Repo(work)
    return repo, repo.head.commit.hexsha


def floor(repo: git.Repo, sha: str, destination: Path) -> None:
    """`git archive SHA | tar -x -C destination`."""
    destination.mkdir()
    archive = subprocess.Popen(["git", "--git-dir", repo.git_dir, "archive", "--format=tar", sha],
                               stdout=subprocess.PIPE)
    subprocess.run(["tar", "-x", "-C", str(destination)], stdin=archive.stdout, check=True)
    archive.stdout.close()
    if archive.wait() != 0:
        raise SystemExit("git archive failed")


def transferred(context: Path, tag: str) -> tuple[str, float]:
    """What `docker build` (BuildKit, plain progress) says it sent of `context`, and the build's seconds."""
    cli = buildkit.client()
    started = time.perf_counter()
    completed = subprocess.run([*cli.command(), "--progress=plain", "--tag", tag, str(context)],
                               capture_output=True, text=True, env=buildkit.environment())
    seconds = time.perf_counter() - started
    if completed.returncode != 0:
        raise SystemExit(completed.stdout + completed.stderr)
    sizes = re.findall(r"transferring context: ([\d.]+\s*[kMG]?B)", completed.stdout + completed.stderr)
    return (sizes[-1] if sizes else "?"), seconds


def buildkit_transfers(repo: git.Repo, sha: str, root: Path) -> None:
    """Build the commit, then one with a file changed, from one refreshed folder; then from a new one."""
    work = Path(repo.working_tree_dir)
    changed = next((work / "part00" / "group000").iterdir())
    changed.write_bytes(changed.read_bytes()[::-1])
    subprocess.run([*GIT, "commit", "-q", "-a", "-m", "one file changed"], cwd=work, check=True)
    second = repo.head.commit.hexsha
    tag = f"hookdeploy-bench-checkout:{sha[:12]}"
    try:
        stable = root / "builds" / "site"
        for label, commit, folder, refresh in (
                ("first build, per-app folder", sha, stable, True),
                ("one file changed, same folder refreshed", second, stable, True),
                ("one file changed, a new folder", second, root / "builds" / "2", False)):
            started = time.perf_counter()
            gitops.export(repo, commit, folder, refresh=refresh)
            checkout = time.perf_counter() - started
            size, seconds = transferred(folder, tag)
            print(f"{label:<42} checkout {checkout:6.3f} s   transferring context: {size:>9}   "
                  f"build {seconds:6.2f} s")
    finally:
        subprocess.run(["docker", "image", "rm", "-f", tag], capture_output=True)


def timed(function) -> float:
    started = time.perf_counter()
    function()
    return time.perf_counter() - started


def main() -> None:
    arguments = [argument for argument in sys.argv[1:] if argument != "--buildkit"]
    files = int(arguments[0]) if arguments else 6000
    rounds = int(arguments[1]) if len(arguments) > 1 else 7
    with tempfile.TemporaryDirectory(prefix="hookdeploy-bench-") as folder:
        root = Path(folder)
        started = time.perf_counter()
        repo, sha = make_commit(root / "work", files)
        count = sum(1 for path in (root / "work").rglob("*")
                    if (path.is_symlink() or not path.is_dir()) and ".git" not in path.parts)
        print(f"commit {sha[:12]}: {count} files and symlinks, {TOTAL_BYTES / 1e6:.0f} MB "
              f"(made in {time.perf_counter() - started:.1f} s)")
        ours, theirs = [], []
        target = root / "checkout"
        for _ in range(rounds):
            theirs.append(timed(lambda: floor(repo, sha, target)))
            shutil.rmtree(target)
            ours.append(timed(lambda: gitops.export(repo, sha, target)))
            shutil.rmtree(target)
        mine, base = statistics.median(ours), statistics.median(theirs)
        print(f"{'git archive | tar -x (floor)':<34} median {base:6.3f} s   "
              f"min {min(theirs):6.3f} s   max {max(theirs):6.3f} s   ({rounds} rounds)")
        print(f"{'hookdeploy checkout (export)':<34} median {mine:6.3f} s   "
              f"min {min(ours):6.3f} s   max {max(ours):6.3f} s   ({rounds} rounds)")
        print(f"ratio {mine / base:.2f}x the floor (goal: <= 1.5x)")
        if "--buildkit" in sys.argv:
            buildkit_transfers(repo, sha, root)


if __name__ == "__main__":
    main()
