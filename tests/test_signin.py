"""Issue 20, sign-in, sessions and tokens: each request that got through before is refused now, with
its status and one-line reason, and a normal sign-in still works. The Flask app on a real config,
SQLite store and git repo; the `token` commands as subprocesses; then `hookdeploy serve` for real,
where the 400,000-field form is timed in the server's own CPU time.

Before this change: a sign-in without Origin (or with `Origin: null`) got a session (login CSRF); a
form of 400,000 fields was parsed (0.6 to 1.3 s of CPU, no login needed); a page on a name rebound
to the server's address could sign in and read the dashboard; signing out only asked the browser to
drop its cookie (a copy kept working for 12 hours); tokens could not be listed or revoked but all at
once, and lived as long as asked.
"""

from __future__ import annotations

import dataclasses
import http.client
import json
import os
import re
import subprocess
import time
from pathlib import Path

import pytest

from hookdeploy.core import config as configuration
from hookdeploy.core import tokens
from hookdeploy.core.errors import ConfigError
from hookdeploy.core.models import JobState
from hookdeploy.web.app import create_app
from hookdeploy.web.sessions import COOKIE
from webhook_helpers import API_SECRET, HOOKDEPLOY, ORIGIN, Served, environment, push_body, release, signed_headers

FORM = "application/x-www-form-urlencoded"


@pytest.fixture
def dash(web_app):
    """The web app with `site` live at shas[1]; its test client sends no Origin unless told."""
    release(web_app.store, "site", web_app.shas[0])
    release(web_app.store, "site", web_app.shas[1])
    return web_app


def sign_in(dash, token: str, headers: dict | None = None):
    """POST /signin with `token`, sending the dashboard's own Origin unless `headers` are given."""
    return dash.client.post("/signin", data={"token": token}, headers=ORIGIN if headers is None else headers)


def reason(response) -> str:
    """The one line a dashboard error page (or a JSON error) gives as its reason."""
    text = response.get_data(as_text=True)
    if response.mimetype == "application/json":
        return response.get_json()["error"]
    found = re.search(r'<p class="problem"[^>]*>(.*?)</p>', text, re.S) or re.search(r"<p>(.*?)</p>", text, re.S)
    assert found, text
    return " ".join(found.group(1).split())


def cli(served_config: Path, *arguments: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(HOOKDEPLOY), "--config", str(served_config), *arguments], capture_output=True,
                          text=True, env=environment(), timeout=60)


# -- 3. sign-in ----------------------------------------------------------------------------------------


def test_sign_in_without_origin_or_referer_is_refused(dash):
    token = dash.token("deploy")
    refused = sign_in(dash, token, headers={})
    assert refused.status_code == 403 and not refused.headers.getlist("Set-Cookie")
    assert "without an Origin or Referer" in reason(refused)

    other = sign_in(dash, token, headers={"Referer": "http://evil.example/login-csrf.html"})
    assert other.status_code == 403 and "another site" in reason(other)
    # A browser that sends a same-origin Referer (Referrer-Policy: same-origin) but no Origin still signs in.
    kept = sign_in(dash, token, headers={"Referer": "http://localhost/signin"})
    assert kept.status_code == 303 and kept.headers["Location"] == "/"
    assert dash.client.get("/").status_code == 200


def test_sign_in_from_a_page_with_no_origin_is_refused(dash):
    refused = sign_in(dash, dash.token("deploy"), headers={"Origin": "null"})
    assert refused.status_code == 403 and not refused.headers.getlist("Set-Cookie")
    assert "Origin: null" in reason(refused)
    assert dash.client.get("/").status_code == 303


def test_every_dashboard_post_needs_its_origin_not_only_the_sign_in(dash):
    dash.sign_in()
    page = dash.client.get("/").get_data(as_text=True)
    csrf = re.search(r'name="csrf" value="([0-9a-f]+)"', page).group(1)
    for headers in ({}, {"Origin": "null"}):
        refused = dash.client.post("/apps/site/rollback", data={"csrf": csrf}, headers=headers)
        assert refused.status_code == 403, headers
    assert dash.store.jobs(states=(JobState.QUEUED,)) == []
    assert dash.client.post("/apps/site/rollback", data={"csrf": csrf}, headers=ORIGIN).status_code == 303


