"""The units in systemd/ pass `systemd-analyze verify`, pointed at this checkout's installed script;
under a real systemd (a container whose init it is), `systemctl reload` during a build cuts nothing."""

from __future__ import annotations

import re
import secrets
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from conftest import HOOKDEPLOY

UNITS = sorted((Path(__file__).parent.parent / "systemd").glob("*.service"))

pytestmark = pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed")


def localized(unit: Path, folder: Path) -> Path:
    """A copy of `unit` in `folder` whose ExecStart runs the venv's hookdeploy and whose EnvironmentFile exists."""
    env_file = folder / "env"
    env_file.write_text("HOOKDEPLOY_SECRET=test\n")
    text = unit.read_text()
    text, exec_starts = re.subn(r"^ExecStart=\S+/hookdeploy\b", f"ExecStart={HOOKDEPLOY}", text, flags=re.M)
    text, env_files = re.subn(r"^EnvironmentFile=(-?)\S+", rf"EnvironmentFile=\g<1>{env_file}", text, flags=re.M)
    assert exec_starts == 1 and env_files == 1, f"{unit.name}: expected one ExecStart and one EnvironmentFile"
    copy = folder / unit.name
    copy.write_text(text)
    return copy


def test_there_are_units_for_serve_the_split_pair_and_more_workers():
    assert [unit.name for unit in UNITS] == ["hookdeploy-receiver.service", "hookdeploy-worker.service",
                                             "hookdeploy-worker@.service", "hookdeploy.service"]


@pytest.mark.parametrize("unit", UNITS, ids=[unit.name for unit in UNITS])
def test_unit_passes_systemd_analyze_verify(unit, tmp_path):
    copy = localized(unit, tmp_path)
    completed = subprocess.run(["systemd-analyze", "verify", str(copy)], capture_output=True, text=True, timeout=60)
    # Warnings (unknown keys, bad values) come on stderr with exit status 0: neither is allowed.
    assert completed.returncode == 0 and completed.stderr == "", completed.stderr


@pytest.mark.parametrize("unit", UNITS, ids=[unit.name for unit in UNITS])
def test_unit_is_hardened(unit):
    text = unit.read_text()
    for setting in ("User=hookdeploy", "NoNewPrivileges=yes", "ProtectSystem=strict", "ReadWritePaths=/var/lib/hookdeploy",
                    "PrivateTmp=yes", "ProtectHome=yes", "RestrictAddressFamilies=", "Restart=on-failure"):
        assert setting in text, f"{unit.name} lacks {setting}"
    families = re.search(r"^RestrictAddressFamilies=(.*)$", text, flags=re.M).group(1).split()
    docker_access = "SupplementaryGroups=docker" in text or "AF_UNIX" in families
    assert docker_access == (unit.name != "hookdeploy-receiver.service")


@pytest.mark.parametrize("unit", UNITS, ids=[unit.name for unit in UNITS])
def test_unit_reloads_with_sighup(unit):
    """`systemctl reload` sends SIGHUP to the main process: serve and worker read deploy.toml again (test_reload.py)."""
    assert re.findall(r"^ExecReload=(.*)$", unit.read_text(), flags=re.M) == ["/bin/kill -HUP $MAINPID"]


# -- under a real systemd: `systemctl reload` while a build runs ------------------------------------------

BOX_IMAGE = "hookdeploy-systemd:local"  # scripts/systemd-image.sh
REPO = Path(__file__).parent.parent


