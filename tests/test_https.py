"""HTTPS end to end: certificates from a real ACME server (Debian's pebble, which validates HTTP-01
through the proxy's published port, names resolved to 127.0.0.1 by pebble-challtestsrv), served by
the real nginx proxy, checked as a browser would (chain to pebble's root, name, protocol).

Each test's instance publishes HTTP on a free port, which is pebble's httpPort, and HTTPS on another.
"""

from __future__ import annotations

import http.client
import json
import ssl
import stat
import threading
import time

import pytest
from cryptography import x509
from docker_helpers import free_port, site_files
from pebble_helpers import TlsLoad, alpn, handshake_ok, https_get, self_signed

from hookdeploy.core.models import JobState
from hookdeploy.engine import certs, worker as worker_module

pytestmark = pytest.mark.slow

HOST = "site.test"


def configure(instance, pebble=None, tls="acme", directory: str | None = None, **app):
    """site with hostname HOST and `tls`, HTTPS on a free port (kept across calls), [tls] pointing at `pebble`."""
    if not hasattr(instance, "tls_port"):
        instance.tls_port = free_port()
    extra = ""
    if pebble is not None or directory:
        extra = "[tls]\nemail = \"ops@site.test\"\n"
        extra += f"acme_directory = \"{directory or pebble.directory}\"\n"
        if pebble is not None:
            extra += f"ca_bundle = \"{pebble.ca_bundle}\"\n"
    instance.configure({"site": {"hostnames": [HOST], "tls": tls, **app}}, extra=extra,
                       proxy={"publish_tls": f"127.0.0.1:{instance.tls_port}"})


def root_file(pebble, tmp_path):
    path = tmp_path / "pebble-root.pem"
    path.write_text(pebble.root_pem())
    return path


def deployed(instance, version: str):
    job = instance.deploy("site", site_files(version))
    assert job.state is JobState.SUCCEEDED, (job.error, instance.events(job.id))
    return job


def test_a_hostname_gets_a_certificate_before_its_first_switch_and_keeps_it(instance, make_pebble, tmp_path):
    pebble = make_pebble(instance.port)
    configure(instance, pebble, hsts=True)
    job = deployed(instance, "v1")
    events = instance.events(job.id)
    assert any(f"certificate for {HOST} obtained" in line for line in events), events
    root = root_file(pebble, tmp_path)

    answer = https_get(instance.tls_port, HOST, cafile=root)  # chain and name checked against pebble's root
    assert (answer.status, answer.release) == (200, job.sha[:12]) and "v1" in answer.body
    assert answer.cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value \
        .get_values_for_type(x509.DNSName) == [HOST]
    assert answer.headers["strict-transport-security"] == "max-age=31536000"
    assert answer.version in ("TLSv1.2", "TLSv1.3")
    assert alpn(instance.tls_port, HOST) == "h2"
    assert not handshake_ok(instance.tls_port, HOST, ssl.TLSVersion.TLSv1_1)
    assert handshake_ok(instance.tls_port, HOST, ssl.TLSVersion.TLSv1_2)
    assert handshake_ok(instance.tls_port, HOST, ssl.TLSVersion.TLSv1_3)
    with pytest.raises(ssl.SSLError):  # a name no app has: no certificate handed out
        https_get(instance.tls_port, "other.test")

    plain = _raw_get(instance.port, HOST, "/page?x=1")
    assert plain.status == 308 and plain.getheader("Location") == f"https://{HOST}:{instance.tls_port}/page?x=1"
    assert _raw_get(instance.port, HOST, "/.well-known/acme-challenge/none").status == 404  # never redirected

    pem = certs.pem_path(instance.config, instance.config.app("site"), HOST)
    assert stat.S_IMODE(pem.stat().st_mode) == 0o600
    account = instance.state_dir / "tls" / "account.json"
    assert stat.S_IMODE(account.stat().st_mode) == 0o600
    assert not any("PRIVATE KEY" in line for line in events)

    second = deployed(instance, "v2")  # the certificate is kept: no order on a deploy
    assert not any("ordering" in line for line in instance.events(second.id)), instance.events(second.id)
    again = https_get(instance.tls_port, HOST, cafile=root)
    assert again.release == second.sha[:12] and again.cert.serial_number == answer.cert.serial_number


def test_acme_server_down_the_site_keeps_serving_over_http_and_the_worker_gets_it_later(
        instance, make_pebble, tmp_path, monkeypatch):
    pebble = make_pebble(instance.port)
    pebble.stop()
    configure(instance, pebble)
    job = deployed(instance, "v1")
    reason = next((line for line in instance.events(job.id) if line.startswith(f"no certificate for {HOST}")), None)
    assert reason is not None and "does not answer (connection refused)" in reason and pebble.directory in reason, \
        instance.events(job.id)
    assert "served over HTTP" in reason and "next try in 5 min" in reason
    answer = instance.get(host=HOST)
    assert (answer.status, answer.release) == (200, job.sha[:12])  # not redirected to an HTTPS it lacks
    doctor = instance.cli("doctor")
    assert f"FIX   site: no certificate for {HOST}: the ACME server" in doctor.stdout, doctor.stdout

    # Back up: the worker's loop tries again once the backoff has passed, and switches HTTPS in.
    monkeypatch.setattr(certs, "RETRY_SECONDS", (2.0, 4.0))
    monkeypatch.setattr(worker_module, "CERTS_SECONDS", 1.0)
    pebble.start()
    certs._record_failure(instance.config, HOST, reason)  # a fresh failure: its next try is 2 s away
    stop = threading.Event()
    thread = threading.Thread(target=worker_module.Worker(instance.config, instance.store).run, args=(stop,))
    thread.start()
    try:
        assert _wait(lambda: _https_ok(instance, HOST), 60), pebble.logs()[-2000:]
    finally:
        stop.set()
        thread.join(timeout=60)
    assert https_get(instance.tls_port, HOST, cafile=root_file(pebble, tmp_path)).release == job.sha[:12]
    assert instance.get(host=HOST).status == 308
    assert certs.last_failure(instance.config, HOST) is None


