"""How git proves who it is when it fetches an app's clone URL, and what a refusal means.

ssh (`repo_key_file`, `repo_host_key`): git runs ssh through GIT_SSH_COMMAND with no ssh_config
(-F /dev/null), the deploy key alone (IdentitiesOnly, no agent), never a prompt (BatchMode), and a
known_hosts file of hookdeploy's own in state_dir:
  - `repo_host_key` set: `ssh/APP.known_hosts` holds exactly that line (written before each fetch)
    and ssh checks strictly: any other key is refused.
  - not set: `known_hosts` (shared by the apps without a pin), StrictHostKeyChecking=accept-new: the
    first fetch records the host's key, and a changed key later is refused until its line is removed.
An ssh URL with neither key uses the hookdeploy user's own ssh setup, as before.

https (`repo_token_env`): the token goes out as an `Authorization: Basic` header (user: the URL's user,
else x-access-token; GitHub, GitLab, Gitea and Forgejo take a token as the password), set as
`http.<scheme://host/>.extraHeader` through GIT_CONFIG_COUNT/KEY/VALUE environment variables: not in
the URL, not in argv (which ps shows to every user), and only for the repo's own host (a redirect
elsewhere does not carry it). git redacts it from its traces; `explain` takes it out of anything shown.
Imports hookdeploy.core only; gitops.py and doctor call it.
"""

from __future__ import annotations

import base64
import os
import re
import shlex
import urllib.parse
from pathlib import Path

from hookdeploy.core import private
from hookdeploy.core.config import AppConfig, ssh_host
from hookdeploy.core.errors import GitError

# The transports git may use to fetch a repo (config_parse refuses the others already); never ext::, whose
# "URL" is a command git runs.
SAFE_ENVIRONMENT = {"GIT_ALLOW_PROTOCOL": "file:git:http:https:ssh"}
# Never wait for a password, a passphrase or a yes/no: git runs unattended.
NO_PROMPT = {"GIT_TERMINAL_PROMPT": "0", "SSH_ASKPASS": "/bin/false", "SSH_ASKPASS_REQUIRE": "never"}
TOKEN_USER = "x-access-token"
_FINGERPRINT = re.compile(r"SHA256:[A-Za-z0-9+/]{43}")


def recorded_hosts(state_dir: str | Path) -> Path:
    """The known_hosts file where the first fetch records an unpinned host's key."""
    return Path(state_dir) / "known_hosts"


def pinned_hosts(app: AppConfig, state_dir: str | Path) -> Path:
    """The known_hosts file holding exactly the app's `repo_host_key`."""
    return Path(state_dir) / "ssh" / f"{app.name}.known_hosts"


def environment(app: AppConfig, state_dir: str | Path) -> dict[str, str]:
    """The environment variables git fetches `app.repo` with (its credentials read now); writes the
    pinned known_hosts file when the app pins its host key."""
    env = {**SAFE_ENVIRONMENT, **NO_PROMPT}
    if app.repo_key_file or app.repo_host_key:
        env["GIT_SSH_COMMAND"] = shlex.join(_ssh_command(app, state_dir))
    if app.repo_token_env:
        token = os.environ.get(app.repo_token_env, "")
        if not token:
            raise GitError(f"apps.{app.name}.repo_token_env: environment variable {app.repo_token_env} is not set",
                           public=f"the repo of {app.name} needs a token that is not set")
        url = urllib.parse.urlsplit(app.repo)
        pair = f"{urllib.parse.unquote(url.username or TOKEN_USER)}:{token}".encode()
        host = url.hostname + (f":{url.port}" if url.port else "")
        env.update(GIT_CONFIG_COUNT="1", GIT_CONFIG_KEY_0=f"http.{url.scheme.lower()}://{host}/.extraHeader",
                   GIT_CONFIG_VALUE_0="Authorization: Basic " + base64.b64encode(pair).decode())
    return env


