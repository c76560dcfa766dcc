"""`app-logs APP` and GET /api/apps/APP/logs against real containers: every replica's lines, each
prefixed with its replica and escaped; --tail per replica, --since a duration; --follow goes on
across a deploy, saying it switched release; bad input is one line, exit 2."""

from __future__ import annotations

import re
import signal
import subprocess
import threading
import time

from docker_helpers import HOOKDEPLOY, site_files
from hookdeploy.core import tokens
from hookdeploy.core.models import JobState
from webhook_helpers import API_SECRET, SECRETS, Server, environment, request

# The app prints 8 numbered lines and one with a colour escape sequence (on stderr), then serves.
START = """for i in 1 2 3 4 5 6 7 8; do echo "{version} line $i from $HOSTNAME"; done
printf '{version} colour \\033[31mred\\033[0m\\n' >&2
exec nginx -g 'daemon off;'
"""
LINE = re.compile(r"^\[replica (\d)\] (v\d) line (\d) from ([0-9a-f]{12})$")


def chatty_site(version: str) -> dict[str, str]:
    return site_files(version, dockerfile_tail='COPY start.sh /start.sh\nCMD ["sh", "/start.sh"]\n',
                      extra={"start.sh": START.format(version=version)})


def by_replica(stdout: str) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for line in stdout.splitlines():
        replica, _, text = line.partition("] ")
        found.setdefault(replica.removeprefix("[replica "), []).append(text)
    return found


def test_app_logs_of_three_replicas_tail_since_and_bad_input(instance):
    instance.configure({"site": {"replicas": 3}, "other": {"hostnames": ["other.example"]}})
    job = instance.deploy("site", chatty_site("v1"))
    assert job.state is JobState.SUCCEEDED, job.error
    deployed = time.monotonic()
    name = instance.store.live_release("site").container
    ids = {instance.client.containers.get(each).id[:12]: replica
           for replica, each in (("1", name), ("2", f"{name}-2"), ("3", f"{name}-3"))}

    shown = instance.cli("app-logs", "site")
    assert shown.returncode == 0, shown.stderr
    assert "\x1b" not in shown.stdout  # the app's escape sequence is printed escaped
    numbered = [LINE.match(line) for line in shown.stdout.splitlines() if LINE.match(line)]
    assert {(match[1], match[3]) for match in numbered} == {(r, str(i)) for r in "123" for i in range(1, 9)}
    assert all(ids[match[4]] == match[1] for match in numbered)  # each prefix names the container that printed it
    for replica in "123":
        assert f"[replica {replica}] v1 colour \\x1b[31mred\\x1b[0m" in shown.stdout.splitlines()

    tailed = instance.cli("app-logs", "site", "--tail", "5")
    assert tailed.returncode == 0, tailed.stderr
    per_replica = by_replica(tailed.stdout)
    assert sorted(per_replica) == ["1", "2", "3"] and all(len(lines) == 5 for lines in per_replica.values()), tailed.stdout
    everything = by_replica(shown.stdout)
    assert all(per_replica[replica] == everything[replica][-5:] for replica in "123")  # each one's last five
    assert not any(line.startswith("v1 line 1 ") for lines in per_replica.values() for line in lines)

    # The app's own lines are 10 s old or more, the requests' lines new; --since 7s leaves the CLI time to start.
    time.sleep(max(0.0, deployed + 10 - time.monotonic()))
    for _ in range(6):  # round-robin: some of them on each replica
        assert instance.get("/?mark=since-test").status == 200
    recent = instance.cli("app-logs", "site", "--since", "7s")
    assert recent.returncode == 0, recent.stderr
    assert recent.stdout.count("/?mark=since-test") == 6 and " line 1 " not in recent.stdout, recent.stdout
    assert len({line.partition("]")[0] for line in recent.stdout.splitlines()}) == 3  # every replica answered some
    wide = instance.cli("app-logs", "site", "--since", "10m")
    assert wide.returncode == 0 and wide.stdout.count("v1 line 1 ") == 3 and wide.stdout.count("since-test") == 6

    for arguments, expected in ((("app-logs", "nosuch"), "unknown app 'nosuch'"),
                                (("app-logs", "other"), "other has no live release (deploy it first)"),
                                (("app-logs", "site", "--since", "10x"), "--since '10x': give a duration like 30s"),
                                (("app-logs", "site", "--since", "-5m"), "--since '-5m': give a duration"),
                                (("app-logs", "site", "--tail", "many"), "'--tail'")):
        refused = instance.cli(*arguments)
        assert refused.returncode == 2 and refused.stdout == "", (arguments, refused)
        assert refused.stderr.count("\n") == 1 and expected in refused.stderr, (arguments, refused.stderr)


