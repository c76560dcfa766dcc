"""engine/traffic.py on real log files: incremental reads, partial lines, a log emptied or replaced
under the reader, lines that are not ours, tallies by release, rotation, and the line nginx's
log_format writes read back (built from the format text, no Docker)."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest

from hookdeploy.core.config import Config, load
from hookdeploy.engine import traffic
from hookdeploy.engine.traffic import Hit, LogReader, Tally

RELEASE_A, RELEASE_B = "a" * 12, "b" * 12


def line(status: int, release: str = RELEASE_A, time: float = 1700000000.5, upstream: str = "10.0.0.2:80") -> bytes:
    """One access-log line as the proxy writes it."""
    return json.dumps({"time": time, "status": status, "release": release, "upstream": upstream,
                       "upstream_status": str(status)}, separators=(",", ":")).encode() + b"\n"


def append(path: Path, data: bytes) -> None:
    """Append as nginx does (O_APPEND)."""
    with open(path, "ab") as file:
        file.write(data)


def statuses(hits: list[Hit]) -> list[int]:
    return [hit.status for hit in hits]


@pytest.fixture
def config(site_config: Path) -> Config:
    return load(site_config)


@pytest.fixture
def log(config: Config) -> Path:
    """The `site` app's access log, existing and empty."""
    path = traffic.log_path(config, "site")
    path.parent.mkdir(parents=True)
    path.touch()
    return path


def test_the_log_lives_in_the_state_dir_and_the_proxy_sees_it_under_its_mount(config: Config):
    assert traffic.log_path(config, "site") == Path(config.server.state_dir) / "proxy" / "logs" / "app-site.log"
    assert traffic.in_proxy("site") == "/var/log/hookdeploy/app-site.log"


def test_each_read_returns_only_the_lines_logged_since_the_last(log: Path):
    append(log, line(200) + line(201))
    reader = LogReader(log)  # from the end: what was there before is not read
    assert reader.read() == []
    append(log, line(202) + line(203))
    assert statuses(reader.read()) == [202, 203]
    assert reader.read() == []
    append(log, line(204))
    assert statuses(reader.read()) == [204]


def test_a_reader_from_the_start_reads_what_was_there(log: Path):
    append(log, line(200) + line(201))
    assert statuses(LogReader(log, from_end=False).read()) == [200, 201]


def test_a_partial_last_line_is_returned_once_completed(log: Path):
    reader = LogReader(log)
    whole = line(503)
    append(log, line(200) + whole[:20])
    assert statuses(reader.read()) == [200]
    assert reader.read() == []
    append(log, whole[20:])
    assert statuses(reader.read()) == [503]
    assert reader.read() == []


def test_a_log_emptied_under_the_reader_is_read_from_its_start(log: Path):
    append(log, line(200) + line(201) + line(202))
    reader = LogReader(log)
    inode = log.stat().st_ino
    os.truncate(log, 0)
    append(log, line(500))
    assert log.stat().st_ino == inode
    assert statuses(reader.read()) == [500]
    append(log, line(201))
    assert statuses(reader.read()) == [201]


def test_a_log_replaced_under_the_reader_is_read_from_its_start(log: Path):
    append(log, line(200))
    reader = LogReader(log)
    replacement = log.with_name("replacement.log")
    replacement.write_bytes(line(502) + line(200) + line(200))  # longer than the old: only the inode tells
    os.replace(replacement, log)  # made while the old one existed: a new inode for sure
    assert statuses(reader.read()) == [502, 200, 200]
    append(log, line(504))
    assert statuses(reader.read()) == [504]


def test_a_log_appearing_after_the_reader_was_made_is_read_whole(log: Path):
    log.unlink()
    reader = LogReader(log)
    assert reader.read() == []
    append(log, line(200) + line(500))
    assert statuses(reader.read()) == [200, 500]


def test_lines_that_are_not_ours_are_skipped(log: Path):
    reader = LogReader(log)
    append(log, b"not json\n" + line(200) + b'{"time": 1, "release": "x"}\n' + b'[1, 2]\n' + b"42\n"
           + b'{"time": null, "status": 200}\n' + b'{"time": 1, "status": "OK"}\n' + b"\xff\xfe\n" + b"\n"
           + line(500))
    assert statuses(reader.read()) == [200, 500]


