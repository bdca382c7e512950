"""Tasks whose deadline has passed: found in SQL, failed with their live attempts in one transaction.

A task's ``deadline_seconds`` counts from its creation. Once it has passed,
nothing the scheduler could still do is worth it: a queued task fails
where it waits, a launching or running one fails and its live attempts end
``cancelled`` (the scheduler stops their backend resources). Only tasks the
scheduler does not hold in its hands are touched: ``queued``,
``launching`` and ``running``; ``planned`` is a claim in progress, and is
looked at again once that batch has launched it or reconciliation has put
it back.
"""

from __future__ import annotations

import functools
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, Select, bindparam, func, select

from controlplane.domain import Attempt, AttemptState, Task, TaskState, check_attempt_transition
from controlplane.store.attempts import LIVE_ATTEMPTS, write_attempt_transition
from controlplane.store.columns import UTCDateTime
from controlplane.store.core import StoreCore, attempt_from_row, task_from_row, transition_task
from controlplane.store.tables import attempts, tasks

__all__ = ["EXPIRABLE", "expire_task", "tasks_past_deadline"]

#: the task states a passed deadline ends
EXPIRABLE = (TaskState.QUEUED, TaskState.LAUNCHING, TaskState.RUNNING)
_SECONDS_PER_DAY = 86_400.0


def _passed(postgres: bool) -> ColumnElement[bool]:
    """``created_at + deadline_seconds < :deadline_now``, in each database's own date arithmetic."""
    at = bindparam("deadline_now", type_=UTCDateTime())
    if postgres:
        return tasks.c.created_at + func.make_interval(0, 0, 0, 0, 0, 0, tasks.c.deadline_seconds) < at
    # SQLite keeps naive UTC text; julianday reads it (and the bound value) as days
    return func.julianday(tasks.c.created_at) + tasks.c.deadline_seconds / _SECONDS_PER_DAY < func.julianday(at)


@functools.cache
def _past_deadline_statement(postgres: bool) -> Select[Any]:
    """Built once per database kind: every scheduler round runs it, and building it cost more than the query."""
    return (
        select(tasks)
        .where(
            tasks.c.state.in_([state.value for state in EXPIRABLE]),
            tasks.c.deadline_seconds.is_not(None),
            _passed(postgres),
        )
        .order_by(tasks.c.created_at)
        .limit(bindparam("deadline_limit"))
    )


def tasks_past_deadline(store: StoreCore, *, now: datetime, limit: int = 200) -> list[Task]:
    """Queued, launching and running tasks whose deadline passed at ``now``, oldest first."""
    stmt = _past_deadline_statement(store.postgres)
    with store.read() as conn:
        return [task_from_row(row) for row in conn.execute(stmt, {"deadline_now": now, "deadline_limit": limit})]


def expire_task(store: StoreCore, task_id: str, *, reason: str, actor: str) -> list[Attempt] | None:
    """Fail the task with ``reason`` and cancel its live attempts, in one transaction.

    Returns the attempts that were live (their backend resources are the
    caller's to stop), or None when the task had left the expirable states
    meanwhile (it finished, was cancelled, or is claimed by a batch).
    """
    now = store.now()
    with store.write() as conn:
        row = conn.execute(store.locked(select(tasks.c.state).where(tasks.c.id == task_id))).one_or_none()
        if row is None or TaskState(row.state) not in EXPIRABLE:
            return None
        live = conn.execute(
            store.locked(
                select(attempts).where(attempts.c.task_id == task_id, attempts.c.state.in_(LIVE_ATTEMPTS))
            ).order_by(attempts.c.number)
        ).all()
        detail: dict[str, Any] = {"reason": reason, "trigger": "deadline"}
        for attempt in live:
            current = AttemptState(attempt.state)
            check_attempt_transition(current, AttemptState.CANCELLED)
            values = {"state": AttemptState.CANCELLED.value, "reason": reason, "updated_at": now}
            write_attempt_transition(
                conn, attempt, current, AttemptState.CANCELLED, values=values, detail=detail, at=now, actor=actor
            )
        transition_task(
            conn,
            task_id,
            current=TaskState(row.state),
            wanted=TaskState.FAILED,
            at=now,
            actor=actor,
            values={"reason": reason, "finished_at": now, "claimed_by": None, "claimed_at": None, "not_before": None},
            detail=detail,
        )
    return [attempt_from_row(attempt) for attempt in live]
