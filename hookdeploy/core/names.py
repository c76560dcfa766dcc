"""Validation of names that come from outside: app names, refs, SHAs."""

import re

from hookdeploy.core.errors import BadInput

APP_NAME = re.compile(r"[a-z0-9][a-z0-9-]{0,62}\Z")
INSTANCE_NAME = re.compile(r"[a-z0-9][a-z0-9_.-]{0,39}\Z")
FULL_SHA = re.compile(r"[0-9a-f]{40}\Z")
SHA_PREFIX = re.compile(r"[0-9a-f]{4,40}\Z")
ZERO_SHA = "0" * 40
_REF_FORBIDDEN = re.compile(r"[\x00-\x20\x7f~^:?*\[\\]")


def ref_problem(name: str) -> str | None:
    """Why `name` is not a valid git ref name (git check-ref-format rules), or None."""
    if not name:
        return "is empty"
    if len(name) > 255:
        return "is longer than 255 characters"
    if _REF_FORBIDDEN.search(name):
        return "contains a space, control character or one of ~^:?*[\\"
    if ".." in name or "@{" in name or "//" in name:
        return "contains '..', '@{' or '//'"
    if name == "@" or name.startswith("/") or name.endswith(("/", ".")):
        return "starts with '/', ends with '/' or '.', or is '@'"
    for part in name.split("/"):
        if part.startswith(".") or part.endswith(".lock"):
            return "has a component starting with '.' or ending with '.lock'"
    return None


def branch_problem(name: str) -> str | None:
    """Why `name` is not a valid branch name (git check-ref-format --branch), or None."""
    if name.startswith("-") or name == "HEAD":
        return "starts with '-' or is 'HEAD'"
    return ref_problem("refs/heads/" + name)


def check_ref(name: str, what: str = "ref") -> str:
    """Return `name` if it is a valid git ref name, else raise BadInput naming the problem."""
    problem = ref_problem(name)
    if problem:
        raise BadInput(f"{what} {printable(name)}: {problem}")
    return name


def check_app_name(name: str) -> str:
    """Return `name` if it has the form of an app name, else raise BadInput."""
    if not APP_NAME.match(name or ""):
        raise BadInput(f"app name {printable(name)}: must match [a-z0-9][a-z0-9-]{{0,62}}")
    return name


def check_sha_prefix(text: str) -> str:
    """Return `text` lower-cased if it looks like a full or abbreviated SHA (4-40 hex)."""
    lowered = (text or "").strip().lower()
    if not SHA_PREFIX.match(lowered):
        raise BadInput(f"SHA {printable(text)}: must be 4 to 40 hexadecimal digits")
    return lowered


def is_full_sha(text: str) -> bool:
    """True for exactly 40 lower-case hex digits."""
    return bool(FULL_SHA.match(text or ""))


def printable(text: str, limit: int = 80) -> str:
    """A quoted, escaped, bounded form of untrusted text, safe to print to a terminal or log."""
    shown = repr(str(text)[:limit])
    return shown + ("…" if len(str(text)) > limit else "")


def split_address(address: str) -> tuple[str, str]:
    """`HOST:PORT` (or `[V6]:PORT`) as (host without brackets, port text); not checked."""
    host, _, port = address.rpartition(":")
    return host.strip("[]"), port
