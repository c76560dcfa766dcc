"""Cache that survives (issue 21, item 3), and proof that the serving host does not build.

`[build] cache = "local"` is the builder's own BuildKit cache: reused across commits, gone with the
builder's cache. `cache = "registry"` also keeps it at [registry] as URL/N/APP:buildcache, inline in
an image (the one cache export both docker CLI paths have with the engine's BuildKit), so a builder
whose cache is empty takes the unchanged steps from there.

Everything is real: the build host is the rig's nested dockerd reached over ssh (this module's own,
so its cache may be pruned: `docker builder prune -af` on it makes it a fresh builder; the shared
host engine is never pruned), the registry is docker-registry with htpasswd.
"""

from __future__ import annotations

import base64
import json
import os
import re
import secrets
import textwrap
import threading
import time
from pathlib import Path

import docker
import pytest

from docker_helpers import BASE_IMAGE, Instance, site_files
from hookdeploy.core.config import load
from hookdeploy.core.errors import ConfigError
from hookdeploy.core.models import JobState
from hookdeploy.engine import buildhost, buildkit
from registry_helpers import Registry

SLEEP = 6  # seconds the heavy step of the cache tests takes when it runs (and not when it is CACHED)
LOOPS = 2_000_000  # the CPU-heavy step: a busybox sh loop, about 3.5 CPU seconds here


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "deploy.toml"
    path.write_text(f'[server]\nstate_dir = "{tmp_path / "state"}"\n' + textwrap.dedent(text))
    return path


# -- the config, and what the CLI is told -------------------------------------------------------------------


@pytest.mark.parametrize("text, problem", [
    ('[build]\ncache = "registry"\n[apps.site]\nrepo = "/r"\n',
     'build.cache: "registry" needs a [registry] table (the build cache is kept there as URL/N/APP:buildcache)'),
    ('[build]\ncache = "s3"\n[apps.site]\nrepo = "/r"\n[registry]\nurl = "127.0.0.1:5000"\n',
     "build.cache: must be one of local, registry, not 's3'"),
    ('[build]\ncache = "registry"\nbuilder = "classic"\n[apps.site]\nrepo = "/r"\n[registry]\nurl = "127.0.0.1:5000"\n',
     'build.cache: "registry" needs [build] builder = "buildkit" (the classic builder has no cache import)'),
])
def test_a_bad_build_cache_is_one_line(tmp_path, text, problem):
    with pytest.raises(ConfigError) as raised:
        load(write(tmp_path, text))
    assert raised.value.problems == [problem]


def test_the_build_cache_is_local_unless_the_registry_keeps_it(tmp_path):
    from hookdeploy.engine import registry

    local = load(write(tmp_path, '[apps.site]\nrepo = "/r"\n[registry]\nurl = "127.0.0.1:5000"\n'))
    assert local.build.cache == "local" and registry.build_cache(local, local.apps["site"]) == ""
    kept = load(write(tmp_path, '[build]\ncache = "registry"\n[apps.site]\nrepo = "/r"\n'
                                '[registry]\nurl = "127.0.0.1:5000"\n'))
    assert registry.build_cache(kept, kept.apps["site"]) == f"127.0.0.1:5000/{kept.server.name}/site:buildcache"


def test_each_cli_path_is_told_to_take_the_cache_from_the_registry_and_keep_it_inline():
    legacy = buildkit.Client("/usr/bin/docker", "20.10.24")
    buildx = buildkit.Client("/usr/local/bin/docker", "27.1.1", buildx="v0.16.1")
    reference = "127.0.0.1:5000/n/site:buildcache"
    assert buildkit.cache_options(legacy, reference) == [
        "--build-arg", "BUILDKIT_INLINE_CACHE=1", "--cache-from", reference]
    assert buildkit.cache_options(buildx, reference) == [
        "--cache-to", "type=inline", "--cache-from", f"type=registry,ref={reference}"]


