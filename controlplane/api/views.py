"""The stable JSON of tasks, attempts, events and receipts (docs/api.md documents it)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from controlplane.domain import Attempt, PlacementPlan, Task
from controlplane.store import AttemptProgress, Event, TaskCost
from controlplane.store.codec import plan_to_json

__all__ = ["NOTHING_SPENT", "attempt_json", "event_json", "receipt_json", "task_json"]


def _time(moment: datetime | None) -> str | None:
    return moment.isoformat().replace("+00:00", "Z") if moment else None


#: a task with no attempt yet (a submission's answer): nothing spent
NOTHING_SPENT = TaskCost(usd=0.0)


def task_json(task: Task, cost: TaskCost) -> dict[str, Any]:
    """The task, with its estimated cloud cost so far (``store.task_costs``; :data:`NOTHING_SPENT` for a new one)."""
    spec = task.spec
    body = {
        "id": task.id,
        "tenant": spec.tenant,
        "kind": spec.kind.value,
        "state": task.state.value,
        "reason": task.reason,
        # why a queued task waits for a placement, and since when (null when it is not waiting)
        "queue_reason": task.queue_reason,
        "queued_since": _time(task.queued_since),
        "target": task.target,
        "source_uri": spec.source_uri,
        "target_uri": spec.target_uri,
        "output_uri": spec.output_uri,
        "priority": spec.priority.value,
        "data_sensitivity": spec.data_sensitivity.value,
        "deadline_seconds": spec.deadline_seconds,
        "budget_usd": spec.budget_usd,
        "options": dict(spec.options),
        "labels": dict(spec.labels),
        "created_at": _time(task.created_at),
        "updated_at": _time(task.updated_at),
    }
    body["cost"] = cost.as_json()
    return body


def attempt_json(attempt: Attempt, progress: AttemptProgress | None = None) -> dict[str, Any]:
    return {
        "id": attempt.id,
        "task_id": attempt.task_id,
        "number": attempt.number,
        "target": attempt.target,
        "provider": attempt.provider,
        "region": attempt.region,
        "instance_type": attempt.instance_type,
        "state": attempt.state.value,
        "reason": attempt.reason,
        "exit_code": attempt.exit_code,
        "backend_ref": attempt.backend_ref,
        "hedge_group": attempt.hedge_group,
        "created_at": _time(attempt.created_at),
        "updated_at": _time(attempt.updated_at),
        "last_heartbeat_at": _time(progress.last_heartbeat_at) if progress else None,
        "progress": dict(progress.progress) if progress else {},
    }


def event_json(event: Event) -> dict[str, Any]:
    return {
        "id": event.id,
        "task_id": event.task_id,
        "attempt_id": event.attempt_id,
        "at": _time(event.at),
        "actor": event.actor,
        "kind": event.kind,
        "from_state": event.from_state,
        "to_state": event.to_state,
        "detail": dict(event.detail),
    }


def receipt_json(
    task: Task, cost: TaskCost, plans: list[PlacementPlan], attempts: list[dict[str, Any]]
) -> dict[str, Any]:
    """Everything behind a placement: the task, every plan made for it (failover appends), the attempts."""
    return {
        "task": task_json(task, cost),
        "decisions": [plan_to_json(plan) for plan in plans],
        "attempts": attempts,
    }
