"""Jobs, releases, events and API tokens as frozen dataclasses, with the states they move through."""

from __future__ import annotations

import enum
from dataclasses import asdict, dataclass
from datetime import datetime, timezone

from hookdeploy.core.names import preview_parts


class JobState(str, enum.Enum):
    """Where a job is: queued → running → succeeded | failed | rolled_back; queued → superseded;
    running → interrupted; running → superseded (a push's commit that is no longer the one to deploy)."""

    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    ROLLED_BACK = "rolled_back"
    SUPERSEDED = "superseded"
    INTERRUPTED = "interrupted"

    @property
    def finished(self) -> bool:
        """True for the states a job never leaves."""
        return self not in (JobState.QUEUED, JobState.RUNNING)


class JobKind(str, enum.Enum):
    """What a job does: build and deploy a commit, switch back to a kept release, or stop and start the
    live one (DESIGN "Operating apps")."""

    DEPLOY = "deploy"
    ROLLBACK = "rollback"
    STOP = "stop"
    START = "start"


class Trigger(str, enum.Enum):
    """Who asked for the job."""

    PUSH = "push"
    WEBHOOK = "webhook"
    MANUAL = "manual"
    REPLAY = "replay"
    ROLLBACK = "rollback"
    RETRY = "retry"


class ReleaseState(str, enum.Enum):
    """A release is live, retired (image kept for rollback), or pruned (image removed)."""

    LIVE = "live"
    RETIRED = "retired"
    PRUNED = "pruned"


def release_tag(sha: str) -> str:
    """A commit's 12-digit short SHA, the one name of its release wherever it is written: the image's tag,
    container and service names, the registry's tag, the proxy's X-Hookdeploy-Release header (by which
    verification and the guard know the release's answers), job logs and the CLI."""
    return sha[:12]


def utcnow() -> str:
    """Now as ISO 8601 UTC with milliseconds, e.g. 2026-11-28T03:04:05.678Z."""
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def parse_time(text: str) -> datetime:
    """The inverse of utcnow()."""
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def iso_time(seconds: float) -> str:
    """Seconds since the epoch as utcnow() writes times."""
    return datetime.fromtimestamp(seconds, timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass(frozen=True)
class Job:
    """One request to put a commit live (or to switch back to one)."""

    id: int
    app: str
    kind: JobKind
    trigger: Trigger
    ref: str | None
    sha: str
    state: JobState
    created_at: str
    started_at: str | None
    finished_at: str | None
    error: str | None
    image: str | None
    heartbeat_at: str | None = None
    retry_of: int | None = None
    worker: str | None = None
    digest: str | None = None  # sha256:... of the image in the registry (pushed, or pulled for an image app)
    signer_fingerprint: str | None = None  # who signed the commit, when the app checks signatures: the key ...
    signer_principal: str | None = None  # ... and its principal (SSH) or user id (GPG)

    @property
    def short_sha(self) -> str:
        """The 12-digit SHA used in Docker names."""
        return release_tag(self.sha)

    def to_json(self) -> dict:
        """The job as DESIGN's job JSON."""
        data = asdict(self)
        for internal in ("heartbeat_at", "retry_of", "worker", "signer_fingerprint", "signer_principal"):
            data.pop(internal)
        data["signer"] = ({"fingerprint": self.signer_fingerprint, "principal": self.signer_principal}
                          if self.signer_fingerprint else None)
        data["kind"], data["trigger"], data["state"] = self.kind.value, self.trigger.value, self.state.value
        data["app"], data["preview"] = preview_parts(self.app) or (self.app, None)  # a preview's jobs: APP.LABEL
        return data

    def describe(self) -> str:
        """One line for people: `job 12 site @ abc1234 deploy (push): queued`."""
        return f"job {self.id} {self.app} @ {self.sha[:7]} {self.kind.value} ({self.trigger.value}): {self.state.value}"


@dataclass(frozen=True)
class Release:
    """A built image that went live for an app at some point."""

    id: int
    app: str
    sha: str
    image: str
    container: str | None
    job: int
    state: ReleaseState
    live_since: str
    retired_at: str | None
    digest: str | None = None

    def to_json(self) -> dict:
        """The live release as in DESIGN's `status --json`."""
        return {"sha": self.sha, "image": self.image, "container": self.container,
                "since": self.live_since, "job": self.job}


@dataclass(frozen=True)
class Event:
    """A line of a job's log: a state change, a step with its duration, or output."""

    id: int
    job: int
    at: str
    kind: str
    message: str
    duration: float | None = None
    step: str | None = None  # a step event's step: build, switch, ... (engine/deploy.py STEPS)

    def render(self) -> str:
        """The event as a log line."""
        took = f" ({self.duration:.2f} s)" if self.duration is not None else ""
        return f"{self.at} {self.kind:<5} {self.message}{took}"


@dataclass(frozen=True)
class ApiToken:
    """What the store knows of an API token: its id, scope and lifetime (never the token itself)."""

    id: str
    scope: str
    created_at: str
    expires_at: str
    revoked_at: str | None = None

    def state(self, now: str) -> str:
        """revoked, expired or active, at the time `now` (written as utcnow() writes times)."""
        if self.revoked_at is not None:
            return "revoked"
        return "expired" if self.expires_at <= now else "active"

    def to_json(self, now: str) -> dict:
        """The token as `token list --json` prints it."""
        return {**asdict(self), "state": self.state(now)}
