"""The routes file tested before the switch (proxy.Pretest), against a real nginx proxy: a file nginx
refuses never goes live, a change to conf.d between the test and the switch is tested again, and
a tested switch (rename + SIGHUP) returns only once every new connection gets the new routes.
"""

from __future__ import annotations

import pytest

from docker_helpers import Instance, site_files
from hookdeploy.core.errors import StepFailed
from hookdeploy.engine import proxy

pytestmark = pytest.mark.docker

NEW_SHA = "feedfacecafe" + "0" * 28


def live(instance: Instance):
    """A live `site` (v1); returns (the proxy container, the app's routes file, the app's config)."""
    instance.configure({"site": {}})
    job = instance.deploy("site", site_files("v1"))
    assert job.state.value == "succeeded", job.error
    config = instance.config
    container = instance.client.containers.get(f"{instance.name}-proxy")
    return container, proxy.app_file(config, "site"), config.app("site")


def test_a_file_nginx_refuses_is_caught_before_the_switch(instance):
    container, path, _ = live(instance)
    before = path.read_text()
    bad = before.replace("proxy_pass", "proxy_pas")  # an unknown directive
    staged = proxy.test_staged(container, path, bad)
    assert staged is not None and staged.refused is not None
    assert 'unknown directive "proxy_pas"' in staged.refused and "/etc/nginx/conf.d/app-site.conf" in staged.refused
    assert ".staged-" not in staged.refused  # named as the file it would be, not the copy tested
    with pytest.raises(StepFailed, match="nginx rejected the config"):
        with proxy.locked(instance.config):
            proxy.switch_tested(container, staged, path, bad)
    assert path.read_text() == before
    assert instance.get().release == instance.store.live_release("site").sha[:12]
    assert not list(path.parent.glob(".staged-*"))  # the copies are gone


def test_a_change_to_conf_d_after_the_test_is_tested_again(instance):
    container, path, app = live(instance)
    before = path.read_text()
    new = proxy.render(app, proxy.routed_addresses(path), NEW_SHA)
    staged = proxy.test_staged(container, path, new)
    assert staged is not None and staged.refused is None
    # Another file changes after the test (as another app's switch would): with it, the new file is
    # refused (the same upstream twice), which only a test of conf.d as it is at the switch can see.
    other = path.parent / "app-other.conf"
    other.write_text("upstream hookdeploy_site {\n    server 127.0.0.1:9;\n}\n")
    try:
        with pytest.raises(StepFailed, match="duplicate upstream"):
            with proxy.locked(instance.config):
                proxy.switch_tested(container, staged, path, new)
    finally:
        other.unlink()
    assert path.read_text() == before
    assert instance.get().release == instance.store.live_release("site").sha[:12]


def test_a_tested_switch_signals_nginx_and_returns_once_the_old_workers_take_no_connection(instance, monkeypatch):
    container, path, app = live(instance)
    new = proxy.render(app, proxy.routed_addresses(path), NEW_SHA)
    staged = proxy.test_staged(container, path, new)
    assert staged is not None and staged.refused is None
    assert proxy.nginx_workers(container)  # the proxy's main process is nginx's master: it can be signalled

    def untested(*_):
        raise AssertionError("switch() ran: the test before the switch was not used")

    monkeypatch.setattr(proxy, "switch", untested)
    with proxy.locked(instance.config):
        previous = proxy.switch_tested(container, staged, path, new)
    assert previous is not None and NEW_SHA[:12] not in previous
    # Fresh connections, right after the switch returned: every one gets the new routes.
    assert [instance.get().release for _ in range(20)] == [NEW_SHA[:12]] * 20


def test_routes_tested_with_stand_in_addresses_switch_with_the_real_ones(instance, monkeypatch):
    """The deploy tests its file while the candidate starts, before it has addresses: the same routes with
    placeholders() stand in, and the switch to the real addresses uses that test."""
    container, path, app = live(instance)
    real = proxy.routed_addresses(path)
    stand_in = proxy.render(app, proxy.placeholders(len(real)), NEW_SHA)
    assert "192.0.2.1" in stand_in and real[0] not in stand_in
    staged = proxy.test_staged(container, path, stand_in)
    assert staged is not None and staged.refused is None
    calls = []
    monkeypatch.setattr(proxy, "switch", lambda *arguments: calls.append(arguments))
    with proxy.locked(instance.config):
        # Routes of another shape than those tested (one address more) are tested in the switch.
        proxy.switch_tested(container, staged, path, proxy.render(app, real * 2, NEW_SHA),
                            proxy.render(app, proxy.placeholders(len(real) * 2), NEW_SHA))
        assert len(calls) == 1
        proxy.switch_tested(container, staged, path, proxy.render(app, real, NEW_SHA), stand_in)
    assert len(calls) == 1  # the second switch was the rename and signal
    assert [instance.get().release for _ in range(20)] == [NEW_SHA[:12]] * 20
