"""What the HTTP side tells a caller who holds no token, and what an answer says about the server:
/metrics takes a read token unless [server] metrics_public; every answer carries no-store and
nosniff; a path under /api that no route takes asks for a token first; API errors name the app,
never a path on the server. (/hooks answering an unknown app as a wrong signature: test_receiver.)

In process on the real Flask app, store and repo; the answers on the wire (waitress's own refusals
included) through a real `hookdeploy serve`.
"""

from __future__ import annotations

import http.client
import logging
import shutil

import pytest

from conftest import toml_value
from hookdeploy.core import config as configuration
from hookdeploy.core.errors import ConfigError
from hookdeploy.web.receiver import NOT_ACCEPTED
from webhook_helpers import SECRETS, Served, WebApp, delivery, request

NOT_CACHED = {"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"}


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def with_server_keys(served: Served, **keys: object) -> Served:
    """`served` with keys added to its [server] table."""
    text = served.config.read_text()
    lines = "".join(f"{key} = {toml_value(value)}\n" for key, value in keys.items())
    served.config.write_text(text.replace("[server]\n", "[server]\n" + lines, 1))
    return served


# -- /metrics ----------------------------------------------------------------------------------------


def test_metrics_needs_a_read_token(web_app, read_token, deploy_token):
    web_app.store.enqueue("site", web_app.shas[0])
    anonymous = web_app.client.get("/metrics")
    assert anonymous.status_code == 401 and anonymous.headers["WWW-Authenticate"].startswith("Bearer")
    assert "token" in anonymous.get_json()["error"]
    assert "site" not in anonymous.get_data(as_text=True) and "hookdeploy_" not in anonymous.get_data(as_text=True)
    forged = web_app.client.get("/metrics", headers=bearer(read_token[:-2] + "xx"))
    assert forged.status_code == 401
    for token in (read_token, deploy_token):
        scraped = web_app.client.get("/metrics", headers=bearer(token))
        assert scraped.status_code == 200 and 'hookdeploy_queue_depth{app="site"} 1.0' in scraped.get_data(as_text=True)


def test_metrics_public_serves_without_a_token(served, secrets_in_environment):
    public = WebApp.of(with_server_keys(served, metrics_public=True))
    assert public.config.server.metrics_public is True
    scraped = public.client.get("/metrics")
    assert scraped.status_code == 200 and "hookdeploy_queue_depth" in scraped.get_data(as_text=True)
    assert public.client.get("/api/apps").status_code == 401  # only /metrics is opened


def test_metrics_public_takes_true_or_false(served):
    with pytest.raises(ConfigError) as refused:
        configuration.load(with_server_keys(served, metrics_public="yes").config)
    assert refused.value.problems == ["server.metrics_public: must be true or false, not 'yes'"]


# -- what every answer carries ---------------------------------------------------------------------------


def test_every_answer_is_not_cached_nor_sniffed(web_app, read_token, deploy_token):
    body, headers = delivery("site", web_app.shas[-1])
    answers = {
        "healthz": web_app.client.get("/healthz"),
        "api 200": web_app.client.get("/api/apps", headers=bearer(read_token)),
        "api 401": web_app.client.get("/api/apps"),
        "api 404": web_app.client.get("/api/jobs/999", headers=bearer(read_token)),
        "api 400": web_app.client.post("/api/apps/site/deploy", data=b"{", headers=bearer(deploy_token)),
        "hook 202": web_app.client.post("/hooks/site", data=body, headers=headers),
        "hook 401": web_app.client.post("/hooks/nosuch", data=body, headers=headers),
        "hook 405": web_app.client.get("/hooks/site"),
        "metrics 200": web_app.client.get("/metrics", headers=bearer(read_token)),
        "metrics 401": web_app.client.get("/metrics"),
        "404": web_app.client.get("/nowhere"),
        "sign-in page": web_app.client.get("/signin"),
    }
    for name, response in answers.items():
        assert {key: response.headers.get(key) for key in NOT_CACHED} == NOT_CACHED, name


# -- /api without a token --------------------------------------------------------------------------------


def test_paths_under_api_that_no_route_takes_ask_for_a_token_first(web_app, read_token, deploy_token):
    """Without a token, a path that does not exist answers as one that does: no map of the API for free."""
    for method, path in (("GET", "/api/nothing"), ("GET", "/api"), ("GET", "/api/"), ("GET", "/api/jobs/abc"),
                         ("POST", "/api/apps"), ("DELETE", "/api/apps/site/deploy"), ("GET", "/api/apps")):
        anonymous = web_app.client.open(path, method=method)
        assert anonymous.status_code == 401 and anonymous.headers["WWW-Authenticate"].startswith("Bearer"), path
    # With a token the same paths answer as before.
    assert web_app.client.get("/api/nothing", headers=bearer(read_token)).status_code == 404
    assert web_app.client.post("/api/apps", headers=bearer(read_token)).status_code == 403  # a POST needs deploy
    assert web_app.client.post("/api/apps", headers=bearer(deploy_token)).status_code == 405
    assert web_app.client.get("/api/apps", headers=bearer(read_token)).status_code == 200


# -- API errors name the app -----------------------------------------------------------------------------


def server_paths(web_app: WebApp) -> list[str]:
    """What no answer may contain: the repo's path, state_dir and the config file's path (and their folder)."""
    return [str(web_app.config.apps["site"].repo), web_app.config.server.state_dir, str(web_app.config.path),
            str(web_app.config.path.parent)]


