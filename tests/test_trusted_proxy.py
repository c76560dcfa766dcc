"""Behind a TLS reverse proxy: a real nginx with a self-signed certificate (made by `openssl` here)
in front of `hookdeploy serve --no-worker`, configured with the README's own snippet (readme_nginx.py).
With `server.trusted_proxy` set, waitress believes the proxy's X-Forwarded-* headers, so the dashboard
sees the https origin the browser used: signing in and the rollback button work, and the session
cookie is Secure. Without the setting, or from any other peer, those headers are dropped.
"""

from __future__ import annotations

import http.client
import re
import subprocess
import time
import urllib.parse
import warnings
from pathlib import Path

import pytest

import readme_nginx
from docker_helpers import free_port
from hookdeploy.core import config as configuration
from hookdeploy.core import tokens
from hookdeploy.web.sessions import COOKIE
from hookdeploy.core.models import JobKind, JobState
from hookdeploy.web.server import adjustments
from webhook_helpers import API_SECRET as SECRET, Server, make_repo, release

# Linux answers on all of 127/8: a client bound to this address is a peer other than the proxy.
OTHER_PEER = "127.0.0.2"


# -- the pieces ------------------------------------------------------------------------------------------


@pytest.fixture
def certificate(tmp_path: Path) -> Path:
    """A folder with cert.pem and key.pem: a self-signed certificate for localhost."""
    folder = tmp_path / "proxy"
    folder.mkdir()
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=localhost",
                    "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1",
                    "-keyout", str(folder / "key.pem"), "-out", str(folder / "cert.pem")],
                   check=True, capture_output=True, timeout=60)
    return folder


@pytest.fixture
def tls_proxy(docker_engine, certificate: Path):
    """A function starting the README's nginx (host network, TLS on a free loopback port) in front of
    127.0.0.1:UPSTREAM; returns the port. Containers are removed afterwards."""
    started = []

    def start(upstream: int) -> int:
        port = free_port()
        container = readme_nginx.start(docker_engine, certificate, port, upstream, "trusted-proxy")
        started.append(container)
        wait_until_it_answers(container, port, certificate)
        return port

    try:
        yield start
    finally:
        for container in started:
            container.remove(force=True)


def wait_until_it_answers(container, port: int, certificate: Path, timeout: float = 30) -> None:
    """Wait until nginx answers /healthz from hookdeploy over TLS."""
    import requests

    session = browser(port, certificate)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        container.reload()
        if container.status == "exited":
            raise AssertionError(f"nginx exited: {container.logs().decode(errors='replace')}")
        try:
            if session.get(f"https://localhost:{port}/healthz", timeout=2).status_code == 200:
                return
        except requests.ConnectionError:
            pass
        time.sleep(0.1)
    logs = container.logs().decode(errors="replace")
    raise AssertionError(f"nginx did not answer on {port} within {timeout} s: {logs}")


@pytest.fixture
def serve(write_config, store, tmp_path: Path):
    """A function starting `hookdeploy serve --no-worker` with these [server] keys, for an app `site`
    with two releases recorded (shas[0], then shas[1] live); returns (port, shas)."""
    bare, shas = make_repo(tmp_path)
    release(store, "site", shas[0])
    release(store, "site", shas[1])
    servers = []

    def start(**server_keys) -> tuple[int, list[str]]:
        port = free_port()
        path = write_config({"site": {"repo": str(bare), "branch": "deploy"}},
                            server={"listen": f"127.0.0.1:{port}", **server_keys})
        servers.append(Server(path, port, tmp_path / "serve.log").start())
        return port, shas

    try:
        yield start
    finally:
        for server in servers:
            server.stop()


def browser(proxy_port: int, certificate: Path):
    """A requests session that trusts the test certificate and sends the Origin a browser would."""
    import requests

    session = requests.Session()
    session.trust_env = False  # else REQUESTS_CA_BUNDLE (and any HTTPS_PROXY) would win over the line below
    session.verify = str(certificate / "cert.pem")
    session.headers["Origin"] = f"https://localhost:{proxy_port}"
    return session


def cookie_flags(set_cookie: str) -> set[str]:
    """The attribute names (and SameSite's value) of one Set-Cookie header, lower case."""
    flags = set()
    for part in set_cookie.split(";")[1:]:
        name, _, value = part.strip().partition("=")
        flags.add(f"{name}={value}".lower() if name.lower() == "samesite" else name.lower())
    return flags


def sign_in(session, proxy_port: int, store, scope: str = "deploy"):
    return session.post(f"https://localhost:{proxy_port}/signin", data={"token": tokens.issue(SECRET, store, scope)},
                        allow_redirects=False, timeout=10)


# -- through nginx ----------------------------------------------------------------------------------------


@pytest.mark.docker
def test_sign_in_through_the_tls_proxy_gives_a_secure_session(tls_proxy, serve, certificate, store):
    upstream, shas = serve(trusted_proxy="127.0.0.1")
    port = tls_proxy(upstream)
    session = browser(port, certificate)

    response = sign_in(session, port, store)
    assert response.status_code == 303, response.text
    assert response.headers["Location"] in ("/", f"https://localhost:{port}/")
    set_cookie = response.headers["Set-Cookie"]
    assert set_cookie.startswith(f"{COOKIE}=")
    assert {"secure", "httponly", "samesite=strict"} <= cookie_flags(set_cookie), set_cookie

    page = session.get(f"https://localhost:{port}/", allow_redirects=False, timeout=10)
    assert page.status_code == 200 and shas[1][:12] in page.text and "deploy scope" in page.text


