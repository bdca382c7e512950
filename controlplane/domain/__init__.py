"""The control plane's vocabulary: frozen values and the error taxonomy, shared by every layer.

``task`` (tasks and attempts) and ``states`` (their states and the allowed
transitions), ``placement`` (targets, candidates, rejections and the
``PlacementPlan`` that ``plan()`` returns), ``cloud_pool`` (a Kubernetes target's
cloud node pool), ``signals`` and ``reliability``
(the signal snapshot, signal names and TTLs, breaker and budget keys),
``backend`` (what a backend says about an attempt's resource), ``launch``
(what a cloud target's settings must hold), ``worker_spec`` (the
one JSON document a provider hands the container; its published schema is
generated from it), ``callbacks`` (the worker's callback bodies),
``exit_codes`` (the one table of exit codes, their meaning and retry class),
``verdict`` (the pure outcome function: what happens next to an attempt),
``tenant`` and ``tenant_storage`` (tenant names and where a tenant's local
files live), ``fields`` (errors that name their field) and ``errors`` (the
domain's errors and the provider failure taxonomy). It imports nothing else
from the project, so every layer can depend on it.
"""

from controlplane.domain.cloud_pool import CloudPool
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
from controlplane.domain.fields import FieldError, json_path, json_type_name
from controlplane.domain.launch import LAUNCH_REQUIREMENTS, SettingsCheck, missing_launch_settings
from controlplane.domain.placement import MARKETS, ON_DEMAND, SPOT, Candidate, PlacementPlan, Rejection, Target
from controlplane.domain.signals import (
    BUDGET_SOURCE,
    CAPACITY_SOURCE,
    CLOUD_PROVIDERS,
    GPU_UTILIZATION_SOURCE,
    ON_DEMAND_PRICE_SOURCE,
    ON_DEMAND_PRICE_TTL_SECONDS,
    PREEMPTIBLE_SOURCE,
    PROVIDERS,
    QUEUE_SOURCE,
    SPOT_PRICE_SOURCE,
    SPOT_PRICE_TTL_SECONDS,
    SignalSample,
    SignalSnapshot,
    on_demand_price_ttl,
    preemptible_key,
    spot_price_key,
    spot_price_ttl,
)
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
from controlplane.domain.tenant import TENANT_PATTERN, TENANT_RULE, is_tenant_name

__all__ = [
    "LAUNCH_REQUIREMENTS",
    "BUDGET_SOURCE",
    "CAPACITY_SOURCE",
    "PREEMPTIBLE_SOURCE",
    "CLOUD_PROVIDERS",
    "GPU_UTILIZATION_SOURCE",
    "PROVIDERS",
    "QUEUE_SOURCE",
    "MARKETS",
    "ON_DEMAND",
    "ON_DEMAND_PRICE_SOURCE",
    "ON_DEMAND_PRICE_TTL_SECONDS",
    "SPOT",
    "SPOT_PRICE_SOURCE",
    "SPOT_PRICE_TTL_SECONDS",
    "TENANT_PATTERN",
    "TENANT_RULE",
    "Attempt",
    "AttemptState",
    "Candidate",
    "CloudPool",
    "DataSensitivity",
    "DomainError",
    "FieldError",
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
    "json_path",
    "json_type_name",
    "SettingsCheck",
    "missing_launch_settings",
    "on_demand_price_ttl",
    "preemptible_key",
    "spot_price_key",
    "spot_price_ttl",
    "TaskKind",
    "TaskSpec",
    "TaskState",
    "Throttled",
    "Unavailable",
    "check_attempt_transition",
    "check_task_transition",
    "is_tenant_name",
]
