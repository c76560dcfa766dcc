"""The handbook's examples checked against the code: every ```toml block parses with hookdeploy's
own config parser, and every `hookdeploy ...` line of a shell block parses with its click app.

A toml block is a fragment: it is merged into a minimal valid deploy.toml (a state_dir, and a repo
for an app the fragment names without repo or image) and parsed; a file it names need not exist here. A block that shows an error is
preceded by `<!-- error: TEXT -->` and must fail with TEXT among its problems.

README.md's links into the checkout must lead to a file (mkdocs checks the handbook's own links).

    python -m docsgen.checks [ROOT]     # README.md and docs/ under ROOT (default: this checkout)
"""

from __future__ import annotations

import contextlib
import io
import re
import shlex
import sys
import tomllib
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import click

from hookdeploy.cli.main import cli
from hookdeploy.core.config_parse import parse
from hookdeploy.core.errors import ConfigError

ROOT = Path(__file__).resolve().parent.parent
# A fenced block, indented as in a list item: its indent, language, body; and the line before it.
FENCE = re.compile(r"(?P<before>[^\n]*)\n(?P<indent>[ \t]*)```(?P<lang>[\w-]*)[^\n]*\n(?P<body>.*?)\n(?P=indent)```",
                   re.DOTALL)
ERROR_MARK = re.compile(r"<!--\s*error:\s*(?P<text>.*?)\s*-->")
SHELLS = ("sh", "bash", "console", "shell")
# Commands that run the next word as a command, and their options that take a value.
WRAPPERS = {"sudo": ("-u", "-g"), "runuser": ("-u", "-g"), "env": (), "exec": (), "time": (), "nohup": ()}
OPERATORS = {"&&", "||", ";", "|", "&", "(", ")", "$(", ";;", "|&"}
# A file an example names (a maintenance page, a certificate) is on the reader's server, not here: the
# parser's "no such file" problems are not the example's fault. Any other problem with the key still is.
MISSING_FILE = re.compile(r"is not a (readable )?file|does not exist|[Nn]o such file")


@dataclass(frozen=True)
class Block:
    """One fenced block of a Markdown file."""

    path: Path
    line: int
    lang: str
    body: str
    error: str | None  # the text of an `<!-- error: TEXT -->` just before it

    @property
    def where(self) -> str:
        return f"{self.path}:{self.line}"


def markdown_files(root: Path) -> list[Path]:
    """README.md and every page of docs/ under `root`."""
    readme = [root / "README.md"] if (root / "README.md").exists() else []
    return readme + sorted((root / "docs").rglob("*.md"))


def blocks(path: Path) -> Iterator[Block]:
    """The fenced blocks of one Markdown file, dedented, with their line numbers."""
    text = "\n" + path.read_text(encoding="utf-8")
    for found in FENCE.finditer(text):
        indent = found["indent"]
        body = "\n".join(line[len(indent):] if line.startswith(indent) else line.lstrip()
                         for line in found["body"].split("\n"))
        mark = ERROR_MARK.search(found["before"])
        line = text.count("\n", 0, found.start("indent"))
        yield Block(path, line, found["lang"].lower(), body, mark["text"] if mark else None)


def merge(base: dict, extra: dict) -> dict:
    """`extra`'s tables merged into `base`'s, key by key (extra wins)."""
    merged = dict(base)
    for key, value in extra.items():
        merged[key] = merge(merged[key], value) if isinstance(value, dict) and isinstance(merged.get(key), dict) else value
    return merged


def config_problems(fragment: str) -> list[str]:
    """The problems hookdeploy's parser finds in a deploy.toml fragment made whole; [] if it loads."""
    try:
        raw = tomllib.loads(fragment)
    except tomllib.TOMLDecodeError as error:
        return [f"not valid TOML: {error}"]
    document: dict[str, Any] = merge({"server": {"state_dir": "/var/lib/hookdeploy"}}, raw)
    for table in document.get("apps", {}).values():
        if isinstance(table, dict) and "repo" not in table and "image" not in table:
            table["repo"] = "/srv/git/site.git"
    try:
        parse(document, Path("/etc/hookdeploy/deploy.toml"))
    except ConfigError as error:
        return [problem for problem in error.problems if not MISSING_FILE.search(problem)]
    return []


def check_toml(block: Block) -> list[str]:
    """What is wrong with a toml block: problems it should not have, or the error it shows missing."""
    problems = config_problems(block.body)
    if block.error is None:
        return [f"{block.where}: toml block: {problem}" for problem in problems]
    if not any(block.error in problem for problem in problems):
        found = "; ".join(problems) or "it loads"
        return [f"{block.where}: toml block should fail with {block.error!r}, but: {found}"]
    return []