@pytest.mark.docker
def test_rollback_button_through_the_tls_proxy_queues_the_job(tls_proxy, serve, certificate, store):
    upstream, shas = serve(trusted_proxy="127.0.0.1")
    port = tls_proxy(upstream)
    session = browser(port, certificate)
    assert sign_in(session, port, store).status_code == 303

    page = session.get(f"https://localhost:{port}/", timeout=10).text
    form = re.search(r'<form[^>]*action="/apps/site/rollback".*?</form>', page, re.DOTALL)
    assert form, "no rollback button on the dashboard"
    csrf = re.search(r'name="csrf" value="([0-9a-f]+)"', form.group(0)).group(1)
    response = session.post(f"https://localhost:{port}/apps/site/rollback", data={"csrf": csrf},
                            allow_redirects=False, timeout=10)
    assert response.status_code == 303, response.text
    job = store.job(int(response.headers["Location"].rsplit("/", 1)[1]))
    assert (job.app, job.kind, job.sha, job.state) == ("site", JobKind.ROLLBACK, shas[0], JobState.QUEUED)

    job_page = session.get(f"https://localhost:{port}/jobs/{job.id}", timeout=10)
    assert job_page.status_code == 200 and shas[0][:12] in job_page.text


@pytest.mark.docker
def test_without_trusted_proxy_the_same_sign_in_is_refused(tls_proxy, serve, certificate, store):
    upstream, _ = serve()
    port = tls_proxy(upstream)
    session = browser(port, certificate)

    response = sign_in(session, port, store)
    assert response.status_code == 403 and "another site" in response.text
    assert "Set-Cookie" not in response.headers

    del session.headers["Origin"]  # a client sending no Origin (nor Referer) is refused too: login CSRF
    response = sign_in(session, port, store)
    assert response.status_code == 403 and "without an Origin or Referer" in response.text
    assert "Set-Cookie" not in response.headers


# -- straight to serve, from a peer that is not the proxy ---------------------------------------------------


@pytest.mark.slow
def test_forwarding_headers_from_another_peer_are_dropped(serve, store):
    upstream, _ = serve(trusted_proxy="127.0.0.1")
    forged = {"X-Forwarded-Proto": "https", "X-Forwarded-Host": "localhost:8443", "X-Forwarded-For": "203.0.113.9",
              "Content-Type": "application/x-www-form-urlencoded"}
    body = urllib.parse.urlencode({"token": tokens.issue(SECRET, store, "deploy")})

    def post(source: str, headers: dict[str, str]) -> http.client.HTTPResponse:
        connection = http.client.HTTPConnection("127.0.0.1", upstream, timeout=10, source_address=(source, 0))
        try:
            connection.request("POST", "/signin", body=body, headers=headers)
            response = connection.getresponse()
            response.read()
            return response
        finally:
            connection.close()

    refused = post(OTHER_PEER, {**forged, "Origin": "https://localhost:8443"})
    assert refused.status == 403 and refused.getheader("Set-Cookie") is None
    signed_in = post(OTHER_PEER, {**forged, "Origin": f"http://127.0.0.1:{upstream}"})  # what serve sees
    assert signed_in.status == 303
    assert "secure" not in cookie_flags(signed_in.getheader("Set-Cookie"))

    # The same request from the trusted address is believed: the headers are not what was refused.
    believed = post("127.0.0.1", {**forged, "Origin": "https://localhost:8443"})
    assert believed.status == 303 and "secure" in cookie_flags(believed.getheader("Set-Cookie"))


# -- the settings reach waitress --------------------------------------------------------------------------


def test_the_header_names_are_the_ones_waitress_knows():
    from waitress.adjustments import KNOWN_PROXY_HEADERS

    assert set(configuration.PROXY_HEADERS) == KNOWN_PROXY_HEADERS


@pytest.mark.parametrize("server_keys, expected", [
    ({}, None),
    ({"trusted_proxy": "127.0.0.1"}, ("127.0.0.1", {"x-forwarded-for", "x-forwarded-host", "x-forwarded-proto"})),
    ({"trusted_proxy": "::1", "trusted_proxy_headers": ["Forwarded"]}, ("::1", {"forwarded"})),
    ({"trusted_proxy": "*", "trusted_proxy_headers": ["x-forwarded-proto", "x-forwarded-port"]},
     ("*", {"x-forwarded-proto", "x-forwarded-port"})),
])
def test_waitress_gets_the_trusted_proxy_and_accepts_it(write_config, server_keys, expected):
    from waitress.adjustments import Adjustments

    loaded = configuration.load(write_config({"site": {"repo": "/r.git"}}, server=server_keys))
    settings = adjustments(loaded)
    assert settings["clear_untrusted_proxy_headers"] is True
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # waitress warns about settings it has to guess at
        adjusted = Adjustments(**settings)
    if expected is None:
        assert "trusted_proxy" not in settings and adjusted.trusted_proxy is None
    else:
        assert (adjusted.trusted_proxy, adjusted.trusted_proxy_headers) == expected
