"""Previews of branches with real pushes: a real bare repo with hookdeploy's post-receive hook, `hookdeploy
serve` (receiver and worker) as a subprocess, real containers and the real nginx proxy.

One instance for the module: `site` (v1 live on site.test, a GitHub webhook) with previews of `feature/*`
on {branch}.preview.test, at most 3. In order: three branches pushed at once become three previews
answering on their hostnames while the app's live container and answers stay as they were; a second push
to a branch switches its preview under load with no failed request; a fourth branch is refused naming the
three; a deleted branch's preview goes (no container, route or image left); a branch whose label is taken
gets a suffixed one; ttl_hours removes the rest (the worker's sweep, its clock moved on); a GitHub and a
Gitea webhook push to a feature branch each deploy a preview.
"""

from __future__ import annotations

import json
import re
import signal
import time
from datetime import datetime, timedelta, timezone

import pytest

from docker_helpers import Instance, Load, died_of_sigkill, git, site_files, wait_for
from webhook_helpers import SECRETS, Server, push_body, request, signed_headers

from hookdeploy.core import previews
from hookdeploy.core.models import JobState
from hookdeploy.engine import previews as engine_previews

PREVIEWS = {"branches": ["feature/*"], "hostname": "{branch}.preview.test", "max": 3, "ttl_hours": 1,
            "env": {"PREVIEW": "yes"}}


def site_table(provider: str = "github") -> dict:
    return {"hostnames": ["site.test"], "previews": PREVIEWS,
            "webhook": {"provider": provider, "secret_env": "SITE_SECRET" if provider == "github" else "GITEA_SECRET"}}


class Rig:
    """The instance, its serve process and the app's live release as it was before any preview."""

    def __init__(self, instance: Instance, server: Server, app_sha: str, app_container_id: str):
        self.instance, self.server = instance, server
        self.app_sha, self.app_container_id = app_sha, app_container_id
        self.work = instance.repos["site"].work

    def branch(self, name: str, text: str) -> str:
        """Commit `text` as the site's page on local branch `name` (made from deploy if new); return its SHA."""
        known = git("branch", "--list", name, cwd=self.work)
        git("checkout", "-q", *((name,) if known else ("-b", name, "deploy")), cwd=self.work)
        (self.work / "site" / "index.html").write_text(f"<p>{text}</p>\n")
        git("commit", "-q", "-am", text, cwd=self.work)
        sha = git("rev-parse", "HEAD", cwd=self.work)
        git("checkout", "-q", "deploy", cwd=self.work)
        return sha

    def push(self, *refspecs: str) -> str:
        """`git push production REFSPEC...` through the post-receive hook; what the hook told the pusher
        (git's own summary of the refs, which comes after it, left out)."""
        import subprocess

        completed = subprocess.run(["git", "push", "production", *refspecs], cwd=self.work, capture_output=True,
                                   text=True, timeout=120)
        assert completed.returncode == 0, completed.stderr
        return "\n".join(line for line in completed.stderr.splitlines() if line.startswith("remote: "))

    def preview(self, label: str, path: str = "/"):
        return self.instance.get(path, host=f"{label}.preview.test")

    def app_untouched(self) -> None:
        """The app's live release, container, answer, rollback target and history are as before."""
        store = self.instance.store
        live = store.live_release("site")
        assert (live.sha, self.instance.client.containers.get(live.container).id) == (self.app_sha, self.app_container_id)
        answer = self.instance.get(host="site.test")
        assert (answer.status, answer.release, answer.body) == (200, self.app_sha[:12], "<p>v1</p>\n")
        assert store.rollback_target("site") is None
        assert [job.sha for job in store.jobs("site")] == [self.app_sha]  # the app's history lists no preview job

    def objects_of(self, name: str) -> dict[str, list[str]]:
        """What the engine and the proxy hold of a preview's release set APP.LABEL."""
        instance = self.instance
        labels = {"label": [f"hookdeploy.instance={instance.name}", f"hookdeploy.app={name}"]}
        return {"containers": [container.name for container in instance.client.containers.list(all=True, filters=labels)],
                "images": [raw["Id"] for raw in instance.client.api.images(filters=labels)
                           + instance.client.api.images(name=f"{instance.name}/{name}")],
                "route": [file for file in instance.proxy_files() if file == f"app-{name}.conf"]}


@pytest.fixture(scope="module")
def rig(docker_engine, tmp_path_factory):
    instance = Instance(tmp_path_factory.mktemp("previews"), docker_engine)
    server = None
    try:
        instance.configure({"site": site_table()})
        job = instance.deploy("site", site_files("v1"))
        assert job.state is JobState.SUCCEEDED, job.error
        installed = instance.cli("init-repo", "site")  # the bare repo is there: only its hook is installed
        assert installed.returncode == 0, installed.stderr
        port = int(instance.config.server.listen.rpartition(":")[2])
        server = Server(instance.config_path, port, instance.root / "serve.log", worker=True).start()
        live = instance.store.live_release("site")
        yield Rig(instance, server, live.sha, docker_engine.containers.get(live.container).id)
    finally:
        if server is not None:
            server.stop()
        instance.cleanup()


