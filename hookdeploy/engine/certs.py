"""HTTPS certificates: obtained and renewed from an ACME CA, or brought by the user, and put where
the proxy serves them (DESIGN "HTTPS").

Files, all under state_dir:
  tls/account.json            the instance's one ACME account: its key, and its URL at each CA (0600)
  tls/status/HOST.json        HOST's last failed try: why, and when the worker may try again
  proxy/conf.d/certs/host-HOST.pem  key + full chain the proxy serves for HOST (tls = "acme"; 0600)
  proxy/conf.d/certs/app-APP.pem    key + chain of the user's own certificate for APP (0600)
  proxy/conf.d/acme-challenge/TOKEN HTTP-01 answers, served by every server block of the proxy

Key and chain share one file, so one rename switches both (nginx -t never sees a key without its
certificate). The ACME protocol (JWS, nonces, orders, polling) is certbot's `acme` library; keys
and CSRs are `cryptography`'s. Ordering happens under the instance's "tls" lock: two workers never
order the same name at once, and the second finds the first one's certificate. Nothing here logs a
key or writes one anywhere but a 0600 file.

When: a deploy orders a certificate for each hostname that has none, before its first switch
(`ensure(..., renewals=False)`); the worker's loop renews one when a third of its lifetime, at most
RENEW_DAYS, is left, and tries a failed name again after RETRY_SECONDS[0], doubling up to [1]
(`maintain`). A name without a certificate is served over HTTP; a failed renewal keeps the old one.

An app's routes are rendered with its certificates here (`render_routes`, the lowest module that
knows both), by every switch, repair and reroute. Imports hookdeploy.core, proxy.py and containers.py
(the proxy's name).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import josepy
import requests
from acme import challenges, client as acme_client, crypto_util, errors as acme_errors, messages
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from hookdeploy import __version__
from hookdeploy.core import previews
from hookdeploy.core.config import AppConfig, Config
from hookdeploy.core.errors import StepFailed
from hookdeploy.core.store import Store
from hookdeploy.engine import containers, proxy

log = logging.getLogger(__name__)

RENEW_DAYS = 30  # renew this long before expiry (or with a third of the lifetime left, if that is less)
RETRY_SECONDS = (300.0, 6 * 3600.0)  # after a failure: first wait, longest wait (doubling between)
NETWORK_SECONDS = 20  # one request to the ACME server
ORDER_SECONDS = 90  # from answering the challenges to the issued certificate
TOKEN = re.compile(r"[A-Za-z0-9_-]{16,256}\Z")  # an HTTP-01 token, before it names a file
ACCOUNT_GONE = "urn:ietf:params:acme:error:accountDoesNotExist"

Say = Callable[[str], None]


@dataclass(frozen=True)
class Certificate:
    """A PEM the proxy serves, as its leaf certificate describes it."""

    path: Path
    names: tuple[str, ...]
    not_before: dt.datetime
    not_after: dt.datetime
    serial: int

    @property
    def renew_at(self) -> dt.datetime:
        """When to renew: RENEW_DAYS before expiry, or with a third of the lifetime left if sooner."""
        lifetime = self.not_after - self.not_before
        return self.not_after - min(dt.timedelta(days=RENEW_DAYS), lifetime / 3)

    def describe(self) -> str:
        return f"valid until {self.not_after:%Y-%m-%d %H:%M} UTC, serial {self.serial:x}"


@dataclass(frozen=True)
class Failure:
    """A name's last failed try, and when the worker may try again."""

    error: str
    failures: int
    failed_at: float
    next_try: float


@dataclass
class Outcome:
    """What one `ensure` did: the certificates it got and the names it could not get one for."""

    obtained: list[Certificate] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)


# -- where things are -----------------------------------------------------------------------------


def tls_dir(config: Config) -> Path:
    return Path(config.server.state_dir) / "tls"


def pem_path(config: Config, app: AppConfig, hostname: str | None = None) -> Path:
    """The PEM the proxy serves: for `hostname` (tls = "acme"), else the app's own (tls = files)."""
    name = f"host-{hostname}.pem" if hostname is not None else f"app-{app.name}.pem"
    return proxy.conf_dir(config) / proxy.CERTS_DIR / name


