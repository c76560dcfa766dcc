"""The `hookdeploy` command line.

Exit status: 0 done; 1 a job it waited for failed; 2 bad usage, bad config or bad input
(and then nothing was queued). Heavy modules (git, Docker) are imported only by the
commands that need them, so the post-receive hook stays fast.
"""

from __future__ import annotations

import json
import sys

import click

from hookdeploy import actions
from hookdeploy.cli import previews as previews_commands
from hookdeploy.cli.follow import WORKER_ALIVE_SECONDS, follow as follow_job
from hookdeploy.core import config as configuration
from hookdeploy.core.errors import BadInput, ConfigError, HookdeployError
from hookdeploy.core.models import Job, JobState, release_tag
from hookdeploy.core.names import check_app_name, one_line
from hookdeploy.core.store import Store


class Context:
    """What every command gets: the config (loaded on first use) and the store."""

    def __init__(self, config_option: str | None):
        self.config_option = config_option
        self._config = None
        self._store = None

    @property
    def config(self) -> configuration.Config:
        if self._config is None:
            self._config = configuration.load(self.config_option)
        return self._config

    @property
    def store(self) -> Store:
        if self._store is None:
            self._store = Store(self.config.server.database)
        return self._store

    def app(self, name: str) -> configuration.AppConfig:
        check_app_name(name)  # before loading the config: a bad name is the first thing to say
        return actions.find_app(self.config, name)


pass_context = click.make_pass_decorator(Context)


class Group(click.Group):
    """A click group that turns HookdeployErrors, and click's own usage errors, into one clear line each
    (control characters escaped: the text may come from the command line or deploy.toml) and their exit status."""

    def invoke(self, click_context: click.Context):
        try:
            return super().invoke(click_context)
        except ConfigError as error:
            for problem in error.problems:
                click.echo(f"hookdeploy: config: {one_line(problem)}", err=True)
            click_context.exit(error.exit_code)
        except HookdeployError as error:
            click.echo(f"hookdeploy: error: {one_line(str(error))}", err=True)
            click_context.exit(error.exit_code)

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        """click's main, but a usage error is one line, `hookdeploy: error: ... Try '... --help' for help.`
        (click prints the usage, a blank line and the error: four lines), exit status 2."""
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode, **extra)
        try:
            status = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except click.exceptions.NoArgsIsHelpError as error:
            error.show()  # a bare `hookdeploy` or `hookdeploy token`: the help is the answer
            sys.exit(error.exit_code)
        except click.ClickException as error:
            hint = ""
            if isinstance(error, click.UsageError) and error.ctx is not None:
                hint = f" Try '{error.ctx.command_path} --help' for help."
            click.echo(f"hookdeploy: error: {one_line(error.format_message())}{hint}", err=True)
            sys.exit(error.exit_code)
        except click.Abort:
            click.echo("hookdeploy: aborted", err=True)
            sys.exit(1)
        sys.exit(status if isinstance(status, int) else 0)


@click.group("hookdeploy", cls=Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--config", "config_option", metavar="PATH", envvar="HOOKDEPLOY_CONFIG",
              help="deploy.toml to use (default: $HOOKDEPLOY_CONFIG, else ./deploy.toml).")
@click.version_option(package_name="hookdeploy")
@click.pass_context
def cli(click_context: click.Context, config_option: str | None) -> None:
    """Push to a branch, get a zero-downtime Docker release."""
    click_context.obj = Context(config_option)


# -- the git side ---------------------------------------------------------------------------


@cli.command("init-repo")
@click.argument("app_name", metavar="APP")
@pass_context
def init_repo(context: Context, app_name: str) -> None:
    """Create the app's bare repo if missing and install its post-receive hook (and, for an app that deploys
    only signed commits, its pre-receive hook)."""
    from pathlib import Path

    from hookdeploy.cli import hook
    from hookdeploy.engine import gitops

    app = context.app(app_name)
    if not app.builds:
        raise BadInput(f"{app.name} is an image app (apps.{app.name}.image): there is no repo to create")
    if not app.is_local_repo:
        raise BadInput(f"apps.{app.name}.repo is a clone URL ({app.repo}); init-repo makes local bare repos only")
    repo = Path(app.repo)
    created = gitops.init_bare(repo, app.branch)
    installed = hook.install(repo, app.name, context.config.path)
    context.store  # create the store now, so the first push does not pay for it
    click.echo(f"{'created' if created else 'found'} bare repo {repo} (branch {app.branch})")
    click.echo(f"installed {installed}")
    if app.signatures is not None:
        click.echo(f"installed {hook.install(repo, app.name, context.config.path, 'pre-receive')} "
                   "(refuses a push whose head is not signed by an allowed key)")
    click.echo(f"push with: git push {repo} HEAD:{app.branch}")


