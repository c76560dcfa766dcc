"""POST /hooks/APP: signatures of each forge, what is queued, ignored or refused, duplicates,
body limits, fuzzing, and a real `hookdeploy serve` killed in the middle of a burst.

In-process tests use Flask's test client on the real application, store and git repo;
the rest run `hookdeploy serve --no-worker` (waitress) as a subprocess on a free port.
"""

from __future__ import annotations

import http.client
import json
import logging
import os
import signal
import socket
import sqlite3
import subprocess
import threading
import time
import urllib.parse
import uuid
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings, target
from hypothesis import event as record_outcome
from hypothesis import strategies as st

from docker_helpers import site_files
from hookdeploy.core import config as configuration
from hookdeploy.web import webhooks
from hookdeploy.core.models import JobState, Trigger
from hookdeploy.web import receiver as receiver_module
from hookdeploy.web.app import create_app
from webhook_helpers import (FIXTURE_OF, HOOKDEPLOY, PROVIDER_OF, SECRET_OF, SECRETS, Server, Served, WebApp, delivery,
                             environment, fixture, form_encoded, push_body, request, signed_headers, write_config)

GITHUB_CHECK_SECRET = "It's a Secret to Everybody"
GITHUB_CHECK_VALUE = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"


@pytest.fixture(scope="module")
def secrets_in_environment():
    """conftest's fixture of that name, for the module: shared_receiver needs the secrets as long as it lives."""
    saved = {key: os.environ.get(key) for key in SECRETS}
    os.environ.update(SECRETS)
    yield SECRETS
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@pytest.fixture
def receiver(web_app) -> WebApp:
    """The Flask app on a real store, config and repo: receiver.post() delivers to /hooks/APP."""
    return web_app


@pytest.fixture(scope="module")
def shared_receiver(tmp_path_factory, secrets_in_environment) -> WebApp:
    """One receiver for the hypothesis tests (function-scoped fixtures do not reset between examples)."""
    return WebApp.of(Served.make(tmp_path_factory.mktemp("fuzz")))


def one_json_line(response) -> dict:
    text = response.get_data(as_text=True)
    assert response.mimetype == "application/json" and text.endswith("\n") and text.count("\n") == 1, text
    return json.loads(text)


# -- signatures -------------------------------------------------------------------------------


def test_github_documented_check_value(receiver, monkeypatch):
    assert webhooks.github_signature(GITHUB_CHECK_SECRET.encode(), b"Hello, World!") == GITHUB_CHECK_VALUE
    monkeypatch.setenv("SITE_SECRET", GITHUB_CHECK_SECRET)
    headers = {"X-GitHub-Event": "push", "X-GitHub-Delivery": "check", "Content-Type": "application/json"}
    # The signature passes (so the body is parsed, and refused as not JSON) ...
    accepted = receiver.post("site", b"Hello, World!", {**headers, "X-Hub-Signature-256": GITHUB_CHECK_VALUE})
    assert accepted.status_code == 400 and "JSON" in one_json_line(accepted)["error"]
    # ... and one changed digit fails it.
    wrong = GITHUB_CHECK_VALUE[:-1] + "f"
    refused = receiver.post("site", b"Hello, World!", {**headers, "X-Hub-Signature-256": wrong})
    assert refused.status_code == 401


@pytest.mark.parametrize("app", ["site", "lab", "tea"])
def test_signed_push_is_queued_as_a_webhook_job(receiver, app):
    sha = receiver.shas[-1]
    body, headers = delivery(app, sha)
    response = receiver.post(app, body, headers)
    assert response.status_code == 202, response.get_data(as_text=True)
    job = receiver.store.job(one_json_line(response)["job"])
    assert (job.app, job.sha, job.trigger, job.ref, job.state) == (app, sha, Trigger.WEBHOOK, "refs/heads/deploy",
                                                                   JobState.QUEUED)