def in_proxy(path: Path, config: Config) -> str:
    """A path under conf.d as the proxy container sees it."""
    return f"{proxy.IN_PROXY}/{path.relative_to(proxy.conf_dir(config)).as_posix()}"


def read_certificate(path: Path) -> Certificate | None:
    """The leaf (first) certificate of a PEM file; None if there is none or it cannot be read."""
    try:
        leaf = x509.load_pem_x509_certificate(path.read_bytes())
    except (OSError, ValueError):
        return None
    try:
        names = tuple(leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
                      .get_values_for_type(x509.DNSName))
    except x509.ExtensionNotFound:
        names = ()
    return Certificate(path, names, leaf.not_valid_before_utc, leaf.not_valid_after_utc, leaf.serial_number)


def tls_routes(config: Config, app: AppConfig) -> proxy.Tls | None:
    """How the proxy serves the app over HTTPS now: the names that have a certificate, and where it is.

    An expired certificate is left out (its names go back to plain HTTP, not to an error page and a
    redirect to it); one that is merely due for renewal stays."""
    if app.tls_mode == "off" or not config.proxy.publish_tls:
        return None
    paths = {name: pem_path(config, app) for name in (list(app.hostnames) or ["_"])} if app.tls_mode == "files" \
        else {host: pem_path(config, app, host) for host in app.hostnames}
    now = dt.datetime.now(dt.timezone.utc)
    valid = {path for path in set(paths.values())
             if (certificate := read_certificate(path)) is not None and now < certificate.not_after}
    port = int(config.proxy.publish_tls.rpartition(":")[2])
    return proxy.Tls(port, {name: in_proxy(path, config) for name, path in paths.items() if path in valid},
                     app.redirect_http, app.hsts)


def render_routes(config: Config, app: AppConfig, addresses, sha: str, canary: proxy.Canary | None = None) -> str:
    """The app's server blocks routing to `addresses` (proxy.render), served over HTTPS with its
    certificates as they are now: the one way every switch, repair and reroute writes an app's routes."""
    return proxy.render(app, addresses, sha, tls_routes(config, app), canary)


# -- the user's own certificate ---------------------------------------------------------------------


def install_files(config: Config, app: AppConfig) -> Certificate | None:
    """Copy the app's cert_file and key_file into the PEM the proxy serves; the Certificate when that
    changed anything, None when it was there already. StepFailed names a file that cannot be used."""
    wanted = user_pem(app)
    path = pem_path(config, app)
    if _read_bytes(path) == wanted:
        return None
    write_private(path, wanted)
    return read_certificate(path)


def user_pem(app: AppConfig) -> bytes:
    """Key and chain from the app's cert_file and key_file, as the proxy serves them; StepFailed with
    the file to fix if one cannot be read, holds no PEM, or the key is not the certificate's."""
    files = app.tls
    try:
        chain = Path(files.cert_file).read_bytes()
    except OSError as error:
        raise StepFailed(f"apps.{app.name}.tls: cannot read cert_file {files.cert_file}: {error.strerror or error}") from None
    try:
        key_pem = Path(files.key_file).read_bytes()
    except OSError as error:
        raise StepFailed(f"apps.{app.name}.tls: cannot read key_file {files.key_file}: {error.strerror or error}") from None
    try:
        leaf = x509.load_pem_x509_certificate(chain)
    except ValueError:
        raise StepFailed(f"apps.{app.name}.tls: cert_file {files.cert_file} holds no PEM certificate") from None
    try:
        key = serialization.load_pem_private_key(key_pem, password=None)
    except (ValueError, TypeError):
        raise StepFailed(f"apps.{app.name}.tls: key_file {files.key_file} holds no unencrypted PEM private key") from None
    if _public(key.public_key()) != _public(leaf.public_key()):
        raise StepFailed(f"apps.{app.name}.tls: key_file {files.key_file} is not the key of cert_file {files.cert_file}")
    return key_pem.rstrip(b"\n") + b"\n" + chain