@cli.command()
@click.argument("app_name", metavar="APP")
@click.option("--no-follow", is_flag=True, help="Return once queued instead of following the job.")
@pass_context
def hook(context: Context, app_name: str, no_follow: bool) -> None:
    """post-receive entry: read "<old> <new> <ref>" lines from stdin and queue pushes."""
    from hookdeploy.cli import hook as post_receive

    sys.exit(post_receive.run(context.config_option, app_name, follow_job=not no_follow))


@cli.command("pre-receive")
@click.argument("app_name", metavar="APP")
@pass_context
def pre_receive(context: Context, app_name: str) -> None:
    """pre-receive entry: refuse a push whose head to deploy is not signed by an allowed key."""
    from hookdeploy.cli import prereceive

    sys.exit(prereceive.run(context.config_option, app_name))


# -- enqueueing ----------------------------------------------------------------------------------


def _enqueued(context: Context, job: Job, as_json: bool, wait: bool) -> None:
    if as_json:
        click.echo(json.dumps(job.to_json()))
    else:
        click.echo(f"queued job {job.id} ({job.app} @ {job.sha[:7]}, {job.kind.value}, {job.trigger.value})")
    if wait:
        final = follow_job(context.store, job.id, prefix="" if not as_json else None)
        if as_json:
            click.echo(json.dumps(final.to_json()))
        sys.exit(0 if final.state is JobState.SUCCEEDED else 1)


_enqueue_options = [
    click.option("--wait", is_flag=True, help="Follow the job; exit 0 once live, 1 if it failed or rolled back."),
    click.option("--json", "as_json", is_flag=True, help="Print the job as JSON."),
]


def enqueue_options(function):
    for option in reversed(_enqueue_options):
        function = option(function)
    return function


@cli.command()
@click.argument("app_name", metavar="APP")
@click.option("--ref", help="Branch, tag or full ref to deploy (default: the app's branch).")
@click.option("--image", metavar="TAG|@DIGEST", help="An image app's tag or @sha256:DIGEST (default: its webhook's tag, else latest).")
@enqueue_options
@pass_context
def deploy(context: Context, app_name: str, ref: str | None, image: str | None, wait: bool, as_json: bool) -> None:
    """Queue a deploy of the head of REF (or of an image app's TAG or DIGEST)."""
    app = context.app(app_name)
    if image is not None and ref is not None:
        raise BadInput("give --ref (apps built from git) or --image (image apps), not both")
    if image is not None:
        job = actions.deploy_image(context.config, context.store, app, image)
    else:
        job = actions.deploy_ref(context.config, context.store, app, ref)
    _enqueued(context, job, as_json, wait)


@cli.command()
@click.argument("app_name", metavar="APP")
@click.argument("sha_text", metavar="SHA")
@enqueue_options
@pass_context
def replay(context: Context, app_name: str, sha_text: str, wait: bool, as_json: bool) -> None:
    """Queue a deploy of a past commit (full or unique abbreviated SHA)."""
    job = actions.replay_sha(context.config, context.store, context.app(app_name), sha_text)
    _enqueued(context, job, as_json, wait)


@cli.command()
@click.argument("app_name", metavar="APP")
@click.option("--to", "to_sha", metavar="SHA", help="A release that was live before (default: the previous one).")
@enqueue_options
@pass_context
def rollback(context: Context, app_name: str, to_sha: str | None, wait: bool, as_json: bool) -> None:
    """Queue a switch back to the previous live release (or SHA)."""
    job = actions.rollback(context.store, context.app(app_name), to_sha)
    _enqueued(context, job, as_json, wait)


