"""Builds with BuildKit (issue 21, item 1): the Dockerfiles people copy today deploy, a build secret
stays out of everything hookdeploy and Docker keep, `build_target` picks a stage and skips the
others, a failed or stopped build leaves the live release and nothing running, and `builder =
"classic"` keeps the legacy builder.

On the machines the tests run on, a docker CLI 28 without buildx comes first on PATH and Debian's
20.10 CLI (BuildKit built in) after it: the docker tests build through the one hookdeploy picks.
The choice itself is tested against stand-in CLIs (scripts that answer as each kind does),
because no buildx plugin can be installed here.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import tempfile
import textwrap
import time
from pathlib import Path

import pytest

from docker_helpers import BASE_IMAGE, HOOKDEPLOY, live_instance, site_files
from hookdeploy.core.errors import ConfigError, StepFailed
from hookdeploy.core.models import JobState
from hookdeploy.engine import buildkit
from webhook_helpers import Server, request

MOUNT_CACHE = "RUN --mount=type=cache,target=/var/cache/x echo hi > /tmp/x\n"


# -- which CLI builds: stand-ins for each kind -------------------------------------------------------------


def fake_cli(folder: Path, version: str, buildx: str | None = None) -> Path:
    """A `docker` in `folder` answering `--version` (and `buildx version` when it has the plugin) as the real one does;
    a build records its arguments in ARGS beside it, reads its --secret env= variable, and writes --iidfile."""
    folder.mkdir(parents=True, exist_ok=True)
    script = folder / "docker"
    buildx_answer = (f'echo "github.com/docker/buildx {buildx} 00a7f1b"; exit 0' if buildx else
                     'echo "docker: unknown command: docker buildx" >&2; exit 1')
    script.write_text(textwrap.dedent(f"""\
        #!/bin/sh
        if [ "$1" = "--version" ]; then echo "Docker version {version}, build 297e128"; exit 0; fi
        if [ "$1" = "buildx" ] && [ "$2" = "version" ]; then {buildx_answer}; fi
        printf '%s\\n' "$@" > "{folder}/ARGS"
        env > "{folder}/ENV"
        while [ $# -gt 0 ]; do
            if [ "$1" = "--iidfile" ]; then echo sha256:feedface > "$2"; fi
            shift
        done
        echo "#1 [internal] load build definition from Dockerfile"
        echo "#1 sha256:{'a' * 64}"
        echo "#1 DONE 0.0s"
        """))
    script.chmod(0o755)
    return script


def test_a_newer_cli_without_buildx_is_passed_over_for_debians_20_10_next_to_it(tmp_path):
    new, old = fake_cli(tmp_path / "local", "28.2.2"), fake_cli(tmp_path / "usr", "20.10.24+dfsg1")
    found = buildkit.discover(f"{new.parent}:{old.parent}")
    assert found.client == buildkit.Client(str(old), "20.10.24+dfsg1")
    assert found.client.command() == [str(old), "build"]
    assert found.passed_over == (f"{new} 28.2.2 has no buildx plugin",)


def test_a_cli_with_buildx_builds_through_it_and_loads_the_image_into_the_engine(tmp_path):
    with_buildx = fake_cli(tmp_path / "local", "28.2.2", buildx="v0.16.1")
    found = buildkit.discover(f"{with_buildx.parent}:{fake_cli(tmp_path / 'usr', '20.10.24').parent}")
    assert found.client.command() == [str(with_buildx), "buildx", "build", "--load"]
    assert found.client.describe() == f"{with_buildx} 28.2.2, buildx v0.16.1"


def test_without_a_buildkit_client_the_job_fails_in_one_line_with_the_fix(tmp_path):
    new = fake_cli(tmp_path / "local", "27.0.1")
    old = fake_cli(tmp_path / "old", "19.03.2")
    found = buildkit.discover(f"{new.parent}:{old.parent}")
    assert found.client is None
    assert found.problem() == (
        f"no BuildKit client ({new} 27.0.1 has no buildx plugin; {old} 19.03.2 is older than 20.10): "
        "apt-get install docker.io (Debian's docker CLI builds with BuildKit), or install the docker buildx "
        "plugin (docker-buildx-plugin); or set [build] builder = \"classic\"")
    assert buildkit.discover(str(tmp_path / "nothing")).problem().startswith("no BuildKit client (no docker CLI on PATH): ")


def test_the_build_command_carries_labels_args_target_and_secrets_by_reference_only(tmp_path, monkeypatch):
    cli = fake_cli(tmp_path / "bin", "28.2.2", buildx="v0.16.1")
    client = buildkit.discover(str(cli.parent)).client
    value = f"hunter2-{secrets.token_hex(8)}"
    monkeypatch.setenv("HD_TEST_NPM_TOKEN", value)
    (tmp_path / "npm, rc").write_text(value)
    monkeypatch.setenv("DOCKER_CONTEXT", "elsewhere")
    monkeypatch.delenv("DOCKER_HOST", raising=False)
    context = tmp_path / "context"
    context.mkdir()
    (context / "Dockerfile").write_text(f"FROM {BASE_IMAGE}\n")
    seen: list[str] = []
    iidfiles = set(Path(tempfile.gettempdir()).glob("hookdeploy-iid-*"))
    token, npmrc = (type("S", (), fields) for fields in ({"from_env": "HD_TEST_NPM_TOKEN", "from_file": ""},
                                                         {"from_env": "", "from_file": str(tmp_path / "npm, rc")}))
    image = buildkit.build(client, context, "Dockerfile", "n/site:abc", {"hookdeploy.app": "site"}, {"V": "1 2"},
                           "web", {"token": token, "npmrc": npmrc}, 30, seen.extend)
    assert image == "sha256:feedface"
    arguments = (cli.parent / "ARGS").read_text().splitlines()
    assert arguments[:4] == ["buildx", "build", "--load", "--progress=plain"]
    pairs = list(zip(arguments, arguments[1:]))
    assert ("--label", "hookdeploy.app=site") in pairs and ("--build-arg", "V=1 2") in pairs
    assert ("--target", "web") in pairs and ("--tag", "n/site:abc") in pairs
    assert ("--secret", "id=token,env=HD_TEST_NPM_TOKEN") in pairs
    assert ("--secret", f'id=npmrc,"src={tmp_path / "npm, rc"}"') in pairs  # CSV: the comma stays in the path
    assert value not in "\n".join(arguments)
    environment = dict(line.split("=", 1) for line in (cli.parent / "ENV").read_text().splitlines() if "=" in line)
    assert environment["DOCKER_HOST"] == "unix:///var/run/docker.sock" and "DOCKER_CONTEXT" not in environment
    assert seen == ["#1 [internal] load build definition from Dockerfile", "#1 DONE 0.0s"]  # the digest line is dropped
    assert set(Path(tempfile.gettempdir()).glob("hookdeploy-iid-*")) == iidfiles, "the id file is removed"


def test_a_build_secret_whose_source_is_missing_fails_naming_it_and_never_its_value(tmp_path, monkeypatch):
    monkeypatch.delenv("HD_TEST_UNSET", raising=False)
    unset = type("S", (), {"from_env": "HD_TEST_UNSET", "from_file": ""})
    with pytest.raises(StepFailed) as raised:
        buildkit.secret_options({"token": unset})
    assert str(raised.value) == ("build secret token: environment variable HD_TEST_UNSET is not set "
                                 "(set it in the environment hookdeploy runs with)")
    missing = type("S", (), {"from_env": "", "from_file": str(tmp_path / "gone")})
    with pytest.raises(StepFailed, match=f"^build secret npmrc: cannot read {tmp_path / 'gone'} "
                                         r"\(No such file or directory\)$"):
        buildkit.secret_options({"npmrc": missing})


# -- deploy.toml -------------------------------------------------------------------------------------------


def load(tmp_path: Path, text: str):
    from hookdeploy.core import config

    path = tmp_path / "deploy.toml"
    path.write_text(f'[server]\nstate_dir = "{tmp_path / "state"}"\n' + text)
    return config.load(path)


def test_build_keys_are_read_with_their_defaults(tmp_path):
    loaded = load(tmp_path, '[apps.site]\nrepo = "/r.git"\n')
    assert loaded.build.builder == "buildkit"
    assert (loaded.apps["site"].build_target, dict(loaded.apps["site"].build_secrets)) == ("", {})
    loaded = load(tmp_path, '[build]\nbuilder = "classic"\n[apps.site]\nrepo = "/r.git"\nbuild_target = "web"\n'
                            'build_secrets = {}\n')
    assert (loaded.build.builder, loaded.apps["site"].build_target) == ("classic", "web")
    loaded = load(tmp_path, '[apps.site]\nrepo = "/r.git"\n'
                            'build_secrets = { npmrc = { from_file = "npmrc" }, token = { from_env = "NPM_TOKEN" } }\n')
    secrets_ = loaded.apps["site"].build_secrets
    assert (secrets_["npmrc"].from_file, secrets_["token"].from_env) == (str(tmp_path / "npmrc"), "NPM_TOKEN")


@pytest.mark.parametrize("text, problem", [
    ('[build]\nbuilder = "kaniko"\n', "build.builder: must be one of buildkit, classic, not 'kaniko'"),
    ('[build]\nhost = "ssh://builder"\n',
     "build.host: must be ssh://user@host[:port] or tcp://host:port, not 'ssh://builder'"),
    ('[apps.site]\nrepo = "/r"\nbuild_target = "no stage"\n',
     "apps.site.build_target: must name a stage of the Dockerfile (FROM ... AS NAME), not 'no stage'"),
    ('[apps.site]\nimage = "reg.example:5000/site"\nbuild_target = "web"\n',
     "apps.site.build_target: only for apps built here from a repo (an image app is built elsewhere)"),
    ('[apps.site]\nrepo = "/r"\nbuild_secrets = { token = "hunter2" }\n',
     'apps.site.build_secrets.token: must be { from_file = "PATH" } or { from_env = "VARIABLE" } '
     "(the value itself never goes in the file)"),
    ('[apps.site]\nrepo = "/r"\nbuild_secrets = { token = { from_env = "NPM TOKEN" } }\n',
     "apps.site.build_secrets.token.from_env: must name an environment variable, not 'NPM TOKEN'"),
    ('[apps.site]\nrepo = "/r"\nbuild_secrets = { "a b" = { from_env = "X" } }\n',
     "apps.site.build_secrets.'a b': a secret's name must match [A-Za-z0-9][A-Za-z0-9_.-]{0,63}"),
    ('[apps.site]\nrepo = "/r"\nbuild_secrets = { npmrc = { from_file = "" } }\n',
     "apps.site.build_secrets.npmrc.from_file: must not be empty"),
    ('[build]\nbuilder = "classic"\n[apps.site]\nrepo = "/r"\nbuild_secrets = { t = { from_env = "X" } }\n',
     'apps.site.build_secrets: need [build] builder = "buildkit" (the classic builder has no secret mounts)'),
])
def test_bad_build_keys_are_one_line_each(tmp_path, text, problem):
    with pytest.raises(ConfigError) as raised:
        load(tmp_path, text)
    assert raised.value.problems == [problem]


# -- deploys, for real ---------------------------------------------------------------------------------------


def running_with(marker: str) -> list[str]:
    """Command lines of this machine's processes that mention `marker` (a build's RUN step runs on this host)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if marker in command:
                found.append(f"{entry.name}: {command.strip()}")
    return found