def test_a_builds_login_keeps_the_workers_own_docker_config_with_the_registrys_login_in_place(
        tmp_path, monkeypatch):
    own = tmp_path / "own-docker"
    (own / "cli-plugins").mkdir(parents=True)
    (own / "buildx").mkdir()
    (own / "config.json").write_text(json.dumps({
        "auths": {"ghcr.io": {"auth": "b3RoZXI6b25l"}, "127.0.0.1:5000": {"auth": "c3RhbGU6b2xk"}},
        "credsStore": "pass"}))
    monkeypatch.setenv("DOCKER_CONFIG", str(own))
    monkeypatch.setenv("REGISTRY_PASSWORD", "s3cret-pass")
    config = load(write(tmp_path, """\
        [build]
        cache = "registry"
        [apps.site]
        repo = "/r"
        [registry]
        url = "127.0.0.1:5000"
        username = "deploy"
        password_env = "REGISTRY_PASSWORD"
        """))
    with buildhost.login(config, build=True) as folder:
        settings = json.loads((Path(folder) / "config.json").read_text())
        assert base64.b64decode(settings["auths"]["127.0.0.1:5000"]["auth"]).decode() == "deploy:s3cret-pass"
        assert settings["auths"]["ghcr.io"] == {"auth": "b3RoZXI6b25l"}  # a private FROM still pulls
        assert settings["credHelpers"] == {"127.0.0.1:5000": ""}  # this file, not `pass`, for [registry]
        assert (Path(folder) / "cli-plugins").resolve() == own / "cli-plugins"  # a buildx installed there
        assert (Path(folder) / "buildx").resolve() == own / "buildx"
    assert not Path(folder).exists()
    with buildhost.login(config) as folder:  # a push's: [registry]'s login and nothing else
        assert list(json.loads((Path(folder) / "config.json").read_text())) == ["auths"]
        assert sorted(os.listdir(folder)) == ["config.json"]


# -- for real: a build host, the registry --------------------------------------------------------------------


def registry_table(registry: Registry) -> str:
    return (f'[registry]\nurl = "{registry.url}"\nusername = "{registry.username}"\n'
            'password_env = "REGISTRY_PASSWORD"\ninsecure = true\n')


@pytest.fixture
def remote(instance, registry, build_host, monkeypatch):
    """An instance building on the build host over ssh, with `cache` ("local" or "registry")."""
    monkeypatch.setenv("PATH", build_host.path())
    monkeypatch.setenv("REGISTRY_PASSWORD", registry.password)
    build_host.forward(registry.port)

    def configure(cache: str, host: str | None = build_host.ssh_url) -> Instance:
        where = f'host = "{host}"\n' if host else ""
        instance.configure({"site": {}}, extra=f'[build]\n{where}cache = "{cache}"\n' + registry_table(registry))
        return instance

    yield configure
    build_host.end_forwards()
    registry.remove_local_tags(instance.client)


def heavy_site(version: str, marker: str, step: str) -> dict[str, str]:
    """The test site with a heavy RUN step before the static files: unchanged when only they change."""
    return site_files(version, extra={"Dockerfile": f"FROM {BASE_IMAGE}\nRUN {step}  # {marker}\n"
                                                    "COPY site/ /usr/share/nginx/html/\n"})


def sleepy_site(version: str, marker: str) -> dict[str, str]:
    return heavy_site(version, marker, f"sleep {SLEEP} && echo heavy > /heavy")


def heavy_step(events: list[str], marker: str) -> str:
    """How the job log shows the heavy step ended: "CACHED" or "DONE" (plain progress: `#N CACHED`)."""
    numbers = {found.group(1) for line in events if (found := re.match(r"#(\d+) \[.*\] RUN .*" + marker, line))}
    assert len(numbers) == 1, events
    number = numbers.pop()
    ends = [line.split()[1] for line in events if re.match(rf"#{number} (CACHED|DONE|ERROR)\b", line)]
    assert len(ends) == 1, events
    return ends[0]


def build_seconds(instance: Instance, job) -> float:
    """The "built" step's duration (for a build host: the build and the push from there)."""
    steps = [event for event in instance.store.events(job.id) if event.message.startswith("built ")]
    assert len(steps) == 1 and steps[0].duration is not None
    return steps[0].duration


def cache_tags_here(instance: Instance, registry: Registry) -> list[str]:
    """URL/N/site:buildcache tags on the serving engine (listed without inspecting each image: the shared
    engine's images come and go as others test)."""
    images = instance.client.api.images(name=f"{registry.url}/{instance.name}/site")
    return [tag for image in images for tag in image.get("RepoTags") or [] if tag.endswith(":buildcache")]


def fresh(build_host) -> None:
    """The build host's BuildKit cache emptied: a builder that never built this app."""
    build_host.docker("builder", "prune", "-af")
    assert build_host.build_cache_records() == 0


