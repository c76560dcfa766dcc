"""A preview of an app with tls = "acme" gets its hostname's certificate from a real ACME server (pebble),
like any hostname, is served over HTTPS with it, and loses it with the preview."""

from __future__ import annotations

import pytest
from cryptography import x509
from docker_helpers import free_port, git, site_files
from pebble_helpers import https_get

from hookdeploy.core import previews
from hookdeploy.core.models import JobState
from hookdeploy.engine import certs, previews as engine_previews

pytestmark = pytest.mark.slow

PREVIEW_HOST = "feature-x.preview.test"


def test_a_preview_hostname_gets_its_certificate_and_loses_it_with_the_preview(instance, make_pebble, tmp_path):
    pebble = make_pebble(instance.port)
    tls_port = free_port()
    extra = f'[tls]\nemail = "ops@site.test"\nacme_directory = "{pebble.directory}"\nca_bundle = "{pebble.ca_bundle}"\n'
    instance.configure({"site": {"hostnames": ["site.test"], "tls": "acme",
                                 "previews": {"branches": ["feature/*"], "hostname": "{branch}.preview.test"}}},
                       extra=extra, proxy={"publish_tls": f"127.0.0.1:{tls_port}"})
    app_job = instance.deploy("site", site_files("v1"))
    assert app_job.state is JobState.SUCCEEDED, app_job.error

    repo = instance.repos["site"]
    git("checkout", "-q", "-b", "feature/x", cwd=repo.work)
    (repo.work / "site" / "index.html").write_text("<p>preview x</p>\n")
    git("commit", "-q", "-am", "x", cwd=repo.work)
    git("push", "-q", "production", "feature/x", cwd=repo.work)
    sha = git("rev-parse", "HEAD", cwd=repo.work)
    job, said = previews.on_push(instance.store, instance.config.app("site"), "refs/heads/feature/x", sha)
    assert said == f"preview feature-x of feature/x: {PREVIEW_HOST}"
    instance.work()
    finished = instance.store.job(job.id)
    assert finished.state is JobState.SUCCEEDED, finished.error
    assert any(f"certificate for {PREVIEW_HOST} obtained" in line for line in instance.events(job.id))

    root = tmp_path / "root.pem"
    root.write_text(pebble.root_pem())
    answer = https_get(tls_port, PREVIEW_HOST, cafile=root)  # chain and name checked as a browser does
    assert (answer.status, answer.release, answer.body) == (200, sha[:12], "<p>preview x</p>\n")
    assert answer.cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value \
        .get_values_for_type(x509.DNSName) == [PREVIEW_HOST]
    assert https_get(tls_port, "site.test", cafile=root).release == app_job.sha[:12]
    assert previews.url(instance.config, instance.config.app("site"), "feature-x") == \
        f"https://{PREVIEW_HOST}:{tls_port}/"

    pem = certs.pem_path(instance.config, instance.config.app("site.feature-x"), PREVIEW_HOST)
    assert pem.exists()
    preview = previews.find(instance.store, instance.config.app("site"), "feature/x")
    done = engine_previews.remove(instance.config, instance.store, preview, "test")
    assert done.certificates == [f"host-{PREVIEW_HOST}.pem"] and not pem.exists()
    assert https_get(tls_port, "site.test", cafile=root).release == app_job.sha[:12]  # the app keeps its own