def hookdeploy_commands(line: str) -> Iterator[list[str]]:
    """The argument lists of each `hookdeploy ...` run on one shell line (wrappers like runuser and
    $(...) understood; a word `hookdeploy` as an argument, e.g. a user name, is not a command)."""
    lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    lexer.commenters = "#"
    try:
        words = list(lexer)
    except ValueError:  # an unclosed quote: not a line of shell
        return
    words = ["$(" if word.endswith("$") and index + 1 < len(words) and words[index + 1] == "(" else word
             for index, word in enumerate(words)]
    start = True
    index = 0
    while index < len(words):
        word = words[index]
        if word in OPERATORS or word.endswith("$("):
            start = True
        elif start and re.match(r"[A-Za-z_][A-Za-z0-9_]*=", word):
            pass  # VAR=value before a command
        elif start and word in WRAPPERS:
            index += 1
            while index < len(words) and words[index].startswith("-"):
                if words[index] == "--":
                    break
                index += 2 if words[index] in WRAPPERS[word] else 1
            if index < len(words) and words[index] == "--":
                pass
            else:
                index -= 1
        elif start:
            start = False
            if word == "hookdeploy" or word.endswith("/hookdeploy"):
                end = index + 1
                while end < len(words) and words[end] not in OPERATORS:
                    end += 1
                yield words[index + 1:end]
        index += 1


def shell_lines(body: str) -> Iterator[tuple[int, str]]:
    """A shell block's command lines (continuations joined, `$ ` prompts dropped; a console block's
    output lines, which have no prompt, left out)."""
    pending, first = "", 0
    for number, line in enumerate(body.split("\n")):
        if not pending:
            first = number
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        yield first, pending + line
        pending = ""


def cli_problem(args: list[str]) -> str | None:
    """Why click would refuse `hookdeploy ARGS` (unknown command or option, a bad value), or None."""
    try:
        with contextlib.redirect_stdout(io.StringIO()):  # --version and --help print as they parse
            context = cli.make_context("hookdeploy", list(args))  # parses only: no command runs
            command: click.Command = cli
            while isinstance(command, click.Group):
                with warnings.catch_warnings():  # click 8.2 deprecates protected_args; 9.0 puts them in args
                    warnings.simplefilter("ignore", DeprecationWarning)
                    rest = [*getattr(context, "protected_args", ()), *context.args]
                if not rest:
                    return None
                name, sub, rest = command.resolve_command(context, rest)
                context = sub.make_context(name, rest, parent=context)
                command = sub
    except click.exceptions.Exit:
        return None  # --help or --version
    except click.ClickException as error:
        return error.format_message()
    return None


def check_shell(block: Block) -> list[str]:
    """Every `hookdeploy ...` command of a shell block parses with the click app."""
    problems = []
    console = block.lang == "console"
    for number, line in shell_lines(block.body):
        if console:
            if not line.lstrip().startswith(("$ ", "# ")):
                continue
            line = line.lstrip()[2:]
        for args in hookdeploy_commands(line):
            if problem := cli_problem(args):
                shown = shlex.join(["hookdeploy", *args])
                problems.append(f"{block.path}:{block.line + 1 + number}: `{shown}`: {problem}")
    return problems


def readme_links(root: Path) -> list[str]:
    """README.md's links into the checkout (the handbook's pages, files) that lead nowhere; mkdocs
    checks the handbook's own links, the README is rendered on its own (by a forge, by PyPI)."""
    readme = root / "README.md"
    if not readme.exists():
        return []
    problems = []
    for number, line in enumerate(readme.read_text(encoding="utf-8").split("\n"), 1):
        for target in re.findall(r"\]\(([^)\s]+)\)", line):
            if re.match(r"[a-z]+:|#", target):
                continue  # a URL, or an anchor of the README itself
            if not (root / target.split("#")[0]).exists():
                problems.append(f"{readme}:{number}: link to {target}: no such file")
    return problems


def check(root: Path = ROOT) -> list[str]:
    """Every problem of the examples in README.md and docs/ under `root`, and of README's links."""
    problems = readme_links(root)
    for path in markdown_files(root):
        for block in blocks(path):
            if block.lang == "toml":
                problems += check_toml(block)
            elif block.lang in SHELLS:
                problems += check_shell(block)
    return problems


def main() -> None:
    root = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT
    problems = check(root)
    for problem in problems:
        print(problem, file=sys.stderr)
    sys.exit(1 if problems else 0)


if __name__ == "__main__":
    main()
