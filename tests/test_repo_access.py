"""`repo_key_file`, `repo_host_key` and `repo_token_env`: what deploy.toml accepts, and the environment
git fetches with (gitauth): the key alone and hookdeploy's own known_hosts for ssh, the token as a header
scoped to the repo's host for https, never in an argument. The real servers are in test_private_repo.py.
"""

from __future__ import annotations

import base64
import shlex
import subprocess

import pytest

from hookdeploy.core import config
from hookdeploy.core.errors import ConfigError, GitError
from hookdeploy.engine import gitauth

SSH_URL = "ssh://git@git.example.com:2222/org/site.git"
SCP_URL = "git@github.com:org/site.git"


@pytest.fixture(scope="module")
def host_key(tmp_path_factory) -> str:
    """A real ed25519 public key (ssh-keygen), as `TYPE BASE64`."""
    path = tmp_path_factory.mktemp("hostkey") / "key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True, timeout=30)
    return " ".join(path.with_suffix(".pub").read_text().split()[:2])


def load(write_config, **app) -> config.Config:
    return config.load(write_config({"site": {"repo": SSH_URL, **app}}))


def problems(write_config, **app) -> list[str]:
    try:
        load(write_config, **app)
    except ConfigError as error:
        return error.problems
    return []


def test_ssh_keys_are_accepted_and_the_key_path_resolved(write_config, host_key, tmp_path):
    loaded = load(write_config, repo_key_file="keys/site.key", repo_host_key=f"[git.example.com]:2222 {host_key}")
    app = loaded.apps["site"]
    assert app.repo_key_file == str(tmp_path / "keys" / "site.key")
    assert app.repo_host_key == f"[git.example.com]:2222 {host_key}"
    scp = config.load(write_config({"site": {"repo": SCP_URL, "repo_host_key": f"github.com {host_key} comment"}}))
    assert scp.apps["site"].repo_host_key.startswith("github.com ssh-ed25519 ")


@pytest.mark.parametrize("app, expected", [
    ({"repo": "/srv/git/site.git", "repo_key_file": "/k"},
     "apps.site.repo_key_file: only for an ssh clone URL (ssh://... or user@host:path), not '/srv/git/site.git'"),
    ({"repo": "https://git.example.com/site.git", "repo_host_key": "x"},
     "apps.site.repo_host_key: only for an ssh clone URL"),
    ({"repo_token_env": "SITE_TOKEN"}, "apps.site.repo_token_env: only for an https:// clone URL"),
    ({"repo": "https://u:pw@git.example.com/site.git", "repo_token_env": "SITE_TOKEN"},
     "apps.site.repo: the clone URL carries a password; with repo_token_env the token is sent as a header"),
    ({"repo": "https://git.example.com/site.git", "repo_token_env": "NOT A NAME"},
     "apps.site.repo_token_env: not an environment variable name"),
    ({"repo_host_key": "ssh-ed25519 AAAA"}, "apps.site.repo_host_key: must be one known_hosts line"),
])
def test_misplaced_or_malformed_keys_are_named(write_config, app, expected):
    found = problems(write_config, **app)
    assert len(found) == 1 and found[0].startswith(expected), found


def test_a_host_key_line_must_name_the_repo_host_and_hold_a_real_key(write_config, host_key):
    wrong_host = problems(write_config, repo_host_key=f"git.example.com {host_key}")
    assert wrong_host == ["apps.site.repo_host_key: names 'git.example.com', not the repo's host "
                          "[git.example.com]:2222 (write it as ssh-keyscan -p PORT prints it)"]
    kind, blob = host_key.split()
    assert problems(write_config, repo_host_key=f"[git.example.com]:2222 ssh-dss {blob}")[0].startswith(
        "apps.site.repo_host_key: key type 'ssh-dss' is not one of")
    assert problems(write_config, repo_host_key=f"[git.example.com]:2222 ssh-rsa {blob}") == [
        "apps.site.repo_host_key: the key is not a base64 ssh-rsa public key"]
    assert problems(write_config, repo_host_key=f"[git.example.com]:2222 {kind} not-base64!") == [
        f"apps.site.repo_host_key: the key is not a base64 {kind} public key"]