def test_three_branches_become_three_previews_and_the_app_is_untouched(rig):
    shas = {name: rig.branch(f"feature/{name}", f"feature {name}") for name in ("a", "b", "c")}
    with Load(rig.instance.port, host="site.test") as load:
        output = rig.push("feature/a", "feature/b", "feature/c")
    assert load.errors == [] and set(load.releases) == {rig.app_sha[:12]} and load.requests > 20
    # The hook follows the last job; its output ends with where the preview answers.
    assert output.rstrip().splitlines()[-1] == (f"remote: -----> preview of feature/c: "
                                                f"http://feature-c.preview.test:{rig.instance.port}/")
    assert "preview feature-a of feature/a: feature-a.preview.test" in output
    store = rig.instance.store
    for name, sha in shas.items():
        label = f"feature-{name}"
        wait_for(lambda: store.live_release(f"site.{label}"), what=f"{label} live")
        answer = rig.preview(label)
        assert (answer.status, answer.release, answer.body) == (200, sha[:12], f"<p>feature {name}</p>\n")
        container = store.live_release(f"site.{label}").container
        labels = rig.instance.client.containers.get(container).labels
        assert (labels["hookdeploy.preview"], labels["hookdeploy.app"]) == (label, f"site.{label}")
        env = rig.instance.client.containers.get(container).attrs["Config"]["Env"]
        assert "PREVIEW=yes" in env  # previews.env over the app's
        assert [job.to_json()["preview"] for job in store.jobs(f"site.{label}")] == [label]
    rig.app_untouched()
    status = rig.instance.cli("status", "--json")
    shown = json.loads(status.stdout)["apps"]["site"]
    assert shown["live"]["sha"] == rig.app_sha
    assert shown["previews"]["feature-b"] == {"url": f"http://feature-b.preview.test:{rig.instance.port}/",
                                              "sha": shas["b"], "since": store.live_release("site.feature-b").live_since}
    doctor = [line for line in rig.instance.cli("doctor").stdout.splitlines() if " preview " in line]
    assert [re.sub(r"last push \d+ min ago", "last push N min ago", line) for line in doctor] == [
        f"ok    preview feature-{name} of site (feature/{name}): http://feature-{name}.preview.test:"
        f"{rig.instance.port}/, live {sha[:12]}, last push N min ago" for name, sha in shas.items()]
    listed = rig.instance.cli("previews", "site")
    assert [line.split()[:2] for line in listed.stdout.splitlines()] == [
        ["feature-a", "feature/a"], ["feature-b", "feature/b"], ["feature-c", "feature/c"]]


def test_a_second_push_switches_its_preview_under_load_without_a_failed_request(rig):
    before = rig.instance.store.live_release("site.feature-a").sha
    sha = rig.branch("feature/a", "feature a, second")
    with Load(rig.instance.port, host="feature-a.preview.test") as load:
        output = rig.push("feature/a")
        time.sleep(0.3)  # a few answers of the new release too
    assert load.errors == [], load.errors[:5]
    assert set(load.releases) == {before[:12], sha[:12]} and load.releases[sha[:12]] > 0
    assert output.rstrip().endswith(f"preview of feature/a: http://feature-a.preview.test:{rig.instance.port}/")
    assert rig.preview("feature-a").body == "<p>feature a, second</p>\n"
    assert len(rig.objects_of("site.feature-a")["containers"]) == 1  # the old one retired
    rig.app_untouched()


def test_one_more_than_max_is_refused_naming_the_previews_there_are(rig):
    rig.branch("feature/d", "feature d")
    output = rig.push("feature/d")
    assert ("hookdeploy: no preview: site has 3 previews, its max: remove one first (hookdeploy preview-remove "
            "site BRANCH): feature/a (feature-a), feature/b (feature-b), feature/c (feature-c)") in output
    store = rig.instance.store
    assert store.jobs("site.feature-d") == [] and previews.Previews(store).find("site", "feature/d") is None
    assert rig.preview("feature-d").status == 404


def test_deleting_a_branch_removes_its_preview_and_leaves_nothing(rig):
    assert rig.objects_of("site.feature-b")["containers"]
    output = rig.push(":feature/b")
    assert "the worker removes its preview feature-b" in output
    wait_for(lambda: previews.Previews(rig.instance.store).find("site", "feature/b") is None, what="feature-b removed")
    assert rig.objects_of("site.feature-b") == {"containers": [], "images": [], "route": []}
    assert rig.preview("feature-b").status == 404
    assert rig.preview("feature-a").status == 200 and rig.preview("feature-c").status == 200
    rig.app_untouched()


