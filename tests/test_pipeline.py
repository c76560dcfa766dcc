"""The deploy pipeline against the real things: git repos, the Docker engine, the nginx proxy on a
published port, and HTTP requests through it (issue 3, "Tests").

Each test gets an instance of its own (a unique `server.name`, a free port) and removes every
container, image and network labelled with it afterwards; see docker_helpers.py.
"""

from __future__ import annotations

import json
import re
import time

import pytest

from docker_helpers import BASE_IMAGE, Instance, Link, Load, site_files
from hookdeploy.core.models import JobKind, JobState, ReleaseState, Trigger

pytestmark = pytest.mark.docker

def release_labels(instance: Instance, app: str, sha: str, job: int) -> dict[str, str]:
    return {"hookdeploy.instance": instance.name, "hookdeploy.app": app, "hookdeploy.sha": sha,
            "hookdeploy.job": str(job)}


def steps(instance: Instance, job_id: int) -> dict[str, float]:
    """A job's step events: message → duration."""
    return {event.message: event.duration for event in instance.store.events(job_id) if event.kind == "step"}


# -- success -------------------------------------------------------------------------------------------


def test_push_goes_live_through_the_proxy_with_design_names_and_labels(instance):
    instance.configure({"site": {}})
    first = instance.deploy("site", site_files("version one"))
    name, sha12 = instance.name, first.sha[:12]

    assert first.state is JobState.SUCCEEDED, first.error
    assert first.error is None
    assert first.image == f"{name}/site:{sha12}"
    answer = instance.get()
    assert (answer.status, answer.release, answer.body) == (200, sha12, "<p>version one</p>\n")

    # Docker objects: names and labels as DESIGN ("Docker objects").
    container_name = f"{name}-site-{sha12}-{first.id}"
    assert instance.container_names() == {f"{name}-proxy", container_name}
    container = instance.client.containers.get(container_name)
    assert container.status == "running"
    assert release_labels(instance, "site", first.sha, first.id).items() <= container.labels.items()
    assert container.attrs["HostConfig"]["RestartPolicy"]["Name"] == "unless-stopped"
    assert list(container.attrs["NetworkSettings"]["Networks"]) == [name]
    image = instance.client.images.get(f"{name}/site:{sha12}")
    assert release_labels(instance, "site", first.sha, first.id).items() <= image.labels.items()
    assert instance.images() == {f"{name}/site:{sha12}"}

    proxy = instance.client.containers.get(f"{name}-proxy")
    assert proxy.image.tags == [BASE_IMAGE]
    assert proxy.labels["hookdeploy.instance"] == name and proxy.labels["hookdeploy.role"] == "proxy"
    assert proxy.attrs["HostConfig"]["RestartPolicy"]["Name"] == "unless-stopped"
    assert proxy.attrs["HostConfig"]["PortBindings"]["80/tcp"] == [{"HostIp": "127.0.0.1",
                                                                   "HostPort": str(instance.port)}]
    conf_d = instance.state_dir / "proxy" / "conf.d"
    [mount] = [mount for mount in proxy.attrs["Mounts"] if mount["Destination"] == "/etc/nginx/conf.d"]
    assert mount["Type"] == "bind" and mount["Source"] == str(conf_d) and conf_d.is_dir()
    network = instance.client.networks.get(name)
    assert network.attrs["Labels"]["hookdeploy.instance"] == name

    # The store and the job log.
    live = instance.store.live_release("site")
    assert (live.sha, live.image, live.container, live.job) == (first.sha, first.image, container_name, first.id)
    timed = steps(instance, first.id)
    for step in ("checked out", "built", "started candidate", "health check passed", "switched proxy",
                 "verified through the proxy"):
        assert any(message.startswith(step) and took is not None for message, took in timed.items()), step
    assert any(message.startswith("#1 [internal] load build definition from ")
               for message in instance.events(first.id)), "build output is logged"

    # A second push replaces it: the old container is drained and removed, its image kept for rollback.
    second = instance.deploy("site", site_files("version two"))
    assert second.state is JobState.SUCCEEDED, second.error
    answer = instance.get()
    assert (answer.status, answer.release, answer.body) == (200, second.sha[:12], "<p>version two</p>\n")
    assert instance.container_names() == {f"{name}-proxy", f"{name}-site-{second.sha[:12]}-{second.id}"}
    assert instance.images() == {f"{name}/site:{sha12}", f"{name}/site:{second.sha[:12]}"}
    releases = instance.store.releases("site")
    assert [(release.sha, release.state) for release in releases] == [
        (second.sha, ReleaseState.LIVE), (first.sha, ReleaseState.RETIRED)]
    assert instance.client.containers.get(f"{name}-proxy").id == proxy.id, "the proxy is reused, not recreated"


