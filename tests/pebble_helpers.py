"""A real ACME server for the HTTPS tests, and TLS clients that speak to the proxy the way a browser
would (SNI and Host: a name that does not resolve here, the connection to 127.0.0.1).

The ACME server is Debian's `pebble` 2.4.0 (package pebble: /usr/bin/pebble and
/usr/bin/pebble-challtestsrv; it ships no config and no certificates). `Pebble(root, http_port)`
makes, under `root`:

- a private CA, "hookdeploy test minica" (`ca.pem`, what `[tls] ca_bundle` points at), and a
  certificate for localhost and 127.0.0.1 signed by it (`localhost.pem`, `localhost-key.pem`):
  pebble listens on HTTPS only, with that certificate, for the directory and the management API;
- `pebble-config.json`: the directory on 127.0.0.1:`port`, the management API on
  127.0.0.1:`management_port`, http-01 validated on `http_port` (the test's choice: where the proxy
  or a test server answers), tls-alpn-01 on a free port nobody listens on, and, when given,
  `certificateValidityPeriod` (seconds; pebble 2.4.0 honours it: notAfter - notBefore is exactly that);
- `pebble-challtestsrv` as pebble's DNS server (`-dnsserver`), answering 127.0.0.1 for every A query
  and nothing for AAAA (`-defaultIPv6 ""`, so pebble never tries ::1), with its challenge servers
  off (pebble validates against `http_port`, not against challtestsrv; 2.4.0 has no -doh flag);
- `pebble.log` and `challtestsrv.log` (appended across restarts; `Pebble.logs()` shows both).

Pebble runs with PEBBLE_VA_NOSLEEP=1 (no random wait before a validation), PEBBLE_WFE_NONCEREJECT=0
(by default it rejects 5% of good nonces) and PEBBLE_AUTHZREUSE=0 (by default it reuses a valid
authorization half of the time, skipping the challenge). A start takes about half a second; an
order is issued within ~0.1 s of its challenge being answered (finalization is asynchronous: the
order is "processing", then "valid"; the `acme` library's polling adds ~1 s per step). The VA fetches
the http-01 resource several times (three here) with Host `NAME:http_port`.

Pebble keeps everything in memory: `stop()` then `start()` (or `restart()`) brings it back on the
same ports with the same `ca.pem`, but with a new root and intermediate (fetch `root_pem()` again),
no accounts (an account key registered before is unknown) and no orders.

Fixture (load with `pytest_plugins = ["pebble_helpers"]`): make_pebble, a factory
`make(http_port, validity_seconds=None) -> Pebble` (started; every one stopped at teardown). Helpers:
Pebble, write_minica, https_text; TLS clients: https_get -> TlsAnswer, alpn, handshake_ok, TlsLoad.
"""

from __future__ import annotations

import datetime
import http.client
import ipaddress
import json
import os
import shutil
import socket
import ssl
import subprocess
import time
import urllib.request
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Mapping, NamedTuple

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from docker_helpers import Load, free_port, unavailable

PEBBLE = "pebble"
CHALLTESTSRV = "pebble-challtestsrv"
MINICA_NAME = "hookdeploy test minica"
PEBBLE_ENV = {"PEBBLE_VA_NOSLEEP": "1", "PEBBLE_WFE_NONCEREJECT": "0", "PEBBLE_AUTHZREUSE": "0"}


def pebble_problem() -> str | None:
    """Why no pebble can be run here (a program missing), or None."""
    for program in (PEBBLE, CHALLTESTSRV):
        if shutil.which(program) is None:
            return f"{program} is not installed (apt-get install pebble)"
    return None


# -- the minica ------------------------------------------------------------------------------------


class Minica(NamedTuple):
    """Where write_minica put the CA certificate and the server's certificate and key (PEM files)."""

    ca: Path
    cert: Path
    key: Path


def minica_files(directory: Path) -> Minica:
    """Where write_minica(directory) puts its files."""
    return Minica(directory / "ca.pem", directory / "localhost.pem", directory / "localhost-key.pem")


