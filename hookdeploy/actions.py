"""What a person can ask of hookdeploy, whichever door they come through.

The CLI, the post-receive hook, the API and the dashboard all call these; none of them resolves
refs, picks rollback targets or queues jobs itself, so the rules live here once. No click and
no Flask: a refusal is a HookdeployError (BadInput, UnknownApp, UnknownJob, GitError,
StoreError) that each door turns into its own answer (exit status, HTTP status, error page),
and a refused request has queued nothing.

git is imported only by the calls that resolve a ref or a SHA, so the post-receive hook, which
queues pushes and follows a job, stays light.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from datetime import datetime, timezone

from hookdeploy.core import previews
from hookdeploy.core.config import AppConfig, Config, TaskConfig
from hookdeploy.core.errors import BadInput, UnknownJob
from hookdeploy.core.models import Event, Job, JobKind, JobState, Release, Trigger, release_tag
from hookdeploy.core.names import (ZERO_SHA, check_app_name, check_digest, check_ref, check_sha_prefix, check_tag,
                                   check_task_name, printable, ref_problem)
from hookdeploy.core.store import Store
from hookdeploy.core.taskruns import TaskRun


def find_app(config: Config, name: str) -> AppConfig:
    """The app named `name`: BadInput for a malformed name, UnknownApp for one not in deploy.toml."""
    check_app_name(name)
    return config.app(name)


# -- queueing ------------------------------------------------------------------------------------


def deploy_ref(config: Config, store: Store, app: AppConfig, ref: str | None = None) -> Job:
    """Queue a manual deploy of the commit `ref` points at now.

    No ref (None) means the app's branch. A ref given but empty is bad input, never the branch:
    `--ref "$TAG"` with an unset TAG must not deploy whatever the branch holds. For an image app,
    no ref means its webhook's tag (default `latest`), as deploy_image.
    """
    from hookdeploy.engine import gitops

    if not app.builds:
        if ref is not None:
            raise BadInput(f"{app.name} deploys images (apps.{app.name}.image), not git refs; use --image TAG|@DIGEST")
        return deploy_image(config, store, app, app.webhook.tag if app.webhook else "latest")
    if ref is None:
        ref = app.branch
    elif not ref.strip():
        raise BadInput(f"the ref is empty; leave it out to deploy {app.name}'s branch ({app.branch})")
    check_ref(ref, "ref")  # before any fetch: a malformed ref is the first thing to say
    repo = gitops.open_repo(app, config.server.state_dir, fetch=True)
    branch_ref = ref if ref.startswith("refs/heads/") else f"refs/heads/{ref}"
    if previews.wanted(app, branch_ref) is not None:  # a preview branch: its preview, never the app's release
        queued = previews.on_push(store, app, branch_ref, gitops.resolve_ref(repo, branch_ref, app.name), Trigger.MANUAL)
        return queued[0]
    sha = gitops.resolve_ref(repo, ref, app.name)
    return store.enqueue(app.name, sha, trigger=Trigger.MANUAL, ref=ref, coalesce=app.coalesce)


def deploy_image(config: Config, store: Store, app: AppConfig, image: str) -> Job:
    """Queue a deploy of an image app's `TAG` (its digest now, asked of the registry) or `@sha256:DIGEST`.

    The job is pinned to the digest: a later push of the same tag changes nothing about it. Its
    SHA, which names its containers and which rollback and replay take, is the digest's first 40
    hexadecimal digits."""
    if app.builds:
        raise BadInput(f"{app.name} is built from git (apps.{app.name}.repo); --image is for image apps")
    if not image.strip():
        raise BadInput(f"the image is empty; give TAG or @sha256:DIGEST of {app.image}")
    if image.startswith("@"):
        digest, tag = check_digest(image[1:]), None
    else:
        from hookdeploy.engine import containers, registry

        tag = check_tag(image)
        client = containers.engine()
        try:
            digest = registry.resolve_tag(client, config, app, tag)
        finally:
            client.close()  # `serve` asks once a request: no connection left behind
    return store.enqueue(app.name, digest_sha(digest), trigger=Trigger.MANUAL, ref=tag, coalesce=app.coalesce,
                         digest=digest)


def digest_sha(digest: str) -> str:
    """The SHA an image app's release goes by: the first 40 hexadecimal digits of its digest."""
    return check_digest(digest).removeprefix("sha256:")[:40]


def replay_sha(config: Config, store: Store, app: AppConfig, sha_text: str) -> Job:
    """Queue a deploy of the one commit whose SHA starts with `sha_text` (full or abbreviated); for
    an image app, of the one image deployed before whose digest starts so."""
    from hookdeploy.engine import gitops

    sha_text = check_sha_prefix(sha_text)
    if not app.builds:
        digests = store.digests(app.name, sha_text)
        if len(digests) != 1:
            raise BadInput(f"{sha_text} {'is ambiguous among' if digests else 'matches none of'} the images "
                           f"{app.name} deployed; to deploy another use: hookdeploy deploy {app.name} --image @DIGEST")
        return store.enqueue(app.name, digest_sha(digests[0]), trigger=Trigger.REPLAY, coalesce=app.coalesce,
                             digest=digests[0])
    repo = gitops.open_repo(app, config.server.state_dir, fetch=True)
    sha = gitops.resolve_sha(repo, sha_text, app.name)
    return store.enqueue(app.name, sha, trigger=Trigger.REPLAY, coalesce=app.coalesce)


