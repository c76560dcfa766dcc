"""`hookdeploy doctor`'s checks of HTTPS: the ACME server answers, each hostname of a tls = "acme" app
has a certificate that is not past its renewal (else the last failure and when the worker tries
again), and a user's own certificate files can be served and are not about to expire. doctor.py
calls them for configs with an app whose tls is not "off".
"""

from __future__ import annotations

import datetime as dt

from hookdeploy.core.config import Config
from hookdeploy.core.errors import StepFailed

EXPIRY_WARNING = dt.timedelta(days=14)  # a user's own certificate this close to expiry is a problem


def check_tls(config: Config, check) -> None:
    """Every check for the apps with HTTPS."""
    apps = [app for app in config.apps.values() if app.tls_mode != "off"]
    if any(app.tls_mode == "acme" for app in apps):
        _check_acme_server(config, check)
    for app in apps:
        if app.tls_mode == "acme":
            for host in app.hostnames:
                _check_hostname(config, app, host, check)
        else:
            _check_files(app, check)


def _check_acme_server(config: Config, check) -> None:
    import requests

    from hookdeploy.engine import certs

    url = config.tls.acme_directory
    try:
        answer = requests.get(url, verify=certs.trust(config), timeout=10)
        problem = None if answer.ok and "newOrder" in answer.text else f"it answers {answer.status_code}, no ACME directory"
    except StepFailed as error:
        problem = str(error)
    except requests.RequestException as error:
        problem = certs.describe(error, config).replace(f"the ACME server {url} ", "")
    check(problem is None, f"ACME server {url} answers",
          f"ACME server {url}: {problem}: check tls.acme_directory, this machine's outgoing HTTPS and, for a "
          "private CA, tls.ca_bundle")


def _check_hostname(config: Config, app, host: str, check) -> None:
    from hookdeploy.engine import certs

    certificate = certs.read_certificate(certs.pem_path(config, app, host))
    failure = certs.last_failure(config, host)
    now = dt.datetime.now(dt.timezone.utc)
    if certificate is None:
        if failure is not None:
            check(False, "", f"{app.name}: {failure.error}; {host} is served over HTTP until one is obtained "
                             f"(the worker tries again {certs.retry_text(config, host)})")
        else:
            check(False, "", f"{app.name}: no certificate for {host} yet: the next deploy orders one (or a running "
                             "worker, within a minute)")
        return
    if now < certificate.renew_at or failure is None:
        check(True, f"{app.name}: certificate for {host} {certificate.describe()}", "")
        return
    check(False, "", f"{app.name}: the certificate for {host} is due for renewal ({certificate.describe()}), "
                     f"and the last try failed: {failure.error} (the worker tries again {certs.retry_text(config, host)})")


def _check_files(app, check) -> None:
    from cryptography import x509

    from hookdeploy.engine import certs

    try:
        pem = certs.user_pem(app)
    except StepFailed as error:
        check(False, "", f"{app.name}: {error}: fix the files; the next deploy serves them")
        return
    leaf = x509.load_pem_x509_certificate(pem[pem.index(b"-----BEGIN CERTIFICATE-----"):])
    left = leaf.not_valid_after_utc - dt.datetime.now(dt.timezone.utc)
    until = f"{leaf.not_valid_after_utc:%Y-%m-%d %H:%M} UTC"
    check(left > EXPIRY_WARNING, f"{app.name}: certificate {app.tls.cert_file} is valid until {until}",
          f"{app.name}: certificate {app.tls.cert_file} {'expired' if left.total_seconds() < 0 else 'expires'} "
          f"{until}: replace cert_file and key_file (the worker serves new files within a minute)")
