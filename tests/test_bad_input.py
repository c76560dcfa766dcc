"""Hostile input found by fuzzing (issue 20, item 6): each config or command line below once ended in a
traceback, or was accepted though wrong, or echoed control characters raw. Now each is one line on
stderr naming the problem (control characters escaped), exit status 2, and nothing is written: no
state_dir made, no job queued. tests/test_fuzz_config.py and test_fuzz_cli.py keep looking for more.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import fake_sha
from hookdeploy.core.models import JobState

BIG = "9" * 400  # a TOML integer Python reads, but no float holds (OverflowError) and SQLite refuses
APP = '[apps.site]\nrepo = "/srv/git/site.git"\n'
PORT_PROBLEM = "must be HOST:PORT with an IP address (or localhost) and a port 1-65535"
STATE_DIR_REQUIRED = ("server.state_dir: required (the folder for the job store, mirrors and proxy config, "
                      "e.g. /var/lib/hookdeploy)")
CONTROL = "must not contain control characters (like a newline, a tab or NUL)"
FINITE = "must be a finite number between -1e9 and 1e9"


def one_problem(invoke, path: Path, *command: str) -> str:
    """The one line `hookdeploy --config PATH COMMAND` prints on stderr, checking it exits 2 with nothing on stdout."""
    result = invoke(*command, config=path)
    assert result.exit_code == 2, (result.exit_code, result.stdout, result.stderr)
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, lines
    assert lines[0].isprintable(), lines[0]
    return lines[0]


# -- deploy.toml: input -> the one line, exit 2, no state_dir made ---------------------------------------

# (id, deploy.toml text after [server] state_dir (and the app `site` where it says APP), the problem)
CONFIGS = [
    # ended in a traceback
    ("400-digit float", APP + f"drain_seconds = {BIG}\n", f"apps.site.drain_seconds: {FINITE}, not 99999999999999999999... (400 digits)"),
    ("400-digit health timeout", APP + f"[apps.site.health]\ntimeout = {BIG}\n",
     f"apps.site.health.timeout: {FINITE}, not 99999999999999999999... (400 digits)"),
    ("400-digit integer", APP + f"keep = {BIG}\n",
     "apps.site.keep: must be an integer between -2**63 and 2**63 - 1, not 99999999999999999999... (400 digits)"),
    ("superscript port", 'listen = "127.0.0.1:\u00b2"\n', f"server.listen: {PORT_PROBLEM}, not '127.0.0.1:\u00b2'"),
    ("arabic-indic port", '[proxy]\npublish = "0.0.0.0:\u0668\u0660"\n', f"proxy.publish: {PORT_PROBLEM}, not '0.0.0.0:\u0668\u0660'"),
    ("NUL in state_dir", 'state_dir = "s\\u0000x"\n', f"server.state_dir: {CONTROL}, not 's\\x00x'"),
    ("NUL in repo", '[apps.site]\nrepo = "/srv/\\u0000.git"\n', f"apps.site.repo: {CONTROL}, not '/srv/\\x00.git'"),
    ("NUL in cert path", '[proxy]\npublish_tls = "127.0.0.1:8443"\n' + APP +
     'hostnames = ["a.test"]\ntls = {cert_file = "/c\\u0000", key_file = "/k"}\n',
     f"apps.site.tls.cert_file: {CONTROL}, not '/c\\x00'"),
    ("NUL in secret_file", 'secret_file = "/etc/\\u0000"\n', f"server.secret_file: {CONTROL}, not '/etc/\\x00'"),
    ("NUL in password_file", '[registry]\nurl = "r.example"\nusername = "u"\npassword_file = "/p\\u0000"\n',
     f"registry.password_file: {CONTROL}, not '/p\\x00'"),
    ("5000-char state_dir", f'state_dir = "/{"a" * 4999}"\n', "server.state_dir: must be at most 4096 characters long, not 5000"),
    ("3000-char state_dir", f'state_dir = "/{"/".join(["a" * 99] * 30)}"\n',
     "server.state_dir: must be at most 1024 characters long, not 3000"),
    ("300-byte folder name", f'state_dir = "/{"a" * 300}"\n',
     f"server.state_dir: '/{'a' * 59}'… has a name longer than 255 bytes (the most a file system takes)"),
    ("5000-char repo", f'[apps.site]\nrepo = "/{"a" * 4999}"\n', "apps.site.repo: must be at most 4096 characters long, not 5000"),
    ("10000-char registry", f'[registry]\nurl = "{"a" * 10000}"\n', "registry.url: must be at most 4096 characters long, not 10000"),
    ("64-char registry label", f'[registry]\nurl = "{"a" * 64}.example"\n',
     f"registry.url: must be HOST[:PORT] (no scheme, no path), not '{'a' * 60}'…"),
    ("300-char registry host", f'[registry]\nurl = "{".".join(["a" * 60] * 5)}"\n',
     f"registry.url: the registry's host name is 304 characters long, more than 253, not '{'a' * 60}'…"),
    ("--upload-pack repo", '[apps.site]\nrepo = "--upload-pack=touch /tmp/x"\n',
     "apps.site.repo: must not start with '-' (git would take it for an option), not '--upload-pack=touch /tmp/x'"),
    ("--upload-pack as user@host", '[apps.site]\nrepo = "--upload-pack=touch x@h:p"\n',
     "apps.site.repo: must not start with '-' (git would take it for an option), not '--upload-pack=touch x@h:p'"),
    ("ext:: repo", '[apps.site]\nrepo = "ext::sh -c touch% /tmp/x"\n',
     "apps.site.repo: must not be a transport::address (git would run a command for ext:: or fd::), "
     "not 'ext::sh -c touch% /tmp/x'"),
    ("fd:: repo", '[apps.site]\nrepo = "fd::3"\n',
     "apps.site.repo: must not be a transport::address (git would run a command for ext:: or fd::), not 'fd::3'"),
    ("ssh host as an option", '[apps.site]\nrepo = "ssh://-oProxyCommand=x/r.git"\n',
     "apps.site.repo: must name a host (starting with a letter or digit), not 'ssh://-oProxyCommand=x/r.git'"),
    ("scp host as an option", '[apps.site]\nrepo = "git@-oProxyCommand=x:r.git"\n',
     "apps.site.repo: must name a host after '@' (starting with a letter or digit), not 'git@-oProxyCommand=x:r.git'"),
    ("ssh user as an option", '[apps.site]\nrepo = "ssh://-oProxyCommand=x@h/r.git"\n',
     "apps.site.repo: must not name a user starting with '-' (ssh would take it for an option), "
     "not 'ssh://-oProxyCommand=x@h/r.git'"),
    ("ftp repo", '[apps.site]\nrepo = "ftp://h/r.git"\n',
     "apps.site.repo: must be a path, user@host:path or a file://, ssh://, git://, http://, https:// URL, not 'ftp://h/r.git'"),
    # accepted though wrong
    ("nan watch", APP + "[apps.site.guard]\nwatch_seconds = nan\n", f"apps.site.guard.watch_seconds: {FINITE}, not nan"),
    ("inf drain", APP + "drain_seconds = inf\n", f"apps.site.drain_seconds: {FINITE}, not inf"),
    ("-inf canary", APP + "[apps.site.guard]\ncanary_seconds = -inf\n", f"apps.site.guard.canary_seconds: {FINITE}, not -inf"),
    ("1e300 deadline", APP + "[apps.site.health]\ndeadline = 1e300\n", f"apps.site.health.deadline: {FINITE}, not 1e+300"),
    ("one hostname, two apps", APP + 'hostnames = ["a.test"]\n[apps.blog]\nrepo = "/r"\nhostnames = ["a.test"]\n',
     "apps.blog.hostnames: a.test is also a hostname of apps.site (a hostname routes to one app)"),
    ("one hostname in two cases", APP + 'hostnames = ["a.test"]\n[apps.blog]\nrepo = "/r"\nhostnames = ["A.Test"]\n',
     "apps.blog.hostnames: A.Test is also a hostname of apps.site (a hostname routes to one app)"),
    ("registry port 0", '[registry]\nurl = "r.example:0"\n',
     "registry.url: the registry's port must be between 1 and 65535, not 'r.example:0'"),
    ("registry port 99999", '[registry]\nurl = "r.example:99999"\n',
     "registry.url: the registry's port must be between 1 and 65535, not 'r.example:99999'"),
    ("image port 0", '[apps.api]\nimage = "r.example:0/team/api"\n',
     "apps.api.image: image 'r.example:0/team/api': the registry's port must be between 1 and 65535"),
    ("image port 99999", '[apps.api]\nimage = "r.example:99999/team/api"\n',
     "apps.api.image: image 'r.example:99999/team/api': the registry's port must be between 1 and 65535"),
    ("notify port 0", '[[notify]]\nurl = "http://h.example:0/hook"\n',
     "notify[0].url: must be an http:// or https:// URL, not 'http://h.example:0/hook'"),
    ("notify 64-char label", f'[[notify]]\nurl = "http://{"a" * 64}.example/"\n',
     f"notify[0].url: must be an http:// or https:// URL, not 'http://{'a' * 33}'…"),
    ("proxy image with a space", '[proxy]\nimage = "bad image"\n',
     "proxy.image: 'bad image' is not an image reference: the repository must be lowercase components "
     "(a-z, 0-9 and . _ -) joined by /, 255 characters at most"),
    ("proxy image port 0", '[proxy]\nimage = "r.example:0/nginx:1"\n',
     "proxy.image: 'r.example:0/nginx:1' is not an image reference: the registry's port must be between 1 and 65535"),
    ("empty build arg name", APP + 'build_args = {"" = "x"}\n',
     "apps.site.build_args: '' is not a build argument name (letters, digits and _)"),
    ("build arg A=B", APP + 'build_args = {"A=B" = "x"}\n',
     "apps.site.build_args: 'A=B' is not a build argument name (letters, digits and _)"),
    ("NUL in a build arg", APP + 'build_args = {A = "x\\u0000"}\n', "apps.site.build_args: A: must not contain a NUL character"),
    ("NUL in dockerfile", APP + 'dockerfile = "Docker\\u0000file"\n', f"apps.site.dockerfile: {CONTROL}, not 'Docker\\x00file'"),
    ("NUL in context", APP + 'context = "a\\u0000"\n', f"apps.site.context: {CONTROL}, not 'a\\x00'"),
    ("NUL in an env value", APP + 'env = {A = "x\\u0000"}\n', "apps.site.env.A: must not contain a NUL character"),
    ("newline in a branch", APP + 'branch = "a\\nb"\n', f"apps.site.branch: {CONTROL}, not 'a\\nb'"),
    ("ESC in an image", '[proxy]\nimage = "\\u001b[2J"\n', f"proxy.image: {CONTROL}, not '\\x1b[2J'"),
    ("C1 CSI in state_dir", 'state_dir = "s\\u009b2J"\n', f"server.state_dir: {CONTROL}, not 's\\x9b2J'"),
    ("bidi override in a repo", '[apps.site]\nrepo = "/srv/\\u202egit.exe"\n', f"apps.site.repo: {CONTROL}, not '/srv/\\u202egit.exe'"),
    # not one clean line
    ("newline in a key", APP + '"a\\nb" = 1\n', "apps.site.'a\\nb': unknown key"),
    ("ESC in a key", '"\\u001b[31mred" = 1\n', "server.'\\x1b[31mred': unknown key"),
    ("ESC in an app name", '[apps."\\u001b[2J"]\nrepo = "/r"\n', "apps.'\\x1b[2J': app name must match [a-z0-9][a-z0-9-]{0,62}"),
    ("newline in an env name", APP + 'env = {"A\\nB" = "x"}\n', "apps.site.env.'A\\nB': not a valid environment variable name"),
]


def document(text: str, state_dir: Path) -> str:
    """`text` with [server] state_dir set, unless it sets its own (then in the [server] it opens with)."""
    if text.startswith("state_dir") or "\nstate_dir" in text:
        return "[server]\n" + text
    if text.startswith(("listen", "secret_file")):
        return f'[server]\nstate_dir = "{state_dir}"\n' + text
    return f'[server]\nstate_dir = "{state_dir}"\n\n' + text


@pytest.mark.parametrize("text, problem", [case[1:] for case in CONFIGS], ids=[case[0] for case in CONFIGS])
def test_a_bad_config_is_one_line_and_writes_nothing(write_config, invoke, state_dir, tmp_path, text, problem):
    path = write_config(document(text, state_dir), add_state_dir=False)
    for command in (("status",), ("doctor",), ("history", "site")):
        assert one_problem(invoke, path, *command) == f"hookdeploy: config: {problem}"
    assert not state_dir.exists() and sorted(tmp_path.iterdir()) == [path]


@pytest.mark.parametrize("text", ["", "[server]\n", "[server]\nname = \"x\"\n", APP])
def test_state_dir_must_be_named(write_config, invoke, tmp_path, text):
    path = write_config(text, add_state_dir=False)
    assert one_problem(invoke, path, "status") == f"hookdeploy: config: {STATE_DIR_REQUIRED}"
    assert sorted(tmp_path.iterdir()) == [path]


def test_deeply_nested_toml_is_one_line(write_config, invoke):
    path = write_config("x = " + "[" * 2000 + "]" * 2000 + "\n", add_state_dir=False)
    assert one_problem(invoke, path, "status") == f"hookdeploy: config: {path}: not valid TOML: arrays or inline tables nested too deeply"
    path = write_config("x = " + "{a = " * 2000 + "1" + "}" * 2000 + "\n", add_state_dir=False)
    assert one_problem(invoke, path, "status").endswith("not valid TOML: arrays or inline tables nested too deeply")


def test_an_integer_python_will_not_read_is_one_line(write_config, invoke):
    path = write_config("[server]\nmax_body = " + "9" * 5000 + "\n", add_state_dir=False)
    assert one_problem(invoke, path, "status") == (
        f"hookdeploy: config: {path}: not valid TOML: Exceeds the limit (4300 digits) for integer string conversion")


def test_an_empty_config_option_is_refused(invoke, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "deploy.toml").write_text(f'[server]\nstate_dir = "{tmp_path / "state"}"\n' + APP)
    assert one_problem(invoke, "", "status") == (
        "hookdeploy: config: --config: the path is empty (leave the option out to use $HOOKDEPLOY_CONFIG or ./deploy.toml)")
    assert not (tmp_path / "state").exists()


def test_every_float_key_must_be_finite(write_config):
    """inf in each float key of every table: one problem each, naming the key (keys others add are covered too)."""
    import dataclasses

    from hookdeploy.core import config

    tables = {"apps.site": config.AppConfig, "apps.site.health": config.HealthConfig, "apps.site.guard": config.GuardConfig,
              "server": config.ServerConfig}
    for table, cls in tables.items():
        for field in dataclasses.fields(cls):
            if field.type != "float":
                continue
            text = f'[server]\nstate_dir = "s"\n[apps.site]\nrepo = "/r"\n'
            text = text.replace(f"[{table}]\n", f"[{table}]\n{field.name} = inf\n") if f"[{table}]" in text else (
                text + f"[{table}]\n{field.name} = inf\n")
            path = write_config(text, add_state_dir=False)
            try:
                config.load(path)
            except config.ConfigError as error:
                assert error.problems == [f"{table}.{field.name}: {FINITE}, not inf"]
            else:
                pytest.fail(f"{table}.{field.name} = inf was accepted")


def test_clone_urls_git_may_fetch_are_kept(write_config):
    from hookdeploy.core import config

    for url in ("file:///srv/git/site.git", "ssh://git@example.com:2222/site.git", "git://example.com/site.git",
                "http://example.com/site.git", "https://example.com/site.git", "git@example.com:me/site.git"):
        assert config.load(write_config({"site": {"repo": url}})).apps["site"].repo == url


def test_the_proxy_images_people_use_are_references(write_config):
    from hookdeploy.core import config

    for image in ("nginx:stable-alpine", "hookdeploy-nginx:local", "nginx", "docker.io/library/nginx:1.25",
                  "localhost:5000/team/nginx:v1", "nginx@sha256:" + "a" * 64, "r.example/nginx:1@sha256:" + "b" * 64):
        assert config.load(write_config({"site": {"repo": "/r"}}, proxy={"image": image})).proxy.image == image


def test_git_is_never_allowed_a_command_transport(tmp_path):
    """Even a repo URL that got past the config (an older store's mirror remote, say): git runs with
    GIT_ALLOW_PROTOCOL, so ext:: is refused by git itself and its command never runs."""
    import subprocess

    from hookdeploy.engine.gitauth import SAFE_ENVIRONMENT

    marker = tmp_path / "ran"
    completed = subprocess.run(["git", "ls-remote", f"ext::sh -c touch% {marker}"], capture_output=True, text=True,
                               env={"PATH": "/usr/bin:/bin", "GIT_CONFIG_COUNT": "1", "GIT_CONFIG_KEY_0": "protocol.ext.allow",
                                    "GIT_CONFIG_VALUE_0": "always", **SAFE_ENVIRONMENT})
    assert completed.returncode != 0 and "transport 'ext' not allowed" in completed.stderr
    assert not marker.exists()


# -- the command line: input -> the one line, exit 2, nothing queued ----------------------------------------

# (arguments after `--config PATH`, the one line)
COMMANDS = [
    (["logs", "9223372036854775808"], "hookdeploy: error: no job 9223372036854775808"),
    (["logs", "0"], "hookdeploy: error: no job 0"),
    (["logs", "x"], "hookdeploy: error: Invalid value for 'JOB': 'x' is not a valid integer. Try 'hookdeploy logs --help' for help."),
    (["nosuch"], "hookdeploy: error: No such command 'nosuch'. Try 'hookdeploy --help' for help."),
    (["no\x1b[2Jsuch"], "hookdeploy: error: No such command 'no\\x1b[2Jsuch'. Try 'hookdeploy --help' for help."),
    (["--bogus", "status"], "hookdeploy: error: No such option '--bogus'. Try 'hookdeploy --help' for help."),
    (["history"], "hookdeploy: error: Missing argument 'APP'. Try 'hookdeploy history --help' for help."),
    (["history", "site", "--limit", "0"], "hookdeploy: error: Invalid value for '--limit': 0 is not in the range 1<=x<=10000. "
                                          "Try 'hookdeploy history --help' for help."),
    (["token", "create", "--scope", "all"], "hookdeploy: error: Invalid value for '--scope': 'all' is not one of 'read', "
                                            "'deploy'. Try 'hookdeploy token create --help' for help."),
    (["status", "a\nb"], "hookdeploy: error: app name 'a\\nb': must match [a-z0-9][a-z0-9-]{0,62}"),
    (["history", "\x1b]0;pwned\x07"], "hookdeploy: error: app name '\\x1b]0;pwned\\x07': must match [a-z0-9][a-z0-9-]{0,62}"),
    (["replay", "site", "abcd\n\x1b[2J"], "hookdeploy: error: SHA 'abcd\\n\\x1b[2J': must be 4 to 40 hexadecimal digits"),
    (["rollback", "site", "--to", "\x1b[2J"], "hookdeploy: error: SHA '\\x1b[2J': must be 4 to 40 hexadecimal digits"),
    (["deploy", "site", "--ref", "a\nb"], "hookdeploy: error: ref 'a\\nb': contains a space, control character or one of ~^:?*[\\"),
    (["deploy", "site", "--ref", "x", "--image", "y"],
     "hookdeploy: error: give --ref (apps built from git) or --image (image apps), not both"),
]


@pytest.mark.parametrize("arguments, line", COMMANDS, ids=[" ".join(case[0]).encode("unicode_escape").decode() for case in COMMANDS])
def test_a_bad_command_line_is_one_line_and_queues_nothing(site_config, invoke, store, arguments, line):
    store.enqueue("site", fake_sha(1))
    before = store.jobs(limit=100)
    assert one_problem(invoke, site_config, *arguments) == line
    assert store.jobs(limit=100) == before


def test_usage_errors_are_one_line_from_the_installed_script(site_config, run_cli):
    """The real exit status and stderr: click's four lines (usage, hint, blank, error) are one."""
    for arguments, line in [(["nosuch"], COMMANDS[3][1]), (["logs", "9223372036854775808"], COMMANDS[0][1]),
                            (["status", "a\x1b[2Jb"], "hookdeploy: error: app name 'a\\x1b[2Jb': must match [a-z0-9][a-z0-9-]{0,62}")]:
        completed = run_cli(*arguments, config=site_config)
        assert (completed.returncode, completed.stdout, completed.stderr) == (2, "", line + "\n")


def test_a_bad_config_from_the_installed_script(write_config, run_cli, state_dir):
    path = write_config(document(APP + "drain_seconds = inf\n", state_dir), add_state_dir=False)
    completed = run_cli("doctor", config=path)
    assert (completed.returncode, completed.stdout, completed.stderr) == (
        2, "", f"hookdeploy: config: apps.site.drain_seconds: {FINITE}, not inf\n")
    assert not state_dir.exists()


def test_help_is_still_help(site_config, run_cli):
    completed = run_cli("--help", config=site_config)
    assert completed.returncode == 0 and completed.stdout.startswith("Usage: hookdeploy [OPTIONS] COMMAND")
    completed = run_cli(config=site_config)
    assert completed.returncode == 2 and "Missing command" in completed.stderr and len(completed.stderr.splitlines()) == 1


def test_a_job_log_and_error_are_printed_escaped(site_config, invoke, store):
    """A commit subject or build output may carry escape sequences (a pusher's text): `logs` and `history`
    print them escaped, one line each."""
    store.enqueue("site", fake_sha(1))
    job = store.claim("test")
    store.log(job.id, "Step 1/2 \x1b]0;owned\x07\x1b[2J")
    store.finish(job.id, JobState.FAILED, error="build failed:\nfatal \x1b[31m")
    logs = invoke("logs", str(job.id), config=site_config)
    assert logs.exit_code == 0 and "Step 1/2 \\x1b]0;owned\\x07\\x1b[2J" in logs.stdout
    history = invoke("history", "site", config=site_config)
    assert history.exit_code == 0 and history.stdout.splitlines()[0].endswith("build failed:\\nfatal \\x1b[31m")
    for line in logs.stdout.splitlines() + history.stdout.splitlines():
        assert line.isprintable(), line


def test_hostnames_that_are_no_strings_are_one_problem_with_acme(write_config):
    """Found by the fuzz: with tls = "acme", hostnames = [[1]] once reached the wildcard check (AttributeError)."""
    from hookdeploy.core import config

    path = write_config('[proxy]\npublish_tls = "127.0.0.1:8443"\n' + APP + 'hostnames = [["a.test"]]\ntls = "acme"\n')
    with pytest.raises(config.ConfigError) as refused:
        config.load(path)
    assert refused.value.problems == ["apps.site.hostnames: must be a list of strings",
                                      'apps.site.tls: "acme" needs hostnames (a certificate names them; the default server has none)']


def test_a_job_id_beyond_sqlites_integers_is_no_job_over_http_too(web_app, read_token):
    """The API and the dashboard ask actions.job as the CLI does: 404, never a 500 from SQLite's OverflowError."""
    for path in ("/api/jobs/9223372036854775808", "/api/jobs/9223372036854775808/log", "/api/jobs/" + "9" * 400):
        assert web_app.call("GET", path, read_token)[0] == 404, path


def test_doctor_escapes_the_config_path(tmp_path, run_cli):
    """doctor names the config file, whose path comes from the command line: a newline or ESC in it is escaped."""
    folder = tmp_path / "a\nb\x1b[2J"
    folder.mkdir()
    config = folder / "deploy.toml"
    config.write_text(f'[server]\nstate_dir = "{tmp_path / "state"}"\n' + APP)
    completed = run_cli("doctor", config=config)
    assert completed.returncode == 1 and "config " + repr(str(config))[1:-1] + " is valid (1 app)" in completed.stdout
    assert all(line.isprintable() for line in completed.stdout.splitlines() + completed.stderr.splitlines())