def test_the_builders_own_cache_is_reused_across_commits_and_not_kept_elsewhere(remote, registry, build_host):
    instance = remote("local")
    marker = f"hd-sleep-{secrets.token_hex(4)}"
    first = instance.deploy("site", sleepy_site("v1", marker))
    assert first.state is JobState.SUCCEEDED, instance.events(first.id)
    assert heavy_step(instance.events(first.id), marker) == "DONE"
    assert build_seconds(instance, first) >= SLEEP

    second = instance.deploy("site", sleepy_site("v2", marker))  # a static file changed, nothing else
    assert second.state is JobState.SUCCEEDED, instance.events(second.id)
    assert heavy_step(instance.events(second.id), marker) == "CACHED"
    assert build_seconds(instance, second) < SLEEP
    assert "v2" in instance.get().body
    assert "buildcache" not in registry.tags(f"{instance.name}/site")  # "local": the registry keeps none

    fresh(build_host)
    print(f"build and push on the build host: {build_seconds(instance, first):.2f} s first, "
          f"{build_seconds(instance, second):.2f} s for a static change (own cache)")
    third = instance.deploy("site", sleepy_site("v3", marker))
    assert third.state is JobState.SUCCEEDED, instance.events(third.id)
    assert heavy_step(instance.events(third.id), marker) == "DONE"  # built again: the cache went with the builder
    assert build_seconds(instance, third) >= SLEEP


def test_with_the_registry_cache_a_fresh_builder_takes_the_unchanged_steps_from_the_registry(
        remote, registry, build_host):
    instance = remote("registry")
    marker = f"hd-sleep-{secrets.token_hex(4)}"
    repository = f"{instance.name}/site"
    cache = f"{registry.url}/{repository}:buildcache"
    first = instance.deploy("site", sleepy_site("v1", marker))
    events = instance.events(first.id)
    assert first.state is JobState.SUCCEEDED, events
    assert heavy_step(events, marker) == "DONE"
    assert f"pushing {cache} from {build_host.ssh_url}" in events
    assert registry.tags(repository) == sorted([first.sha[:12], "buildcache"])
    # The cache is the release's own image: its config carries BuildKit's cache (inline).
    assert registry.manifest_digest(repository, "buildcache") == first.digest
    first_seconds = build_seconds(instance, first)
    assert first_seconds >= SLEEP

    fresh(build_host)
    second = instance.deploy("site", sleepy_site("v2", marker))
    events = instance.events(second.id)
    assert second.state is JobState.SUCCEEDED, events
    assert any(line.endswith(f"importing cache manifest from {cache}") for line in events), events
    assert heavy_step(events, marker) == "CACHED"
    second_seconds = build_seconds(instance, second)
    print(f"build and push on the build host: {first_seconds:.2f} s with an empty cache, "
          f"{second_seconds:.2f} s on a fresh builder with the registry's cache")
    assert second_seconds < first_seconds - SLEEP / 2, (first_seconds, second_seconds)
    assert "v2" in instance.get().body
    assert registry.manifest_digest(repository, "buildcache") == second.digest  # the newest build's cache

    # The login reached the build through the CLI for this build only: nothing of it stays anywhere.
    assert registry.password not in "\n".join(events)
    assert registry.url not in build_host.exec("sh", "-c", "cat /root/.docker/config.json 2>/dev/null || true")
    assert build_host.docker("image", "ls", "-q", f"{registry.url}/{repository}") == ""  # no tag left there
    assert not cache_tags_here(instance, registry)


def test_the_registry_cache_of_a_build_on_the_serving_engine(remote, registry):
    """Built here (no build host): the image is pushed as URL/N/APP:buildcache, the next build imports it.
    (The shared engine's cache is not pruned here: the fresh builder is the build host's test above.)"""
    instance = remote("registry", host=None)
    marker = f"hd-here-{secrets.token_hex(4)}"
    repository = f"{instance.name}/site"
    cache = f"{registry.url}/{repository}:buildcache"
    first = instance.deploy("site", heavy_site("v1", marker, "echo heavy > /heavy"))
    events = instance.events(first.id)
    assert first.state is JobState.SUCCEEDED, events
    assert f"pushing build cache {cache}" in events
    assert registry.tags(repository) == ["buildcache"]  # the app does not push its releases: only the cache
    manifest = registry.request("GET", f"/v2/{repository}/manifests/buildcache",
                                {"Accept": "application/vnd.docker.distribution.manifest.v2+json"}).json()
    image_config = registry.request("GET", f"/v2/{repository}/blobs/{manifest['config']['digest']}").json()
    assert "moby.buildkit.cache.v0" in image_config  # BuildKit's inline cache
    assert not cache_tags_here(instance, registry)

    second = instance.deploy("site", heavy_site("v2", marker, "echo heavy > /heavy"))
    events = instance.events(second.id)
    assert second.state is JobState.SUCCEEDED, events
    assert any(line.endswith(f"importing cache manifest from {cache}") for line in events), events
    assert heavy_step(events, marker) == "CACHED"
    assert registry.password not in "\n".join(events)


