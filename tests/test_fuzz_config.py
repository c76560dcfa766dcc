"""deploy.toml fuzzed (hypothesis): whatever the file holds, loading it gives a Config or a ConfigError of
printable one-line problems, and `hookdeploy status` on it exits 0 or 2, one escaped line per problem on
stderr; a refused config makes no state_dir. Deterministic (derandomize, no example database) and bounded,
so CI reproduces a failure exactly; tests/test_bad_input.py holds each input these once found.
"""

from __future__ import annotations

import math
import os
import tempfile
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import toml_key, toml_value
from hookdeploy.cli.main import cli
from hookdeploy.core import config
from hookdeploy.core.errors import ConfigError

pytestmark = pytest.mark.slow

FUZZ = settings(max_examples=int(os.environ.get("HOOKDEPLOY_FUZZ_EXAMPLES", 400)), deadline=None,
                derandomize=not os.environ.get("HOOKDEPLOY_FUZZ_RANDOM"), database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

# A valid document touching every table; a mutation replaces, adds or removes one value at a path in it.
BASE: dict[str, Any] = {
    "server": {"name": "fuzz", "state_dir": "state", "listen": "127.0.0.1:18080", "max_body": 1000,
               "secret_env": "FUZZ_SECRET", "threads": 4, "trusted_proxy": "127.0.0.1",
               "trusted_proxy_headers": ["x-forwarded-for"]},
    "proxy": {"image": "hookdeploy-nginx:local", "publish": "127.0.0.1:18081", "publish_tls": "127.0.0.1:18443"},
    "tls": {"acme_directory": "https://127.0.0.1:14000/dir", "email": "ops@example.com", "ca_bundle": "ca.pem"},
    "registry": {"url": "127.0.0.1:5000", "username": "u", "password_env": "FUZZ_PASSWORD", "insecure": True},
    "notify": [{"url": "http://127.0.0.1:9/hook", "events": ["failed"], "format": "json"}],
    "apps": {
        "site": {"repo": "git/site.git", "branch": "deploy", "dockerfile": "Dockerfile", "context": ".", "port": 80,
                 "hostnames": ["site.test"], "keep": 3, "drain_seconds": 1.0, "read_timeout": 5.0, "coalesce": True,
                 "build_timeout": 60.0, "tls": "acme", "redirect_http": True, "hsts": False, "push": True,
                 "replicas": 1, "env": {"MODE": "x", "TOKEN": {"from_env": "T"}}, "build_args": {"V": "1"},
                 "health": {"path": "/", "status": 200, "contains": "ok", "timeout": 1.0, "interval": 0.1, "deadline": 5.0},
                 "guard": {"watch_seconds": 1.0, "max_error_ratio": 0.1, "min_requests": 5, "canary_percent": 5.0,
                           "canary_seconds": 2.0},
                 "webhook": {"provider": "github", "secret_env": "W", "repository": "me/site"}},
        "api": {"image": "127.0.0.1:5000/team/api", "target": "swarm", "replicas": 2, "placement": ["node.role==worker"],
                "webhook": {"provider": "registry", "secret_env": "R", "tag": "stable"}},
        "blog": {"repo": "file:///nonexistent/blog.git", "tls": {"cert_file": "c.pem", "key_file": "k.pem"},
                 "hostnames": ["blog.test"]},
    },
}

HOSTILE_TEXT = st.one_of(
    st.text(max_size=40),
    st.text(alphabet=st.characters(codec="utf-8", exclude_categories=["Cs"]), max_size=12),
    st.sampled_from(["", "\x00", "a\nb", "\x1b[2J", "\u2028", "\u00b2", "\u0668\u0660", "127.0.0.1:\u00b2", "--upload-pack=x",
                     "ext::sh -c x", "fd::3", "ssh://-oProxyCommand=x/r", "a" * 5000, "/" + "a" * 300, "r:0", "r:99999",
                     "bad image", "*.", "..", "../..", "-", "@", "A=B", "x@-y:z", "http://h:0/", "http://" + "a" * 70 + "/",
                     "a" * 64 + ".test", "SITE.TEST", "site.test", "nan", "inf", "2xx", "\t", "/", "~"]),
)
HOSTILE_NUMBER = st.one_of(
    st.integers(min_value=-(2**70), max_value=2**70), st.integers(min_value=-1, max_value=70000),
    st.sampled_from([10**400, -(10**400), 2**63, 2**63 - 1, -(2**63) - 1, 0, -1, 65536]),
    st.floats(allow_nan=True, allow_infinity=True), st.sampled_from([math.nan, math.inf, -math.inf, 1e300, -0.0, 5e-324]),
)
LEAF = st.one_of(HOSTILE_TEXT, HOSTILE_NUMBER, st.booleans())
HOSTILE = st.recursive(LEAF, lambda children: st.one_of(st.lists(children, max_size=4),
                                                        st.dictionaries(HOSTILE_TEXT, children, max_size=3)), max_leaves=8)


def paths(value: Any, prefix: tuple = ()) -> list[tuple]:
    """Every key path in a document (list items by index)."""
    found = [prefix] if prefix else []
    if isinstance(value, dict):
        for key, item in value.items():
            found += paths(item, prefix + (key,))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found += paths(item, prefix + (index,))
    return found


ALL_PATHS = paths(BASE)


def mutate(document: Any, path: tuple, action: str, value: Any, new_key: str) -> Any:
    """A copy of `document` with the value at `path` replaced or removed, or a key added beside it (unchanged
    where an earlier mutation took the path away)."""
    head, rest = path[0], path[1:]
    if isinstance(document, dict):
        copy = dict(document)
        if rest:
            if head in copy:
                copy[head] = mutate(copy[head], rest, action, value, new_key)
        elif action == "replace":
            copy[head] = value
        elif action == "remove":
            copy.pop(head, None)
        else:
            copy[new_key] = value
        return copy
    if not isinstance(document, list) or not isinstance(head, int) or head >= len(document):
        return document
    copy = list(document)
    if rest:
        copy[head] = mutate(copy[head], rest, action, value, new_key)
    elif action == "remove":
        del copy[head]
    else:
        copy[head] = value
    return copy


def toml_text(document: dict) -> str:
    """A document as TOML, each top-level key one line with inline tables (so any key or value may be hostile)."""
    return "".join(f"{toml_key(key)} = {toml_value(value)}\n" for key, value in document.items())


MUTATIONS = st.lists(st.tuples(st.sampled_from(ALL_PATHS), st.sampled_from(["replace", "replace", "remove", "add"]),
                               HOSTILE, HOSTILE_TEXT), min_size=1, max_size=4)


def check_problems(path: Path) -> list[str] | None:
    """The problems config.load reports (each a printable line), or None when it loads."""
    try:
        config.load(path)
    except ConfigError as error:
        assert error.problems, "a ConfigError lists its problems"
        for problem in error.problems:
            assert problem and problem.isprintable(), repr(problem)
        return error.problems
    return None


def check_status(folder: Path, path: Path, problems: list[str] | None) -> None:
    """`hookdeploy status` in-process: exit 0, or 2 with one escaped line a problem and no state_dir made; for
    a config that loads, `hookdeploy doctor` too (0, or 1 with its problems named, never a traceback)."""
    state = folder / "state"
    loaded = config.load(path) if problems is None else None
    if loaded is not None and not Path(loaded.server.state_dir).is_relative_to(folder):
        return  # a state_dir outside the example's folder: status would make it; loading it was the test
    result = CliRunner().invoke(cli, ["--config", str(path), "status"], env={"HOOKDEPLOY_CONFIG": None},
                                catch_exceptions=False)
    lines = result.stderr.splitlines()
    assert all(line.isprintable() for line in result.stdout.splitlines() + lines)
    if problems is None:
        assert result.exit_code in (0, 2), (result.exit_code, result.stderr)
        assert result.exit_code == 0 or len(lines) == 1, lines
        doctor = CliRunner().invoke(cli, ["--config", str(path), "doctor"], env={"HOOKDEPLOY_CONFIG": None},
                                    catch_exceptions=False)
        assert doctor.exit_code in (0, 1), (doctor.exit_code, doctor.stdout, doctor.stderr)
        assert all(line.isprintable() for line in doctor.stdout.splitlines() + doctor.stderr.splitlines())
        return
    assert result.exit_code == 2 and result.stdout == ""
    assert lines == [f"hookdeploy: config: {problem}" for problem in problems]
    assert not state.exists(), "a refused config made its state_dir"


@FUZZ
@given(MUTATIONS)
def test_any_mutated_document_is_a_config_or_one_line_problems(mutations):
    document = BASE
    for path, action, value, new_key in mutations:
        document = mutate(document, path, action, value, new_key)
    with tempfile.TemporaryDirectory() as folder:
        config_file = Path(folder) / "deploy.toml"
        config_file.write_text(toml_text(document), encoding="utf-8")
        problems = check_problems(config_file)
        check_status(Path(folder), config_file, problems)


EXAMPLE = (Path(__file__).parent.parent / "deploy.toml.example").read_text().replace(
    'state_dir = "/var/lib/hookdeploy"', 'state_dir = "state"')
# Text spliced into the example at random places: TOML's own syntax, hostile literals, deep nesting.
SPLICES = st.one_of(st.sampled_from(["[", "]", "[[", "]]", "{", "}", "=", '"', "'", "'''", '"""', "\n", "\\", "#", ",", ".",
                                    "nan", "inf", "-inf", "9" * 400, "9" * 5000, "1979-05-27T07:32:00Z", '"\\u0000"',
                                    '"\\u001b[2J"', "[" * 2000, "{a=" * 500, "\n[apps.x]\n", "\n[[notify]]\n",
                                    "\n[server]\n", '\n"a\\nb" = 1\n', "\x00", "\r", "\ufeff"]),
                    st.text(max_size=8))


@FUZZ
@given(st.lists(st.tuples(st.integers(min_value=0, max_value=len(EXAMPLE)), st.integers(min_value=0, max_value=20),
                          SPLICES), min_size=1, max_size=5))
def test_any_spliced_example_is_a_config_or_one_line_problems(edits):
    text = EXAMPLE
    for position, removed, inserted in edits:
        position = min(position, len(text))
        text = text[:position] + inserted + text[position + removed:]
    with tempfile.TemporaryDirectory() as folder:
        config_file = Path(folder) / "deploy.toml"
        config_file.write_bytes(text.encode("utf-8", "surrogatepass"))
        problems = check_problems(config_file)
        check_status(Path(folder), config_file, problems)


def test_the_base_document_is_valid():
    """The fuzz starts from a config that loads, so a mutation, not the base, is what a refusal is about."""
    with tempfile.TemporaryDirectory() as folder:
        config_file = Path(folder) / "deploy.toml"
        config_file.write_text(toml_text(BASE), encoding="utf-8")
        assert check_problems(config_file) is None
        config_file.write_text(EXAMPLE, encoding="utf-8")
        assert check_problems(config_file) is None
