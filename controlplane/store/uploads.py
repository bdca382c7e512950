"""What the upload retention job must keep: the local inputs of tasks that have not finished."""

from __future__ import annotations

from sqlalchemy import select

from controlplane.domain import TaskState
from controlplane.store.core import StoreCore
from controlplane.store.tables import tasks

__all__ = ["inputs_in_use"]

_FINAL = tuple(state.value for state in TaskState if state.is_final)


def inputs_in_use(store: StoreCore) -> set[str]:
    """Every ``source`` and ``target`` URI of a task that is not finished (queued to running)."""
    with store.engine.connect() as conn:
        rows = conn.execute(select(tasks.c.source_uri, tasks.c.target_uri).where(tasks.c.state.not_in(_FINAL)))
        return {uri for row in rows for uri in (row.source_uri, row.target_uri)}
