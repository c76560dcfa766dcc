"""API tokens: what they grant, how long, and that nothing but the server secret can make one."""

from __future__ import annotations

import base64
import json
import subprocess
import time

import pytest
from itsdangerous import URLSafeTimedSerializer

from hookdeploy.core import tokens
from webhook_helpers import HOOKDEPLOY, environment

SECRET = b"server secret"


def test_round_trip_and_grants():
    for scope in tokens.SCOPES:
        assert tokens.verify(SECRET, tokens.create(SECRET, scope)) == scope
    assert tokens.grants("deploy", "read") and tokens.grants("deploy", "deploy") and tokens.grants("read", "read")
    assert not tokens.grants("read", "deploy") and not tokens.grants("admin", "read")


def payload_of(token: str) -> dict:
    encoded = token.split(".")[0]
    return json.loads(base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4)))


def test_token_carries_scope_random_id_and_its_ttl():
    first, second = tokens.create(SECRET, "read"), tokens.create(SECRET, "read", ttl=60)
    assert payload_of(first)["ttl"] == 30 * 24 * 3600 and payload_of(second)["ttl"] == 60
    assert payload_of(first)["scope"] == "read" and payload_of(first)["id"] != payload_of(second)["id"]
    with pytest.raises(ValueError):
        tokens.create(SECRET, "admin")
    with pytest.raises(ValueError):
        tokens.create(SECRET, "read", ttl=0)


def test_tampered_foreign_and_garbage_tokens_are_invalid():
    token = tokens.create(SECRET, "read")
    payload, timestamp, signature = token.split(".")
    promoted = base64.urlsafe_b64encode(json.dumps({**payload_of(token), "scope": "deploy"}).encode()).rstrip(b"=")
    flipped = ("A" if signature[0] != "A" else "B") + signature[1:]  # the last character holds padding bits
    for forged in (f"{promoted.decode()}.{timestamp}.{signature}", f"{payload}.{timestamp}.{flipped}",
                   f"{payload}.{timestamp}", "", "not a token", tokens.create(b"another secret", "deploy")):
        with pytest.raises(tokens.InvalidToken):
            tokens.verify(SECRET, forged)


def test_well_signed_but_unexpected_contents_are_invalid():
    serializer = URLSafeTimedSerializer(SECRET, salt=tokens.SALT)
    for contents in ({"scope": "admin", "id": "x", "ttl": 60}, {"scope": "deploy", "id": "x"},
                     {"scope": "deploy", "id": "x", "ttl": True}, ["deploy"]):
        with pytest.raises(tokens.InvalidToken):
            tokens.verify(SECRET, serializer.dumps(contents))
    other_salt = URLSafeTimedSerializer(SECRET, salt="something else").dumps({"scope": "deploy", "id": "x", "ttl": 60})
    with pytest.raises(tokens.InvalidToken):
        tokens.verify(SECRET, other_salt)


@pytest.mark.slow
def test_each_token_expires_after_its_own_ttl():
    short, long = tokens.create(SECRET, "deploy", ttl=3), tokens.create(SECRET, "deploy", ttl=3600)
    assert tokens.verify(SECRET, short) == "deploy"
    time.sleep(3.2)  # token timestamps have a resolution of one second: it lives 2 to 3 s
    with pytest.raises(tokens.InvalidToken, match="expired"):
        tokens.verify(SECRET, short)
    assert tokens.verify(SECRET, long) == "deploy"
    with pytest.raises(tokens.InvalidToken, match="expired"):
        tokens.verify(SECRET, long, max_age=1)


# -- the CLI --------------------------------------------------------------------------------------


@pytest.fixture
def config(served):
    return served.config


def token_create(config, *arguments, env=None):
    return subprocess.run([str(HOOKDEPLOY), "--config", str(config), "token", "create", *arguments],
                          capture_output=True, text=True, env=environment(env), timeout=60)


def test_token_create_prints_the_token_alone(config):
    env = environment()
    made = token_create(config)
    assert made.returncode == 0 and made.stderr == ""
    assert made.stdout.count("\n") == 1
    secret = env["HOOKDEPLOY_SECRET"].encode()
    assert tokens.verify(secret, made.stdout.strip()) == "read"
    deploy = token_create(config, "--scope", "deploy", "--ttl", "120").stdout.strip()
    assert tokens.verify(secret, deploy) == "deploy" and payload_of(deploy)["ttl"] == 120


def test_token_create_refuses_bad_options_and_a_missing_secret(config, tmp_path):
    for arguments in (("--scope", "admin"), ("--ttl", "0"), ("--ttl", "soon")):
        refused = token_create(config, *arguments)
        assert refused.returncode == 2 and refused.stdout == ""
    missing = token_create(config, env={"HOOKDEPLOY_SECRET": None})
    assert missing.returncode == 2 and missing.stdout == ""
    assert missing.stderr.strip().count("\n") == 0 and "HOOKDEPLOY_SECRET" in missing.stderr


def test_token_create_with_a_secret_file(tmp_path, config):
    secret_file = tmp_path / "api-secret"
    secret_file.write_text("from a file\n")
    text = config.read_text().replace("[server]\n", f'[server]\nsecret_file = "{secret_file}"\n', 1)
    config.write_text(text)
    made = token_create(config, env={"HOOKDEPLOY_SECRET": None})
    assert made.returncode == 0, made.stderr
    assert tokens.verify(b"from a file", made.stdout.strip()) == "read"