def test_a_form_of_many_fields_is_refused_before_it_is_parsed(dash, monkeypatch):
    parsed = []
    from werkzeug import formparser

    original = formparser.FormDataParser.parse
    monkeypatch.setattr(formparser.FormDataParser, "parse",
                        lambda self, *arguments, **options: parsed.append(1) or original(self, *arguments, **options))
    huge = b"&".join([b"a=1"] * 400_000)
    started = time.perf_counter()
    refused = dash.client.post("/signin", data=huge, content_type=FORM, headers=ORIGIN)
    assert refused.status_code == 413 and "bytes" in reason(refused)
    assert time.perf_counter() - started < 1.0
    few_bytes_many_fields = b"&".join([b"a"] * 5)
    refused = dash.client.post("/signin", data=few_bytes_many_fields, content_type=FORM, headers=ORIGIN)
    assert refused.status_code == 413 and "5 fields" in reason(refused)
    multipart = dash.client.post("/signin", data={"token": "x", "file": (__import__("io").BytesIO(b"x"), "x.txt")},
                                 headers=ORIGIN)
    assert multipart.status_code == 415 and FORM in reason(multipart)
    assert parsed == []  # none of them reached werkzeug's form parser

    assert sign_in(dash, dash.token("read")).status_code == 303 and parsed == [1]
    assert dash.client.get("/").status_code == 200


def test_a_page_on_a_rebound_name_cannot_sign_in_or_read_the_dashboard(dash):
    # DNS rebinding: evil.example first resolves to the attacker, then to this server; the page's
    # own origin is http://evil.example, so its Origin check passes and only the Host tells.
    token = dash.token("deploy")
    rebound = {"Host": "evil.example:8080", "Origin": "http://evil.example:8080"}
    refused = sign_in(dash, token, headers=rebound)
    assert refused.status_code == 400 and not refused.headers.getlist("Set-Cookie")
    assert "evil.example:8080" in reason(refused) and "server.hostnames" in reason(refused)

    assert sign_in(dash, token).status_code == 303  # the same token, from the dashboard's own page
    for path in ("/", "/apps/site", "/jobs/1", "/jobs/1/events", "/signin"):
        assert dash.client.get(path, headers={"Host": "evil.example:8080"}).status_code == 400, path
        assert dash.client.get(path).status_code == 200, path
    # What a forge, a monitor or CI reaches keeps answering whatever Host it sends.
    assert dash.client.get("/healthz", headers={"Host": "evil.example"}).status_code == 200
    assert dash.call("GET", "/api/apps", token)[0] == 200
    assert dash.client.get("/api/apps", headers={"Host": "evil.example", "Authorization": f"Bearer {token}"}
                           ).status_code == 200
    body = push_body("github", dash.shas[2])
    delivered = dash.client.post("/hooks/site", data=body, headers={
        **signed_headers("github", "site webhook secret", body), "Host": "hooks.forge.example"})
    assert delivered.status_code == 202


def test_listed_hostnames_are_the_only_names_the_dashboard_answers_to(dash):
    server = dataclasses.replace(dash.config.server, hostnames=("deploy.example.com", "10.0.0.5:8443", "[2001:db8::5]"))
    client = create_app(dataclasses.replace(dash.config, server=server), dash.store).test_client()
    token = dash.token("read")
    for host, status in (("deploy.example.com", 303), ("DEPLOY.example.com.:8080", 303), ("10.0.0.5:8443", 303),
                         ("10.0.0.5:8080", 400), ("[2001:db8::5]:8080", 303), ("[2001:db8::6]", 400),
                         ("localhost", 400), ("evil.example", 400), ("a b", 400)):
        response = client.post("/signin", data={"token": token},
                               headers={"Host": host, "Origin": f"http://{host}"})
        assert response.status_code == status, host
        if status == 303:
            assert response.headers["Location"] == "/"  # a path: never a URL made from the Host


