"""A build host (issue 21, item 2): `[build] host` / `build_host` builds a release on another Docker engine,
pushes it to [registry] from there, and this engine pulls it by digest; a build host that does not answer,
or a push it cannot make, fails the job before anything changes, in one line naming it; `doctor` checks
each build host.

The build host is real (tests/buildhost_helpers.py): a nested dockerd with a real sshd, reached over ssh
with a key the test made (through the system's ssh, as the worker user's ~/.ssh would) and over tcp; the
registry is real too (docker-registry with htpasswd, tests/registry_helpers.py).
"""

from __future__ import annotations

import base64
import json
import os
import stat
import textwrap
import time
from pathlib import Path

import pytest

from docker_helpers import Instance, site_files
from hookdeploy.core.config import load
from hookdeploy.core.errors import ConfigError
from hookdeploy.core.models import JobState
from hookdeploy.engine import buildhost
from registry_helpers import Registry

REGISTRY = '[registry]\nurl = "127.0.0.1:5000"\n'


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "deploy.toml"
    path.write_text(f'[server]\nstate_dir = "{tmp_path / "state"}"\n' + textwrap.dedent(text))
    return path


# -- the config ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("text, problem", [
    ('[build]\nhost = "ssh://builder"\n[apps.site]\nrepo = "/r"\n' + REGISTRY,
     "build.host: must be ssh://user@host[:port] or tcp://host:port, not 'ssh://builder'"),
    ('[build]\nhost = "tcp://builder"\n[apps.site]\nrepo = "/r"\n' + REGISTRY,
     "build.host: must be ssh://user@host[:port] or tcp://host:port, not 'tcp://builder'"),
    ('[build]\nhost = "http://builder:2375"\n[apps.site]\nrepo = "/r"\n' + REGISTRY,
     "build.host: must be ssh://user@host[:port] or tcp://host:port, not 'http://builder:2375'"),
    ('[build]\nhost = "ssh://me@builder:65536"\n[apps.site]\nrepo = "/r"\n' + REGISTRY,
     "build.host: port 65536 is not between 1 and 65535"),
    ('[build]\nhost = "ssh://me@builder"\n[apps.site]\nrepo = "/r"\n',
     "build.host: needs a [registry] table (the build host pushes each release there, and this engine "
     "pulls it by digest)"),
    ('[apps.site]\nrepo = "/r"\nbuild_host = "tcp://builder:2376"\n',
     "apps.site.build_host: needs a [registry] table (the build host pushes each release there, and this engine "
     "pulls it by digest)"),
    ('[apps.site]\nimage = "127.0.0.1:5000/team/site"\nbuild_host = "ssh://me@builder"\n' + REGISTRY,
     "apps.site.build_host: an image app is built elsewhere already"),
    ('[build]\nbuilder = "classic"\nhost = "ssh://me@builder"\n[apps.site]\nrepo = "/r"\n' + REGISTRY,
     'build.host: a build host builds with BuildKit; remove it or set [build] builder = "buildkit"'),
    ('[build]\nhost = "ssh://me@builder"\ntls_ca = "/etc/hostname"\n[apps.site]\nrepo = "/r"\n' + REGISTRY,
     "build.tls_ca: TLS files are for a tcp:// build host, and none is set"),
    ('[build]\nhost = "tcp://builder:2376"\ntls_cert = "/etc/hostname"\n[apps.site]\nrepo = "/r"\n' + REGISTRY,
     "build.tls_cert: a client certificate and its key (tls_key) go together"),
])
def test_a_bad_build_host_is_one_line(tmp_path, text, problem):
    with pytest.raises(ConfigError) as raised:
        load(write(tmp_path, text))
    assert raised.value.problems == [problem]


def test_a_build_host_is_the_apps_own_else_the_build_tables(tmp_path):
    (tmp_path / "tls").mkdir()
    for name in ("ca.pem", "cert.pem", "key.pem"):
        (tmp_path / "tls" / name).write_text("x")
    config = load(write(tmp_path, f"""\
        [build]
        host = "tcp://builder.example:2376"
        tls_ca = "tls/ca.pem"
        tls_cert = "tls/cert.pem"
        tls_key = "tls/key.pem"
        [apps.site]
        repo = "/r"
        [apps.api]
        repo = "/r"
        hostnames = ["api.example"]
        build_host = "ssh://deploy@[2001:db8::1]:2222"
        [apps.pulled]
        image = "127.0.0.1:5000/team/pulled"
        hostnames = ["pulled.example"]
        {REGISTRY}"""))
    assert config.build_host(config.apps["site"]) == "tcp://builder.example:2376"
    assert config.build_host(config.apps["api"]) == "ssh://deploy@[2001:db8::1]:2222"
    assert config.build_host(config.apps["pulled"]) == ""
    assert config.build.tls_ca == str(tmp_path / "tls" / "ca.pem")  # relative to the config's folder


