"""Time from `git push` to the new release answering through the proxy, against the floor, with BuildKit.

Every case runs its baseline in the same process, on the same engine, with the same site, and
prints medians of --rounds rounds and the ratio. "push -> live" is a real `git push` to the bare
repo with hookdeploy's post-receive hook, the worker already running, until the proxy answers with
the new release (polled every 5 ms).

  local      push -> live (BuildKit on this engine, the default builder) vs the BuildKit floor:
             `DOCKER_BUILDKIT=1 docker build` of the same context through the same docker CLI
             hookdeploy finds, `docker run`, first healthy answer. Goal <= 1.3x and <= 0.2 s over.
             Also a rollback to a kept image (goal < 2 s) and where the time of a push goes
             (the job's own step timings from the store).
  buildhost  push -> live with [build] host = ssh://... (the rig of tests/buildhost_helpers.py: a
             nested dockerd with sshd, and a real registry with htpasswd) vs the floor: build on the
             build host + push to the registry from there + pull here by digest + run + healthy.
             Goal <= 1.3x.
  cpu        the serving host's CPU seconds while a commit with a CPU-heavy RUN step goes live,
             built here vs on the build host. Counted from /proc (utime+stime of each process plus
             cutime+cstime, what its reaped children used): the host engine's process tree (dockerd,
             its containerd, and BuildKit's RUN steps, which dockerd runs through runc as its own
             children) and the worker's tree (the worker and the docker CLI, ssh and git it runs).
             Containers run by containerd-shim (the proxy, the releases, and the build host's
             container) are no part of it. The build host's own tree (its dockerd and RUN steps,
             from its container's init) is printed beside it, and so is what the engine spent with
             no push of ours (its rate over a few idle seconds before the push, times the push's
             time): the engine is shared with whatever else runs on the machine.
  cache      a first build vs a second one of a commit that changes only a static file, the
             Dockerfile doing `COPY . /src` and then a heavy step (--heavy-mb of sha256) under
             `RUN --mount=type=cache`, keyed by the app's sources: the static change re-runs the
             step (its layer is invalidated) but the cache mount still holds the result.

    .venv/bin/python bench/push_to_live.py [--case local|buildhost|cpu|cache|all] [--rounds 5]

Needs scripts/ensure-docker.sh (engine, base image) and, for buildhost and cpu, scripts/ensure-tools.sh
(ssh, openssl, docker-registry, htpasswd, debootstrap for the build host's image) and root.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import http.client
import json
import os
import re
import secrets
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Iterator

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(1, str(Path(__file__).resolve().parent.parent / "tests"))
from harness import BASE_IMAGE, Instance, remove_by_label  # noqa: E402

import docker  # noqa: E402

from hookdeploy.engine import buildkit  # noqa: E402

CASES = ("local", "buildhost", "cpu", "cache")
PASSWORD_ENV = "HOOKDEPLOY_BENCH_REGISTRY_PASSWORD"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


# -- the floors -------------------------------------------------------------------------------------------


def cli_build(cli: buildkit.Client, context: Path, tag: str, label: dict[str, str],
              engine_options: list[str] | None = None, env: dict[str, str] | None = None) -> str:
    """`DOCKER_BUILDKIT=1 docker build` (or buildx) of `context` through `cli`; the image id."""
    handle, iidfile = tempfile.mkstemp(prefix="hookdeploy-bench-iid-")
    os.close(handle)
    command = cli.command()
    labels = [option for key, value in label.items() for option in ("--label", f"{key}={value}")]
    arguments = [command[0], *(engine_options or []), *command[1:], "--progress=plain", "--iidfile", iidfile,
                 "--tag", tag, *labels, str(context)]
    try:
        subprocess.run(arguments, check=True, capture_output=True, stdin=subprocess.DEVNULL,
                       env={**buildkit.environment(bool(engine_options)), **(env or {})})
        return Path(iidfile).read_text().strip()
    except subprocess.CalledProcessError as error:
        raise RuntimeError(f"floor build failed: {error.stdout.decode(errors='replace')[-2000:]}") from None
    finally:
        Path(iidfile).unlink(missing_ok=True)


def run_until_healthy(client: docker.DockerClient, image: str, label: dict[str, str]) -> None:
    """`docker run` detached, then poll its address every 5 ms until it answers 200."""
    container = client.containers.run(image, detach=True, labels=label)
    container.reload()
    ip = container.attrs["NetworkSettings"]["IPAddress"]
    try:
        while status_of(ip) != 200:
            time.sleep(0.005)
    finally:
        container.remove(force=True)


def status_of(ip: str) -> int | None:
    connection = http.client.HTTPConnection(ip, 80, timeout=1)
    try:
        connection.request("GET", "/")
        return connection.getresponse().status
    except OSError:
        return None
    finally:
        connection.close()


def context_of(instance: Instance) -> Path:
    """The committed tree of `instance`'s work clone, in a folder of its own (made before the clock starts)."""
    context = Path(tempfile.mkdtemp(prefix="hookdeploy-floor-"))
    archive = subprocess.run(["git", "archive", "HEAD"], cwd=instance.work, check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(context)], input=archive, check=True)
    return context