def _public(key) -> bytes:
    return key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


# -- ACME --------------------------------------------------------------------------------------------


def due(config: Config, app: AppConfig, renewals: bool = True, backoff: bool = True) -> list[str]:
    """The app's hostnames to order a certificate for now: those without one (and, with `renewals`,
    those whose certificate is in its renewal window), minus (with `backoff`) those whose last try
    failed too recently."""
    if app.tls_mode != "acme":
        return []
    now = dt.datetime.now(dt.timezone.utc)
    wanted = []
    for host in app.hostnames:
        certificate = read_certificate(pem_path(config, app, host))
        if certificate is not None and (not renewals or now < certificate.renew_at):
            continue
        failure = last_failure(config, host)
        if backoff and failure is not None and time.time() < failure.next_try:
            continue
        wanted.append(host)
    return wanted


def ensure(config: Config, app: AppConfig, say: Say, renewals: bool = True, backoff: bool = True,
           check_stop: Callable[[], None] = lambda: None) -> Outcome:
    """Order a certificate for each of the app's hostnames that `due` names, one at a time, under the
    instance's "tls" lock (looked at again once it is held: another worker may just have done it)."""
    outcome = Outcome()
    if not due(config, app, renewals, backoff):
        return outcome
    with proxy.locked(config, "tls"):
        for host in due(config, app, renewals, backoff):
            check_stop()
            try:
                outcome.obtained.append(obtain(config, app, host, say))
            except StepFailed as error:
                outcome.failed[host] = str(error)
    return outcome


def obtain(config: Config, app: AppConfig, hostname: str, say: Say) -> Certificate:
    """A certificate for `hostname` through an HTTP-01 challenge the proxy answers, stored where the
    proxy serves it; StepFailed with why not (also recorded, for the backoff, `doctor` and the job)."""
    try:
        try:
            certificate = _order(config, app, hostname, say)
        except messages.Error as error:
            if error.typ != ACCOUNT_GONE:
                raise
            say("the ACME server no longer knows this instance's account; registering it again")
            certificate = _order(config, app, hostname, say, register=True)
    except Exception as error:  # noqa: BLE001 - every failure becomes the one line a person reads
        reason = f"no certificate for {hostname}: {describe(error, config)}"
        _record_failure(config, hostname, reason)
        raise StepFailed(reason) from None
    _status_path(config, hostname).unlink(missing_ok=True)
    return certificate


def _order(config: Config, app: AppConfig, hostname: str, say: Say, register: bool = False) -> Certificate:
    client = _client(config, register)
    key = ec.generate_private_key(ec.SECP256R1())
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    say(f"ordering a certificate for {hostname} from {config.tls.acme_directory}")
    order = client.new_order(crypto_util.make_csr(key_pem, [hostname]))
    answers: list[Path] = []
    try:
        for authorization in order.authorizations:
            if authorization.body.status == messages.STATUS_VALID:
                continue
            challenge = next((c for c in authorization.body.challenges if isinstance(c.chall, challenges.HTTP01)), None)
            if challenge is None:
                raise StepFailed("the ACME server offers no http-01 challenge")
            token = challenge.chall.encode("token")
            if not TOKEN.match(token):
                raise StepFailed("the ACME server sent a malformed http-01 token")
            response, validation = challenge.response_and_validation(client.net.key)
            answer = proxy.conf_dir(config) / proxy.CHALLENGE_DIR / token
            answer.write_text(validation)
            answer.chmod(0o644)  # nginx's workers read it
            answers.append(answer)
            client.answer_challenge(challenge, response)
        say(f"answered the http-01 challenge for {hostname}; waiting for the CA to check it")
        deadline = dt.datetime.now() + dt.timedelta(seconds=ORDER_SECONDS)
        order = client.poll_and_finalize(order, deadline=deadline)
    finally:
        for answer in answers:
            answer.unlink(missing_ok=True)
    path = pem_path(config, app, hostname)
    write_private(path, key_pem + order.fullchain_pem.encode())
    certificate = read_certificate(path)
    say(f"certificate for {hostname} obtained: {certificate.describe()}")
    return certificate


