"""An app's volumes, release command and limits in deploy.toml (issue 22, items 1, 2 and 5), without
Docker: a mount that would hand a container the host (/, the Docker socket, state_dir) or that is
not absolute is refused in one line naming the app, the entry and why, with nothing queued; what
is accepted becomes the docker SDK options every container (and Swarm task) of the app gets.
"""

from __future__ import annotations

import pytest
from docker.types import Resources

from conftest import fake_sha
from hookdeploy.core.config import load
from hookdeploy.core.volumes import Mount, memory_bytes
from hookdeploy.engine import runspec

SOCKET = "the host path is the Docker socket (a container with it controls the host)"
HOLDS_SOCKET = "the host path holds the Docker socket (a container with it controls the host)"
RELATIVE = "a relative host path; write the host folder as an absolute path (/srv/...)"
UNDER_STATE = "the host path is under server.state_dir (the job store and proxy config)"


def refused(invoke, path) -> str:
    """The one line `deploy site` prints for a refused config (exit 2, nothing on stdout)."""
    result = invoke("deploy", "site", config=path)
    assert (result.exit_code, result.stdout) == (2, ""), (result.exit_code, result.stdout, result.stderr)
    lines = result.stderr.splitlines()
    assert len(lines) == 1, lines
    return lines[0]


@pytest.mark.parametrize("entry, problem", [
    ("/:/host", "the host's / cannot be mounted (it holds the Docker socket and every secret)"),
    ("//:/host", "the host's / cannot be mounted (it holds the Docker socket and every secret)"),
    ("/var/run/docker.sock:/var/run/docker.sock", SOCKET),
    ("/run/docker.sock:/docker.sock:ro", SOCKET),
    ("/run/../var/run/docker.sock:/docker.sock", SOCKET),
    ("/var/run:/host-run", HOLDS_SOCKET),
    ("/var:/host-var:ro", HOLDS_SOCKET),
    ("./data:/data", RELATIVE),
    ("data/uploads:/data", RELATIVE),
    ("~/data:/data", RELATIVE),
    ("data:data", "the path in the container must be absolute"),
    ("data:/", "cannot mount over the container's /"),
    ("data:/data:rox", "must be NAME:PATH or /HOST/PATH:PATH, optionally followed by :ro"),
    ("data", "must be NAME:PATH or /HOST/PATH:PATH, optionally followed by :ro"),
    ("Data!:/data", "a volume name must match [a-z0-9][a-z0-9_.-]{0,62}"),
])
def test_a_bad_mount_is_one_line_and_nothing_is_queued(write_config, invoke, state_dir, site_repo_path, entry, problem):
    path = write_config({"site": {"repo": str(site_repo_path), "volumes": ["ok:/ok", entry]}})
    assert refused(invoke, path) == f"hookdeploy: config: apps.site.volumes: {entry!r}: {problem}"
    assert not state_dir.exists()  # no store made, so no job queued


def test_mounts_of_state_dir_or_of_the_socket_through_a_symlink_are_refused(write_config, invoke, state_dir,
                                                                            site_repo_path, tmp_path):
    (tmp_path / "socket-link").symlink_to("/var/run/docker.sock")
    (tmp_path / "state-link").symlink_to(state_dir / "proxy")
    for entry, problem in [
        (f"{tmp_path}/socket-link:/s", SOCKET),
        (f"{state_dir}/proxy/conf.d:/etc/x:ro", UNDER_STATE),
        (f"{tmp_path}/state-link:/etc/x", UNDER_STATE),
        (f"{state_dir}:/state", UNDER_STATE),
        (f"{tmp_path}:/all", "the host path holds server.state_dir (the job store and proxy config)"),
    ]:
        path = write_config({"site": {"repo": str(site_repo_path), "volumes": [entry]}})
        assert refused(invoke, path) == f"hookdeploy: config: apps.site.volumes: {entry!r}: {problem}"
    assert not state_dir.exists()


def test_the_installed_script_refuses_the_socket(write_config, run_cli, state_dir, site_repo_path):
    path = write_config({"site": {"repo": str(site_repo_path), "volumes": ["/var/run/docker.sock:/sock"]}})
    completed = run_cli("deploy", "site", config=path)
    assert (completed.returncode, completed.stdout, completed.stderr) == (
        2, "", f"hookdeploy: config: apps.site.volumes: '/var/run/docker.sock:/sock': {SOCKET}\n")
    assert not state_dir.exists()


