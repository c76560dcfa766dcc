"""The handbook (docs/, mkdocs.yml) builds strict, and its examples and README's parse with hookdeploy's
own config parser and click app (docsgen/checks.py). Each check is shown to fail on a temp copy with
a planted broken link, a misspelled key, an unknown option; a guide no one listed still gets in the nav."""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import click
import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # docsgen lives beside the package, not in it

from docsgen import checks, reference_cli, reference_config  # noqa: E402

BUILD_SECONDS = 15.0  # a few seconds here (1.5 s measured); far past that, something fetches or loops


def build(root: Path, site: Path) -> subprocess.CompletedProcess:
    """`mkdocs build --strict` of the handbook under `root`, as scripts/docs.sh runs it."""
    return subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)], cwd=root,
                          capture_output=True, text=True, timeout=120, env={**os.environ, "NO_MKDOCS_2_WARNING": "1"})


def build_here(root: Path, site: Path, caplog) -> str | None:
    """The same build in this process (a second or two less than a new interpreter importing it all):
    None if it built, else the warnings that stopped it."""
    from mkdocs.commands.build import build as mkdocs_build
    from mkdocs.config import load_config
    from mkdocs.exceptions import Abort

    caplog.clear()
    try:
        with caplog.at_level(logging.WARNING, logger="mkdocs"):
            mkdocs_build(load_config(config_file=str(root / "mkdocs.yml"), strict=True, site_dir=str(site)))
    except Abort:
        return "\n".join(record.getMessage() for record in caplog.records if record.levelno >= logging.WARNING)
    return None


