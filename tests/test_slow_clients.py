"""Slow clients (issue 20): `serve` is meant to sit on loopback behind the README's nginx, which holds
slow connections itself and passes a request on only once it has all of it.

The proof runs the README's own nginx (readme_nginx.py) in front of a real `hookdeploy serve
--no-worker` with 64 threads, opens 2,000 slowloris connections through it and, while they hang,
sends a real signed GitHub delivery: it is answered 202 within 1 s. One client past `limit_conn`
gets nginx's 503, and nginx cuts the slow ones off after `client_header_timeout`. The rest: the
[server] keys that size waitress (connection_limit, channel_timeout) and `doctor`'s warning when
serve listens on a public address with no proxy in front. bench/slow_clients.py measures serve
without the proxy.
"""

from __future__ import annotations

import http.client
import json
import re
import resource
import socket
import subprocess
import time
from pathlib import Path

import pytest

import readme_nginx
from hookdeploy.core import config as configuration
from hookdeploy.core.models import JobState, Trigger
from hookdeploy.core.store import Store
from hookdeploy.web.server import adjustments
from pebble_helpers import self_signed
from slowloris import SlowClients, attacker_context
from webhook_helpers import HOOKDEPLOY, Served, delivery, environment, free_port

SLOW_CLIENTS = 2000
ANSWER_WITHIN_SECONDS = 1.0  # the bar for a real delivery while the slow clients hang
ONE_CLIENT = "127.0.0.3"  # Linux answers on all of 127/8: a client apart from the slow ones (127.0.0.2)


# -- through the README's nginx ---------------------------------------------------------------------------


def active_connections(status_port: int) -> int:
    """nginx's own count of the client connections it holds (stub_status), this request included."""
    connection = http.client.HTTPConnection("127.0.0.1", status_port, timeout=5)
    try:
        connection.request("GET", "/")
        text = connection.getresponse().read().decode()
    finally:
        connection.close()
    return int(re.search(r"Active connections: (\d+)", text).group(1))


def body_never_sent(port: int, source: str) -> socket.socket:
    """A TLS connection from `source` whose request announces a body and never sends it: nginx,
    which reads the whole body before passing a request on, holds it (and counts it for limit_conn)."""
    plain = socket.create_connection(("127.0.0.1", port), timeout=10, source_address=(source, 0))
    connection = attacker_context().wrap_socket(plain, server_hostname="localhost")
    connection.sendall(b"POST /hooks/site HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
                       b"Content-Length: 1000\r\n\r\n")
    return connection


def post_over_tls(port: int, context, body: bytes, headers: dict) -> tuple[int, dict, float]:
    """POST a delivery to https://localhost:port/hooks/site on a new connection: (status, JSON, seconds taken)."""
    started = time.monotonic()
    connection = http.client.HTTPConnection("localhost", port, timeout=30)
    try:
        # By address (nginx listens on IPv4 only), verified as localhost.
        plain = socket.create_connection(("127.0.0.1", port), timeout=30)
        connection.sock = context.wrap_socket(plain, server_hostname="localhost")
        connection.request("POST", "/hooks/site", body=body, headers=headers)
        response = connection.getresponse()
        answer = json.loads(response.read())
        return response.status, answer, time.monotonic() - started
    finally:
        connection.close()