@pytest.mark.parametrize("app", ["site", "lab", "tea"])
def test_wrong_missing_or_altered_signature_is_refused(receiver, app, caplog):
    provider = PROVIDER_OF[app]
    body = push_body(provider, receiver.shas[-1])
    wrong = signed_headers(provider, "not the secret", body)
    missing = {key: value for key, value in signed_headers(provider, SECRETS[SECRET_OF[app]], body).items()
               if key not in webhooks.SIGNATURE_HEADERS[provider]}
    right = signed_headers(provider, SECRETS[SECRET_OF[app]], body)
    altered = body.replace(receiver.shas[-1].encode(), receiver.shas[0].encode())
    assert altered != body
    for sent_body, headers, reason in ((body, wrong, "does not match"), (body, missing, "missing"),
                                       (altered, right, "does not match")):
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="hookdeploy.web.receiver"):
            response = receiver.post(app, sent_body, headers)
        if provider == "gitlab" and sent_body is altered:
            # GitLab sends the secret itself, not a signature of the body: an altered body cannot be told apart.
            assert response.status_code == 202
            continue
        # The sender learns that it was refused; the server's log says why.
        assert response.status_code == 401 and one_json_line(response)["error"] == receiver_module.NOT_ACCEPTED
        assert any(f"webhook for {app!r} refused" in line and reason in line for line in caplog.messages), caplog.messages
    assert receiver.job_count() == (1 if provider == "gitlab" else 0)
    if provider != "gitlab":  # a signature is not a token: the secret itself is no signature
        assert receiver.post(app, body, {**right, webhooks.SIGNATURE_HEADERS[provider][0]:
                                         SECRETS[SECRET_OF[app]]}).status_code == 401


def test_forgejo_headers_are_accepted(receiver):
    body = push_body("gitea", receiver.shas[1])
    gitea = signed_headers("gitea", SECRETS["GITEA_SECRET"], body)
    headers = {"X-Forgejo-Event": "push", "X-Forgejo-Delivery": "forgejo-1",
               "X-Forgejo-Signature": gitea["X-Gitea-Signature"], "Content-Type": "application/json"}
    response = receiver.post("tea", body, headers)
    assert response.status_code == 202
    assert receiver.post("tea", body, headers).get_json() == {"duplicate": response.get_json()["job"]}


def test_the_secret_is_read_per_request(receiver, monkeypatch, caplog):
    body, headers = delivery("site", receiver.shas[-1])
    monkeypatch.setenv("SITE_SECRET", "rotated")
    assert receiver.post("site", body, headers).status_code == 401
    monkeypatch.delenv("SITE_SECRET")
    with caplog.at_level(logging.WARNING, logger="hookdeploy.web.receiver"):
        unset = receiver.post("site", body, headers)
    # No secret set: refused as a wrong signature is (the sender is not told the app exists); the operator is warned.
    assert unset.status_code == 401 and one_json_line(unset)["error"] == receiver_module.NOT_ACCEPTED
    assert any("no webhook secret is set" in record.getMessage() and record.levelno == logging.WARNING
               for record in caplog.records)
    assert receiver.job_count() == 0


# -- what is queued, ignored or refused ------------------------------------------------------------


def test_ping_is_answered_and_queues_nothing(receiver):
    body = json.dumps(fixture("github-ping.json")).encode()
    headers = signed_headers("github", SECRETS["SITE_SECRET"], body, event="ping")
    response = receiver.post("site", body, headers)
    assert response.status_code == 200 and one_json_line(response) == {"ignored": "ping"}
    forged = receiver.post("site", body, signed_headers("github", "guess", body, event="ping"))
    assert forged.status_code == 401
    assert receiver.job_count() == 0


