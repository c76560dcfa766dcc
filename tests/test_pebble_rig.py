"""The ACME rig (pebble_helpers) against the real thing: pebble 2.4.0 with pebble-challtestsrv, an order
placed with the `acme` library and answered over http-01 by a tiny local server; the TLS clients against
a local HTTPS server with the minica's certificate. No Docker; processes, hence `slow`."""

from __future__ import annotations

import contextlib
import datetime
import http.server
import ssl
import threading
from typing import Iterator

import josepy
import pytest
import requests
from acme import challenges, client, messages
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.verification import PolicyBuilder, Store, VerificationError

from docker_helpers import free_port
from pebble_helpers import MINICA_NAME, Pebble, TlsLoad, alpn, handshake_ok, https_get, write_minica

pytestmark = pytest.mark.slow


@contextlib.contextmanager
def http_server(port: int, answers: dict[str, str], seen: list[str], tls: ssl.SSLContext | None = None) -> Iterator:
    """HTTP (HTTPS with `tls`) on 127.0.0.1:PORT: `answers` (path -> body) or 404, with release r1; the
    Host and path of every request go to `seen`."""
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            seen.append(f"{self.headers['Host']}{self.path}")
            body = answers.get(self.path)
            self.send_response(200 if body is not None else 404)
            self.send_header("X-Hookdeploy-Release", "r1")
            self.end_headers()
            self.wfile.write((body or "").encode())

        def log_message(self, *arguments):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler)
    server.handle_error = lambda *arguments: None  # refused handshakes are expected
    if tls is not None:  # each handshake in its handler's thread, on its first read
        server.socket = tls.wrap_socket(server.socket, server_side=True, do_handshake_on_connect=False)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield
    finally:
        server.shutdown()
        server.server_close()


def issue(pebble: Pebble, name: str) -> list[x509.Certificate]:
    """Order a certificate for `name` (new EC account, http-01 answered on pebble.http_port); the chain."""
    account_key = josepy.JWKEC(key=ec.generate_private_key(ec.SECP256R1()))
    network = client.ClientNetwork(account_key, alg=josepy.ES256, verify_ssl=str(pebble.ca_bundle))
    acme = client.ClientV2(client.ClientV2.get_directory(pebble.directory, network), network)
    acme.new_account(messages.NewRegistration.from_data(terms_of_service_agreed=True))
    csr = (x509.CertificateSigningRequestBuilder().subject_name(x509.Name([]))
           .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
           .sign(ec.generate_private_key(ec.SECP256R1()), hashes.SHA256()))
    order = acme.new_order(csr.public_bytes(serialization.Encoding.PEM))
    answers: dict[str, str] = {}
    with http_server(pebble.http_port, answers, seen := []):
        for authorization in order.authorizations:
            chall = next(c for c in authorization.body.challenges if isinstance(c.chall, challenges.HTTP01))
            response, validation = chall.response_and_validation(account_key)
            answers[chall.chall.path] = validation
            acme.answer_challenge(chall, response)
        order = acme.poll_and_finalize(order, datetime.datetime.now() + datetime.timedelta(seconds=30))
    assert seen and all(line.startswith(f"{name}:{pebble.http_port}/.well-known/acme-challenge/") for line in seen)
    return x509.load_pem_x509_certificates(order.fullchain_pem.encode())


def verify(chain: list[x509.Certificate], root_pem: str, name: str) -> None:
    """Verify `chain` (leaf first) for `name` against the one root `root_pem`; raises VerificationError."""
    store = Store(x509.load_pem_x509_certificates(root_pem.encode()))
    PolicyBuilder().store(store).build_server_verifier(x509.DNSName(name)).verify(chain[0], chain[1:])


