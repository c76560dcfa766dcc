"""Group commit for webhook deliveries: concurrent requests share one transaction and one fsync.

Flask-free; the receiver hands each verified push to GroupCommit.enqueue and answers 202 only
once it returns, so an acknowledged delivery is on disk.
"""

from __future__ import annotations

import threading

from hookdeploy.core.errors import StoreError
from hookdeploy.core.models import Job
from hookdeploy.core.store import Store

GROUP_COMMIT_MAX = 256


class GroupCommit:
    """Commits concurrent deliveries together: one transaction and one fsync for all that wait.

    The first caller to find no commit running becomes the leader: it commits everything that
    is waiting (its own delivery included), then hands leadership to the oldest newcomer, so no
    request is answered before its own delivery is on disk and none commits for others forever.
    """

    def __init__(self, store: Store, max_batch: int = GROUP_COMMIT_MAX):
        self.store = store
        self.max_batch = max_batch
        self._lock = threading.Lock()
        self._waiting: list[_Pending] = []
        self._committing = False

    def enqueue(self, **delivery) -> tuple[Job | None, int | None]:
        """Store.enqueue_delivery, committed in a batch with whatever else is waiting."""
        mine = _Pending(delivery)
        with self._lock:
            self._waiting.append(mine)
            lead = not self._committing
            self._committing = True
        if not lead:
            mine.done.wait()
        if not mine.finished:  # we lead: commit one batch, then pass the lead on
            with self._lock:
                batch, self._waiting = self._waiting[:self.max_batch], self._waiting[self.max_batch:]
            try:
                self._commit(batch)
            finally:
                for pending in batch:
                    if not pending.finished:  # _commit itself failed: nobody may wait forever
                        pending.error, pending.finished = StoreError("group commit failed"), True
                        pending.done.set()
                with self._lock:
                    if self._waiting:
                        self._waiting[0].done.set()  # woken while unfinished: it leads the next batch
                    else:
                        self._committing = False
        if mine.error is not None:
            raise mine.error
        return mine.result

    def _commit(self, batch: list["_Pending"]) -> None:
        try:
            results = self.store.enqueue_deliveries([pending.delivery for pending in batch])
        except Exception as error:
            if len(batch) == 1:
                results = [error]
            else:  # one bad delivery must not fail the others: commit each on its own
                results = []
                for pending in batch:
                    try:
                        results.extend(self.store.enqueue_deliveries([pending.delivery]))
                    except Exception as single:
                        results.append(single)
        for pending, result in zip(batch, results):
            if isinstance(result, Exception):
                pending.error = result
            else:
                pending.result = result
            pending.finished = True
            pending.done.set()


class _Pending:
    __slots__ = ("delivery", "done", "finished", "result", "error")

    def __init__(self, delivery: dict):
        self.delivery = delivery
        self.done = threading.Event()
        self.finished = False
        self.result: tuple[Job | None, int | None] = (None, None)
        self.error: Exception | None = None
