"""Task and attempt states, and the transitions between them.

A task: ``queued -> planned -> launching -> running -> succeeded | failed |
cancelled``. Failover on a launch error sends a task back from
``launching``/``running`` to ``planned`` (a new attempt on the next
candidate); failover after launch (preempted, lost, silent, unschedulable)
sends it back to ``queued``, so it is planned again on fresh signals.
``cancelled`` and ``failed`` are reachable from every live state; the three
end states are final.
"""

from __future__ import annotations

from enum import StrEnum

from controlplane.domain.errors import InvalidTransition

__all__ = [
    "ATTEMPT_TRANSITIONS",
    "TASK_TRANSITIONS",
    "AttemptState",
    "DataSensitivity",
    "Priority",
    "TaskKind",
    "TaskState",
    "check_attempt_transition",
    "check_task_transition",
]


class Priority(StrEnum):
    LOW = "low"
    NORMAL = "normal"
    HIGH = "high"
    URGENT = "urgent"


class DataSensitivity(StrEnum):
    PUBLIC = "public"
    INTERNAL = "internal"
    #: may only ever run on targets marked private, through every failover step
    PRIVATE = "private"


class TaskKind(StrEnum):
    IMAGE = "image"
    VIDEO = "video"


class TaskState(StrEnum):
    QUEUED = "queued"
    PLANNED = "planned"
    LAUNCHING = "launching"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def is_final(self) -> bool:
        return self in (TaskState.SUCCEEDED, TaskState.FAILED, TaskState.CANCELLED)


class AttemptState(StrEnum):
    LAUNCHING = "launching"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    PREEMPTED = "preempted"
    LOST = "lost"
    CANCELLED = "cancelled"

    @property
    def is_final(self) -> bool:
        return self not in (AttemptState.LAUNCHING, AttemptState.RUNNING)


_LIVE_TASK_ENDS = frozenset({TaskState.FAILED, TaskState.CANCELLED})
TASK_TRANSITIONS: dict[TaskState, frozenset[TaskState]] = {
    TaskState.QUEUED: frozenset({TaskState.PLANNED}) | _LIVE_TASK_ENDS,
    TaskState.PLANNED: frozenset({TaskState.LAUNCHING, TaskState.QUEUED}) | _LIVE_TASK_ENDS,
    TaskState.LAUNCHING: frozenset({TaskState.RUNNING, TaskState.PLANNED, TaskState.QUEUED, TaskState.SUCCEEDED})
    | _LIVE_TASK_ENDS,
    TaskState.RUNNING: frozenset({TaskState.SUCCEEDED, TaskState.PLANNED, TaskState.QUEUED}) | _LIVE_TASK_ENDS,
    TaskState.SUCCEEDED: frozenset(),
    TaskState.FAILED: frozenset(),
    TaskState.CANCELLED: frozenset(),
}

_ATTEMPT_ENDS = frozenset(s for s in AttemptState if s.is_final)
ATTEMPT_TRANSITIONS: dict[AttemptState, frozenset[AttemptState]] = {
    AttemptState.LAUNCHING: frozenset({AttemptState.RUNNING}) | _ATTEMPT_ENDS,
    AttemptState.RUNNING: _ATTEMPT_ENDS,
    **{state: frozenset() for state in _ATTEMPT_ENDS},
}


def check_task_transition(current: TaskState, wanted: TaskState) -> None:
    """Raise :class:`InvalidTransition` unless ``current -> wanted`` is allowed."""
    if wanted not in TASK_TRANSITIONS[current]:
        raise InvalidTransition("task", current.value, wanted.value)


def check_attempt_transition(current: AttemptState, wanted: AttemptState) -> None:
    """Raise :class:`InvalidTransition` unless ``current -> wanted`` is allowed."""
    if wanted not in ATTEMPT_TRANSITIONS[current]:
        raise InvalidTransition("attempt", current.value, wanted.value)