def _client(config: Config, register: bool = False) -> acme_client.ClientV2:
    """An ACME client for [tls]'s directory, on the instance's account (made and kept on first use)."""
    path = tls_dir(config) / "account.json"
    account = json.loads(_read_bytes(path) or b"{}")
    if "key" in account:
        key = josepy.JWK.from_json(account["key"])
    else:
        key = josepy.JWKRSA(key=rsa.generate_private_key(public_exponent=65537, key_size=2048))
        account = {"key": key.to_json(), "accounts": {}}
        _write_json(path, account)
    network = acme_client.ClientNetwork(key, user_agent=f"hookdeploy/{__version__}", verify_ssl=trust(config),
                                        timeout=NETWORK_SECONDS)
    directory_url = config.tls.acme_directory
    client = acme_client.ClientV2(acme_client.ClientV2.get_directory(directory_url, network), network)
    uri = account["accounts"].get(directory_url)
    if uri and not register:
        network.account = messages.RegistrationResource(uri=uri, body=messages.Registration())
        return client
    registration = messages.NewRegistration.from_data(email=config.tls.email or None, terms_of_service_agreed=True)
    try:
        uri = client.new_account(registration).uri
    except acme_errors.ConflictError as existing:  # the key has an account there already
        uri = existing.location
        network.account = messages.RegistrationResource(uri=uri, body=messages.Registration())
    account["accounts"][directory_url] = uri
    _write_json(path, account)
    log.info("ACME account at %s: %s", directory_url, uri)
    return client


def trust(config: Config) -> str | bool:
    """What requests verifies the ACME server with: the usual CAs, plus tls.ca_bundle when set."""
    if not config.tls.ca_bundle:
        return True
    import certifi  # requests' own bundle

    try:
        extra = Path(config.tls.ca_bundle).read_bytes()
    except OSError as error:
        raise StepFailed(f"tls.ca_bundle: cannot read {config.tls.ca_bundle}: {error.strerror or error}") from None
    bundle = tls_dir(config) / "ca-bundle.pem"
    wanted = Path(certifi.where()).read_bytes().rstrip(b"\n") + b"\n" + extra
    if _read_bytes(bundle) != wanted:
        write_private(bundle, wanted)
    return str(bundle)


def describe(error: BaseException, config: Config) -> str:
    """One line on why an order failed, naming what a person can check."""
    directory = config.tls.acme_directory
    if isinstance(error, StepFailed):
        return str(error)
    if isinstance(error, requests.exceptions.SSLError):
        return (f"cannot verify the ACME server {directory}'s certificate (tls.ca_bundle names an extra CA "
                f"to trust): {_short(error)}")
    if isinstance(error, requests.exceptions.Timeout):
        return f"the ACME server {directory} did not answer within {NETWORK_SECONDS} s"
    if isinstance(error, requests.exceptions.ConnectionError):
        return f"the ACME server {directory} does not answer ({_connection_reason(error)})"
    if isinstance(error, acme_errors.ValidationError):
        details = []
        for authorization in error.failed_authzrs:
            for challenge in authorization.body.challenges:
                if challenge.error is not None:
                    details.append(challenge.error.detail or str(challenge.error.typ))
        return (f"the CA could not validate it: {'; '.join(details) or 'no reason given'} (does the name point "
                f"at this server, and does port 80 reach the proxy?)")
    if isinstance(error, acme_errors.TimeoutError):
        return f"the CA did not issue it within {ORDER_SECONDS} s"
    if isinstance(error, messages.Error):
        return f"the ACME server refused: {error.detail or error.typ}"
    return f"{type(error).__name__}: {_short(error)}"


def _connection_reason(error: BaseException) -> str:
    text = str(error)
    for known in ("Connection refused", "Name or service not known", "No route to host",
                  "Temporary failure in name resolution", "Network is unreachable"):
        if known in text:
            return known.lower()
    return _short(error)