@pytest.mark.parametrize("keys, problem", [
    ({"volumes": ["a:/data", "/srv/b:/data/"]}, "apps.site.volumes: '/srv/b:/data/': another entry mounts at '/data' already"),
    ({"memory": "lots"}, 'apps.site.memory: must be a size like "512m" or "1g" of at least 6m (the least Docker takes), '
                         "not 'lots'"),
    ({"memory": "4k"}, 'apps.site.memory: must be a size like "512m" or "1g" of at least 6m (the least Docker takes), '
                       "not '4k'"),
    ({"cpus": -1}, "apps.site.cpus: must be 0 (no limit) or between 0.01 and 1024"),
    ({"cpus": 0.001}, "apps.site.cpus: must be 0 (no limit) or between 0.01 and 1024"),
    ({"release_command": ["migrate", ""]},
     "apps.site.release_command: must be a list of non-empty strings (the program and its arguments)"),
    ({"release_command": "migrate"}, "apps.site.release_command: must be a list, not 'migrate'"),
    ({"release_timeout": 0}, "apps.site.release_timeout: must be greater than 0"),
])
def test_bad_release_commands_and_limits_are_one_line(write_config, invoke, state_dir, site_repo_path, keys, problem):
    path = write_config({"site": {"repo": str(site_repo_path), **keys}})
    assert refused(invoke, path) == f"hookdeploy: config: {problem}"
    assert not state_dir.exists()


def test_a_swarm_app_with_named_volumes_must_be_placed_on_one_node(write_config, invoke, site_repo_path):
    app = {"repo": str(site_repo_path), "target": "swarm", "volumes": ["db:/var/lib/db", "/srv/static:/static:ro"]}
    registry = "\n[registry]\nurl = \"127.0.0.1:5000\"\n"
    for placement in ([], ["node.role==worker"], ["node.hostname!=db1"]):
        path = write_config({"site": {**app, "placement": placement}})
        path.write_text(path.read_text() + registry)
        assert refused(invoke, path) == (
            "hookdeploy: config: apps.site.volumes: the named volume db lives on one node, so a swarm app with "
            "named volumes needs a placement on one node (like placement = [\"node.hostname==db1\"])")
    path = write_config({"site": {**app, "placement": ["node.role==worker", "node.hostname == db1"]}})
    path.write_text(path.read_text() + registry)
    assert load(path).app("site").placement == ("node.role==worker", "node.hostname == db1")
    path = write_config({"site": {**app, "volumes": ["/srv/static:/static:ro"]}})  # bind mounts only: anywhere
    path.write_text(path.read_text() + registry)
    assert load(path).app("site").volumes == (Mount("/srv/static", "/static", True),)


def test_what_every_container_of_the_app_runs_with(write_config, site_repo_path, tmp_path):
    path = write_config({"site": {"repo": str(site_repo_path), "env": {"MODE": "live"},
                                  "volumes": ["uploads:/var/lib/site/uploads", "/srv/site/config/:/etc/site:ro",
                                              "cache:/cache:rw"],
                                  "memory": "512m", "cpus": 1.5, "release_command": ["manage", "migrate"]}},
                        server={"name": "prod"})
    config = load(path)
    app = config.app("site")
    assert app.release_command == ("manage", "migrate") and app.release_timeout == 600.0
    options = runspec.run_options(config, app)
    assert (options["network"], options["environment"]) == ("prod", {"MODE": "live"})
    assert (options["mem_limit"], options["nano_cpus"]) == (512 * 1024**2, 1_500_000_000)
    labels = {"hookdeploy.instance": "prod", "hookdeploy.app": "site"}
    assert options["mounts"] == [
        {"Target": "/var/lib/site/uploads", "Source": "prod-site-uploads", "Type": "volume", "ReadOnly": False,
         "VolumeOptions": {"Labels": {**labels, "hookdeploy.volume": "uploads"}}},
        {"Target": "/etc/site", "Source": "/srv/site/config", "Type": "bind", "ReadOnly": True},
        {"Target": "/cache", "Source": "prod-site-cache", "Type": "volume", "ReadOnly": False,
         "VolumeOptions": {"Labels": {**labels, "hookdeploy.volume": "cache"}}},
    ]
    service = runspec.service_options(config, app)
    assert service["env"] == ["MODE=live"] and service["mounts"] == options["mounts"]
    assert service["resources"] == Resources(cpu_limit=1_500_000_000, mem_limit=512 * 1024**2)

    bare = load(write_config({"site": {"repo": str(site_repo_path)}}))
    plain = runspec.run_options(bare, bare.app("site"))
    assert plain["mounts"] == [] and "mem_limit" not in plain and "nano_cpus" not in plain
    assert "resources" not in runspec.service_options(bare, bare.app("site"))


@pytest.mark.parametrize("text, size", [("512m", 512 * 1024**2), ("1g", 1024**3), ("1.5GiB", 1536 * 1024**2),
                                        ("268435456", 268435456), ("64 MB", 64 * 1024**2), ("2T", 2 * 1024**4),
                                        ("m", None), ("1.g", None), ("-1m", None), ("1x", None)])
def test_memory_sizes_read_as_docker_run_does(text, size):
    assert memory_bytes(text) == size


def test_a_release_command_that_succeeded_is_recorded_once_per_commit(store):
    sha = fake_sha(7)
    job = store.enqueue("site", sha)
    assert store.release_command_ran("site", sha) is None
    store.record_release_command("site", sha, job.id)
    store.record_release_command("site", sha, job.id + 1)  # a second record of it changes nothing
    assert store.release_command_ran("site", sha) == job.id
    assert store.release_command_ran("other", sha) is None and store.release_command_ran("site", fake_sha(8)) is None