def test_form_encoded_github_delivery_is_queued(receiver):
    body = form_encoded(push_body("github", receiver.shas[0]))
    headers = signed_headers("github", SECRETS["SITE_SECRET"], body,
                             content_type="application/x-www-form-urlencoded")
    response = receiver.post("site", body, headers)
    assert response.status_code == 202
    assert receiver.store.job(response.get_json()["job"]).sha == receiver.shas[0]
    no_payload = b"other=1"
    refused = receiver.post("site", no_payload, signed_headers("github", SECRETS["SITE_SECRET"], no_payload,
                                                               content_type="application/x-www-form-urlencoded"))
    assert refused.status_code == 400 and "payload=" in one_json_line(refused)["error"]


def signed(receiver, app: str, body: bytes, **options):
    provider = PROVIDER_OF[app]
    return receiver.post(app, body, signed_headers(provider, SECRETS[SECRET_OF[app]], body, **options))


def test_other_events_branches_tags_and_deletions_are_ignored(receiver):
    sha = receiver.shas[-1]
    deleted = json.dumps(fixture("github-push-branch-deleted.json")).encode()
    gitlab_deleted = push_body("gitlab", "0" * 40, checkout_sha=None)
    cases = [
        ("site", push_body("github", sha), {"event": "issues"}, "not a push"),
        ("site", push_body("github", sha, ref="refs/heads/main"), {}, "not the deploy branch"),
        ("site", push_body("github", sha, ref="refs/tags/v1.0"), {}, "tag push"),
        ("site", deleted, {}, "deletion"),
        ("lab", push_body("gitlab", sha, ref="refs/tags/v1.0", object_kind="tag_push"), {"event": "Tag Push Hook"},
         "not a push"),
        ("lab", gitlab_deleted, {}, "deletion"),
        ("tea", push_body("gitea", sha, ref="refs/heads/other"), {}, "not the deploy branch"),
        ("tea", push_body("gitea", sha), {"event": "create"}, "not a push"),
    ]
    for app, body, options, reason in cases:
        response = signed(receiver, app, body, **options)
        assert response.status_code == 200, (app, reason, response.get_data(as_text=True))
        assert reason in one_json_line(response)["ignored"]
    assert receiver.job_count() == 0


def test_pinned_repository(receiver, caplog):
    other = push_body("github", receiver.shas[-1], repository={"full_name": "mallory/site"})
    with caplog.at_level(logging.WARNING, logger="hookdeploy.web.receiver"):
        ignored = signed(receiver, "pinned", other)
    assert ignored.status_code == 200 and "mallory/site" in one_json_line(ignored)["ignored"]
    assert any("another repository" in record.getMessage() for record in caplog.records)
    assert receiver.job_count() == 0
    pinned = signed(receiver, "pinned", push_body("github", receiver.shas[-1]))  # octo-org/site
    assert pinned.status_code == 202


def test_malformed_payloads_are_400(receiver):
    sha = receiver.shas[-1]
    cases = [
        (b"{not json", "JSON"),
        (b"[1, 2]", "object"),
        (b"\xff\xfe\x00{", "JSON"),
        (b"[" * 100_000 + b"]" * 100_000, "JSON"),
        (push_body("github", "not-a-sha"), "40-digit"),
        (push_body("github", sha[:39]), "40-digit"),
        (push_body("github", sha, ref="refs/heads/deploy\n"), "ref"),
        (push_body("github", sha, ref=["refs/heads/deploy"]), "ref"),
    ]
    config = configuration.load(write_config(Path(receiver.config.path).parent, receiver.config.apps["site"].repo,
                                             max_body=1_000_000))
    roomy = create_app(config, receiver.store).test_client()
    for body, reason in cases:
        headers = signed_headers("github", SECRETS["SITE_SECRET"], body)
        response = roomy.post("/hooks/site", data=body, headers=headers)
        assert response.status_code == 400 and reason in one_json_line(response)["error"], (body[:40], reason)
    no_event = signed_headers("github", SECRETS["SITE_SECRET"], push_body("github", sha))
    del no_event["X-GitHub-Event"]
    response = receiver.post("site", push_body("github", sha), no_event)
    assert response.status_code == 400 and "X-GitHub-Event" in one_json_line(response)["error"]
    bad_id = delivery("site", sha, delivery="two words")
    assert receiver.post("site", *bad_id).status_code == 400
    assert receiver.job_count() == 0


