"""Docker Distribution registry notifications (webhook provider "registry"): the Authorization
header, the events envelope, which events deploy a digest and why the others do not, and the
image name an app's events are matched against. Pure functions: no Flask app, Docker or network.
"""

from __future__ import annotations

import hashlib
import json

import pytest
from hypothesis import given, settings
from hypothesis import event as record_outcome
from hypothesis import strategies as st

from hookdeploy.core.errors import BadInput
from hookdeploy.web import webhooks
from hookdeploy.core.names import split_image as image_repository
from hookdeploy.web.webhooks import (RegistryEvent, Unauthorized, registry_events,
                                     registry_ignore_reason, verify_registry)

EVENTS_TYPE = "application/vnd.docker.distribution.events.v1+json"
SECRET = b"registry notification token"
REPOSITORY, TAG = "team/api", "stable"

LIST_DIGEST = "sha256:" + "1c" * 32
CHILD_DIGEST = "sha256:" + "a7" * 32
LAYER_DIGEST = "sha256:" + "e3" * 32
MANIFEST_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
MANIFEST_V2 = "application/vnd.docker.distribution.manifest.v2+json"


def registry_event(action: str = "push", *, repository: str = REPOSITORY, tag: str | None = TAG,
                   digest: str = LIST_DIGEST, media_type: str = MANIFEST_LIST, number: int = 1) -> dict:
    """One event as Distribution v2.8 writes it (bridge.go): tag only when the push or pull named one."""
    target = {"mediaType": media_type, "size": 7143, "digest": digest, "length": 7143, "repository": repository,
              "url": f"https://registry.example.com:5000/v2/{repository}/manifests/{digest}"}
    if tag is not None:
        target["tag"] = tag
    return {"id": f"0c8f3b2e-5d1a-4c6e-9f3a-{number:012d}", "timestamp": "2024-05-02T09:14:07.520843Z",
            "action": action, "target": target,
            "request": {"id": "9a1e3c64-2b6f-4b0c-8d2e-0f1d2c3b4a59", "addr": "10.0.4.17:51244",
                        "host": "registry.example.com:5000", "method": "PUT" if action == "push" else "GET",
                        "useragent": "docker/24.0.7 go/go1.20.10 git-commit/311b9ff kernel/6.1.0 os/linux arch/amd64"},
            "actor": {"name": "ci"}, "source": {"addr": "registry-7d9f:5000", "instanceID": "b61e3f0a-8d2c"}}


def envelope(*events: dict) -> bytes:
    """The body the registry POSTs: json.MarshalIndent(envelope, "", "   ") in http.go."""
    return json.dumps({"events": list(events)}, indent=3).encode()


def parsed(*events: dict) -> list[RegistryEvent]:
    return registry_events(EVENTS_TYPE, envelope(*events))


def reasons(*events: dict) -> list[str | None]:
    return [registry_ignore_reason(event, REPOSITORY, TAG) for event in parsed(*events)]


def one_line(error: Exception) -> str:
    text = str(error)
    assert text and "\n" not in text and "\r" not in text, repr(text)
    return text


# -- authentication ------------------------------------------------------------------------------


def test_the_configured_authorization_value_is_accepted():
    assert verify_registry(SECRET, {"Authorization": SECRET.decode()}) is None
    # Through the provider-generic entry point the receiver calls, too.
    assert webhooks.verify("registry", SECRET, {"Authorization": SECRET.decode()}, b"any body") is None


@pytest.mark.parametrize("headers", [{}, {"Authorization": ""}, {"X-Registry-Token": SECRET.decode()}])
def test_missing_authorization_is_refused(headers):
    with pytest.raises(Unauthorized) as refused:
        verify_registry(SECRET, headers)
    assert one_line(refused.value) == "Authorization header missing"
    with pytest.raises(Unauthorized, match="Authorization header missing"):
        webhooks.verify("registry", SECRET, headers, b"")


@pytest.mark.parametrize("value", [
    "wrong",
    SECRET.decode()[:-1],  # a prefix
    SECRET.decode() + "x",  # the secret and more
    SECRET.decode()[:-1] + "N",  # the last byte differs
    "R" + SECRET.decode()[1:],  # the first byte differs
    SECRET.decode().upper(),
    "Bearer " + SECRET.decode(),  # the value is compared as configured, not parsed as a scheme
    " " + SECRET.decode(),
])
def test_a_wrong_authorization_is_refused(value):
    with pytest.raises(Unauthorized) as refused:
        verify_registry(SECRET, {"Authorization": value})
    assert one_line(refused.value) == "Authorization header does not match this app's webhook secret"
    assert SECRET.decode() not in str(refused.value)


