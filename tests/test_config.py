"""deploy.toml: every validation rule, all problems reported at once, lookup order, secrets."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from hookdeploy.core import config
from hookdeploy.core.errors import ConfigError


def problems_of(write_config, content, **keywords) -> list[str]:
    """The problems `config.load` reports for a config; [] when it is valid."""
    path = write_config(content, **keywords)
    try:
        config.load(path)
    except ConfigError as error:
        return error.problems
    return []


def app_problems(write_config, **app_keys) -> list[str]:
    """The problems of a config with one app `site` having `app_keys` (repo defaults to /srv/git/site.git)."""
    return problems_of(write_config, {"site": {"repo": "/srv/git/site.git", **app_keys}})


# -- defaults --------------------------------------------------------------------------------------------


def test_minimal_config_gets_the_defaults_of_design(write_config, state_dir):
    path = write_config('[apps.site]\nrepo = "/srv/git/site.git"\n')
    loaded = config.load(path)
    assert loaded.path == path
    server, proxy, app = loaded.server, loaded.proxy, loaded.apps["site"]
    assert (server.name, server.state_dir, server.listen, server.max_body, server.secret_env) == (
        "hookdeploy", str(state_dir), "127.0.0.1:8080", 5242880, "HOOKDEPLOY_SECRET")
    assert (proxy.image, proxy.publish) == ("nginx:stable-alpine", "0.0.0.0:80")
    assert (app.repo, app.branch, app.dockerfile, app.context, app.port, app.hostnames, app.keep,
            app.drain_seconds, app.coalesce, dict(app.env), dict(app.build_args), app.webhook) == (
        "/srv/git/site.git", "deploy", "Dockerfile", ".", 80, (), 5, 5.0, True, {}, {}, None)
    health = app.health
    assert (health.path, health.status, health.contains, health.timeout, health.interval, health.deadline) == (
        "/", 200, "", 2.0, 0.2, 30.0)


def test_relative_paths_are_resolved_against_the_config_folder(write_config, tmp_path):
    path = write_config('[server]\nstate_dir = "state"\n[apps.site]\nrepo = "git/site.git"\n')
    loaded = config.load(path)
    assert loaded.server.state_dir == str(tmp_path / "state")
    assert loaded.server.database == tmp_path / "state" / "hookdeploy.db"
    assert loaded.apps["site"].repo == str(tmp_path / "git" / "site.git")


def test_clone_urls_are_kept_as_they_are(write_config):
    for url in ("https://example.com/site.git", "git@example.com:me/site.git", "ssh://git@example.com/site.git"):
        app = config.load(write_config({"site": {"repo": url}})).apps["site"]
        assert app.repo == url
        assert not app.is_local_repo


def test_a_full_valid_config_loads(write_config):
    path = write_config({
        "site": {"repo": "/srv/git/site.git", "branch": "release/v1", "dockerfile": "docker/Dockerfile",
                 "context": "web", "port": 8080, "hostnames": ["example.com", "*.example.org"], "keep": 3,
                 "drain_seconds": 1, "coalesce": False, "env": {"MODE": "prod", "TOKEN": {"from_env": "SITE_TOKEN"}},
                 "build_args": {"VERSION": 3},
                 "health": {"path": "/healthz", "status": "2xx", "contains": "ok", "timeout": 1, "interval": 0.5,
                            "deadline": 10},
                 "webhook": {"provider": "gitea", "secret_env": "SITE_WEBHOOK_SECRET"}},
        "api": {"repo": "/srv/git/api.git"},
    }, server={"name": "staging", "max_body": 1024})
    loaded = config.load(path)
    site = loaded.apps["site"]
    assert loaded.server.name == "staging"
    assert site.hostnames == ("example.com", "*.example.org")
    assert site.drain_seconds == 1.0 and isinstance(site.drain_seconds, float)
    assert site.health.status == "2xx" and site.health.accepts(204) and not site.health.accepts(301)
    assert dict(site.build_args) == {"VERSION": "3"}
    assert site.webhook.provider == "gitea"
    assert loaded.apps["api"].hostnames == ()


# -- each rule -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["site", "a", "0", "my-app-2", "a" * 63])
def test_valid_app_names(write_config, name):
    assert problems_of(write_config, {name: {"repo": "/srv/git/x.git"}}) == []


@pytest.mark.parametrize("name, shown", [("Site", "Site"), ("-site", "-site"), ("my_app", "my_app"), ("a" * 64, "a" * 64),
                                         ("", "''"), ("site.x", "'site.x'"), ("sité", "'sité'"), ("a b", "'a b'"),
                                         ("a\nb", "'a\\nb'"), ("\x1b[31mred", "'\\x1b[31mred'")])
def test_invalid_app_names_are_named(write_config, name, shown):
    """A name that is no bare TOML key is shown quoted, its control characters escaped."""
    problems = problems_of(write_config, {name: {"repo": "/srv/git/x.git"}})
    assert problems == [f"apps.{shown}: app name must match [a-z0-9][a-z0-9-]{{0,62}}"]


BRANCHES = ["deploy", "release/v1", "feature-x", "v1.2", "a@b", "@", "$(touch${IFS}x)", "caf\u00e9",
            "a..b", "a b", "x.lock", "a/x.lock/b", "/x", "x/", "a//b", "end.", ".hidden", "a/.b", "a~1", "a^",
            "a:b", "a?", "a*", "a[", "a\\b", "a@{1}", "tab\there", "del\x7f", "-foo", "HEAD", "x" * 300]


@pytest.mark.parametrize("branch", BRANCHES)
def test_branch_names_follow_gits_own_rules(write_config, tmp_path, branch):
    git_accepts = subprocess.run(["git", "check-ref-format", "--branch", branch], cwd=tmp_path,
                                 capture_output=True).returncode == 0
    if branch == "x" * 300:
        git_accepts = False  # git itself allows it; hookdeploy caps refs at 255 like most filesystems' names
    problems = app_problems(write_config, branch=branch)
    if git_accepts:
        assert problems == []
    else:
        assert len(problems) == 1 and problems[0].startswith(("apps.site.branch: not a valid git branch name (",
                                                              "apps.site.branch: must not contain control characters")), problems


def test_empty_branch_is_refused(write_config):
    assert [p.split(" (")[0] for p in app_problems(write_config, branch="")] == [
        "apps.site.branch: not a valid git branch name"]


@pytest.mark.parametrize("context, dockerfile", [
    (".", "Dockerfile"), ("web", "Dockerfile"), ("a/b", "x/Dockerfile"), ("a/../b", "Dockerfile"),
    ("sub", "../Dockerfile"), ("./web/", "Dockerfile.prod"),
])
def test_context_and_dockerfile_inside_the_repo(write_config, context, dockerfile):
    assert app_problems(write_config, context=context, dockerfile=dockerfile) == []


@pytest.mark.parametrize("context", ["..", "../other", "/abs", "a/../..", "a\\..\\..", ""])
def test_context_escaping_the_repo_is_refused(write_config, context):
    problems = app_problems(write_config, context=context)
    assert "apps.site.context: must be a relative path that stays inside the repository" in problems


@pytest.mark.parametrize("context, dockerfile", [
    (".", "../Dockerfile"), (".", "/etc/passwd"), ("sub", "../../Dockerfile"), (".", ""), (".", "."),
    (".", "a/.."), (".", "a\\Dockerfile"),
])
def test_dockerfile_escaping_the_repo_is_refused(write_config, context, dockerfile):
    problems = app_problems(write_config, context=context, dockerfile=dockerfile)
    assert problems == ["apps.site.dockerfile: must be a relative path that stays inside the repository"]


@pytest.mark.parametrize("port, valid", [(1, True), (80, True), (65535, True), (0, False), (65536, False),
                                         (-1, False)])
def test_ports(write_config, port, valid):
    problems = app_problems(write_config, port=port)
    assert problems == ([] if valid else ["apps.site.port: must be between 1 and 65535"])


@pytest.mark.parametrize("key", ["drain_seconds", "build_timeout"])
@pytest.mark.parametrize("value", [0, 0.0, -1, -0.5])
def test_app_durations_must_be_positive(write_config, key, value):
    assert app_problems(write_config, **{key: value}) == [f"apps.site.{key}: must be greater than 0"]


@pytest.mark.parametrize("key", ["timeout", "interval", "deadline"])
@pytest.mark.parametrize("value", [0, -2.5])
def test_health_durations_must_be_positive(write_config, key, value):
    assert app_problems(write_config, health={key: value}) == [f"apps.site.health.{key}: must be greater than 0"]


def test_small_positive_durations_are_fine(write_config):
    assert app_problems(write_config, drain_seconds=0.001, health={"interval": 0.01, "timeout": 1}) == []


@pytest.mark.parametrize("status", [200, 204, 301, "2xx"])
def test_health_status_accepted(write_config, status):
    assert app_problems(write_config, health={"status": status}) == []


@pytest.mark.parametrize("status", ["200", "3xx", "2XX", 99, 600, True, 200.0, ""])
def test_health_status_refused(write_config, status):
    problems = app_problems(write_config, health={"status": status})
    assert len(problems) == 1 and problems[0].startswith("apps.site.health.status: must be "), problems


def test_health_status_accepts_means_what_it_says():
    assert config.HealthConfig(status=200).accepts(200)
    assert not config.HealthConfig(status=200).accepts(204)
    assert config.HealthConfig(status="2xx").accepts(299)
    assert not config.HealthConfig(status="2xx").accepts(300)


def test_health_path_must_start_with_slash(write_config):
    assert app_problems(write_config, health={"path": "healthz"}) == ["apps.site.health.path: must start with '/'"]


def test_health_path_must_not_hold_spaces(write_config):
    assert app_problems(write_config, health={"path": "/a b"}) == [
        "apps.site.health.path: must not contain spaces or control characters"]


def test_at_most_one_app_without_hostnames(write_config):
    apps = {"one": {"repo": "/r/one.git"}, "two": {"repo": "/r/two.git"},
            "three": {"repo": "/r/three.git", "hostnames": ["three.example"]}}
    problems = problems_of(write_config, apps)
    assert problems == ["apps: at most one app may have no hostnames (the default server); found one, two"]
    apps["two"]["hostnames"] = ["two.example"]
    assert problems_of(write_config, apps) == []


@pytest.mark.parametrize("hostname", ["bad host", "-x.example", "x..example", "under_score.example", "a" * 64])
def test_invalid_hostnames(write_config, hostname):
    problems = app_problems(write_config, hostnames=[hostname])
    assert len(problems) == 1 and problems[0].startswith("apps.site.hostnames: "), problems


@pytest.mark.parametrize("address, valid", [
    ("127.0.0.1:8080", True), ("0.0.0.0:80", True), ("[::1]:8080", True), ("[::]:80", True),
    ("localhost:8080", True), ("8080", False), (":8080", False), ("127.0.0.1", False),
    ("127.0.0.1:0", False), ("127.0.0.1:65536", False), ("127.0.0.1:http", False),
    ("example.com:80", False), ("300.1.1.1:80", False), ("", False),
])
def test_listen_and_publish_addresses(write_config, address, valid):
    listen = problems_of(write_config, {"site": {"repo": "/r.git"}}, server={"listen": address})
    publish = problems_of(write_config, {"site": {"repo": "/r.git"}}, proxy={"publish": address})
    if valid:
        assert listen == [] and publish == []
    else:
        assert len(listen) == 1 and listen[0].startswith("server.listen: must be HOST:PORT"), listen
        assert len(publish) == 1 and publish[0].startswith("proxy.publish: must be HOST:PORT"), publish


@pytest.mark.parametrize("text, problem", [
    ('srever = 1\n[apps.site]\nrepo = "/r"\n', "srever: unknown key"),
    ('[server]\nnmae = "x"\n', "server.nmae: unknown key"),
    ('[proxy]\nimage = "x"\nports = 80\n', "proxy.ports: unknown key"),
    ('[apps.site]\nrepo = "/r"\nkeeep = 3\n', "apps.site.keeep: unknown key"),
    ('[apps.site]\nrepo = "/r"\nname = "other"\n', "apps.site.name: unknown key"),
    ('[apps.site]\nrepo = "/r"\n[apps.site.health]\npth = "/"\n', "apps.site.health.pth: unknown key"),
    ('[apps.site]\nrepo = "/r"\n[apps.site.webhook]\nsecret = "hunter2"\n', "apps.site.webhook.secret: unknown key"),
])
def test_unknown_keys_are_named(write_config, text, problem):
    assert problems_of(write_config, text) == [problem]


@pytest.mark.parametrize("text, problem", [
    ('[apps.site]\nrepo = "/r"\nport = "80"\n', "apps.site.port: must be an integer, not '80'"),
    ('[apps.site]\nrepo = "/r"\nport = 80.5\n', "apps.site.port: must be an integer, not 80.5"),
    ('[apps.site]\nrepo = "/r"\nport = true\n', "apps.site.port: must be an integer, not true"),
    ('[apps.site]\nrepo = "/r"\ncoalesce = "yes"\n', "apps.site.coalesce: must be true or false, not 'yes'"),
    ('[apps.site]\nrepo = "/r"\nhostnames = "a.example"\n', "apps.site.hostnames: must be a list, not 'a.example'"),
    ('[apps.site]\nrepo = "/r"\nhostnames = [1]\n', "apps.site.hostnames: must be a list of strings"),
    ('[apps.site]\nrepo = "/r"\nkeep = 2.5\n', "apps.site.keep: must be an integer, not 2.5"),
    ('[apps.site]\nrepo = "/r"\ndrain_seconds = "5"\n', "apps.site.drain_seconds: must be a number, not '5'"),
    ('[apps.site]\nrepo = 5\n', "apps.site.repo: must be a string, not 5"),
    ('[apps.site]\nrepo = "/r"\nhealth = 5\n', "apps.site.health: must be a table"),
    ('[apps.site]\nrepo = "/r"\nhealth = {path = 3}\n', "apps.site.health.path: must be a string, not 3"),
    ('[apps.site]\nrepo = "/r"\nwebhook = "github"\n', "apps.site.webhook: must be a table"),
    ('[apps.site]\nrepo = "/r"\nenv = []\n', "apps.site.env: must be a table, not []"),
    ('[server]\nmax_body = "big"\n', "server.max_body: must be an integer, not 'big'"),
    ('server = 1\n', "server: must be a table"),
    ('apps = 3\n', "apps: must be a table of [apps.NAME] tables"),
    ('[apps]\nsite = 3\n', "apps.site: must be a table"),
])
def test_wrong_types_name_the_key(write_config, text, problem):
    assert problems_of(write_config, text) == [problem]


@pytest.mark.parametrize("keys, problem", [
    ({"keep": 1}, "apps.site.keep: must be at least 2 (the live release and one to roll back to)"),
    ({"repo": ""}, "apps.site.repo: must not be empty"),
    ({"env": {"1BAD": "x"}}, "apps.site.env.1BAD: not a valid environment variable name"),
    ({"env": {"A": {"from_env": "B", "default": "x"}}}, 'apps.site.env.A: a table value must be {from_env = "NAME"}'),
    ({"env": {"A": [1]}}, 'apps.site.env.A: must be a string or {from_env = "NAME"}'),
    ({"build_args": {"A": [1]}}, "apps.site.build_args: must be a table of strings"),
    ({"webhook": {"provider": "bitbucket"}}, "apps.site.webhook.provider: must be one of github, gitlab, gitea, registry"),
    ({"webhook": {"secret_env": "my secret"}},
     "apps.site.webhook.secret_env: must name an environment variable (the secret itself never goes in the file)"),
    ({"webhook": {"secret_file": ""}}, "apps.site.webhook.secret_file: must not be empty"),
    ({"webhook": {"repository": "no-owner"}}, "apps.site.webhook.repository: must look like owner/name"),
])
def test_other_app_rules(write_config, keys, problem):
    assert app_problems(write_config, **keys) == [problem]


def test_repo_is_required(write_config):
    assert problems_of(write_config, '[apps.site]\nbranch = "deploy"\n') == [
        "apps.site.repo: required (a bare repo path or a clone URL), or image (REGISTRY/REPOSITORY)"]


@pytest.mark.parametrize("server, problem", [
    ({"name": "Bad Name"}, "server.name: must match [a-z0-9][a-z0-9_.-]{0,39} (it prefixes Docker object names)"),
    ({"name": "x" * 41}, "server.name: must match [a-z0-9][a-z0-9_.-]{0,39} (it prefixes Docker object names)"),
    ({"max_body": 0}, "server.max_body: must be a positive number of bytes"),
    ({"secret_env": "hunter2 is my password"},
     "server.secret_env: must name an environment variable (the secret itself never goes in the file)"),
])
def test_server_rules(write_config, server, problem):
    assert problems_of(write_config, {"site": {"repo": "/r.git"}}, server=server) == [problem]


def test_no_proxy_is_trusted_by_default(write_config):
    server = config.load(write_config({"site": {"repo": "/r.git"}})).server
    assert server.trusted_proxy == ""
    assert server.trusted_proxy_headers == ("x-forwarded-for", "x-forwarded-host", "x-forwarded-proto")


@pytest.mark.parametrize("keys, trusted_proxy, trusted_proxy_headers", [
    ({"trusted_proxy": "127.0.0.1"}, "127.0.0.1", ("x-forwarded-for", "x-forwarded-host", "x-forwarded-proto")),
    ({"trusted_proxy": "0:0:0:0:0:0:0:1"}, "::1", None),  # the form waitress sees the peer's address in
    ({"trusted_proxy": "FD00::5"}, "fd00::5", None),
    ({"trusted_proxy": "*"}, "*", None),
    ({"trusted_proxy": "10.0.0.2", "trusted_proxy_headers": ["X-Forwarded-Proto", "x-forwarded-proto"]},
     "10.0.0.2", ("x-forwarded-proto",)),
    ({"trusted_proxy": "10.0.0.2", "trusted_proxy_headers": ["forwarded"]}, "10.0.0.2", ("forwarded",)),
    ({"trusted_proxy": "10.0.0.2", "trusted_proxy_headers": list(config.PROXY_HEADERS[:5])},
     "10.0.0.2", ("x-forwarded-for", "x-forwarded-host", "x-forwarded-proto", "x-forwarded-port", "x-forwarded-by")),
])
def test_trusted_proxy_values(write_config, keys, trusted_proxy, trusted_proxy_headers):
    server = config.load(write_config({"site": {"repo": "/r.git"}}, server=keys)).server
    assert server.trusted_proxy == trusted_proxy
    assert server.trusted_proxy_headers == (trusted_proxy_headers or config.ServerConfig().trusted_proxy_headers)


NOT_AN_ADDRESS = 'server.trusted_proxy: must be an IP address (or "*" for any peer), not '


@pytest.mark.parametrize("keys, problems", [
    ({"trusted_proxy": "localhost"}, [NOT_AN_ADDRESS + "'localhost'"]),
    ({"trusted_proxy": "127.0.0.1:8443"}, [NOT_AN_ADDRESS + "'127.0.0.1:8443'"]),
    ({"trusted_proxy": "10.0.0.0/8"}, [NOT_AN_ADDRESS + "'10.0.0.0/8'"]),
    ({"trusted_proxy": ["127.0.0.1"]}, ["server.trusted_proxy: must be a string, not [\"127.0.0.1\"]"]),
    ({"trusted_proxy_headers": "x-forwarded-proto"},
     ["server.trusted_proxy_headers: must be a list, not 'x-forwarded-proto'"]),
    ({"trusted_proxy_headers": [1]}, ["server.trusted_proxy_headers: must be a list of strings"]),
    ({"trusted_proxy_headers": []},
     ["server.trusted_proxy_headers: must name at least one header (leave trusted_proxy empty to believe none)"]),
    ({"trusted_proxy_headers": ["x-real-ip", "x-forwarded-proto", "x-forwarded-server"]},
     ["server.trusted_proxy_headers: 'x-real-ip' is not one of x-forwarded-for, x-forwarded-host, x-forwarded-proto, "
      "x-forwarded-port, x-forwarded-by, forwarded",
      "server.trusted_proxy_headers: 'x-forwarded-server' is not one of x-forwarded-for, x-forwarded-host, "
      "x-forwarded-proto, x-forwarded-port, x-forwarded-by, forwarded"]),
    ({"trusted_proxy_headers": ["forwarded", "x-forwarded-for"]},
     ["server.trusted_proxy_headers: \"forwarded\" and the x-forwarded-* headers exclude each other"]),
    ({"trusted_proxy_count": 2}, ["server.trusted_proxy_count: unknown key"]),
])
def test_trusted_proxy_rules(write_config, keys, problems):
    assert problems_of(write_config, {"site": {"repo": "/r.git"}}, server=keys) == problems


# -- all at once --------------------------------------------------------------------------------------------

BROKEN = """\
[server]
listen = "nowhere"
colour = "blue"