def test_with_no_hostnames_listening_on_every_address_any_address_is_the_dashboards_but_no_name(dash):
    server = dataclasses.replace(dash.config.server, listen="0.0.0.0:8080")
    client = create_app(dataclasses.replace(dash.config, server=server), dash.store).test_client()
    token = dash.token("read")
    for host, status in (("192.0.2.7:8080", 303), ("[2001:db8::1]:8080", 303), ("localhost:8080", 303),
                         ("rebound.example:8080", 400)):
        response = client.post("/signin", data={"token": token}, headers={"Host": host, "Origin": f"http://{host}"})
        assert response.status_code == status, host


# -- 4. sessions and tokens ----------------------------------------------------------------------------


def test_sign_out_ends_the_session_on_the_server_so_a_copied_cookie_stops_working(dash):
    dash.sign_in()
    copied = dash.client.get_cookie(COOKIE).value
    assert dash.client.get("/").status_code == 200
    csrf = dash.csrf()
    assert dash.client.post("/signout", data={"csrf": csrf}, headers=ORIGIN).status_code == 303

    dash.client.set_cookie(COOKIE, copied)  # before: 200 for the rest of its 12 hours
    assert dash.client.get("/").status_code == 303
    refused = dash.client.post("/apps/site/rollback", data={"csrf": csrf}, headers=ORIGIN)
    assert refused.status_code == 401 and "not signed in" in reason(refused)
    assert dash.store.jobs(states=(JobState.QUEUED,)) == []
    dash.sign_in()  # a new session of the same browser works
    assert dash.client.get("/").status_code == 200


def test_ended_sessions_are_forgotten_once_they_would_have_expired(dash):
    with dash.store.transaction() as db:  # two sign-outs of earlier days, one past its expiry
        db.execute("INSERT INTO ended_sessions (id, expires_at) VALUES ('old', '2000-01-01T00:00:00.000Z'), "
                   "('new', '2999-01-01T00:00:00.000Z')")
    assert dash.store.session_ended("old") and dash.store.session_ended("new")
    dash.sign_in()
    dash.client.post("/signout", data={"csrf": dash.csrf()}, headers=ORIGIN)
    ended = [row["id"] for row in dash.store.query("SELECT id FROM ended_sessions")]
    assert "old" not in ended and "new" in ended and len(ended) == 2


def test_a_revoked_token_is_refused_and_its_sessions_end(dash, served):
    token = dash.token("deploy")
    assert sign_in(dash, token).status_code == 303 and dash.client.get("/").status_code == 200
    assert dash.call("GET", "/api/apps", token)[0] == 200
    [listed] = json.loads(cli(served.config, "token", "list", "--json").stdout)

    revoked = cli(served.config, "token", "revoke", listed["id"])
    assert revoked.returncode == 0 and listed["id"] in revoked.stdout and token not in revoked.stdout
    status, answer = dash.call("GET", "/api/apps", token)
    assert status == 401 and f"{listed['id']} was revoked" in answer["error"]
    assert dash.client.get("/").status_code == 303  # the session signed in with it ended too
    again = sign_in(dash, token)
    assert again.status_code == 401 and "revoked" in reason(again)

    twice = cli(served.config, "token", "revoke", listed["id"])
    assert twice.returncode == 0 and "already" in twice.stdout
    unknown = cli(served.config, "token", "revoke", "0123456789abcdef")
    assert unknown.returncode == 2 and unknown.stdout == "" and unknown.stderr.count("\n") == 1
    assert "token list" in unknown.stderr


def test_a_token_the_store_never_recorded_is_refused(dash):
    # Made before this change (or by another hookdeploy with the same secret): signed, unexpired, unknown.
    unrecorded = tokens.create(API_SECRET, "deploy")
    status, answer = dash.call("POST", "/api/apps/site/deploy", unrecorded)
    assert status == 401 and "not on record" in answer["error"]
    refused = sign_in(dash, unrecorded)
    assert refused.status_code == 401 and "not on record" in reason(refused)
    assert dash.store.jobs(states=(JobState.QUEUED,)) == []


