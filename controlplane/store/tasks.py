"""Tasks: submission (idempotent, group-committed), reads and pages, claims, and single state changes."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Row, bindparam, func, insert, select, update
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError

from controlplane.domain import DataSensitivity, Priority, Task, TaskSpec, TaskState
from controlplane.store.columns import UTCDateTime
from controlplane.store.core import (
    DEFAULT_PAGE_SIZE,
    MAX_PAGE_SIZE,
    StoreCore,
    event_row,
    insert_event,
    ms,
    task_from_row,
    transition_task,
)
from controlplane.store.errors import IdempotencyConflict, NotFound, StateMismatch
from controlplane.store.ids import new_id
from controlplane.store.planner_hints import unindexed
from controlplane.store.tables import PRIORITY_RANK, events, tasks

__all__ = [
    "NewTask",
    "change_state",
    "claim_queued",
    "count_tasks_by_state",
    "create_tasks",
    "get_task",
    "insert_tasks",
    "list_tasks",
    "retarget_task",
    "state_columns",
    "task_for_key",
]


@dataclass(frozen=True, kw_only=True)
class NewTask:
    """One submission for :meth:`Store.create_tasks`."""

    spec: TaskSpec
    request_hash: str
    idempotency_key: str | None = None
    actor: str = "api"
    #: when the request arrived, if not now: a batch gathered over a while keeps each arrival's own time (the
    #: simulator stores one round's arrivals at once); never later than the store's now
    submitted_at: datetime | None = None


def _task_row(item: NewTask, task_id: str, now: datetime) -> dict[str, Any]:
    spec = item.spec
    return {
        "id": task_id,
        "tenant": spec.tenant,
        "kind": spec.kind.value,
        "source_uri": spec.source_uri,
        "target_uri": spec.target_uri,
        "output_uri": spec.output_uri,
        "priority": spec.priority.value,
        "priority_rank": PRIORITY_RANK[spec.priority],
        "data_sensitivity": spec.data_sensitivity.value,
        "deadline_seconds": spec.deadline_seconds,
        "deadline_at": now + timedelta(seconds=spec.deadline_seconds) if spec.deadline_seconds is not None else None,
        "budget_usd": spec.budget_usd,
        "options": dict(spec.options),
        "labels": dict(spec.labels),
        "input_bytes": spec.input_bytes,
        "notify_url": spec.notify_url,
        "notify_events": ",".join(spec.notify_events) or None,
        "state": TaskState.QUEUED.value,
        "created_at": now,
        "updated_at": now,
        "idempotency_key": item.idempotency_key,
        "request_hash": item.request_hash,
    }


def _replay(item: NewTask, row: Row[Any]) -> tuple[Task, bool] | IdempotencyConflict:
    """The answer to a repeated key: the stored task, or a conflict if the body differs."""
    if row.request_hash != item.request_hash:
        return IdempotencyConflict(tenant=row.tenant, idempotency_key=row.idempotency_key, task_id=row.id)
    return task_from_row(row), False


def _keyed(conn: Connection, tenant: str, keys: list[str]) -> dict[tuple[str, str], Row[Any]]:
    rows = conn.execute(select(tasks).where(tasks.c.tenant == tenant, tasks.c.idempotency_key.in_(keys))).all()
    return {(r.tenant, r.idempotency_key): r for r in rows}


def create_tasks(core: StoreCore, batch: Sequence[NewTask]) -> list[tuple[Task, bool] | IdempotencyConflict]:
    """Store many submissions in one transaction (group commit); one outcome per item, in order.

    See :meth:`Store.create_tasks`: a batch the unique index refuses (a key
    stored meanwhile by another process) is retried item by item.
    """
    if not batch:
        return []
    try:
        with core.write() as conn:
            return insert_tasks(core, conn, batch)
    except IntegrityError:
        if len(batch) > 1:
            return [outcome for item in batch for outcome in create_tasks(core, [item])]
        (item,) = batch
        if item.idempotency_key is None:
            raise
        # another request with the same key won the race: answer as if we had come second
        with core.read() as conn:
            winner = _keyed(conn, item.spec.tenant, [item.idempotency_key]).get(
                (item.spec.tenant, item.idempotency_key)
            )
        if winner is None:
            raise
        return [_replay(item, winner)]


def task_for_key(core: StoreCore, *, tenant: str, idempotency_key: str) -> tuple[Task, str] | None:
    """The task a tenant stored under ``idempotency_key`` and its request hash; None for a new key."""
    with core.read() as conn:
        row = _keyed(conn, tenant, [idempotency_key]).get((tenant, idempotency_key))
    return None if row is None else (task_from_row(row), str(row.request_hash))


def _submitted_at(item: NewTask, now: datetime) -> datetime:
    if item.submitted_at is None:
        return now
    if item.submitted_at.tzinfo is None or item.submitted_at > now:
        raise ValueError("submitted_at must be timezone-aware and not later than the store's clock")
    return item.submitted_at


def insert_tasks(
    core: StoreCore, conn: Connection, batch: Sequence[NewTask]
) -> list[tuple[Task, bool] | IdempotencyConflict]:
    """Insert a batch of submissions inside ``conn``: replays for stored keys, new queued tasks otherwise."""
    now = core.now()
    stored: dict[tuple[str, str], Row[Any]] = {}
    keys_by_tenant: dict[str, list[str]] = {}
    for item in batch:
        if item.idempotency_key is not None:
            keys_by_tenant.setdefault(item.spec.tenant, []).append(item.idempotency_key)
    for tenant, keys in keys_by_tenant.items():
        stored.update(_keyed(conn, tenant, keys))
    in_batch: dict[tuple[str, str], tuple[Task, str]] = {}  # key -> (task, request hash)
    outcomes: list[tuple[Task, bool] | IdempotencyConflict] = []
    rows: list[dict[str, Any]] = []
    created: list[dict[str, Any]] = []
    for item in batch:
        key = (item.spec.tenant, item.idempotency_key) if item.idempotency_key is not None else None
        if key is not None and key in stored:
            outcomes.append(_replay(item, stored[key]))
        elif key is not None and key in in_batch:
            earlier, request_hash = in_batch[key]
            outcomes.append(
                (earlier, False)
                if request_hash == item.request_hash
                else IdempotencyConflict(tenant=key[0], idempotency_key=key[1], task_id=earlier.id)
            )
        else:
            at = _submitted_at(item, now)
            task_id = new_id("tsk", now_ms=ms(at))
            rows.append(_task_row(item, task_id, at))
            created.append(event_row(task_id=task_id, at=at, actor=item.actor, kind="task.created", to_state="queued"))
            # exactly the row just written, so no read-back round trip
            task = Task(id=task_id, spec=item.spec, state=TaskState.QUEUED, created_at=at, updated_at=at)
            outcomes.append((task, True))
            if key is not None:
                in_batch[key] = (task, item.request_hash)
    if rows:
        conn.execute(insert(tasks), rows)
        conn.execute(insert(events), created)
    return outcomes


def get_task(core: StoreCore, task_id: str) -> Task:
    """The task, or :class:`NotFound`."""
    with core.read() as conn:
        row = conn.execute(select(tasks).where(tasks.c.id == task_id)).one_or_none()
    if row is None:
        raise NotFound("task", task_id)
    return task_from_row(row)


#: built once: ``follow`` reads its live attempts' tasks every round
_TASKS_BY_ID = select(tasks).where(tasks.c.id.in_(bindparam("t_ids", expanding=True)))


def get_tasks(core: StoreCore, task_ids: Sequence[str]) -> dict[str, Task]:
    """The tasks of ``task_ids`` by id, in one read per 500 ids; unknown ids are left out."""
    found: dict[str, Task] = {}
    with core.read() as conn:
        for start in range(0, len(task_ids), 500):  # under SQLite's bound-parameter limit
            for row in conn.execute(_TASKS_BY_ID, {"t_ids": list(task_ids[start : start + 500])}):
                found[row.id] = task_from_row(row)
    return found


def list_tasks(
    core: StoreCore,
    *,
    state: TaskState | None = None,
    priority: Priority | None = None,
    data_sensitivity: DataSensitivity | None = None,
    target: str | None = None,
    tenant: str | None = None,
    created_after: datetime | None = None,
    created_before: datetime | None = None,
    cursor: str | None = None,
    limit: int = DEFAULT_PAGE_SIZE,
    newest_first: bool = True,
) -> tuple[list[Task], str | None]:
    """One page of tasks matching every given filter, and the cursor of the next page (see :meth:`Store.list_tasks`)."""
    if not 1 <= limit <= MAX_PAGE_SIZE:
        raise ValueError(f"limit must be between 1 and {MAX_PAGE_SIZE}, not {limit}")
    stmt = select(tasks)
    if state is not None:
        stmt = stmt.where(tasks.c.state == state.value)
    if priority is not None:
        stmt = stmt.where(tasks.c.priority == priority.value)
    if data_sensitivity is not None:
        stmt = stmt.where(tasks.c.data_sensitivity == data_sensitivity.value)
    if target is not None:
        stmt = stmt.where(tasks.c.target == target)
    if tenant is not None:
        stmt = stmt.where(tasks.c.tenant == tenant)
    if created_after is not None:
        stmt = stmt.where(tasks.c.created_at >= created_after)
    if created_before is not None:
        stmt = stmt.where(tasks.c.created_at < created_before)
    if cursor is not None:
        stmt = stmt.where(tasks.c.id < cursor if newest_first else tasks.c.id > cursor)
    stmt = stmt.order_by(tasks.c.id.desc() if newest_first else tasks.c.id.asc()).limit(limit + 1)
    with core.read() as conn:
        rows = conn.execute(stmt).all()
    page = [task_from_row(r) for r in rows[:limit]]
    return page, (page[-1].id if len(rows) > limit else None)


def retarget_task(core: StoreCore, task_id: str, *, target: str, actor: str) -> bool:
    """Point a launching task at the target of its new attempt (failover); False if it left launching."""
    now = core.now()
    with core.write() as conn:
        row = conn.execute(
            core.locked(select(tasks.c.state, tasks.c.target).where(tasks.c.id == task_id))
        ).one_or_none()
        if row is None:
            raise NotFound("task", task_id)
        if row.state != TaskState.LAUNCHING.value:
            return False
        conn.execute(update(tasks).where(tasks.c.id == task_id).values(target=target, updated_at=now))
        insert_event(
            conn,
            task_id=task_id,
            at=now,
            actor=actor,
            kind="task.retargeted",
            detail={"from": row.target, "to": target},
        )
    return True


def state_columns(wanted: TaskState, *, started_at: datetime | None, now: datetime) -> dict[str, Any]:
    """The columns that change with the state: claim, start and finish times, the queue fields.

    ``started_at`` is the task's first start so far (None: it never ran).
    """
    values: dict[str, Any] = {}
    if wanted is TaskState.PLANNED:
        values["planned_at"] = now
    elif wanted is TaskState.QUEUED:
        values["claimed_by"] = None
        values["claimed_at"] = None
    elif wanted is TaskState.RUNNING and started_at is None:
        values["started_at"] = now
    if wanted.is_final:
        values["finished_at"] = now
    if wanted.is_final or wanted is TaskState.LAUNCHING:
        values.update(queue_reason=None, queued_since=None)  # it waits no longer
    return values


def change_state(
    core: StoreCore,
    task_id: str,
    *,
    wanted: TaskState,
    actor: str,
    reason: str | None = None,
    expected: TaskState | None = None,
    target: str | None = None,
    detail: Mapping[str, Any] | None = None,
) -> Task:
    """Move a task to ``wanted`` and record the event, in one transaction (see :meth:`Store.transition_task`)."""
    now = core.now()
    with core.write() as conn:
        row = conn.execute(core.locked(select(tasks).where(tasks.c.id == task_id))).one_or_none()
        if row is None:
            raise NotFound("task", task_id)
        current = TaskState(row.state)
        if expected is not None and current != expected:
            raise StateMismatch("task", task_id, expected=expected.value, actual=current.value)
        values: dict[str, Any] = {}
        if reason is not None:
            values["reason"] = reason
        if target is not None:
            values["target"] = target
        values.update(state_columns(wanted, started_at=row.started_at, now=now))
        event_detail = dict(detail or {})
        if reason is not None:
            event_detail.setdefault("reason", reason)
        if target is not None:
            event_detail.setdefault("target", target)
        transition_task(
            conn, task_id, current=current, wanted=wanted, at=now, actor=actor, values=values, detail=event_detail
        )
        updated = conn.execute(select(tasks).where(tasks.c.id == task_id)).one()
    return task_from_row(updated)


#: the claim's statements, built once: every batch runs them (the scheduler's hot path). First every ``not_before``
#: that has passed is cleared (a range of ix_tasks_not_before: those rows only; ``not_before`` means nothing but
#: "not claimed before", so whatever the row's state, nothing else reads it), so that the claimable rows are the
#: ``not_before IS NULL`` ones, read in priority order off the partial index ix_tasks_claimable: no walk past the
#: thousands of tasks asleep in a long queue (migration 0011)
_BACKOFF_PASSED = tasks.c.not_before <= bindparam("c_now", type_=UTCDateTime())
_CLEAR_BACKOFF = update(tasks).where(_BACKOFF_PASSED).values(not_before=None)
_CLEAR_BACKOFF_SKIP_LOCKED = (
    update(tasks)
    .where(
        tasks.c.id.in_(select(tasks.c.id).where(_BACKOFF_PASSED).with_for_update(skip_locked=True).scalar_subquery())
    )
    .values(not_before=None)
)
_CLAIM_PICK = (
    select(tasks)
    .where(tasks.c.state == TaskState.QUEUED.value, tasks.c.not_before.is_(None))
    .order_by(tasks.c.priority_rank, tasks.c.id)
    .limit(bindparam("c_limit"))
)
_CLAIM_PICK_SKIP_LOCKED = _CLAIM_PICK.with_for_update(skip_locked=True)
_CLAIM = (
    update(tasks)
    .where(tasks.c.id.in_(bindparam("c_ids", expanding=True)), unindexed(tasks.c.state) == TaskState.QUEUED.value)
    .values(
        state=TaskState.PLANNED.value,
        planned_at=bindparam("c_at", type_=UTCDateTime()),
        updated_at=bindparam("c_at", type_=UTCDateTime()),
        claimed_by=bindparam("c_by"),
        claimed_at=bindparam("c_at", type_=UTCDateTime()),
    )
)


def claim_queued(core: StoreCore, *, batch_size: int, scheduler_id: str) -> list[Task]:
    """Move up to ``batch_size`` queued tasks to planned for ``scheduler_id`` (see :meth:`Store.claim_queued`).

    The rows picked are the rows returned (as claimed): SQLite has one
    writer at a time, and PostgreSQL's ``FOR UPDATE SKIP LOCKED`` holds
    them until the claim commits, so none changes in between.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, not {batch_size}")
    now = core.now()
    with core.write() as conn:
        conn.execute(_CLEAR_BACKOFF_SKIP_LOCKED if core.postgres else _CLEAR_BACKOFF, {"c_now": now})
        picked = conn.execute(_CLAIM_PICK_SKIP_LOCKED if core.postgres else _CLAIM_PICK, {"c_limit": batch_size}).all()
        if not picked:
            return []
        conn.execute(_CLAIM, {"c_ids": [r.id for r in picked], "c_at": now, "c_by": scheduler_id})
        first_claims = [r.id for r in picked if r.queue_reason is None]
        if first_claims:
            conn.execute(
                insert(events),
                [
                    event_row(
                        task_id=task_id,
                        at=now,
                        actor=scheduler_id,
                        kind="task.claimed",
                        from_state=TaskState.QUEUED.value,
                        to_state=TaskState.PLANNED.value,
                    )
                    for task_id in first_claims
                ],
            )
    return [dataclasses.replace(task_from_row(r), state=TaskState.PLANNED, updated_at=now) for r in picked]


#: built once (queue depth and the simulator count every round); an expanding IN for any set of states
_COUNT_IN = select(func.count()).select_from(tasks).where(tasks.c.state.in_(bindparam("count_states", expanding=True)))


def count_tasks_in(core: StoreCore, states: Sequence[TaskState]) -> int:
    """How many tasks are in any of ``states``: a walk of the state index over those states only."""
    with core.read() as conn:
        count = conn.execute(_COUNT_IN, {"count_states": [state.value for state in states]}).scalar_one()
    return int(count)


def count_tasks_by_state(core: StoreCore) -> dict[TaskState, int]:
    """How many tasks are in each state (every state present, zero included)."""
    with core.read() as conn:
        rows = conn.execute(select(tasks.c.state, func.count()).group_by(tasks.c.state)).all()
    counts = dict.fromkeys(TaskState, 0)
    for state, count in rows:
        counts[TaskState(state)] = int(count)
    return counts
