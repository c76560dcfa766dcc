"""`hookdeploy doctor` on a healthy and a broken set-up: the proxy container, its published port,
the instance network, secrets the features need, and repos (local paths and clone URLs).

The Docker tests deploy for real (docker_helpers.Instance) and then break things as an operator
would: stop the proxy, change proxy.publish, point an app at a missing repo, leave a webhook
secret unset. The rest need no engine: doctor reports the engine problem and goes on.
"""

from __future__ import annotations

import subprocess

import pytest

from docker_helpers import site_files
from hookdeploy.cli import doctor

# Names no environment sets: the secrets these tests leave missing.
SERVER_SECRET = "HOOKDEPLOY_DOCTOR_TEST_SERVER_SECRET"
WEBHOOK_SECRET = "HOOKDEPLOY_DOCTOR_TEST_WEBHOOK_SECRET"


def fixes(stdout: str) -> list[str]:
    return [line for line in stdout.splitlines() if line.startswith("FIX   ")]


def healthy_instance(instance) -> None:
    """One app, deployed for real, with its post-receive hook installed."""
    instance.configure({"site": {}})
    job = instance.deploy("site", site_files("v1"))
    assert job.state.value == "succeeded", job.error
    init = instance.cli("init-repo", "site")
    assert init.returncode == 0, init.stderr


# -- with Docker ---------------------------------------------------------------------------------------


@pytest.mark.docker
def test_doctor_passes_after_a_real_deploy(instance):
    healthy_instance(instance)
    completed = instance.cli("doctor")
    assert completed.returncode == 0, completed.stdout + completed.stderr
    lines = completed.stdout.splitlines()
    assert lines[-1] == "all checks passed"
    assert all(line.startswith("ok    ") for line in lines[:-1]), lines
    proxy = f"{instance.name}-proxy"
    assert f"ok    proxy {proxy} is running" in lines
    assert f"ok    proxy {proxy} publishes 127.0.0.1:{instance.port}" in lines
    assert f"ok    network {instance.name} exists" in lines


@pytest.mark.docker
def test_doctor_names_each_fix_on_a_broken_set_up(instance, tmp_path):
    healthy_instance(instance)
    proxy = f"{instance.name}-proxy"
    instance.client.containers.get(proxy).stop(timeout=1)
    missing_repo = tmp_path / "git" / "gone.git"
    text = instance.config_path.read_text()
    text = text.replace(f'publish = "127.0.0.1:{instance.port}"', 'publish = "127.0.0.1:1"')
    text = text.replace("[server]\n", f'[server]\nsecret_env = "{SERVER_SECRET}"\n')
    text += (f'\n[apps.site.webhook]\nprovider = "github"\nsecret_env = "{WEBHOOK_SECRET}"\n'
             f'\n[apps.gone]\nrepo = "{missing_repo}"\nhostnames = ["gone.test"]\n')
    instance.config_path.write_text(text)

    completed = instance.cli("doctor")
    assert completed.returncode == 1, completed.stdout + completed.stderr
    found = fixes(completed.stdout)
    assert f"FIX   proxy {proxy} is exited, so no app is reachable: docker start {proxy}" in found
    assert any(line.startswith(f"FIX   proxy {proxy} publishes 127.0.0.1:{instance.port}, "
                               'not proxy.publish = "127.0.0.1:1": ') and f"docker rm -f {proxy}" in line
               for line in found), found
    assert f"FIX   gone: repo {missing_repo} does not exist: hookdeploy init-repo gone" in found
    assert any(f"server.secret_env: environment variable {SERVER_SECRET} is not set" in line
               and "/etc/hookdeploy/env" in line for line in found), found
    assert any(f"apps.site.webhook.secret_env: environment variable {WEBHOOK_SECRET} is not set" in line
               for line in found), found
    assert f"{len(found)} problems found" in completed.stdout.splitlines()
    # What is fine is still said to be fine.
    assert f"ok    network {instance.name} exists" in completed.stdout.splitlines()


@pytest.mark.docker
def test_doctor_without_a_proxy_yet_says_the_first_deploy_creates_it(instance):
    instance.configure({"site": {}})
    instance.commit("site", site_files("v1"))
    assert instance.cli("init-repo", "site").returncode == 0
    completed = instance.cli("doctor")
    assert completed.returncode == 0, completed.stdout + completed.stderr
    assert (f"ok    proxy {instance.name}-proxy does not exist yet: it will be created on the first deploy"
            in completed.stdout.splitlines())


# -- without Docker --------------------------------------------------------------------------------------


