"""Checking out a commit (gitops.export) keeps everything inside the build folder, on every
supported Python (Debian 12's 3.11.2 has no tarfile filters): real git commits, and crafted
archives for what git itself cannot commit (devices, setuid bits, absolute or `..` names).
A refresh in place (the app's build folder, kept between its jobs) ends exactly at the new tree.
"""

from __future__ import annotations

import io
import os
import shutil
import stat
import subprocess
import tarfile
import time
from pathlib import Path

import git as gitpython
import pytest

from hookdeploy.core import config as configuration
from hookdeploy.core.errors import GitError
from hookdeploy.engine import extraction, gitops, pipeline

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
    return extraction.open_archive(buffer)  # read as export reads git's output


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


def test_a_symlink_redirected_by_a_later_symlink_is_refused(tmp_path, outside):
    # `a` looks inside when it is made (`b` does not exist yet); `b` -> "." then makes it lead to ../outside.
    def make(work: Path) -> None:
        (work / "a").symlink_to("b/../outside/secret")
        (work / "b").symlink_to(".")

    repo, sha = commit(tmp_path, make)
    with pytest.raises(GitError, match="symlink 'a' points outside the checkout"):
        gitops.export(repo, sha, tmp_path / "checkout")
    assert not (tmp_path / "checkout").exists(), "nothing is left to build from"


@pytest.mark.parametrize("members, reason", [
    ([(member("site"), b"x"), (member("site/index.html"), b"y")], "through 'site', which is not a folder"),
    ([(member("link", tarfile.SYMTYPE, link="site"), b""), (member("site", tarfile.DIRTYPE), b""),
      (member("link/index.html"), b"y")], "through 'link', which is not a folder"),
    ([(member("index.html"), b"x"), (member("./index.html"), b"y")], "'index.html' is in the archive twice"),
    ([(member("site", tarfile.DIRTYPE), b""), (member("site"), b"y")], "'site' is in the archive twice"),
])
def test_a_member_under_a_file_or_symlink_or_twice_is_refused(tmp_path, members, reason):
    destination = tmp_path / "checkout"
    destination.mkdir()
    with pytest.raises(GitError, match=reason):
        gitops._extract_tree(archive(*members), destination, "a" * 40)


def test_long_and_non_ascii_names_and_long_symlink_targets_are_written_as_committed(tmp_path):
    deep = "/".join(["a-rather-long-folder-name-" + str(number) for number in range(6)])  # > 155 characters

    def make(work: Path) -> None:
        (work / deep).mkdir(parents=True)
        (work / deep / ("long-file-name-" * 8 + ".txt")).write_text("long\n")
        (work / "café ünïcode.html").write_text("accents\n")
        (work / "to-deep").symlink_to(deep + "/" + "long-file-name-" * 8 + ".txt")

    repo, sha = commit(tmp_path, make)
    out = gitops.export(repo, sha, tmp_path / "checkout")
    assert (out / deep / ("long-file-name-" * 8 + ".txt")).read_text() == "long\n"
    assert (out / "café ünïcode.html").read_text() == "accents\n"
    assert (out / "to-deep").read_text() == "long\n"


def test_a_big_file_and_an_empty_one_are_written_whole(tmp_path):
    big = bytes(range(256)) * 12_289  # a few MiB, not a multiple of any buffer

    def make(work: Path) -> None:
        (work / "big.bin").write_bytes(big)
        (work / "empty").write_bytes(b"")

    repo, sha = commit(tmp_path, make)
    out = gitops.export(repo, sha, tmp_path / "checkout")
    assert (out / "big.bin").read_bytes() == big and (out / "empty").read_bytes() == b""
    assert sorted(path.name for path in out.iterdir()) == ["big.bin", "empty"]


def test_git_failing_half_way_is_one_line_naming_the_commit_and_leaves_no_tree(tmp_path):
    def make(work: Path) -> None:
        (work / "a.txt").write_text("first\n")
        (work / "z.txt").write_text("lost\n")

    repo, sha = commit(tmp_path, make)
    blob = repo.git.rev_parse(f"{sha}:z.txt")
    (Path(repo.git_dir) / "objects" / blob[:2] / blob[2:]).unlink()
    with pytest.raises(GitError, match=rf"^git archive {sha[:12]} failed: .+") as failure:
        gitops.export(repo, sha, tmp_path / "checkout")
    assert "\n" not in str(failure.value)
    assert not (tmp_path / "checkout").exists()


# -- refreshing a checkout in place (a stable build context BuildKit sends only the changes of) -----------------


def tree(folder: Path) -> dict[str, tuple]:
    """Everything in `folder`: kind, mode and content (or where a symlink points)."""
    found = {}
    for path in sorted(folder.rglob("*")):
        info = path.lstat()
        if path.is_symlink():
            found[str(path.relative_to(folder))] = ("symlink", os.readlink(path))
        elif path.is_dir():
            found[str(path.relative_to(folder))] = ("folder", stat.S_IMODE(info.st_mode))
        else:
            found[str(path.relative_to(folder))] = ("file", stat.S_IMODE(info.st_mode), path.read_bytes())
    return found


BIG = bytes(range(256)) * 8192  # 2 MiB: more than one chunk of comparison


def first_tree(work: Path) -> None:
    (work / "site" / "old").mkdir(parents=True)
    (work / "site" / "index.html").write_text("<p>one</p>\n")
    (work / "site" / "same.css").write_text("p {}\n")
    (work / "site" / "old" / "gone.html").write_text("gone\n")
    (work / "becomes-folder").write_text("a file first\n")
    (work / "becomes-file").mkdir()
    (work / "becomes-file" / "inner").write_text("inner\n")
    (work / "link-becomes-file").symlink_to("site/index.html")
    (work / "file-becomes-link").write_text("plain\n")
    (work / "same-link").symlink_to("site")
    (work / "run.sh").write_text("#!/bin/sh\n")
    (work / "big-head.bin").write_bytes(BIG)
    (work / "big-tail.bin").write_bytes(BIG)
    (work / "big-same.bin").write_bytes(BIG)