@pytest.fixture
def copy(tmp_path) -> Path:
    """The handbook's sources (README, docs/, mkdocs.yml and its hook) copied to plant mistakes in."""
    root = tmp_path / "checkout"
    root.mkdir()
    for name in ("docs", "docsgen"):
        shutil.copytree(ROOT / name, root / name, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("README.md", "mkdocs.yml"):
        shutil.copy(ROOT / name, root / name)
    return root


def plant(path: Path, old: str, new: str) -> None:
    text = path.read_text(encoding="utf-8")
    assert text.count(old) >= 1, f"{path} no longer has {old!r} to plant a mistake in"
    path.write_text(text.replace(old, new, 1), encoding="utf-8")


def test_the_handbook_builds_strict_in_a_few_seconds(tmp_path):
    started = time.monotonic()
    done = build(ROOT, tmp_path / "site")
    took = time.monotonic() - started
    assert done.returncode == 0, done.stderr
    assert took < BUILD_SECONDS, f"mkdocs build took {took:.1f} s"
    reference = (tmp_path / "site" / "reference" / "deploy-toml" / "index.html").read_text(encoding="utf-8")
    assert "read_timeout" in reference and "seconds the proxy waits for an answer" in reference
    cli = (tmp_path / "site" / "reference" / "cli" / "index.html").read_text(encoding="utf-8")
    assert "hookdeploy app-logs" in cli and "--since DURATION" in cli
    assert "<!-- generated" not in reference + cli
    home = (tmp_path / "site" / "index.html").read_text(encoding="utf-8")
    assert "fonts.googleapis.com" not in home and "fonts.gstatic.com" not in home, "the theme must not load web fonts"


def test_every_example_in_the_docs_and_readme_parses():
    assert checks.check(ROOT) == []


def test_a_broken_link_or_anchor_fails_the_build(copy, tmp_path, caplog):
    plant(copy / "docs" / "index.md", "(getting-started.md)", "(getting-startd.md)")
    plant(copy / "docs" / "guides" / "webhooks.md", "(../reference/http-api.md#webhooks)",
          "(../reference/http-api.md#webhook)")
    warnings = build_here(copy, tmp_path / "site", caplog)
    assert warnings is not None, "the build passed with a broken link"
    assert "'getting-startd.md'" in warnings
    assert "does not contain an anchor '#webhook'" in warnings


def test_a_guide_left_out_of_the_nav_is_listed_anyway(copy, tmp_path, caplog):
    (copy / "docs" / "guides" / "previews-planted.md").write_text("# Previews (planted)\n\nA guide another branch adds.\n")
    assert build_here(copy, tmp_path / "site", caplog) is None, caplog.text
    guides = (tmp_path / "site" / "guides" / "index.html").read_text(encoding="utf-8")
    assert "previews-planted/" in guides and "Previews (planted)" in guides


def test_a_misspelled_key_in_a_toml_block_fails_the_check(copy):
    plant(copy / "docs" / "guides" / "guard.md", "watch_seconds = 60", "wach_seconds = 60")
    problems = checks.check(copy)
    assert len(problems) == 1, problems
    assert "guard.md" in problems[0] and "apps.site.guard.wach_seconds: unknown key" in problems[0]


def test_a_block_marked_as_an_error_must_fail_with_that_error(copy):
    page = copy / "docs" / "development.md"
    assert checks.check(copy) == []  # the marked block fails with the error it shows
    plant(page, "<!-- error: apps.site.health.path: must start with '/' -->", "<!-- error: apps.site.health.path: too long -->")
    assert any("should fail with 'apps.site.health.path: too long'" in problem for problem in checks.check(copy))
    plant(page, 'path = "health"', 'path = "/health"')
    assert any("but: it loads" in problem for problem in checks.check(copy))


def test_an_unknown_command_or_option_fails_the_check(copy):
    plant(copy / "docs" / "guides" / "operating-apps.md", "hookdeploy stop site --wait", "hookdeploy stop site --wiat")
    plant(copy / "docs" / "guides" / "services.md", "/opt/hookdeploy/bin/hookdeploy --config /etc/hookdeploy/deploy.toml init-repo site",
          "/opt/hookdeploy/bin/hookdeploy --config /etc/hookdeploy/deploy.toml init-repos site")
    problems = checks.check(copy)
    assert len(problems) == 2, problems
    assert "`hookdeploy stop site --wiat`: No such option '--wiat'" in problems[0] + problems[1]
    assert "No such command 'init-repos'" in problems[0] + problems[1]


def test_a_readme_link_to_a_missing_page_fails_the_check(copy):
    with open(copy / "README.md", "a", encoding="utf-8") as readme:
        readme.write("\nSee [the guard](docs/guides/gaurd.md) and [HTTPS](docs/guides/https.md#https).\n")
    problems = checks.check(copy)
    assert len(problems) == 1 and "README.md" in problems[0], problems
    assert "link to docs/guides/gaurd.md: no such file" in problems[0]


def test_shell_lines_are_read_as_a_shell_would():
    commands = list(checks.hookdeploy_commands(
        "adduser --system hookdeploy && TOKEN=$(hookdeploy token create --ttl 60) # hookdeploy nope"))
    assert commands == [["token", "create", "--ttl", "60"]]
    assert list(checks.hookdeploy_commands("runuser -u hookdeploy -- /opt/hookdeploy/bin/hookdeploy doctor | less")) == [["doctor"]]
    assert checks.cli_problem(["token", "create", "--scope", "admin"]) is not None
    assert checks.cli_problem(["run", "site", "--", "ls", "-la"]) is None


# -- the references, made from the code -------------------------------------------------------------


def test_every_deploy_toml_key_has_its_meaning_beside_it():
    assert reference_config.undocumented() == [], "add a trailing `# what it means` to these fields in config_schema.py"


def test_a_key_without_its_comment_is_named():
    source = reference_config.SOURCE.read_text(encoding="utf-8")
    line = next(line for line in source.splitlines() if line.strip().startswith("read_timeout: float"))
    assert reference_config.undocumented(source.replace(line, line.split("  #")[0])) == ["apps.NAME.read_timeout"]


def test_the_reference_has_every_table_and_key_with_type_and_default():
    text = reference_config.markdown()
    for header in ("[server]", "[proxy]", "[apps.NAME]", "[apps.NAME.health]", "[apps.NAME.guard]", "[apps.NAME.webhook]",
                   "[[apps.NAME.tasks]]", "[[notify]]", "[registry]", "[tls]", "[build]"):
        assert f"## `{header}`" in text
    assert "| `read_timeout` | number | `60.0` | seconds the proxy waits for an answer" in text
    assert "| `placement` | array of strings | `[]` |" in text
    assert "| `state_dir` | string | `required` |" in text
    assert "| `status` | integer or string | `200` |" in text


def test_every_command_and_option_has_help_and_a_section():
    assert reference_cli.undocumented() == []
    text = reference_cli.markdown()
    for command, context in reference_cli.commands():
        assert f"## `{context.command_path}`" in text
        for option in command.params:
            if isinstance(option, click.Option) and "--help" not in option.opts:
                assert f"`{option.opts[0]}" in text, f"{context.command_path} {option.opts[0]}"


def test_a_file_an_example_names_need_not_exist_here_but_every_other_problem_counts():
    fragment = '[apps.site]\nmaintenance_page = "/nonexistent/page.html"\n'
    assert checks.config_problems(fragment) == []
    assert checks.config_problems(fragment + "keep = 1\n") == [
        "apps.site.keep: must be at least 2 (the live release and one to roll back to)"]
    assert checks.config_problems('[apps.site]\nrepo = "/srv/git/site.git"\nport = "80"\n') != []
