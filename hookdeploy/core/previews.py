"""Previews of branches (DESIGN "Previews of branches"): which pushes deploy one, the DNS label a
branch goes by, the preview's release set as an app config, and the previews the store records.

A preview is a release set of its own, named `APP.LABEL` wherever the app's releases go by the app's
name: its jobs, releases, route file, containers (`N-APP.LABEL-SHA12-JOB`, labelled
`hookdeploy.preview=LABEL`) and images (`N/APP.LABEL:SHA12`). App names and labels never hold a
dot, so the name is unambiguous, and every rule that keeps one app's jobs and releases apart (one
running job, coalescing, the live release, the rollback target, pruning, history) keeps the
preview apart from its app. The engine side (removal, expiry) is engine/previews.py's.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import hashlib
import re
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Iterable

from hookdeploy.core.config_schema import AppConfig, Config
from hookdeploy.core.errors import BadInput
from hookdeploy.core.models import Job, Trigger, parse_time, utcnow
from hookdeploy.core.names import PREVIEW_SEPARATOR, ZERO_SHA, preview_parts, printable
from hookdeploy.core.store import Store

__all__ = ["PREVIEW_SEPARATOR", "preview_parts"]

PLACEHOLDER = "{branch}"
LABEL_LIMIT = 63  # a DNS label
SUFFIX_DIGITS = 6  # the hash suffix that tells two branches of one label apart
_NOT_LABEL = re.compile(r"[^a-z0-9]+")
_HOSTNAME = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*\Z")


def label_for(branch: str) -> str:
    """The branch as one DNS label: lower case, every run of other characters a dash, at most 63
    characters, no dash first or last (`Feature/Login_Page` -> `feature-login-page`)."""
    label = _NOT_LABEL.sub("-", branch.lower()).strip("-")[:LABEL_LIMIT].rstrip("-")
    return label or "branch"


def suffixed(label: str, branch: str) -> str:
    """`label` with a short hash of `branch` appended, for a branch whose label another branch holds."""
    digest = hashlib.sha256(branch.encode()).hexdigest()[:SUFFIX_DIGITS]
    return f"{label[:LABEL_LIMIT - SUFFIX_DIGITS - 1].rstrip('-')}-{digest}"


def release_set_name(app: str, label: str) -> str:
    """The name a preview's jobs, releases and Docker objects go by: `APP.LABEL`."""
    return f"{app}{PREVIEW_SEPARATOR}{label}"


def hostname(app: AppConfig, label: str) -> str:
    """The preview's hostname: previews.hostname with {branch} replaced by the label."""
    return app.previews.hostname.replace(PLACEHOLDER, label)


def url(config: Config, app: AppConfig, label: str) -> str:
    """Where the preview answers: http(s)://HOSTNAME[:PORT]/ through the front proxy."""
    tls = app.tls_mode != "off" and config.proxy.publish_tls
    port = (config.proxy.publish_tls if tls else config.proxy.publish).rpartition(":")[2]
    scheme = "https" if tls else "http"
    shown_port = "" if port == ("443" if tls else "80") else f":{port}"
    return f"{scheme}://{hostname(app, label)}{shown_port}/"


def branch_of(ref: str | None) -> str | None:
    """`refs/heads/X` -> X; None for any other ref."""
    return ref[len("refs/heads/"):] if ref and ref.startswith("refs/heads/") else None


def wanted(app: AppConfig, ref: str | None) -> str | None:
    """The branch a push of `ref` deploys a preview of (it matches previews.branches and is not the
    app's own branch), or None."""
    branch = branch_of(ref)
    if app.previews is None or branch is None or branch == app.branch:
        return None
    return branch if any(fnmatch.fnmatchcase(branch, pattern) for pattern in app.previews.branches) else None


