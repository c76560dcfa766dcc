"""SIGHUP (the units' ExecReload) reads deploy.toml again in `serve` and `worker` (issue 23, item 5).

A valid file applies from the next request and job: a new app's webhook is taken and its push
deploys, a removed app is answered as unknown; an invalid file is refused, each problem in one
log line, and the running config stays. A build that runs while the reload comes is not cut.
Real processes throughout: `hookdeploy serve` and `hookdeploy worker` as subprocesses, the
receiver on waitress on a free port, the Docker engine for the deploys.
"""

from __future__ import annotations

import logging
import re
import secrets
import shlex
import signal
import subprocess
import time
from pathlib import Path

import pytest

from docker_helpers import HOOKDEPLOY, Instance, site_files
from hookdeploy.core.config import load
from hookdeploy.core.models import JobState
from hookdeploy.core.reload import LiveConfig, changes
from hookdeploy.core.store import Store
from webhook_helpers import (SECRETS, Server, environment, free_port, issue_token, make_repo, push_body, request,
                             signed_headers)

UNITS = sorted((Path(__file__).parent.parent / "systemd").glob("*.service"))
GITHUB = {"provider": "github", "secret_env": "SITE_SECRET"}


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def config_text(state_dir: Path, apps: dict[str, int], listen: str = "127.0.0.1:18080") -> str:
    """A deploy.toml with these apps (name -> port), each with a GitHub webhook."""
    lines = ["[server]", f'state_dir = "{state_dir}"', f'listen = "{listen}"', ""]
    for name, port in apps.items():
        lines += [f"[apps.{name}]", f'repo = "{state_dir.parent / name}.git"', f"port = {port}",
                  f'hostnames = ["{name}.test"]',
                  f"[apps.{name}.webhook]", 'provider = "github"', 'secret_env = "SITE_SECRET"', ""]
    return "\n".join(lines)


# -- the reload itself, on real files ------------------------------------------------------------------


def test_a_valid_file_applies_and_what_changed_is_said_in_one_line(tmp_path, caplog):
    path = write(tmp_path / "deploy.toml", config_text(tmp_path / "state", {"site": 80, "docs": 80}))
    live = LiveConfig(load(path))
    before = live.current
    write(path, config_text(tmp_path / "state", {"site": 8080, "shop": 80}))
    with caplog.at_level(logging.INFO, logger="hookdeploy.core.reload"):
        assert live.reload() is True
    assert set(live.current.apps) == {"site", "shop"}
    assert live.current.apps["site"].port == 8080
    assert before.apps["site"].port == 80, "a job that holds the old config keeps it whole"
    [line] = [record.getMessage() for record in caplog.records]
    assert line == f"reloaded {path}: apps added: shop; apps removed: docs; apps changed: site"


def test_an_invalid_file_is_refused_problem_by_problem_and_the_running_config_stays(tmp_path, caplog):
    path = write(tmp_path / "deploy.toml", config_text(tmp_path / "state", {"site": 80}))
    live = LiveConfig(load(path))
    running = live.current
    write(path, config_text(tmp_path / "state", {"site": 80}).replace("port = 80", 'port = "eighty"')
          + '\n[apps.bad_name!]\nrepo = "/x"\n')
    with caplog.at_level(logging.INFO, logger="hookdeploy.core.reload"):
        assert live.reload() is False
    assert live.current is running
    lines = [record.getMessage() for record in caplog.records]
    assert all("\n" not in line for line in lines)
    assert lines[-1].startswith("reload refused (") and lines[-1].endswith("the running config stays")
    assert lines[0].startswith("reload refused: ") and str(path) in lines[0], lines

    write(path, "[server\n")  # not TOML at all
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="hookdeploy.core.reload"):
        assert live.reload() is False
    assert live.current is running
    assert "not valid TOML" in caplog.records[0].getMessage()


def test_a_missing_secret_refuses_the_reload(tmp_path, caplog, monkeypatch):
    from hookdeploy.core.config import missing_secrets

    monkeypatch.setenv("SITE_SECRET", "set")
    monkeypatch.delenv("SHOP_SECRET", raising=False)
    path = write(tmp_path / "deploy.toml", config_text(tmp_path / "state", {"site": 80}))
    live = LiveConfig(load(path), lambda config: missing_secrets(config, webhooks=True))
    write(path, config_text(tmp_path / "state", {"site": 80}) + config_text(tmp_path / "state", {"shop": 80})
          .split("\n\n", 1)[1].replace("SITE_SECRET", "SHOP_SECRET"))
    with caplog.at_level(logging.INFO, logger="hookdeploy.core.reload"):
        assert live.reload() is False
    assert set(live.current.apps) == {"site"}
    assert "apps.shop.webhook.secret_env: environment variable SHOP_SECRET is not set" in caplog.records[0].getMessage()


