"""The units in systemd/ pass `systemd-analyze verify`, pointed at this checkout's installed script."""

from __future__ import annotations

import re
import shutil
import subprocess
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
