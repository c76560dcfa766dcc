"""Signed commits only: whether a commit's signature verifies against an app's allowed keys.

git itself decides (`git verify-commit`, and `git log --format=%G?...` for who signed and why not), with
the app's SSH allowed-signers file as gpg.ssh.allowedSignersFile and its OpenPGP keyring imported into
a GNUPGHOME of hookdeploy's own under state_dir; no signature is ever checked by hookdeploy's code.
What git finds on this machine otherwise (the user's ~/.gnupg, a global allowedSignersFile) counts for
nothing. Only the commit named is checked (a merge's parents are not). Imports no gitpython and no
Docker: the pre-receive hook runs this inside `git push`.
Imports hookdeploy.core only; deploy.py, the pre-receive hook, removal and doctor call it.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

from hookdeploy.core import private
from hookdeploy.core.config import AppConfig, Config
from hookdeploy.core.errors import StepFailed
from hookdeploy.core.models import release_tag

GIT_TIMEOUT = 60.0  # seconds one git (and the gpg or ssh-keygen it runs) may take to check a signature
GPG = "gpg"
SSH_KEYGEN = "ssh-keygen"
FIELDS = "%G?%x1f%GF%x1f%GS%x1f%GK"  # result, fingerprint, signer, key: what git says of the signature
ULTIMATE = 6  # gpg's ownertrust "ultimate": a key in the app's keyring is trusted because it is there


@dataclass(frozen=True)
class Signer:
    """Who signed a commit that verified: the key's fingerprint and the principal (SSH) or user id (GPG)."""

    fingerprint: str
    principal: str

    def describe(self) -> str:
        """`alice@example.com (SHA256:...)`."""
        return f"{self.principal} ({self.fingerprint})"


class NotSigned(StepFailed):
    """The commit is not signed by an allowed key."""


def required(app: AppConfig) -> bool:
    """True when the app deploys only signed commits: it is built from git and has [apps.X.signatures]."""
    return app.builds and app.signatures is not None


def verify(config: Config, app: AppConfig, git_dir: str | os.PathLike, sha: str) -> Signer:
    """Who signed commit `sha` of the repo at `git_dir`, if git verifies the signature against the app's keys;
    else NotSigned, saying `commit SHA12 is not signed by an allowed key (why)`. StepFailed when the commit or
    a key file cannot be read."""
    command = _git(config, app, git_dir)
    # This process's environment passed on: in a pre-receive hook it names the quarantine where the pushed
    # objects wait, which git must read.
    env = {**os.environ, "GNUPGHOME": str(gnupg_home(config, app))}
    shown = _run(command + ["log", "-1", "--no-walk", f"--format={FIELDS}", sha, "--"], env)
    if shown.returncode != 0:
        raise StepFailed(f"commit {release_tag(sha)} is not in the repo of {app.name}, so its signature cannot be checked")
    result, fingerprint, principal, key = (shown.stdout.rstrip("\n").split("\x1f") + ["", "", "", ""])[:4]
    verified = _run(command + ["verify-commit", sha], env).returncode == 0
    if verified and result == "G" and fingerprint:
        return Signer(fingerprint, principal or key)
    raise NotSigned(f"commit {release_tag(sha)} is not signed by an allowed key ({_why(result, fingerprint or key)})")


def _why(result: str, key: str) -> str:
    """What git's %G? letter means here, naming the key when there is one."""
    ssh = key.startswith("SHA256:")
    where = "allowed_signers" if ssh else "gpg_keyring"
    kind = "SSH key" if ssh else "GPG key"
    return {
        "N": "it has no signature",
        "B": "its signature does not match it",
        "U": f"signed with {kind} {key}, which {where} does not list",
        "E": f"signed with {kind} {key or '(unknown)'}, which {where} does not hold" if key else
             "its signature cannot be checked",
        "X": f"its signature by {kind} {key} has expired",
        "Y": f"signed with {kind} {key}, which has expired",
        "R": f"signed with {kind} {key}, which was revoked",
        "G": f"signed with {kind} {key}, not trusted enough",
    }.get(result, f"git says {result or 'nothing'}")


