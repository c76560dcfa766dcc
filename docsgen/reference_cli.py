"""The CLI reference, made from the click app: every command (and token's subcommands) with its
usage, its help and each option's help, so no command or option can go undocumented."""

from __future__ import annotations

import inspect
from typing import Iterator

import click

from hookdeploy.cli.main import cli


def commands(group: click.Group = cli, parent: click.Context | None = None) -> Iterator[tuple[click.Command, click.Context]]:
    """Each command under `group` with a context for it, in the order they are defined."""
    context = parent or click.Context(group, info_name="hookdeploy")
    for name, command in group.commands.items():
        child = click.Context(command, info_name=name, parent=context)
        if isinstance(command, click.Group):
            yield from commands(command, child)
        else:
            yield command, child


def options_table(command: click.Command, context: click.Context) -> list[str]:
    rows = []
    for parameter in command.get_params(context):
        if not isinstance(parameter, click.Option) or "--help" in parameter.opts:
            continue  # arguments are in the usage line; --help is on every command
        record = parameter.get_help_record(context)
        if record is None:
            continue
        names, text = record
        rows.append(f"| `{names}` | {text.replace('|', chr(92) + '|')} |")
    return ["| option | meaning |", "| --- | --- |", *rows, ""] if rows else []


def anchor(context: click.Context) -> str:
    return context.command_path.removeprefix("hookdeploy ").replace(" ", "-")


def markdown() -> str:
    """The reference's body: the global options, then a section per command."""
    root = click.Context(cli, info_name="hookdeploy")
    out = ["## Global options { #global-options }", "", "```", cli.get_usage(root).removeprefix("Usage: "), "```", "",
           *options_table(cli, root), "Every command also takes `-h` or `--help`.", ""]
    for command, context in commands():
        out += [f"## `{context.command_path}` {{ #{anchor(context)} }}", "",
                "```", command.get_usage(context).removeprefix("Usage: "), "```", ""]
        if command.help:
            out += [inspect.cleandoc(command.help).replace("\b\n", ""), ""]
        out += options_table(command, context)
    return "\n".join(out) + "\n"


def undocumented() -> list[str]:
    """Commands without help and options without a help text."""
    missing = []
    for command, context in commands():
        if not (command.help or "").strip():
            missing.append(context.command_path)
        missing += [f"{context.command_path} {option.opts[0]}" for option in command.get_params(context)
                    if isinstance(option, click.Option) and "--help" not in option.opts and not (option.help or "").strip()]
    return missing