def test_a_registry_that_does_not_answer_costs_the_cache_not_the_deploy(remote, registry):
    """Built here with cache = "registry" while the registry is down: the import is skipped by BuildKit,
    the cache push is a line of the log, the release goes live."""
    instance = remote("registry", host=None)
    registry.stop()
    job = instance.deploy("site", site_files("no-registry"))
    events = instance.events(job.id)
    assert job.state is JobState.SUCCEEDED, events
    assert any(line.startswith(f"build cache not pushed: push to {registry.url} failed") for line in events), events
    assert "no-registry" in instance.get().body
    assert not cache_tags_here(instance, registry)


# -- the serving host does not build --------------------------------------------------------------------------


CPUACCT = Path("/sys/fs/cgroup/cpuacct")


def cpu_seconds(*cgroups: str) -> float:
    """CPU time the kernel accounted to these cgroups (v1 cpuacct.usage, nanoseconds; children included);
    one not made yet (a nested engine's --cgroup-parent, before its first build) has had none."""
    total = 0
    for cgroup in cgroups:
        usage = CPUACCT / cgroup.lstrip("/") / "cpuacct.usage"
        total += int(usage.read_text()) if usage.exists() else 0
    return total / 1e9


def cgroups_running(marker: str) -> set[str]:
    """The cpuacct cgroup of each process on this machine whose command line holds `marker`."""
    found = set()
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            if marker.encode() not in Path(f"/proc/{pid}/cmdline").read_bytes():
                continue
            for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines():
                number, controllers, path = line.split(":", 2)
                if "cpuacct" in controllers.split(","):
                    found.add(path)
        except (OSError, ValueError):
            continue  # ended meanwhile
    return found


def test_a_build_on_the_build_host_spends_its_cpu_there_and_none_on_the_serving_engine(
        remote, registry, build_host, docker_engine):
    """What runs the CPU-heavy RUN step is watched as it runs: every process of it is in the build
    host's cgroups (its nested engine's BuildKit), none in the serving engine's (docker/buildkit), the
    build host's CPU accounting grows by at least the work the step reports it did, and only the build
    host's BuildKit cache has a record of the step. (Others may build on the shared engine meanwhile,
    so the serving engine is judged by this step's own processes and cache records, not its totals.)"""
    if not (CPUACCT / "docker" / "cpuacct.usage").exists():
        pytest.fail("no cgroup v1 cpuacct accounting of the engine's containers at /sys/fs/cgroup/cpuacct/docker")
    instance = remote("local")
    marker = f"hd-cpu-{secrets.token_hex(4)}"
    # The marker is in the loop's own command line too: the outer sh may exec the inner one.
    step = (f"sh -c ': {marker}; i=0; while [ $i -lt {LOOPS} ]; do i=$((i+1)); done; "
            "echo cpu-ticks: $(cut -d\" \" -f14,15 /proc/$$/stat)'")
    full_id = docker_engine.containers.get(build_host.name).id
    builder_cgroups = (f"docker/{full_id}", build_host.name)  # the container, and its nested engine's --cgroup-parent
    seen: set[str] = set()
    done = threading.Event()

    def watch() -> None:
        while not done.is_set():
            seen.update(cgroups_running(marker))
            time.sleep(0.1)

    watcher = threading.Thread(target=watch, daemon=True)
    before, serving_before = cpu_seconds(*builder_cgroups), cpu_seconds("docker/buildkit")
    watcher.start()
    try:
        job = instance.deploy("site", heavy_site("cpu", marker, step))
    finally:
        done.set()
        watcher.join(5)
    used = cpu_seconds(*builder_cgroups) - before
    serving_used = cpu_seconds("docker/buildkit") - serving_before  # shown only: others may build there now
    events = instance.events(job.id)
    assert job.state is JobState.SUCCEEDED, events
    ticks = next(found for line in events if (found := re.search(r"cpu-ticks: (\d+) (\d+)", line)))
    work = (int(ticks.group(1)) + int(ticks.group(2))) / os.sysconf("SC_CLK_TCK")
    print(f"RUN step's own CPU: {work:.2f} s; build host's cgroups grew by {used:.2f} s; "
          f"the serving engine's BuildKit cgroup (anyone's builds) by {serving_used:.2f} s; "
          f"processes of the step seen in {sorted(seen)}")
    assert work >= 2, events  # seconds of busy work
    assert used >= 0.9 * work
    assert seen, "no process of the build step was seen running"
    assert all(cgroup.startswith(f"/{build_host.name}/") for cgroup in seen), seen
    assert not any(cgroup.startswith("/docker/buildkit") for cgroup in seen), seen
    def records(client) -> list[dict]:
        return [record for record in client.df().get("BuildCache") or [] if marker in (record.get("Description") or "")]

    assert not records(docker_engine)
    builder = docker.DockerClient(base_url=build_host.tcp_url, timeout=60)
    try:
        assert records(builder)
    finally:
        builder.close()