def test_uppercase_sha_is_queued_lowercase(receiver):
    response = signed(receiver, "site", push_body("github", receiver.shas[-1].upper()))
    assert response.status_code == 202
    assert receiver.store.job(response.get_json()["job"]).sha == receiver.shas[-1]


def test_unknown_app_and_app_without_webhook_table_are_answered_as_a_bad_signature(receiver):
    """No listing of app names through /hooks: an app that does not exist (or takes no webhooks) gets
    byte for byte the answer a real app gives a wrong signature, with any body and any headers."""
    body, headers = delivery("site", receiver.shas[-1])
    bad = receiver.post("site", body, {**headers, "X-Hub-Signature-256": "sha256=" + "0" * 64})
    assert bad.status_code == 401
    for path in ("/hooks/nosuch", "/hooks/plain", "/hooks/Site"):
        for sent_body, sent_headers in ((body, headers), (b"", {}), (b"anything", {"X-Gitlab-Token": "x"})):
            response = receiver.post("site", sent_body, sent_headers, path=path)
            assert (response.status_code, response.get_data(), sorted(response.headers.items())) == \
                   (bad.status_code, bad.get_data(), sorted(bad.headers.items())), path
    # The same answer names no app, known or not.
    assert not any(name in bad.get_data(as_text=True) for name in list(receiver.config.apps) + ["nosuch"])
    for path in ("/hooks/site/extra", "/hooks/..%2Fsite", "/hooks/"):
        response = receiver.post("site", body, headers, path=path)
        assert response.status_code == 404 and "error" in one_json_line(response)
    assert receiver.job_count() == 0


def test_body_over_max_body_is_413(receiver):
    big = b"{" + b" " * 70_000 + b"}"  # the config's max_body is 65536
    response = receiver.post("site", big, signed_headers("github", SECRETS["SITE_SECRET"], big))
    assert response.status_code == 413 and "max_body" in one_json_line(response)["error"]
    # A Content-Length over the limit is refused before a byte of the body is read.
    announced = receiver.client.post("/hooks/site", data=b"{}", environ_overrides={"CONTENT_LENGTH": "999999999"})
    assert announced.status_code == 413 and "max_body" in one_json_line(announced)["error"]


def test_other_methods_and_paths_answer_json(receiver):
    get = receiver.client.get("/hooks/site")
    assert get.status_code == 405 and "POST" in get.headers["Allow"] and "error" in one_json_line(get)
    assert receiver.client.get("/nowhere").status_code == 404
    health = receiver.client.get("/healthz")
    assert health.status_code == 200 and one_json_line(health) == {"ok": True}


def test_store_failure_is_503_with_retry_after(receiver):
    with sqlite3.connect(receiver.config.server.database) as db:
        db.execute("ALTER TABLE deliveries RENAME TO deliveries_moved")
    response = receiver.post("site", *delivery("site", receiver.shas[-1]))
    assert response.status_code == 503 and response.headers["Retry-After"].isdigit()
    assert "retry" in one_json_line(response)["error"]
    assert receiver.job_count() == 0


# -- duplicates and the access log ----------------------------------------------------------------


@pytest.mark.parametrize("app", ["site", "lab", "tea"])
def test_redelivery_is_a_duplicate(receiver, app):
    body, headers = delivery(app, receiver.shas[-1], delivery="same-delivery")
    first = receiver.post(app, body, headers)
    again = receiver.post(app, body, headers)
    assert first.status_code == 202 and again.status_code == 200
    assert one_json_line(again) == {"duplicate": first.get_json()["job"]}
    assert receiver.job_count() == 1