def previews_problems(found: dict, app_hostnames: Iterable[str]) -> list[str]:
    """What is wrong with a parsed [apps.X.previews] table, each as `KEY: problem` (config_parse adds the table)."""
    problems = []
    patterns = found.get("branches", ())
    if not patterns:
        problems.append("branches: give at least one branch pattern, like \"feature/*\"")
    for pattern in patterns:
        if not isinstance(pattern, str) or not pattern or pattern.count("[") != pattern.count("]") \
                or any(ord(char) < 33 or char in "~^:\\" for char in pattern):
            problems.append(f"branches: {printable(pattern)} is not a branch pattern (fnmatch: * ? [...] "
                            "over a branch name)")
    host = found.get("hostname", "")
    if host.count(PLACEHOLDER) != 1:
        problems.append(f"hostname: {printable(host)} must hold {PLACEHOLDER} once, like \"{PLACEHOLDER}.preview.example.com\"")
    else:
        before, _, after = host.partition(PLACEHOLDER)
        filled = host.replace(PLACEHOLDER, "a" * LABEL_LIMIT).lower()
        whole_label = before[-1:] in ("", ".") and after[:1] in ("", ".")
        if not whole_label or not _HOSTNAME.match(filled) or len(filled) > 253:
            problems.append(f"hostname: {printable(host)} is not a hostname with {PLACEHOLDER} as one whole "
                            f"DNS label of it (63 characters for {PLACEHOLDER}, 253 in all)")
        elif host.lower() in {name.lower() for name in app_hostnames}:
            problems.append("hostname: must differ from the app's hostnames")
    if found.get("max", 5) < 1:
        problems.append("max: must be at least 1")
    if found.get("ttl_hours", 1.0) <= 0:
        problems.append("ttl_hours: must be greater than 0")
    return problems


def release_sets(config: Config, store: Store) -> list[AppConfig]:
    """The apps of the config, then the release set of each of their previews the store records."""
    found = [config.app(preview.name) for preview in Previews(store).of()
             if preview.app in config.apps and config.apps[preview.app].previews is not None]
    return [*config.apps.values(), *found]


def for_job(app: AppConfig, ref: str | None) -> AppConfig:
    """`app` for a job of it: a preview's release set follows the job's branch (the order check asks
    whether the commit is still its head)."""
    branch = branch_of(ref)
    if preview_parts(app.name) is None or branch is None:
        return app
    return dataclasses.replace(app, branch=branch)


class PreviewRefused(BadInput):
    """The app has `max` previews already."""


@dataclass(frozen=True)
class Preview:
    """One preview the store records: its app, label, branch and the times it was made and last pushed."""

    app: str
    label: str
    branch: str
    created_at: str
    pushed_at: str
    remove_requested_at: str | None = None

    @property
    def name(self) -> str:
        """Its release set's name, `APP.LABEL`."""
        return release_set_name(self.app, self.label)

    def age_hours(self, now: str | None = None) -> float:
        """Hours since its last push."""
        return (parse_time(now or utcnow()) - parse_time(self.pushed_at)).total_seconds() / 3600


class Previews:
    """The previews of the store (table `previews`): labels claimed once per branch, `max` kept."""

    def __init__(self, store: Store):
        self.store = store

    def claim(self, app: AppConfig, branch: str, now: str | None = None) -> Preview:
        """The branch's preview, its last push now: the one recorded, or a new one with a label no
        other branch of the app holds; PreviewRefused (nothing written) past previews.max."""
        now = now or utcnow()
        with self.store.transaction() as db:
            row = db.execute("SELECT * FROM previews WHERE app = ? AND branch = ?", (app.name, branch)).fetchone()
            if row is not None:
                db.execute("UPDATE previews SET pushed_at = ?, remove_requested_at = NULL WHERE app = ? AND branch = ?",
                           (now, app.name, branch))
                return Preview(**{**dict(row), "pushed_at": now, "remove_requested_at": None})
            others = [Preview(**dict(found)) for found in
                      db.execute("SELECT * FROM previews WHERE app = ? ORDER BY created_at", (app.name,))]
            if len(others) >= app.previews.max:
                names = ", ".join(f"{other.branch} ({other.label})" for other in others)
                raise PreviewRefused(f"{app.name} has {len(others)} previews, its max: remove one first "
                                     f"(hookdeploy preview-remove {app.name} BRANCH): {names}")
            label = label_for(branch)
            if any(other.label == label for other in others):
                label = suffixed(label, branch)
            db.execute("INSERT INTO previews (app, label, branch, created_at, pushed_at) VALUES (?, ?, ?, ?, ?)",
                       (app.name, label, branch, now, now))
            return Preview(app.name, label, branch, now, now)

    def find(self, app: str, branch: str) -> Preview | None:
        """The branch's preview, or None."""
        rows = self.store.query("SELECT * FROM previews WHERE app = ? AND branch = ?", (app, branch))
        return Preview(**dict(rows[0])) if rows else None

    def of(self, app: str | None = None) -> list[Preview]:
        """The previews of one app (or of all), oldest first."""
        where, params = ("WHERE app = ? ", (app,)) if app is not None else ("", ())
        return [Preview(**dict(row)) for row in
                self.store.query(f"SELECT * FROM previews {where}ORDER BY app, created_at", params)]

    def request_removal(self, app: str, branch: str, now: str | None = None) -> Preview | None:
        """Mark the branch's preview for the worker to remove (a push deleted the branch); None if it has none."""
        with self.store.transaction() as db:
            db.execute("UPDATE previews SET remove_requested_at = ? WHERE app = ? AND branch = ?",
                       (now or utcnow(), app, branch))
        return self.find(app, branch)

    def forget(self, app: str, label: str) -> None:
        """Drop the record of a removed preview (its jobs and releases stay, as history)."""
        with self.store.transaction() as db:
            db.execute("DELETE FROM previews WHERE app = ? AND label = ?", (app, label))

    def due(self, config: Config, now: str) -> list[tuple[Preview, str]]:
        """The previews to remove now, each with why: removal asked for, no push for ttl_hours, or the
        app's previews gone from deploy.toml."""
        found = []
        for preview in self.of():
            app = config.apps.get(preview.app)
            if preview.remove_requested_at is not None:
                found.append((preview, f"branch {preview.branch} was deleted"))
            elif app is not None and app.previews is None:
                found.append((preview, f"apps.{preview.app}.previews is gone from deploy.toml"))
            elif app is not None and parse_time(now) - parse_time(preview.pushed_at) \
                    > timedelta(hours=app.previews.ttl_hours):
                found.append((preview, f"no push for {app.previews.ttl_hours:g} hours (ttl_hours)"))
        return found


