"""The deploy.toml reference, made from hookdeploy/core/config_schema.py: each table's dataclass,
each key's type and default from its field, and its meaning from the comment beside the field
(a trailing `# meaning`, else the comment lines just above it). `undocumented()` names any key
without one, which the suite refuses."""

from __future__ import annotations

import ast
import dataclasses
import io
import re
import tokenize
from pathlib import Path
from types import MappingProxyType
from typing import Any, Iterator

from hookdeploy.core import config_schema

SOURCE = Path(config_schema.__file__)
# Fields that are not keys of the file: the config's own path, and an app's name (its table's name).
NOT_KEYS = {("Config", "path"), ("AppConfig", "name")}
# Defaults the dataclass cannot say: the parser requires these (or one of them).
SHOWN_DEFAULT = {"server.state_dir": "required", "apps.NAME.repo": "repo or image required",
                 "apps.NAME.image": "repo or image required", "apps.NAME.tasks.name": "required",
                 "apps.NAME.tasks.schedule": "required", "apps.NAME.tasks.command": "required"}
SCALARS = {"str": "string", "int": "integer", "float": "number", "bool": "boolean", "Any": "any"}


@dataclasses.dataclass(frozen=True)
class Key:
    """One key of deploy.toml as the reference shows it."""

    table: str  # dotted path of its table, e.g. apps.NAME.health
    name: str
    type: str
    default: str
    meaning: str


@dataclasses.dataclass(frozen=True)
class Table:
    """One table (or array of tables) and its keys."""

    path: str
    array: bool
    about: str
    keys: tuple[Key, ...]

    @property
    def header(self) -> str:
        return f"[[{self.path}]]" if self.array else f"[{self.path}]"

    @property
    def anchor(self) -> str:
        return self.path.replace(".NAME", "").replace(".", "-").replace("_", "-")


def field_comments(source: str) -> dict[tuple[str, str], str]:
    """(class, field) → the comment beside the field: trailing, else the comment lines just above."""
    comments: dict[int, str] = {}
    code_lines: set[int] = set()
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type == tokenize.COMMENT:
            comments[token.start[0]] = token.string.lstrip("#").strip()
        elif token.type not in (tokenize.NL, tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT, tokenize.ENCODING):
            code_lines.add(token.start[0])
    found = {}
    for node in ast.parse(source).body:
        if not isinstance(node, ast.ClassDef):
            continue
        for statement in node.body:
            if not (isinstance(statement, ast.AnnAssign) and isinstance(statement.target, ast.Name)):
                continue
            trailing = [comments[line] for line in range(statement.lineno, statement.end_lineno + 1) if line in comments]
            above, line = [], statement.lineno - 1
            while line in comments and line not in code_lines:
                above.insert(0, comments[line])
                line -= 1
            found[(node.name, statement.target.id)] = " ".join(trailing or above)
    return found


def dataclass_named(name: str) -> type | None:
    candidate = getattr(config_schema, name.strip(), None)
    return candidate if dataclasses.is_dataclass(candidate) else None


def shown_type(annotation: str) -> str:
    """A field's annotation in TOML's words: `tuple[str, ...]` → array of strings."""
    parts = [part.strip() for part in re.split(r"\|(?![^\[]*\])", annotation) if part.strip() != "None"]
    if len(parts) > 1:
        return " or ".join(shown_type(part) for part in parts)
    text = parts[0]
    if text in SCALARS:
        return SCALARS[text]
    if dataclass_named(text) is not None:
        return "table"
    if found := re.fullmatch(r"tuple\[(\w+), \.\.\.\]", text):
        inner = found[1]
        if dataclass_named(inner) is not None and inner != "Mount":
            return "array of tables"
        return "array of strings" if inner in ("str", "Mount") else f"array of {shown_type(inner)}s"
    if found := re.fullmatch(r"Mapping\[str, (\w+)\]", text):
        inner = found[1]
        if dataclass_named(inner) is not None:
            return "table of tables"
        return "table" if inner == "Any" else f"table of {shown_type(inner)}s"
    return text


