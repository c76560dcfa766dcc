"""Prune and rollback agree on the rollback target, over many release histories: deploys of new
commits, replays and rollbacks of earlier ones, the guard taking a release back, prunes with
`keep` 1 to 3. After every prune exactly these images are left: the newest `keep` distinct ones,
the live one, and the rollback target's; and the rollback target is what it was before the prune."""

from __future__ import annotations

import dataclasses
import random
from pathlib import Path

import pytest

from hookdeploy import actions
from hookdeploy.core.config import load
from hookdeploy.core.models import ReleaseState, Trigger
from hookdeploy.core.store import Store
from hookdeploy.engine import pipeline


class Images:
    """The engine's image store as prune sees it (client.images.remove), kept in a set."""

    def __init__(self):
        self.present: set[str] = set()

    def remove(self, name: str, noprune: bool = False) -> None:
        self.present.discard(name)


class Engine:
    def __init__(self):
        self.images = Images()


def image(sha: str) -> str:
    return f"t-site:{sha[:12]}"


def go_live(store: Store, engine: Engine, sha: str):
    job = store.enqueue("site", sha, trigger=Trigger.PUSH)
    engine.images.present.add(image(sha))  # built, or built again after a prune
    return store.record_live("site", sha, image(sha), f"c-{job.id}", job.id)


@pytest.mark.parametrize("seed", range(40))
def test_prune_keeps_exactly_the_newest_the_live_and_the_rollback_target(site_config, tmp_path, seed):
    config = load(site_config)
    store = Store(Path(config.server.state_dir) / "hookdeploy.db")
    engine, chance = Engine(), random.Random(seed)
    commits: list[str] = []
    for _ in range(30):
        move = chance.random()
        live = store.live_release("site")
        if move < 0.45 or not commits:
            commits.append(f"{len(commits):x}".ljust(40, "a"))
            go_live(store, engine, commits[-1])
        elif move < 0.65:
            go_live(store, engine, chance.choice(commits))  # a replay, or rollback --to
        elif move < 0.75 and live is not None and store.rollback_target("site") is not None:
            go_live(store, engine, actions.earlier_release(store, "site"))  # rollback
        elif move < 0.85 and live is not None:
            retired = [release for release in store.releases("site") if release.state is ReleaseState.RETIRED]
            if retired:  # the guard takes the live release back to the one before it, and its image
                store.undo_live("site", live.id, retired[0].id)
                pipeline.discard_image(engine, store, config.app("site"), live.image)
        else:
            keep = chance.randint(1, 3)
            app = dataclasses.replace(config.app("site"), keep=keep)
            target = store.rollback_target("site")
            pipeline.prune(engine, store, app)
            assert store.rollback_target("site") == target, "pruning moved the rollback target"
            assert target is None or actions.earlier_release(store, "site") == target.sha
            standing = [release for release in store.releases("site") if release.state is not ReleaseState.PRUNED]
            newest = list(dict.fromkeys(release.image for release in standing))[:keep]
            protected = {release.image for release in (store.live_release("site"), target)
                         if release is not None and release.state is not ReleaseState.PRUNED}
            assert engine.images.present == set(newest) | protected, f"keep = {keep}"


def test_a_pruned_newest_earlier_release_is_the_target_and_no_older_image_is_kept_for_it(site_config):
    """The history where the two rules used to part: the guard takes back the live release, leaving
    a pruned one as the newest earlier release. Rollback goes to it (building it again); prune must
    not keep an older image for a rollback that will not go there."""
    config = load(site_config)
    store = Store(Path(config.server.state_dir) / "hookdeploy.db")
    engine = Engine()
    app = dataclasses.replace(config.app("site"), keep=1)
    w, z, y = (digit * 40 for digit in "123")
    go_live(store, engine, w)
    go_live(store, engine, z)
    go_live(store, engine, y)
    newest = go_live(store, engine, w)  # W again: Y is the target, Z goes
    pipeline.prune(engine, store, app)
    assert engine.images.present == {image(w), image(y)}
    store.undo_live("site", newest.id, store.releases("site")[1].id)  # the guard: Y live again
    pipeline.discard_image(engine, store, app, newest.image)  # W's image stays: the first W uses it

    target = store.rollback_target("site")
    assert (target.sha, target.state) == (z, ReleaseState.PRUNED)
    assert actions.earlier_release(store, "site") == z
    pipeline.prune(engine, store, app)
    assert engine.images.present == {image(y)}, "W's image is kept for no rollback"
