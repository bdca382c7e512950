"""Work a dead control plane left half done, found and put back by reconciliation.

A scheduler can die between any two of its writes. Two places can strand a task:

- **claimed, never launched**: ``claim_queued`` moved it to ``planned`` and
  the process died before ``start_launches``. Nothing was sent anywhere
  (the attempt row is written before any launch), so it simply goes back to
  ``queued``.
- **launching or running with no live attempt**: the attempt ended (a
  launch refusal while walking the plan, a worker's outcome) and the
  process died before the task's own write. The newest attempt says what
  to do, through :func:`controlplane.domain.verdict.verdict` (reconciliation
  asks it and acts): succeeded -> the task succeeded; a launch refusal or a
  cancel -> back to ``queued`` for a new plan (:func:`requeue_stranded`); any
  other ending -> failover or failure, as for any ended attempt.

Both are only touched after they have been quiet for a while, so a
scheduler in the middle of its own two writes is never overtaken.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import insert, or_, select, update
from sqlalchemy.orm import aliased

from controlplane.domain import Attempt, AttemptState, Task, TaskState
from controlplane.store.attempts import LIVE_ATTEMPTS
from controlplane.store.core import StoreCore, attempt_from_row, task_from_row, transition_event, transition_task
from controlplane.store.planner_hints import unindexed
from controlplane.store.tables import attempts, events, tasks

__all__ = ["StrandedTask", "requeue_claimed", "requeue_stranded", "stranded_tasks"]

_LIVE_TASKS = (TaskState.LAUNCHING.value, TaskState.RUNNING.value)


@dataclass(frozen=True)
class StrandedTask:
    task: Task
    #: its newest attempt (None: it has none)
    newest: Attempt | None


def requeue_claimed(
    store: StoreCore,
    *,
    actor: str,
    claimed_before: datetime | None = None,
    not_claimed_by: str | None = None,
    limit: int = 1000,
) -> list[str]:
    """Send tasks claimed (``planned``) before ``claimed_before`` and not by ``not_claimed_by`` back to ``queued``.

    Called by a new leader for every task another replica claimed (the
    fence stops that replica from going on with them) and periodically for
    claims older than any batch takes.
    """
    now = store.now()
    pick = select(tasks.c.id, tasks.c.claimed_by).where(tasks.c.state == TaskState.PLANNED.value)
    if claimed_before is not None:
        pick = pick.where(tasks.c.claimed_at <= claimed_before)
    if not_claimed_by is not None:
        pick = pick.where(or_(tasks.c.claimed_by.is_(None), tasks.c.claimed_by != not_claimed_by))
    with store.write() as conn:
        rows = conn.execute(store.locked(pick.order_by(tasks.c.id).limit(limit))).all()
        if not rows:
            return []
        ids = [r.id for r in rows]
        # one UPDATE for the batch; each task's move is checked and recorded as transition_task would
        moved = [
            transition_event(
                task_id=r.id,
                current=TaskState.PLANNED,
                wanted=TaskState.QUEUED,
                at=now,
                actor=actor,
                detail={"reason": f"reconciliation: claimed by {r.claimed_by} but never launched"},
            )
            for r in rows
        ]
        conn.execute(
            update(tasks)
            .where(tasks.c.id.in_(ids), unindexed(tasks.c.state) == TaskState.PLANNED.value)
            .values(state=TaskState.QUEUED.value, claimed_by=None, claimed_at=None, updated_at=now)
        )
        conn.execute(insert(events), moved)
    return ids


def stranded_tasks(store: StoreCore, *, quiet_since: datetime, limit: int = 500) -> list[StrandedTask]:
    """Launching or running tasks with no live attempt, untouched since ``quiet_since``, with their newest attempt."""
    live = aliased(attempts)
    has_live = select(live.c.id).where(live.c.task_id == tasks.c.id, live.c.state.in_(LIVE_ATTEMPTS)).exists()
    stmt = (
        select(tasks)
        .where(tasks.c.state.in_(_LIVE_TASKS), tasks.c.updated_at <= quiet_since, ~has_live)
        .order_by(tasks.c.updated_at)
        .limit(limit)
    )
    with store.read() as conn:
        found = [task_from_row(r) for r in conn.execute(stmt)]
        if not found:
            return []
        rows = conn.execute(
            select(attempts).where(attempts.c.task_id.in_([t.id for t in found])).order_by(attempts.c.number)
        )
        by_task: dict[str, list[Attempt]] = {}
        for row in rows:
            by_task.setdefault(row.task_id, []).append(attempt_from_row(row))
    return [StrandedTask(task=t, newest=_newest(by_task.get(t.id, []))) for t in found]


def _newest(tried: list[Attempt]) -> Attempt | None:
    """The attempt that speaks for the task: of its newest launch (hedged siblings are one launch), the
    one that succeeded, else the last one that was not a cancelled hedge loser, else the last one."""
    if not tried:
        return None
    group = max(a.hedge_group or a.number for a in tried)
    siblings = [a for a in tried if (a.hedge_group or a.number) == group]
    for attempt in siblings:
        if attempt.state == AttemptState.SUCCEEDED:
            return attempt
    standing = [a for a in siblings if a.state != AttemptState.CANCELLED]
    return (standing or siblings)[-1]


def requeue_stranded(store: StoreCore, task_id: str, *, reason: str, actor: str) -> bool:
    """Send a launching/running task with no live attempt back to ``queued``; False if that no longer holds."""
    now = store.now()
    with store.write() as conn:
        row = conn.execute(store.locked(select(tasks.c.state).where(tasks.c.id == task_id))).one_or_none()
        if row is None or row.state not in _LIVE_TASKS:
            return False
        alive = conn.execute(
            select(attempts.c.id).where(attempts.c.task_id == task_id, attempts.c.state.in_(LIVE_ATTEMPTS))
        ).first()
        if alive is not None:
            return False
        transition_task(
            conn,
            task_id,
            current=TaskState(row.state),
            wanted=TaskState.QUEUED,
            at=now,
            actor=actor,
            values={"target": None, "claimed_by": None, "claimed_at": None},
            detail={"reason": f"reconciliation: {reason}"},
        )
    return True