def in_box(box: str, *command: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(["docker", "exec", box, *command], capture_output=True, text=True, timeout=60, check=check)


@pytest.fixture
def box_folder():
    """A folder for the boxed service's files, outside /tmp (the units' PrivateTmp hides the real one)."""
    folder = Path(f"/var/lib/hookdeploy-systemd-test-{secrets.token_hex(4)}")
    folder.mkdir(mode=0o700)
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def systemd_box(docker_engine, box_folder):
    """A container whose PID 1 is systemd, on this machine's network and Docker engine, with this checkout
    (its venv) and box_folder mounted where they are here; removed afterwards."""
    subprocess.run(["bash", str(REPO / "scripts" / "systemd-image.sh")], check=True, timeout=900)
    name = f"hookdeploy-systemd-{box_folder.name.rsplit('-', 1)[1]}"
    subprocess.run(["docker", "run", "-d", "--name", name, "--network", "host",
                    # what systemd needs to run as a container's init here (as the cluster's nodes: plain
                    # --privileged is refused on this kind of machine)
                    "--cap-add", "ALL", "--cap-drop", "SYS_RESOURCE", "--security-opt", "seccomp=unconfined",
                    "--security-opt", "apparmor=unconfined", "--device-cgroup-rule", "a *:* rwm", "--cgroupns=host",
                    "-v", "/sys/fs/cgroup:/sys/fs/cgroup:rw", "--tmpfs", "/run", "--tmpfs", "/run/lock",
                    "-v", "/var/run/docker.sock:/var/run/docker.sock", "-v", f"{REPO}:{REPO}:ro",
                    "-v", f"{box_folder}:{box_folder}", BOX_IMAGE], check=True, capture_output=True, timeout=60)
    try:
        deadline = time.monotonic() + 60
        while in_box(name, "systemctl", "is-system-running", check=False).stdout.strip() not in ("running", "degraded"):
            assert time.monotonic() < deadline, in_box(name, "systemctl", "--failed", check=False).stdout
            time.sleep(0.2)
        # The units want docker.service; here the engine is this machine's, reached through its socket.
        in_box(name, "sh", "-c", "printf '[Service]\\nType=oneshot\\nRemainAfterExit=yes\\nExecStart=/bin/true\\n' "
                                 "> /etc/systemd/system/docker.service && systemctl daemon-reload")
        yield name
    finally:
        subprocess.run(["docker", "rm", "-f", name], capture_output=True, timeout=60)


def boxed(unit: Path, folder: Path, config: Path) -> Path:
    """`localized` for the box: this deploy.toml; root instead of the hookdeploy user (the files are this
    test's); the test's folder writable instead of /var/lib/hookdeploy and /srv/git, and root's home."""
    text = localized(unit, folder).read_text()
    text = re.sub(r"^(User|Group|SupplementaryGroups)=.*\n", "", text, flags=re.M)
    text = re.sub(r"^Environment=HOOKDEPLOY_CONFIG=.*$", f"Environment=HOOKDEPLOY_CONFIG={config}", text, flags=re.M)
    text = re.sub(r"^ReadWritePaths=.*$", f"ReadWritePaths={folder}", text, flags=re.M)
    text = re.sub(r"^(ExecStart=.*)$", rf"\1\nEnvironment=HOME={folder}", text, count=1, flags=re.M)  # root's is hidden
    copy = folder / unit.name
    copy.write_text(text)
    return copy


@pytest.mark.docker
@pytest.mark.parametrize("unit_name", ["hookdeploy-worker.service", "hookdeploy.service"])
def test_systemctl_reload_during_a_build_does_not_interrupt_it(systemd_box, box_folder, docker_engine, unit_name):
    from docker_helpers import Instance, site_files
    from hookdeploy.core.models import JobState

    box = systemd_box
    site = Instance(box_folder / "instance", docker_engine)
    try:
        site.root.mkdir()
        build = '\n[build]\nbuilder = "classic"\n'  # the Engine API's builder: the box has no docker CLI
        site.configure({"site": {"hostnames": ["site.test"]}}, extra=build)
        listen = re.search(r'^listen = ".*"$', site.config_path.read_text(), flags=re.M).group(0)
        marker = secrets.token_hex(6)
        sha = site.commit("site", site_files("built across a reload", dockerfile_tail=f"RUN sleep 5 && echo {marker}\n"))
        job = site.enqueue("site", sha)
        unit = boxed(next(unit for unit in UNITS if unit.name == unit_name), box_folder, site.config_path)
        subprocess.run(["docker", "cp", str(unit), f"{box}:/etc/systemd/system/{unit.name}"], check=True, timeout=60)
        in_box(box, "systemctl", "daemon-reload")
        in_box(box, "systemctl", "start", unit.name)

        deadline = time.monotonic() + 120
        while not any(f"echo {marker}" in event.message for event in site.store.events(job.id)):
            assert time.monotonic() < deadline and not site.store.job(job.id).state.finished, journal(box, unit.name)
            time.sleep(0.1)
        main_pid = in_box(box, "systemctl", "show", "-p", "MainPID", "--value", unit.name).stdout.strip()
        site.configure({"site": {"hostnames": ["site.test"]}, "fresh": {"hostnames": ["fresh.test"]}}, extra=build)
        site.config_path.write_text(re.sub(r'^listen = ".*"$', listen, site.config_path.read_text(), count=1, flags=re.M))
        reloaded = in_box(box, "systemctl", "reload", unit.name, check=False)
        assert reloaded.returncode == 0, reloaded.stderr
        while "apps added: fresh" not in journal(box, unit.name):
            assert time.monotonic() < deadline, journal(box, unit.name)
            time.sleep(0.1)
        assert site.store.job(job.id).state is JobState.RUNNING, "the reload came while the build ran"

        while not site.store.job(job.id).state.finished:
            assert time.monotonic() < deadline, journal(box, unit.name)
            time.sleep(0.1)
        assert site.store.job(job.id).state is JobState.SUCCEEDED, (site.store.job(job.id).error, journal(box, unit.name))
        assert [other for other in site.store.jobs("site") if other.retry_of == job.id] == []
        assert in_box(box, "systemctl", "show", "-p", "MainPID", "--value", unit.name).stdout.strip() == main_pid, \
            "reloaded, not restarted"
        assert site.get(host="site.test")[:2] == (200, sha[:12])

        fresh = site.enqueue("fresh", site.commit("fresh", site_files("fresh after the reload")))
        while not site.store.job(fresh.id).state.finished:
            assert time.monotonic() < deadline + 60, journal(box, unit.name)
            time.sleep(0.1)
        assert site.store.job(fresh.id).state is JobState.SUCCEEDED, site.store.job(fresh.id).error
        assert site.get(host="fresh.test")[:2] == (200, fresh.sha[:12])
        in_box(box, "systemctl", "stop", unit.name)
        assert in_box(box, "systemctl", "show", "-p", "Result", "--value", unit.name).stdout.strip() == "success"
        assert "Traceback" not in journal(box, unit.name)
    finally:
        site.cleanup()


def journal(box: str, unit: str) -> str:
    return in_box(box, "journalctl", "-u", unit, "-o", "cat", "--no-pager", check=False).stdout