@cli.command()
@click.argument("app_name", metavar="APP")
@enqueue_options
@pass_context
def stop(context: Context, app_name: str, wait: bool, as_json: bool) -> None:
    """Queue a stop: the proxy answers the maintenance page (503), then the live release's containers stop."""
    _enqueued(context, actions.stop_app(context.store, context.app(app_name)), as_json, wait)


@cli.command()
@click.argument("app_name", metavar="APP")
@enqueue_options
@pass_context
def start(context: Context, app_name: str, wait: bool, as_json: bool) -> None:
    """Queue a start of a stopped app: its release starts, passes its health check, and is routed again."""
    _enqueued(context, actions.start_app(context.store, context.app(app_name)), as_json, wait)


# -- looking --------------------------------------------------------------------------------------


@cli.command()
@click.argument("app_name", metavar="APP", required=False)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_context
def status(context: Context, app_name: str | None, as_json: bool) -> None:
    """Live release, queue and running job of each app (or one)."""
    statuses = actions.status(context.config, context.store, app_name)
    if as_json:
        click.echo(json.dumps({"apps": {app.name: app.to_json() for app in statuses}}))
        return
    for app in statuses:
        live = app.live
        shown = f"live {release_tag(live.sha)} (job {live.job}, since {live.live_since})" if live else "live: none"
        if app.stopped:
            shown += ", stopped (maintenance page)"
        if live and live.digest:
            shown += f" {live.digest}"
        running = f"running job {app.running.id}" if app.running else "nothing running"
        click.echo(f"{app.name}: {shown}; {app.queued} queued; {running}")
        for preview in app.previews:
            click.echo(one_line(f"  preview {preview['label']} ({preview['branch']}): {preview['url']} "
                                f"{(preview['sha'] or 'not live yet')[:12]}"))


@cli.command()
@click.argument("app_name", metavar="APP")
@click.option("--limit", default=20, show_default=True, type=click.IntRange(1, 10_000), help="How many jobs to show.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list, newest first.")
@pass_context
def history(context: Context, app_name: str, limit: int, as_json: bool) -> None:
    """The app's jobs, newest first (also of an app removed from deploy.toml: its history stays)."""
    jobs = actions.history(context.store, actions.known_app(context.config, context.store, app_name), limit)
    if as_json:
        click.echo(json.dumps([job.to_json() for job in jobs]))
        return
    for job in jobs:
        error = f"  {one_line(job.error)}" if job.error else ""  # git's or a build's words: escaped
        image = f"  {job.ref or ''}@{job.digest[:19]}" if job.digest else ""
        click.echo(f"{job.id:>6}  {job.state.value:<11} {job.kind.value:<8} {job.trigger.value:<8} "
                   f"{release_tag(job.sha)}  {job.created_at}{image}{error}")


@cli.command()
@click.argument("job_id", metavar="JOB", type=int)
@click.option("--follow", is_flag=True, help="Keep printing until the job ends.")
@pass_context
def logs(context: Context, job_id: int, follow: bool) -> None:
    """A job's log: its states, steps and output."""
    _, events = actions.job_log(context.store, job_id)
    if follow:
        follow_job(context.store, job_id, prefix="", show_all=True)
        return
    for event in events:
        click.echo(one_line(event.render()))  # build output and commit subjects may carry escape sequences


@cli.command("app-logs")
@click.argument("app_name", metavar="APP")
@click.option("--follow", is_flag=True, help="Keep printing, across deploys (says when it switches release).")
@click.option("--since", metavar="DURATION", help="Only lines of the last DURATION (30s, 10m, 2h, 7d).")
@click.option("--tail", type=click.IntRange(0, 1_000_000), metavar="N", help="The last N lines of each replica or task.")
@pass_context
def app_logs(context: Context, app_name: str, follow: bool, since: str | None, tail: int | None) -> None:
    """The live release's output: every container or Swarm task, each line prefixed with it."""
    from hookdeploy.cli import applogs

    applogs.run(context.store, context.config, context.app(app_name), tail, since, follow)


@cli.command()
@pass_context
def doctor(context: Context) -> None:
    """Check config, git, the Docker engine and the proxy; say what to fix."""
    from hookdeploy.cli import doctor as checks

    problems = checks.run(context.config, lambda line: click.echo(one_line(line)))  # paths, URLs: escaped
    if problems:
        click.echo(f"{problems} problem{'s' if problems != 1 else ''} found")
        sys.exit(1)
    click.echo("all checks passed")