def test_follow_goes_on_with_the_new_release_after_a_deploy(instance):
    instance.configure({"site": {"replicas": 2}})
    assert instance.deploy("site", chatty_site("v1")).state is JobState.SUCCEEDED
    follower = subprocess.Popen([str(HOOKDEPLOY), "--config", str(instance.config_path), "app-logs", "site", "--follow"],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=environment())
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(iter(follower.stdout.readline, "")), daemon=True)
    reader.start()
    try:
        wait_for(lambda: sum(line.startswith("[replica ") and " v1 line 8 " in line for line in lines) == 2,
                 lines, "both v1 replicas' lines")
        second = instance.deploy("site", chatty_site("v2"))
        assert second.state is JobState.SUCCEEDED, second.error
        switched = f"hookdeploy: switched to release {second.sha[:12]} (job {second.id})\n"
        wait_for(lambda: sum(" v2 line 8 " in line for line in lines) == 2, lines, "both v2 replicas' lines")
        assert follower.poll() is None  # still following
    finally:
        follower.send_signal(signal.SIGINT)  # Ctrl-C: the way a follow ends
        follower.wait(10)
    assert follower.returncode == 0 and follower.stderr.read() == "", follower.returncode
    assert switched in lines, lines
    at = lines.index(switched)
    assert not any(" v2 " in line for line in lines[:at])  # nothing of v2 before it said so
    after = [line for line in lines[at + 1:] if LINE.match(line.rstrip("\n"))]
    assert {(LINE.match(line.rstrip())[1], LINE.match(line.rstrip())[2]) for line in after} == {("1", "v2"), ("2", "v2")}


def test_the_api_gives_the_lines_as_json_with_a_read_token(instance):
    instance.configure({"site": {"replicas": 3}, "other": {"hostnames": ["other.example"]}})
    assert instance.deploy("site", chatty_site("v1")).state is JobState.SUCCEEDED
    live = instance.store.live_release("site")
    port = int(instance.config.server.listen.rpartition(":")[2])
    read = {"Authorization": f"Bearer {tokens.issue(API_SECRET, instance.store, 'read')}"}
    with Server(instance.config_path, port, instance.root / "serve.log", env=SECRETS):
        status, answer, _ = request(port, "GET", "/api/apps/site/logs?tail=3", headers=read)
        assert status == 200, answer
        assert (answer["app"], answer["sha"], answer["job"]) == ("site", live.sha, live.job)
        sources = [line["source"] for line in answer["lines"]]
        assert sorted(set(sources)) == ["replica 1", "replica 2", "replica 3"] and len(sources) == 9
        assert all(set(line) == {"source", "line"} for line in answer["lines"])
        status, answer, _ = request(port, "GET", "/api/apps/site/logs?tail=1000", headers=read)
        assert status == 200, answer
        numbered = [LINE.match(f"[{line['source']}] {line['line']}") for line in answer["lines"]]
        assert {(match[1], match[3]) for match in numbered if match} == {(r, str(i)) for r in "123" for i in range(1, 9)}
        assert sum(line["line"] == "v1 colour \x1b[31mred\x1b[0m" for line in answer["lines"]) == 3  # JSON escapes it

        status, answer, headers = request(port, "GET", "/api/apps/site/logs")
        assert status == 401 and "WWW-Authenticate" in headers
        assert request(port, "GET", "/api/apps/site/logs", headers={"Authorization": "Bearer nonsense"})[0] == 401
        assert request(port, "GET", "/api/apps/site/logs?tail=lots", headers=read)[0] == 400
        assert request(port, "GET", "/api/apps/nosuch/logs", headers=read)[0] == 404
        status, answer, _ = request(port, "GET", "/api/apps/other/logs", headers=read)
        assert status == 404 and "other has no live release" in answer["error"], answer


def wait_for(condition, lines: list[str], what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"no {what} within {timeout} s: {lines}"
        time.sleep(0.1)