def test_gitlab_idempotency_key_wins_over_event_uuid(receiver):
    body = push_body("gitlab", receiver.shas[-1])
    first = signed_headers("gitlab", SECRETS["GITLAB_SECRET"], body, delivery="uuid-1") | {"Idempotency-Key": "k1"}
    retry = signed_headers("gitlab", SECRETS["GITLAB_SECRET"], body, delivery="uuid-2") | {"Idempotency-Key": "k1"}
    job = receiver.post("lab", body, first).get_json()["job"]
    assert receiver.post("lab", body, retry).get_json() == {"duplicate": job}


def test_one_access_line_per_webhook_without_secrets(receiver, caplog):
    body, headers = delivery("site", receiver.shas[-1], delivery="logged-delivery")
    with caplog.at_level(logging.INFO):
        job = receiver.post("site", body, headers).get_json()["job"]
        receiver.post("site", body, {**headers, "X-Hub-Signature-256": "sha256=" + "0" * 64})
    lines = [record.getMessage() for record in caplog.records if record.name == "hookdeploy.access"]
    assert len(lines) == 2
    assert all(part in lines[0] for part in ("app='site'", "event='push'", "delivery=logged-delivery",
                                             "status=202", "result=queued", f"job={job}"))
    assert "status=401" in lines[1] and "result=error" in lines[1]
    everything = caplog.text
    assert SECRETS["SITE_SECRET"] not in everything and headers["X-Hub-Signature-256"][7:] not in everything
    assert "0" * 64 not in everything


# -- fuzzing --------------------------------------------------------------------------------------

HEADER_NAMES = ["X-GitHub-Event", "X-GitHub-Delivery", "X-Hub-Signature-256", "X-Gitea-Signature",
                "X-Forgejo-Signature", "X-Gitlab-Token", "X-Gitlab-Event", "X-Gitea-Event", "Idempotency-Key",
                "Content-Type", "Authorization", "Transfer-Encoding", "X-Gitlab-Event-UUID"]
header_text = st.text(st.characters(min_codepoint=32, max_codepoint=255, blacklist_characters="\x7f"), max_size=80)
headers_strategy = st.dictionaries(st.sampled_from(HEADER_NAMES) | st.from_regex(r"X-[A-Za-z-]{1,20}", fullmatch=True),
                                   header_text | st.sampled_from(["push", "ping", "Push Hook", "sha256=",
                                                                  "application/json",
                                                                  "application/x-www-form-urlencoded"]),
                                   max_size=8)
segment = st.sampled_from(["site", "lab", "tea", "pinned", "plain", "nosuch"]) | st.text(max_size=30)
# Real push bodies too: sent without their signature, they must queue nothing either.
valid_pushes = [push_body(provider, "59b20b8d5c6ff8d09518454d4dd8b7a30f095ab5") for provider in FIXTURE_OF]
body_strategy = st.sampled_from(valid_pushes) | st.binary(max_size=3000) | st.builds(
    lambda payload: json.dumps(payload).encode(),
    st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=20),
                 lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
                 max_leaves=20))


hex_digest = st.text("0123456789abcdef", min_size=64, max_size=64)
# What a forge would send, with forged signatures: only the secret's holder can sign.
forge_headers = st.one_of(
    st.builds(lambda digest, delivery_id: {"X-GitHub-Event": "push", "X-GitHub-Delivery": delivery_id,
                                           "X-Hub-Signature-256": "sha256=" + digest}, hex_digest, header_text),
    st.builds(lambda digest, delivery_id: {"X-Gitea-Event": "push", "X-Gitea-Delivery": delivery_id,
                                           "X-Gitea-Signature": digest}, hex_digest, header_text),
    st.builds(lambda token, delivery_id: {"X-Gitlab-Event": "Push Hook", "X-Gitlab-Event-UUID": delivery_id,
                                          "X-Gitlab-Token": token}, header_text, header_text),
    st.just({}))