def second_tree(work: Path) -> None:
    shutil.rmtree(work / "site" / "old")
    (work / "site" / "index.html").write_text("<p>two</p>\n")  # same size, other bytes
    (work / "becomes-folder").unlink()
    (work / "becomes-folder").mkdir()
    (work / "becomes-folder" / "now.txt").write_text("inside\n")
    shutil.rmtree(work / "becomes-file")
    (work / "becomes-file").write_text("a file now\n")
    (work / "link-becomes-file").unlink()
    (work / "link-becomes-file").write_text("was a link\n")
    (work / "file-becomes-link").unlink()
    (work / "file-becomes-link").symlink_to("run.sh")
    (work / "run.sh").chmod(0o755)
    (work / "big-head.bin").write_bytes(b"X" + BIG[1:])
    (work / "big-tail.bin").write_bytes(BIG[:-1] + b"X")
    (work / "new.txt").write_text("new\n")


def two_commits(tmp_path: Path) -> tuple[gitpython.Repo, str, str]:
    repo, first = commit(tmp_path, first_tree)
    work = Path(repo.working_tree_dir)
    second_tree(work)
    subprocess.run([*GIT, "add", "--all"], cwd=work, check=True)
    subprocess.run([*GIT, "commit", "-q", "-m", "second"], cwd=work, check=True)
    return repo, first, repo.head.commit.hexsha


def test_a_refreshed_checkout_is_exactly_the_new_tree_and_unchanged_files_are_left_untouched(tmp_path):
    repo, first, second = two_commits(tmp_path)
    stable = gitops.export(repo, first, tmp_path / "stable", refresh=True)
    before = {name: (stable / name).lstat() for name in ("site/same.css", "big-same.bin", "same-link", "run.sh")}
    time.sleep(0.01)  # a rewritten file would get a later mtime

    gitops.export(repo, second, stable, refresh=True)
    fresh = gitops.export(repo, second, tmp_path / "fresh")

    assert tree(stable) == tree(fresh)
    assert tree(stable)["site/index.html"] == ("file", 0o644, b"<p>two</p>\n")
    assert tree(stable)["run.sh"][1] == 0o755
    assert not (stable / "site" / "old").exists()
    for name, info in before.items():  # what BuildKit's file sync compares: the same file, the same mtime
        after = (stable / name).lstat()
        assert (after.st_ino, after.st_mtime_ns) == (info.st_ino, info.st_mtime_ns), name

    gitops.export(repo, first, stable, refresh=True)  # and back
    assert tree(stable) == tree(gitops.export(repo, first, tmp_path / "fresh"))


def test_a_refresh_removes_whatever_else_is_there_without_following_it(tmp_path, outside):
    repo, first, second = two_commits(tmp_path)
    stable = tmp_path / "stable"
    (stable / "junk" / "deep").mkdir(parents=True)
    (stable / "junk" / "deep" / "file").write_text("junk\n")
    (stable / "site").symlink_to(outside)  # where the commit has a folder
    (stable / "new.txt").symlink_to(outside / "secret")  # where it has a file
    (stable / "becomes-folder").symlink_to(outside)
    (stable / "leak").symlink_to(outside / "secret")
    before = snapshot(outside)

    gitops.export(repo, second, stable, refresh=True)

    assert snapshot(outside) == before
    assert tree(stable) == tree(gitops.export(repo, second, tmp_path / "fresh"))


def test_a_refused_refresh_leaves_nothing_to_build_from(tmp_path, outside):
    repo, first, second = two_commits(tmp_path)
    stable = gitops.export(repo, first, tmp_path / "stable", refresh=True)
    work = Path(repo.working_tree_dir)
    (work / "leak").symlink_to(outside / "secret")
    subprocess.run([*GIT, "add", "--all"], cwd=work, check=True)
    subprocess.run([*GIT, "commit", "-q", "-m", "leak"], cwd=work, check=True)

    with pytest.raises(GitError, match="symlink 'leak' points outside the checkout"):
        gitops.export(repo, repo.head.commit.hexsha, stable, refresh=True)
    assert not stable.exists()


def test_each_job_of_an_app_refreshes_the_apps_one_build_folder_and_cleaning_up_keeps_it(
        tmp_path, write_config, store):
    def with_dockerfile(work: Path) -> None:
        first_tree(work)
        (work / "Dockerfile").write_text("FROM scratch\nCOPY . /srv/\n")

    repo, first = commit(tmp_path, with_dockerfile)
    work = Path(repo.working_tree_dir)
    second_tree(work)
    subprocess.run([*GIT, "add", "--all"], cwd=work, check=True)
    subprocess.run([*GIT, "commit", "-q", "-m", "second"], cwd=work, check=True)
    second = repo.head.commit.hexsha
    config = configuration.load(write_config({"site": {"repo": str(work)}}))
    app = config.apps["site"]

    one = store.enqueue("site", first)
    context = pipeline.checkout(config, app, one, fetch=False)
    assert context == Path(config.server.state_dir) / "builds" / "site"
    kept = (context / "site" / "same.css").lstat()
    pipeline.clean_build_dir(config, one)
    assert context.is_dir(), "kept for the app's next build"

    two = store.enqueue("site", second)
    assert pipeline.checkout(config, app, two, fetch=False) == context
    assert tree(context) == tree(gitops.export(repo, second, tmp_path / "fresh"))
    assert (context / "site" / "same.css").lstat().st_mtime_ns == kept.st_mtime_ns