def local_floor(instance: Instance, client: docker.DockerClient, cli: buildkit.Client,
                profile: list | None = None) -> float:
    """BuildKit build + container start + first healthy answer, for a fresh version of the site."""
    instance.commit()
    context = context_of(instance)
    label = {"hookdeploy.bench": instance.name}
    try:
        started = time.monotonic()
        image = cli_build(cli, context, f"{instance.name}-floor:{instance.versions}", label)
        built = time.monotonic()
        run_until_healthy(client, image, label)
        if profile is not None:
            profile.append({"build": built - started, "run + healthy": time.monotonic() - built})
        return time.monotonic() - started
    finally:
        shutil.rmtree(context)


# -- push -> live, and where its time goes ----------------------------------------------------------------

PUSHED: list[str] = []  # releases in the order they went live


def push_to_live(instance: Instance, profile: list | None = None) -> float:
    sha = instance.commit()
    PUSHED.append(sha)
    wall, started = time.time(), time.monotonic()
    pusher = instance.push(wait=False)
    live = instance.wait_for_release(sha)
    pusher.wait()
    if profile is not None:
        profile.append(timeline(instance, sha, wall, live - started))
    return live - started


def rollback(instance: Instance) -> float:
    previous = PUSHED[-2]  # the release that was live before the current one
    PUSHED.append(previous)
    started = time.monotonic()
    instance.cli("rollback", "site")
    live = instance.wait_for_release(previous)
    return live - started


def timeline(instance: Instance, sha: str, wall: float, total: float) -> dict[str, float]:
    """Where one push's time went, from the store: the push and hook until the job is queued, the worker's
    pickup, each timed step of the job until its `live:` event (in order; time between two steps counted
    apart), and the proxy's first answer with the release after that event (negative: before it)."""
    with contextlib.closing(sqlite3.connect(instance.root / "state" / "hookdeploy.db")) as db:
        job, created, started = db.execute(
            "SELECT id, created_at, started_at FROM jobs WHERE sha = ? ORDER BY id DESC LIMIT 1", (sha,)).fetchone()
        steps = db.execute("SELECT message, duration, at FROM events WHERE job = ? AND kind = 'step' ORDER BY id",
                           (job,)).fetchall()
    parts = {"git push + hook until queued": seconds(created) - wall,
             "worker picks the job up": seconds(started) - seconds(created)}
    last = seconds(started)
    for message, duration, at in steps:
        if message.startswith("live: "):
            parts["between steps"] = parts.get("between steps", 0.0) + seconds(at) - last
            parts["proxy answers after `live:`"] = total - (seconds(at) - wall)
            break
        if duration is None:
            continue
        name = " ".join(word.rstrip(":") for word in message.split()[:2] if not re.search(r"[0-9/]", word))
        parts["between steps"] = parts.get("between steps", 0.0) + max(0.0, seconds(at) - duration - last)
        parts[name] = parts.get(name, 0.0) + duration
        last = seconds(at)
    return parts


