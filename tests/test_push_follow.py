"""The pusher follows what runs in place of their job: a superseding job, an interrupted job's retry,
or, when a newer push was queued so no retry was (issue 23, item 6), that newer push's job."""

from __future__ import annotations

import threading

from hookdeploy.cli.follow import follow_push
from hookdeploy.core.models import JobState, Trigger
from hookdeploy.core.store import Store

OLD, NEW = "1" * 40, "2" * 40


def test_an_interrupted_push_with_a_newer_one_queued_is_followed_into_the_newer_one(tmp_path, capsys):
    store = Store(tmp_path / "hookdeploy.db")
    pushed = store.enqueue("site", OLD, trigger=Trigger.PUSH, ref="refs/heads/deploy")
    assert store.claim("worker-1").id == pushed.id
    followed = []
    follower = threading.Thread(target=lambda: followed.append(follow_push(store, pushed, "http://site.example")))
    follower.start()
    newer = store.enqueue("site", NEW, trigger=Trigger.PUSH, ref="refs/heads/deploy")
    interrupted, retry = store.interrupt(pushed.id, "the worker is restarting")
    assert retry is None, "a newer push is queued: no retry"
    assert store.claim("worker-2").id == newer.id
    store.log(newer.id, "switched proxy", kind="step", duration=0.1, step="switch")
    store.finish(newer.id, JobState.SUCCEEDED)
    follower.join(10)
    assert not follower.is_alive(), "the pusher followed the newer job to its end"
    assert followed[0].id == newer.id and followed[0].state is JobState.SUCCEEDED
    assert capsys.readouterr().out.splitlines() == [
        f"-----> interrupted: the worker is restarting; job {newer.id} is queued after it",
        f"-----> following job {newer.id} (site @ {NEW[:7]})",
        "-----> Switched proxy (0.1 s)"]


def test_an_interrupted_push_with_nothing_after_it_ends_the_report(tmp_path, capsys):
    store = Store(tmp_path / "hookdeploy.db")
    pushed = store.enqueue("site", OLD, trigger=Trigger.PUSH, ref="refs/heads/deploy")
    assert store.claim("worker-1").id == pushed.id
    store.interrupt(pushed.id, "the worker died while running this job", retry=False)
    assert follow_push(store, pushed, "http://site.example").state is JobState.INTERRUPTED
    assert capsys.readouterr().out.splitlines() == [
        "-----> interrupted: the worker died while running this job",
        "-----> live release unchanged: none"]
