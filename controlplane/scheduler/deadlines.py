"""Task deadlines, enforced by the scheduler on every provider.

A task's ``deadline_seconds`` counts from its creation. Kubernetes has its
own backstop (the Job's ``activeDeadlineSeconds``) and cloud VMs power off
by a timer cloud-init sets (providers/bootstrap.py), but neither covers a
task that waits in the queue, a local worker, or a VM that never booted.
So the scheduler's ``follow`` calls :func:`expire_deadlines` each round:
every queued, launching or running task past its deadline fails with
"deadline of N s passed" (and, for a queued one, why it was still
waiting), its live attempts end ``cancelled`` in the same transaction, and
their backend resources are stopped; a stop that fails is handed to
``retry_release`` (the scheduler's release retries) so the resource is not
left running. The task is never retried: no attempt could finish in time.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from datetime import datetime

from controlplane.domain import Attempt, ProviderError, Task, TaskState
from controlplane.store import Store
from controlplane.store.deadlines import expire_task, tasks_past_deadline
from providers.base import Provider

__all__ = ["deadline_reason", "expire_deadlines"]

log = logging.getLogger("fusionplane.scheduler")


def deadline_reason(task: Task) -> str:
    """What a task failed for when its deadline passed, in the operator's words."""
    reason = f"deadline of {task.spec.deadline_seconds} s passed"
    if task.state == TaskState.QUEUED:
        return f"{reason} while queued" + (f" ({task.reason})" if task.reason else "")
    return f"{reason} while {task.state.value}" + (f" on {task.target}" if task.target else "")


def expire_deadlines(
    *,
    store: Store,
    providers: Mapping[str, Provider],
    now: datetime,
    actor: str,
    retry_release: Callable[[Attempt], None],
) -> int:
    """Fail every queued, launching or running task past its deadline; returns how many.

    Each task is failed, and its live attempts cancelled, in one store
    transaction first, so no failover or callback can start another attempt
    meanwhile; then each live attempt's resource is stopped.
    """
    expired = 0
    for task in tasks_past_deadline(store, now=now):
        reason = deadline_reason(task)
        ended = expire_task(store, task.id, reason=reason, actor=actor)
        if ended is None:
            continue  # it finished, was cancelled or claimed meanwhile
        expired += 1
        log.warning(
            "",
            extra={
                "event": "task.deadline_passed",
                "task_id": task.id,
                "state": task.state.value,
                "deadline_seconds": task.spec.deadline_seconds,
                "attempts": [attempt.id for attempt in ended],
            },
        )
        for attempt in ended:
            provider = providers.get(attempt.provider)
            if provider is None:
                continue
            try:
                provider.cancel(attempt.id)
            except ProviderError as exc:  # Unavailable included
                log.warning(
                    "",
                    extra={"event": "attempt.cancel_failed", "attempt_id": attempt.id, "error": str(exc)},
                )
                retry_release(attempt)
    return expired
