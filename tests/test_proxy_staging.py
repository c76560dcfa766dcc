"""conf.d's leftovers of tests before the switch: a worker killed during one leaves its staging folder,
which the next job's proxy setup removes (a test running now keeps its own)."""

from __future__ import annotations

import os
import time

from hookdeploy.core.config import load
from hookdeploy.engine import proxy


def test_prepare_removes_an_old_staging_folder_and_keeps_a_fresh_one(tmp_path):
    config_file = tmp_path / "deploy.toml"
    config_file.write_text(f'[server]\nstate_dir = "{tmp_path / "state"}"\n[apps.site]\nrepo = "site.git"\n')
    config = load(config_file)
    directory = proxy.conf_dir(config)
    directory.mkdir(parents=True)
    old, fresh = directory / ".staged-old", directory / ".staged-fresh"
    for staged in (old, fresh):
        staged.mkdir()
        (staged / "app-site.conf").write_text("# a copy\n")
    long_ago = time.time() - proxy.STAGED_KEPT_SECONDS - 60
    os.utime(old, (long_ago, long_ago))
    proxy.prepare(config)
    assert not old.exists()
    assert (fresh / "app-site.conf").exists()
