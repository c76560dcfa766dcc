"""How fast a big commit is checked out for a build: gitops.export vs `git archive | tar -x`.

Commits 6,000 files of 48 MB in all (random bytes, 1 to 15 KiB each, in 120 folders two levels
deep, a few executables and symlinks) to a temp repo once, then times, in the same process and
alternating, hookdeploy's checkout (every safety check on) and the floor: `git archive SHA | tar -x`
into an empty folder. Each round writes into a fresh folder, removed untimed afterwards.

Run from the repository root with the project's venv (no Docker needed):
    .venv/bin/python bench/checkout.py [FILES [ROUNDS]]        (defaults 6000 and 7)

Goal (issue 21): the checkout within 1.5x the floor.
"""

from __future__ import annotations

import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import git

from hookdeploy.engine import gitops

GIT = ["git", "-c", "user.name=bench", "-c", "user.email=bench@localhost"]
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


def timed(function) -> float:
    started = time.perf_counter()
    function()
    return time.perf_counter() - started


def main() -> None:
    files = int(sys.argv[1]) if len(sys.argv) > 1 else 6000
    rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 7
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


if __name__ == "__main__":
    main()