def test_two_apps_claiming_one_hostname_refuse_the_reload_naming_both(tmp_path, caplog):
    path = write(tmp_path / "deploy.toml", config_text(tmp_path / "state", {"site": 80}))
    live = LiveConfig(load(path))
    write(path, config_text(tmp_path / "state", {"site": 80, "shop": 80}).replace('["shop.test"]', '["SITE.test"]'))
    with caplog.at_level(logging.INFO, logger="hookdeploy.core.reload"):
        assert live.reload() is False
    assert set(live.current.apps) == {"site"}
    assert caplog.records[0].getMessage() == ("reload refused: apps.shop.hostnames: SITE.test is also a hostname of "
                                              "apps.site (a hostname routes to one app)")


def test_the_worker_and_its_recovery_take_the_reloaded_config_between_jobs(tmp_path):
    from hookdeploy.engine.worker import Worker

    path = write(tmp_path / "deploy.toml", config_text(tmp_path / "state", {"site": 80}))
    live = LiveConfig(load(path))
    worker = Worker(live, Store(tmp_path / "hookdeploy.db"))
    assert worker.config is live.current and worker.recovery.config is live.current
    write(path, config_text(tmp_path / "state", {"site": 80, "shop": 80}))
    assert live.reload()
    assert set(worker.config.apps) == {"site"}, "not while a job may run"
    worker._take_config()  # what the loop does before it claims the next job
    assert worker.config is live.current and worker.recovery.config is live.current
    assert set(worker.config.apps) == {"site", "shop"}


def test_server_changes_wait_for_a_restart(tmp_path, caplog):
    path = write(tmp_path / "deploy.toml", config_text(tmp_path / "state", {"site": 80}))
    live = LiveConfig(load(path))
    write(path, config_text(tmp_path / "state", {"site": 80, "shop": 80}, listen="127.0.0.1:18081"))
    with caplog.at_level(logging.INFO, logger="hookdeploy.core.reload"):
        assert live.reload() is True
    assert live.current.server.listen == "127.0.0.1:18080", "the socket listens where it was opened"
    assert set(live.current.apps) == {"site", "shop"}
    assert [record.getMessage() for record in caplog.records] == [
        "reload: [server] changed (listen); it applies at the next restart",
        f"reloaded {path}: apps added: shop"]


def test_changes_names_other_tables(tmp_path):
    path = write(tmp_path / "deploy.toml", config_text(tmp_path / "state", {"site": 80}))
    before = load(path)
    write(path, config_text(tmp_path / "state", {"site": 80}) + '\n[proxy]\npublish = "0.0.0.0:8081"\n')
    assert changes(before, load(path)) == "[proxy] changed"
    assert changes(before, before) == "nothing changed"


# -- serve as a subprocess: the receiver takes a new app, refuses a removed one ---------------------------