def test_doctor_checks_that_a_clone_url_answers(write_config, run_cli, tmp_path, state_dir):
    state_dir.mkdir()
    reachable = tmp_path / "upstream.git"
    subprocess.run(["git", "init", "-q", "--bare", str(reachable)], check=True)
    nowhere = tmp_path / "nowhere.git"
    config = write_config({"up": {"repo": f"file://{reachable}", "hostnames": ["up.test"]},
                           "down": {"repo": f"file://{nowhere}", "hostnames": ["down.test"]}})
    completed = run_cli("doctor", config=config)
    assert completed.returncode == 1
    lines = completed.stdout.splitlines()
    assert f"ok    up: repo file://{reachable} answers (mirrored under state_dir)" in lines
    down = [line for line in lines if line.startswith(f"FIX   down: repo file://{nowhere} cannot be reached (")]
    assert len(down) == 1, lines
    assert "apps.down.repo" in down[0] and "does not appear to be a git repository" in down[0]


def test_doctor_needs_the_server_and_webhook_secrets_when_an_app_has_webhooks(write_config, run_cli, state_dir,
                                                                               site_bare_repo):
    state_dir.mkdir(exist_ok=True)
    config = write_config({"site": {"repo": str(site_bare_repo), "branch": "deploy",
                                    "webhook": {"provider": "github", "secret_env": WEBHOOK_SECRET}}},
                          server={"secret_env": SERVER_SECRET})
    completed = run_cli("doctor", config=config, env={SERVER_SECRET: None, WEBHOOK_SECRET: None})
    assert completed.returncode == 1
    found = fixes(completed.stdout)
    assert (f"FIX   server.secret_env: environment variable {SERVER_SECRET} is not set (API tokens need it): "
            "set it in the environment hookdeploy runs with") in " ".join(found)
    assert any(line.startswith(f"FIX   apps.site.webhook.secret_env: environment variable {WEBHOOK_SECRET} "
                               "is not set") for line in found), found

    present = run_cli("doctor", config=config, env={SERVER_SECRET: "s" * 32, WEBHOOK_SECRET: "w" * 32})
    assert not [line for line in fixes(present.stdout) if "secret" in line], present.stdout


def test_doctor_does_not_need_the_server_secret_without_webhooks(site_config, run_cli, state_dir, site_bare_repo):
    state_dir.mkdir(exist_ok=True)
    completed = run_cli("doctor", config=site_config, env={"HOOKDEPLOY_SECRET": None})
    assert not [line for line in fixes(completed.stdout) if "secret" in line], completed.stdout


def test_published_addresses_are_read_from_the_container_as_configured():
    stopped = {"HostConfig": {"PortBindings": {"80/tcp": [{"HostIp": "", "HostPort": "80"}]}},
               "NetworkSettings": {"Ports": {}}}
    assert doctor._published(stopped) == {"0.0.0.0:80"}
    running = {"HostConfig": {"PortBindings": {}},
               "NetworkSettings": {"Ports": {"80/tcp": [{"HostIp": "127.0.0.1", "HostPort": "8088"}]}}}
    assert doctor._published(running) == {"127.0.0.1:8088"}
    assert doctor._normalize_address("0.0.0.0:80") == doctor._normalize_address(":80") == "0.0.0.0:80"
    assert doctor._normalize_address("[::1]:80") == "::1:80"
    assert doctor._published({}) == set()


def test_doctor_checks_the_registry_login_and_skips_repo_checks_for_image_apps(instance, registry):
    from test_registry import registry_table

    instance.configure({"site": {"push": True}, "api": {"image": f"{registry.url}/team/api", "hostnames": ["api.test"]}},
                       extra=registry_table(registry))
    good = instance.cli("doctor", env={"REGISTRY_PASSWORD": registry.password})
    assert f"ok    registry {registry.url} answers and accepts the login as {registry.username}" in good.stdout
    assert not any("api:" in line for line in good.stdout.splitlines()), good.stdout  # no repo to check
    wrong = instance.cli("doctor", env={"REGISTRY_PASSWORD": "not-it"})
    assert (f"FIX   registry {registry.url} refuses the login as {registry.username} (HTTP 401): check "
            "registry.username and the password in registry.password_env or password_file") in fixes(wrong.stdout)
    assert "not-it" not in wrong.stdout + wrong.stderr
    unset = instance.cli("doctor", env={"REGISTRY_PASSWORD": ""})
    assert any(line.startswith("FIX   registry.password_env: environment variable REGISTRY_PASSWORD is not set")
               for line in fixes(unset.stdout)), unset.stdout
    registry.stop()
    down = instance.cli("doctor", env={"REGISTRY_PASSWORD": registry.password})
    assert any(line.startswith(f"FIX   registry {registry.url} does not answer (") for line in fixes(down.stdout))
