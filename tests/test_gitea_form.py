"""Gitea and Forgejo deliveries as Gitea sends them: form-encoded bodies signed over the JSON payload
(services/webhook/deliver.go signs PayloadContent, then sends `payload=<urlencoded JSON>`), with the whole
header set Gitea adds, and Gitea's "Test Delivery" from a repository without commits.

In process on Flask's test client (real store, config and repo), and once through `hookdeploy serve`.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import urllib.parse
import uuid

import pytest

from webhook_helpers import SECRETS, fixture, form_encoded, request

FORM = "application/x-www-form-urlencoded"
SECRET = SECRETS["GITEA_SECRET"]
ZERO = "0" * 40


def gitea_payload(sha: str, **changes) -> bytes:
    """A Gitea push payload as Go's json.Marshal writes it: UTF-8, compact, `&` `<` `>` escaped."""
    payload = fixture("gitea-push.json")
    payload.update(after=sha, ref="refs/heads/deploy", **changes)
    payload["commits"][0]["message"] = "Café & <b>menu</b> ✓ 100% + more\n"
    text = json.dumps(payload, ensure_ascii=False, separators=(",", ":"))
    return text.replace("&", "\\u0026").replace("<", "\\u003c").replace(">", "\\u003e").encode()


def gitea_delivery(payload: bytes, *, form: bool = True, secret: str = SECRET, signed: bytes | None = None,
                   forgejo: bool = False) -> tuple[bytes, dict[str, str]]:
    """(body, headers) exactly as Gitea's deliver.go builds them: every signature header over the payload."""
    body = form_encoded(payload) if form else payload
    content = payload if signed is None else signed
    sha256 = hmac.new(secret.encode(), content, hashlib.sha256).hexdigest()
    sha1 = hmac.new(secret.encode(), content, hashlib.sha1).hexdigest()
    delivery = str(uuid.uuid4())
    headers = {
        "Content-Type": FORM if form else "application/json",
        "User-Agent": "Go-http-client/1.1",
        "X-Gitea-Delivery": delivery, "X-Gitea-Event": "push", "X-Gitea-Event-Type": "push",
        "X-Gitea-Signature": sha256,
        "X-Gogs-Delivery": delivery, "X-Gogs-Event": "push", "X-Gogs-Event-Type": "push", "X-Gogs-Signature": sha256,
        "X-Hub-Signature": "sha1=" + sha1, "X-Hub-Signature-256": "sha256=" + sha256,
        "X-GitHub-Delivery": delivery, "X-GitHub-Event": "push", "X-GitHub-Event-Type": "push",
    }
    if forgejo:  # Forgejo sends its own names too; only the signature header is renamed here
        headers["X-Forgejo-Signature"] = headers.pop("X-Gitea-Signature")
        headers.update({"X-Forgejo-Delivery": delivery, "X-Forgejo-Event": "push"})
    return body, headers


def test_gitea_form_delivery_with_real_headers_is_queued(web_app):
    sha = web_app.shas[-1]
    payload = gitea_payload(sha)
    body, headers = gitea_delivery(payload)
    assert b"%25" in body and b"+" in body and b"%E2%9C%93" in body  # really percent-encoded, as Go does
    response = web_app.post("tea", body, headers)
    assert response.status_code == 202, response.get_data(as_text=True)
    assert web_app.store.job(response.get_json()["job"]).sha == sha
    json_body, json_headers = gitea_delivery(gitea_payload(web_app.shas[0]), form=False)
    assert web_app.post("tea", json_body, json_headers).status_code == 202


def test_forgejo_form_delivery_is_queued(web_app):
    body, headers = gitea_delivery(gitea_payload(web_app.shas[-1]), forgejo=True)
    response = web_app.post("tea", body, headers)
    assert response.status_code == 202, response.get_data(as_text=True)


def test_form_signatures_over_the_wrong_bytes_are_refused(web_app):
    payload = gitea_payload(web_app.shas[-1])
    # Gitea signed over the raw form body (what hookdeploy wrongly expected before): not Gitea's signature.
    body, headers = gitea_delivery(payload, signed=form_encoded(payload))
    assert web_app.post("tea", body, headers).status_code == 401
    body, headers = gitea_delivery(payload, secret="another secret")
    assert web_app.post("tea", body, headers).status_code == 401
    # A payload changed after signing: the signature covers the value exactly as sent.
    body, headers = gitea_delivery(payload)
    tampered = body.replace(b"Caf%C3%A9", b"Cafe", 1)
    assert tampered != body and web_app.post("tea", tampered, headers).status_code == 401
    # No payload field to check: the same 401 as any wrong signature (nothing parsed, no 400 for strangers).
    assert web_app.post("tea", b"other=1", gitea_delivery(b"other=1", form=False)[1] | {"Content-Type": FORM}
                        ).status_code == 401
    assert web_app.post("nosuch", body, headers).status_code == 401
    assert web_app.job_count() == 0


def test_github_form_signature_stays_over_the_raw_body(web_app):
    payload = json.dumps({**fixture("github-push.json"), "after": web_app.shas[-1],
                          "ref": "refs/heads/deploy"}).encode()
    body = form_encoded(payload)

    def github(signed: bytes) -> dict[str, str]:
        digest = hmac.new(SECRETS["SITE_SECRET"].encode(), signed, hashlib.sha256).hexdigest()
        return {"X-GitHub-Event": "push", "X-GitHub-Delivery": str(uuid.uuid4()), "Content-Type": FORM,
                "X-Hub-Signature-256": "sha256=" + digest}

    assert web_app.post("site", body, github(payload)).status_code == 401
    assert web_app.post("site", body, github(body)).status_code == 202


def test_gitea_test_delivery_is_named_so(web_app):
    # Gitea's "Test Delivery" on a repository without commits: before = after = forty zeros.
    body, headers = gitea_delivery(gitea_payload(ZERO, before=ZERO))
    response = web_app.post("tea", body, headers)
    assert response.status_code == 200
    assert response.get_json() == {"ignored": "test delivery (before and after are all zeros: nothing to deploy)"}
    # A real deletion (before is the old head) is still a deletion.
    body, headers = gitea_delivery(gitea_payload(ZERO, before=web_app.shas[-1]))
    assert "deletion of refs/heads/deploy" in web_app.post("tea", body, headers).get_json()["ignored"]
    assert web_app.job_count() == 0


@pytest.mark.slow
def test_gitea_form_delivery_through_hookdeploy_serve(served):
    sha = served.shas[-1]
    body, headers = gitea_delivery(gitea_payload(sha))
    with served.server():
        status, answer, _ = request(served.port, "POST", "/hooks/tea", body, headers)
        assert status == 202, answer
        wrong, _ = gitea_delivery(gitea_payload(served.shas[0]))
        assert request(served.port, "POST", "/hooks/tea", wrong, headers)[0] == 401
    assert urllib.parse.parse_qs(body.decode())["payload"][0].encode() == gitea_payload(sha)
