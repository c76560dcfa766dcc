"""The small rules of the engine, each in one place: a release's tag, the proxy's name, an app's routes
rendered with its certificates, and the addresses an app's file routes to kept as data (not parsed back
out of nginx's directives)."""

from __future__ import annotations

from hookdeploy.core import config
from hookdeploy.core.models import release_tag
from hookdeploy.engine import certs, containers, proxy

SHA = "0123456789abcdef" * 2 + "01234567"
OLD = "f" * 40


def loaded(write_config, extra: str = ""):
    document = ('[server]\nname = "rules"\nstate_dir = "state"\n[proxy]\npublish = "127.0.0.1:18081"\n'
                '[apps.site]\nrepo = "/r.git"\nport = 8000\nhostnames = ["a.test"]\n' + extra)
    result = config.load(write_config(document))
    proxy.prepare(result)
    return result


def test_a_release_is_named_by_one_tag_everywhere(write_config):
    site = loaded(write_config).apps["site"]
    tag = release_tag(SHA)
    assert tag == SHA[:12]
    assert containers.image_name("rules", "site", SHA) == f"rules/site:{tag}"
    assert containers.container_name("rules", "site", SHA, 7) == f"rules-site-{tag}-7"
    assert containers.proxy_name("rules") == "rules-proxy"
    text = proxy.render(site, ["10.0.0.2"], SHA)
    assert f"add_header X-Hookdeploy-Release {tag} always;" in text


def test_the_routed_addresses_are_what_was_rendered_kept_as_data(write_config, tmp_path):
    instance = loaded(write_config)
    site = instance.apps["site"]
    path = proxy.app_file(instance, "site")
    assert proxy.routed(path) == [] and proxy.routed_addresses(path) == []  # no file yet

    proxy.write_atomically(path, certs.render_routes(instance, site, ["10.0.0.3", "10.0.0.2"], SHA))
    assert proxy.routed(path) == ["10.0.0.3:8000", "10.0.0.2:8000"]
    assert proxy.routed_addresses(path) == ["10.0.0.3", "10.0.0.2"]
    assert proxy.routes_exactly(path, ["10.0.0.2", "10.0.0.3"], 8000)
    assert not proxy.routes_exactly(path, ["10.0.0.2"], 8000) and not proxy.routes_exactly(path, ["10.0.0.2", "10.0.0.3"], 80)

    # A canary: the live release's addresses are what the app's file routes to; the candidate's share is not.
    split = proxy.Canary(["10.0.0.9"], SHA, 10)
    proxy.write_atomically(path, certs.render_routes(instance, site, ["10.0.0.2"], OLD, split))
    assert proxy.routed_addresses(path) == ["10.0.0.2"]
    assert "server 10.0.0.9:8000;" in proxy.read(path)  # nginx still gets both pools

    # A file without the record (written by an earlier version, or edited) routes to nothing known:
    # the worker's repair at its start writes it again.
    text = proxy.read(path)
    proxy.write_atomically(path, "\n".join(line for line in text.splitlines() if not line.startswith(proxy.ROUTES_MARK)))
    assert "server 10.0.0.2:8000;" in proxy.read(path) and proxy.routed(path) == []
    proxy.write_atomically(path, text.replace('"addresses"', '"adresses"'))
    assert proxy.routed(path) == []


def test_an_apps_routes_are_rendered_with_its_certificates_in_one_place(write_config, tmp_path):
    instance = loaded(write_config)
    site = instance.apps["site"]
    assert certs.render_routes(instance, site, ["10.0.0.2"], SHA) == proxy.render(
        site, ["10.0.0.2"], SHA, certs.tls_routes(instance, site))
