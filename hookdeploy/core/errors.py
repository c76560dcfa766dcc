"""The one exception tree: each class's docstring is its default message."""


class HookdeployError(Exception):
    """hookdeploy failed."""

    exit_code = 2

    def __init__(self, message: str | None = None, *, public: str | None = None):
        super().__init__(message or (self.__doc__ or "").strip())
        # What a caller over HTTP is told instead, when the message names what only the server's
        # operator should see (paths on the server, the config file's).
        self.public = public


class ConfigError(HookdeployError):
    """deploy.toml is invalid."""

    def __init__(self, problems: list[str] | str):
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        super().__init__("\n".join(self.problems))


class BadInput(HookdeployError):
    """Bad input: nothing was changed."""


class UnknownApp(BadInput):
    """No such app in deploy.toml."""


class UnknownTask(BadInput):
    """No such task of the app in deploy.toml."""


class UnknownJob(BadInput):
    """No such job."""


class GitError(HookdeployError):
    """A git operation failed."""


class StoreError(HookdeployError):
    """The job store failed."""


class DockerUnavailable(HookdeployError):
    """The Docker engine does not answer."""


class StepFailed(HookdeployError):
    """A pipeline step failed; the live release is unchanged."""

    exit_code = 1


class Aborted(HookdeployError):
    """The worker is stopping; the job will be retried."""


class JobFailed(HookdeployError):
    """The job did not go live."""

    exit_code = 1