def seconds(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def print_profile(title: str, profile: list[dict[str, float]]) -> None:
    print(f"\n{title} (median of {len(profile)} pushes, s):")
    names = list(dict.fromkeys(name for row in profile for name in row))
    for name in names:
        values = [row[name] for row in profile if name in row]
        print(f"  {name:<40}{statistics.median(values):>7.3f}")


# -- the build host and its registry ----------------------------------------------------------------------


class Rig:
    """The build host of tests/buildhost_helpers.py (nested dockerd + sshd) and a real registry it pushes to."""

    def __init__(self, root: Path, ssh_mux: bool = False):
        from buildhost_helpers import _started  # noqa: PLC0415 - only cases that need the rig load pytest's helpers
        from registry_helpers import Registry, registry_problem  # noqa: PLC0415
        problem = registry_problem()
        if problem:
            raise SystemExit(problem)
        self.registry = Registry(root / "registry")
        self.registry.start()
        try:
            self.host = _started(root / "buildhost", tls=False)
        except BaseException as error:
            self.registry.stop()
            if type(error).__module__.startswith("_pytest"):  # the rig's "skip": root or a program missing
                raise SystemExit(f"no build host rig: {error}") from None
            raise
        self.host.forward(self.registry.port)
        if ssh_mux:  # Docker's "SSH tips": one ssh connection for the docker commands of a job, kept a minute
            with open(self.host.ssh_config, "a") as config:  # after the forward, which stays a connection of its own
                config.write(f"  ControlMaster auto\n  ControlPath {root}/cm-%C\n  ControlPersist 60\n")
        self.env = {"PATH": self.host.path(), PASSWORD_ENV: self.registry.password}
        self.mux = ssh_mux

    def config(self) -> str:
        registry = self.registry
        return (f'[build]\nhost = "{self.host.ssh_url}"\n[registry]\nurl = "{registry.url}"\n'
                f'username = "{registry.username}"\npassword_env = "{PASSWORD_ENV}"\ninsecure = true\n')

    def cpu_seconds(self) -> float:
        """CPU seconds of everything in the build host's container (its init's process tree)."""
        pid = int(subprocess.run(["docker", "inspect", "--format", "{{.State.Pid}}", self.host.name],
                                 check=True, capture_output=True, text=True).stdout)
        return tree_cpu([pid])

    @contextlib.contextmanager
    def login(self) -> Iterator[str]:
        """A DOCKER_CONFIG folder with the registry's login, for the floor's push."""
        folder = tempfile.mkdtemp(prefix="hookdeploy-bench-login-")
        token = base64.b64encode(f"{self.registry.username}:{self.registry.password}".encode()).decode()
        (Path(folder) / "config.json").write_text(json.dumps({"auths": {self.registry.url: {"auth": token}}}))
        try:
            yield folder
        finally:
            shutil.rmtree(folder, ignore_errors=True)

    def close(self, client: docker.DockerClient) -> None:
        self.host.remove()
        self.registry.remove_local_tags(client)
        self.registry.stop()


def remote_floor(instance: Instance, client: docker.DockerClient, cli: buildkit.Client, rig: Rig,
                 profile: list | None = None) -> float:
    """Build on the build host, push from there, pull here by digest, run, first healthy answer."""
    instance.commit()
    context = context_of(instance)
    label = {"hookdeploy.bench": instance.name}
    tag = rig.registry.image(f"floor/{instance.name}", f"v{instance.versions}")
    host = ["--host", rig.host.ssh_url]
    env = {"PATH": rig.host.path()}
    try:
        marks = [time.monotonic()]
        started = marks[0]
        cli_build(cli, context, tag, label, engine_options=host, env=env)
        marks.append(time.monotonic())
        with rig.login() as docker_config:
            pushed = subprocess.run([cli.path, *host, "push", tag], check=True, capture_output=True, text=True,
                                    env={**buildkit.environment(elsewhere=True), **env, "DOCKER_CONFIG": docker_config})
        digest = re.search(r"digest: (sha256:[0-9a-f]{64})", pushed.stdout).group(1)
        marks.append(time.monotonic())
        repository = tag.rpartition(":")[0]
        image = client.images.pull(repository, tag=digest, auth_config=rig.registry.auth_config)
        marks.append(time.monotonic())
        run_until_healthy(client, image.id, label)
        marks.append(time.monotonic())
        took = time.monotonic() - started
        if profile is not None:
            profile.append(dict(zip(("build there", "push from there", "pull here", "run + healthy"),
                                    (after - before for before, after in zip(marks, marks[1:])))))
        client.images.remove(image.id, force=True)
        subprocess.run([cli.path, *host, "image", "rm", tag], capture_output=True,
                       env={**buildkit.environment(elsewhere=True), **env})
        return took
    finally:
        shutil.rmtree(context)


# -- CPU seconds from /proc -------------------------------------------------------------------------------


def processes() -> dict[int, tuple[int, float]]:
    """pid -> (ppid, CPU seconds of it and its reaped children) for every process now."""
    table = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            text = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue  # gone meanwhile
        fields = text[text.rindex(")") + 2:].split()  # after "pid (comm) "
        ppid = int(fields[1])
        utime, stime, cutime, cstime = (int(value) for value in fields[11:15])
        table[int(entry)] = (ppid, (utime + stime + cutime + cstime) / CLOCK_TICKS)
    return table


def tree_cpu(roots: list[int]) -> float:
    """CPU seconds of `roots` and all their descendants alive now, each with its reaped children."""
    table = processes()
    children: dict[int, list[int]] = {}
    for pid, (ppid, _) in table.items():
        children.setdefault(ppid, []).append(pid)
    total, todo, seen = 0.0, [pid for pid in roots if pid in table], set()
    while todo:
        pid = todo.pop()
        if pid in seen:
            continue
        seen.add(pid)
        total += table[pid][1]
        todo += children.get(pid, [])
    return total


def engine_pid() -> int:
    return int(Path("/var/run/docker.pid").read_text())


# -- the cases --------------------------------------------------------------------------------------------


def case_local(client: docker.DockerClient, cli: buildkit.Client, rounds: int) -> None:
    instance = Instance(drain_seconds=0.2)
    floors, ours, profile, floor_profile, rollbacks = [], [], [], [], []
    try:
        instance.start_worker()
        push_to_live(instance)  # the first deploy creates the network and proxy: not measured
        local_floor(instance, client, cli)  # warm the floor's side too
        for _ in range(rounds):
            floors.append(local_floor(instance, client, cli, floor_profile))
            ours.append(push_to_live(instance, profile))
            time.sleep(0.5)  # let the drain of the previous release end
        for _ in range(2):
            rollbacks.append(rollback(instance))
            time.sleep(0.5)
            push_to_live(instance)  # forward again, so the next rollback has a target
            time.sleep(0.5)
    finally:
        instance.close()
        remove_by_label(f"hookdeploy.bench={instance.name}")
    print(f"\n== local: BuildKit on this engine, through {cli.describe()}")
    table((("floor: BuildKit build + run + healthy", floors), ("hookdeploy: git push -> live", ours),
           ("hookdeploy: rollback -> live", rollbacks)))
    verdict(statistics.median(ours), statistics.median(floors), ratio_goal=1.3, over_goal=0.2)
    print(f"rollback median {statistics.median(rollbacks):.2f} s (goal < 2 s)")
    print_profile("the floor's parts", floor_profile)
    print_profile("where a push's time goes", profile)


def case_buildhost(client: docker.DockerClient, cli: buildkit.Client, rounds: int, rig: Rig) -> None:
    instance = Instance(drain_seconds=0.2, extra=rig.config(), env=rig.env)
    floors, ours, profile, floor_profile = [], [], [], []
    try:
        instance.start_worker()
        push_to_live(instance)  # network, proxy, the build host's cache of the base: not measured
        remote_floor(instance, client, cli, rig)
        for _ in range(rounds):
            floors.append(remote_floor(instance, client, cli, rig, floor_profile))
            ours.append(push_to_live(instance, profile))
            time.sleep(0.5)
    finally:
        instance.close()
        remove_by_label(f"hookdeploy.bench={instance.name}")
        rig.registry.remove_local_tags(client)
    print(f"\n== buildhost: BuildKit on {rig.host.ssh_url} (a nested dockerd with sshd), registry {rig.registry.url}"
          + (", ssh ControlMaster" if rig.mux else ""))
    table((("floor: build there + push + pull + run + healthy", floors), ("hookdeploy: git push -> live", ours)))
    verdict(statistics.median(ours), statistics.median(floors), ratio_goal=1.3)
    print_profile("the floor's parts", floor_profile)
    print_profile("where a push's time goes", profile)


HEAVY = "RUN echo {salt} >/dev/null && head -c {bytes} /dev/zero | sha256sum\n"


IDLE_SECONDS = 3.0  # how long the engine's CPU is watched with no push of ours, before each push


def case_cpu(rounds: int, heavy_mb: int, rig: Rig) -> None:
    results = {}
    for where, extra, env in (("local", "", None), ("build host", rig.config(), rig.env)):
        instance = Instance(drain_seconds=0.2, extra=extra, env=env)
        rows = []
        try:
            instance.start_worker()
            push_to_live(instance)
            for _ in range(rounds):
                # A heavy step no cache can skip (a new salt each commit), before the page is copied.
                (instance.work / "Dockerfile").write_text(
                    f"FROM {BASE_IMAGE}\n" + HEAVY.format(salt=secrets.token_hex(8), bytes=heavy_mb << 20) +
                    "COPY index.html /usr/share/nginx/html/index.html\n")
                time.sleep(0.5)  # the previous round's drain and retire end first
                # The engine is shared (other tests build and run on it too): its CPU with no push of ours.
                idle = tree_cpu([engine_pid()])
                time.sleep(IDLE_SECONDS)
                idle = (tree_cpu([engine_pid()]) - idle) / IDLE_SECONDS
                engine, worker, there = tree_cpu([engine_pid()]), tree_cpu([instance.worker.pid]), rig.cpu_seconds()
                took = push_to_live(instance)
                time.sleep(0.3)  # the engine reaps what the build ran
                rows.append((took, tree_cpu([engine_pid()]) - engine, tree_cpu([instance.worker.pid]) - worker,
                             idle * took, rig.cpu_seconds() - there))
        finally:
            instance.close()
            remove_by_label(f"hookdeploy.bench={instance.name}")
        results[where] = rows
    print(f"\n== cpu: a commit whose Dockerfile has RUN ... head -c {heavy_mb} MB of /dev/zero | sha256sum (never cached);"
          " CPU seconds while it goes live, medians")
    print(f"{'built':<12}{'push->live s':>13}{'engine tree':>13}{'others (idle)':>15}{'worker tree':>13}"
          f"{'serving host':>14}{'build host':>12}{'n':>4}")
    serving = {}
    for where, rows in results.items():
        took, engine, worker, idle, there = (statistics.median(column) for column in zip(*rows))
        serving[where] = statistics.median(row[1] - row[3] + row[2] for row in rows)  # ours: engine - others + worker
        print(f"{where:<12}{took:>13.2f}{engine:>13.2f}{idle:>15.2f}{worker:>13.2f}{serving[where]:>14.2f}"
              f"{there:>12.2f}{len(rows):>4}")
    local, remote = serving["local"], serving["build host"]
    print(f"serving host CPU (engine tree - others + worker tree) with a build host / built here = {remote / local:.2f}x "
          f"({local - remote:.2f} s of CPU kept off the serving host per build)")


def case_cache(rounds: int, heavy_mb: int) -> None:
    firsts, seconds_, heavy_alone = [], [], []
    instance = Instance(drain_seconds=0.2)
    try:
        instance.start_worker()
        push_to_live(instance)
        for _ in range(rounds):
            salt = secrets.token_hex(6)  # a cache of its own each round: the first build is cold
            (instance.work / "app").mkdir(exist_ok=True)
            (instance.work / "app" / "main.src").write_text(f"source {salt}\n")
            (instance.work / "Dockerfile").write_text(
                f"FROM {BASE_IMAGE}\nCOPY . /src\n"
                f"RUN --mount=type=cache,id=hookdeploy-bench-{salt},target=/cache \\\n"
                "    key=$(cat /src/app/* | sha256sum | cut -c1-16) && \\\n"
                f"    {{ [ -f /cache/$key ] || head -c {heavy_mb << 20} /dev/zero | sha256sum > /cache/$key; }} && \\\n"
                "    cp /cache/$key /built\n"
                "RUN cp /src/index.html /usr/share/nginx/html/index.html\n")
            time.sleep(0.3)
            firsts.append(push_to_live(instance))  # index.html, app/ and the Dockerfile new: the heavy step runs
            time.sleep(0.5)
            seconds_.append(push_to_live(instance))  # index.html alone changed: the step runs, the cache has it
            time.sleep(0.5)
        started = time.monotonic()
        subprocess.run(["docker", "run", "--rm", BASE_IMAGE, "sh", "-c",
                        f"head -c {heavy_mb << 20} /dev/zero | sha256sum"], check=True, capture_output=True)
        heavy_alone.append(time.monotonic() - started)
    finally:
        instance.close()
        remove_by_label(f"hookdeploy.bench={instance.name}")
    print(f"\n== cache: COPY . /src, then RUN --mount=type=cache of {heavy_mb} MB of sha256 keyed by app/;"
          " the second commit changes index.html only")
    table((("first build: push -> live", firsts), ("second build: push -> live", seconds_),
           ("the heavy step alone (docker run)", heavy_alone)))
    first, second = statistics.median(firsts), statistics.median(seconds_)
    print(f"second / first = {second / first:.2f}x ({first - second:.2f} s saved by the cache mount)")


def table(rows) -> None:
    print(f"{'measure':<50}{'median s':>9}{'min s':>8}{'max s':>8}{'n':>4}")
    for name, values in rows:
        print(f"{name:<50}{statistics.median(values):>9.2f}{min(values):>8.2f}{max(values):>8.2f}{len(values):>4}")


def verdict(ours: float, floor: float, ratio_goal: float, over_goal: float | None = None) -> None:
    goals = f"goal <= {ratio_goal}x" + (f" and <= {over_goal} s over" if over_goal is not None else "")
    print(f"push-to-live / floor = {ours / floor:.2f}x; overhead {ours - floor:.2f} s ({goals})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--case", choices=(*CASES, "all"), default="all")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--heavy-mb", type=int, default=300, help="MB of sha256 in the heavy RUN step (busybox: ~100 MB per CPU second)")
    parser.add_argument("--ssh-mux", action="store_true",
                        help="the build host's ssh with ControlMaster/ControlPersist (Docker's SSH tips)")
    options = parser.parse_args()
    if os.environ.pop("PYTHONDONTWRITEBYTECODE", None):
        # Set where this bench was written: every hook would compile hookdeploy's sources again (~40 ms of
        # each push), which an installed hookdeploy never does. Its bytecode goes to a folder of this run.
        os.environ["PYTHONPYCACHEPREFIX"] = tempfile.mkdtemp(prefix="hookdeploy-bench-pycache-")
        print("PYTHONDONTWRITEBYTECODE unset for the hook and worker (bytecode kept in "
              f"{os.environ['PYTHONPYCACHEPREFIX']}), as in an installed hookdeploy")
    cases = CASES if options.case == "all" else (options.case,)
    client = docker.from_env()
    found = buildkit.discover()
    if found.client is None:
        raise SystemExit(found.problem())
    cli = found.client
    rig = None
    try:
        if {"buildhost", "cpu"} & set(cases):
            rig = Rig(Path(tempfile.mkdtemp(prefix="hookdeploy-bench-rig-")), ssh_mux=options.ssh_mux)
        for case in cases:
            if case == "local":
                case_local(client, cli, options.rounds)
            elif case == "buildhost":
                case_buildhost(client, cli, options.rounds, rig)
            elif case == "cpu":
                case_cpu(options.rounds, options.heavy_mb, rig)
            else:
                case_cache(options.rounds, options.heavy_mb)
            sys.stdout.flush()
    finally:
        if rig is not None:
            rig.close(client)


if __name__ == "__main__":
    main()
