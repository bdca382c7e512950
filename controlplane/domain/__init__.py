"""The control plane's vocabulary: frozen values and the error taxonomy.

It imports nothing else from the project, so every layer can depend on it.
"""

from controlplane.domain.errors import (
    DomainError,
    InsufficientCapacity,
    InvalidSpec,
    InvalidTransition,
    Preempted,
    PriceTooHigh,
    ProviderError,
    QuotaExceeded,
    Throttled,
    Unavailable,
)
from controlplane.domain.placement import Candidate, PlacementPlan, Rejection, Target
from controlplane.domain.signals import SignalSample, SignalSnapshot
from controlplane.domain.states import (
    AttemptState,
    DataSensitivity,
    Priority,
    TaskKind,
    TaskState,
    check_attempt_transition,
    check_task_transition,
)
from controlplane.domain.task import Attempt, Task, TaskSpec

__all__ = [
    "Attempt",
    "AttemptState",
    "Candidate",
    "DataSensitivity",
    "DomainError",
    "InsufficientCapacity",
    "InvalidSpec",
    "InvalidTransition",
    "PlacementPlan",
    "Preempted",
    "PriceTooHigh",
    "Priority",
    "ProviderError",
    "QuotaExceeded",
    "Rejection",
    "SignalSample",
    "SignalSnapshot",
    "Target",
    "Task",
    "TaskKind",
    "TaskSpec",
    "TaskState",
    "Throttled",
    "Unavailable",
    "check_attempt_transition",
    "check_task_transition",
]
