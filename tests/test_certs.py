"""engine/certs.py and the proxy's HTTPS blocks without Docker: which names are served over HTTPS, when a
name is due, the backoff after a failure, a user's certificate files, and an ACME server that does
not answer (a real closed port). The end-to-end path against a real ACME server is test_https.py's."""

from __future__ import annotations

import stat
import time

import pytest
from docker_helpers import free_port
from pebble_helpers import self_signed

from hookdeploy.core import config
from hookdeploy.core.errors import StepFailed
from hookdeploy.engine import certs, proxy


@pytest.fixture
def tls_config(write_config, tmp_path):
    """A config with an acme app (a.test, b.test) and a files app (own.test); conf.d made."""
    cert_file, key_file = self_signed(tmp_path / "own", "own.test")
    document = (f'[server]\nstate_dir = "state"\n[proxy]\npublish = "127.0.0.1:18081"\npublish_tls = "127.0.0.1:8443"\n'
                f'[tls]\nacme_directory = "https://127.0.0.1:{free_port()}/dir"\n'
                '[apps.site]\nrepo = "/r.git"\nhostnames = ["a.test", "b.test"]\ntls = "acme"\nhsts = true\n'
                f'[apps.own]\nrepo = "/r.git"\nhostnames = ["own.test"]\n'
                f'tls = {{ cert_file = "{cert_file}", key_file = "{key_file}" }}\n')
    loaded = config.load(write_config(document))
    proxy.prepare(loaded)
    return loaded


def test_only_names_with_a_valid_certificate_are_served_over_https(tls_config, tmp_path):
    site = tls_config.apps["site"]
    assert certs.tls_routes(tls_config, site).certificates == {}
    for host, ago in (("a.test", 0.04), ("b.test", 31)):
        cert_file, key_file = self_signed(tmp_path / host, host, 30, ago)
        certs.write_private(certs.pem_path(tls_config, site, host), key_file.read_bytes() + cert_file.read_bytes())
    routes = certs.tls_routes(tls_config, site)
    assert routes.certificates == {"a.test": "/etc/nginx/conf.d/certs/host-a.test.pem"}  # b.test's expired
    assert (routes.port, routes.redirect, routes.hsts) == (8443, True, True)

    text = proxy.render(site, ["10.0.0.2"], "f" * 40, routes)
    assert "    server_name b.test;\n" in text  # plain HTTP, proxied
    assert "    server_name a.test;\n" in text and "return 308 https://$host:8443$request_uri;" in text
    assert "listen 443 ssl http2;" in text and "ssl_certificate /etc/nginx/conf.d/certs/host-a.test.pem;" in text
    assert text.count("location ^~ /.well-known/acme-challenge/") == 3  # every server block
    assert text.count('add_header Strict-Transport-Security "max-age=31536000" always;') == 1  # HTTPS only


def test_a_users_certificate_is_copied_once_private_and_a_wrong_key_is_named(tls_config, tmp_path):
    own = tls_config.apps["own"]
    installed = certs.install_files(tls_config, own)
    assert installed is not None and installed.names == ("own.test",)
    pem = certs.pem_path(tls_config, own)
    assert stat.S_IMODE(pem.stat().st_mode) == 0o600
    assert certs.install_files(tls_config, own) is None  # unchanged: nothing to reload
    assert certs.tls_routes(tls_config, own).certificates == {"own.test": "/etc/nginx/conf.d/certs/app-own.pem"}
    served = pem.read_bytes()

    _, other_key = self_signed(tmp_path / "other", "own.test")
    wrong = config.AppConfig(name="own", repo="/r.git", tls=config.TlsFiles(own.tls.cert_file, str(other_key)))
    with pytest.raises(StepFailed, match=f"key_file {other_key} is not the key of cert_file"):
        certs.install_files(tls_config, wrong)
    missing = config.AppConfig(name="own", repo="/r.git", tls=config.TlsFiles(str(tmp_path / "nope.pem"), str(other_key)))
    with pytest.raises(StepFailed, match="cannot read cert_file .*nope.pem: No such file or directory"):
        certs.install_files(tls_config, missing)
    assert pem.read_bytes() == served  # the served copy untouched


def test_an_acme_server_that_does_not_answer_is_named_and_retried_with_backoff(tls_config):
    site = tls_config.apps["site"]
    assert certs.due(tls_config, site) == ["a.test", "b.test"]
    lines = []
    with pytest.raises(StepFailed) as failed:
        certs.obtain(tls_config, site, "a.test", lines.append)
    assert str(failed.value) == (f"no certificate for a.test: the ACME server {tls_config.tls.acme_directory} "
                                 "does not answer (connection refused)")
    failure = certs.last_failure(tls_config, "a.test")
    assert failure.failures == 1 and failure.next_try == pytest.approx(time.time() + 300, abs=5)
    assert certs.retry_text(tls_config, "a.test") == "in 5 min"
    assert certs.due(tls_config, site) == ["b.test"]  # a.test waits out its backoff ...
    assert certs.due(tls_config, site, backoff=False) == ["a.test", "b.test"]  # ... a deploy does not

    with pytest.raises(StepFailed):
        certs.obtain(tls_config, site, "a.test", lines.append)
    assert certs.last_failure(tls_config, "a.test").next_try == pytest.approx(time.time() + 600, abs=5)
    for _ in range(10):
        certs._record_failure(tls_config, "a.test", "again")
    assert certs.last_failure(tls_config, "a.test").next_try == pytest.approx(time.time() + 6 * 3600, abs=5)
    account = certs.tls_dir(tls_config) / "account.json"  # its key made once, kept for every order
    assert stat.S_IMODE(account.stat().st_mode) == 0o600 and '"d":' in account.read_text()


@pytest.mark.parametrize("days, ago, due", [
    (90, 1, False), (90, 59, False), (90, 61, True),  # Let's Encrypt's 90 days: renewed with 30 left
    (6, 3.9, False), (6, 4.1, True),  # a 6-day certificate: with 2 days (a third) left
])
def test_renewal_is_due_with_30_days_or_a_third_of_the_lifetime_left(tls_config, tmp_path, days, ago, due):
    site = tls_config.apps["site"]
    cert_file, key_file = self_signed(tmp_path / "c", "a.test", days, ago)
    certs.write_private(certs.pem_path(tls_config, site, "a.test"), key_file.read_bytes() + cert_file.read_bytes())
    assert ("a.test" in certs.due(tls_config, site)) is due
    assert "a.test" not in certs.due(tls_config, site, renewals=False)  # a deploy leaves renewals to the worker