def find(store: Store, app: AppConfig, branch_or_label: str) -> Preview:
    """The app's preview of a branch (or by its label); BadInput naming the previews there are."""
    recorded = Previews(store).of(app.name)
    for preview in recorded:
        if branch_or_label in (preview.branch, preview.label):
            return preview
    known = ", ".join(f"{preview.branch} ({preview.label})" for preview in recorded) or "none"
    raise BadInput(f"{app.name} has no preview of {printable(branch_or_label)} (its previews: {known})")


def ask_removal(store: Store, app: AppConfig, branch_or_label: str) -> Preview:
    """Mark the preview for the worker to remove (the API's and dashboard's way: they never talk to Docker)."""
    return Previews(store).request_removal(app.name, find(store, app, branch_or_label).branch)


def age_text(hours: float) -> str:
    """An age for people: "40 min", "5 h", "3 days"."""
    if hours < 1:
        return f"{round(hours * 60)} min"
    return f"{hours:.0f} h" if hours < 48 else f"{hours / 24:.0f} days"


def describe(preview: Preview, config: Config, store: Store, now: str | None = None) -> dict[str, Any]:
    """A preview as `previews APP --json` and the API show it; `status --json` shows url, sha and since."""
    app = config.apps.get(preview.app)
    live = store.live_release(preview.name)
    return {"label": preview.label, "branch": preview.branch,
            "url": url(config, app, preview.label) if app is not None and app.previews is not None else None,
            "sha": live.sha if live else None, "since": live.live_since if live else None,
            "pushed_at": preview.pushed_at, "age_hours": round(preview.age_hours(now), 2),
            "removing": preview.remove_requested_at is not None}


def on_push(store: Store, app: AppConfig, ref: str, new_sha: str,
            trigger: Trigger = Trigger.PUSH) -> tuple[Job | None, str] | None:
    """A push of `ref` to `new_sha` as previews see it: None when `ref` is no preview branch of the
    app; else (the preview's queued job, what to tell the pusher), or for a deletion (None, what is
    done: the worker removes the preview). PreviewRefused past previews.max, nothing written."""
    branch = wanted(app, ref)
    if branch is None:
        return None
    if new_sha == ZERO_SHA:
        return None, deleted(store, app, branch)
    preview = Previews(store).claim(app, branch)
    job = store.enqueue(preview.name, new_sha, trigger=trigger, ref=ref, coalesce=app.coalesce)
    return job, f"preview {preview.label} of {branch}: {hostname(app, preview.label)}"


def deleted(store: Store, app: AppConfig, branch: str) -> str:
    """A preview branch was deleted: its preview is marked for the worker to remove; says so."""
    found = Previews(store).request_removal(app.name, branch)
    return (f"deletion of refs/heads/{branch}: the worker removes its preview {found.label}" if found else
            f"deletion of refs/heads/{branch}: it has no preview")
