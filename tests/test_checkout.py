"""Checking out a commit (gitops.export) keeps everything inside the build folder, on every
supported Python (Debian 12's 3.11.2 has no tarfile filters): real git commits, and crafted
archives for what git itself cannot commit (devices, setuid bits, absolute or `..` names).
"""

from __future__ import annotations

import io
import os
import stat
import subprocess
import tarfile
from pathlib import Path

import git as gitpython
import pytest

from hookdeploy.engine import gitops
from hookdeploy.core.errors import GitError

GIT = ["git", "-c", "user.name=t", "-c", "user.email=t@t"]


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """A folder beside the checkout holding a secret that no checkout may read or change."""
    folder = tmp_path / "outside"
    folder.mkdir()
    (folder / "secret").write_text("do-not-read-me\n")
    return folder


def snapshot(folder: Path) -> dict[str, tuple[bytes, int]]:
    return {str(path): (path.read_bytes() if path.is_file() else b"", path.lstat().st_mtime_ns)
            for path in sorted(folder.rglob("*"))}


def commit(tmp_path: Path, make) -> tuple[gitpython.Repo, str]:
    """A repo whose one commit has the tree `make(work)` wrote."""
    work = tmp_path / "work"
    subprocess.run([*GIT, "init", "-q", str(work)], check=True)
    make(work)
    subprocess.run([*GIT, "add", "--all"], cwd=work, check=True)
    subprocess.run([*GIT, "commit", "-q", "-m", "tree"], cwd=work, check=True)
    repo = gitpython.Repo(work)
    return repo, repo.head.commit.hexsha


def test_a_commit_is_written_exactly_with_modes_and_inside_symlinks(tmp_path):
    def make(work: Path) -> None:
        (work / "site" / "assets").mkdir(parents=True)
        (work / "site" / "index.html").write_text("<p>hi</p>\n")
        (work / "build.sh").write_text("#!/bin/sh\n")
        (work / "build.sh").chmod(0o755)
        (work / "current").symlink_to("site/assets")
        (work / "site" / "assets" / "up").symlink_to("../index.html")

    repo, sha = commit(tmp_path, make)
    out = gitops.export(repo, sha, tmp_path / "checkout")

    assert (out / "site" / "index.html").read_text() == "<p>hi</p>\n"
    assert stat.S_IMODE((out / "build.sh").stat().st_mode) == 0o755
    assert stat.S_IMODE((out / "site" / "index.html").stat().st_mode) == 0o644
    assert os.readlink(out / "current") == "site/assets"
    assert (out / "site" / "assets" / "up").read_text() == "<p>hi</p>\n"
    assert not (out / ".git").exists()


@pytest.mark.parametrize("target", ["OUTSIDE/secret", "../../outside/secret", "../site/../../outside/secret"])
def test_a_committed_symlink_pointing_outside_is_refused_and_nothing_outside_is_read(tmp_path, outside, target):
    target = target.replace("OUTSIDE", str(outside))

    def make(work: Path) -> None:
        (work / "site").mkdir()
        (work / "Dockerfile").write_text("FROM scratch\nCOPY . /srv/\n")
        (work / "site" / "leak").symlink_to(target)

    repo, sha = commit(tmp_path, make)
    before = snapshot(outside)
    with pytest.raises(GitError, match=r"symlink 'site/leak' points outside the checkout"):
        gitops.export(repo, sha, tmp_path / "checkout")
    assert snapshot(outside) == before
    copied = [path for path in (tmp_path / "checkout").rglob("*") if path.is_file() and not path.is_symlink()]
    assert all(b"do-not-read-me" not in path.read_bytes() for path in copied)


def test_a_symlinked_build_context_pointing_outside_is_refused(tmp_path, outside):
    def make(work: Path) -> None:
        (work / "app").symlink_to(outside)

    repo, sha = commit(tmp_path, make)
    with pytest.raises(GitError, match="symlink 'app' points outside the checkout"):
        gitops.export(repo, sha, tmp_path / "checkout")


# -- archives git would never make, handed to the same extraction ------------------------------------


def archive(*members: tuple[tarfile.TarInfo, bytes]) -> tarfile.TarFile:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for info, data in members:
            info.size = len(data) if info.isfile() else 0
            tar.addfile(info, io.BytesIO(data) if info.isfile() else None)
    buffer.seek(0)
    return tarfile.open(fileobj=buffer)


def member(name: str, kind: bytes = tarfile.REGTYPE, mode: int = 0o644, link: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.mode, info.linkname = kind, mode, link
    return info


REFUSED = {
    "absolute path": ([(member("/OUTSIDE/planted"), b"x")], "leaves the checkout"),
    "dot-dot path": ([(member("../outside/planted"), b"x")], "leaves the checkout"),
    "write through a symlink": ([(member("door", tarfile.SYMTYPE, link="../outside"), b""),
                                 (member("door/planted"), b"x")], "points outside the checkout"),
    "write through a symlinked parent": ([(member("a", tarfile.SYMTYPE, link="."), b""),
                                          (member("a/../../outside/planted"), b"x")], "leaves the checkout"),
    "hard link": ([(member("hard", tarfile.LNKTYPE, link="../outside/secret"), b"")],
                  "not a file, folder or symlink"),
    "character device": ([(member("tty", tarfile.CHRTYPE), b"")], "not a file, folder or symlink"),
    "fifo": ([(member("pipe", tarfile.FIFOTYPE), b"")], "not a file, folder or symlink"),
}


@pytest.mark.parametrize("case", list(REFUSED))
def test_crafted_archives_cannot_reach_outside(tmp_path, outside, case):
    members, reason = REFUSED[case]
    for info, _ in members:
        info.name = info.name.replace("/OUTSIDE", str(outside))
    destination = tmp_path / "checkout"
    destination.mkdir()
    before = snapshot(outside)
    with pytest.raises(GitError, match=reason):
        gitops._extract_tree(archive(*members), destination, "a" * 40)
    assert snapshot(outside) == before
    assert not (outside / "planted").exists()


def test_setuid_setgid_sticky_bits_and_owners_are_not_taken_from_the_archive(tmp_path):
    setuid = member("tool", mode=0o6755)
    setuid.uid = setuid.gid = 4242
    sticky = member("shared", tarfile.DIRTYPE, mode=0o1777)
    private = member("private", mode=0o600)
    destination = tmp_path / "checkout"
    destination.mkdir()
    gitops._extract_tree(archive((setuid, b"#!/bin/sh\n"), (sticky, b""), (private, b"x")), destination, "a" * 40)

    assert stat.S_IMODE((destination / "tool").stat().st_mode) == 0o755
    assert stat.S_IMODE((destination / "shared").stat().st_mode) == 0o755
    assert stat.S_IMODE((destination / "private").stat().st_mode) == 0o644
    assert (destination / "tool").stat().st_uid == os.getuid()
