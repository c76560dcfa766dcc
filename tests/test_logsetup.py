"""Service log lines: their own timestamp on a terminal or in a file; under systemd (JOURNAL_STREAM
names stderr) no second timestamp, and a syslog priority journald reads (`journalctl -p warning`)."""

from __future__ import annotations

import logging
import os
import re

import pytest

from hookdeploy.core import logsetup

STAMP = r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} "


def journal_stream(path) -> str:
    status = os.stat(path)
    return f"{status.st_dev}:{status.st_ino}"


@pytest.mark.slow
def test_serve_under_systemd_logs_priorities_without_its_own_timestamp(served, tmp_path):
    log = tmp_path / "journal.log"
    log.touch()
    server = served.server(log, env={"JOURNAL_STREAM": journal_stream(log)}).start()
    assert server.stop() == 0
    lines = log.read_text().splitlines()
    assert any(re.fullmatch(r"<6>INFO hookdeploy\.web\.server: serving on http://127\.0\.0\.1:\d+ .*", line)
               for line in lines), lines
    assert not any(re.match(STAMP, line) for line in lines), "journald stamps lines itself"


@pytest.mark.slow
def test_serve_elsewhere_logs_its_own_timestamp(served, tmp_path):
    log = tmp_path / "serve.log"
    other = tmp_path / "other"
    other.touch()
    # A JOURNAL_STREAM inherited from a parent whose stderr went elsewhere does not count.
    server = served.server(log, env={"JOURNAL_STREAM": journal_stream(other)}).start()
    assert server.stop() == 0
    lines = log.read_text().splitlines()
    assert any(re.match(STAMP + r"INFO hookdeploy\.web\.server: serving on ", line) for line in lines), lines
    assert not any(line.startswith("<") for line in lines)


def test_each_level_gets_its_syslog_priority(tmp_path, monkeypatch):
    path = tmp_path / "journal"
    with open(path, "w") as stream:
        monkeypatch.setenv("JOURNAL_STREAM", journal_stream(path))
        handler = logsetup.handler(stream)
        logger = logging.getLogger("hookdeploy.test-journal")
        logger.propagate = False
        logger.setLevel(logging.INFO)
        logger.addHandler(handler)
        try:
            logger.error("broken")
            logger.warning("careful")
            logger.info("fine")
        finally:
            logger.removeHandler(handler)
    assert path.read_text().splitlines() == [
        "<3>ERROR hookdeploy.test-journal: broken",
        "<4>WARNING hookdeploy.test-journal: careful",
        "<6>INFO hookdeploy.test-journal: fine",
    ]