def toml_value(value: Any) -> str:
    """A default as it would be written in deploy.toml."""
    if value is None:
        return "unset"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return '""' if not value else '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, (tuple, list)):
        return "[" + ", ".join(toml_value(item) for item in value) + "]"
    if isinstance(value, (dict, MappingProxyType)):
        return "{}" if not value else "{" + ", ".join(f"{key} = {toml_value(item)}" for key, item in value.items()) + "}"
    return repr(value)


def default_of(field: dataclasses.Field) -> Any:
    if field.default is not dataclasses.MISSING:
        return field.default
    if field.default_factory is not dataclasses.MISSING:
        return field.default_factory()
    return dataclasses.MISSING


def tables(cls: type = config_schema.Config, path: str = "", array: bool = False,
           comments: dict | None = None) -> Iterator[Table]:
    """Every table reachable from `cls`, depth first in the schema's order, with its keys."""
    comments = field_comments(SOURCE.read_text(encoding="utf-8")) if comments is None else comments
    keys, nested = [], []
    for field in dataclasses.fields(cls):
        if (cls.__name__, field.name) in NOT_KEYS:
            continue
        annotation = str(field.type)
        child = f"{path}.{field.name}" if path else field.name
        meaning = comments.get((cls.__name__, field.name), "")
        plain = [part.strip() for part in annotation.split("|") if part.strip() != "None"]
        if len(plain) == 1 and (inner := dataclass_named(plain[0])) is not None:
            nested.append((inner, child, False))  # a table of its own: [server], [apps.NAME.health]
            continue
        if found := re.fullmatch(r"tuple\[(\w+), \.\.\.\]", annotation):
            if (inner := dataclass_named(found[1])) is not None and found[1] != "Mount":
                nested.append((inner, child, True))  # [[notify]], [[apps.NAME.tasks]]
                continue
        if found := re.fullmatch(r"Mapping\[str, (\w+)\]", annotation):
            if (inner := dataclass_named(found[1])) is not None:
                if not path:  # [apps.NAME]: a table per name
                    nested.append((inner, f"{child}.NAME", False))
                    continue
                nested.append((inner, f"{child}.NAME", False))  # build_secrets.NAME = {from_file, ...}
        for part in plain:
            if (inner := dataclass_named(part)) is not None and part != "Mount":
                nested.append((inner, child, False))  # tls = { cert_file, key_file }: the table form
        default = SHOWN_DEFAULT.get(child.replace(".NAME", ".NAME", 1))
        if default is None:
            value = default_of(field)
            default = "required" if value is dataclasses.MISSING else toml_value(value)
        keys.append(Key(path, field.name, shown_type(annotation), default, meaning))
    if path:
        doc = (cls.__doc__ or "").strip().split("\n\n")[0]
        doc = re.sub(r'\s*\(DESIGN "[^"]*"\)', "", " ".join(doc.split()))  # the contract's sections are not the reader's
        yield Table(path, array, doc, tuple(keys))
    for inner, child, is_array in nested:
        yield from tables(inner, child, is_array, comments)


def undocumented(source: str | None = None) -> list[str]:
    """Keys whose field has no comment beside it (in `source`, default config_schema.py as it is)."""
    comments = field_comments(source if source is not None else SOURCE.read_text(encoding="utf-8"))
    return [f"{table.path}.{key.name}" for table in tables(comments=comments) for key in table.keys if not key.meaning]


def cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def markdown() -> str:
    """The reference's body: a section per table, a row per key."""
    out = []
    for table in tables():
        out.append(f"## `{table.header}` {{ #{table.anchor} }}\n")
        if table.about:
            out.append(table.about + "\n")
        if not table.keys:
            continue
        out.append("| key | type | default | meaning |\n| --- | --- | --- | --- |")
        for key in table.keys:
            out.append(f"| `{key.name}` | {cell(key.type)} | `{cell(key.default)}` | {cell(key.meaning)} |")
        out.append("")
    return "\n".join(out) + "\n"
