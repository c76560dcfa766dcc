"""Whether a job's commit (or image) may still go live: an old one never replaces a newer one.

Forges do not promise delivery order, and a delivery retried late, or replayed under a new
delivery id (the id is not signed), arrives after newer ones. So a job that a push asked for
(post-receive hook or webhook, and their retries) deploys its commit only while that commit is
the head of the app's branch, looked at after the fetch. A webhook, besides, never puts back an
older commit: one that is an ancestor of the live release, or one that was live before and was
replaced (a rollback undone by a late delivery). An image app's registry notification deploys its
digest only while the tag points at it, and never a digest that was live before the one live now.

Replay, rollback and `deploy`, which a person asks for, are never checked: they may go back.
Each check returns why the job must not go live (its `superseded` reason), or None.
Imports hookdeploy.core and gitpython only; deploy.py asks it before anything is built or pulled.
"""

from __future__ import annotations

import git

from hookdeploy.core.config import AppConfig
from hookdeploy.core.models import Job, Release, Trigger, release_tag
from hookdeploy.core.store import Store

# The triggers whose jobs follow the branch (or tag); the others name their commit on purpose.
FOLLOWS_THE_BRANCH = (Trigger.PUSH, Trigger.WEBHOOK)


def origin(store: Store, job: Job) -> Trigger:
    """Who asked for the job in the first place: a retry's trigger is that of the job it retries."""
    seen = {job.id}
    while job.trigger is Trigger.RETRY and job.retry_of is not None and job.retry_of not in seen:
        earlier = store.job(job.retry_of)
        if earlier is None:
            break
        seen.add(earlier.id)
        job = earlier
    return job.trigger


def stale_commit(store: Store, app: AppConfig, job: Job, repo: git.Repo, trigger: Trigger) -> str | None:
    """Why a pushed commit must not go live now (not the branch head; from a webhook, older than live)."""
    sha = job.sha
    try:
        head = repo.git.rev_parse("--verify", "--quiet", f"refs/heads/{app.branch}^{{commit}}").strip()
    except git.GitCommandError:
        return f"branch {app.branch} does not exist any more"
    if head != sha:
        return f"not the head of {app.branch} any more (head is {release_tag(head)})"
    if trigger is not Trigger.WEBHOOK:
        return None
    live = store.live_release(app.name)
    if live is None or live.sha == sha:
        return None
    if _is_ancestor(repo, sha, live.sha):
        return (f"{release_tag(sha)} is older than the live release {release_tag(live.sha)} (its ancestor); "
                f"a webhook never deploys an older commit (hookdeploy replay {app.name} {release_tag(sha)} does)")
    return _was_live(store, app, sha, live, "commit")


def stale_image(store: Store, app: AppConfig, job: Job, tag: str, tag_digest: str) -> str | None:
    """Why a registry notification's digest must not go live now (the tag moved on; it was live before)."""
    if tag_digest != job.digest:
        return f"not the newest push of {app.image}:{tag} any more (the tag is {tag_digest[:19]})"
    live = store.live_release(app.name)
    if live is None or live.sha == job.sha:
        return None
    return _was_live(store, app, job.sha, live, "image")


def _was_live(store: Store, app: AppConfig, sha: str, live: Release, what: str) -> str | None:
    """A reason when `sha` was live before `live` (a release that was replaced), else None."""
    earlier = [release for release in store.releases(app.name) if release.sha == sha and release.id < live.id]
    if not earlier:
        return None
    return (f"{release_tag(sha)} was live before {release_tag(live.sha)} (job {earlier[0].job}); "
            f"a webhook never brings back an older {what} (hookdeploy replay {app.name} {release_tag(sha)} does)")


def _is_ancestor(repo: git.Repo, older: str, newer: str) -> bool:
    """True if `older` is an ancestor of `newer`; False also when the repo lacks either."""
    try:
        return repo.is_ancestor(older, newer)
    except (git.GitCommandError, ValueError):
        return False