@pytest.mark.slow
def test_a_delivery_through_the_readme_nginx_is_answered_within_a_second_past_2000_slow_clients(
        docker_engine, tmp_path: Path):
    served = Served.make(tmp_path, threads=64)
    folder = tmp_path / "nginx"
    cafile, _ = self_signed(folder, "localhost")
    status_port = free_port()
    (folder / "status.conf").write_text(f"server {{ listen 127.0.0.1:{status_port}; location / {{ stub_status; }} }}\n")
    context = readme_nginx.client_context(cafile)
    header_timeout = readme_nginx.seconds(readme_nginx.directive("client_header_timeout"))
    per_client = int(readme_nginx.directive("limit_conn").split()[1])
    hanging = (f"{{}} of {SLOW_CLIENTS} slow clients hang ({{}} not taken); opening them took {{:.1f}} s, "
               f"and nginx cuts each off after client_header_timeout ({header_timeout:.0f} s)")

    with served.server() as server:
        port = free_port()
        proxy = readme_nginx.start(docker_engine, folder, port, server.port, "slow-clients")
        try:
            with SlowClients(port, SLOW_CLIENTS, tls=True, connect_timeout=10) as slow:
                assert slow.open_now == SLOW_CLIENTS, hanging.format(slow.open_now, slow.refused, slow.opening_seconds)
                assert active_connections(status_port) > SLOW_CLIENTS

                body, headers = delivery("site", served.shas[-1])
                status, answer, seconds = post_over_tls(port, context, body, headers)
                assert status == 202, answer
                assert seconds < ANSWER_WITHIN_SECONDS, f"answered in {seconds:.2f} s"
                assert slow.open_now == SLOW_CLIENTS, hanging.format(slow.open_now, slow.refused, slow.opening_seconds)

                # One client past limit_conn requests in progress is refused by nginx itself.
                held = [body_never_sent(port, ONE_CLIENT) for _ in range(per_client)]
                try:
                    time.sleep(0.5)  # every worker has read those heads
                    with body_never_sent(port, ONE_CLIENT) as refused:
                        assert refused.recv(4096).startswith(b"HTTP/1.1 503 "), "past limit_conn: 503 from nginx"
                    held[-1].settimeout(0.5)
                    with pytest.raises(TimeoutError):
                        held[-1].recv(1)  # the last one within the limit still waits for its body
                finally:
                    for connection in held:
                        connection.close()

                # nginx then cuts each one off once client_header_timeout has passed since it connected,
                # however often it sends a byte.
                assert slow.wait_until_all_closed(header_timeout + 15), f"{slow.open_now} still open"
        finally:
            proxy.remove(force=True)

    job = Store(configuration.load(served.config).server.database).job(answer["job"])
    assert (job.app, job.sha, job.trigger, job.state) == ("site", served.shas[-1], Trigger.WEBHOOK, JobState.QUEUED)


# -- the [server] keys that size waitress ----------------------------------------------------------------


def test_connection_limit_and_channel_timeout_default_to_design_and_reach_waitress(write_config):
    defaults = configuration.load(write_config({"site": {"repo": "/r.git"}}))
    assert (defaults.server.connection_limit, defaults.server.channel_timeout) == (1600, 30)
    assert adjustments(defaults)["connection_limit"] == 1600 and adjustments(defaults)["channel_timeout"] == 30

    chosen = configuration.load(write_config({"site": {"repo": "/r.git"}},
                                             server={"connection_limit": 5000, "channel_timeout": 5}))
    settings = adjustments(chosen)
    assert (settings["connection_limit"], settings["channel_timeout"]) == (5000, 5)
    assert settings["cleanup_interval"] <= 5  # else an idle connection could stay up to 30 s more


@pytest.mark.parametrize("server, problem", [
    ({"connection_limit": 0}, "server.connection_limit: must be between 1 and 100000 open connections"),
    ({"connection_limit": 100_001}, "server.connection_limit: must be between 1 and 100000 open connections"),
    ({"connection_limit": "many"}, "server.connection_limit: must be an integer, not 'many'"),
    ({"channel_timeout": 0}, "server.channel_timeout: must be between 1 and 3600 seconds"),
    ({"channel_timeout": -5}, "server.channel_timeout: must be between 1 and 3600 seconds"),
    ({"channel_timeout": 3601}, "server.channel_timeout: must be between 1 and 3600 seconds"),
    ({"channel_timeout": 2.5}, "server.channel_timeout: must be an integer, not 2.5"),
])
def test_bad_connection_limit_or_channel_timeout_is_one_line_naming_the_key(write_config, run_cli, server, problem):
    path = write_config({"site": {"repo": "/r.git"}}, server=server)
    completed = run_cli("status", config=path)
    assert completed.returncode == 2
    assert problem in completed.stderr.splitlines()[-1], completed.stderr
    assert not (path.parent / "state").exists()  # nothing written


def raw_delivery(port: int, body: bytes, headers: dict) -> socket.socket:
    """A new connection to serve with a whole delivery sent on it."""
    head = "".join(f"{name}: {value}\r\n" for name, value in headers.items())
    connection = socket.create_connection(("127.0.0.1", port), timeout=10)
    connection.sendall(f"POST /hooks/site HTTP/1.1\r\nHost: localhost\r\nContent-Length: {len(body)}\r\n{head}"
                       f"Connection: close\r\n\r\n".encode() + body)
    return connection


@pytest.mark.slow
def test_serve_holds_connection_limit_connections_and_drops_those_idle_for_channel_timeout(tmp_path: Path):
    served = Served.make(tmp_path, threads=64)
    text = served.config.read_text()
    served.config.write_text(text.replace("threads = 64\n", "threads = 64\nconnection_limit = 10\n"
                                                             "channel_timeout = 2\n"))
    body, headers = delivery("site", served.shas[-1])
    with served.server() as server:
        # Waitress counts its listening socket and its wake-up pipe among the 10: 8 idle clients fill it.
        idle = [socket.create_connection(("127.0.0.1", server.port), timeout=10) for _ in range(8)]
        try:
            waiting = raw_delivery(server.port, body, headers)
            waiting.settimeout(1)
            with pytest.raises(TimeoutError):
                waiting.recv(1)  # not taken: serve is at connection_limit
            # The idle ones are closed after channel_timeout, which lets the delivery in.
            waiting.settimeout(15)
            assert waiting.recv(4096).startswith(b"HTTP/1.1 202 "), "the delivery should be answered once idle ones go"
            for connection in idle:
                connection.settimeout(5)
                assert connection.recv(1) == b"", "serve should have closed an idle connection"
        finally:
            for connection in idle:
                connection.close()