def test_two_branches_of_one_label_get_two_previews(rig):
    sha = rig.branch("feature/A", "feature capital A")  # feature/a holds the label feature-a
    output = rig.push("feature/A")
    label = previews.Previews(rig.instance.store).find("site", "feature/A").label
    assert re.fullmatch(r"feature-a-[0-9a-f]{6}", label)
    assert output.rstrip().endswith(f"preview of feature/A: http://{label}.preview.test:{rig.instance.port}/")
    assert (rig.preview(label).release, rig.preview(label).body) == (sha[:12], "<p>feature capital A</p>\n")
    assert rig.preview("feature-a").body == "<p>feature a, second</p>\n"  # the other branch's, as it was


def test_ttl_hours_without_a_push_removes_previews(rig):
    store = rig.instance.store
    names = [preview.name for preview in previews.Previews(store).of("site")]
    assert len(names) == 3
    # The worker's sweep (engine/previews.py), its clock 61 minutes on: every preview has had no push for 1 hour.
    later = datetime.now(timezone.utc) + timedelta(minutes=61)
    soon = datetime.now(timezone.utc) + timedelta(minutes=59)
    assert engine_previews.sweep(rig.instance.config, store, lambda: soon) == []
    removed = engine_previews.sweep(rig.instance.config, store, lambda: later)
    assert sorted(preview.name for preview in removed) == sorted(names)
    for name in names:
        assert rig.objects_of(name) == {"containers": [], "images": [], "route": []}
    assert previews.Previews(store).of("site") == []
    rig.app_untouched()


def _webhook_push(rig, provider: str, branch: str, text: str) -> int:
    sha = rig.branch(branch, text)
    rig.push(f"{branch}", "--no-verify")  # into the repo without the hook: the webhook announces it
    secret = SECRETS["SITE_SECRET" if provider == "github" else "GITEA_SECRET"]
    body = push_body(provider, sha, ref=f"refs/heads/{branch}")
    status, answer, _ = request(rig.server.port, "POST", "/hooks/site", body, signed_headers(provider, secret, body))
    assert status == 202, answer
    job = rig.instance.store.job(answer["job"])
    assert (job.to_json()["app"], job.to_json()["preview"]) == ("site", previews.label_for(branch))
    wait_for(lambda: rig.instance.store.job(job.id).state.finished, what=f"job {job.id}")
    assert rig.instance.store.job(job.id).state is JobState.SUCCEEDED, rig.instance.store.job(job.id).error
    answer = rig.preview(previews.label_for(branch))
    assert (answer.status, answer.release) == (200, sha[:12])
    return job.id


def test_a_github_and_a_gitea_webhook_push_to_a_feature_branch_deploy_previews(rig):
    _webhook_push(rig, "github", "feature/from-github", "from github")
    rig.instance.configure({"site": site_table("gitea")})
    rig.server.process.send_signal(signal.SIGHUP)  # serve reads deploy.toml again
    wait_for(lambda: "reloaded" in (rig.instance.root / "serve.log").read_text() or
             "gitea" in str(rig.instance.config.app("site").webhook), what="the reload")
    wait_for(lambda: request(rig.server.port, "POST", "/hooks/site", b"{}",
                             signed_headers("gitea", SECRETS["GITEA_SECRET"], b"{}", event="issues"))[0] == 200,
             what="the gitea webhook table in force")
    _webhook_push(rig, "gitea", "feature/from-gitea", "from gitea")
    deleted = {"ref": "feature/from-gitea", "ref_type": "branch"}
    body = json.dumps(deleted).encode()
    status, answer, _ = request(rig.server.port, "POST", "/hooks/site", body,
                                signed_headers("gitea", SECRETS["GITEA_SECRET"], body, event="delete"))
    assert (status, answer) == (200, {"ignored": "deletion of refs/heads/feature/from-gitea: the worker removes its "
                                                 "preview feature-from-gitea"})
    wait_for(lambda: rig.objects_of("site.feature-from-gitea") == {"containers": [], "images": [], "route": []},
             what="the gitea preview removed")
    rig.app_untouched()


def test_a_worker_killed_mid_preview_deploy_is_recovered_like_the_app(rig):
    rig.server.stop()  # from here on the workers are this test's: one killed after the health check, then one
    sha = rig.branch("feature/crash", "feature crash")
    rig.push("feature/crash", "--no-verify")
    queued = rig.instance.cli("deploy", "site", "--ref", "feature/crash", "--json")
    assert queued.returncode == 0, queued.stderr
    job = json.loads(queued.stdout)
    assert (job["app"], job["preview"], job["trigger"]) == ("site", "feature-crash", "manual")
    assert died_of_sigkill(rig.instance.worker_process(fault="health"))
    finished = rig.instance.worker_process()
    assert finished.returncode == 0, finished.stderr
    store = rig.instance.store
    interrupted = store.job(job["id"])
    assert interrupted.state is JobState.INTERRUPTED
    retry = store.retry_of(job["id"])
    assert retry is not None and store.job(retry.id).state is JobState.SUCCEEDED
    assert (rig.preview("feature-crash").status, rig.preview("feature-crash").release) == (200, sha[:12])
    live = store.live_release("site.feature-crash").container
    assert rig.objects_of("site.feature-crash")["containers"] == [live]  # the killed job's candidate is gone
    rig.app_untouched()
