"""Git, through gitpython: bare repos, mirrors of clone URLs, resolving SHAs, exporting a commit.

Every name handed to git here was validated first (names.py); git is never run through a shell.
Imports hookdeploy.core and extraction.py; pipeline, the service layer, the web and the CLI call it.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import tarfile
import tempfile
from pathlib import Path

import git

from hookdeploy.core.config import AppConfig
from hookdeploy.core.errors import BadInput, GitError
from hookdeploy.core.names import check_ref, check_sha_prefix, printable
from hookdeploy.core.models import release_tag
from hookdeploy.engine import extraction, gitauth

log = logging.getLogger(__name__)

PIPE_BUFFER = 1 << 20  # bytes read from git's pipe at a time


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
            return git.Repo.clone_from(app.repo, mirror, mirror=True, env=gitauth.environment(app, state_dir))
        repo = git.Repo(mirror)
        repo.git.update_environment(**gitauth.SAFE_ENVIRONMENT)
        if fetch:  # the credentials only when they are used (a token read now, a pinned host key written)
            repo.git.update_environment(**gitauth.environment(app, state_dir))
            repo.git.fetch("--prune", "origin")
        return repo
    except git.GitCommandError as error:
        raise GitError(f"fetching {app.repo} failed: {gitauth.explain(app, state_dir, str(error.stderr or error))}",
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


def export(repo: git.Repo, sha: str, destination: Path, refresh: bool = False) -> Path:
    """Write exactly the tree of commit `sha` into `destination` (no .git, nothing left over): a fresh
    folder, or with `refresh` the folder as it is, only what differs rewritten and what is gone removed."""
    if not has_commit(repo, sha):
        raise GitError(f"commit {release_tag(sha)} is not in {repo.git_dir} (force-pushed away and pruned?)")
    keep = refresh and destination.is_dir() and not destination.is_symlink()
    if not keep:
        _remove(destination)
    destination.parent.mkdir(parents=True, exist_ok=True)
    _folder(destination)
    # Streamed through a pipe: git packs while Python writes, and no copy of the archive lands on disk.
    with tempfile.TemporaryFile() as errors:
        archive = subprocess.Popen([git.Git.GIT_PYTHON_GIT_EXECUTABLE or "git", "--git-dir", repo.git_dir,
                                    "archive", "--format=tar", sha],
                                   stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=errors,
                                   bufsize=PIPE_BUFFER)
        try:
            with archive.stdout, extraction.open_archive(archive.stdout) as tar:
                _extract_tree(tar, destination, sha, refresh=keep)
                # Read the end blocks tarfile stops before, or git may die of SIGPIPE writing them.
                while archive.stdout.read(PIPE_BUFFER):
                    pass
        except BaseException as error:
            archive.kill()  # it may be blocked writing what nobody reads any more
            archive.wait()
            shutil.rmtree(destination, ignore_errors=True)  # no half tree, nor a symlink refused at the end
            if archive.returncode > 0:  # git failed first: its reason is the one that matters
                raise GitError(f"git archive {release_tag(sha)} failed: {_stderr_line(errors, archive)}") from None
            if isinstance(error, tarfile.TarError):
                raise GitError(f"git archive {release_tag(sha)} gave an unreadable archive: {error}") from None
            raise
        if archive.wait() != 0:
            shutil.rmtree(destination, ignore_errors=True)
            raise GitError(f"git archive {release_tag(sha)} failed: {_stderr_line(errors, archive)}")
    return destination


def _extract_tree(tar: tarfile.TarFile, destination: Path, sha: str, refresh: bool = False) -> None:
    """Write a commit's archive into `destination`, refusing anything that could reach outside it (extraction.py)."""
    extraction.extract(tar, destination, sha, refresh)


def _remove(path: Path) -> None:
    """Whatever is at `path`: a folder with all in it, or a file or symlink (never what it points to)."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


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


def _stderr_line(errors, process: subprocess.Popen) -> str:
    errors.seek(0)
    text = errors.read().decode("utf-8", "replace").strip()
    return text.splitlines()[-1] if text else f"exit status {process.returncode}"


def _object_type(repo: git.Repo, sha: str) -> str | None:
    try:
        return repo.git.cat_file("-t", sha).strip()
    except git.GitCommandError:
        return None
