"""The handbook's nginx in front of `hookdeploy serve` (docs/guides/tls-proxy.md, once the README's: hence
the module's name), for tests and benches: its two ```nginx blocks (conf.d/hookdeploy.conf, and the
connection room of nginx.conf) taken from the page as they are, made to serve TLS on a free loopback port
with a test certificate, and run from hookdeploy-nginx:local with host networking. Every test of the proxy
runs this, so the guide cannot drift from what is tested.
"""

from __future__ import annotations

import re
import secrets
import socket
import ssl
import textwrap
import time
from pathlib import Path

GUIDE = Path(__file__).resolve().parent.parent / "docs" / "guides" / "tls-proxy.md"
IMAGE = "hookdeploy-nginx:local"
CONTAINER_CONF_D = "/etc/nginx/conf.d"
MAIN_CONF = "nginx.conf.main"  # beside hookdeploy.conf, mounted as nginx.conf; not *.conf, which conf.d includes
# The image's own nginx.conf, but for the guide's block in place of its `events` block, and no access
# log (thousands of slow clients' lines would only fill the container's log).
NGINX_CONF = """\
user nginx;
worker_processes auto;
error_log /dev/stderr notice;
pid /var/run/nginx.pid;

{main}
http {{
    include mime.types;
    default_type application/octet-stream;
    access_log off;
    include {conf_d}/*.conf;
}}
"""


def readme_blocks() -> tuple[str, str]:
    """(conf.d/hookdeploy.conf, the nginx.conf lines) as the guide gives them."""
    blocks = [textwrap.dedent(block) for block in
              re.findall(r"```nginx\n(.*?)```", GUIDE.read_text(encoding="utf-8"), re.DOTALL)]
    site = [block for block in blocks if "proxy_pass" in block]
    main = [block for block in blocks if "worker_connections" in block]
    assert len(site) == 1 and len(main) == 1, f"{GUIDE} should have one ```nginx block with proxy_pass " \
                                              "and one with worker_connections"
    return site[0], main[0]


def directive(name: str) -> str:
    """The value of a directive in the guide's conf.d block, e.g. directive("client_header_timeout") == "10s"."""
    found = re.findall(rf"^\s*{name}\s+([^;]+);", readme_blocks()[0], re.MULTILINE)
    assert len(found) == 1, f"the guide's nginx block should set {name} once"
    return found[0].strip()


def seconds(value: str) -> float:
    """An nginx time ("10s", "1m", "500ms", "30") in seconds."""
    number, unit = re.fullmatch(r"(\d+)(ms|s|m|h)?", value).groups()
    return int(number) * {"ms": 0.001, "s": 1, None: 1, "m": 60, "h": 3600}[unit]


def _replace(text: str, pattern: str, replacement: str) -> str:
    changed, count = re.subn(pattern, replacement, text, flags=re.MULTILINE)
    assert count == 1, f"the guide's nginx block should match {pattern!r} once, not {count} times"
    return changed


def write_config(folder: Path, port: int, upstream: int) -> None:
    """nginx.conf (as MAIN_CONF) and hookdeploy.conf in `folder` (which holds cert.pem and key.pem): the guide's,
    listening with TLS on 127.0.0.1:port, passing on to 127.0.0.1:upstream."""
    site, main = readme_blocks()
    site = _replace(site, r"^(\s*)listen 443 ssl;", rf"\1listen 127.0.0.1:{port} ssl;")
    site = _replace(site, r"^(\s*)ssl_certificate \S+;", rf"\1ssl_certificate {CONTAINER_CONF_D}/cert.pem;")
    site = _replace(site, r"^(\s*)ssl_certificate_key \S+;", rf"\1ssl_certificate_key {CONTAINER_CONF_D}/key.pem;")
    site = _replace(site, r"proxy_pass http://127\.0\.0\.1:8080;", f"proxy_pass http://127.0.0.1:{upstream};")
    (folder / "hookdeploy.conf").write_text(site)
    (folder / MAIN_CONF).write_text(NGINX_CONF.format(main=main, conf_d=CONTAINER_CONF_D))


def start(docker_engine, folder: Path, port: int, upstream: int, label: str):
    """Run the guide's nginx from `folder` (cert.pem, key.pem, and any other *.conf to include);
    return the container, once nginx accepts TLS on 127.0.0.1:port."""
    write_config(folder, port, upstream)
    container = docker_engine.containers.run(
        IMAGE, detach=True, name=f"hookdeploy-test-nginx-{secrets.token_hex(4)}", network_mode="host",
        labels={"hookdeploy.test": label},
        volumes={str(folder): {"bind": CONTAINER_CONF_D, "mode": "ro"},
                 str(folder / MAIN_CONF): {"bind": "/etc/nginx/nginx.conf", "mode": "ro"}})
    try:
        wait_for_tls(container, port, folder / "cert.pem")
    except BaseException:
        container.remove(force=True)
        raise
    return container


def wait_for_tls(container, port: int, cafile: Path, timeout: float = 30) -> None:
    """Wait until a TLS handshake on 127.0.0.1:port succeeds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        container.reload()
        if container.status == "exited":
            raise AssertionError(f"nginx exited: {container.logs().decode(errors='replace')}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=2) as plain:
                with client_context(cafile).wrap_socket(plain, server_hostname="localhost"):
                    return
        except OSError:
            time.sleep(0.1)
    raise AssertionError(f"nginx did not answer on {port} within {timeout} s: "
                         f"{container.logs().decode(errors='replace')}")


def client_context(cafile: Path) -> ssl.SSLContext:
    """A TLS client trusting the test certificate (made for the name "localhost")."""
    return ssl.create_default_context(cafile=str(cafile))