def _git(config: Config, app: AppConfig, git_dir: str | os.PathLike) -> list[str]:
    """git with the app's keys and nothing else: our allowed-signers file (or none), our gpg and ssh-keygen,
    and a signature counting only when its key is fully trusted (in the file, or in our keyring)."""
    signatures = app.signatures
    return ["git", "--git-dir", str(git_dir),
            "-c", f"gpg.ssh.allowedSignersFile={signatures.allowed_signers or os.devnull}",
            "-c", "gpg.minTrustLevel=fully",
            "-c", f"gpg.program={GPG}", "-c", f"gpg.openpgp.program={GPG}",
            "-c", f"gpg.ssh.program={SSH_KEYGEN}"]


def _run(command: list[str], env: Mapping[str, str], input: bytes | None = None) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(command, env=dict(env), input=input, capture_output=True, timeout=GIT_TIMEOUT,
                              text=input is None, check=False)
    except FileNotFoundError:
        raise StepFailed(f"{command[0]} is not installed (it checks signed commits)") from None
    except subprocess.TimeoutExpired:
        raise StepFailed(f"{command[0]} took over {GIT_TIMEOUT:.0f} s checking a signature") from None


# -- the keyring's own GNUPGHOME -----------------------------------------------------------------------


def keys_folder(config: Config, app_name: str) -> Path:
    """Where the app's GNUPGHOMEs are kept, under state_dir (`remove APP` takes it)."""
    return Path(config.server.state_dir) / "signatures" / app_name


def gnupg_home(config: Config, app: AppConfig) -> Path:
    """The app's private GNUPGHOME: its gpg_keyring's keys imported, each trusted (being there is the trust),
    made anew whenever the file changes (a key taken out stops verifying at once); empty without a keyring."""
    folder = private.folder(keys_folder(config, app.name))
    keyring = app.signatures.gpg_keyring
    if not keyring:
        return private.folder(folder / "gnupg-none")
    try:
        content = Path(keyring).read_bytes()
    except OSError as error:
        raise StepFailed(f"apps.{app.name}.signatures.gpg_keyring: cannot read {keyring} "
                         f"({error.strerror or type(error).__name__})") from None
    home = folder / f"gnupg-{hashlib.sha256(content).hexdigest()[:16]}"
    if not (home / "trustdb.gpg").exists():
        _import(app, content, home)
        for old in folder.glob("gnupg-*"):
            if old != home and old.name != "gnupg-none":
                shutil.rmtree(old, ignore_errors=True)
    return home


def _import(app: AppConfig, content: bytes, home: Path) -> None:
    """Import `content` into a new GNUPGHOME at `home`, each key trusted ultimately; made aside, then renamed
    into place, so a verification never sees half a keyring."""
    building = Path(tempfile.mkdtemp(dir=home.parent, prefix=".gnupg-"))
    try:
        gpg = [GPG, "--batch", "--quiet", "--no-autostart", "--homedir", str(building)]
        env = {**os.environ, "GNUPGHOME": str(building)}
        imported = _run(gpg + ["--import"], env, input=content)
        listed = _run(gpg + ["--with-colons", "--list-keys"], env, input=b"")
        fingerprints = _primary_fingerprints(listed.stdout.decode("utf-8", "replace"))
        # Its exit status is not the judge: gpg also says 2 when it cannot reach an agent (none is wanted here,
        # and a long state_dir makes its socket path too long), having imported every key all the same.
        if not fingerprints:
            said = [line for line in imported.stderr.decode("utf-8", "replace").strip().splitlines()
                    if "agent" not in line]
            raise StepFailed(f"apps.{app.name}.signatures.gpg_keyring: gpg finds no public key in "
                             f"{app.signatures.gpg_keyring}" + (f" ({said[-1]})" if said else ""))
        trust = "".join(f"{fingerprint}:{ULTIMATE}:\n" for fingerprint in fingerprints).encode()
        if _run(gpg + ["--import-ownertrust"], env, input=trust).returncode != 0:
            raise StepFailed(f"apps.{app.name}.signatures.gpg_keyring: gpg could not record its keys' trust")
        try:
            os.rename(building, home)
        except OSError:  # another process made it first: the same keys, as its name says
            shutil.rmtree(building, ignore_errors=True)
    except BaseException:
        shutil.rmtree(building, ignore_errors=True)
        raise


