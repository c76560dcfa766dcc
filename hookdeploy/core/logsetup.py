"""Where the service's log lines go: stderr, in the form its reader expects.

On a terminal or into a file a line carries its own time. Under systemd the journal stamps each
line already, so a second timestamp only doubles it; there a line starts with its syslog
priority instead (`<4>` for a warning), which journald reads, so `journalctl -p warning` works.
"""

from __future__ import annotations

import logging
import os
import sys

PLAIN_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
JOURNAL_FORMAT = "<%(priority)d>%(levelname)s %(name)s: %(message)s"
# logging level -> syslog priority (sd-daemon.h): err 3, warning 4, notice 5, info 6, debug 7
PRIORITIES = ((logging.CRITICAL, 2), (logging.ERROR, 3), (logging.WARNING, 4), (logging.INFO, 6))


class JournalFormatter(logging.Formatter):
    """A line prefixed with its syslog priority, no timestamp; a traceback stays one entry's lines."""

    def __init__(self):
        super().__init__(JOURNAL_FORMAT)

    def format(self, record: logging.LogRecord) -> str:
        record.priority = next((priority for level, priority in PRIORITIES if record.levelno >= level), 7)
        return super().format(record)


def to_journal(stream=None) -> bool:
    """True when `stream` (stderr) is the journal's own stream, as systemd says in JOURNAL_STREAM."""
    expected = os.environ.get("JOURNAL_STREAM", "")
    device, _, inode = expected.partition(":")
    if not (device.isdigit() and inode.isdigit()):
        return False
    try:
        status = os.fstat((stream or sys.stderr).fileno())
    except (OSError, ValueError, AttributeError):
        return False
    return (status.st_dev, status.st_ino) == (int(device), int(inode))


def handler(stream=None) -> logging.Handler:
    """A stderr handler formatted for whoever reads it."""
    stream = stream or sys.stderr
    made = logging.StreamHandler(stream)
    made.setFormatter(JournalFormatter() if to_journal(stream) else logging.Formatter(PLAIN_FORMAT))
    return made


def configure(level: int = logging.INFO) -> None:
    """Send the root logger's lines to stderr at `level` and up, unless logging is set up already."""
    root = logging.getLogger()
    if not root.handlers:
        root.addHandler(handler())
    if root.level == logging.NOTSET or root.level > level:
        root.setLevel(level)