def test_ssh_runs_with_the_key_alone_and_a_known_hosts_of_its_own(write_config, host_key, tmp_path):
    line = f"[git.example.com]:2222 {host_key}"
    app = load(write_config, repo_key_file="/etc/hookdeploy/site key", repo_host_key=line).apps["site"]
    state = tmp_path / "state"
    ssh = shlex.split(gitauth.environment(app, state)["GIT_SSH_COMMAND"])
    assert ssh[:3] == ["ssh", "-F", "/dev/null"] and ssh[ssh.index("-i") + 1] == "/etc/hookdeploy/site key"
    for option in ("IdentitiesOnly=yes", "IdentityAgent=none", "BatchMode=yes", "StrictHostKeyChecking=yes",
                   f"UserKnownHostsFile={state / 'ssh' / 'site.known_hosts'}", "GlobalKnownHostsFile=/dev/null"):
        assert option in ssh
    assert (state / "ssh" / "site.known_hosts").read_text() == line + "\n"
    recorded = load(write_config, repo_key_file="/k").apps["site"]
    ssh = shlex.split(gitauth.environment(recorded, state)["GIT_SSH_COMMAND"])
    assert "StrictHostKeyChecking=accept-new" in ssh and f"UserKnownHostsFile={state / 'known_hosts'}" in ssh
    plain = load(write_config).apps["site"]
    assert "GIT_SSH_COMMAND" not in gitauth.environment(plain, state)  # the user's own ssh setup, as before


def test_the_token_is_a_header_for_the_repo_host_only(write_config, monkeypatch, tmp_path):
    monkeypatch.setenv("SITE_TOKEN", "tok-123")
    loaded = config.load(write_config({"site": {"repo": "https://oauth2@git.example.com:8443/org/site.git",
                                                "repo_token_env": "SITE_TOKEN"}}))
    env = gitauth.environment(loaded.apps["site"], tmp_path)
    assert env["GIT_CONFIG_COUNT"] == "1"
    assert env["GIT_CONFIG_KEY_0"] == "http.https://git.example.com:8443/.extraHeader"
    assert env["GIT_CONFIG_VALUE_0"] == "Authorization: Basic " + base64.b64encode(b"oauth2:tok-123").decode()
    # A refusal is explained without the token, raw or encoded, whatever git wrote.
    said = gitauth.explain(loaded.apps["site"], tmp_path, "fatal: Authentication failed for tok-123 "
                           + env["GIT_CONFIG_VALUE_0"])
    assert said.startswith("token refused: git.example.com does not accept the token in SITE_TOKEN")
    assert "tok-123" not in said and base64.b64encode(b"oauth2:tok-123").decode() not in said
    monkeypatch.delenv("SITE_TOKEN")
    with pytest.raises(GitError, match="environment variable SITE_TOKEN is not set"):
        gitauth.environment(loaded.apps["site"], tmp_path)


def test_a_missing_token_stops_the_worker_naming_it(write_config, run_cli, monkeypatch):
    path = write_config({"site": {"repo": "https://git.example.com/site.git", "repo_token_env": "HD_NO_SUCH_TOKEN"}})
    monkeypatch.delenv("HD_NO_SUCH_TOKEN", raising=False)
    completed = run_cli("worker", "--drain", config=path)
    assert completed.returncode == 2
    assert "apps.site.repo_token_env: environment variable HD_NO_SUCH_TOKEN is not set" in completed.stderr


def test_a_pinned_host_key_that_cannot_be_written_is_one_clear_error(write_config, host_key, tmp_path):
    app = load(write_config, repo_key_file="/k", repo_host_key=f"[git.example.com]:2222 {host_key}").apps["site"]
    state = tmp_path / "state"
    state.mkdir()
    (state / "ssh").write_text("not a folder")  # as root the test cannot take a folder's permission away
    with pytest.raises(GitError, match=f"cannot write {state / 'ssh' / 'site.known_hosts'} .*: state_dir must "
                                       "belong to the user hookdeploy runs as"):
        gitauth.environment(app, state)