def wait_until(condition, what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def test_a_cache_mount_build_deploys_with_labels_and_build_args_and_records_the_image_id(instance):
    instance.configure({"site": {"build_args": {"GREETING": "hello from a build arg"}}})
    job = instance.deploy("site", site_files("cache mount", dockerfile_tail=(
        MOUNT_CACHE + "ARG GREETING\nRUN echo \"$GREETING\" > /usr/share/nginx/html/greeting\n")))
    assert job.state is JobState.SUCCEEDED, job.error
    assert instance.get().release == job.sha[:12]
    assert instance.get("/greeting").body == "hello from a build arg\n"
    name = f"{instance.name}/site:{job.sha[:12]}"
    image = instance.client.images.get(name)
    assert image.labels["hookdeploy.instance"] == instance.name and image.labels["hookdeploy.job"] == str(job.id)
    events = instance.events(job.id)
    assert any(line.startswith(f"building {name} with BuildKit (") for line in events), events
    assert f"built {name} (image {image.id})" in events
    assert any("RUN --mount=type=cache,target=/var/cache/x echo hi > /tmp/x" in line for line in events)
    assert not [line for line in events if re.fullmatch(r"#\d+ sha256:[0-9a-f]{64}", line)], "no cache-key lines"


def test_a_secret_mount_build_deploys_and_the_secret_is_nowhere_kept(instance, tmp_path):
    token, npmrc = f"tok-{secrets.token_hex(12)}", f"npmrc-{secrets.token_hex(12)}"
    (tmp_path / "npmrc").write_text(npmrc)
    env = {"HD_TEST_BUILD_TOKEN": token, "HOOKDEPLOY_SECRET": "s" * 32}
    instance.configure({"site": {"build_secrets": {"token": {"from_env": "HD_TEST_BUILD_TOKEN"},
                                                   "npmrc": {"from_file": str(tmp_path / "npmrc")}}}})
    port = int(instance.config.server.listen.rpartition(":")[2])
    # A new version each run: BuildKit's cache key leaves secrets out, so an old run's layer would do.
    sha = instance.commit("site", site_files(f"secret mount {secrets.token_hex(6)}", dockerfile_tail=(
        "RUN --mount=type=secret,id=token --mount=type=secret,id=npmrc,required=true "
        "cat /run/secrets/token /run/secrets/npmrc | sha256sum | cut -c1-64 > /usr/share/nginx/html/sum\n"
        # A step that prints a secret: its value is hidden in the job log.
        "RUN --mount=type=secret,id=token echo \"printed: $(cat /run/secrets/token)\"\n")))
    job = instance.enqueue("site", sha)
    with Server(instance.config_path, port, tmp_path / "serve.log", worker=True, env=env):
        wait_until(lambda: instance.store.job(job.id).state.finished, "the job to end", 120)
        made = instance.cli("token", "create", "--scope", "read", env=env)
        assert made.returncode == 0, made.stderr
        bearer = {"Authorization": f"Bearer {made.stdout.strip()}"}
        answers = [json.dumps(request(port, "GET", path, headers=bearer)[1])
                   for path in (f"/api/jobs/{job.id}", f"/api/jobs/{job.id}/log", "/api/apps/site/jobs")]
    done = instance.store.job(job.id)
    assert done.state is JobState.SUCCEEDED, done.error
    # The build saw both secrets: the page holds the digest of their values.
    assert instance.get("/sum").body.strip() == hashlib.sha256((token + npmrc).encode()).hexdigest()
    image = instance.client.images.get(f"{instance.name}/site:{sha[:12]}")
    history = subprocess.run(["docker", "history", "--no-trunc", image.id], capture_output=True, text=True,
                             check=True).stdout
    saved = b"".join(image.save())
    log = "\n".join(instance.events(job.id))
    assert "cat /run/secrets/token" in history and "cat /run/secrets/token" in log  # what is looked in is there
    assert re.search(r"^#\d+ [\d.]+ printed: \*\*\*\*$", log, re.MULTILINE), log
    for value in (token, npmrc):
        assert value not in history, "in docker history"
        assert value.encode() not in saved, "in docker save"
        assert value not in log, "in the job log"
        assert all(value not in answer for answer in answers), "in the API's JSON"
        assert value not in (tmp_path / "serve.log").read_text(), "in serve's log"


def test_a_missing_build_secret_fails_the_job_naming_it_before_any_build(instance, monkeypatch):
    monkeypatch.delenv("HD_TEST_NO_SUCH_TOKEN", raising=False)
    instance.configure({"site": {"build_secrets": {"token": {"from_env": "HD_TEST_NO_SUCH_TOKEN"}}}})
    job = instance.deploy("site", site_files("never built"))
    assert job.state is JobState.FAILED
    assert job.error == ("build secret token: environment variable HD_TEST_NO_SUCH_TOKEN is not set "
                         "(set it in the environment hookdeploy runs with)")
    assert instance.images() == set()


def test_build_target_builds_that_stage_and_skips_the_stages_it_does_not_need(instance):
    skipped, last = secrets.token_hex(6), secrets.token_hex(6)
    instance.configure({"site": {"build_target": "web"}})
    files = site_files("targets")
    files["Dockerfile"] = textwrap.dedent(f"""\
        FROM {BASE_IMAGE} AS base
        COPY site/ /usr/share/nginx/html/
        FROM base AS unused
        RUN echo skipped-{skipped} > /usr/share/nginx/html/index.html
        FROM base AS web
        RUN echo '<p>the web stage</p>' > /usr/share/nginx/html/index.html
        FROM base AS last
        RUN echo last-{last} > /usr/share/nginx/html/index.html
        """)
    job = instance.deploy("site", files)
    assert job.state is JobState.SUCCEEDED, job.error
    assert instance.get().body == "<p>the web stage</p>\n"
    log = "\n".join(instance.events(job.id))
    assert "[web 1/1] RUN echo '<p>the web stage</p>'" in log
    assert skipped not in log and last not in log, "stages the target does not need are not built"


def test_a_broken_build_fails_with_its_error_line_and_the_live_release_serves_on(docker_engine, tmp_path):
    with live_instance(tmp_path, docker_engine, {}, "live before the broken build") as site:
        old = site.store.live_release("site")
        marker = secrets.token_hex(6)
        job = site.deploy("site", site_files("broken", dockerfile_tail=f"RUN echo broken-{marker} && exit 3\n"))
        assert job.state is JobState.FAILED
        assert job.error.startswith("build failed: ") and job.error.endswith("exit code: 3"), job.error
        assert "\n" not in job.error and marker in job.error
        assert job.error.removeprefix("build failed: ") in site.events(job.id), "the error line is in the log"
        assert site.store.live_release("site") == old
        assert site.get().release == old.sha[:12]
        assert f"{site.name}/site:{job.sha[:12]}" not in site.images()


def test_a_build_over_its_timeout_is_cancelled_in_buildkit(docker_engine, tmp_path):
    with live_instance(tmp_path, docker_engine, {}, "live before the slow build") as site:
        site.configure({"site": {"build_timeout": 3}})
        marker = secrets.token_hex(6)
        job = site.deploy("site", site_files("slow", dockerfile_tail=f"RUN sleep 40 && echo {marker}\n"))
        assert (job.state, job.error) == (JobState.FAILED, "build timed out after 3 s")
        wait_until(lambda: running_with(marker) == [], "the RUN step to end", 10)
        assert site.get().release == site.store.live_release("site").sha[:12]


@pytest.mark.parametrize("how", ["SIGTERM", "SIGKILL"])
def test_a_worker_stopped_or_killed_during_a_buildkit_build_leaves_nothing_building(docker_engine, tmp_path, how):
    with live_instance(tmp_path, docker_engine, {}, "live before the stop") as site:
        marker = secrets.token_hex(6)
        job = site.enqueue("site", site.commit("site", site_files("stopped", dockerfile_tail=(
            f"RUN sleep 40 && echo {marker}\n"))))
        environment = {key: value for key, value in os.environ.items() if key not in ("HOOKDEPLOY_CONFIG",
                                                                                      "HOOKDEPLOY_FAULT")}
        worker = subprocess.Popen([str(HOOKDEPLOY), "--config", str(site.config_path), "worker"], env=environment,
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        try:
            wait_until(lambda: len(running_with(f"sleep 40 && echo {marker}")) > 0, "the RUN step to start")
            cli = [line for line in running_with("--iidfile") if site.name in line]
            assert len(cli) == 1, cli  # the CLI building this instance's image
            worker.send_signal(getattr(signal, how))
            output, _ = worker.communicate(timeout=30)
        finally:
            if worker.poll() is None:
                worker.kill()
        # The CLI went with the worker, and BuildKit cancelled the build whose client was gone.
        wait_until(lambda: running_with(marker) == [] and running_with(site.name) == [], "the build to end", 10)
        if how == "SIGTERM":
            assert worker.returncode == 0, output
            stopped = site.store.job(job.id)
            assert stopped.state is JobState.INTERRUPTED, (stopped.state, stopped.error)
        assert site.get().release == site.store.live_release("site").sha[:12]
        assert f"{site.name}/site:{job.sha[:12]}" not in site.images()


def test_without_a_buildkit_client_a_job_fails_in_one_line_before_the_checkout(instance, tmp_path, monkeypatch):
    instance.configure({"site": {}})
    sha = instance.commit("site", site_files("never built"))
    new = fake_cli(tmp_path / "local", "28.2.2")
    (new.parent / "git").symlink_to(shutil.which("git"))
    monkeypatch.setattr(buildkit, "_found", None)  # as in a worker started on this PATH
    monkeypatch.setenv("PATH", str(new.parent))
    job = instance.enqueue("site", sha)
    instance.work()
    failed = instance.store.job(job.id)
    assert failed.state is JobState.FAILED
    assert failed.error == buildkit.discover().problem() and failed.error.startswith(
        f"no BuildKit client ({new} 28.2.2 has no buildx plugin): apt-get install docker.io")
    assert not any(line.startswith("checked out") for line in instance.events(job.id))


def test_the_classic_builder_keeps_building_through_the_engine_api(instance):
    instance.configure({"site": {}}, extra='[build]\nbuilder = "classic"\n')
    job = instance.deploy("site", site_files("classic"))
    assert job.state is JobState.SUCCEEDED, job.error
    assert instance.get().release == job.sha[:12]
    events = instance.events(job.id)
    assert f"building {instance.name}/site:{job.sha[:12]} with the classic builder" in events
    assert any(line.startswith("Step 1/") for line in events), events


def test_doctor_names_the_buildkit_client_or_says_how_to_get_one(tmp_path):
    (tmp_path / "deploy.toml").write_text(f'[server]\nstate_dir = "{tmp_path}"\n[apps.site]\nrepo = "{tmp_path}/r.git"\n')
    new = fake_cli(tmp_path / "local", "28.2.2")
    (new.parent / "git").symlink_to(shutil.which("git"))
    old = fake_cli(tmp_path / "usr", "20.10.24+dfsg1")

    def doctor(search_path: str) -> list[str]:
        environment = {key: value for key, value in os.environ.items() if key != "HOOKDEPLOY_CONFIG"}
        environment.update(PATH=search_path, DOCKER_HOST=f"unix://{tmp_path}/no-engine.sock")
        completed = subprocess.run([str(HOOKDEPLOY), "--config", str(tmp_path / "deploy.toml"), "doctor"],
                                   capture_output=True, text=True, env=environment, timeout=60)
        return [line for line in completed.stdout.splitlines() if "BuildKit" in line]

    assert doctor(f"{new.parent}:{old.parent}") == [
        f"ok    BuildKit builds go through {old} 20.10.24+dfsg1, DOCKER_BUILDKIT=1 "
        f"(passed over {new} 28.2.2 has no buildx plugin)"]
    assert doctor(str(new.parent)) == [
        f"FIX   no BuildKit client ({new} 28.2.2 has no buildx plugin): apt-get install docker.io (Debian's docker "
        "CLI builds with BuildKit), or install the docker buildx plugin (docker-buildx-plugin); or set [build] "
        "builder = \"classic\""]