def _ssh_command(app: AppConfig, state_dir: str | Path) -> list[str]:
    if app.repo_host_key:
        known_hosts = pinned_hosts(app, state_dir)
        try:
            _write_if_changed(private.folder(known_hosts.parent) / known_hosts.name, app.repo_host_key.strip() + "\n")
        except OSError as error:
            raise GitError(f"cannot write {known_hosts} ({error.strerror or error}): state_dir must belong to the "
                           "user hookdeploy runs as", public=f"the pinned host key of {app.name} cannot be written") from None
        checking = "yes"
    else:
        known_hosts = recorded_hosts(state_dir)
        checking = "accept-new"
    command = ["ssh", "-F", "/dev/null", "-o", "BatchMode=yes", "-o", f"UserKnownHostsFile={known_hosts}",
               "-o", "GlobalKnownHostsFile=/dev/null", "-o", f"StrictHostKeyChecking={checking}",
               "-o", "UpdateHostKeys=no", "-o", "ConnectTimeout=20"]
    if app.repo_key_file:
        command += ["-i", app.repo_key_file, "-o", "IdentitiesOnly=yes", "-o", "IdentityAgent=none"]
    return command


def _write_if_changed(path: Path, text: str) -> None:
    """Write `text` to `path` through a rename (a concurrent ssh never reads half a file)."""
    try:
        if path.read_text() == text:
            return
    except OSError:
        pass
    partial = path.with_name(path.name + ".new")
    partial.write_text(text)
    partial.replace(path)


def explain(app: AppConfig, state_dir: str | Path, stderr: str) -> str:
    """One line saying why git could not fetch `app.repo`, from what git and ssh wrote (never the token)."""
    text = _without_token(app, stderr)
    host = ssh_host(app.repo) or urllib.parse.urlsplit(app.repo).hostname or app.repo
    if "REMOTE HOST IDENTIFICATION HAS CHANGED" in text or "Host key verification failed" in text:
        found = _FINGERPRINT.search(text)
        offered = f" (it offers {found.group(0)})" if found else ""
        if app.repo_host_key:
            return (f"host key changed: {host} does not have the key pinned in apps.{app.name}.repo_host_key"
                    f"{offered}; nothing was fetched (if the host's key really changed, pin the new one: ssh-keyscan)")
        known_hosts = recorded_hosts(state_dir)
        if "HAS CHANGED" in text:
            return (f"host key changed: {host} no longer has the key recorded in {known_hosts} at the first fetch"
                    f"{offered}; nothing was fetched (if the change is expected: ssh-keygen -R '{host}' -f {known_hosts})")
        return f"the host key of {host} could not be verified against {known_hosts}{offered}"
    if "bad permissions" in text or "UNPROTECTED PRIVATE KEY FILE" in text:
        return f"ssh will not use the key {app.repo_key_file}: others can read it (chmod 600, owned by the hookdeploy user)"
    if app.repo_key_file and re.search(r"(Load key|no such identity).*(No such file|Permission denied)", text):
        return f"the key {app.repo_key_file} cannot be read by this user"
    if "Permission denied (publickey" in text:
        who = f"the deploy key {app.repo_key_file}" if app.repo_key_file else "the hookdeploy user's ssh keys"
        return (f"key refused: {host} does not accept {who} (Permission denied (publickey)); add its public key "
                "as a deploy key of the repository")
    if re.search(r"returned error: 40[13]|Authentication failed|could not read (Username|Password)", text):
        if app.repo_token_env:
            return (f"token refused: {host} does not accept the token in {app.repo_token_env} "
                    "(wrong, expired, or without read access to this repository)")
        return f"{host} asks for credentials: set apps.{app.name}.repo_token_env (a token that may read the repository)"
    if re.search(r"does not appear to be a git repository|[Rr]epository (.* )?not found|returned error: 404", text):
        return f"repository not found, or not readable with these credentials ({_last_line(text)})"
    return _last_line(text)


def _without_token(app: AppConfig, text: str) -> str:
    """`text` with the token, raw or as sent, replaced by ***."""
    token = os.environ.get(app.repo_token_env, "") if app.repo_token_env else ""
    if token:
        text = text.replace(token, "***")
        url = urllib.parse.urlsplit(app.repo)
        pair = f"{urllib.parse.unquote(url.username or TOKEN_USER)}:{token}".encode()
        text = text.replace(base64.b64encode(pair).decode(), "***")
    return text


def _last_line(text: str) -> str:
    lines = [line.strip().removeprefix("stderr: ").strip("'\" ") for line in text.strip().splitlines()]
    lines = [line for line in lines if line]
    fatal = [line for line in lines if line.startswith(("fatal:", "error:", "ssh:"))]
    return (fatal or lines or ["git failed"])[0]
