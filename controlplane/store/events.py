"""Events: each task's history in order, and the newest event id (where a cursor over later events starts)."""

from __future__ import annotations

from sqlalchemy import func, select

from controlplane.store.core import StoreCore, event_from_row
from controlplane.store.records import Event
from controlplane.store.tables import events

__all__ = ["last_event_id", "list_events"]


def list_events(core: StoreCore, task_id: str, *, after_id: int | None = None, limit: int | None = None) -> list[Event]:
    """The task's events in the order they happened (``after_id`` for polling)."""
    stmt = select(events).where(events.c.task_id == task_id)
    if after_id is not None:
        stmt = stmt.where(events.c.id > after_id)
    stmt = stmt.order_by(events.c.id)
    if limit is not None:
        stmt = stmt.limit(limit)
    with core.read() as conn:
        rows = conn.execute(stmt).all()
    return [event_from_row(r) for r in rows]


def last_event_id(core: StoreCore) -> int:
    """The newest event's id (0 when there is none): where a cursor over later events starts."""
    with core.read() as conn:
        return int(conn.execute(select(func.max(events.c.id))).scalar_one() or 0)
