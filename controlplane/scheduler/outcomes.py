"""Moving an attempt and its task to an outcome, whoever reports it first.

The worker's callback and the scheduler's own status poll can both report
the same outcome; whichever comes second finds the attempt final and does
nothing, so an outcome is applied exactly once.
"""

from __future__ import annotations

from controlplane.domain import AttemptState, InvalidTransition, TaskState
from controlplane.store import StateMismatch, Store

__all__ = ["advance"]


def advance(
    store: Store,
    attempt_id: str,
    attempt_state: AttemptState,
    task_state: TaskState,
    *,
    actor: str,
    reason: str | None = None,
    exit_code: int | None = None,
) -> bool:
    """Apply an outcome to the attempt and its task; False when it was already decided."""
    attempt = store.get_attempt(attempt_id)
    if attempt.state.is_final:
        return False
    try:
        if attempt.state == AttemptState.LAUNCHING and attempt_state.is_final:
            store.transition_attempt(attempt_id, wanted=AttemptState.RUNNING, actor=actor)
        if attempt_state != AttemptState.RUNNING or attempt.state != AttemptState.RUNNING:
            store.transition_attempt(attempt_id, wanted=attempt_state, actor=actor, reason=reason, exit_code=exit_code)
    except (InvalidTransition, StateMismatch):
        return False
    task = store.get_task(attempt.task_id)
    if task.state.is_final:
        return True
    try:
        if task.state == TaskState.LAUNCHING and task_state == TaskState.SUCCEEDED:
            store.transition_task(task.id, wanted=TaskState.RUNNING, actor=actor)
        if task_state != task.state:
            store.transition_task(task.id, wanted=task_state, actor=actor, reason=reason)
    except (InvalidTransition, StateMismatch):
        pass
    return True
