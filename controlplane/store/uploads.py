"""What the retention jobs ask: the local inputs of tasks that have not finished (uploads), and the tasks
that finished in a window of time (their staged inputs may go once the retention has passed)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select

from controlplane.domain import Task, TaskState
from controlplane.store.core import StoreCore, task_from_row
from controlplane.store.tables import tasks

__all__ = ["finished_between", "inputs_in_use"]

_FINAL = tuple(state.value for state in TaskState if state.is_final)


def inputs_in_use(store: StoreCore) -> set[str]:
    """Every ``source`` and ``target`` URI of a task that is not finished (queued to running)."""
    with store.engine.connect() as conn:
        rows = conn.execute(select(tasks.c.source_uri, tasks.c.target_uri).where(tasks.c.state.not_in(_FINAL)))
        return {uri for row in rows for uri in (row.source_uri, row.target_uri)}


def finished_between(store: StoreCore, *, after: datetime, until: datetime, limit: int = 10_000) -> list[Task]:
    """Tasks in a final state that finished in ``(after, until]``, oldest first (at most ``limit``)."""
    stmt = (
        select(tasks)
        .where(tasks.c.state.in_(_FINAL), tasks.c.finished_at > after, tasks.c.finished_at <= until)
        .order_by(tasks.c.finished_at, tasks.c.id)
        .limit(limit)
    )
    with store.engine.connect() as conn:
        return [task_from_row(row) for row in conn.execute(stmt)]