[proxy]
publish = "0.0.0.0:99999"

[apps.Site]
repo = "/srv/git/Site.git"

[apps.site]
repo = "/srv/git/site.git"
branch = "a..b"
context = "../outside"
port = 0
keeep = 3
drain_seconds = 0

[apps.site.health]
path = "healthz"
status = "3xx"
deadline = -1

[apps.api]
repo = "/srv/git/api.git"
"""

BROKEN_PROBLEMS = [
    "server.colour: unknown key",
    "server.listen: must be HOST:PORT with an IP address (or localhost) and a port 1-65535, not 'nowhere'",
    "proxy.publish: must be HOST:PORT with an IP address (or localhost) and a port 1-65535, not '0.0.0.0:99999'",
    "apps.Site: app name must match [a-z0-9][a-z0-9-]{0,62}",
    "apps.site.keeep: unknown key",
    "apps.site.branch: not a valid git branch name (contains '..', '@{' or '//')",
    "apps.site.context: must be a relative path that stays inside the repository",
    "apps.site.port: must be between 1 and 65535",
    "apps.site.drain_seconds: must be greater than 0",
    "apps.site.health.path: must start with '/'",
    'apps.site.health.status: must be an HTTP status (100-599) or "2xx"',
    "apps.site.health.deadline: must be greater than 0",
    # `Site` has an invalid name but is otherwise valid, so it counts as a default server with `api`.
    "apps: at most one app may have no hostnames (the default server); found Site, api",
]


def test_every_problem_is_reported_at_once(write_config):
    assert sorted(problems_of(write_config, BROKEN)) == sorted(BROKEN_PROBLEMS)


def test_cli_prints_one_line_per_problem_and_exits_2(write_config, run_cli):
    path = write_config(BROKEN)
    completed = run_cli("status", config=path)
    assert completed.returncode == 2
    assert completed.stdout == ""
    lines = completed.stderr.splitlines()
    assert sorted(lines) == sorted(f"hookdeploy: config: {problem}" for problem in BROKEN_PROBLEMS)


def test_cli_in_process_reports_the_same(write_config, invoke):
    result = invoke("history", "site", config=write_config(BROKEN))
    assert result.exit_code == 2
    assert sorted(result.stderr.splitlines()) == sorted(f"hookdeploy: config: {p}" for p in BROKEN_PROBLEMS)


def test_invalid_toml_is_one_line_exit_2(write_config, run_cli):
    path = write_config('[apps.site]\nrepo = "/r"\nport = \n')
    completed = run_cli("status", config=path)
    assert completed.returncode == 2
    assert len(completed.stderr.splitlines()) == 1
    assert completed.stderr.startswith(f"hookdeploy: config: {path}: not valid TOML: ")


def test_missing_config_is_one_line_exit_2(tmp_path, run_cli):
    missing = tmp_path / "nope.toml"
    completed = run_cli("status", config=missing)
    assert completed.returncode == 2
    assert completed.stderr == (f"hookdeploy: config: {missing}: no such file "
                                "(use --config PATH or $HOOKDEPLOY_CONFIG)\n")


# -- where the file is found -----------------------------------------------------------------------------


@pytest.fixture
def three_configs(tmp_path, write_config):
    """./deploy.toml (app `cwd`), env.toml (app `env`) and option.toml (app `option`), all valid."""
    for app in ("cwd", "env", "option"):
        write_config({app: {"repo": f"/srv/git/{app}.git"}}, name="deploy.toml" if app == "cwd" else f"{app}.toml")
    return tmp_path


def apps_seen(completed: subprocess.CompletedProcess) -> list[str]:
    assert completed.returncode == 0, completed.stderr
    return sorted(json.loads(completed.stdout)["apps"])


def test_config_option_wins_over_environment_and_cwd(three_configs, run_cli):
    completed = run_cli("--config", "option.toml", "status", "--json", cwd=three_configs,
                        env={"HOOKDEPLOY_CONFIG": str(three_configs / "env.toml")})
    assert apps_seen(completed) == ["option"]


def test_environment_wins_over_cwd(three_configs, run_cli):
    completed = run_cli("status", "--json", cwd=three_configs,
                        env={"HOOKDEPLOY_CONFIG": str(three_configs / "env.toml")})
    assert apps_seen(completed) == ["env"]


def test_cwd_deploy_toml_is_the_last_resort(three_configs, run_cli):
    assert apps_seen(run_cli("status", "--json", cwd=three_configs)) == ["cwd"]


def test_config_path_function_follows_the_same_order(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("HOOKDEPLOY_CONFIG", raising=False)
    assert config.config_path() == tmp_path / "deploy.toml"
    monkeypatch.setenv("HOOKDEPLOY_CONFIG", "from-env.toml")
    assert config.config_path() == tmp_path / "from-env.toml"
    assert config.config_path("given.toml") == tmp_path / "given.toml"
    assert config.config_path("/abs/given.toml") == Path("/abs/given.toml")


# -- secrets ----------------------------------------------------------------------------------------------------


def test_missing_secrets_names_each_unset_variable(write_config, tmp_path, monkeypatch):
    for name in ("HD_TEST_SECRET", "HD_TEST_HOOK", "HD_TEST_FROM"):
        monkeypatch.delenv(name, raising=False)
    loaded = config.load(write_config(
        {"site": {"repo": "/r.git", "env": {"TOKEN": {"from_env": "HD_TEST_FROM"}, "PLAIN": "x"},
                  "webhook": {"secret_env": "HD_TEST_HOOK"}},
         "docs": {"repo": "/d.git", "hostnames": ["docs.example"],
                  "webhook": {"secret_file": str(tmp_path / "no-such-secret")}}},
        server={"secret_env": "HD_TEST_SECRET"}))
    assert config.missing_secrets(loaded) == []  # nothing asked for, nothing needed
    assert config.missing_secrets(loaded, tokens=True) == [
        "server.secret_env: environment variable HD_TEST_SECRET is not set (API tokens need it)"]
    assert config.missing_secrets(loaded, webhooks=True) == [
        "apps.site.webhook.secret_env: environment variable HD_TEST_HOOK is not set (its webhooks need it)",
        f"apps.docs.webhook.secret_file: {tmp_path / 'no-such-secret'} is missing, unreadable or empty "
        "(its webhooks need it)"]
    assert config.missing_secrets(loaded, app_env=True) == [
        "apps.site.env.TOKEN: environment variable HD_TEST_FROM is not set"]

    monkeypatch.setenv("HD_TEST_SECRET", "s3cret")
    monkeypatch.setenv("HD_TEST_HOOK", "hook-secret")
    monkeypatch.setenv("HD_TEST_FROM", "")  # set, even if empty: the container gets ""
    (tmp_path / "no-such-secret").write_text("file-secret\n")
    assert config.missing_secrets(loaded, tokens=True, webhooks=True, app_env=True) == []
    assert loaded.server.secret() == b"s3cret"
    assert loaded.apps["docs"].webhook.secret() == b"file-secret"
    assert loaded.apps["site"].container_env() == {"TOKEN": "", "PLAIN": "x"}


def test_an_empty_secret_file_counts_as_missing(write_config, tmp_path):
    (tmp_path / "empty").write_text("\n")
    loaded = config.load(write_config({"site": {"repo": "/r.git"}}, server={"secret_file": str(tmp_path / "empty")}))
    assert config.missing_secrets(loaded, tokens=True) == [
        f"server.secret_file: {tmp_path / 'empty'} is missing, unreadable or empty (API tokens need it)"]


def test_a_secret_is_never_read_from_the_config_file_itself(write_config):
    problems = problems_of(write_config, {"site": {"repo": "/r.git"}}, server={"secret": "hunter2"})
    assert problems == ["server.secret: unknown key"]


def test_the_example_file_is_valid_and_shows_the_defaults():
    example = Path(__file__).parent.parent / "deploy.toml.example"
    loaded = config.load(example)
    site = loaded.apps["site"]
    assert loaded.server == config.ServerConfig()
    assert loaded.proxy == config.ProxyConfig()
    assert loaded.tls == config.TlsConfig()
    assert site.health == config.HealthConfig()
    assert site.guard == config.GuardConfig()
    defaults = config.AppConfig(name="site", repo=site.repo)
    for field in ("branch", "dockerfile", "context", "port", "hostnames", "keep", "drain_seconds", "coalesce",
                  "build_timeout", "tls", "redirect_http", "hsts"):
        assert getattr(site, field) == getattr(defaults, field), field
    assert dict(site.env) == {} and dict(site.build_args) == {}


# -- past one host: [registry], image apps, push ---------------------------------------------------


def registry_document(registry: str, apps: str) -> str:
    return "[server]\nstate_dir = \"state\"\n\n" + registry + "\n" + apps


def test_registry_image_apps_and_push_load(write_config, monkeypatch):
    text = registry_document(
        '[registry]\nurl = "127.0.0.1:5000"\nusername = "deploy"\npassword_env = "REGISTRY_PASSWORD"\ninsecure = true\n',
        '[apps.site]\nrepo = "/r.git"\npush = true\nhostnames = ["a.example"]\n\n'
        '[apps.api]\nimage = "127.0.0.1:5000/team/api"\n'
        '[apps.api.webhook]\nprovider = "registry"\nsecret_env = "API_TOKEN"\ntag = "stable"\n')
    loaded = config.load(write_config(text))
    assert loaded.registry == config.RegistryConfig(url="127.0.0.1:5000", username="deploy",
                                                    password_env="REGISTRY_PASSWORD", insecure=True)
    assert loaded.apps["site"].push and loaded.apps["site"].builds
    api = loaded.apps["api"]
    assert (api.image, api.repo, api.builds, api.webhook.provider, api.webhook.tag) == (
        "127.0.0.1:5000/team/api", "", False, "registry", "stable")
    monkeypatch.delenv("REGISTRY_PASSWORD", raising=False)
    assert config.missing_secrets(loaded, app_env=True) == [
        "registry.password_env: environment variable REGISTRY_PASSWORD is not set (pushes and pulls need it)"]
    monkeypatch.setenv("REGISTRY_PASSWORD", "s3cret")
    assert loaded.registry.password() == b"s3cret" and config.missing_secrets(loaded, app_env=True) == []
    assert "s3cret" not in repr(loaded)


@pytest.mark.parametrize("registry, apps, problem", [
    ("", '[apps.site]\nrepo = "/r.git"\npush = true\n', "apps.site.push: needs a [registry] table to push to"),
    ('[registry]\nurl = "https://r.example/v2"\n', "", "registry.url: must be HOST[:PORT] (no scheme, no path), not 'https://r.example/v2'"),
    ('[registry]\nusername = "u"\npassword_env = "P"\n', "", "registry.url: required (HOST[:PORT] of the registry)"),
    ('[registry]\nurl = "r.example"\nusername = "u"\n', "", "registry: a username needs password_env or password_file"),
    ('[registry]\nurl = "r.example"\npassword = "hunter2"\n', "", "registry.password: unknown key"),
    ("", '[apps.api]\nimage = "team/api"\n', "apps.api.image: image 'team/api' names no registry host (REGISTRY[:PORT]/REPOSITORY)"),
    ("", '[apps.api]\nimage = "r.example/team/api:v1"\n',
     "apps.api.image: image 'r.example/team/api:v1' has a tag: give REGISTRY[:PORT]/REPOSITORY only"),
    ("", '[apps.api]\nimage = "r.example/Team"\n',
     "apps.api.image: image 'r.example/Team': the repository path must be lowercase components (a-z, 0-9 and . _ -) joined by /"),
    ("", '[apps.api]\nimage = "r.example/api"\nrepo = "/r.git"\n',
     "apps.api: give repo (built here) or image (built elsewhere), not both"),
    ('[registry]\nurl = "r.example"\n', '[apps.api]\nimage = "r.example/api"\npush = true\n',
     "apps.api.push: an image app's releases come from its registry already"),
    ("", '[apps.api]\nimage = "r.example/api"\n[apps.api.webhook]\nprovider = "registry"\nsecret_env = "T"\ntag = "a b"\n',
     "apps.api.webhook.tag: not a valid image tag"),
])
def test_registry_and_image_rules(write_config, registry, apps, problem):
    assert problems_of(write_config, registry_document(registry, apps)) == [problem]


# -- the swarm target ------------------------------------------------------------------------------------


def test_swarm_keys_default_to_one_local_container(write_config):
    site = config.load(write_config({"site": {"repo": "/srv/git/site.git"}})).apps["site"]
    assert (site.target, site.replicas, site.placement, site.on_swarm, site.pushes) == ("local", 1, (), False, False)


def test_a_swarm_app_pushes_and_keeps_its_placement(write_config):
    document = registry_document('[registry]\nurl = "r.example:5000"\n',
                                 '[apps.site]\nrepo = "/r.git"\ntarget = "swarm"\nreplicas = 3\n'
                                 'placement = ["node.role==worker", "node.labels.zone != b"]\n')
    site = config.load(write_config(document)).apps["site"]
    assert site.on_swarm and site.pushes and site.replicas == 3
    assert site.placement == ("node.role==worker", "node.labels.zone != b")


@pytest.mark.parametrize("registry, keys, problem", [
    ("", 'target = "swarm"', 'apps.site.target: "swarm" needs a [registry] table (the nodes pull each release from it)'),
    ('[registry]\nurl = "r.example"\n', 'target = "kubernetes"', "apps.site.target: must be one of local, swarm, not 'kubernetes'"),
    ('[registry]\nurl = "r.example"\n', 'target = "swarm"\nreplicas = 0', "apps.site.replicas: must be between 1 and 64"),
    ('[registry]\nurl = "r.example"\n', 'target = "swarm"\nreplicas = 65', "apps.site.replicas: must be between 1 and 64"),
    ("", "replicas = 0", "apps.site.replicas: must be between 1 and 64"),
    ("", 'placement = ["node.role==worker"]', 'apps.site.placement: only for target = "swarm"'),
    ('[registry]\nurl = "r.example"\n', 'target = "swarm"\nplacement = ["node.role=worker"]',
     "apps.site.placement: 'node.role=worker' is not a Swarm constraint (like node.role==worker or node.labels.zone!=b)"),
    ('[registry]\nurl = "r.example"\n', 'target = "swarm"\nplacement = ["node.role==worker; rm -rf /"]',
     "apps.site.placement: 'node.role==worker; rm -rf /' is not a Swarm constraint (like node.role==worker or node.labels.zone!=b)"),
    ('[registry]\nurl = "r.example"\n', 'target = "swarm"\nplacement = [1]', "apps.site.placement: must be a list of strings"),
    ('[registry]\nurl = "r.example"\n', 'target = "swarm"\nreplicas = "3"', 'apps.site.replicas: must be an integer, not \'3\''),
])
def test_swarm_rules(write_config, registry, keys, problem):
    assert problems_of(write_config, registry_document(registry, f'[apps.site]\nrepo = "/r.git"\n{keys}\n')) == [problem]


def test_an_image_app_on_swarm_needs_no_registry_table(write_config):
    document = registry_document("", '[apps.api]\nimage = "r.example/team/api"\ntarget = "swarm"\nreplicas = 2\n')
    assert config.load(write_config(document)).apps["api"].on_swarm


# -- HTTPS (DESIGN "HTTPS") --------------------------------------------------------------------------


def test_https_is_off_unless_asked_for(write_config):
    loaded = config.load(write_config({"site": {"repo": "/r.git"}}))
    site = loaded.apps["site"]
    assert (site.tls_mode, site.redirect_http, site.hsts, loaded.proxy.publish_tls) == ("off", True, False, "")
    assert loaded.tls.acme_directory == "https://acme-v02.api.letsencrypt.org/directory"


def test_https_keys_are_read_and_paths_resolved(write_config, tmp_path):
    document = ('[proxy]\npublish_tls = "0.0.0.0:443"\n'
                '[tls]\nemail = "ops@example.com"\nca_bundle = "ca/pebble.pem"\n'
                '[apps.site]\nrepo = "/r.git"\nhostnames = ["example.com", "www.example.com"]\ntls = "acme"\nhsts = true\n'
                '[apps.own]\nrepo = "/r.git"\nhostnames = ["own.example"]\n'
                'tls = { cert_file = "certs/own.pem", key_file = "/etc/own.key" }\nredirect_http = false\n')
    loaded = config.load(write_config(document))
    assert loaded.proxy.publish_tls == "0.0.0.0:443"
    assert (loaded.tls.email, loaded.tls.ca_bundle) == ("ops@example.com", str(tmp_path / "ca" / "pebble.pem"))
    assert (loaded.apps["site"].tls_mode, loaded.apps["site"].hsts) == ("acme", True)
    own = loaded.apps["own"]
    assert (own.tls_mode, own.redirect_http) == ("files", False)
    assert (own.tls.cert_file, own.tls.key_file) == (str(tmp_path / "certs" / "own.pem"), "/etc/own.key")


@pytest.mark.parametrize("proxy, tls, keys, problem", [
    ("", "", 'hostnames = ["a.example"]\ntls = "acme"',
     'apps.site.tls: needs proxy.publish_tls (the address HTTPS is served on, like "0.0.0.0:443")'),
    ('publish_tls = "0.0.0.0:443"', "", 'tls = "acme"',
     'apps.site.tls: "acme" needs hostnames (a certificate names them; the default server has none)'),
    ('publish_tls = "0.0.0.0:443"', "", 'hostnames = ["*.a.example"]\ntls = "acme"',
     'apps.site.tls: "acme" cannot get a certificate for *.a.example (a wildcard needs a DNS challenge); '
     'bring one with tls = {cert_file, key_file}'),
    ('publish_tls = "0.0.0.0:443"', "", 'hostnames = ["a.example"]\ntls = "on"',
     'apps.site.tls: must be "off", "acme" or {cert_file = "...", key_file = "..."}, not \'on\''),
    ('publish_tls = "0.0.0.0:443"', "", 'hostnames = ["a.example"]\ntls = { cert_file = "c.pem" }',
     'apps.site.tls: a table must be {cert_file = "PATH", key_file = "PATH"}'),
    ('publish_tls = "0.0.0.0:443"', "", 'hostnames = ["a.example"]\nhsts = "yes"', "apps.site.hsts: must be true or false, not 'yes'"),
    ('publish_tls = "443"', "", "", 'proxy.publish_tls: must be HOST:PORT with an IP address (or localhost) and a port 1-65535, not \'443\''),
    ('publish_tls = "127.0.0.1:18081"', "", "", "proxy.publish_tls: must differ from proxy.publish"),
    ("", 'acme_directory = "http://acme.example/dir"', "",
     "tls.acme_directory: must be an https:// URL, not 'http://acme.example/dir'"),
    ("", 'email = "not an address"', "", "tls.email: not an email address: 'not an address'"),
    ("", 'contact = "x"', "", "tls.contact: unknown key"),
])
def test_https_rules(write_config, proxy, tls, keys, problem):
    document = (f'[server]\nstate_dir = "state"\n[proxy]\npublish = "127.0.0.1:18081"\n{proxy}\n[tls]\n{tls}\n'
                f'[apps.site]\nrepo = "/r.git"\n{keys}\n')
    assert problems_of(write_config, document) == [problem]


# -- the guard (DESIGN "After the switch: the guard") -------------------------------------------------


def test_the_guard_is_off_unless_asked_for_and_judges_by_its_rule(write_config):
    guard = config.load(write_config({"site": {"repo": "/r.git"}})).apps["site"].guard
    assert (guard.watch_seconds, guard.canary_percent) == (0, 0)
    asked = config.load(write_config({"site": {"repo": "/r.git", "guard": {"watch_seconds": 30, "min_requests": 10,
                                                                         "max_error_ratio": 0.1}}})).apps["site"].guard
    assert asked.watch_seconds == 30.0
    assert not asked.fails(9, 9)  # too few to judge
    assert not asked.fails(10, 1) and asked.fails(10, 2)  # 10 % is not above 10 %; 20 % is


@pytest.mark.parametrize("guard, problem", [
    ({"watch_seconds": -1}, "apps.site.guard.watch_seconds: must be 0 (no watch) or more"),
    ({"max_error_ratio": 1}, "apps.site.guard.max_error_ratio: must be at least 0 and below 1 (0.05 is 5 %)"),
    ({"min_requests": 0}, "apps.site.guard.min_requests: must be at least 1"),
    ({"canary_percent": 100}, "apps.site.guard.canary_percent: must be at least 0 (no canary) and below 100"),
    ({"canary_seconds": 0}, "apps.site.guard.canary_seconds: must be greater than 0"),
    ({"watch": 5}, "apps.site.guard.watch: unknown key"),
    ({"min_requests": 2.5}, "apps.site.guard.min_requests: must be an integer, not 2.5"),
])
def test_guard_rules(write_config, guard, problem):
    assert app_problems(write_config, guard=guard) == [problem]