@pytest.mark.slow
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(method=st.sampled_from(["POST", "POST", "POST", "GET", "PUT", "DELETE", "HEAD", "OPTIONS", "PATCH"]),
       prefix=st.sampled_from(["/hooks/", "/hooks/", "/api/apps/", "/", "/healthz/", "/hooks//"]),
       name=segment, body=body_strategy, forged=forge_headers, extra=headers_strategy)
def test_fuzzed_requests_never_5xx_and_never_queue(shared_receiver, method, prefix, name, body, forged, extra):
    headers = {**forged, **extra}
    before = shared_receiver.job_count()
    response = shared_receiver.client.open(prefix + urllib.parse.quote(name, safe=""), method=method, data=body,
                                           headers=headers)
    assert response.status_code < 500 or (response.status_code == 503 and "Retry-After" in response.headers)
    if method != "HEAD" and response.status_code >= 400:
        assert "error" in one_json_line(response)
    assert shared_receiver.job_count() == before


deploy_ref = "refs/heads/deploy"
valid_push = {"ref": deploy_ref, "after": "59b20b8d5c6ff8d09518454d4dd8b7a30f095ab5", "object_kind": "push",
              "deleted": False, "repository": {"full_name": "octo-org/site"}}
changes = st.fixed_dictionaries(
    {},
    optional={
        "ref": st.sampled_from([deploy_ref, "refs/heads/main", "refs/tags/v1", "", None, 7]) | st.text(max_size=30),
        "after": st.sampled_from(["0" * 40, "F" * 40, "", None, []]) | st.text("0123456789abcdef", max_size=41),
        "deleted": st.booleans() | st.none() | st.just("true"),
        "object_kind": st.sampled_from(["push", "tag_push"]) | st.text(max_size=8),
        "repository": st.none() | st.dictionaries(st.sampled_from(["full_name", "name"]), st.text(max_size=12)),
    })
fuzzed_payload = st.builds(lambda start, changed: {**start, **changed}, st.sampled_from([valid_push, {}]), changes)
PUSH = "(the provider's push event)"


@pytest.mark.slow
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(app=st.sampled_from(["site", "lab", "tea"]), payload=fuzzed_payload,
       event=st.sampled_from([PUSH, PUSH, "ping", "issues", "Push Hook", "push"]) | header_text,
       form=st.booleans())
def test_fuzzed_signed_payloads_queue_only_valid_pushes(shared_receiver, app, payload, event, form):
    provider = PROVIDER_OF[app]
    if event == PUSH or not event:  # signed_headers sends the push event for an empty one
        event = min(webhooks.PUSH_EVENTS[provider])
    body = json.dumps(payload).encode()
    content_type = "application/json"
    if form:
        body, content_type = form_encoded(body), "application/x-www-form-urlencoded"
    headers = signed_headers(provider, SECRETS[SECRET_OF[app]], body, event=event,
                             delivery=str(uuid.uuid4()), content_type=content_type)
    before = shared_receiver.job_count()
    response = shared_receiver.post(app, body, headers)
    assert response.status_code in (200, 202, 400), response.get_data(as_text=True)
    answer = one_json_line(response)
    record_outcome(f"status {response.status_code}")
    target(float(response.status_code == 202), label="queued")
    if response.status_code == 202:
        job = shared_receiver.store.job(answer["job"])
        assert payload.get("ref") == deploy_ref and job.sha == payload["after"].lower()
        assert payload.get("deleted") is not True and job.sha != "0" * 40
        assert event in webhooks.PUSH_EVENTS[provider]
        assert shared_receiver.job_count() == before + 1
    else:
        assert shared_receiver.job_count() == before


# -- a real server ------------------------------------------------------------------------------


def deliveries_in_store(config_path: Path) -> dict[str, int]:
    database = configuration.load(config_path).server.database
    with sqlite3.connect(database) as db:
        return dict(db.execute("SELECT delivery_id, job FROM deliveries WHERE app = 'site'"))