def _key_usage(ca: bool) -> x509.KeyUsage:
    """Signing only: certificates and CRLs for the CA, handshakes (ECDSA) for the server."""
    return x509.KeyUsage(digital_signature=True, key_cert_sign=ca, crl_sign=ca, content_commitment=False,
                         key_encipherment=False, data_encipherment=False, key_agreement=False,
                         encipher_only=False, decipher_only=False)


def _certificate(subject: x509.Name, key: ec.EllipticCurvePrivateKey, issuer: x509.Name,
                 issuer_key: ec.EllipticCurvePrivateKey, days: int,
                 extensions: list[tuple[x509.ExtensionType, bool]]) -> x509.Certificate:
    """A certificate of `key` for `subject`, signed by `issuer_key`, valid from an hour ago for `days`."""
    now = datetime.datetime.now(datetime.timezone.utc)
    builder = (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer).public_key(key.public_key())
               .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(hours=1))
               .not_valid_after(now + datetime.timedelta(days=days))
               .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False))
    for extension, critical in extensions:
        builder = builder.add_extension(extension, critical=critical)
    return builder.sign(issuer_key, hashes.SHA256())


def write_minica(directory: Path, names: tuple[str, ...] = ("localhost",),
                 addresses: tuple[str, ...] = ("127.0.0.1",)) -> Minica:
    """A private CA (MINICA_NAME, valid ten years) and a server certificate it signed for `names` and
    `addresses` (one year), as ca.pem, localhost.pem and localhost-key.pem (EC P-256) in `directory`.
    Files already there are kept: the CA stays the same for the life of `directory`."""
    made = minica_files(directory)
    if all(path.exists() for path in made):
        return made
    directory.mkdir(parents=True, exist_ok=True)
    ca_key, server_key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, MINICA_NAME)])
    ca_cert = _certificate(ca_name, ca_key, ca_name, ca_key, 3650, [
        (x509.BasicConstraints(ca=True, path_length=0), True), (_key_usage(ca=True), True)])
    alternatives = [x509.DNSName(name) for name in names]
    alternatives += [x509.IPAddress(ipaddress.ip_address(address)) for address in addresses]
    server_cert = _certificate(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])]), server_key,
                               ca_name, ca_key, 365, [
        (x509.SubjectAlternativeName(alternatives), False),
        (x509.BasicConstraints(ca=False, path_length=None), True),
        (_key_usage(ca=False), True),
        (x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), False),
        (x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False)])
    made.key.write_bytes(server_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                  serialization.NoEncryption()))
    made.cert.write_bytes(server_cert.public_bytes(serialization.Encoding.PEM))
    made.ca.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    return made


# -- pebble ----------------------------------------------------------------------------------------