@cli.command()
@click.option("--drain", is_flag=True, help="Exit 0 once nothing is queued.")
@pass_context
def worker(context: Context, drain: bool) -> None:
    """Run queued jobs; SIGTERM or Ctrl-C finishes or cleanly aborts the current one, then exits 0;
    SIGHUP reads deploy.toml again for the next job."""
    import signal
    import threading

    from hookdeploy.core import logsetup
    from hookdeploy.core.config import missing_secrets
    from hookdeploy.core.reload import LiveConfig
    from hookdeploy.engine.worker import Worker

    def problems(config: configuration.Config) -> list[str]:
        return missing_secrets(config, app_env=True)

    if problems(context.config):
        raise ConfigError(problems(context.config))
    logsetup.configure()
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    live = LiveConfig(context.config, problems)
    live.on_hangup()
    Worker(live, context.store).run(stop, drain=drain)


# -- scheduled tasks and one-off commands ---------------------------------------------------------


@cli.command("tasks")
@click.argument("app_name", metavar="APP")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list, in deploy.toml's order.")
@pass_context
def tasks_command(context: Context, app_name: str, as_json: bool) -> None:
    """The app's scheduled tasks: schedule, next slot, last run (state, exit status, duration)."""
    app = context.app(app_name)
    found = actions.tasks(context.config, context.store, app)
    if as_json:
        click.echo(json.dumps([task.to_json() for task in found]))
        return
    if not found:
        click.echo(f"{app.name} has no tasks (add [[apps.{app.name}.tasks]] to deploy.toml)")
    for task in found:
        last = task.last_run
        shown = "never ran"
        if last is not None:
            took = f", {last.duration:.1f} s" if last.duration is not None else ""
            status = f", exit {last.exit_code}" if last.exit_code is not None else ""
            shown = f"last run {last.id} {last.state.value}{status}{took} (slot {last.slot})"
        click.echo(f"{task.task.name}  {task.task.schedule!r} ({context.config.server.timezone})  "
                   f"next {task.next_slot or 'never'}  {shown}")


@cli.command("task")
@click.argument("app_name", metavar="APP")
@click.argument("task_name", metavar="NAME")
@click.option("--wait", is_flag=True, help="Print the run's output; exit with its command's status.")
@click.option("--json", "as_json", is_flag=True, help="Print the run as JSON.")
@pass_context
def task_command(context: Context, app_name: str, task_name: str, wait: bool, as_json: bool) -> None:
    """Run a task now (a worker starts it), recorded like a scheduled run."""
    from hookdeploy.cli import oneoff

    run = actions.run_task(context.store, context.app(app_name), task_name)
    if as_json:
        click.echo(json.dumps(run.to_json()))
    else:
        click.echo(f"queued run {run.id} of {run.app} task {run.task}", err=wait)
    if wait:
        if not context.store.worker_alive(WORKER_ALIVE_SECONDS):
            click.echo("no worker is running: the run starts once one does (hookdeploy worker, or serve)", err=True)
        final = oneoff.follow_run(context.store, run.id)
        if as_json:
            click.echo(json.dumps(final.to_json()))
        else:
            click.echo(f"run {final.id} {final.state.value}" + (f": {final.reason}" if final.reason else ""), err=True)
        sys.exit(oneoff.exit_status(final))


@cli.command("run", context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False})
@click.argument("app_name", metavar="APP")
@click.argument("command", metavar="[--] CMD...", nargs=-1, type=click.UNPROCESSED)
@pass_context
def run_command(context: Context, app_name: str, command: tuple[str, ...]) -> None:
    """Run CMD in a new container of the app's live release; exit with its status."""
    from hookdeploy.cli import oneoff

    app = context.app(app_name)
    command = command[1:] if command[:1] == ("--",) else command
    sys.exit(oneoff.run_command(context.config, context.store, app, list(command)))