def rollback(store: Store, app: AppConfig, to_sha: str | None = None) -> Job:
    """Queue a switch back to the previous live release, or to the release `to_sha` names."""
    sha = rollback_target(store, app.name, to_sha)
    return store.enqueue(app.name, sha, kind=JobKind.ROLLBACK, trigger=Trigger.ROLLBACK, coalesce=app.coalesce)


def stop_app(store: Store, app: AppConfig) -> Job:
    """Queue a stop of the app's live release (DESIGN "Operating apps"): BadInput when nothing is live or it is
    stopped already, or a stop is queued."""
    live = store.live_release(app.name)
    if live is None:
        raise BadInput(f"{app.name} has no live release to stop")
    if store.stopped(app.name) is not None:
        raise BadInput(f"{app.name} is stopped already (since job {store.stopped_by(app.name)}); "
                       f"start it with: hookdeploy start {app.name}")
    _refuse_queued(store, app.name, JobKind.STOP)
    return store.enqueue(app.name, live.sha, kind=JobKind.STOP, trigger=Trigger.MANUAL, coalesce=False)


def start_app(store: Store, app: AppConfig) -> Job:
    """Queue a start of the app's stopped live release: BadInput when nothing is live or it is not stopped."""
    live = store.live_release(app.name)
    if live is None:
        raise BadInput(f"{app.name} has no live release to start")
    queued_stop = any(job.kind is JobKind.STOP for job in store.jobs(app.name, states=(JobState.QUEUED,
                                                                                       JobState.RUNNING)))
    if store.stopped(app.name) is None and not queued_stop:
        raise BadInput(f"{app.name} is not stopped ({release_tag(live.sha)} serves)")
    _refuse_queued(store, app.name, JobKind.START)
    return store.enqueue(app.name, live.sha, kind=JobKind.START, trigger=Trigger.MANUAL, coalesce=False)


def _refuse_queued(store: Store, app: str, kind: JobKind) -> None:
    queued = [job for job in store.jobs(app, states=(JobState.QUEUED,)) if job.kind is kind]
    if queued:
        raise BadInput(f"a {kind.value} of {app} is queued already (job {queued[0].id})")


def stopped_note(store: Store, app: AppConfig) -> str | None:
    """What a push to a stopped app is told: that it deploys and starts the app; None if not stopped."""
    if store.stopped(app.name) is None:
        return None
    return f"{app.name} is stopped (maintenance page): this push deploys and starts it"


def rollback_target(store: Store, app: str, to_sha: str | None) -> str:
    """The SHA a rollback goes to: the newest earlier release, or the one release `to_sha` names."""
    if to_sha is None:
        sha = earlier_release(store, app)
        if sha is None:
            raise BadInput(f"{app} has no earlier release to roll back to")
        return sha
    prefix = check_sha_prefix(to_sha)
    matches = sorted({release.sha for release in store.releases(app) if release.sha.startswith(prefix)})
    if not matches:
        raise BadInput(f"{prefix} was never a release of {app}; to deploy another commit use: hookdeploy replay {app} {prefix}")
    if len(matches) > 1:
        raise BadInput(f"SHA {prefix} is ambiguous among {app}'s releases; give more digits")
    live = store.live_release(app)
    if live is not None and matches[0] == live.sha:
        raise BadInput(f"{release_tag(matches[0])} is already live for {app}")
    return matches[0]


def earlier_release(store: Store, app: str) -> str | None:
    """The SHA of the release a rollback goes back to (Store.rollback_target), or None when there is none."""
    target = store.rollback_target(app)
    return target.sha if target else None


def ignored_push(app: AppConfig, ref: str, new_sha: str) -> str | None:
    """Why a pushed ref update deploys nothing (another branch, a deletion, a bad name), or None."""
    branch_ref = f"refs/heads/{app.branch}"
    if ref_problem(ref):
        return f"{printable(ref)}: not a valid ref name"
    if ref != branch_ref:
        return f"{ref}: {app.name} deploys {branch_ref}"
    if new_sha == ZERO_SHA:
        return f"deletion of {ref}; the live release is unchanged"
    return None


def queue_push(store: Store, app: AppConfig, ref: str, new_sha: str) -> Job:
    """Queue a `push` job for an update of the app's branch to `new_sha` (a full SHA git gave us)."""
    reason = ignored_push(app, ref, new_sha)
    if reason is not None:
        raise BadInput(f"ignored {reason}")
    return store.enqueue(app.name, new_sha, trigger=Trigger.PUSH, ref=ref, coalesce=app.coalesce)


