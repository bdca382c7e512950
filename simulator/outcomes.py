"""What a run came to: read back from the run's own store and the world's books, never from the runner's hopes.

Per task, from the store: its final state, when it was created, first
launched (its first attempt's row) and finished; per attempt, its target.
From the world: dollars, preemptions and the GPU time they threw away. The
hard invariants are counted, not assumed: a task the workload submitted that
the store does not have, or that ended in no final state with nothing
running it, is *lost*; an attempt of a private task on a target the policy
does not mark private is *private_off_private*. Both must be 0.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

import numpy as np
from sqlalchemy import func, select

from controlplane.domain import DataSensitivity, Priority, TaskState
from controlplane.store.tables import attempts, decisions, tasks
from simulator.runner import RunOutcome

__all__ = ["summarize"]

_PRIORITIES = [p.value for p in Priority]
_FINAL = {TaskState.SUCCEEDED.value, TaskState.FAILED.value, TaskState.CANCELLED.value}
_OPEN = {TaskState.QUEUED.value, TaskState.PLANNED.value, TaskState.LAUNCHING.value, TaskState.RUNNING.value}


def _percentiles(values: Sequence[float]) -> dict[str, float | None]:
    if not values:
        return {"p50": None, "p95": None, "p99": None}
    array = np.asarray(values, dtype=float)
    p50, p95, p99 = np.percentile(array, [50, 95, 99], method="linear")
    return {"p50": round(float(p50), 3), "p95": round(float(p95), 3), "p99": round(float(p99), 3)}


def _seconds(later: datetime | None, earlier: datetime) -> float | None:
    return None if later is None else (later - earlier).total_seconds()


def summarize(outcome: RunOutcome) -> dict[str, Any]:
    """The run's summary, as the report prints it (every number rounded: the JSON is compared byte for byte)."""
    engine = outcome.store.engine
    with engine.connect() as conn:
        task_rows = conn.execute(
            select(
                tasks.c.id,
                tasks.c.state,
                tasks.c.priority,
                tasks.c.data_sensitivity,
                tasks.c.deadline_seconds,
                tasks.c.created_at,
                tasks.c.finished_at,
            )
        ).all()
        first_launch = dict(
            conn.execute(select(attempts.c.task_id, func.min(attempts.c.created_at)).group_by(attempts.c.task_id)).all()
        )
        attempt_rows = conn.execute(select(attempts.c.task_id, attempts.c.target)).all()
        receipts = conn.execute(select(func.count(func.distinct(decisions.c.task_id)))).scalar_one()
    private_targets = {target.name for target in outcome.setup.policy.targets if target.private}
    sensitivity = {row.id: row.data_sensitivity for row in task_rows}
    off_private = sum(
        1
        for row in attempt_rows
        if sensitivity.get(row.task_id) == DataSensitivity.PRIVATE.value and row.target not in private_targets
    )
    # the world's own record too: an instance of a private task outside a private target
    off_private += sum(
        1
        for instance in outcome.world.instances.values()
        if outcome.arrivals[instance.task_id].spec.data_sensitivity == DataSensitivity.PRIVATE
        and instance.target not in private_targets
    )
    attempts_per_task = Counter(row.task_id for row in attempt_rows)
    return _summary(outcome, task_rows, first_launch, attempts_per_task, off_private, receipts)


def _summary(
    outcome: RunOutcome,
    task_rows: Sequence[Any],
    first_launch: Mapping[str, datetime],
    attempts_per_task: Counter[str],
    off_private: int,
    receipts: int,
) -> dict[str, Any]:
    states = Counter(row.state for row in task_rows)
    live_tasks = {i.task_id for i in outcome.world.instances.values() if not i.state.is_final}
    stranded = sum(1 for row in task_rows if row.state not in _FINAL | _OPEN) + sum(
        1 for row in task_rows if row.state in (TaskState.RUNNING.value,) and row.id not in live_tasks
    )
    missing = len(set(outcome.arrivals) - {row.id for row in task_rows})
    waits = [w for row in task_rows if (w := _seconds(first_launch.get(row.id), row.created_at)) is not None]
    done = [
        d
        for row in task_rows
        if row.state == TaskState.SUCCEEDED.value and (d := _seconds(row.finished_at, row.created_at)) is not None
    ]
    completed = states.get(TaskState.SUCCEEDED.value, 0)
    usd_total = sum(outcome.world.books.usd_by_target.values())
    books = outcome.world.books
    return {
        "tasks": len(outcome.arrivals),
        "completed": completed,
        "failed": states.get(TaskState.FAILED.value, 0) + states.get(TaskState.CANCELLED.value, 0),
        "unfinished": sum(states.get(state, 0) for state in _OPEN),
        "lost": missing + stranded,
        "usd_total": round(usd_total, 4),
        "usd_per_completed": round(usd_total / completed, 6) if completed else None,
        "sla": _sla(task_rows),
        "on_time": _on_time(task_rows),
        "queue_wait_s": _percentiles(waits),
        "completion_s": _percentiles(done),
        "preemptions": books.preemptions,
        "lost_workers": books.lost,
        "failovers": sum(max(n - 1, 0) for n in attempts_per_task.values()),
        "gpu_hours_lost": round(books.gpu_s_lost / 3600.0, 4),
        "private_off_private": off_private,
        "receipts": receipts,
        "plans": outcome.plans,
        "spend_by_target": {name: round(usd, 4) for name, usd in sorted(books.usd_by_target.items())},
        "simulated_hours": round(outcome.ended_s / 3600.0, 3),
    }


def _met(row: Any) -> bool:
    """Whether a task succeeded within its deadline (any time, without one)."""
    if row.state != TaskState.SUCCEEDED.value or row.finished_at is None:
        return False
    return row.deadline_seconds is None or (row.finished_at - row.created_at).total_seconds() <= row.deadline_seconds


def _sla(task_rows: Sequence[Any]) -> dict[str, float]:
    """Per priority, the share of its tasks that succeeded within their deadline (any time, without one)."""
    met: Counter[str] = Counter()
    total: Counter[str] = Counter()
    for row in task_rows:
        total[row.priority] += 1
        if _met(row):
            met[row.priority] += 1
    return {p: round(met[p] / total[p], 6) for p in _PRIORITIES if total[p]}


def _on_time(task_rows: Sequence[Any]) -> int:
    """How many tasks succeeded within their deadline: what a run delivered, whatever it cost."""
    return sum(1 for row in task_rows if _met(row))
