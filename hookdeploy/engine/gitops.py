"""Git, through gitpython: bare repos, mirrors of clone URLs, resolving SHAs, exporting a commit.

Every name handed to git here was validated first (names.py); git is never run through a shell.
"""

from __future__ import annotations

import logging
import os
import shutil
import tarfile
import tempfile
from pathlib import Path, PurePosixPath

import git

from hookdeploy.core.config import AppConfig
from hookdeploy.core.errors import BadInput, GitError
from hookdeploy.core.names import check_ref, check_sha_prefix, printable

log = logging.getLogger(__name__)

# The transports git may use to fetch a repo (config_parse refuses the others already); never ext::, whose
# "URL" is a command git runs.
SAFE_ENVIRONMENT = {"GIT_ALLOW_PROTOCOL": "file:git:http:https:ssh"}


def init_bare(path: Path, branch: str) -> bool:
    """Create a bare repo at `path` whose initial branch is `branch`; False if one is there already."""
    if (path / "HEAD").exists() and (path / "objects").is_dir():
        return False
    if path.exists() and any(path.iterdir()):
        raise BadInput(f"{path} exists and is not an empty folder or a bare git repo")
    check_ref(f"refs/heads/{branch}", "branch")
    try:
        path.mkdir(parents=True, exist_ok=True)
        git.Repo.init(path, bare=True, initial_branch=branch)
    except git.GitCommandError as error:
        raise GitError(f"git init --bare {path} failed: {error.stderr.strip()}") from None
    return True


def mirror_path(app: AppConfig, state_dir: str | Path) -> Path:
    """Where the mirror of an app's clone URL is kept."""
    return Path(state_dir) / "mirrors" / f"{app.name}.git"


def open_repo(app: AppConfig, state_dir: str | Path, fetch: bool = False) -> git.Repo:
    """The app's repo: its local path, or the mirror of its URL (created or fetched when asked)."""
    if app.is_local_repo:
        try:
            return git.Repo(app.repo)
        except (git.NoSuchPathError, git.InvalidGitRepositoryError):
            raise GitError(f"apps.{app.name}.repo: {app.repo} is not a git repository "
                           f"(create it with: hookdeploy init-repo {app.name})",
                           public=f"the repo of {app.name} is not a git repository yet") from None
    mirror = mirror_path(app, state_dir)
    try:
        if not (mirror / "HEAD").exists():
            mirror.parent.mkdir(parents=True, exist_ok=True)
            return git.Repo.clone_from(app.repo, mirror, mirror=True, env=SAFE_ENVIRONMENT)
        repo = git.Repo(mirror)
        repo.git.update_environment(**SAFE_ENVIRONMENT)
        if fetch:
            repo.git.fetch("--prune", "origin")
        return repo
    except git.GitCommandError as error:
        raise GitError(f"fetching {app.repo} failed: {_last_line(error)}",
                       public=f"fetching the repo of {app.name} failed") from None


def resolve_sha(repo: git.Repo, text: str, app: str = "the app") -> str:
    """The full SHA of the one commit whose SHA starts with `text`; BadInput if none or several
    (naming the repo's path, and only `app` to a caller over HTTP)."""
    prefix = check_sha_prefix(text)
    try:
        candidates = repo.git.rev_parse(f"--disambiguate={prefix}").split()
    except git.GitCommandError:
        candidates = []
    commits = [sha for sha in candidates if _object_type(repo, sha) == "commit"]
    if not commits:
        raise BadInput(f"no commit {prefix} in {repo.git_dir}", public=f"no commit {prefix} in the repo of {app}")
    if len(commits) > 1:
        problem = f"it starts {len(commits)} commits; give more digits"
        raise BadInput(f"SHA {prefix} is ambiguous in {repo.git_dir}: {problem}",
                       public=f"SHA {prefix} is ambiguous in the repo of {app}: {problem}")
    return commits[0]


def resolve_ref(repo: git.Repo, ref: str, app: str = "the app") -> str:
    """The commit SHA a branch, tag or full ref name points at; BadInput if there is none (naming the
    repo's path, and only `app` to a caller over HTTP)."""
    check_ref(ref, "ref")
    names = [ref] if ref.startswith("refs/") else [f"refs/heads/{ref}", f"refs/tags/{ref}"]
    for name in names:
        try:
            return repo.git.rev_parse("--verify", "--quiet", f"{name}^{{commit}}").strip()
        except git.GitCommandError:
            continue
    raise BadInput(f"ref {printable(ref)} does not exist in {repo.git_dir}",
                   public=f"ref {printable(ref)} does not exist in the repo of {app}")