def test_a_hit_reads_every_field_and_fails_on_5xx_only():
    hits = traffic.parse(line(502, RELEASE_B, time=12.25, upstream="10.0.0.3:80") + line(499) + line(404, ""))
    assert hits[0] == Hit(12.25, 502, RELEASE_B, "10.0.0.3:80", "502")
    assert [hit.failed for hit in hits] == [True, False, False]
    assert hits[2].release == ""


def test_by_release_tallies_requests_and_failures_leaving_the_proxys_own_answers_out():
    hits = traffic.parse(line(200) + line(500) + line(502, RELEASE_B) + line(404, "") + line(308, "") + line(200))
    assert traffic.by_release(hits) == {RELEASE_A: Tally(3, 1), RELEASE_B: Tally(1, 1)}
    assert traffic.by_release([]) == {}


def test_a_tally_describes_itself():
    tally = Tally(52, 41)
    assert tally.ratio == pytest.approx(41 / 52)
    assert tally.describe() == "41 of 52 requests failed (79 %)"
    assert Tally(1, 0).describe() == "0 of 1 request failed (0 %)"
    assert Tally().ratio == 0.0
    assert Tally().describe() == "0 of 0 requests failed (0 %)"


def test_rotate_empties_a_log_only_past_the_limit(config: Config, log: Path, monkeypatch):
    monkeypatch.setattr(traffic, "ROTATE_BYTES", 3 * len(line(200)))
    reader = LogReader(log)
    append(log, line(200) * 3)
    assert traffic.rotate(config, "site") is False
    assert log.stat().st_size == 3 * len(line(200))
    assert len(reader.read()) == 3
    append(log, line(500))
    assert traffic.rotate(config, "site") is True
    assert log.stat().st_size == 0
    append(log, line(503))  # nginx appends on at the new end; the reader starts over
    assert statuses(reader.read()) == [503]
    assert traffic.rotate(config, "absent") is False


def test_the_line_nginx_writes_with_the_log_format_is_read_back():
    """Substitute sample values for the format's variables as nginx's escape=json does (string values
    JSON-escaped, an unset variable empty), and parse what comes out."""
    match = re.fullmatch(r"log_format hookdeploy_json escape=json '(.*)';", traffic.LOG_FORMAT)
    assert match, traffic.LOG_FORMAT
    template = match.group(1)

    def render(values: dict[str, str]) -> bytes:
        def value(variable: re.Match) -> str:
            return json.dumps(values[variable.group(1)])[1:-1]  # escaped as in a JSON string, quotes left to the format
        return re.sub(r"\$(\w+)", value, template).encode() + b"\n"

    served = {"msec": "1700000000.123", "status": "502", "sent_http_x_hookdeploy_release": RELEASE_A,
              "upstream_addr": "10.0.0.2:80, 10.0.0.3:80", "upstream_status": "502, 502"}
    own = {"msec": "1700000001.000", "status": "308", "sent_http_x_hookdeploy_release": "",
           "upstream_addr": "", "upstream_status": ""}
    odd = {**served, "status": "200", "upstream_addr": 'unix:/a "quoted"\\path'}
    assert traffic.parse(render(served) + render(own) + render(odd)) == [
        Hit(1700000000.123, 502, RELEASE_A, "10.0.0.2:80, 10.0.0.3:80", "502, 502"),
        Hit(1700000001.0, 308, "", "", ""),
        Hit(1700000000.123, 200, RELEASE_A, 'unix:/a "quoted"\\path', "502, 502"),
    ]


def test_the_proxy_setup_makes_each_apps_log_so_hookdeploy_can_empty_it(config, monkeypatch):
    from hookdeploy.engine import proxy

    proxy.prepare(config)  # before the proxy container starts: nginx then appends to our file
    path = traffic.log_path(config, "site")
    assert path.exists() and path.stat().st_uid == os.getuid() and oct(path.stat().st_mode & 0o777) == "0o600"
    append(path, line(200) * 10)
    monkeypatch.setattr(traffic, "ROTATE_BYTES", 100)
    assert traffic.rotate(config, "site") and path.stat().st_size == 0
