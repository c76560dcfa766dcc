"""Signed commits only ([apps.X.signatures], issue 26 item 2), without Docker: real keys made here by
ssh-keygen and gpg, real pushes through the pre-receive hook `init-repo` installs, and the worker's own
check (deploy.py) of webhook, deploy, replay, rollback and retry jobs, which runs before the checkout."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import threading
from pathlib import Path

import pytest

from hookdeploy import actions
from hookdeploy.cli import doctor_signatures
from hookdeploy.core import config as configuration
from hookdeploy.core.errors import ConfigError, DockerUnavailable, StepFailed
from hookdeploy.core.models import JobKind, JobState, Trigger
from hookdeploy.core.store import Store
from hookdeploy.engine import signatures
from hookdeploy.engine.deploy import Deploy
from hookdeploy.web.app import create_app

from conftest import WorkClone, git
from test_hook import jobs_in, remote_lines
from webhook_helpers import push_body, signed_headers

SECRET = "signed site webhook secret"


# -- keys and signed commits -------------------------------------------------------------------------------


class SshKey:
    """An ed25519 key made by ssh-keygen: its private key file, public line and fingerprint."""

    def __init__(self, folder: Path, name: str):
        self.path = folder / name
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", name, "-f", str(self.path)], check=True)
        self.public = " ".join(self.path.with_suffix(".pub").read_text().split()[:2])
        listed = subprocess.run(["ssh-keygen", "-l", "-f", str(self.path)], capture_output=True, text=True, check=True)
        self.fingerprint = listed.stdout.split()[1]

    def sign_options(self) -> list[str]:
        """git options that make `commit -S` sign with this key."""
        return ["-c", "gpg.format=ssh", "-c", f"user.signingkey={self.path}"]


@pytest.fixture(scope="module")
def keys(tmp_path_factory) -> dict[str, SshKey]:
    folder = tmp_path_factory.mktemp("keys")
    return {name: SshKey(folder, name) for name in ("alice", "mallory")}


def allow(path: Path, *entries: tuple[str, SshKey]) -> Path:
    """Write an allowed-signers file: one `principal key` line per entry."""
    path.write_text("# who may deploy\n" + "".join(f"{principal} {key.public}\n" for principal, key in entries))
    return path


def commit(clone: WorkClone, message: str, key: SshKey | None = None) -> str:
    """A commit in the clone, signed with `key` (unsigned without one); its SHA."""
    (clone.path / f"{message}.txt").write_text(f"{message}\n")
    clone.git("add", "--all")
    signing = key.sign_options() + ["commit", "-S"] if key else ["commit"]
    git(*signing, "-q", "-m", message, cwd=clone.path)
    return clone.head()


@pytest.fixture
def allowed(tmp_path, keys) -> Path:
    return allow(tmp_path / "allowed_signers", ("alice@example.com", keys["alice"]))


@pytest.fixture
def signed_config(write_config, site_repo_path, allowed, tmp_path) -> Path:
    """`site`: a local bare repo deploying only commits signed by alice; `hub`: the same repo as a clone URL,
    fed by GitHub webhooks, with the same rule."""
    rule = {"allowed_signers": str(allowed)}
    return write_config({
        "site": {"repo": str(site_repo_path), "branch": "deploy", "signatures": rule},
        "hub": {"repo": f"file://{site_repo_path}", "branch": "deploy", "hostnames": ["hub.example"],
                "webhook": {"provider": "github", "secret_env": "HUB_SECRET"}, "signatures": rule},
    })


@pytest.fixture
def clone(tmp_path, signed_config, run_cli, site_repo_path) -> WorkClone:
    completed = run_cli("init-repo", "site", config=signed_config)
    assert completed.returncode == 0, completed.stderr
    assert f"installed {site_repo_path / 'hooks' / 'pre-receive'}" in completed.stdout
    path = tmp_path / "work"
    git("init", "-q", "-b", "deploy", str(path))
    made = WorkClone(path=path, remote=site_repo_path)
    made.git("remote", "add", "production", str(site_repo_path))
    return made


def branch_head(repo: Path, branch: str = "deploy") -> str | None:
    found = git("rev-parse", "--verify", "--quiet", f"refs/heads/{branch}", cwd=repo, check=False)
    return found.stdout.strip() or None


def refusal(sha: str, why: str) -> str:
    return f"hookdeploy: commit {sha[:12]} is not signed by an allowed key ({why})"


# -- at the push ---------------------------------------------------------------------------------------------


def test_a_push_signed_by_an_allowed_key_lands_and_is_queued(clone, keys, state_dir):
    head = commit(clone, "first", keys["alice"])
    push = clone.push()
    assert push.returncode == 0, push.stderr
    assert branch_head(clone.remote) == head
    [job] = jobs_in(state_dir)
    assert (job.sha, job.trigger) == (head, Trigger.PUSH)


def test_an_unsigned_push_is_refused_and_the_branch_does_not_move(clone, keys, state_dir):
    signed = commit(clone, "first", keys["alice"])
    assert clone.push().returncode == 0
    unsigned = commit(clone, "second")
    push = clone.push()
    assert push.returncode != 0
    assert refusal(unsigned, "it has no signature") in remote_lines(push)
    assert "[remote rejected] deploy -> deploy (pre-receive hook declined)" in push.stderr
    assert branch_head(clone.remote) == signed
    assert [job.sha for job in jobs_in(state_dir)] == [signed]  # nothing queued for the refused push


def test_a_push_signed_by_another_key_is_refused(clone, keys, state_dir):
    head = commit(clone, "first", keys["mallory"])
    push = clone.push()
    assert push.returncode != 0
    assert refusal(head, f"signed with SSH key {keys['mallory'].fingerprint}, which allowed_signers does not list") \
        in remote_lines(push)
    assert branch_head(clone.remote) is None
    assert jobs_in(state_dir) == []


@pytest.mark.slow  # several pushes, each running hookdeploy's hooks
def test_a_key_taken_out_of_the_file_stops_its_next_push(clone, keys, allowed):
    commit(clone, "first", keys["alice"])
    assert clone.push().returncode == 0
    allow(allowed)  # alice's key taken out
    head = commit(clone, "second", keys["alice"])
    push = clone.push()
    assert push.returncode != 0
    assert refusal(head, f"signed with SSH key {keys['alice'].fingerprint}, which allowed_signers does not list") \
        in remote_lines(push)
    assert branch_head(clone.remote) == clone.head("HEAD~1")


@pytest.mark.slow  # several pushes, each running hookdeploy's hooks
def test_only_refs_that_deploy_are_checked_and_a_deletion_passes(clone, keys, state_dir):
    commit(clone, "first", keys["alice"])
    assert clone.push().returncode == 0
    clone.git("checkout", "-q", "-b", "feature")
    unsigned = commit(clone, "unsigned work")
    clone.git("tag", "v1")
    push = clone.push("feature", "v1")
    assert push.returncode == 0, push.stderr
    assert branch_head(clone.remote, "feature") == unsigned
    git("symbolic-ref", "HEAD", "refs/heads/feature", cwd=clone.remote)  # git refuses to delete the current branch
    deletion = clone.push(":deploy")
    assert deletion.returncode == 0, deletion.stderr  # deleting the branch deploys nothing: not checked
    assert branch_head(clone.remote) is None


def test_a_signed_merge_of_unsigned_commits_is_deployed(clone, keys, allowed, signed_config):
    commit(clone, "base", keys["alice"])
    clone.git("checkout", "-q", "-b", "topic")
    commit(clone, "unsigned one")
    commit(clone, "unsigned two")
    clone.git("checkout", "-q", "deploy")
    git(*keys["alice"].sign_options(), "merge", "-q", "--no-ff", "-S", "-m", "merge topic", "topic", cwd=clone.path)
    merge = clone.head()
    push = clone.push()
    assert push.returncode == 0, push.stderr  # only the head is checked, not its parents
    config = configuration.load(signed_config)
    signer = signatures.verify(config, config.apps["site"], clone.remote, merge)
    assert (signer.principal, signer.fingerprint) == ("alice@example.com", keys["alice"].fingerprint)


@pytest.mark.slow  # init-repo, pushes and ssh-keygen as processes
def test_init_repo_adds_the_hook_to_a_repo_made_before(write_config, site_repo_path, allowed, run_cli, tmp_path, keys):
    plain = write_config({"site": {"repo": str(site_repo_path), "branch": "deploy"}})
    made = run_cli("init-repo", "site", config=plain)
    assert made.returncode == 0 and "pre-receive" not in made.stdout
    assert not (site_repo_path / "hooks" / "pre-receive").exists()
    signed = write_config({"site": {"repo": str(site_repo_path), "branch": "deploy",
                                    "signatures": {"allowed_signers": str(allowed)}}})
    again = run_cli("init-repo", "site", config=signed)
    assert again.returncode == 0, again.stderr
    assert again.stdout.splitlines()[0] == f"found bare repo {site_repo_path} (branch deploy)"
    assert os.access(site_repo_path / "hooks" / "pre-receive", os.X_OK)
    path = tmp_path / "work"
    git("init", "-q", "-b", "deploy", str(path))
    work = WorkClone(path=path, remote=site_repo_path)
    work.git("remote", "add", "production", str(site_repo_path))
    head = commit(work, "first")
    push = work.push()
    assert push.returncode != 0 and refusal(head, "it has no signature") in remote_lines(push)


def test_a_config_that_cannot_be_read_refuses_the_push(clone, keys, signed_config):
    commit(clone, "first", keys["alice"])
    signed_config.write_text(signed_config.read_text() + "\n[broken\n")
    push = clone.push()
    assert push.returncode != 0
    assert remote_lines(push)[-1] == ("hookdeploy: push refused: without deploy.toml, which commits must be "
                                      "signed is unknown")
    assert branch_head(clone.remote) is None


# -- in the worker: every job of such an app checks before the checkout ------------------------------------------


class NoEngine:
    """Stands where the Docker engine would be: these tests end before a job needs it, or fail at it."""

    def __getattr__(self, name):
        raise DockerUnavailable("no Docker engine in this test")


def run_job(config, store: Store, job):
    """Run a queued job as the worker does (claim, Deploy, finish) and return it finished."""
    claimed = store.claim("test-worker", apps=[job.app])
    assert claimed is not None and claimed.id == job.id
    state, error = Deploy(config, store, lambda: NoEngine(), claimed, threading.Event()).run()
    return store.finish(job.id, state, error)


def assert_refused_before_checkout(store: Store, state_dir: Path, job, why: str) -> None:
    assert job.state is JobState.FAILED
    assert job.error == refusal(job.sha, why).removeprefix("hookdeploy: ")
    assert job.signer_fingerprint is None and job.image is None
    assert not (state_dir / "builds" / job.app).exists()  # no checkout, so nothing could be built
    steps = [event.step for event in store.events(job.id) if event.kind == "step"]
    assert not {"checkout", "build", "candidate"} & set(steps)


@pytest.fixture
def pushed(clone, keys) -> dict[str, str]:
    """Commits in the repo, pushed past the hooks: a signed one (the head), an unsigned one and one by mallory
    (tagged mallory-v1)."""
    shas = {"unsigned": commit(clone, "unsigned"), "mallory": commit(clone, "by mallory", keys["mallory"]),
            "alice": commit(clone, "by alice", keys["alice"])}
    clone.git("tag", "mallory-v1", shas["mallory"])
    assert clone.push("deploy", "mallory-v1", hooks=False).returncode == 0
    return shas


def test_a_signed_commit_passes_the_check_and_its_signer_is_recorded(signed_config, store, pushed, keys):
    config = configuration.load(signed_config)
    job = run_job(config, store, actions.deploy_ref(config, store, config.apps["site"]))
    assert job.error == "no Docker engine in this test"  # got past the check, to the image
    assert job.to_json()["signer"] == {"fingerprint": keys["alice"].fingerprint, "principal": "alice@example.com"}
    assert f"checked signature: {job.sha[:12]} signed by alice@example.com ({keys['alice'].fingerprint})" in \
        [event.message for event in store.events(job.id)]


def test_deploy_and_replay_of_unsigned_commits_fail_before_the_checkout(signed_config, store, pushed, state_dir, keys):
    config = configuration.load(signed_config)
    site = config.apps["site"]
    job = run_job(config, store, actions.replay_sha(config, store, site, pushed["unsigned"][:10]))
    assert_refused_before_checkout(store, state_dir, job, "it has no signature")
    job = run_job(config, store, actions.deploy_ref(config, store, site, "mallory-v1"))
    assert_refused_before_checkout(store, state_dir, job, f"signed with SSH key {keys['mallory'].fingerprint}, "
                                                          "which allowed_signers does not list")


def test_a_webhook_job_of_an_unsigned_head_fails_before_the_checkout(signed_config, store, clone, state_dir,
                                                                      monkeypatch):
    head = commit(clone, "unsigned head")
    assert clone.push(hooks=False).returncode == 0
    monkeypatch.setenv("HUB_SECRET", SECRET)
    monkeypatch.setenv("HOOKDEPLOY_SECRET", "server secret")
    config = configuration.load(signed_config)
    body = push_body("github", head)
    answer = create_app(config, store).test_client().post("/hooks/hub", data=body,
                                                          headers=signed_headers("github", SECRET, body))
    assert answer.status_code == 202, answer.get_data(as_text=True)
    [job] = store.jobs("hub")
    assert job.trigger is Trigger.WEBHOOK
    job = run_job(config, store, job)
    assert_refused_before_checkout(store, state_dir, job, "it has no signature")


def test_rollback_and_retry_check_again_and_a_removed_key_stops_them(signed_config, store, clone, keys, allowed,
                                                                     state_dir):
    config = configuration.load(signed_config)
    first = commit(clone, "first", keys["alice"])
    second = commit(clone, "second", keys["alice"])
    assert clone.push(hooks=False).returncode == 0
    for sha in (first, second):  # both went live once (as a Docker deploy would have recorded them)
        job = store.enqueue("site", sha)
        store.record_live("site", sha, f"t/site:{sha[:12]}", f"t-site-{sha[:12]}", job.id)
    allow(allowed, ("bob@example.com", keys["mallory"]))  # alice's key taken out
    rollback = run_job(config, store, actions.rollback(store, config.apps["site"]))
    assert (rollback.kind, rollback.sha) == (JobKind.ROLLBACK, first)
    why = f"signed with SSH key {keys['alice'].fingerprint}, which allowed_signers does not list"
    assert_refused_before_checkout(store, state_dir, rollback, why)
    assert store.live_release("site").sha == second  # live untouched

    queued = store.enqueue("site", second)
    store.claim("dead-worker", apps=["site"])
    _, retry = store.interrupt(queued.id, "the worker died")
    assert retry.trigger is Trigger.RETRY
    assert_refused_before_checkout(store, state_dir, run_job(config, store, retry), why)


def test_a_commit_missing_from_the_mirror_is_fetched_before_it_is_checked(signed_config, store, clone, keys):
    config = configuration.load(signed_config)
    commit(clone, "first", keys["alice"])
    assert clone.push(hooks=False).returncode == 0
    job = run_job(config, store, actions.deploy_ref(config, store, config.apps["hub"]))  # makes the mirror
    assert job.signer_principal == "alice@example.com"
    newer = commit(clone, "second", keys["alice"])
    assert clone.push(hooks=False).returncode == 0
    job = run_job(config, store, store.enqueue("hub", newer, trigger=Trigger.REPLAY))  # queued unfetched
    assert (job.error, job.signer_principal) == ("no Docker engine in this test", "alice@example.com")


# -- GPG -----------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def gpg_signers(tmp_path_factory):
    """Two OpenPGP keys made by `gpg --batch` in a home of their own (short: gpg-agent's socket lives there);
    (home, {name: (fingerprint, exported public key file)}). The agent signing started is stopped after."""
    home = Path(tempfile.mkdtemp(prefix="hd-gpg-"))
    exported = tmp_path_factory.mktemp("gpg")
    environment = {**os.environ, "GNUPGHOME": str(home)}
    found = {}
    try:
        for name in ("bob", "carol"):
            subprocess.run(["gpg", "--batch", "--quiet", "--pinentry-mode", "loopback", "--passphrase", "",
                            "--quick-gen-key", f"{name.title()} <{name}@example.com>", "ed25519", "sign", "never"],
                           env=environment, check=True, capture_output=True)
            listed = subprocess.run(["gpg", "--batch", "--with-colons", "--list-keys", f"{name}@example.com"],
                                    env=environment, check=True, capture_output=True, text=True).stdout
            fingerprint = next(line.split(":")[9] for line in listed.splitlines() if line.startswith("fpr:"))
            public = exported / f"{name}.asc"
            public.write_bytes(subprocess.run(["gpg", "--batch", "--export", "--armor", fingerprint],
                                              env=environment, check=True, capture_output=True).stdout)
            found[name] = (fingerprint, public)
        yield home, found
    finally:
        subprocess.run(["gpgconf", "--kill", "gpg-agent"], env=environment, capture_output=True)
        shutil.rmtree(home, ignore_errors=True)


@pytest.mark.slow  # gpg makes two keys, signs, imports
def test_gpg_signatures_verify_against_the_keyring_and_a_key_taken_out_stops_them(
        write_config, site_repo_path, run_cli, tmp_path, gpg_signers, state_dir):
    home, found = gpg_signers
    bob, bob_file = found["bob"]
    keyring = tmp_path / "keyring.asc"
    shutil.copy(bob_file, keyring)
    path = write_config({"site": {"repo": str(site_repo_path), "branch": "deploy",
                                  "signatures": {"gpg_keyring": str(keyring)}}})
    assert run_cli("init-repo", "site", config=path).returncode == 0
    work = tmp_path / "work"
    git("init", "-q", "-b", "deploy", str(work))
    clone = WorkClone(path=work, remote=site_repo_path)
    clone.git("remote", "add", "production", str(site_repo_path))
    (work / "a.txt").write_text("a\n")
    clone.git("add", "--all")
    subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "-c", "gpg.format=openpgp",
                    "-c", f"user.signingkey={bob}", "commit", "-q", "-S", "-m", "by bob"], cwd=work, check=True,
                   env={**os.environ, "GNUPGHOME": str(home)}, capture_output=True)
    head = clone.head()
    push = clone.push()
    assert push.returncode == 0, push.stderr
    config = configuration.load(path)
    signer = signatures.verify(config, config.apps["site"], site_repo_path, head)
    assert (signer.fingerprint, signer.principal) == (bob, "Bob <bob@example.com>")

    shutil.copy(found["carol"][1], keyring)  # bob's key out, carol's in
    with pytest.raises(signatures.NotSigned) as refused:
        signatures.verify(config, config.apps["site"], site_repo_path, head)
    assert str(refused.value) == refusal(head, f"signed with GPG key {bob[-16:]}, which gpg_keyring does "
                                               "not hold").removeprefix("hookdeploy: ")
    homes = sorted(path.name for path in (state_dir / "signatures" / "site").iterdir())
    assert len(homes) == 1 and homes[0].startswith("gnupg-")  # bob's keyring home is gone
    keyring.write_text("not a key\n")
    with pytest.raises(StepFailed, match="gpg_keyring: gpg finds no public key in"):
        signatures.verify(config, config.apps["site"], site_repo_path, head)


# -- deploy.toml and doctor ------------------------------------------------------------------------------------------


def test_the_signatures_table_is_checked(write_config, tmp_path, allowed):
    cases = {
        "missing": ({"repo": "/srv/site.git", "signatures": {"allowed_signers": str(tmp_path / "nope")}},
                    f"apps.site.signatures.allowed_signers: {tmp_path / 'nope'} is not a readable file"),
        "empty": ({"repo": "/srv/site.git", "signatures": {}},
                  "apps.site.signatures: needs allowed_signers (an SSH allowed-signers file) or gpg_keyring "
                  "(OpenPGP public keys)"),
        "image": ({"image": "registry.example/site", "webhook": {"provider": "registry", "secret_env": "S"},
                   "signatures": {"allowed_signers": str(allowed)}},
                  "apps.site.signatures: an image app deploys images, not git commits; signatures are for apps "
                  "built from a repo"),
        "unknown key": ({"repo": "/srv/site.git", "signatures": {"allowed_signers": str(allowed), "keys": "x"}},
                        "apps.site.signatures.keys: unknown key"),
    }
    for name, (table, problem) in cases.items():
        with pytest.raises(ConfigError) as error:
            configuration.load(write_config({"site": table}))
        assert error.value.problems == [problem], name
    relative = write_config({"site": {"repo": "/srv/site.git", "signatures": {"allowed_signers": "allowed_signers"}}})
    assert configuration.load(relative).apps["site"].signatures.allowed_signers == str(allowed)


def doctor_lines(config) -> list[str]:
    lines = []

    def check(ok: bool, good: str, bad: str) -> None:
        lines.append(f"ok    {good}" if ok else f"FIX   {bad}")

    doctor_signatures.check_signatures(config, check, lines.append)
    return lines


@pytest.mark.slow  # init-repo, pushes and ssh-keygen as processes
def test_doctor_checks_the_files_and_the_hook_and_names_the_live_release_signer(signed_config, clone, keys, allowed,
                                                                                  store, site_repo_path, run_cli):
    config = configuration.load(signed_config)
    head = commit(clone, "first", keys["alice"])
    assert clone.push().returncode == 0
    store.record_live("site", head, "t/site:x", "t-site-x", store.enqueue("site", head).id)
    lines = doctor_lines(config)
    assert lines == [
        f"ok    site: signatures: allowed_signers {allowed}: 1 key, ssh-keygen reads them all",
        "ok    site: pre-receive hook refuses pushes of unsigned heads",
        f"ok    site: live release {head[:12]} is signed by alice@example.com ({keys['alice'].fingerprint})",
        f"ok    hub: signatures: allowed_signers {allowed}: 1 key, ssh-keygen reads them all",
    ]
    printed = run_cli("doctor", config=signed_config, env={"HUB_SECRET": SECRET, "HOOKDEPLOY_SECRET": "s"}).stdout
    assert all(line in printed.splitlines() for line in lines)  # `hookdeploy doctor` says them among its checks

    allowed.write_text(allowed.read_text() + "bob@example.com ssh-ed25519 AAAAnot-a-key\n")
    (site_repo_path / "hooks" / "pre-receive").unlink()
    lines = doctor_lines(config)
    assert f"FIX   site: signatures: allowed_signers {allowed}:3: invalid key (ssh-keygen cannot read that line; " \
           f"git ignores it): fix the file named in apps.site.signatures" in lines
    assert "FIX   site: pre-receive hook is missing or points elsewhere (unsigned pushes land, and only their jobs " \
           "fail): hookdeploy init-repo site" in lines

    allow(allowed)
    lines = doctor_lines(config)
    assert f"FIX   site: signatures: allowed_signers {allowed} lists no key: no commit can deploy: fix the file " \
           "named in apps.site.signatures" in lines
    why = f"signed with SSH key {keys['alice'].fingerprint}, which allowed_signers does not list"
    assert f"WARN  site: the live release: commit {head[:12]} is not signed by an allowed key ({why}); it serves " \
           "on, but a redeploy or a rollback to it would be refused" in lines


def test_history_json_shows_who_signed(signed_config, store, run_cli, keys):
    job = store.enqueue("site", "a" * 40)
    store.set_signer(job.id, keys["alice"].fingerprint, "alice@example.com")
    unsigned = store.enqueue("site", "b" * 40, coalesce=False)
    history = run_cli("history", "site", "--json", config=signed_config)
    assert history.returncode == 0, history.stderr
    shown = {entry["id"]: entry["signer"] for entry in json.loads(history.stdout)}
    assert shown == {job.id: {"fingerprint": keys["alice"].fingerprint, "principal": "alice@example.com"},
                     unsigned.id: None}


def test_the_job_page_shows_who_signed(web_app, keys):
    web_app.sign_in("read")
    signed = web_app.store.enqueue("site", web_app.shas[2])
    web_app.store.set_signer(signed.id, keys["alice"].fingerprint, "alice@example.com")
    unsigned = web_app.store.enqueue("site", web_app.shas[1], coalesce=False)
    page = web_app.client.get(f"/jobs/{signed.id}").get_data(as_text=True)
    assert (f'<dt>Signed by</dt><dd id="signer">alice@example.com <code>{keys["alice"].fingerprint}</code></dd>'
            in page)
    assert "Signed by" not in web_app.client.get(f"/jobs/{unsigned.id}").get_data(as_text=True)


def test_remove_takes_the_app_s_imported_keys(signed_config, pushed, store):
    from hookdeploy.engine import removal

    config = configuration.load(signed_config)
    run_job(config, store, actions.deploy_ref(config, store, config.apps["site"]))  # checks: makes its folder
    folder = signatures.keys_folder(config, "site")
    assert folder.is_dir()
    assert str(folder) in removal.remove_files(config, "site")
    assert not folder.exists()