# -- failures before the switch ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def live_site(docker_engine, tmp_path_factory):
    """One instance with a healthy release live, shared by the failure cases (each leaves it as it was)."""
    made = Instance(tmp_path_factory.mktemp("live-site"), docker_engine)
    try:
        made.configure({"site": {"health": {"deadline": 2.5}}})
        job = made.deploy("site", site_files("the good one"))
        assert job.state is JobState.SUCCEEDED, job.error
        yield made
    finally:
        made.cleanup()


# The restart policy may have started it again by the time the worker looks: then the status is gone.
EXITED = r"^container exited (with status {code}|\(and was restarted\)) before it was healthy"
FAILURES = {
    "broken Dockerfile": (site_files("broken", dockerfile_tail="RUN echo compiling && exit 7\n"),
                          # BuildKit's wording: "executor failed running [...]" (engine 20.10) or "process ... did
                          # not complete successfully" (later engines)
                          r"^build failed: .*/bin/sh -c echo compiling && exit 7.*: exit code: 7$"),
    "container exits at start": (
        site_files("crashing", dockerfile_tail='CMD ["sh", "-c", "echo missing DATABASE_URL >&2; exit 3"]\n'),
        EXITED.format(code=3)),
    "container exits during the health check": (
        site_files("crashing later", dockerfile_tail='CMD ["sh", "-c", "sleep 0.5; exit 4"]\n'),
        EXITED.format(code=4)),
    "health endpoint 404": (site_files("no health page", health=None), r"GET /health status 404, want 200$"),
    "health endpoint hangs past the timeout": (
        # busybox nc accepts every connection and runs `sleep` on it: the request is never answered.
        site_files("hanging", dockerfile_tail='CMD ["nc", "-ll", "-p", "80", "-e", "sleep", "30"]\n'),
        r"^unhealthy after [\d.]+ s: GET /health no answer: timed out$"),
    "health body lacks `contains`": (site_files("sick", health="sick\n"), r"GET /health body lacks 'healthy'$"),
    # Checked out on Debian 12's Python 3.11.2 too: refused before any build could read the host's file.
    "symlink to a file outside the checkout": (site_files("leaky", extra={"leak": Link("/etc/shadow")}),
                                               r"symlink 'leak' points outside the checkout \(to '/etc/shadow'\)"),
}


@pytest.mark.parametrize("case", list(FAILURES))
def test_failure_before_the_switch_leaves_the_live_release_serving(live_site, case):
    files, reason = FAILURES[case]
    live = live_site.store.live_release("site")
    proxy_files = live_site.proxy_files()
    proxy_started = live_site.client.containers.get(f"{live_site.name}-proxy").attrs["State"]["StartedAt"]

    started = time.monotonic()
    job = live_site.deploy("site", files, message=case)
    took = time.monotonic() - started

    assert job.state is JobState.FAILED
    assert re.search(reason, job.error, re.MULTILINE), job.error
    assert job.error in "\n".join(live_site.events(job.id)), "the reason is in the job log"
    if case == "container exits at start":
        assert "\nlast container output:\n  missing DATABASE_URL" in job.error
    assert took < 15
    # Nothing live changed: same release, same proxy config, still answering.
    assert live_site.store.live_release("site") == live
    assert live_site.proxy_files() == proxy_files
    answer = live_site.get()
    assert (answer.status, answer.release, answer.body) == (200, live.sha[:12], "<p>the good one</p>\n")
    proxy = live_site.client.containers.get(f"{live_site.name}-proxy")
    assert proxy.status == "running" and proxy.attrs["State"]["StartedAt"] == proxy_started
    # What the job made is gone: its candidate and its image.
    assert live_site.container_names() == live_site.expected_containers()
    assert live_site.images() == {live.image}


