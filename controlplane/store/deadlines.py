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

from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, select

from controlplane.domain import Attempt, AttemptState, Task, TaskState, check_attempt_transition
from controlplane.store.attempts import LIVE_ATTEMPTS, write_attempt_transition
from controlplane.store.columns import UTCDateTime
from controlplane.store.core import StoreCore, attempt_from_row, task_from_row, transition_task
from controlplane.store.tables import attempts, tasks

__all__ = ["EXPIRABLE", "expire_task", "tasks_past_deadline"]

#: the task states a passed deadline ends
EXPIRABLE = (TaskState.QUEUED, TaskState.LAUNCHING, TaskState.RUNNING)


#: built once: every scheduler round runs it. ``deadline_at`` is ``created_at + deadline_seconds``, stored with the
#: task (migration 0011), so each expirable state is a range of the (state, deadline_at) index: the rows past
#: their deadline only, however long the queue
_PAST_DEADLINE = (
    select(tasks)
    .where(
        tasks.c.state.in_([state.value for state in EXPIRABLE]),
        tasks.c.deadline_at < bindparam("deadline_now", type_=UTCDateTime()),
    )
    .order_by(tasks.c.created_at)
    .limit(bindparam("deadline_limit"))
)


def tasks_past_deadline(store: StoreCore, *, now: datetime, limit: int = 200) -> list[Task]:
    """Queued, launching and running tasks whose deadline passed at ``now``, oldest first."""
    with store.read() as conn:
        rows = conn.execute(_PAST_DEADLINE, {"deadline_now": now, "deadline_limit": limit})
        return [task_from_row(row) for row in rows]


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
