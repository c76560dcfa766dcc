"""What only the hookdeploy user may read: state_dir is 0700, the files in it that hold data 0600.

state_dir holds the job store (job logs, webhook deliveries, who deployed what), mirrors and
checkouts of private repositories, TLS keys and the proxy's access logs. Modes are set here
explicitly, never left to the umask: under the usual 022 SQLite makes its files readable by every
local user. An existing state_dir made looser by an older version is tightened the next time a
command opens the store; a file that is not ours to chmod is said in the log, not fatal.

What stays readable on purpose: the proxy's conf.d (nginx's workers, unprivileged in their
container, serve the ACME challenge answers from it) and release checkouts (the image gets their modes).
"""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

log = logging.getLogger(__name__)

FOLDER_MODE = 0o700
FILE_MODE = 0o600


def folder(path: Path) -> Path:
    """`path` made if missing (with its parents) and 0700, an existing looser one tightened; a folder
    others share (sticky or world-writable, as /tmp; or /) is left as it is, with a warning."""
    path.mkdir(mode=FOLDER_MODE, parents=True, exist_ok=True)
    current = path.stat().st_mode
    if current & (stat.S_ISVTX | stat.S_IWOTH) or path.resolve() == Path("/"):
        log.warning("%s is shared with other users (mode %o), so hookdeploy leaves it as it is: give state_dir "
                    "a folder of its own", path, stat.S_IMODE(current))
        return path
    tighten(path, FOLDER_MODE)
    return path


def file(path: Path) -> Path:
    """`path` made empty if missing and 0600, an existing looser one tightened (its content kept).

    An existing file is never opened: closing any descriptor of a file drops every POSIX lock this
    process holds on it, and SQLite's locks on its database are those (another process could then
    checkpoint and remove the WAL under this process's open connections)."""
    if not path.exists():
        try:
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, FILE_MODE))
        except FileExistsError:
            pass  # made by another process just now: as good
    tighten(path, FILE_MODE)
    return path


def tighten(path: Path, mode: int) -> None:
    """Take from `path` the permission bits `mode` does not have; nothing if it is missing."""
    try:
        current = stat.S_IMODE(path.stat().st_mode)
        if current & ~mode:
            os.chmod(path, current & mode)
    except FileNotFoundError:
        pass
    except PermissionError:  # another user's file (root ran a command once?): ours to report, not to fix
        log.warning("%s is readable by other users and not ours to change: chmod %o it", path, mode)