def test_authorization_is_compared_as_bytes():
    """A non-ASCII secret matches what WSGI hands over (its UTF-8 bytes read as latin-1); text that no
    wire can carry is refused like any wrong value, not with a TypeError from comparing str."""
    secret = "clé secrète ✓".encode()
    assert verify_registry(secret, {"Authorization": secret.decode("latin-1")}) is None
    for value in ("clé secrète ✓", "\u2713" * 4, "clé secrète \x13"):
        with pytest.raises(Unauthorized, match="does not match"):
            verify_registry(secret, {"Authorization": value})


def test_the_receivers_case_insensitive_headers_work():
    from werkzeug.datastructures import Headers  # what request.headers is in the receiver

    verify_registry(SECRET, Headers([("authorization", SECRET.decode())]))
    with pytest.raises(Unauthorized, match="missing"):
        verify_registry(SECRET, Headers([("Content-Type", EVENTS_TYPE)]))


def test_registry_deliveries_are_named_by_their_body():
    body = envelope(registry_event())
    assert webhooks.delivery_id("registry", {}, body) == "sha256:" + hashlib.sha256(body).hexdigest()
    assert "registry" not in webhooks.EVENT_HEADERS and "registry" not in webhooks.PUSH_EVENTS


# -- which events deploy ---------------------------------------------------------------------------


def test_a_multi_platform_push_deploys_the_tagged_list_not_its_children():
    # docker buildx pushes each platform's manifest by digest, then the list under the tag.
    child = registry_event(tag=None, digest=CHILD_DIGEST, media_type=MANIFEST_V2, number=1)
    manifest_list = registry_event(number=2)
    events = parsed(child, manifest_list)
    assert events == [
        RegistryEvent(id="0c8f3b2e-5d1a-4c6e-9f3a-000000000001", action="push", repository=REPOSITORY, tag=None,
                      digest=CHILD_DIGEST, media_type=MANIFEST_V2),
        RegistryEvent(id="0c8f3b2e-5d1a-4c6e-9f3a-000000000002", action="push", repository=REPOSITORY, tag=TAG,
                      digest=LIST_DIGEST, media_type=MANIFEST_LIST)]
    assert [registry_ignore_reason(event, REPOSITORY, TAG) for event in events] == [
        "push by digest to team/api, no tag (e.g. a manifest-list child)", None]
    assert events[1].digest == LIST_DIGEST


@pytest.mark.parametrize("media_type", sorted(webhooks.MANIFEST_TYPES))
def test_a_tagged_push_of_any_manifest_type_deploys(media_type):
    assert reasons(registry_event(media_type=media_type)) == [None]


def test_media_type_parameters_and_case_do_not_matter():
    assert reasons(registry_event(media_type="Application/VND.OCI.image.index.v1+json; charset=utf-8")) == [None]


@pytest.mark.parametrize("event, reason", [
    (registry_event("pull"), "pull of team/api"),
    (registry_event("pull", tag=None, digest=LAYER_DIGEST, media_type="application/octet-stream"), "pull of team/api"),
    (registry_event("mount", tag=None, digest=LAYER_DIGEST, media_type="application/octet-stream"),
     "mount of team/api"),
    (registry_event(repository="other/api"), "repository other/api is not team/api"),
    (registry_event(repository="team/api-staging"), "repository team/api-staging is not team/api"),
    (registry_event(tag=None, digest=LAYER_DIGEST, media_type="application/octet-stream"),
     "blob push to team/api (application/octet-stream is not a manifest media type)"),
    (registry_event(tag=None, media_type="application/vnd.oci.image.config.v1+json"),
     "blob push to team/api (application/vnd.oci.image.config.v1+json is not a manifest media type)"),
    (registry_event(tag="v2"), "tag v2 is not the deploy tag stable"),
    (registry_event(tag="Stable"), "tag Stable is not the deploy tag stable"),
    (registry_event(digest="sha256:" + "1C" * 32),
     f"digest {'sha256:' + '1C' * 32!r} of team/api:stable is not sha256: and 64 lowercase hexadecimal digits"),
    (registry_event(digest="sha512:" + "1c" * 64),
     f"digest {('sha512:' + '1c' * 64)[:80]!r}… of team/api:stable is not sha256: and 64 lowercase hexadecimal "
     "digits"),
])
def test_events_that_deploy_nothing_say_why(event, reason):
    assert reasons(event) == [reason]


