"""Validation of names that come from outside: app names, refs, SHAs."""

import ipaddress
import re
import urllib.parse

from hookdeploy.core.errors import BadInput

APP_NAME = re.compile(r"[a-z0-9][a-z0-9-]{0,62}\Z")
TASK_NAME = re.compile(r"[a-z0-9-]{1,40}\Z")
INSTANCE_NAME = re.compile(r"[a-z0-9][a-z0-9_.-]{0,39}\Z")
FULL_SHA = re.compile(r"[0-9a-f]{40}\Z")
SHA_PREFIX = re.compile(r"[0-9a-f]{4,40}\Z")
ZERO_SHA = "0" * 40
PREVIEW_SEPARATOR = "."  # a preview's release set is APP.LABEL; neither an app name nor a label holds one
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


def preview_parts(name: str) -> tuple[str, str] | None:
    """(APP, LABEL) for a preview's release set name `APP.LABEL`; None for an app's own name."""
    app, dot, label = (name or "").partition(PREVIEW_SEPARATOR)
    return (app, label) if dot and APP_NAME.match(app) and APP_NAME.match(label) else None


def check_task_name(name: str) -> str:
    """Return `name` if it has the form of a task name, else raise BadInput."""
    if not TASK_NAME.match(name or ""):
        raise BadInput(f"task name {printable(name)}: must match [a-z0-9-]{{1,40}}")
    return name


def printable(text: str, limit: int = 80) -> str:
    """A quoted, escaped, bounded form of untrusted text, safe to print to a terminal or log."""
    shown = repr(str(text)[:limit])
    return shown + ("…" if len(str(text)) > limit else "")


def one_line(text: str) -> str:
    """`text` with every character a terminal could act on (newline, ESC, other controls) escaped as
    Python would write it: the last guard before untrusted text reaches a terminal or a log line."""
    return "".join(char if char.isprintable() else repr(char)[1:-1] for char in str(text))


def split_address(address: str) -> tuple[str, str]:
    """`HOST:PORT` (or `[V6]:PORT`) as (host without brackets, port text); not checked."""
    host, _, port = address.rpartition(":")
    return host.strip("[]"), port


# Docker's reference grammar (distribution/reference), the parts hookdeploy takes from outside; a host's
# labels are DNS labels (1-63 characters), which is all the idna codec and a resolver take.
REGISTRY_HOST = re.compile(r"(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*"
                           r"(?::[0-9]{1,5})?\Z")
_PATH_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
REPOSITORY = re.compile(rf"{_PATH_COMPONENT}(?:/{_PATH_COMPONENT})*\Z")
TAG = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}\Z")
DIGEST = re.compile(r"sha256:[0-9a-f]{64}\Z")


def split_image(image: str) -> tuple[str, str]:
    """`HOST[:PORT]/PATH` as (registry host, repository path); the first component is a host as Docker
    decides (it has a "." or a ":", or is localhost). BadInput for a tag, a digest, no host, or no path."""
    first, slash, rest = image.partition("/")
    has_host = bool(slash) and ("." in first or ":" in first or first == "localhost")
    path = rest if has_host else image
    if "@" in path:
        raise BadInput(f"image {printable(image)} has a digest: give REGISTRY[:PORT]/REPOSITORY only")
    if ":" in path:
        raise BadInput(f"image {printable(image)} has a tag: give REGISTRY[:PORT]/REPOSITORY only")
    if not has_host:
        raise BadInput(f"image {printable(image)} names no registry host (REGISTRY[:PORT]/REPOSITORY)")
    if not path:
        raise BadInput(f"image {printable(image)} has an empty repository path")
    if not REGISTRY_HOST.match(first):
        raise BadInput(f"image {printable(image)}: {printable(first)} is not a registry HOST[:PORT]")
    if host_problem := registry_host_problem(first):
        raise BadInput(f"image {printable(image)}: {host_problem}")
    if not REPOSITORY.match(path):
        raise BadInput(f"image {printable(image)}: the repository path must be lowercase components "
                       "(a-z, 0-9 and . _ -) joined by /")
    if len(image) > 255:
        raise BadInput(f"image {printable(image, 40)} is {len(image)} characters long, more than 255")
    return first, path


def registry_host_problem(text: str) -> str | None:
    """Why `text` is not a registry's HOST[:PORT] (DNS labels, at most 253 characters, a port 1-65535), or None."""
    if not REGISTRY_HOST.match(text):
        return "must be HOST[:PORT] (no scheme, no path)"
    host, _, port = text.partition(":")
    if len(host) > 253:
        return f"the registry's host name is {len(host)} characters long, more than 253"
    if port and not 1 <= int(port) <= 65535:
        return "the registry's port must be between 1 and 65535"
    return None


def reference_problem(reference: str) -> str | None:
    """Why `reference` is not an image reference Docker pulls (`[HOST[:PORT]/]PATH[:TAG][@sha256:DIGEST]`), or None."""
    name, at, digest = reference.partition("@")
    if at and not DIGEST.match(digest):
        return "its digest is not sha256: and 64 hexadecimal digits"
    tag_colon = name.rfind(":")
    if tag_colon > name.rfind("/"):
        name, tag = name[:tag_colon], name[tag_colon + 1:]
        if not TAG.match(tag):
            return f"{printable(tag, 40)} is not a valid tag"
    first, slash, rest = name.partition("/")
    if slash and ("." in first or ":" in first or first == "localhost"):
        if host_problem := registry_host_problem(first):
            return host_problem if REGISTRY_HOST.match(first) else f"{printable(first, 40)} is not a registry HOST[:PORT]"
        name = rest
    if not REPOSITORY.match(name) or len(reference) > 255:
        return "the repository must be lowercase components (a-z, 0-9 and . _ -) joined by /, 255 characters at most"
    return None


def image_problem(image: str) -> str | None:
    """Why `image` is not a registry repository hookdeploy can deploy from (no tag, no digest), or None."""
    try:
        split_image(image)
    except BadInput as error:
        return str(error)
    return None


def check_tag(tag: str) -> str:
    """`tag` if it is a valid image tag; BadInput otherwise."""
    if not TAG.match(tag):
        raise BadInput(f"{printable(tag)} is not a valid image tag")
    return tag


def check_digest(digest: str) -> str:
    """`digest` (sha256:<64 hex>) if well formed; BadInput otherwise."""
    if not DIGEST.match(digest):
        raise BadInput(f"{printable(digest)} is not an image digest (sha256: and 64 hexadecimal digits)")
    return digest


# A DNS name as a Host header or server.hostnames carries it (lower case, no final dot, no wildcard).
DNS_NAME = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*\Z")


def host_and_port(text: str) -> tuple[str | None, int | None]:
    """`name`, `name:port`, an IP address or `[v6]:port`, lower case without a final dot; (None, None) if not."""
    try:
        parts = urllib.parse.urlsplit(f"//{text}")
        host, port = parts.hostname, parts.port
    except ValueError:
        return None, None
    if not host or parts.netloc != text or text.endswith(":") or "@" in text or port == 0:
        return None, None
    host = host.rstrip(".")
    try:
        return str(ipaddress.ip_address(host)), port
    except ValueError:
        pass
    return (host, port) if DNS_NAME.match(host) and not host.startswith("*") else (None, None)
