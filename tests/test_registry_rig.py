"""The registry rig (registry_helpers) against the real thing: docker-registry 2.8 with htpasswd auth,
the Docker engine pushing to it over plain HTTP on 127.0.0.1, and its push notifications arriving at
a NotificationSink. Other tests build on what is checked here, and on
tests/fixtures/webhooks/registry-push.json, a real envelope whose shape is checked against a live one.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from docker_helpers import BASE_IMAGE
from registry_helpers import (EVENTS_MEDIA_TYPE, NOTIFY_AUTHORIZATION, Registry, basic_authorization, push_error,
                              pushed_digest)

PUSH_FIXTURE = Path(__file__).parent / "fixtures" / "webhooks" / "registry-push.json"


@pytest.fixture
def engine(docker_engine, registry: Registry):
    """The docker client; the tags made under `registry` are removed afterwards."""
    yield docker_engine
    registry.remove_local_tags(docker_engine)


@pytest.fixture
def notified_engine(docker_engine, notifying_registry: Registry):
    """The docker client; the tags made under `notifying_registry` are removed afterwards."""
    yield docker_engine
    notifying_registry.remove_local_tags(docker_engine)


def keys(value, prefix: str = "") -> set[str]:
    """Every key path of a JSON object (lists looked into): the shape, without the values."""
    if isinstance(value, dict):
        return {path for key, item in value.items() for path in {prefix + key} | keys(item, f"{prefix}{key}.")}
    if isinstance(value, list):
        return {path for item in value for path in keys(item, prefix)}
    return set()


def test_registry_answers_with_basic_auth_only(registry: Registry):
    assert registry.request("GET", "/v2/", auth=False).status == 401
    assert registry.request("GET", "/v2/").status == 200
    wrong = {"Authorization": basic_authorization(registry.username, "wrong")}
    assert registry.request("GET", "/v2/", wrong, auth=False).status == 401
    assert registry.tags("rig/none") == []
    assert registry.manifest_digest("rig/none", "v1") is None
    assert registry.url == f"127.0.0.1:{registry.port}" and registry.port != 5000


def test_engine_pushes_over_plain_http_with_auth(registry: Registry, engine):
    lines = registry.push(engine, BASE_IMAGE, "rig/test", "v1")

    assert push_error(lines) is None, lines
    assert registry.tags("rig/test") == ["v1"]
    digest = registry.manifest_digest("rig/test", "v1")
    assert digest is not None and digest.startswith("sha256:")
    assert pushed_digest(lines) == digest
    assert registry.local_tags(engine) == [registry.image("rig/test", "v1")]


def test_push_with_a_wrong_password_fails(registry: Registry, engine):
    lines = registry.push(engine, BASE_IMAGE, "rig/test", "v1", password="wrong")

    assert "unauthorized" in (push_error(lines) or ""), lines
    assert any("errorDetail" in line for line in lines)
    assert registry.tags("rig/test") == []


def test_stop_and_start_keep_port_and_storage(registry: Registry, engine):
    assert push_error(registry.push(engine, BASE_IMAGE, "rig/test", "v1")) is None
    port, digest = registry.port, registry.manifest_digest("rig/test", "v1")

    registry.stop()
    assert not registry.running
    with pytest.raises(OSError):
        registry.request("GET", "/v2/", timeout=2)
    assert push_error(registry.push(engine, BASE_IMAGE, "rig/test", "v2")) is not None

    registry.start()
    assert registry.port == port
    assert registry.manifest_digest("rig/test", "v1") == digest
    assert push_error(registry.push(engine, BASE_IMAGE, "rig/test", "v2")) is None
    assert registry.tags("rig/test") == ["v1", "v2"]


def test_push_notification_reaches_the_endpoint(notifying_registry: Registry, notification_sink, notified_engine):
    lines = notifying_registry.push(notified_engine, BASE_IMAGE, "rig/test", "v1")
    assert push_error(lines) is None, lines

    delivery, event = notification_sink.wait_for_push("rig/test", "v1")
    digest = notifying_registry.manifest_digest("rig/test", "v1")
    assert delivery.header("Content-Type") == EVENTS_MEDIA_TYPE
    assert delivery.header("Authorization") == NOTIFY_AUTHORIZATION
    assert event["target"]["digest"] == digest and digest.startswith("sha256:")
    assert event["target"]["mediaType"] == "application/vnd.docker.distribution.manifest.v2+json"
    assert event["actor"]["name"] == notifying_registry.username
    # ignoredmediatypes keeps the blob (layer, config) events away: only manifest events come.
    assert all(each["target"]["mediaType"] != "application/octet-stream" for _, each in notification_sink.events())
    # The saved fixture has the shape of what the registry really sends.
    assert keys(delivery.envelope) == keys(json.loads(PUSH_FIXTURE.read_text()))


def test_notify_to_restarts_a_running_registry(registry: Registry, notification_sink, engine):
    registry.notify_to(notification_sink.url, "Bearer other")
    assert registry.running
    assert push_error(registry.push(engine, BASE_IMAGE, "rig/test", "v1")) is None

    delivery, event = notification_sink.wait_for_push("rig/test", "v1")
    assert delivery.header("Authorization") == "Bearer other"
    assert event["target"]["digest"] == registry.manifest_digest("rig/test", "v1")