@pytest.mark.slow
def test_duplicate_after_restart_and_clean_sigterm(served, tmp_path):
    config, port, shas = served
    body, headers = delivery("site", shas[-1], delivery="restart-delivery")
    server = served.server().start()
    try:
        status, answer, _ = request(port, "POST", "/hooks/site", body, headers)
        assert status == 202
    finally:
        assert server.stop(signal.SIGTERM) == 0
    assert "stopped" in (tmp_path / "serve.log").read_text()
    with served.server() as again:
        assert request(port, "POST", "/hooks/site", body, headers)[:2] == (200, {"duplicate": answer["job"]})
        status, second, _ = request(port, "POST", "/hooks/site", *delivery("site", shas[0]))
        assert status == 202 and second["job"] > answer["job"]
        assert again.stop(signal.SIGINT) == 0


def raw_response(sock: socket.socket) -> tuple[int, dict]:
    data = b""
    while b"\r\n\r\n" not in data or len(data.split(b"\r\n\r\n", 1)[1]) < 2 or not data.endswith(b"\n"):
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), json.loads(body)


@pytest.mark.slow
def test_413_far_over_the_limit_without_reading_it(served, tmp_path):
    config, port, shas = served  # max_body is 65536
    body, headers = delivery("site", shas[-1])
    with served.server() as server:
        before = server.rss_kib()
        for _ in range(3):
            with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
                head = "".join(f"{key}: {value}\r\n" for key, value in headers.items())
                sock.sendall(f"POST /hooks/site HTTP/1.1\r\nHost: x\r\n{head}Content-Length: {4 * 1024**3}\r\n\r\n"
                             .encode() + b"{" + b" " * 200_000)
                status, answer = raw_response(sock)
            assert status == 413 and "max_body (65536 bytes)" in answer["error"]
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:  # chunked, no Content-Length
            chunk = b" " * 32768
            sock.sendall(b"POST /hooks/site HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                         + b"".join(b"%x\r\n%s\r\n" % (len(chunk), chunk) for _ in range(4)))
            status, answer = raw_response(sock)
            assert status == 413
        assert server.rss_kib() - before < 20 * 1024  # 12 GiB announced, a few hundred KiB held
        assert request(port, "POST", "/hooks/site", body, headers)[0] == 202


def send_all(port: int, sha: str, ids: list[str], senders: int = 8) -> tuple[dict, list[threading.Thread]]:
    """Start `senders` threads delivering `ids` over keep-alive connections; (answers by id, threads).

    A thread stops at the first connection error (the server died)."""
    answers: dict[str, tuple[int, dict]] = {}

    def send(chunk: list[str]) -> None:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=20)
        for delivery_id in chunk:
            body, headers = delivery("site", sha, delivery=delivery_id)
            try:
                connection.request("POST", "/hooks/site", body=body, headers=headers)
                response = connection.getresponse()
                answers[delivery_id] = (response.status, json.loads(response.read()))
            except (OSError, http.client.HTTPException):
                return
        connection.close()

    threads = [threading.Thread(target=send, args=(ids[index::senders],)) for index in range(senders)]
    for thread in threads:
        thread.start()
    return answers, threads