def _primary_fingerprints(colons: str) -> list[str]:
    """The fingerprint of each primary key in `gpg --with-colons --list-keys` output (the fpr after a pub)."""
    found, after_pub = [], False
    for line in colons.splitlines():
        fields = line.split(":")
        if fields[0] == "pub":
            after_pub = True
        elif fields[0] == "fpr" and after_pub and len(fields) > 9:
            found.append(fields[9])
            after_pub = False
    return found


# -- for doctor ------------------------------------------------------------------------------------------


def file_problems(config: Config, app: AppConfig) -> list[tuple[bool, str]]:
    """Each key file of the app as (fine, what is so): exists, readable, and its tool reads it."""
    signatures, found = app.signatures, []
    if signatures.allowed_signers:
        found.append(_allowed_signers_state(app))
    if signatures.gpg_keyring:
        try:
            home = gnupg_home(config, app)
        except StepFailed as error:
            found.append((False, str(error)))
        else:
            listed = _run([GPG, "--batch", "--no-autostart", "--homedir", str(home), "--with-colons", "--list-keys"],
                          {**os.environ, "GNUPGHOME": str(home)})
            count = len(_primary_fingerprints(listed.stdout))
            found.append((True, f"gpg_keyring {signatures.gpg_keyring}: {count} key{'s' if count != 1 else ''}"))
    return found


def _allowed_signers_state(app: AppConfig) -> tuple[bool, str]:
    """Whether ssh-keygen reads the allowed-signers file without a complaint, and how many keys it lists.

    ssh-keygen reads the whole file looking for the principal of a signature by a throwaway key (which it
    never finds) and names each line it cannot read."""
    path = app.signatures.allowed_signers
    try:
        text = Path(path).read_text(errors="replace")
    except OSError as error:
        return False, f"allowed_signers {path} cannot be read ({error.strerror or type(error).__name__})"
    keys = [line for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    with tempfile.TemporaryDirectory(prefix="hookdeploy-signers-") as scratch:
        key, message = Path(scratch) / "key", Path(scratch) / "message"
        message.write_text("hookdeploy doctor\n")
        env = dict(os.environ)
        made = _run([SSH_KEYGEN, "-q", "-t", "ed25519", "-N", "", "-C", "doctor", "-f", str(key)], env)
        signed = made.returncode == 0 and _run([SSH_KEYGEN, "-q", "-Y", "sign", "-f", str(key), "-n", "git",
                                                str(message)], env).returncode == 0
        if not signed:
            return False, f"allowed_signers {path}: ssh-keygen cannot sign a test message: {made.stderr.strip()}"
        found = _run([SSH_KEYGEN, "-Y", "find-principals", "-s", f"{message}.sig", "-f", path], env)
    complaints = [line for line in found.stderr.splitlines() if line.startswith(f"{path}:")]
    if complaints:
        return False, f"allowed_signers {complaints[0]} (ssh-keygen cannot read that line; git ignores it)"
    if not keys:
        return False, f"allowed_signers {path} lists no key: no commit can deploy"
    return True, f"allowed_signers {path}: {len(keys)} key{'s' if len(keys) != 1 else ''}, ssh-keygen reads them all"