# -- doctor ------------------------------------------------------------------------------------------------


def doctor_lines(write_config, run_cli, state_dir, site_bare_repo, **server) -> tuple[int, list[str]]:
    state_dir.mkdir(exist_ok=True)
    path = write_config({"site": {"repo": str(site_bare_repo), "branch": "deploy"}}, server=server)
    completed = run_cli("doctor", config=path)
    return completed.returncode, completed.stdout.splitlines()


def test_doctor_warns_when_serve_listens_publicly_with_no_proxy_in_front(write_config, run_cli, state_dir,
                                                                         site_bare_repo):
    status, lines = doctor_lines(write_config, run_cli, state_dir, site_bare_repo, listen="0.0.0.0:18080")
    warnings = [line for line in lines if line.startswith("WARN  ")]
    assert warnings == [
        "WARN  server.listen 0.0.0.0:18080 is not a loopback address and no server.trusted_proxy is set: 1600 slow "
        "clients would leave serve answering no one; listen on 127.0.0.1 behind a TLS proxy "
        "(the handbook's guides/tls-proxy.md), or set server.trusted_proxy to the proxy's address"], lines

    # A warning is not a problem: doctor ends as it does on loopback.
    loopback_status, loopback_lines = doctor_lines(write_config, run_cli, state_dir, site_bare_repo,
                                                   listen="127.0.0.1:18080")
    assert status == loopback_status
    assert [line for line in lines if line.startswith("FIX   ")] == [
        line for line in loopback_lines if line.startswith("FIX   ")]
    assert lines[-1] == loopback_lines[-1]
    assert "ok    server.listen 127.0.0.1:18080 is loopback: only this machine (and a proxy on it) reaches serve" \
        in loopback_lines


@pytest.mark.parametrize("server", [
    {"listen": "127.0.0.1:18080"},
    {"listen": "[::1]:18080"},
    {"listen": "localhost:18080"},
    {"listen": "0.0.0.0:18080", "trusted_proxy": "10.0.0.2"},
])
def test_doctor_does_not_warn_on_loopback_or_behind_a_trusted_proxy(write_config, run_cli, state_dir,
                                                                    site_bare_repo, server):
    _, lines = doctor_lines(write_config, run_cli, state_dir, site_bare_repo, **server)
    assert not [line for line in lines if line.startswith("WARN  ")], lines
    assert any(line.startswith(f"ok    server.listen {server['listen']} ") for line in lines), lines


def open_files_limit(pid: int) -> tuple[int, int]:
    """A process's (soft, hard) limit of open files, from /proc."""
    for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
        if line.startswith("Max open files"):
            soft, hard = line.split()[3:5]
            return int(soft), int(hard)
    raise AssertionError("no Max open files line")


@pytest.mark.slow
@pytest.mark.parametrize("soft, hard, connection_limit, expected", [
    (1024, 4096, 1600, (1856, 4096)),  # as systemd starts it: raised to fit connection_limit
    (512, 1024, 1600, (1024, 1024)),  # the hard limit is lower: as far as it goes, with a warning
])
def test_serve_raises_its_open_file_limit_to_fit_connection_limit(tmp_path: Path, soft, hard, connection_limit,
                                                                  expected):
    served = Served.make(tmp_path, threads=8)
    text = served.config.read_text()
    served.config.write_text(text.replace("threads = 8\n", f"threads = 8\nconnection_limit = {connection_limit}\n"))
    log = tmp_path / "serve.log"
    with log.open("ab") as output:
        process = subprocess.Popen([str(HOOKDEPLOY), "--config", str(served.config), "serve", "--no-worker"],
                                   env=environment(), stdout=output, stderr=subprocess.STDOUT,
                                   preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard)))
    try:
        deadline = time.monotonic() + 20
        while "serving on" not in log.read_text() and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert "serving on" in log.read_text(), log.read_text()
        assert open_files_limit(process.pid) == expected
        warned = "leaves room for 768 connections, not server.connection_limit = 1600" in log.read_text()
        assert warned == (hard < connection_limit + 256), log.read_text()
    finally:
        process.terminate()
        assert process.wait(20) == 0
