"""A reload that adds the first swarm app or HTTPS app gets it followed and its certificates looked after
without a restart: the worker's follow-tasks and certificates threads run whatever the startup config
(issue 23). A real Worker.run loop on a real store and config file; only what needs a Docker engine
(its ping, heal and recover, a follow's and a certificate round's engine work) is replaced by recorders."""

from __future__ import annotations

import threading
import time
from pathlib import Path

from hookdeploy.core.config import load
from hookdeploy.core.reload import LiveConfig
from hookdeploy.core.store import Store
from hookdeploy.engine import certs, worker as worker_module
from hookdeploy.engine.recovery import Recovery

PLAIN = """
[server]
state_dir = "{state}"

[apps.site]
repo = "{root}/site.git"
port = 80
"""
ADDED = """
[apps.cluster]
image = "registry.test:5000/cluster"
target = "swarm"
port = 80
hostnames = ["cluster.test"]

[apps.secure]
repo = "{root}/secure.git"
port = 80
hostnames = ["secure.test"]
tls = "acme"

[proxy]
publish_tls = "127.0.0.1:8443"
"""


def wait_for(condition, what: str, seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"not within {seconds:g} s: {what}"
        time.sleep(0.02)


def test_a_reload_adding_a_swarm_app_and_an_acme_app_gets_them_followed_and_certified(tmp_path: Path, monkeypatch):
    path = tmp_path / "deploy.toml"
    path.write_text(PLAIN.format(state=tmp_path / "state", root=tmp_path))
    live = LiveConfig(load(path))
    followed: list[str] = []
    certified: list[list[str]] = []  # each certificate round: the config's HTTPS apps
    engines: list[str] = []
    monkeypatch.setattr(Recovery, "follow", lambda self, app: followed.append(app))
    monkeypatch.setattr(certs, "maintain", lambda config, store, engine, reported: certified.append(
        sorted(app.name for app in config.apps.values() if app.tls_mode != "off")))
    monkeypatch.setattr(worker_module.containers, "engine", lambda: engines.append("asked") or object())
    monkeypatch.setattr(worker_module, "FOLLOW_SECONDS", 0.05)
    monkeypatch.setattr(worker_module, "CERTS_SECONDS", 0.05)  # rounds every 50 ms, not every 30 s
    worker = worker_module.Worker(live, Store(tmp_path / "hookdeploy.db"))
    monkeypatch.setattr(worker, "wait_for_engine", lambda stop, give_up=False: True)
    monkeypatch.setattr(worker, "heal", lambda repair_all=False: None)
    monkeypatch.setattr(worker, "recover", lambda: [])
    stop = threading.Event()
    running = threading.Thread(target=worker.run, args=(stop,), daemon=True)
    running.start()
    try:
        wait_for(lambda: len(certified) >= 3, "three certificate rounds")
        assert followed == [] and all(round == [] for round in certified)
        assert engines == [], "a round with nothing to do asks nothing of the engine"

        path.write_text(PLAIN.format(state=tmp_path / "state", root=tmp_path) + ADDED.format(root=tmp_path))
        assert live.reload()
        wait_for(lambda: "cluster" in followed, "the swarm app followed")
        wait_for(lambda: certified[-1] == ["secure"], "a certificate round for the acme app")
        assert set(followed) == {"cluster"}  # only the swarm app
    finally:
        stop.set()
        running.join(10)
    assert not running.is_alive()
    assert {thread.name for thread in threading.enumerate()} & {"follow-tasks", "certificates"} == set()
