"""state_dir is the hookdeploy user's alone: the folder 0700, the job store (and its -wal, -shm) and
the proxy's access logs 0600, whatever the umask, and a looser state_dir of an older version is
tightened when `serve`, `worker` or `deploy` opens the store. What must stay readable stays so under
a strict umask (077): release checkouts (the image gets their modes) and the proxy's conf.d.

Real SQLite files, the real CLI as a subprocess, and (docker) a real deploy through a real nginx
that writes its access log into our 0600 file.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import re
import shutil
import sqlite3
import stat
import subprocess
from pathlib import Path

import pytest

from docker_helpers import site_files
from hookdeploy.core import config as configuration
from hookdeploy.core.store import Store
from hookdeploy.engine import gitops, proxy, traffic
from webhook_helpers import HOOKDEPLOY, Served, environment, request


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@contextlib.contextmanager
def umask(value: int):
    """The process's umask set to `value` (children started meanwhile inherit it)."""
    previous = os.umask(value)
    try:
        yield
    finally:
        os.umask(previous)


def store_files(state_dir: Path) -> list[Path]:
    return [state_dir / name for name in ("hookdeploy.db", "hookdeploy.db-wal", "hookdeploy.db-shm")]


def loosen(state_dir: Path) -> None:
    """A state_dir as an older version left it under umask 022: 0755, the store 0644 with rows in it."""
    store = Store(state_dir / "hookdeploy.db")
    store.enqueue("site", "a" * 40)
    store.close()
    state_dir.chmod(0o755)
    (state_dir / "hookdeploy.db").chmod(0o644)


# -- the store ------------------------------------------------------------------------------------------


def test_the_store_and_its_folder_are_private_even_under_umask_0(tmp_path):
    state_dir = tmp_path / "state"
    with umask(0):
        store = Store(state_dir / "hookdeploy.db")
        store.enqueue("site", "a" * 40)
        # Another connection, as a second process would open: SQLite makes -wal and -shm with the file's mode.
        other = sqlite3.connect(state_dir / "hookdeploy.db")
        other.execute("SELECT count(*) FROM jobs").fetchone()
    assert mode(state_dir) == 0o700
    assert {path.name: mode(path) for path in store_files(state_dir)} == {
        "hookdeploy.db": 0o600, "hookdeploy.db-wal": 0o600, "hookdeploy.db-shm": 0o600}
    other.close()
    store.close()


def test_a_loose_state_dir_is_tightened_when_the_store_opens_and_keeps_its_rows(tmp_path):
    state_dir = tmp_path / "state"
    loosen(state_dir)
    holder = sqlite3.connect(state_dir / "hookdeploy.db")  # keeps a -wal and -shm around, as a running serve would
    holder.execute("INSERT INTO jobs (app, kind, trigger, sha, state, created_at) "
                   "VALUES ('site', 'deploy', 'manual', ?, 'queued', '2026-01-01T00:00:00Z')", ("b" * 40,))
    holder.commit()
    for path in store_files(state_dir):
        path.chmod(0o644)
    assert mode(state_dir) == 0o755

    store = Store(state_dir / "hookdeploy.db")
    assert mode(state_dir) == 0o700
    assert [mode(path) for path in store_files(state_dir)] == [0o600, 0o600, 0o600]
    assert [job.sha[0] for job in store.jobs()] == ["b", "a"]
    holder.close()
    store.close()


def test_a_shared_folder_such_as_tmp_is_left_as_it_is(tmp_path, caplog):
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o1777)
    with caplog.at_level("WARNING", logger="hookdeploy.core.private"):
        Store(shared / "hookdeploy.db").close()
    assert mode(shared) == 0o1777 and mode(shared / "hookdeploy.db") == 0o600
    assert any("a folder of its own" in line for line in caplog.messages)


# -- through the CLI --------------------------------------------------------------------------------------


def test_deploy_makes_a_private_state_dir_under_umask_0(site_config, pushed_clone, state_dir, hookdeploy_env):
    shutil.rmtree(state_dir, ignore_errors=True)  # whatever init-repo made: deploy makes it anew
    completed = subprocess.run([str(HOOKDEPLOY), "--config", str(site_config), "deploy", "site"], env=hookdeploy_env,
                               capture_output=True, text=True, umask=0, timeout=60)
    assert completed.returncode == 0, completed.stderr
    assert mode(state_dir) == 0o700 and mode(state_dir / "hookdeploy.db") == 0o600
    # Nothing in it is readable by others (the checkout mirror of a local repo is not made; no proxy yet).
    assert [path for path in state_dir.rglob("*") if mode(path) & 0o077] == []


@pytest.mark.slow
def test_serve_tightens_an_existing_state_dir(tmp_path, secrets_in_environment):
    served = Served.make(tmp_path)
    state_dir = configuration.load(served.config).server.state_dir
    loosen(Path(state_dir))
    with umask(0), served.server() as server:
        assert request(served.port, "GET", "/healthz")[0] == 200
        # serve holds its connection open: the -wal and -shm are there, and private.
        assert mode(Path(state_dir)) == 0o700
        assert [mode(path) for path in store_files(Path(state_dir))] == [0o600, 0o600, 0o600]
        assert server.stop() == 0