def test_check_asks_the_store_for_the_id_the_signature_names(store):
    token = tokens.issue(API_SECRET, store, "read", 600)
    claims = tokens.check(API_SECRET, store, token)
    assert (claims.scope, claims.expires - claims.issued) == ("read", 600)
    assert store.token(claims.id).expires_at > store.token(claims.id).created_at
    assert tokens.check(API_SECRET, store, token, max_age=60).expires == claims.issued + 60
    with store.transaction() as db:  # a record that says less than the token: the record wins
        db.execute("UPDATE tokens SET scope = 'deploy' WHERE id = ?", (claims.id,))
    with pytest.raises(tokens.InvalidToken, match="not on record"):
        tokens.check(API_SECRET, store, token)
    with pytest.raises(tokens.InvalidToken, match="not on record"):
        tokens.check(API_SECRET, store, tokens.create(API_SECRET, "read"))
    with store.transaction() as db:
        db.execute("UPDATE tokens SET scope = 'read' WHERE id = ?", (claims.id,))
    store.revoke_token(claims.id)
    with pytest.raises(tokens.InvalidToken, match="revoked"):
        tokens.check(API_SECRET, store, token)
    with pytest.raises(tokens.InvalidToken, match="invalid"):  # the signature is still checked first
        tokens.check(b"another secret", store, token)


def test_token_list_shows_ids_scopes_and_lifetimes_never_the_tokens(served, secrets_in_environment):
    made = [cli(served.config, "token", "create", *options).stdout.strip()
            for options in ((), ("--scope", "deploy", "--ttl", "3600"))]
    assert all(made)
    listed = json.loads(cli(served.config, "token", "list", "--json").stdout)
    assert [(entry["scope"], entry["state"], entry["revoked_at"]) for entry in listed] == [
        ("read", "active", None), ("deploy", "active", None)]
    ids = [tokens.read(API_SECRET, token).id for token in made]
    assert [entry["id"] for entry in listed] == ids
    assert set(listed[0]) == {"id", "scope", "created_at", "expires_at", "revoked_at", "state"}

    cli(served.config, "token", "revoke", ids[0])
    text = cli(served.config, "token", "list")
    assert text.returncode == 0 and text.stdout.count("\n") == 2
    first, second = text.stdout.splitlines()
    assert first.startswith(ids[0]) and " read " in first and "revoked 20" in first
    assert second.startswith(ids[1]) and " deploy " in second and second.endswith("active")
    assert not any(token in text.stdout for token in made)
    assert not any(token.encode() in Path(served.config.parent / "state" / "hookdeploy.db").read_bytes()
                   for token in made)


def test_token_create_longer_than_max_token_ttl_is_refused(served, secrets_in_environment):
    refused = cli(served.config, "token", "create", "--ttl", str(90 * 24 * 3600 + 1))
    assert refused.returncode == 2 and refused.stdout == ""
    assert refused.stderr.count("\n") == 1 and "server.max_token_ttl" in refused.stderr
    assert cli(served.config, "token", "list", "--json").stdout.strip() == "[]"  # nothing recorded
    assert cli(served.config, "token", "create", "--ttl", str(90 * 24 * 3600)).returncode == 0

    text = served.config.read_text().replace("[server]\n", "[server]\nmax_token_ttl = 3600\n", 1)
    served.config.write_text(text)
    assert cli(served.config, "token", "create", "--ttl", "3601").returncode == 2
    default = cli(served.config, "token", "create").stdout.strip()  # 30 days would be too long: capped
    claims = tokens.read(API_SECRET, default)
    assert claims.expires - claims.issued == 3600


def test_max_token_ttl_also_shortens_tokens_made_before_it_was_lowered(dash):
    token = dash.token("read", ttl=10 * 24 * 3600)
    assert dash.call("GET", "/api/apps", token)[0] == 200
    shorter = dataclasses.replace(dash.config.server, max_token_ttl=1)
    client = create_app(dataclasses.replace(dash.config, server=shorter), dash.store).test_client()
    # itsdangerous stamps whole seconds: with max_age 1 the token is expired once its second is over
    time.sleep(max(0.0, tokens.read(API_SECRET, token).issued + 1.05 - time.time()))
    answer = client.get("/api/apps", headers={"Authorization": f"Bearer {token}"})
    assert answer.status_code == 401 and "expired" in answer.get_json()["error"]


