"""`previews APP [--json]` and `preview-remove APP BRANCH` (DESIGN "Previews of branches")."""

from __future__ import annotations

import json

import click

from hookdeploy.core import previews
from hookdeploy.core.errors import BadInput
from hookdeploy.core.names import one_line


@click.command("previews")
@click.argument("app_name", metavar="APP")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list, oldest first.")
@click.pass_obj
def list_previews(context, app_name: str, as_json: bool) -> None:
    """The app's previews of branches: label, branch, URL, live commit, hours since the last push."""
    app = context.app(app_name)
    shown = [previews.describe(preview, context.config, context.store) for preview in
             previews.Previews(context.store).of(app.name)]
    if as_json:
        click.echo(json.dumps(shown))
        return
    if app.previews is None:
        click.echo(f"{app.name} has no [apps.{app.name}.previews] table: pushes to other branches deploy nothing")
    elif not shown:
        click.echo(f"{app.name}: no previews (a push to {', '.join(app.previews.branches)} makes one)")
    for preview in shown:
        click.echo(one_line(f"{preview['label']}  {preview['branch']}  {preview['url']}  "
                            f"{(preview['sha'] or 'not live yet')[:12]}  {previews.age_text(preview['age_hours'])} since the last push"
                            + ("  (being removed)" if preview["removing"] else "")))


@click.command("preview-remove")
@click.argument("app_name", metavar="APP")
@click.argument("branch", metavar="BRANCH")
@click.pass_obj
def preview_remove(context, app_name: str, branch: str) -> None:
    """Remove the preview of BRANCH (or of the label it goes by): its containers, route, images (its
    history stays)."""
    from hookdeploy.engine import previews as engine_previews

    app = context.app(app_name)
    if not branch.strip():
        raise BadInput("the branch is empty")
    preview = previews.find(context.store, app, branch)
    for line in engine_previews.lines(preview, engine_previews.remove(context.config, context.store, preview,
                                                                      "hookdeploy preview-remove")):
        click.echo(one_line(line))


def check_previews(config, check) -> None:
    """doctor: each preview with its URL, live commit and age; one past its ttl_hours (or whose branch
    was deleted) still there is a problem: no worker removes it."""
    from hookdeploy.core.models import utcnow
    from hookdeploy.core.store import Store

    if not config.server.database.exists():
        return
    store = Store(config.server.database)
    try:
        recorded, now = previews.Previews(store), utcnow()
        overdue = {(preview.app, preview.label) for preview, _ in recorded.due(config, now)}
        for preview in recorded.of():
            shown = previews.describe(preview, config, store, now)
            what = (f"preview {preview.label} of {preview.app} ({preview.branch}): {shown['url']}, "
                    f"{'live ' + shown['sha'][:12] if shown['sha'] else 'not live'}, "
                    f"last push {previews.age_text(shown['age_hours'])} ago")
            check((preview.app, preview.label) not in overdue, what,
                  f"{what}: due for removal, but no worker removed it (is one running? or: hookdeploy "
                  f"preview-remove {preview.app} {preview.branch})")
    finally:
        store.close()