# -- what stays readable under a strict umask ------------------------------------------------------------------


def test_a_checkout_keeps_readable_folders_under_umask_077(tmp_path):
    work = tmp_path / "work"
    subprocess.run(["git", "init", "-q", str(work)], check=True)
    (work / "site" / "css").mkdir(parents=True)
    (work / "site" / "css" / "site.css").write_text("p {}\n")
    subprocess.run(["git", "add", "--all"], cwd=work, check=True)
    subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@example.com", "commit", "-q", "-m", "css"],
                   cwd=work, check=True)
    import git as gitpython

    repo = gitpython.Repo(work)
    with umask(0o077):
        out = gitops.export(repo, repo.head.commit.hexsha, tmp_path / "builds" / "1")
    assert [mode(path) for path in (out, out / "site", out / "site" / "css")] == [0o755, 0o755, 0o755]
    assert mode(out / "site" / "css" / "site.css") == 0o644


def test_the_proxy_setup_under_umask_077_keeps_conf_d_readable_and_the_logs_private(write_config, state_dir):
    config = configuration.load(write_config({"site": {"repo": "/srv/git/site.git"}}))
    traffic.log_dir(config).mkdir(parents=True)
    traffic.log_path(config, "site").write_text('{"status": 200}\n')
    traffic.log_path(config, "site").chmod(0o644)  # made by an older version
    with umask(0o077):
        proxy.prepare(config)
    conf_d = proxy.conf_dir(config)
    assert mode(conf_d) == 0o755 and mode(conf_d / proxy.CHALLENGE_DIR) == 0o755  # nginx's workers serve answers there
    assert mode(conf_d / proxy.CERTS_DIR) == 0o700
    assert mode(traffic.log_path(config, "site")) == 0o600
    assert traffic.log_path(config, "site").read_text() == '{"status": 200}\n'  # tightened, not emptied


# -- a real deploy ------------------------------------------------------------------------------------------------


@pytest.mark.docker
def test_a_real_deploy_under_umask_077_on_a_loose_state_dir(instance):
    """An older version's state_dir (0755, store and access log 0644); `deploy` and `worker` run as a
    hardened unit would (UMask=0077): everything private is tightened, the site's subfolder still
    serves, and nginx (root in its container) still appends to the 0600 log."""
    instance.configure({"site": {"hostnames": ["site.example"]}})
    loosen(instance.state_dir)
    log = traffic.log_path(instance.config, "site")
    log.parent.mkdir(parents=True)
    log.touch(mode=0o644)
    instance.commit("site", site_files("one", extra={"site/css/site.css": "p { color: teal }\n"}))
    with umask(0o077):
        assert instance.cli("deploy", "site").returncode == 0
        worker = instance.cli("worker", "--drain")
    assert worker.returncode == 0, worker.stderr
    assert instance.get("/", host="site.example").body == "<p>one</p>\n"
    css = instance.get("/css/site.css", host="site.example")
    assert (css.status, css.body) == (200, "p { color: teal }\n")
    assert mode(instance.state_dir) == 0o700 and mode(instance.state_dir / "hookdeploy.db") == 0o600
    assert mode(log) == 0o600 and log.stat().st_uid == os.getuid()
    assert log.read_text().count('"status":200') >= 2  # nginx wrote both requests into our private file

    # The proxy's answers, the site's and its own 404 for an unknown host alike, name no nginx version.
    for host in ("site.example", "nosuch.example"):
        connection = http.client.HTTPConnection(instance.address, instance.port, timeout=5)
        connection.request("GET", "/", headers={"Host": host})
        answer = connection.getresponse()
        page = answer.read().decode()
        connection.close()
        assert answer.getheader("Server") == "nginx" and not re.search(r"nginx/\d", page), (host, page)


def test_a_second_store_in_one_process_leaves_the_first_ones_locks_alone(tmp_path):
    """Opening the store again in a process must not open the database file by other means: closing
    that descriptor would drop the process's SQLite locks, another process closing its last connection
    would then take the WAL away, and the first store's next query fail with "disk I/O error"."""
    import subprocess
    import sys

    from hookdeploy.core.store import Store

    path = tmp_path / "state" / "hookdeploy.db"
    first = Store(path)
    first.enqueue("site", "a" * 40)
    Store(path)  # a second store in this process, as serve's threads and the scheduler make them
    other = ("import sqlite3, sys; db = sqlite3.connect(sys.argv[1]); "
             "db.execute('SELECT count(*) FROM jobs').fetchall(); db.close()")
    subprocess.run([sys.executable, "-c", other, str(path)], check=True)
    first.enqueue("site", "b" * 40)
    count = ("import sqlite3, sys; db = sqlite3.connect(sys.argv[1]); "
             "print(db.execute('SELECT count(*) FROM jobs').fetchone()[0])")
    seen = subprocess.run([sys.executable, "-c", count, str(path)], check=True, capture_output=True, text=True)
    assert seen.stdout.strip() == "2", "a job the first store queued is on disk for every process"