@pytest.mark.parametrize("keys, problem", [
    ('hostnames = ["deploy.example.com", "bad host"]', "server.hostnames: 'bad host' is not a hostname"),
    ('hostnames = ["*.example.com"]', "server.hostnames: '*.example.com' is not a hostname"),
    ('hostnames = ["example.com:0"]', "server.hostnames: 'example.com:0'"),
    ('hostnames = ["http://example.com"]', "server.hostnames: 'http://example.com'"),
    ('hostnames = [1]', "server.hostnames"),
    ('hostnames = "example.com"', "server.hostnames"),
    ("max_token_ttl = 0", "server.max_token_ttl: must be a positive number of seconds"),
    ('max_token_ttl = "90d"', "server.max_token_ttl"),
])
def test_bad_hostnames_and_max_token_ttl_are_named(write_config, keys, problem):
    path = write_config(f'[server]\n{keys}\n[apps.site]\nrepo = "/r.git"\n')
    with pytest.raises(ConfigError) as raised:
        configuration.load(path)
    assert any(found.startswith(problem) for found in raised.value.problems), raised.value.problems


def test_hostnames_are_kept_in_one_spelling(write_config):
    path = write_config('[server]\nhostnames = ["Deploy.Example.COM.", "[::1]:8443", "[::1]", "10.0.0.5"]\n'
                        '[apps.site]\nrepo = "/r.git"\n')
    server = configuration.load(path).server
    assert server.hostnames == ("deploy.example.com", "[::1]:8443", "[::1]", "10.0.0.5")
    assert server.max_token_ttl == 90 * 24 * 3600


# -- through `hookdeploy serve` --------------------------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of process `pid` so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def http_post(port: int, path: str, body: bytes, headers: dict) -> tuple[int, str, http.client.HTTPMessage]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        connection.request("POST", path, body=body, headers=headers)
        response = connection.getresponse()
        return response.status, response.read().decode(errors="replace"), response.headers
    finally:
        connection.close()


@pytest.mark.slow
def test_through_a_real_server_each_hole_is_closed_and_a_normal_sign_in_works(tmp_path, secrets_in_environment):
    served = Served.make(tmp_path, max_body=5242880)  # the default: room for 400,000 fields
    token = cli(served.config, "token", "create", "--scope", "deploy").stdout.strip()
    own = {"Content-Type": FORM, "Origin": f"http://127.0.0.1:{served.port}"}
    form = f"token={token}".encode()
    with served.server() as server:
        pid = server.process.pid
        before = cpu_seconds(pid)
        status, page, _ = http_post(served.port, "/signin", b"&".join([b"a=1"] * 400_000), own)
        spent = cpu_seconds(pid) - before
        assert status == 413 and "forms are under 16384 bytes" in page
        assert spent < 0.2, f"{spent:.3f} s of CPU for a refused form"  # parsed, it cost 0.6 to 1.3 s

        status, page, _ = http_post(served.port, "/signin", form, {**own, "Origin": "null"})
        assert status == 403 and "Origin: null" in page
        status, page, _ = http_post(served.port, "/signin", form, {"Content-Type": FORM})
        assert status == 403 and "without an Origin or Referer" in page
        rebound = {"Content-Type": FORM, "Host": f"rebound.example:{served.port}",
                   "Origin": f"http://rebound.example:{served.port}"}
        status, page, headers = http_post(served.port, "/signin", form, rebound)
        assert status == 400 and "server.hostnames" in page and headers["Set-Cookie"] is None

        status, _, headers = http_post(served.port, "/signin", form, own)
        assert status == 303 and headers["Location"] == "/"
        cookie = headers["Set-Cookie"].split(";")[0]
        connection = http.client.HTTPConnection("127.0.0.1", served.port, timeout=10)
        connection.request("GET", "/", headers={"Cookie": cookie})
        page = connection.getresponse().read().decode()
        connection.close()
        assert "deploy scope" in page
        csrf = re.search(r'name="csrf" value="([0-9a-f]+)"', page).group(1)
        status, _, _ = http_post(served.port, "/signout", f"csrf={csrf}".encode(), {**own, "Cookie": cookie})
        assert status == 303
        status, page, _ = http_post(served.port, "/apps/site/rollback", f"csrf={csrf}".encode(),
                                    {**own, "Cookie": cookie})
        assert status == 401 and "not signed in" in page
        assert server.stop() == 0
