"""Several workers on one instance (issue 8): started at the same instant on a fresh instance they
create the network and the proxy once and deploy apps side by side; an instance left with
duplicate networks by an older version is healed by the next worker, and `doctor` names them.
"""

from __future__ import annotations

import subprocess

import pytest

from docker_helpers import HOOKDEPLOY, Instance, site_files
from hookdeploy.core.models import JobState

pytestmark = pytest.mark.docker

APPS = [f"app{number}" for number in range(6)]


def start_together(instance: Instance, count: int) -> list[subprocess.Popen]:
    """`count` `hookdeploy worker --drain` processes launched back to back: they reach the engine
    within milliseconds of each other, as `serve` and a worker do when systemd starts both."""
    command = [str(HOOKDEPLOY), "--config", str(instance.config_path), "worker", "--drain"]
    return [subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            for _ in range(count)]


def configure_apps(instance: Instance) -> None:
    instance.configure({app: {"hostnames": [f"{app}.test"]} for app in APPS})
    for app in APPS:
        instance.enqueue(app, instance.commit(app, site_files(f"{app} live")))


def network_count(instance: Instance) -> int:
    return len([network for network in instance.client.networks.list(names=[instance.name])
                if network.name == instance.name])


def test_workers_started_together_on_a_fresh_instance_make_one_network_one_proxy_and_deploy_every_app(instance):
    configure_apps(instance)
    workers = start_together(instance, 3)
    outputs = [worker.communicate(timeout=300)[0] for worker in workers]
    for worker, output in zip(workers, outputs):
        assert worker.returncode == 0, output
        assert "Traceback" not in output, output

    assert network_count(instance) == 1
    proxies = instance.containers(role="proxy")
    assert [proxy.name for proxy in proxies] == [f"{instance.name}-proxy"]
    ran_by = set()
    for app in APPS:
        [job] = instance.store.jobs(app)
        assert job.state is JobState.SUCCEEDED, (app, job.error)
        ran_by.add(job.worker)
        answer = instance.get(host=f"{app}.test")
        assert (answer.status, answer.body) == (200, f"<p>{app} live</p>\n")
    assert len(ran_by) > 1, "the apps were shared among the workers"
    assert instance.container_names() == instance.expected_containers(*APPS)


def test_the_next_worker_heals_duplicate_networks_and_doctor_names_them(instance):
    instance.configure({"site": {}})
    first = instance.deploy("site", site_files("before the duplicates"))
    assert first.state is JobState.SUCCEEDED, first.error
    # What workers of earlier versions left behind: more networks of the same name (Docker allows it).
    for _ in range(2):
        instance.client.networks.create(instance.name, driver="bridge", check_duplicate=False,
                                        labels={"hookdeploy.instance": instance.name})
    assert network_count(instance) == 3

    doctor = instance.cli("doctor")
    assert doctor.returncode == 1
    assert f"network {instance.name} exists 3 times" in doctor.stdout + doctor.stderr

    second = instance.enqueue("site", instance.commit("site", site_files("after the heal")))
    worker = instance.worker_process()
    assert worker.returncode == 0, worker.stderr
    assert f"network {instance.name} exists 3 times; keeping" in worker.stderr
    assert network_count(instance) == 1
    assert instance.store.job(second.id).state is JobState.SUCCEEDED, instance.store.job(second.id).error
    answer = instance.get()
    assert (answer.status, answer.body) == (200, "<p>after the heal</p>\n")
    doctor = instance.cli("doctor").stdout
    assert f"ok    network {instance.name} exists" in doctor and "times" not in doctor