def test_the_registry_login_lives_only_as_long_as_the_push(tmp_path, monkeypatch):
    monkeypatch.setenv("REGISTRY_PASSWORD", "s3cret-pass")
    config = load(write(tmp_path, """\
        [build]
        host = "ssh://me@builder"
        [apps.site]
        repo = "/r"
        [registry]
        url = "127.0.0.1:5000"
        username = "deploy"
        password_env = "REGISTRY_PASSWORD"
        """))
    with buildhost.login(config) as folder:
        assert stat.S_IMODE(os.stat(folder).st_mode) == 0o700
        assert stat.S_IMODE(os.stat(Path(folder) / "config.json").st_mode) == 0o600
        auths = json.loads((Path(folder) / "config.json").read_text())["auths"]
        assert base64.b64decode(auths["127.0.0.1:5000"]["auth"]).decode() == "deploy:s3cret-pass"
    assert not Path(folder).exists()


def test_a_tcp_build_host_is_reached_with_its_tls_files(tmp_path):
    for name in ("ca.pem", "cert.pem", "key.pem"):
        (tmp_path / name).write_text("x")
    config = load(write(tmp_path, f"""\
        [build]
        host = "tcp://builder:2376"
        tls_ca = "ca.pem"
        tls_cert = "cert.pem"
        tls_key = "key.pem"
        [apps.site]
        repo = "/r"
        build_host = "ssh://me@other:2222"
        [apps.api]
        repo = "/r"
        hostnames = ["api.example"]
        {REGISTRY}"""))
    assert buildhost.BuildHost.of(config, "tcp://builder:2376").engine_options() == [
        "--host", "tcp://builder:2376", "--tlsverify", f"--tlscacert={tmp_path / 'ca.pem'}",
        f"--tlscert={tmp_path / 'cert.pem'}", f"--tlskey={tmp_path / 'key.pem'}"]
    assert buildhost.BuildHost.of(config, "ssh://me@other:2222").engine_options() == ["--host", "ssh://me@other:2222"]


# -- builds there, for real ---------------------------------------------------------------------------------


def registry_table(registry: Registry) -> str:
    return (f'[registry]\nurl = "{registry.url}"\nusername = "{registry.username}"\n'
            'password_env = "REGISTRY_PASSWORD"\ninsecure = true\n')


@pytest.fixture
def remote(instance, registry, build_host, monkeypatch):
    """An instance ready to build on the build host: its ssh on PATH, the registry reachable from there,
    the password set. Configure it with `configure(url)`."""
    monkeypatch.setenv("PATH", build_host.path())
    monkeypatch.setenv("REGISTRY_PASSWORD", registry.password)
    build_host.forward(registry.port)

    def configure(url: str, app: dict | None = None) -> Instance:
        instance.configure({"site": app or {}}, extra=f'[build]\nhost = "{url}"\n' + registry_table(registry))
        return instance

    yield configure
    build_host.end_forwards()
    registry.remove_local_tags(instance.client)


def assert_live_from_registry(instance: Instance, registry: Registry, build_host, job, url: str, version: str):
    """The job built on `url`, pushed there, and this engine runs what the registry has, by digest."""
    events = instance.events(job.id)
    assert job.state is JobState.SUCCEEDED, events
    repository, sha12 = f"{instance.name}/site", job.sha[:12]
    assert any(line.startswith(f"building on {url} (BuildKit): {registry.url}/{repository}:{sha12}")
               for line in events), events
    assert job.digest is not None and job.digest == registry.manifest_digest(repository, sha12)
    assert f"pulling {registry.url}/{repository}@{job.digest}" in events
    local = instance.client.images.get(f"{instance.name}/site:{sha12}")
    assert f"{registry.url}/{repository}@{job.digest}" in local.attrs["RepoDigests"]
    assert version in instance.get().body
    assert instance.store.live_release("site").digest == job.digest
    assert registry.password not in "\n".join(events)
    # The login went with the push only: no docker config on the build host knows the registry.
    assert registry.url not in build_host.exec("sh", "-c", "cat /root/.docker/config.json 2>/dev/null || true")
    # The tag it pushed is removed there again, beside the pull and start (its build cache stays: see the callers).
    deadline = time.monotonic() + 30
    while build_host.docker("image", "ls", "-q", f"{registry.url}/{repository}") and time.monotonic() < deadline:
        time.sleep(0.2)
    assert build_host.docker("image", "ls", "-q", f"{registry.url}/{repository}") == ""


def test_a_release_built_on_a_build_host_over_ssh_goes_live_from_the_registry_by_digest(
        remote, registry, build_host):
    instance = remote(build_host.ssh_url)
    cache = build_host.build_cache_records()
    job = instance.deploy("site", site_files("ssh-v1"))
    assert_live_from_registry(instance, registry, build_host, job, build_host.ssh_url, "ssh-v1")
    assert build_host.build_cache_records() > cache  # built there, by the build host's BuildKit
    second = instance.deploy("site", site_files("ssh-v2"))
    assert_live_from_registry(instance, registry, build_host, second, build_host.ssh_url, "ssh-v2")
    assert registry.tags(f"{instance.name}/site") == sorted([job.sha[:12], second.sha[:12]])