class Pebble:
    """One pebble and its pebble-challtestsrv (DNS only), files and logs under `root`.

    Pebble(root, http_port, validity_seconds=None); start(), stop() and start() again (or restart())
    keep every port and ca.pem, but pebble itself starts from nothing (a new root). Also a context
    manager (start, then stop).
    """

    def __init__(self, root: Path, http_port: int, *, validity_seconds: int | None = None):
        self.root = Path(root)
        self.http_port = http_port
        self.validity_seconds = validity_seconds
        self._choose_ports()
        self.config_path = self.root / "pebble-config.json"
        self.pebble_log = self.root / "pebble.log"
        self.challtestsrv_log = self.root / "challtestsrv.log"
        self.minica = minica_files(self.root)
        self._pebble: subprocess.Popen | None = None
        self._challtestsrv: subprocess.Popen | None = None
        self._started_once = False

    # -- what tests use to reach it

    @property
    def directory(self) -> str:
        """The ACME directory URL: https://127.0.0.1:PORT/dir."""
        return f"https://127.0.0.1:{self.port}/dir"

    @property
    def ca_bundle(self) -> Path:
        """ca.pem: the minica that signed pebble's own HTTPS certificate (not what pebble issues)."""
        return self.minica.ca

    def root_pem(self) -> str:
        """The root pebble issues under (PEM), from the management API: what a browser would trust.
        A new one after every start."""
        return self._management("/roots/0")

    def intermediate_pem(self) -> str:
        """The intermediate that signs pebble's certificates (PEM); issued chains carry it too."""
        return self._management("/intermediates/0")

    def _management(self, path: str) -> str:
        return https_text(f"https://127.0.0.1:{self.management_port}{path}", self.ca_bundle)

    def _choose_ports(self) -> None:
        """Free ports for everything pebble and challtestsrv listen on (http_port is the test's)."""
        self.port = free_port()  # the directory (HTTPS)
        self.management_port = free_port()  # roots, intermediates, cert status (HTTPS)
        self.tls_port = free_port()  # tls-alpn-01 would be validated here; nobody listens
        self.dns_port = free_port()  # challtestsrv's DNS (UDP and TCP)
        self.challtestsrv_port = free_port()  # challtestsrv's management API (HTTP)

    # -- config

    def config(self) -> dict:
        """Pebble's configuration (written as pebble-config.json)."""
        config = {
            "listenAddress": f"127.0.0.1:{self.port}",
            "managementListenAddress": f"127.0.0.1:{self.management_port}",
            "certificate": str(self.minica.cert),
            "privateKey": str(self.minica.key),
            "httpPort": self.http_port,
            "tlsPort": self.tls_port,
            "ocspResponderURL": "",
            "externalAccountBindingRequired": False,
        }
        if self.validity_seconds is not None:
            config["certificateValidityPeriod"] = self.validity_seconds
        return {"pebble": config}

    def write_config(self) -> Path:
        """Write the minica (first time only) and pebble-config.json."""
        write_minica(self.root)
        self.config_path.write_text(json.dumps(self.config(), indent=2) + "\n")
        return self.config_path

    # -- the processes

    @property
    def running(self) -> bool:
        """Both processes are alive."""
        return all(process is not None and process.poll() is None for process in (self._pebble, self._challtestsrv))

    def start(self, timeout: float = 15.0) -> "Pebble":
        """Start challtestsrv, then pebble; return once the directory answers over HTTPS verified
        against ca.pem (else RuntimeError with the logs' tail). The first start moves to other free
        ports if one was taken meanwhile."""
        if self.running:
            return self
        self.stop()  # what is left of a pebble that died
        attempts = 1 if self._started_once else 3
        for attempt in range(attempts):
            self.write_config()
            try:
                self._start_processes(timeout)
                break
            except RuntimeError:
                taken = "address already in use" in self.logs()
                self.stop()
                if not taken or attempt == attempts - 1:
                    raise
                self._choose_ports()
        self._started_once = True
        return self

    def _start_processes(self, timeout: float) -> None:
        """challtestsrv (DNS only) until its DNS port accepts, then pebble until its directory answers."""
        deadline = time.monotonic() + timeout
        self._challtestsrv = self._spawn([
            CHALLTESTSRV, "-dns01", f"127.0.0.1:{self.dns_port}", "-http01", "", "-https01", "",
            "-tlsalpn01", "", "-management", f"127.0.0.1:{self.challtestsrv_port}",
            "-defaultIPv4", "127.0.0.1", "-defaultIPv6", ""], self.challtestsrv_log)
        self._wait(lambda: _accepts(self.dns_port), "challtestsrv's DNS", deadline, timeout)
        self._pebble = self._spawn([PEBBLE, "-config", str(self.config_path),
                                    "-dnsserver", f"127.0.0.1:{self.dns_port}"], self.pebble_log, PEBBLE_ENV)
        self._wait(lambda: "newOrder" in https_text(self.directory, self.ca_bundle, timeout=1),
                   "pebble's directory", deadline, timeout)

    def _spawn(self, command: list[str], log_path: Path, env: Mapping[str, str] | None = None) -> subprocess.Popen:
        """Start `command` in root, output appended to `log_path`; no PEBBLE_* of ours leaks in, only `env`."""
        self.root.mkdir(parents=True, exist_ok=True)
        with open(log_path, "ab") as log:
            log.write(f"--- {' '.join(command)}\n".encode())
            log.flush()
            inherited = {key: value for key, value in os.environ.items() if not key.startswith("PEBBLE_")}
            return subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    cwd=self.root, env={**inherited, **(env or {})})

    def _wait(self, ready: Callable[[], bool], what: str, deadline: float, timeout: float) -> None:
        """Poll `ready` (an OSError counts as not yet) until true; RuntimeError with the logs' tail if a
        process exits or the deadline passes."""
        while True:
            for process in (self._challtestsrv, self._pebble):
                if process is not None and process.poll() is not None:
                    raise RuntimeError(f"{process.args[0]} exited ({process.returncode}):\n{self.logs()[-3000:]}")
            try:
                if ready():
                    return
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"{what} not ready after {timeout}s:\n{self.logs()[-3000:]}")
            time.sleep(0.05)

    def stop(self, timeout: float = 10.0) -> None:
        """Stop pebble, then challtestsrv: SIGTERM, then SIGKILL after `timeout` seconds."""
        for name in ("_pebble", "_challtestsrv"):
            process = getattr(self, name)
            setattr(self, name, None)
            if process is not None and process.poll() is None:
                process.terminate()
                try:
                    process.wait(timeout)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait(timeout)

    def restart(self) -> "Pebble":
        """stop() and start(): same ports and ca.pem, a pebble that remembers nothing (new root)."""
        self.stop()
        return self.start()

    def __enter__(self) -> "Pebble":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def logs(self) -> str:
        """Everything pebble and challtestsrv logged so far (across restarts)."""
        return "".join(f"=== {path.name}\n{path.read_text(errors='replace')}"
                       for path in (self.challtestsrv_log, self.pebble_log) if path.exists())