def test_a_delete_carries_no_digest_and_is_ignored():
    # TagDeleted: repository and tag only, no mediaType, digest, size or url.
    deleted = registry_event("delete")
    deleted["target"] = {"repository": REPOSITORY, "tag": TAG}
    assert parsed(deleted)[0].digest is None and reasons(deleted) == ["delete of team/api"]


def test_an_envelope_mixing_events_judges_each():
    events = [registry_event("pull", number=1), registry_event(repository="other/api", number=2),
              registry_event(tag="v2", number=3),
              registry_event(tag=None, digest=LAYER_DIGEST, media_type="application/octet-stream", number=4),
              registry_event(number=5)]
    assert reasons(*events) == ["pull of team/api", "repository other/api is not team/api",
                                "tag v2 is not the deploy tag stable",
                                "blob push to team/api (application/octet-stream is not a manifest media type)", None]


def without(event: dict, *keys: str) -> dict:
    target = {key: value for key, value in event["target"].items() if key not in keys}
    return {key: value for key, value in event.items() if key not in keys} | {"target": target}


@pytest.mark.parametrize("event, reason", [
    (without(registry_event(), "action"), "event without an action, for team/api"),
    ({**registry_event(), "action": 7}, "event without an action, for team/api"),
    ({**registry_event(), "target": None}, "push to an unnamed repository"),
    (without(registry_event(), "repository"), "push to an unnamed repository"),
    (without(registry_event("pull"), "repository"), "pull of an unnamed repository"),
    (without(registry_event(), "mediaType"), "blob push to team/api (no media type)"),
    ({**registry_event(), "target": {**registry_event()["target"], "tag": ""}},
     "push by digest to team/api, no tag (e.g. a manifest-list child)"),
    ({**registry_event(), "target": {**registry_event()["target"], "tag": 1}},
     "push by digest to team/api, no tag (e.g. a manifest-list child)"),
    (without(registry_event(), "digest"), "push of team/api:stable has no digest"),
    ({**registry_event(), "target": {**registry_event()["target"], "digest": ["sha256:"]}},
     "push of team/api:stable has no digest"),
])
def test_odd_events_are_ignored_not_refused(event, reason):
    assert reasons(event) == [reason]


def test_text_from_the_registry_is_escaped_in_reasons():
    hostile = [registry_event("pu\nsh"), registry_event(repository="team/api\x1b[2J"),
               registry_event(tag="stable\r\nInjected: yes"), registry_event(tag=None, media_type="text/html\n<b>"),
               registry_event(digest="sha256:\x07" + "0" * 63)]
    shown = reasons(*hostile)
    assert shown == ["'pu\\nsh' of team/api", "repository 'team/api\\x1b[2J' is not team/api",
                     "tag 'stable\\r\\nInjected: yes' is not the deploy tag stable",
                     "blob push to team/api ('text/html\\n<b>' is not a manifest media type)",
                     f"digest {'sha256:' + chr(7) + '0' * 63!r} of team/api:stable is not sha256: and 64 lowercase "
                     "hexadecimal digits"]
    assert all(reason.isprintable() for reason in shown)


# -- the envelope ----------------------------------------------------------------------------------


@pytest.mark.parametrize("content_type", [EVENTS_TYPE, "application/json", "application/json; charset=utf-8",
                                          "Application/VND.Docker.Distribution.Events.V1+JSON"])
def test_accepted_content_types(content_type):
    assert len(registry_events(content_type, envelope(registry_event()))) == 1


def test_an_empty_and_a_full_envelope_are_accepted():
    assert registry_events(EVENTS_TYPE, b'{"events": []}') == []
    hundred = [registry_event(number=number) for number in range(100)]
    assert len(parsed(*hundred)) == 100


def test_unknown_fields_are_ignored():
    event = registry_event() | {"future": {"x": 1}}
    event["target"] |= {"references": [{"digest": CHILD_DIGEST}], "annotations": {"a": "b"}}
    body = json.dumps({"events": [event], "version": 2}).encode()
    assert registry_ignore_reason(registry_events(EVENTS_TYPE, body)[0], REPOSITORY, TAG) is None