def test_renewal_and_a_deploy_under_https_load_fail_no_request(instance, make_pebble, tmp_path, monkeypatch):
    pebble = make_pebble(instance.port, validity_seconds=45)  # due for renewal 30 s after issue
    configure(instance, pebble)
    first = deployed(instance, "v1")
    root = root_file(pebble, tmp_path)
    serial = https_get(instance.tls_port, HOST, cafile=root).cert.serial_number
    monkeypatch.setattr(worker_module, "CERTS_SECONDS", 2.0)
    stop = threading.Event()
    thread = threading.Thread(target=worker_module.Worker(instance.config, instance.store).run, args=(stop,))
    thread.start()
    try:
        with TlsLoad(instance.tls_port, host=HOST, cafile=root, threads=4) as load:
            assert _wait(lambda: https_get(instance.tls_port, HOST, cafile=root).cert.serial_number != serial, 90), \
                "not renewed"
            job = instance.enqueue("site", instance.commit("site", site_files("v2")))
            assert _wait(lambda: instance.store.job(job.id).state.finished, 120)
            assert instance.store.job(job.id).state is JobState.SUCCEEDED, instance.events(job.id)
            time.sleep(1)
    finally:
        stop.set()
        thread.join(timeout=60)
    print(f"HTTPS load through a renewal and a deploy: {load.requests} requests, {len(load.errors)} failed")
    assert load.errors == [] and load.requests > 100, (load.errors[:5], load.requests)
    assert set(load.releases) == {first.sha[:12], job.sha[:12]}


def test_a_certificate_the_user_brings_is_served_and_a_wrong_key_changes_nothing(instance, tmp_path):
    cert_file, key_file = self_signed(tmp_path / "own", HOST)
    configure(instance, tls={"cert_file": str(cert_file), "key_file": str(key_file)}, redirect_http=False)
    job = deployed(instance, "v1")
    answer = https_get(instance.tls_port, HOST, cafile=cert_file)
    assert (answer.status, answer.release) == (200, job.sha[:12])
    assert "strict-transport-security" not in answer.headers
    assert instance.get(host=HOST).release == job.sha[:12]  # redirect_http = false: HTTP still serves

    _, other_key = self_signed(tmp_path / "other", HOST)
    configure(instance, tls={"cert_file": str(cert_file), "key_file": str(other_key)})
    failed = instance.deploy("site", site_files("v2"))
    assert failed.state is JobState.FAILED
    assert failed.error == f"apps.site.tls: key_file {other_key} is not the key of cert_file {cert_file}"
    assert https_get(instance.tls_port, HOST, cafile=cert_file).release == job.sha[:12]
    assert instance.container_names() == instance.expected_containers()


def test_turning_https_on_for_a_live_site(instance, make_pebble, tmp_path):
    instance.configure({"site": {"hostnames": [HOST]}})
    deployed(instance, "v1")
    pebble = make_pebble(instance.port)
    configure(instance, pebble)
    job = deployed(instance, "v2")
    proxy = instance.client.containers.get(f"{instance.name}-proxy")
    assert set(proxy.attrs["HostConfig"]["PortBindings"]) == {"80/tcp", "443/tcp"}
    assert https_get(instance.tls_port, HOST, cafile=root_file(pebble, tmp_path)).release == job.sha[:12]


def test_an_acme_server_that_forgot_the_account_gets_it_again_with_the_same_key(instance, make_pebble, tmp_path):
    pebble = make_pebble(instance.port)
    configure(instance, pebble)
    deployed(instance, "v1")
    account = instance.state_dir / "tls" / "account.json"
    key = json.loads(account.read_text())["key"]
    pebble.restart()  # pebble keeps nothing: the account is unknown there now
    configure(instance, pebble, hostnames=[HOST, "www.site.test"])
    job = deployed(instance, "v2")
    events = instance.events(job.id)
    assert any("no longer knows this instance's account; registering it again" in line for line in events), events
    assert any("certificate for www.site.test obtained" in line for line in events), events
    assert json.loads(account.read_text())["key"] == key  # one account key per instance, kept
    answer = https_get(instance.tls_port, "www.site.test", cafile=root_file(pebble, tmp_path))
    assert answer.release == job.sha[:12]


# -- helpers ------------------------------------------------------------------------------------------


def _raw_get(port: int, host: str, path: str):
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    connection.request("GET", path, headers={"Host": host})
    response = connection.getresponse()
    response.read()
    connection.close()
    return response


def _https_ok(instance, host: str) -> bool:
    try:
        return https_get(instance.tls_port, host).status == 200
    except OSError:
        return False


def _wait(predicate, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if predicate():
                return True
        except OSError:
            pass
        time.sleep(0.5)
    return False