def test_hostnames_longer_than_nginx_default_bucket_are_served(instance):
    # 72 characters: nginx's default server_names_hash_bucket_size (64) would reject it.
    long_hostname = "a" * 60 + ".example.com"
    instance.configure({"site": {"hostnames": [long_hostname]}})
    job = instance.deploy("site", site_files("long"))
    assert job.state is JobState.SUCCEEDED, job.error
    answer = instance.get(host=long_hostname)
    assert (answer.status, answer.release) == (200, job.sha[:12])


def test_server_block_nginx_rejects_fails_and_leaves_the_proxy_untouched(instance):
    # Valid for deploy.toml (each label <= 63 characters, 195 in all) but longer than the
    # server_names_hash_bucket_size hookdeploy sets (128 bytes) allows: `nginx -t` fails.
    long_hostname = ".".join(letter * 63 for letter in "abc") + ".com"
    instance.configure({"site": {"hostnames": ["site.test"]}})
    first = instance.deploy("site", site_files("one"))
    assert first.state is JobState.SUCCEEDED, first.error
    before = instance.proxy_files()

    instance.configure({"site": {"hostnames": ["site.test", long_hostname]}})
    assert instance.config.app("site").hostnames == ("site.test", long_hostname), "config accepts the hostname"
    second = instance.deploy("site", site_files("two"))

    assert second.state is JobState.FAILED
    assert "nginx rejected the config" in second.error and "server_names_hash" in second.error
    assert instance.proxy_files() == before, "the previous server block is restored byte for byte"
    assert not list((instance.state_dir / "proxy" / "conf.d").glob(".tmp-*")), "no temp files left"
    answer = instance.get(host="site.test")
    assert (answer.status, answer.release, answer.body) == (200, first.sha[:12], "<p>one</p>\n")
    assert instance.store.live_release("site").job == first.id
    assert instance.container_names() == instance.expected_containers()
    assert instance.images() == {first.image}


# -- failure after the switch ------------------------------------------------------------------------


def test_verification_failure_through_the_proxy_rolls_back(instance):
    instance.configure({"site": {"hostnames": ["site.test"], "health": {"deadline": 2.5}}})
    first = instance.deploy("site", site_files("one"))
    assert first.state is JobState.SUCCEEDED, first.error
    before = instance.proxy_files()

    # Healthy for the worker's direct probe (Host: the container's IP, the default server), but
    # 503 for the app's hostname, which is what visitors (and the verification) send.
    app_conf = ("server { listen 80 default_server; root /usr/share/nginx/html; }\n"
                "server { listen 80; server_name site.test; return 503; }\n")
    second = instance.deploy("site", site_files(
        "two", extra={"default.conf": app_conf},
        dockerfile_tail="COPY default.conf /etc/nginx/conf.d/default.conf\n"))

    assert second.state is JobState.ROLLED_BACK
    assert "verification through the proxy failed: status 503" in second.error
    assert f"{first.sha[:12]} is live again" in second.error
    timed = steps(instance, second.id)
    assert any(message.startswith("health check passed") for message in timed), "it was healthy before the switch"
    assert any(message.startswith("switched proxy") for message in timed)
    assert instance.proxy_files() == before
    answer = instance.get(host="site.test")
    assert (answer.status, answer.release, answer.body) == (200, first.sha[:12], "<p>one</p>\n")
    assert instance.store.live_release("site").job == first.id
    assert instance.container_names() == instance.expected_containers()
    assert instance.images() == {first.image}


# -- rollback and replay -----------------------------------------------------------------------------


def enqueue_with_cli(instance: Instance, *arguments: str):
    """Run an enqueueing CLI command with --json; return the job it printed."""
    completed = instance.cli(*arguments, "--json")
    assert completed.returncode == 0, completed.stderr
    return json.loads(completed.stdout.splitlines()[0])


