"""Events: each task's history in order, and the newest event id (where a cursor over later events starts)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import func, select

from controlplane.store.core import StoreCore, event_from_row
from controlplane.store.records import Event
from controlplane.store.tables import events, tasks

__all__ = ["events_after", "last_event_id", "list_events"]


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


def events_after(
    core: StoreCore,
    *,
    after_id: int,
    tenant: str | None = None,
    task_id: str | None = None,
    settled_before: datetime | None = None,
    limit: int = 500,
) -> list[tuple[Event, str]]:
    """Events after ``after_id`` in id order, each with its task's tenant: what ``GET /v1/events`` streams.

    ``tenant`` and ``task_id`` narrow it (None: all). ``settled_before``
    leaves out events written at or after that moment: on PostgreSQL a
    transaction that drew a smaller id may still commit after a larger one
    is visible, and a cursor that moved past it would never see it.
    """
    stmt = select(events, tasks.c.tenant.label("task_tenant")).join(tasks, tasks.c.id == events.c.task_id)
    stmt = stmt.where(events.c.id > after_id)
    if tenant is not None:
        stmt = stmt.where(tasks.c.tenant == tenant)
    if task_id is not None:
        stmt = stmt.where(events.c.task_id == task_id)
    if settled_before is not None:
        stmt = stmt.where(events.c.at < settled_before)
    with core.read() as conn:
        rows = conn.execute(stmt.order_by(events.c.id).limit(limit)).all()
    return [(event_from_row(r), str(r.task_tenant)) for r in rows]