def has_commit(repo: git.Repo, sha: str) -> bool:
    """True if the repo holds the commit `sha`."""
    return _object_type(repo, sha) == "commit"


def commit_subject(repo: git.Repo, sha: str) -> str:
    """The first line of a commit's message, or '' if unknown."""
    try:
        return str(repo.commit(sha).summary)
    except (ValueError, git.BadName, git.GitCommandError):
        return ""


def export(repo: git.Repo, sha: str, destination: Path) -> Path:
    """Write exactly the tree of commit `sha` into a fresh `destination` (no .git, nothing left over)."""
    if not has_commit(repo, sha):
        raise GitError(f"commit {sha[:12]} is not in {repo.git_dir} (force-pushed away and pruned?)")
    if destination.exists():
        shutil.rmtree(destination)
    destination.parent.mkdir(parents=True, exist_ok=True)
    _folder(destination)
    with tempfile.TemporaryFile() as archive:
        try:
            repo.archive(archive, treeish=sha, format="tar")
        except git.GitCommandError as error:
            raise GitError(f"git archive {sha[:12]} failed: {_last_line(error)}") from None
        archive.seek(0)
        with tarfile.open(fileobj=archive) as tar:
            _extract_tree(tar, destination, sha)
    return destination


def _extract_tree(tar: tarfile.TarFile, destination: Path, sha: str) -> None:
    """Write a commit's archive into `destination`, refusing anything that could reach outside it.

    What tarfile's `filter="data"` guarantees, written out here because that filter came only
    in Python 3.11.4 and Debian 12 has 3.11.2: no absolute or `..` names, nothing written through
    a symlink, no symlink that points outside the checkout (so neither the build context, the
    Dockerfile nor .dockerignore can lead the build to a file of the host), only files, folders
    and symlinks (no devices, fifos or hard links), no setuid, setgid or sticky bits, no owner
    taken from the archive.
    """
    root = Path(os.path.realpath(destination))
    for member in tar:
        name = member.name.rstrip("/")
        relative = PurePosixPath(name)
        if relative.is_absolute() or ".." in relative.parts or "\0" in name:
            raise GitError(f"commit {sha[:12]} has a path that leaves the checkout: {printable(member.name)}")
        target = root / relative
        if not _inside(root, os.path.realpath(target.parent)):
            raise GitError(f"commit {sha[:12]}: {printable(name)} would be written through a symlink "
                           f"that leaves the checkout")
        if member.isdir():
            _folder(target)
        elif member.isfile():
            _folder(target.parent)
            mode = 0o755 if member.mode & 0o111 else 0o644
            source = tar.extractfile(member)
            descriptor = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode)
            with os.fdopen(descriptor, "wb") as written, source:
                shutil.copyfileobj(source, written)
            os.chmod(target, mode)  # the umask may have taken bits away
        elif member.issym():
            points_to = os.path.realpath(target.parent / member.linkname)
            if PurePosixPath(member.linkname).is_absolute() or not _inside(root, points_to):
                raise GitError(f"commit {sha[:12]}: symlink {printable(name)} points outside the checkout "
                               f"(to {printable(member.linkname)}); hookdeploy does not follow it")
            _folder(target.parent)
            os.symlink(member.linkname, target)
        else:
            raise GitError(f"commit {sha[:12]}: {printable(name)} is not a file, folder or symlink")


def _folder(path: Path) -> None:
    """`path` and its missing parents as folders of mode 0755, whatever the umask: the image gets the
    checkout's modes, and a folder its server (say, nginx's unprivileged workers) cannot enter is a broken site."""
    missing = []
    while not path.is_dir():
        missing.append(path)
        path = path.parent
    for folder in reversed(missing):
        folder.mkdir()
        os.chmod(folder, 0o755)


def _inside(root: Path, path: str) -> bool:
    return os.path.commonpath([str(root), path]) == str(root)


def _object_type(repo: git.Repo, sha: str) -> str | None:
    try:
        return repo.git.cat_file("-t", sha).strip()
    except git.GitCommandError:
        return None


def _last_line(error: git.GitCommandError) -> str:
    text = str(error.stderr or error).strip()
    return text.splitlines()[-1] if text else str(error)