def wait_for_line(log: Path, pattern: str, process: subprocess.Popen, timeout: float = 20) -> str:
    """The first line of `log` matching `pattern`, waiting for it."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for line in log.read_text().splitlines():
            if re.search(pattern, line):
                return line
        assert process.poll() is None, f"exited with {process.returncode}:\n{log.read_text()}"
        time.sleep(0.05)
    raise AssertionError(f"no line matching {pattern!r} in:\n{log.read_text()}")


def post_push(port: int, app: str, sha: str) -> tuple[int, dict]:
    body = push_body("github", sha)
    status, answer, _ = request(port, "POST", f"/hooks/{app}", body, signed_headers("github", SECRETS["SITE_SECRET"], body))
    return status, answer


@pytest.mark.slow
def test_sighup_to_serve_adds_and_removes_apps_and_refuses_a_broken_file(tmp_path):
    repo, shas = make_repo(tmp_path / "repo")
    port = free_port()
    state = tmp_path / "state"
    path = write(tmp_path / "deploy.toml", config_text(state, {"site": 80}, listen=f"127.0.0.1:{port}")
                 .replace(f'{state.parent / "site"}.git', str(repo)))
    with Server(path, port, tmp_path / "serve.log") as server:
        unknown = post_push(port, "nosuch", shas[0])
        assert unknown[0] in (401, 404), unknown
        assert post_push(port, "shop", shas[0]) == unknown, "not in deploy.toml yet: answered as an unknown app"

        write(path, path.read_text() + config_text(state, {"shop": 80}).split("\n\n", 1)[1].replace(
            f'{state.parent / "shop"}.git', str(repo)))
        server.process.send_signal(signal.SIGHUP)
        wait_for_line(server.log_path, r"reloaded .*: apps added: shop$", server.process)
        status, answer = post_push(port, "shop", shas[0])
        assert status == 202, answer
        assert Store(state / "hookdeploy.db").job(answer["job"]).app == "shop"

        good = path.read_text()
        write(path, good.replace("port = 80", 'port = "eighty"', 1))
        server.process.send_signal(signal.SIGHUP)
        refused = wait_for_line(server.log_path, r"reload refused \(1 problem\)", server.process)
        problem = wait_for_line(server.log_path, r"reload refused: ", server.process)
        assert "apps.site.port" in problem, problem
        assert refused.endswith("the running config stays")
        status, answer = post_push(port, "shop", shas[1])
        assert status == 202, "the running config (with shop) stays"

        write(path, config_text(state, {"shop": 80}, listen=f"127.0.0.1:{port}").replace(
            f'{state.parent / "shop"}.git', str(repo)))
        token = {"Authorization": f"Bearer {issue_token(path)}"}
        assert request(port, "GET", "/api/apps/site/jobs", headers=token)[0] == 200
        server.process.send_signal(signal.SIGHUP)
        wait_for_line(server.log_path, r"reloaded .*: apps removed: site$", server.process)
        assert post_push(port, "site", shas[1]) == unknown, "gone from deploy.toml: answered as an unknown app"
        assert request(port, "GET", "/api/apps/nosuch/jobs", headers=token)[:2] == (404, {"error": "unknown app 'nosuch'"})
        assert request(port, "GET", "/api/apps/site/jobs", headers=token)[:2] == (404, {"error": "unknown app 'site'"})
        deploy = request(port, "POST", "/api/apps/site/deploy", b"{}", {**token, "Content-Type": "application/json"})
        assert deploy[:2] == (404, {"error": "unknown app 'site'"}), "nothing is queued for a removed app"
        assert server.stop() == 0, server.log_path.read_text()
    assert "Traceback" not in server.log_path.read_text()


# -- with Docker: the new app's push deploys; a reload during a build cuts nothing ------------------------


def reload_command(unit: Path, pid: int) -> list[str]:
    """The unit's ExecReload as systemd runs it for a main process `pid`."""
    [line] = re.findall(r"^ExecReload=(.*)$", unit.read_text(), flags=re.M)
    return shlex.split(line.replace("$MAINPID", str(pid)))


