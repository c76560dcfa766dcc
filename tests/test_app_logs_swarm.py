"""`app-logs` of a release that is a Swarm service, on the 3-node rig (scripts/cluster.sh): every task's
lines, each prefixed `[task SLOT@NODE]`; --tail per task; --follow goes on with the next service."""

from __future__ import annotations

import re
import subprocess
import threading

from docker_helpers import HOOKDEPLOY
from hookdeploy.core.models import JobState
from test_app_logs import chatty_site, wait_for

TASK_LINE = re.compile(r"^\[task (\d)@(\S+)\] (v\d) line (\d) from ([0-9a-f]{12})$")


def test_app_logs_of_three_tasks_and_follow_across_a_deploy(swarm_instance):
    import os

    swarm_instance.configure({"site": {"replicas": 3}})
    first = swarm_instance.deploy("site", chatty_site("v1"))
    assert first.state is JobState.SUCCEEDED, first.error

    shown = swarm_instance.cli("app-logs", "site")
    assert shown.returncode == 0, shown.stderr
    assert "\x1b" not in shown.stdout
    numbered = [TASK_LINE.match(line) for line in shown.stdout.splitlines() if TASK_LINE.match(line)]
    assert {(match[1], match[4]) for match in numbered} == {(slot, str(i)) for slot in "123" for i in range(1, 9)}, \
        shown.stdout
    assert len({match[2] for match in numbered}) >= 2  # the tasks ran on several nodes, each named
    assert len({(match[1], match[5]) for match in numbered}) == 3  # one container a slot

    tailed = swarm_instance.cli("app-logs", "site", "--tail", "2")
    assert tailed.returncode == 0, tailed.stderr
    prefixes = [line.partition("]")[0] for line in tailed.stdout.splitlines()]
    assert len(prefixes) == 6 and all(prefixes.count(prefix) == 2 for prefix in prefixes), tailed.stdout

    follower = subprocess.Popen([str(HOOKDEPLOY), "--config", str(swarm_instance.config_path), "app-logs", "site",
                                 "--follow"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                env=dict(os.environ))
    lines: list[str] = []
    threading.Thread(target=lambda: lines.extend(iter(follower.stdout.readline, "")), daemon=True).start()
    try:
        wait_for(lambda: sum(" v1 line 8 " in line for line in lines) == 3, lines, "the v1 tasks' lines")
        second = swarm_instance.deploy("site", chatty_site("v2"))
        assert second.state is JobState.SUCCEEDED, second.error
        wait_for(lambda: sum(" v2 line 8 " in line for line in lines) == 3, lines, "the v2 tasks' lines", timeout=90)
    finally:
        follower.terminate()
        follower.wait(10)
    switched = f"hookdeploy: switched to release {second.sha[:12]} (job {second.id})\n"
    assert switched in lines, lines
    at = lines.index(switched)
    assert not any(" v2 " in line for line in lines[:at])
    assert {TASK_LINE.match(line.rstrip())[1] for line in lines[at + 1:] if TASK_LINE.match(line.rstrip())} == set("123")