@pytest.mark.parametrize("content_type, body, message", [
    ("text/plain", envelope(registry_event()),
     f"Content-Type 'text/plain': a registry notification is {EVENTS_TYPE} or application/json"),
    (None, envelope(registry_event()), "Content-Type missing: a registry notification is"),
    ("application/x-www-form-urlencoded", b"payload=%7B%7D", "Content-Type 'application/x-www-form-urlencoded'"),
    ("text/html\r\nX-Injected: 1", b"{}", "Content-Type 'text/html\\r\\nX-Injected: 1'"),
    (EVENTS_TYPE, b"", "body is not valid JSON"),
    (EVENTS_TYPE, b"not json", "body is not valid JSON"),
    (EVENTS_TYPE, b'{"events": [', "body is not valid JSON"),
    (EVENTS_TYPE, b"\xff\xfe\x00{", "body is not valid JSON"),
    (EVENTS_TYPE, b"[" * 100_000 + b"]" * 100_000, "body is not valid JSON"),
    (EVENTS_TYPE, b'{"events": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", "body is not valid JSON"),
    (EVENTS_TYPE, b"[]", "notification must be a JSON object"),
    (EVENTS_TYPE, b'"events"', "notification must be a JSON object"),
    (EVENTS_TYPE, b"null", "notification must be a JSON object"),
    (EVENTS_TYPE, b"{}", "notification has no events list"),
    (EVENTS_TYPE, b'{"events": null}', "notification has no events list"),
    (EVENTS_TYPE, b'{"events": {"0": {}}}', "notification has no events list"),
    (EVENTS_TYPE, b'{"Events": []}', "notification has no events list"),
    (EVENTS_TYPE, envelope(*[registry_event(number=number) for number in range(101)]),
     "notification has 101 events, more than 100"),
    (EVENTS_TYPE, b'{"events": [1]}', "event 1 is not a JSON object"),
    (EVENTS_TYPE, envelope(registry_event(), "push"), "event 2 is not a JSON object"),
    (EVENTS_TYPE, envelope(without(registry_event(), "id")), "event 1 has no id"),
    (EVENTS_TYPE, envelope({**registry_event(), "id": ""}), "event 1 has no id"),
    (EVENTS_TYPE, envelope({**registry_event(), "id": 42}), "event 1 has no id"),
    (EVENTS_TYPE, envelope(registry_event(), {**registry_event(), "id": "a b"}),
     "event 2 has a malformed id 'a b': must be 1-200 printable ASCII characters"),
    (EVENTS_TYPE, envelope({**registry_event(), "id": "x\ny"}), "event 1 has a malformed id 'x\\ny'"),
    (EVENTS_TYPE, envelope({**registry_event(), "id": "é"}), "event 1 has a malformed id 'é'"),
    (EVENTS_TYPE, envelope({**registry_event(), "id": "a" * 201}), "event 1 has a malformed id 'aaaa"),
])
def test_malformed_notifications_are_refused_in_one_line(content_type, body, message):
    with pytest.raises(BadInput) as refused:
        registry_events(content_type, body)
    assert one_line(refused.value).startswith(message)
    assert len(str(refused.value)) < 200


def test_a_200_character_id_is_accepted():
    assert parsed({**registry_event(), "id": "~" * 200})[0].id == "~" * 200


# -- the app's image -------------------------------------------------------------------------------


@pytest.mark.parametrize("image, split", [
    ("registry.example.com:5000/team/api", ("registry.example.com:5000", "team/api")),
    ("127.0.0.1:5000/team/api", ("127.0.0.1:5000", "team/api")),
    ("registry.example.com/api", ("registry.example.com", "api")),
    ("localhost/team/api", ("localhost", "team/api")),
    ("localhost:5000/a/b/c", ("localhost:5000", "a/b/c")),
    ("registry:5000/team/my_api.v2-x", ("registry:5000", "team/my_api.v2-x")),
])
def test_image_repository_splits_as_docker_does(image, split):
    assert image_repository(image) == split


@pytest.mark.parametrize("image, message", [
    ("registry.example.com:5000/team/api:v1",
     "image 'registry.example.com:5000/team/api:v1' has a tag: give REGISTRY[:PORT]/REPOSITORY only"),
    ("127.0.0.1:5000/team/api:latest", "image '127.0.0.1:5000/team/api:latest' has a tag"),
    ("registry.example.com/team/api@" + LIST_DIGEST, "image 'registry.example.com/team/api@sha256:1c1c"),
    ("registry.example.com/team/api:v1@" + LIST_DIGEST, "image 'registry.example.com/team/api:v1@sha256:"),
    ("registry.example.com:5000/", "image 'registry.example.com:5000/' has an empty repository path"),
    ("localhost/", "image 'localhost/' has an empty repository path"),
    ("team/api", "image 'team/api' names no registry host (REGISTRY[:PORT]/REPOSITORY)"),
    ("api", "image 'api' names no registry host"),
    ("", "image '' names no registry host"),
    ("registry.example.com", "image 'registry.example.com' names no registry host"),
    ("registry.example.com/Team/api", "image 'registry.example.com/Team/api': the repository path must be lowercase"),
    ("registry.example.com/team//api", "image 'registry.example.com/team//api': the repository path must be"),
    ("registry.example.com/team/api/", "image 'registry.example.com/team/api/': the repository path must be"),
    ("registry.example.com/" + "a" * 250, f"image {('registry.example.com/' + 'a' * 19)!r}… is 271 characters long, "
     "more than 255"),
    ("bad_host.example/team/api",
     "image 'bad_host.example/team/api': 'bad_host.example' is not a registry HOST[:PORT]"),
    ("registry.example.com:port/api", "image 'registry.example.com:port/api': 'registry.example.com:port' is not"),
    ("registry.example.com/team/api\n", "image 'registry.example.com/team/api\\n': the repository path must be"),
])
def test_image_repository_refuses_what_is_not_a_repository(image, message):
    with pytest.raises(BadInput) as refused:
        image_repository(image)
    assert one_line(refused.value).startswith(message)


def test_an_apps_image_and_its_registry_events_meet():
    host, repository = image_repository("127.0.0.1:5000/team/api")
    assert host == "127.0.0.1:5000"
    assert [registry_ignore_reason(event, repository, "latest") for event in parsed(registry_event(tag="latest"))] \
        == [None]


# -- fuzzing ---------------------------------------------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=20)
junk = (st.sampled_from(["", "push", "pull", REPOSITORY, TAG, LIST_DIGEST, MANIFEST_V2, "sha256:", "\n", "é"])
        | json_values)
replacements = {
    "mediaType": st.sampled_from(sorted(webhooks.MANIFEST_TYPES) + ["application/octet-stream"]) | junk,
    "digest": st.sampled_from([LIST_DIGEST, "sha256:" + "A" * 64, "sha256:" + "a" * 63]) | junk,
    "repository": st.sampled_from([REPOSITORY, "other/api", "TEAM/API"]) | junk,
    "tag": st.sampled_from([TAG, "latest", None]) | junk,
    "action": junk,
    "id": st.sampled_from(["e1", "", "a b", "~" * 201]) | junk,
    "target": junk,
}
DELETED = object()


@st.composite
def mutated_events(draw) -> object:
    """Mostly a real event with a few fields replaced or removed, sometimes any JSON value at all."""
    if not draw(st.integers(0, 19)):
        return draw(json_values)
    event = registry_event(number=draw(st.integers(0, 999)))
    for key, strategy in replacements.items():
        if draw(st.integers(0, 19 if key == "id" else 3)) == 0:
            value = draw(strategy | st.just(DELETED))
            where = event if key in ("action", "id", "target") else event["target"]
            if not isinstance(where, dict):
                continue
            if value is DELETED or value is None:
                where.pop(key, None)
            else:
                where[key] = value
    return event


noise = st.one_of(
    st.binary(max_size=300),
    st.builds(lambda value: json.dumps(value).encode(), json_values),
    st.builds(lambda value: json.dumps({"events": value}).encode(), json_values),
    st.builds(lambda events, cut: json.dumps({"events": events}).encode()[:cut],
              st.lists(mutated_events(), min_size=1, max_size=3), st.integers(0, 400)))
envelopes = st.builds(lambda events: json.dumps({"events": events}).encode(), st.lists(mutated_events(), max_size=5))
bodies = st.integers(0, 9).flatmap(lambda pick: noise if pick < 3 else envelopes)


@settings(max_examples=300, deadline=None)
@given(body=bodies, content_type=st.sampled_from([EVENTS_TYPE] * 4 + ["application/json", None, "text/plain"]))
def test_fuzzed_notifications_raise_only_bad_input(body, content_type):
    try:
        events = registry_events(content_type, body)
    except BadInput as refused:
        one_line(refused)
        record_outcome("refused")
        return
    assert content_type in (EVENTS_TYPE, "application/json") and len(events) <= 100
    for event in events:
        assert isinstance(event, RegistryEvent) and webhooks.DELIVERY_ID.match(event.id)
        reason = registry_ignore_reason(event, REPOSITORY, TAG)
        record_outcome("deploys" if reason is None else "ignored")
        if reason is None:  # only then is a digest deployed: every rule held
            assert (event.action, event.repository, event.tag) == ("push", REPOSITORY, TAG)
            assert event.media_type.split(";")[0].strip().lower() in webhooks.MANIFEST_TYPES
            assert webhooks.DIGEST.match(event.digest)
        else:
            assert reason.isprintable() and len(reason) < 400