def test_api_errors_name_the_app_not_server_paths(web_app, deploy_token, caplog):
    cases = [
        ("POST", "/api/apps/site/deploy", {"ref": "nope"}, 400, "ref 'nope' does not exist in the repo of site"),
        ("POST", "/api/apps/site/replay", {"sha": "abcdef1"}, 400, "no commit abcdef1 in the repo of site"),
        ("GET", "/api/apps/nosuch/jobs", None, 404, "unknown app 'nosuch'"),
        ("POST", "/api/apps/nosuch/deploy", {}, 404, "unknown app 'nosuch'"),
    ]
    with caplog.at_level(logging.INFO, logger="hookdeploy.web.http"):
        for method, path, body, status, message in cases:
            assert web_app.call(method, path, deploy_token, body) == (status, {"error": message}), path
    # The operator's log keeps what the caller was not told.
    assert any(str(web_app.config.apps["site"].repo) in line for line in caplog.messages)
    assert any(str(web_app.config.path) in line for line in caplog.messages)

    shutil.move(web_app.config.apps["site"].repo, web_app.config.path.parent / "moved.git")  # the repo is gone
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="hookdeploy.web.http"):
        for kind, body in (("deploy", {}), ("replay", {"sha": web_app.shas[0]})):
            status, answer = web_app.call("POST", f"/api/apps/site/{kind}", deploy_token, body)
            assert (status, answer) == (502, {"error": "the repo of site is not a git repository yet"}), kind
            assert not any(path in answer["error"] for path in server_paths(web_app))
    assert any("init-repo site" in line and str(web_app.config.apps["site"].repo) in line for line in caplog.messages)
    assert web_app.store.jobs() == []


def test_a_mirrored_repo_that_fails_to_fetch_names_the_app(tmp_path, write_config, secrets_in_environment,
                                                          deploy_token, caplog):
    gone = tmp_path / "nowhere" / "site.git"
    path = write_config({"mirrored": {"repo": f"file://{gone}", "branch": "deploy"}},
                        server={"secret_env": "HOOKDEPLOY_SECRET"})
    loaded = configuration.load(path)
    from hookdeploy.core.store import Store
    from hookdeploy.web.app import create_app

    web_app = WebApp(create_app(loaded, Store(loaded.server.database)).test_client(), None, loaded, [])
    with caplog.at_level(logging.WARNING, logger="hookdeploy.web.http"):
        status, answer = web_app.call("POST", "/api/apps/mirrored/deploy", deploy_token, {})
    assert (status, answer) == (502, {"error": "fetching the repo of mirrored failed"})
    assert any(str(gone) in line for line in caplog.messages)  # git's own words, for the operator


# -- on the wire -------------------------------------------------------------------------------------------


def raw_answer(port: int, method: str, path: str, body: bytes = b"", headers: dict | None = None) -> tuple[int, list, bytes]:
    """(status, headers but Date, body) as the server sent them."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        connection.request(method, path, body=body, headers=headers or {})
        response = connection.getresponse()
        return response.status, sorted((k, v) for k, v in response.getheaders() if k.lower() != "date"), response.read()
    finally:
        connection.close()


@pytest.mark.slow
def test_through_a_real_server(served, read_token):
    """waitress: an unknown app's answer is byte for byte a wrong signature's; /metrics asks for a token;
    waitress's own refusals carry the same headers; and metrics_public opens /metrics."""
    body, headers = delivery("site", served.shas[-1])
    with served.server() as server:
        port = served.port
        wrong = raw_answer(port, "POST", "/hooks/site", body, {**headers, "X-Hub-Signature-256": "sha256=" + "0" * 64})
        assert wrong[0] == 401 and NOT_ACCEPTED.encode() in wrong[2]
        for path, sent, sent_headers in (("/hooks/nosuch", body, headers), ("/hooks/plain", b"x", {}),
                                         ("/hooks/nosuchapp", b"", {"X-Gitlab-Token": SECRETS["GITLAB_SECRET"]})):
            assert raw_answer(port, "POST", path, sent, sent_headers) == wrong, path
        assert not any(name.encode() in wrong[2] for name in ("site", "lab", "tea", "pinned", "plain"))

        assert request(port, "GET", "/api/nothing")[0] == 401
        status, _, answer_headers = request(port, "GET", "/metrics")
        assert status == 401 and answer_headers["WWW-Authenticate"].startswith("Bearer")
        scraped = raw_answer(port, "GET", "/metrics", headers=bearer(read_token))
        assert scraped[0] == 200 and b"hookdeploy_queue_depth" in scraped[2]
        # Refused by waitress before Flask sees it (Content-Length over max_body): the same headers.
        too_big = raw_answer(port, "POST", "/hooks/site", b"{}", {"Content-Length": "999999999"})
        assert too_big[0] == 413 and set(NOT_CACHED.items()) <= set(too_big[1])
        for status, answer_headers, _ in (wrong, scraped):
            assert set(NOT_CACHED.items()) <= set(answer_headers)
        assert server.stop() == 0

    with with_server_keys(served, metrics_public=True).server() as server:
        scraped = raw_answer(served.port, "GET", "/metrics")
        assert scraped[0] == 200 and b"hookdeploy_queue_depth" in scraped[2]
        assert server.stop() == 0