def _accepts(port: int) -> bool:
    """True if something accepts TCP connections on 127.0.0.1:PORT."""
    with socket.create_connection(("127.0.0.1", port), timeout=1):
        return True


def https_text(url: str, cafile: Path, timeout: float = 5.0) -> str:
    """GET an HTTPS URL, verified against `cafile`; the body as text (an HTTP error raises)."""
    context = ssl.create_default_context(cafile=str(cafile))
    with urllib.request.urlopen(url, timeout=timeout, context=context) as answer:
        return answer.read().decode()


@pytest.fixture
def make_pebble(tmp_path: Path) -> Iterator[Callable[..., Pebble]]:
    """A function starting pebbles for one test: make(http_port, validity_seconds=None) -> Pebble,
    each under tmp_path/pebbleN; every one is stopped afterwards. Skips (or fails, with
    HOOKDEPLOY_REQUIRE_DOCKER=1) when pebble is not installed."""
    problem = pebble_problem()
    if problem is not None:
        unavailable(problem)
    made: list[Pebble] = []

    def make(http_port: int, validity_seconds: int | None = None) -> Pebble:
        pebble = Pebble(tmp_path / f"pebble{len(made)}", http_port, validity_seconds=validity_seconds)
        made.append(pebble)
        return pebble.start()

    try:
        yield make
    finally:
        for pebble in made:
            pebble.stop()


def self_signed(directory: Path, name: str, days: float = 30, ago: float = 5 / 1440) -> tuple[Path, Path]:
    """cert.pem and key.pem in `directory`: a certificate for `name` signed by its own key (a CA
    too, so a client can trust it as its cafile), valid for `days` from `ago` days ago (5 min)."""
    directory.mkdir(parents=True, exist_ok=True)
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    start = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(days=ago)
    certificate = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
                   .serial_number(x509.random_serial_number()).not_valid_before(start)
                   .not_valid_after(start + datetime.timedelta(days=days))
                   .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
                   .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
                   .sign(key, hashes.SHA256()))
    cert_file, key_file = directory / "cert.pem", directory / "key.pem"
    cert_file.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_file, key_file


# -- TLS clients -----------------------------------------------------------------------------------


class TlsAnswer(NamedTuple):
    """One HTTPS response and the TLS session it came over."""

    status: int
    headers: dict[str, str]  # lowercase names; a repeated header's values joined with ", "
    body: str
    release: str | None  # X-Hookdeploy-Release
    cert: x509.Certificate  # the leaf the server presented (verified or not, see https_get)
    version: str  # "TLSv1.3", "TLSv1.2", ...