# -- looking -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class AppStatus:
    """One app now: its live release, how many jobs wait, the running job, and whether it can roll back."""

    name: str
    live: Release | None
    queued: int
    running: Job | None
    can_roll_back: bool
    stopped: bool = False  # `stop APP`: its live release's containers are stopped, the maintenance page answers
    previews: tuple[dict, ...] = ()  # core/previews.py describe(): each preview of a branch

    def to_json(self) -> dict:
        """As in `status --json` and GET /api/apps."""
        return {"live": self.live.to_json() if self.live else None, "queued": self.queued,
                "running": self.running.id if self.running else None, "stopped": self.stopped,
                "previews": {shown["label"]: {key: shown[key] for key in ("url", "sha", "since")}
                             for shown in self.previews}}


def app_status(store: Store, name: str) -> AppStatus:
    """The app's live release, queue length, running job and rollback possibility."""
    return AppStatus(name=name, live=store.live_release(name), queued=store.queued_count(name),
                     running=store.running(name), can_roll_back=earlier_release(store, name) is not None,
                     stopped=store.stopped(name) is not None)


def status(config: Config, store: Store, app_name: str | None = None) -> list[AppStatus]:
    """Every app's status, by name (or the one app named)."""
    names = [find_app(config, app_name).name] if app_name else sorted(config.apps)
    return [dataclasses.replace(app_status(store, name), previews=tuple(
        previews.describe(preview, config, store) for preview in previews.Previews(store).of(name))) for name in names]


def history(store: Store, app: AppConfig | str, limit: int) -> list[Job]:
    """The app's jobs, newest first."""
    return store.jobs(app if isinstance(app, str) else app.name, limit=limit)


def known_app(config: Config, store: Store, name: str) -> AppConfig | str:
    """The app named `name` in deploy.toml, else its name if the store knows it (an app removed from
    deploy.toml keeps its history); UnknownApp when neither does."""
    check_app_name(name)
    if name not in config.apps and name in store.known_apps():
        return name
    return config.app(name)


def recent_jobs(store: Store, limit: int) -> list[Job]:
    """The newest jobs of every app."""
    return store.jobs(limit=limit)


def job(store: Store, job_id: int) -> Job:
    """The job with this id; UnknownJob when there is none."""
    if not 1 <= job_id < 2**63:  # beyond SQLite's INTEGER: no job, and a number SQLite refuses to compare
        raise UnknownJob(f"no job {job_id}")
    found = store.job(job_id)
    if found is None:
        raise UnknownJob(f"no job {job_id}")
    return found


def job_log(store: Store, job_id: int, after: int = 0) -> tuple[Job, list[Event]]:
    """The job and its log events after event id `after` (poll with the last id seen to follow it)."""
    found = job(store, job_id)
    return found, store.events(job_id, after)


# -- scheduled tasks -----------------------------------------------------------------------------


@dataclass(frozen=True)
class TaskStatus:
    """One task of an app now: its schedule, its next slot, its last run and its recent runs."""

    app: str
    task: TaskConfig
    next_slot: str | None
    last_run: TaskRun | None
    runs: tuple[TaskRun, ...] = ()

    def to_json(self, runs: bool = False) -> dict:
        """As `tasks --json` prints it (and, with `runs`, GET /api/apps/APP/tasks)."""
        shown = {"name": self.task.name, "schedule": self.task.schedule, "command": list(self.task.command),
                 "timeout": self.task.timeout, "next_slot": self.next_slot,
                 "last_run": self.last_run.to_json(output=False) if self.last_run else None}
        if runs:
            shown["runs"] = [run.to_json() for run in self.runs]
        return shown


def tasks(config: Config, store: Store, app: AppConfig, runs: int = 0) -> list[TaskStatus]:
    """The app's tasks as deploy.toml lists them, each with its next slot (in [server] timezone, shown
    as UTC), last run and, with `runs`, that many of its newest runs."""
    from hookdeploy.core.schedule import Schedule, slot_text
    from hookdeploy.core.taskruns import TaskRuns

    recorded, now = TaskRuns(store), datetime.now(timezone.utc)
    found = []
    for task in app.tasks:
        upcoming = Schedule(task.schedule, config.server.timezone).next_after(now)
        found.append(TaskStatus(app.name, task, slot_text(upcoming) if upcoming else None,
                                recorded.last_run(app.name, task.name),
                                tuple(recorded.runs(app.name, task.name, runs)) if runs else ()))
    return found


def run_task(store: Store, app: AppConfig, name: str) -> TaskRun:
    """Ask for a run of the app's task `name` now (a worker starts it, recorded like a scheduled run);
    BadInput for a malformed name, UnknownTask for one the app does not have."""
    check_task_name(name)
    from hookdeploy.core.taskruns import TaskRuns

    return TaskRuns(store).queue(app.name, app.task(name).name)


def task_run(store: Store, run_id: int) -> TaskRun:
    """The task run with this id; UnknownJob when there is none."""
    from hookdeploy.core.taskruns import TaskRuns

    found = TaskRuns(store).run(run_id) if 1 <= run_id < 2**63 else None
    if found is None:
        raise UnknownJob(f"no task run {run_id}")
    return found