@cli.command("remove")
@click.argument("app_name", metavar="APP")
@click.option("--volumes", is_flag=True, help="Also remove the app's named volumes, and the data in them.")
@pass_context
def remove_command(context: Context, app_name: str, volumes: bool) -> None:
    """Remove an app gone from deploy.toml: its containers or services, route, images and certificates
    (its history stays; its volumes too, unless --volumes)."""
    from hookdeploy.engine import removal

    for line in removal.remove(context.config, context.store, app_name, volumes=volumes).lines():
        click.echo(one_line(line))


# -- serving and API tokens ------------------------------------------------------------------------


@cli.command()
@click.option("--no-worker", is_flag=True, help="Serve HTTP only; run `hookdeploy worker` separately.")
@pass_context
def serve(context: Context, no_worker: bool) -> None:
    """Receiver, API and dashboard on server.listen, with a worker unless --no-worker; SIGHUP reads
    deploy.toml again."""
    from hookdeploy.web import server
    from hookdeploy.core.config import missing_secrets
    from hookdeploy.core.reload import LiveConfig

    def problems(config: configuration.Config) -> list[str]:
        return missing_secrets(config, tokens=True, webhooks=True, app_env=not no_worker)

    if problems(context.config):
        raise ConfigError(problems(context.config))
    sys.exit(server.serve(LiveConfig(context.config, problems), context.store, with_worker=not no_worker))


@cli.group()
def token() -> None:
    """API tokens: made, listed and revoked by id (changing the server secret revokes them all)."""


@token.command("create")
@click.option("--scope", type=click.Choice(["read", "deploy"]), default="read", show_default=True,
              help="read: look at apps and jobs; deploy: also queue deploys, replays and rollbacks.")
@click.option("--ttl", type=click.IntRange(min=1), default=None, metavar="SECONDS",
              help="How long the token is valid (default: 30 days, at most server.max_token_ttl).")
@pass_context
def token_create(context: Context, scope: str, ttl: int | None) -> None:
    """Print a new API token alone on stdout (the store records its id, never the token)."""
    from hookdeploy.core import tokens
    from hookdeploy.core.config import missing_secrets

    longest = context.config.server.max_token_ttl
    if ttl is not None and ttl > longest:
        raise BadInput(f"--ttl {ttl} is longer than server.max_token_ttl ({longest} seconds); "
                       "ask for less, or raise server.max_token_ttl in deploy.toml")
    secret = context.config.server.secret()
    if secret is None:
        raise ConfigError(missing_secrets(context.config, tokens=True))
    click.echo(tokens.issue(secret, context.store, scope, ttl or min(tokens.DEFAULT_TTL, longest)))


@token.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list, oldest first.")
@pass_context
def token_list(context: Context, as_json: bool) -> None:
    """Every API token made: id, scope, created, expires, state (never the token itself)."""
    from hookdeploy.core.models import utcnow

    now, made = utcnow(), context.store.tokens()
    if as_json:
        click.echo(json.dumps([made_token.to_json(now) for made_token in made]))
        return
    if not made:
        click.echo("no API tokens yet (make one with: hookdeploy token create)")
    for made_token in made:
        state = made_token.state(now)
        if state == "revoked":
            state = f"revoked {made_token.revoked_at}"
        click.echo(f"{made_token.id}  {made_token.scope:<6}  created {made_token.created_at}  "
                   f"expires {made_token.expires_at}  {state}")


@token.command("revoke")
@click.argument("token_id", metavar="ID")
@pass_context
def token_revoke(context: Context, token_id: str) -> None:
    """Refuse the token ID from now on, and end the dashboard sessions signed in with it."""
    from hookdeploy.core.names import printable

    before = context.store.token(token_id)
    if before is None:
        raise BadInput(f"no API token has the id {printable(token_id, 40)} (see: hookdeploy token list)")
    if before.revoked_at is not None:
        click.echo(f"token {before.id} was revoked already, at {before.revoked_at}")
        return
    revoked = context.store.revoke_token(token_id)
    click.echo(f"revoked token {revoked.id} ({revoked.scope} scope); it and its dashboard sessions are refused "
               "from now on")


cli.add_command(previews_commands.list_previews)
cli.add_command(previews_commands.preview_remove)


def main() -> None:
    """The click command line (the console script enters through hookdeploy.__main__.main)."""
    cli(prog_name="hookdeploy")