def test_rollback_rollback_to_and_replay(instance):
    instance.configure({"site": {}})
    never_deployed = instance.commit("site", site_files("zero"))
    deployed = {}
    for version in ("one", "two", "three"):
        job = instance.deploy("site", site_files(version))
        assert job.state is JobState.SUCCEEDED, job.error
        deployed[version] = job.sha

    # rollback: the previous live release, from its kept image (no checkout, no build).
    printed = enqueue_with_cli(instance, "rollback", "site")
    assert (printed["kind"], printed["trigger"], printed["sha"]) == ("rollback", "rollback", deployed["two"])
    instance.work()
    job = instance.store.job(printed["id"])
    assert job.state is JobState.SUCCEEDED, job.error
    assert not any(message.startswith(("checked out", "built")) for message in steps(instance, job.id))
    assert f"using image {instance.name}/site:{deployed['two'][:12]} (already built)" in instance.events(job.id)
    answer = instance.get()
    assert (answer.release, answer.body) == (deployed["two"][:12], "<p>two</p>\n")

    # rollback --to: any kept release, by abbreviated SHA.
    printed = enqueue_with_cli(instance, "rollback", "site", "--to", deployed["one"][:9])
    assert printed["sha"] == deployed["one"]
    instance.work()
    assert instance.store.job(printed["id"]).state is JobState.SUCCEEDED
    answer = instance.get()
    assert (answer.release, answer.body) == (deployed["one"][:12], "<p>one</p>\n")

    # replay: a commit that was never deployed is checked out and built.
    printed = enqueue_with_cli(instance, "replay", "site", never_deployed[:8])
    assert (printed["kind"], printed["trigger"], printed["sha"]) == ("deploy", "replay", never_deployed)
    instance.work()
    job = instance.store.job(printed["id"])
    assert job.state is JobState.SUCCEEDED, job.error
    assert any(message.startswith("built") for message in steps(instance, job.id))
    answer = instance.get()
    assert (answer.release, answer.body) == (never_deployed[:12], "<p>zero</p>\n")
    assert instance.container_names() == instance.expected_containers()


def test_retention_prunes_beyond_keep_and_a_pruned_release_is_rebuilt_on_rollback(instance):
    instance.configure({"site": {"keep": 2}})
    jobs = []
    for version in ("one", "two", "three", "four"):
        job = instance.deploy("site", site_files(version))
        assert job.state is JobState.SUCCEEDED, job.error
        jobs.append(job)
    one, two, three, four = jobs
    image = {job: f"{instance.name}/site:{job.sha[:12]}" for job in jobs}

    assert instance.images() == {image[three], image[four]}, "the live release and the rollback target"
    states = {release.sha: release.state for release in instance.store.releases("site")}
    assert states == {one.sha: ReleaseState.PRUNED, two.sha: ReleaseState.PRUNED,
                      three.sha: ReleaseState.RETIRED, four.sha: ReleaseState.LIVE}
    assert f"pruned {image[one]}" in steps(instance, three.id)
    assert f"pruned {image[two]}" in steps(instance, four.id)

    # Rolling back to a pruned release rebuilds it from git; pruning then keeps the new live
    # release and the rollback target (four), and removes three.
    printed = enqueue_with_cli(instance, "rollback", "site", "--to", one.sha)
    instance.work()
    job = instance.store.job(printed["id"])
    assert job.state is JobState.SUCCEEDED, job.error
    assert f"image {image[one]} was pruned; rebuilding it from git" in instance.events(job.id)
    answer = instance.get()
    assert (answer.release, answer.body) == (one.sha[:12], "<p>one</p>\n")
    assert instance.images() == {image[one], image[four]}
    live = instance.store.live_release("site")
    assert (live.sha, live.job) == (one.sha, job.id)
    assert instance.container_names() == instance.expected_containers()


# -- several apps, several instances -----------------------------------------------------------------


