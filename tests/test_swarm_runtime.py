"""engine/runtime.py's SwarmService on the 3-node rig (scripts/cluster.sh): the live service's logs,
each line labelled `task SLOT@NODE`; stop (no task runs) and start (every new task health-checked by check_health, as a candidate's);
remove_all leaves no service or container with the app's labels."""

from __future__ import annotations

import re
import threading
import time

from docker_helpers import site_files
from hookdeploy.core.models import JobState
from hookdeploy.engine import runtime


def test_logs_stop_start_and_remove_all_of_a_service_of_three_tasks(swarm_instance):
    swarm_instance.configure({"site": {"replicas": 3}})
    job = swarm_instance.deploy("site", site_files("v1"))
    assert job.state is JobState.SUCCEEDED, job.error
    name = swarm_instance.store.live_release("site").container
    config = swarm_instance.config
    where = runtime.runtime_for(config, config.app("site"), swarm_instance.client)
    proxy = swarm_instance.client.containers.get(f"{swarm_instance.name}-proxy")
    addresses = where.addresses(name)
    assert len(addresses) == 3
    assert all(where.probe(proxy, ip).ok for ip in addresses)

    lines = list(where.logs(name))
    labels = {label for label, text in lines if "GET /health" in text}
    assert len(labels) == 3 and all(re.fullmatch(r"task [123]@\S+", label) for label in labels), lines

    where.stop(name)
    assert where.addresses(name) == []
    assert swarm_instance.client.services.get(name).attrs["Spec"]["Mode"]["Replicated"]["Replicas"] == 0
    started = where.start(name)
    said = where.check_health(started, proxy, threading.Event(), lambda text: None)
    assert said.startswith("health check passed in ") and ": 3 tasks on " in said, said
    assert len(started.addresses) == 3 and sorted(where.addresses(name)) == started.addresses

    removed = where.remove_all("site")
    assert name in removed
    assert swarm_instance.services(app="site") == []
    labels = [f"hookdeploy.instance={swarm_instance.name}", "hookdeploy.app=site"]
    deadline = time.monotonic() + 30  # a task's container on the manager goes as Swarm tears it down
    while swarm_instance.client.containers.list(all=True, filters={"label": labels}) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert swarm_instance.client.containers.list(all=True, filters={"label": labels}) == []