def test_a_release_built_on_a_build_host_over_tcp_goes_live_from_the_registry_by_digest(
        remote, registry, build_host):
    instance = remote(build_host.tcp_url)
    cache = build_host.build_cache_records()
    job = instance.deploy("site", site_files("tcp-v1"))
    assert_live_from_registry(instance, registry, build_host, job, build_host.tcp_url, "tcp-v1")
    assert build_host.build_cache_records() > cache


def test_a_build_host_down_or_a_refused_push_fails_the_job_naming_it_and_live_stays(
        remote, registry, build_host, monkeypatch):
    instance = remote(build_host.ssh_url)
    first = instance.deploy("site", site_files("v1"))
    assert first.state is JobState.SUCCEEDED, instance.events(first.id)

    monkeypatch.setenv("REGISTRY_PASSWORD", "not-the-password")
    refused = instance.deploy("site", site_files("v2"))
    assert refused.state is JobState.FAILED
    assert refused.error.startswith(f"build host {build_host.ssh_url}: push to {registry.url} failed: "), refused.error
    assert "not-the-password" not in "\n".join(instance.events(refused.id))
    assert "v1" in instance.get().body and instance.container_names() == instance.expected_containers("site")
    monkeypatch.setenv("REGISTRY_PASSWORD", registry.password)

    url = build_host.ssh_url
    with build_host.down():
        down = instance.deploy("site", site_files("v3"))
    assert down.state is JobState.FAILED
    assert down.error.startswith(f"build host {url} does not answer"), down.error
    assert "\n" not in down.error
    assert not any(line.startswith("checked out") for line in instance.events(down.id))  # failed before anything
    assert "v1" in instance.get().body and instance.container_names() == instance.expected_containers("site")
    assert instance.store.live_release("site").sha == first.sha


def test_doctor_checks_each_build_host(remote, registry, build_host, monkeypatch):
    instance = remote(build_host.ssh_url, app={})
    instance.configure({"site": {}, "api": {"build_host": build_host.tcp_url, "hostnames": ["api.example"]}},
                       extra=f'[build]\nhost = "{build_host.ssh_url}"\n' + registry_table(registry))
    environment = {"PATH": build_host.path(), "REGISTRY_PASSWORD": registry.password}
    lines = instance.cli("doctor", env=environment).stdout.splitlines()
    for url in (build_host.ssh_url, build_host.tcp_url):
        assert any(line.startswith(f"ok    build host {url} answers: Docker ") for line in lines), lines
        assert f"ok    build host {url} logs in to the registry {registry.url} as {registry.username}" in lines

    wrong = instance.cli("doctor", env={**environment, "REGISTRY_PASSWORD": "not-the-password"})
    assert any(line.startswith(f"FIX   build host {build_host.ssh_url} cannot log in to the registry {registry.url}: ")
               for line in wrong.stdout.splitlines()), wrong.stdout
    assert "not-the-password" not in wrong.stdout + wrong.stderr and wrong.returncode != 0

    ssh_url, tcp_url = build_host.ssh_url, build_host.tcp_url
    with build_host.down():
        down = instance.cli("doctor", env=environment)
    for url in (ssh_url, tcp_url):
        assert any(line.startswith(f"FIX   build host {url} does not answer") for line in down.stdout.splitlines()), \
            down.stdout
    assert down.returncode != 0


def test_a_tcp_build_host_with_tls_builds_with_the_certificates_and_refuses_without(
        instance, registry, tls_build_host, monkeypatch):
    monkeypatch.setenv("REGISTRY_PASSWORD", registry.password)
    tls_build_host.forward(registry.port)
    try:
        files = tls_build_host.tls
        instance.configure({"site": {}}, extra=(
            f'[build]\nhost = "{tls_build_host.tcp_url}"\ntls_ca = "{files / "ca.pem"}"\n'
            f'tls_cert = "{files / "cert.pem"}"\ntls_key = "{files / "key.pem"}"\n' + registry_table(registry)))
        cache = tls_build_host.build_cache_records()
        job = instance.deploy("site", site_files("tls-v1"))
        assert_live_from_registry(instance, registry, tls_build_host, job, tls_build_host.tcp_url, "tls-v1")
        assert tls_build_host.build_cache_records() > cache

        instance.configure({"site": {}}, extra=f'[build]\nhost = "{tls_build_host.tcp_url}"\n' + registry_table(registry))
        plain = instance.deploy("site", site_files("tls-v2"))
        assert plain.state is JobState.FAILED
        assert plain.error.startswith(f"build host {tls_build_host.tcp_url} does not answer"), plain.error
        assert "tls-v1" in instance.get().body
    finally:
        tls_build_host.end_forwards()
        registry.remove_local_tags(instance.client)