def test_two_apps_share_one_proxy_by_hostname(instance):
    instance.configure({"alpha": {"hostnames": ["alpha.test"]},
                        "beta": {"hostnames": ["beta.test", "www.beta.test"]}})
    alpha = instance.enqueue("alpha", instance.commit("alpha", site_files("alpha one")))
    beta = instance.enqueue("beta", instance.commit("beta", site_files("beta one")))
    instance.work()
    for job in (alpha, beta):
        assert instance.store.job(job.id).state is JobState.SUCCEEDED, instance.store.job(job.id).error

    assert instance.get(host="alpha.test") == (200, alpha.sha[:12], "<p>alpha one</p>\n")
    assert instance.get(host="beta.test") == (200, beta.sha[:12], "<p>beta one</p>\n")
    assert instance.get(host="www.beta.test") == (200, beta.sha[:12], "<p>beta one</p>\n")
    unknown = instance.get(host="nobody.test")
    assert (unknown.status, unknown.release) == (404, None), "hostnames of no app get the catch-all 404"
    assert sorted(instance.proxy_files()) == ["00-default.conf", "00-http.conf", "app-alpha.conf", "app-beta.conf"]

    # A deploy of one app leaves the other's container and server block alone.
    alpha_container = instance.client.containers.get(instance.store.live_release("alpha").container)
    alpha_file = instance.proxy_files()["app-alpha.conf"]
    beta_two = instance.deploy("beta", site_files("beta two"))
    assert beta_two.state is JobState.SUCCEEDED, beta_two.error
    assert instance.get(host="beta.test") == (200, beta_two.sha[:12], "<p>beta two</p>\n")
    assert instance.get(host="alpha.test") == (200, alpha.sha[:12], "<p>alpha one</p>\n")
    assert instance.client.containers.get(alpha_container.name).id == alpha_container.id
    assert instance.proxy_files()["app-alpha.conf"] == alpha_file
    assert instance.container_names() == instance.expected_containers()


def test_two_instances_share_one_engine_without_touching_each_other(make_instance):
    first, second = make_instance(), make_instance()
    for each, content in ((first, "first one"), (second, "second one")):
        each.configure({"site": {}})
        job = each.deploy("site", site_files(content))
        assert job.state is JobState.SUCCEEDED, job.error
    untouched = {container.id: container.attrs["State"]["StartedAt"] for container in second.containers()}
    second_images = second.images()
    second_live = second.store.live_release("site")

    job = first.deploy("site", site_files("first two"))  # starts with a recovery pass over the engine
    assert job.state is JobState.SUCCEEDED, job.error
    assert first.get() == (200, job.sha[:12], "<p>first two</p>\n")
    assert second.get() == (200, second_live.sha[:12], "<p>second one</p>\n")
    assert {container.id: container.attrs["State"]["StartedAt"] for container in second.containers()} == untouched
    assert second.images() == second_images

    first.cleanup()
    assert not first.containers() and not first.images()
    assert not first.client.networks.list(names=[first.name])
    assert second.get() == (200, second_live.sha[:12], "<p>second one</p>\n")
    assert second.container_names() == second.expected_containers()
    assert second.client.networks.list(names=[second.name])


# -- zero downtime -----------------------------------------------------------------------------------


def test_no_failed_request_during_a_deploy_and_a_rollback_under_load(instance):
    instance.configure({"site": {}})
    first = instance.deploy("site", site_files("one"))
    assert first.state is JobState.SUCCEEDED, first.error

    with Load(instance.port, threads=3) as load:
        time.sleep(0.3)
        second = instance.deploy("site", site_files("two"))
        time.sleep(0.3)
        back = instance.enqueue("site", first.sha, kind=JobKind.ROLLBACK, trigger=Trigger.ROLLBACK)
        instance.work()
        time.sleep(0.3)

    assert second.state is JobState.SUCCEEDED, second.error
    assert instance.store.job(back.id).state is JobState.SUCCEEDED
    assert load.errors == [], f"{len(load.errors)} of {load.requests} requests failed: {load.errors[:5]}"
    assert set(load.releases) == {first.sha[:12], second.sha[:12]}
    assert load.requests >= 50
    assert instance.get().release == first.sha[:12]
    assert instance.container_names() == instance.expected_containers()