def _short(error: BaseException) -> str:
    text = " ".join(str(error).split()) or type(error).__name__
    return text if len(text) <= 200 else text[:197] + "..."


# -- failures and backoff ---------------------------------------------------------------------------


def _status_path(config: Config, hostname: str) -> Path:
    return tls_dir(config) / "status" / f"{hostname}.json"


def last_failure(config: Config, hostname: str) -> Failure | None:
    """The name's last failed try, if the last try failed."""
    raw = _read_bytes(_status_path(config, hostname))
    if raw is None:
        return None
    with contextlib.suppress(ValueError, TypeError, KeyError):
        return Failure(**json.loads(raw))
    return None


def _record_failure(config: Config, hostname: str, error: str) -> None:
    before = last_failure(config, hostname)
    failures = (before.failures if before else 0) + 1
    wait = min(RETRY_SECONDS[0] * 2 ** (failures - 1), RETRY_SECONDS[1])
    now = time.time()
    _write_json(_status_path(config, hostname), {"error": error, "failures": failures, "failed_at": now,
                                                 "next_try": now + wait})


def retry_text(config: Config, hostname: str) -> str:
    """When the worker tries the name again, for a person: "in 5 min"."""
    failure = last_failure(config, hostname)
    if failure is None:
        return "at its next check"
    minutes = max(1, round((failure.next_try - time.time()) / 60))
    return f"in {minutes} min" if minutes < 120 else f"in {minutes // 60} h"


# -- in the worker's loop ------------------------------------------------------------------------------


def maintain(config: Config, store: Store, engine, reported: dict[str, str]) -> None:
    """One round for every app with HTTPS: renew or obtain what is due (backoff kept), copy a changed
    user certificate, and bring the live proxy config in step (nginx -t, graceful reload): a new
    certificate is served, an expired one no longer is. A problem is logged once until it changes
    (`reported`: app -> the last one)."""
    for app in previews.release_sets(config, store):  # the apps and their previews' hostnames
        if app.tls_mode == "off":
            continue
        changed = False
        try:
            if app.tls_mode == "files":
                changed = install_files(config, app) is not None
            else:
                outcome = ensure(config, app, lambda text: log.info("%s: %s", app.name, text))
                changed = bool(outcome.obtained)
                if outcome.failed:
                    raise StepFailed("; ".join(f"{reason} (next try {retry_text(config, host)})"
                                               for host, reason in outcome.failed.items()))
        except StepFailed as error:
            if reported.get(app.name) != str(error):
                log.warning("%s: %s", app.name, error)
                reported[app.name] = str(error)
        else:
            reported.pop(app.name, None)
        reroute(config, store, engine, app, reload=changed)


def reroute(config: Config, store: Store, engine, app: AppConfig, reload: bool = False) -> None:
    """Serve the app's certificates as they are now: its live routes rendered again and switched in if
    that changes the text (a new name's HTTPS block, an expired one gone), else, with `reload` (a
    renewed PEM under the same name), nginx reloaded. An app that is not live is left to its deploy."""
    path = proxy.app_file(config, app.name)
    with proxy.locked(config):
        live = store.live_release(app.name)
        previous = proxy.read(path)
        if live is None or previous is None:
            return
        addresses = proxy.routed_addresses(path)
        text = render_routes(config, app, addresses, live.sha)
        if text == previous and not reload:
            return
        container = engine().containers.get(containers.proxy_name(config.server.name))
        if text != previous:
            proxy.switch(container, path, text)
        else:
            proxy.test_and_reload(container)
    log.info("%s: the proxy serves its certificates as they are now", app.name)


# -- files ---------------------------------------------------------------------------------------------


def write_private(path: Path, data: bytes) -> None:
    """Replace `path` with `data`, readable by its owner only (0600), in a folder only it may enter."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    proxy.write_atomically(path, data, mode=0o600)


def _write_json(path: Path, value: dict) -> None:
    write_private(path, json.dumps(value, indent=1).encode())


def _read_bytes(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return None