@pytest.mark.slow
def test_sigkill_during_a_burst_loses_no_acknowledged_delivery(served, tmp_path):
    config, port, shas = served
    total = 480
    ids = [f"burst-{number}" for number in range(total)]

    server = served.server().start()
    answers, threads = send_all(port, shas[-1], ids)
    deadline = time.monotonic() + 30
    while len(answers) < total // 3 and time.monotonic() < deadline:
        time.sleep(0.002)
    server.process.send_signal(signal.SIGKILL)
    for thread in threads:
        thread.join(30)
    assert server.stop() == -signal.SIGKILL
    assert {status for status, _ in answers.values()} == {202}
    acknowledged = {delivery_id: answer["job"] for delivery_id, (_, answer) in answers.items()}
    assert total // 3 <= len(acknowledged) < total, "the kill did not land midway"
    stored = deliveries_in_store(config)
    for delivery_id, job in acknowledged.items():
        assert stored.get(delivery_id) == job, f"{delivery_id} got 202 for job {job} but is not in the store"

    with served.server():
        again, threads = send_all(port, shas[-1], ids)
        for thread in threads:
            thread.join(60)
    assert set(again) == set(ids)
    for delivery_id, (status, answer) in again.items():
        if delivery_id in acknowledged:
            assert (status, answer) == (200, {"duplicate": acknowledged[delivery_id]})
        elif delivery_id in stored:  # committed just before the kill, its 202 never sent
            assert (status, answer) == (200, {"duplicate": stored[delivery_id]})
        else:
            assert status == 202
    assert set(deliveries_in_store(config)) == set(ids)
    with sqlite3.connect(configuration.load(config).server.database) as db:
        assert db.execute("SELECT count(*) FROM jobs WHERE app = 'site'").fetchone()[0] == total


def test_serve_refuses_without_its_secrets(served, tmp_path):
    config, port, _ = served
    completed = subprocess.run([str(HOOKDEPLOY), "--config", str(config), "serve", "--no-worker"],
                               capture_output=True, text=True, timeout=60,
                               env=environment({"HOOKDEPLOY_SECRET": None, "SITE_SECRET": None}))
    assert completed.returncode == 2 and completed.stdout == ""
    lines = completed.stderr.strip().splitlines()
    assert len(lines) == 2
    assert "server.secret_env" in lines[0] and "HOOKDEPLOY_SECRET" in lines[0]
    assert "apps.site.webhook.secret_env" in lines[1] and "SITE_SECRET" in lines[1]
    with pytest.raises(OSError):
        request(port, "GET", "/healthz", timeout=1)


# -- end to end ----------------------------------------------------------------------------------


@pytest.mark.docker
def test_signed_webhook_goes_live_behind_the_proxy(instance, tmp_path):
    config = instance.configure({"site": {"webhook": {"provider": "github", "secret_env": "SITE_SECRET"}}})
    port = int(instance.config.server.listen.rpartition(":")[2])
    with Server(config, port, tmp_path / "serve.log", worker=True,
                env={"HOOKDEPLOY_FAULT": None}) as server:
        for version in ("first", "second"):  # as a forge does: each push, then its delivery
            sha = instance.commit("site", site_files(version))
            status, answer, _ = request(port, "POST", "/hooks/site", *delivery("site", sha))
            assert status == 202
            deadline = time.monotonic() + 120
            while not instance.store.job(answer["job"]).state.finished and time.monotonic() < deadline:
                time.sleep(0.2)
            job = instance.store.job(answer["job"])
            assert job.state is JobState.SUCCEEDED, (job, instance.events(job.id), server.log_path.read_text())
            live = instance.get("/")
            assert (live.status, live.release, live.body) == (200, sha[:12], f"<p>{version}</p>\n")
        assert server.stop(signal.SIGTERM) == 0


@pytest.mark.slow
def test_sigterm_during_a_burst_answers_what_it_took_and_exits_cleanly(served, tmp_path):
    config, port, shas = served
    ids = [f"term-{number}" for number in range(2000)]
    server = served.server().start()
    answers, threads = send_all(port, shas[-1], ids)
    while len(answers) < 100:
        time.sleep(0.002)
    stopping = time.monotonic()
    server.process.send_signal(signal.SIGTERM)
    for thread in threads:
        thread.join(30)
    # No second SIGTERM: one that lands while Python finalizes (handlers back to the default) kills it.
    assert server.stop(signum=None) == 0
    assert time.monotonic() - stopping < 5, "keep-alive clients held the shutdown up"
    assert "stopped" in (tmp_path / "serve.log").read_text()
    assert 100 <= len(answers) < len(ids)
    stored = deliveries_in_store(config)
    for delivery_id, (status, answer) in answers.items():
        assert status == 202 and stored[delivery_id] == answer["job"]