def wait_until(condition, what: str, process: subprocess.Popen, log: Path, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert process.poll() is None, f"exited with {process.returncode} before {what}:\n{log.read_text()}"
        assert time.monotonic() < deadline, f"timed out waiting for {what}:\n{log.read_text()}"
        time.sleep(0.1)


def configure(site: Instance, apps: dict, listen: str) -> None:
    """Instance.configure, keeping [server] listen as the running process opened it."""
    site.configure(apps)
    text = re.sub(r'^listen = ".*"$', f'listen = "{listen}"', site.config_path.read_text(), count=1, flags=re.M)
    site.config_path.write_text(text)


@pytest.mark.docker
def test_reload_serve_with_a_new_app_whose_push_deploys_then_a_broken_file(instance: Instance, tmp_path):
    site = instance
    listen = f"127.0.0.1:{free_port()}"
    configure(site, {"site": {"hostnames": ["site.test"], "webhook": GITHUB}}, listen)
    first = site.deploy("site", site_files("site one"))
    assert first.state is JobState.SUCCEEDED, first.error
    port = int(listen.rsplit(":", 1)[1])
    unit = next(unit for unit in UNITS if unit.name == "hookdeploy.service")
    with Server(site.config_path, port, tmp_path / "serve.log", worker=True) as server:
        configure(site, {"site": {"hostnames": ["site.test"], "webhook": GITHUB},
                         "fresh": {"hostnames": ["fresh.test"], "webhook": GITHUB}}, listen)
        sha = site.commit("fresh", site_files("fresh one"))
        assert post_push(port, "fresh", sha) == post_push(port, "nosuch", sha), "not yet reloaded: an unknown app"
        subprocess.run(reload_command(unit, server.process.pid), check=True)
        wait_for_line(server.log_path, r"reloaded .*: apps added: fresh$", server.process)

        status, answer = post_push(port, "fresh", sha)
        assert status == 202, answer
        job = answer["job"]
        wait_until(lambda: site.store.job(job).state.finished, "the new app's deploy", server.process, server.log_path)
        assert site.store.job(job).state is JobState.SUCCEEDED, site.store.job(job).error
        assert site.get(host="fresh.test")[:2] == (200, sha[:12])
        assert site.get(host="site.test")[:2] == (200, first.sha[:12])

        site.config_path.write_text(site.config_path.read_text() + "\n[apps.fresh.guard]\nwatch_seconds = -1\n")
        subprocess.run(reload_command(unit, server.process.pid), check=True)
        problem = wait_for_line(server.log_path, r"reload refused: ", server.process)
        assert "apps.fresh" in problem, problem
        wait_for_line(server.log_path, r"reload refused \(\d+ problems?\): the running config stays", server.process)

        again = site.commit("fresh", site_files("fresh two"))
        status, answer = post_push(port, "fresh", again)
        assert status == 202, answer
        job = answer["job"]
        wait_until(lambda: site.store.job(job).state.finished, "the second deploy", server.process, server.log_path)
        assert site.store.job(job).state is JobState.SUCCEEDED, site.store.job(job).error
        assert site.get(host="fresh.test")[:2] == (200, again[:12])
        assert server.stop() == 0, server.log_path.read_text()
    assert "Traceback" not in server.log_path.read_text()


@pytest.mark.docker
@pytest.mark.parametrize("unit_name", ["hookdeploy-worker.service", "hookdeploy.service"])
def test_a_reload_during_a_build_does_not_interrupt_it(instance: Instance, tmp_path, unit_name):
    """The unit's ExecReload run on the service's process (as systemd does; test_systemd.py does it under a
    real systemd) while a build runs: the job goes on with the config it started with and goes live; the
    next job takes the new config."""
    site = instance
    listen = f"127.0.0.1:{free_port()}"
    configure(site, {"site": {"hostnames": ["site.test"]}}, listen)
    marker = secrets.token_hex(6)
    sha = site.commit("site", site_files("built across a reload", dockerfile_tail=f"RUN sleep 4 && echo {marker}\n"))
    job = site.enqueue("site", sha)
    unit = next(unit for unit in UNITS if unit.name == unit_name)
    command = [str(HOOKDEPLOY), "--config", str(site.config_path), *re.search(
        r"^ExecStart=\S+ (.*)$", unit.read_text(), flags=re.M).group(1).split()]
    log = tmp_path / "service.log"
    with open(log, "wb") as output:
        service = subprocess.Popen(command, env=environment(), stdout=output, stderr=subprocess.STDOUT)
    try:
        wait_until(lambda: any(f"echo {marker}" in line for line in site.events(job.id)),
                   "the build to reach its RUN step", service, log)
        configure(site, {"site": {"hostnames": ["site.test"]}, "fresh": {"hostnames": ["fresh.test"]}}, listen)
        subprocess.run(reload_command(unit, service.pid), check=True)
        wait_for_line(log, r"reloaded .*: apps added: fresh$", service)
        assert site.store.job(job.id).state is JobState.RUNNING, "the reload came while the build ran"
        wait_until(lambda: site.store.job(job.id).state.finished, "the build's job to end", service, log)
        assert site.store.job(job.id).state is JobState.SUCCEEDED, site.store.job(job.id).error
        assert [other for other in site.store.jobs("site") if other.retry_of == job.id] == [], "no retry: nothing was cut"
        assert site.get(host="site.test")[:2] == (200, sha[:12])

        fresh = site.enqueue("fresh", site.commit("fresh", site_files("fresh after the reload")))
        wait_until(lambda: site.store.job(fresh.id).state.finished, "the new app's job", service, log)
        assert site.store.job(fresh.id).state is JobState.SUCCEEDED, site.store.job(fresh.id).error
        assert site.get(host="fresh.test")[:2] == (200, fresh.sha[:12])
        service.send_signal(signal.SIGTERM)
        assert service.wait(60) == 0, log.read_text()
    finally:
        if service.poll() is None:
            service.kill()
            service.wait(10)
    assert "Traceback" not in log.read_text()
