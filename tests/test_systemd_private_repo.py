"""A webhook deploys from a private repo over ssh with a deploy key while hookdeploy.service runs under a
real systemd with the unit's hardening (ProtectHome, ProtectSystem=strict, PrivateTmp: test_systemd.py's
box), from the git sshd of gitserver_helpers: ssh needs nothing of a home folder, the host key is recorded
in state_dir."""

from __future__ import annotations

import secrets
import shutil
import subprocess
import time

import pytest

import test_private_repo
import test_systemd
from docker_helpers import Instance, site_files
from hookdeploy.core.models import JobState
from test_systemd import UNITS, boxed, in_box, journal
from webhook_helpers import push_body, request, signed_headers

box_folder = test_systemd.box_folder
systemd_box = test_systemd.systemd_box
sshd = test_private_repo.sshd


@pytest.mark.docker
def test_a_webhook_deploys_a_private_repo_over_ssh_under_the_hardened_unit(systemd_box, box_folder, sshd,
                                                                           docker_engine):
    box = systemd_box
    # The box's Debian has no ssh client; this machine's (the same Debian 12) runs with the box's libraries.
    subprocess.run(["docker", "cp", shutil.which("ssh"), f"{box}:/usr/bin/ssh"], check=True, timeout=60)
    key = box_folder / "site.key"
    shutil.copyfile(sshd.key, key)
    key.chmod(0o600)
    site = Instance(box_folder / "instance", docker_engine)
    try:
        site.root.mkdir()
        site.repos["site"] = sshd.repo
        site.configure({"site": {"hostnames": ["site.test"], "repo": sshd.url, "repo_key_file": str(key),
                                 "webhook": {"provider": "github", "secret_env": "SITE_SECRET"}}},
                       extra='\n[build]\nbuilder = "classic"\n')  # the Engine API's builder: the box has no docker CLI
        sha = site.commit("site", site_files("private, under systemd"))
        unit = boxed(next(unit for unit in UNITS if unit.name == "hookdeploy.service"), box_folder, site.config_path)
        webhook_secret = secrets.token_hex(16)
        (box_folder / "env").write_text(f"HOOKDEPLOY_SECRET=test\nSITE_SECRET={webhook_secret}\n")
        subprocess.run(["docker", "cp", str(unit), f"{box}:/etc/systemd/system/{unit.name}"], check=True, timeout=60)
        in_box(box, "systemctl", "daemon-reload")
        in_box(box, "systemctl", "start", unit.name)
        port = int(site.config.server.listen.rpartition(":")[2])
        body = push_body("github", sha)
        deadline = time.monotonic() + 60
        while True:
            try:
                status, answer, _ = request(port, "POST", "/hooks/site", body,
                                            signed_headers("github", webhook_secret, body))
                break
            except OSError:
                assert time.monotonic() < deadline, journal(box, unit.name)
                time.sleep(0.1)
        assert status == 202, answer
        while not site.store.job(answer["job"]).state.finished:
            assert time.monotonic() < deadline, journal(box, unit.name)
            time.sleep(0.1)
        job = site.store.job(answer["job"])
        assert job.state is JobState.SUCCEEDED, (job.error, journal(box, unit.name))
        assert site.get(host="site.test")[:2] == (200, sha[:12])
        recorded = (site.state_dir / "known_hosts").read_text()
        assert sshd.known_host.split()[1:] == recorded.split()[1:3]
        in_box(box, "systemctl", "stop", unit.name)
        assert "Traceback" not in journal(box, unit.name)
    finally:
        site.cleanup()
