"""How the dashboard shows things: times and durations for people (the `when` and `seconds`
template filters, which dashboard.py registers) and commit subjects, read from a repo already at
hand and cached.

Reading a subject never clones or fetches: a repo that is not at hand or cannot be opened, or a
commit it lacks, gives ''. Subjects are cached per process (commits never change); a miss is not.
"""

from __future__ import annotations

from datetime import datetime, timezone

from hookdeploy.core.config import AppConfig, Config
from hookdeploy.core.errors import GitError
from hookdeploy.core.models import Job, parse_time
from hookdeploy.web.http import services

SUBJECTS_KEPT = 1024
_SUBJECTS: dict[tuple, str] = {}


# -- times and durations --------------------------------------------------------------------------


def duration(job: Job) -> float | None:
    """Seconds the job ran (so far, while it runs); None before it starts."""
    if not job.started_at:
        return None
    end = parse_time(job.finished_at) if job.finished_at else datetime.now(timezone.utc)
    return max(0.0, (end - parse_time(job.started_at)).total_seconds())


def format_when(text: str | None) -> str:
    """An ISO time as `2026-11-28 03:04:05 UTC` (the `when` filter)."""
    if not text:
        return "—"
    try:
        return parse_time(text).strftime("%Y-%m-%d %H:%M:%S UTC")
    except ValueError:
        return text


def format_seconds(value: float | None) -> str:
    """A duration for people: `0.4 s`, `12 s`, `3 min 05 s` (the `seconds` filter)."""
    if value is None:
        return "—"
    if value < 10:
        return f"{value:.1f} s"
    if value < 60:
        return f"{value:.0f} s"
    return f"{int(value // 60)} min {int(value % 60):02d} s"


def format_step_seconds(value: float) -> str:
    """A step's duration, finer than `seconds` under a minute: `0.01 s`, `12.3 s`, `3 min 05 s`."""
    if 0 < value < 0.01:
        return "< 0.01 s"
    if value < 1:
        return f"{value:.2f} s"
    if value < 60:
        return f"{value:.1f} s"
    return format_seconds(value)


# -- commit subjects ------------------------------------------------------------------------------


def commit_subject(config: Config, app: AppConfig, sha: str) -> str:
    """The commit's first line when the repo is at hand (never cloned or fetched for this); else ''."""
    from hookdeploy.engine import gitops

    if not app.is_local_repo and not (gitops.mirror_path(app, config.server.state_dir) / "HEAD").exists():
        return ""
    return _subject(app.name, app.repo, str(config.server.state_dir), sha)


def _subject(app_name: str, repo: str, state_dir: str, sha: str) -> str:
    # Commits never change, so a subject once read is kept; a miss is not (the commit may arrive later).
    key = (app_name, repo, state_dir, sha)
    if key not in _SUBJECTS:
        subject = _read_subject(app_name, state_dir, sha)
        if not subject:
            return ""
        if len(_SUBJECTS) >= SUBJECTS_KEPT:
            _SUBJECTS.clear()
        _SUBJECTS[key] = subject
    return _SUBJECTS[key]


def _read_subject(app_name: str, state_dir: str, sha: str) -> str:
    from hookdeploy.engine import gitops

    app = services().config.apps[app_name]
    try:
        opened = gitops.open_repo(app, state_dir)
    except (GitError, OSError):
        return ""
    try:
        return gitops.commit_subject(opened, sha)
    finally:
        opened.close()  # gitpython keeps `git cat-file` processes per Repo otherwise
