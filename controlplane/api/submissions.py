"""Group commit for submissions: concurrent ``POST /v1/tasks`` share one transaction.

Each request validates on the event loop, then waits on a future. A writer
takes everything that is pending and stores it with
:meth:`Store.create_tasks` in a worker thread; whatever arrives meanwhile
forms the next batch. SQLite has one writer (it serialises writes anyway);
PostgreSQL has a few, so one batch is sent while another waits for its
commit to reach the disk. Nothing waits for a batch to fill: a lone request is
written at once, and under load the batches grow by themselves, so the cost
of a commit (and of the thread hop) is shared by every request in it.

A request is answered only after its transaction commits, so a 202 always
means the task is stored (the no-task-lost invariant). A failed batch fails
each of its requests with the same error, and nothing of it is stored.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import anyio.to_thread

from controlplane.domain import Task
from controlplane.store import IdempotencyConflict, NewTask, Store

__all__ = ["SubmitQueue"]

Outcome = tuple[Task, bool] | IdempotencyConflict


class SubmitQueue:
    """Pending submissions and the one writer that stores them."""

    def __init__(
        self,
        store: Store,
        *,
        writers: int = 1,
        max_batch: int = 512,
        observe_batch: Callable[[int], None] | None = None,
    ) -> None:
        if writers < 1:
            raise ValueError("a submit queue needs at least one writer")
        self.store, self.writers, self.max_batch, self.observe_batch = store, writers, max_batch, observe_batch
        self._pending: list[tuple[NewTask, asyncio.Future[Outcome]]] = []
        self._active: set[asyncio.Task[None]] = set()
        #: writers that may still take from ``_pending``: counted down by the writer itself, in the same step
        #: as it finds nothing pending. ``len(_active)`` is not that: a finished writer leaves it only when its
        #: done callback runs, and a submission made before then would wait for a writer that never comes.
        self._writing = 0

    async def submit(self, item: NewTask) -> tuple[Task, bool]:
        """Store ``item`` (possibly alongside others); raises :class:`IdempotencyConflict`."""
        future: asyncio.Future[Outcome] = asyncio.get_running_loop().create_future()
        self._pending.append((item, future))
        if self._writing < self.writers:
            self._writing += 1
            writer = asyncio.create_task(self._drain())
            self._active.add(writer)
            writer.add_done_callback(self._active.discard)
        outcome = await future
        if isinstance(outcome, IdempotencyConflict):
            raise outcome
        return outcome

    async def _drain(self) -> None:
        try:
            await self._write_pending()
        finally:
            self._writing -= 1

    async def _write_pending(self) -> None:
        while self._pending:
            batch, self._pending = self._pending[: self.max_batch], self._pending[self.max_batch :]
            items = [item for item, _ in batch]
            if self.observe_batch is not None:
                self.observe_batch(len(items))
            try:
                outcomes = await anyio.to_thread.run_sync(self.store.create_tasks, items)
            except BaseException as exc:  # the request handlers must hear about it, whatever it is
                for _, future in batch:
                    if not future.done():
                        future.set_exception(exc)
                if not isinstance(exc, Exception):
                    raise
                continue
            for (_, future), outcome in zip(batch, outcomes, strict=True):
                if not future.done():  # the client may have gone away; the task is stored all the same
                    future.set_result(outcome)