def test_pebble_serves_its_directory_verified_by_ca_bundle(make_pebble):
    pebble = make_pebble(free_port())
    assert pebble.directory == f"https://127.0.0.1:{pebble.port}/dir"
    assert "newOrder" in requests.get(pebble.directory, verify=str(pebble.ca_bundle), timeout=5).json()
    with pytest.raises(requests.exceptions.SSLError):
        requests.get(pebble.directory, timeout=5)  # the system's CAs do not know the minica
    assert x509.load_pem_x509_certificate(pebble.ca_bundle.read_bytes()).subject.rfc4514_string() == f"CN={MINICA_NAME}"
    assert "BEGIN CERTIFICATE" in pebble.root_pem() and pebble.intermediate_pem() != pebble.root_pem()
    assert alpn(pebble.port, "localhost") == "h2"


def test_acme_order_over_http01_is_issued_with_the_validity_asked_for(make_pebble):
    pebble = make_pebble(free_port(), validity_seconds=3600)
    chain = issue(pebble, "rig.test")
    names = chain[0].extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert names.get_values_for_type(x509.DNSName) == ["rig.test"]
    lifetime = (chain[0].not_valid_after_utc - chain[0].not_valid_before_utc).total_seconds()
    assert abs(lifetime - 3600) <= 2, lifetime
    assert chain[1] == x509.load_pem_x509_certificate(pebble.intermediate_pem().encode())
    verify(chain, pebble.root_pem(), "rig.test")
    with pytest.raises(VerificationError):
        verify(chain, pebble.ca_bundle.read_text(), "rig.test")  # the minica is not the issuing root


def test_stopped_pebble_is_unreachable_and_comes_back_on_the_same_port_with_a_new_root(make_pebble):
    pebble = make_pebble(free_port())
    root, ca, port = pebble.root_pem(), pebble.ca_bundle.read_text(), pebble.port
    pebble.stop()
    with pytest.raises(requests.exceptions.ConnectionError):
        requests.get(pebble.directory, verify=str(pebble.ca_bundle), timeout=5)
    pebble.start()
    assert pebble.port == port and pebble.ca_bundle.read_text() == ca
    assert requests.get(pebble.directory, verify=str(pebble.ca_bundle), timeout=5).status_code == 200
    assert pebble.root_pem() != root
    verify(issue(pebble, "again.test"), pebble.root_pem(), "again.test")


VERSIONS = [ssl.TLSVersion.TLSv1, ssl.TLSVersion.TLSv1_1, ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3]


@pytest.mark.filterwarnings("ignore:ssl.TLSVersion.TLSv1:DeprecationWarning")
def test_tls_clients_send_sni_and_host_and_see_what_the_server_offers(tmp_path):
    minica, port, seen = write_minica(tmp_path / "minica"), free_port(), []
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)  # the minica's localhost certificate, TLS 1.2 and up
    context.load_cert_chain(minica.cert, minica.key)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.set_ciphers("DEFAULT:@SECLEVEL=0")  # OpenSSL itself refuses no version
    context.set_alpn_protocols(["http/1.1"])
    with http_server(port, {"/": "hello"}, seen, context):
        answer = https_get(port, "localhost", cafile=minica.ca)
        assert (answer.status, answer.body, answer.release, answer.version) == (200, "hello", "r1", "TLSv1.3")
        assert answer.cert.subject.rfc4514_string() == "CN=localhost" and seen == ["localhost/"]  # Host: no port
        with pytest.raises(ssl.SSLCertVerificationError):
            https_get(port, "site.test", cafile=minica.ca)
        assert https_get(port, "site.test", "/missing").status == 404 and seen[-1] == "site.test/missing"
        assert alpn(port, "localhost") == "http/1.1" and alpn(port, "localhost", ("h2",)) is None
        assert [handshake_ok(port, "localhost", version) for version in VERSIONS] == [False, False, True, True]
        with TlsLoad(port, "localhost", cafile=minica.ca) as load:
            threading.Event().wait(0.5)
        assert load.requests > 0 and not load.errors and set(load.releases) == {"r1"}

        context.minimum_version = ssl.TLSVersion.TLSv1  # the client can offer 1.0 and 1.1: a False was the server's
        assert all(handshake_ok(port, "localhost", version) for version in VERSIONS)
    with pytest.raises(ConnectionRefusedError):
        handshake_ok(port, "localhost", ssl.TLSVersion.TLSv1_2)