def client_context(cafile: Path | str | None = None) -> ssl.SSLContext:
    """A client context: with `cafile`, the chain must verify against it and the name must match;
    without, nothing is verified (CERT_NONE)."""
    if cafile is not None:
        return ssl.create_default_context(cafile=str(cafile))
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def tls_connect(port: int, hostname: str, context: ssl.SSLContext, timeout: float = 5.0,
                address: str = "127.0.0.1") -> ssl.SSLSocket:
    """A TLS connection to ADDRESS:PORT with SNI `hostname`, handshake done (failures raise)."""
    raw = socket.create_connection((address, port), timeout=timeout)
    try:
        return context.wrap_socket(raw, server_hostname=hostname)
    except BaseException:
        raw.close()
        raise


def https_get(port: int, hostname: str, path: str = "/", cafile: Path | str | None = None,
              timeout: float = 5.0, address: str = "127.0.0.1",
              headers: Mapping[str, str] | None = None) -> TlsAnswer:
    """GET https://HOSTNAME/PATH, connected to ADDRESS:PORT: SNI and Host are `hostname` (no port,
    as behind 443). With `cafile`, an unverifiable chain or a name mismatch raises
    ssl.SSLCertVerificationError; without, any certificate is accepted."""
    connection = http.client.HTTPConnection(hostname, port, timeout=timeout)
    try:
        tls = connection.sock = tls_connect(port, hostname, client_context(cafile), timeout, address)
        cert, version = x509.load_der_x509_certificate(tls.getpeercert(binary_form=True)), tls.version()
        connection.request("GET", path, headers={"Host": hostname, **(headers or {})})
        response = connection.getresponse()
        received: dict[str, str] = {}
        for name, value in response.getheaders():
            received[name.lower()] = f"{received[name.lower()]}, {value}" if name.lower() in received else value
        return TlsAnswer(response.status, received, response.read().decode(errors="replace"),
                         received.get("x-hookdeploy-release"), cert, version)
    finally:
        connection.close()


def alpn(port: int, hostname: str, protocols: tuple[str, ...] = ("h2", "http/1.1"),
         address: str = "127.0.0.1") -> str | None:
    """The application protocol the server picks among `protocols` (None: it picked none)."""
    context = client_context()
    context.set_alpn_protocols(list(protocols))
    with tls_connect(port, hostname, context, address=address) as tls:
        return tls.selected_alpn_protocol()


def handshake_ok(port: int, hostname: str, version: ssl.TLSVersion, address: str = "127.0.0.1") -> bool:
    """Whether a handshake offering exactly `version` succeeds. Below TLS 1.2 the client drops to
    OpenSSL security level 0 (OpenSSL 3 refuses TLS 1.0/1.1 itself otherwise), so a False is the
    server's refusal. A port nobody listens on raises (ConnectionRefusedError), never False."""
    context = client_context()
    with warnings.catch_warnings():  # ssl deprecates naming TLSv1 and TLSv1_1; refusing them is the point
        warnings.simplefilter("ignore", DeprecationWarning)
        context.minimum_version = context.maximum_version = version
    if version < ssl.TLSVersion.TLSv1_2:
        context.set_ciphers("DEFAULT:@SECLEVEL=0")
    try:
        with tls_connect(port, hostname, context, address=address):
            return True
    except (ssl.SSLError, ConnectionResetError):
        return False


@dataclass
class TlsLoad(Load):
    """docker_helpers.Load over HTTPS: threads GETting / with SNI and Host `host` (required) until
    stopped, a new connection per request, verified against `cafile` when given. A TLS failure (a
    refused handshake, an unverifiable certificate) is an error like any other."""

    cafile: Path | str | None = None

    def __post_init__(self):
        if not self.host:
            raise ValueError("TlsLoad needs a host: the name sent as SNI and Host")
        super().__post_init__()

    def _get(self) -> TlsAnswer:
        return https_get(self.port, self.host, self.path, self.cafile, timeout=10, address=self.address)
