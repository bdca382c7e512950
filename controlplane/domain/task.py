"""Tasks (what a submitter asked for) and attempts (one try on one backend)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from controlplane.domain.states import AttemptState, DataSensitivity, Priority, TaskKind, TaskState

__all__ = ["Attempt", "Task", "TaskSpec"]


@dataclass(frozen=True, kw_only=True)
class TaskSpec:
    """The submitter's request, as validated at the API. Never changes after submission."""

    tenant: str
    kind: TaskKind
    source_uri: str
    target_uri: str
    output_uri: str
    priority: Priority = Priority.NORMAL
    data_sensitivity: DataSensitivity = DataSensitivity.INTERNAL
    deadline_seconds: int | None = None
    budget_usd: float | None = None
    #: swapper, face_selector, execution_provider, encoder, quality, ... (the worker spec's options)
    options: Mapping[str, Any] = field(default_factory=dict)
    labels: Mapping[str, str] = field(default_factory=dict)
    #: input size in bytes when known (policies may match on it)
    input_bytes: int | None = None
    #: where the outcome is POSTed (the task's own, else its tenant's default at submission); None: nobody
    notify_url: str | None = None
    #: optional states told besides the outcomes (``running``); see controlplane/domain/webhooks.py
    notify_events: tuple[str, ...] = ()


@dataclass(frozen=True, kw_only=True)
class Task:
    """A task as stored: its spec, where it is in its life, and when it got there."""

    id: str
    spec: TaskSpec
    state: TaskState
    created_at: datetime
    updated_at: datetime
    #: why it failed or was cancelled, in the operator's words
    reason: str | None = None
    #: the target it ran (or is running) on, once placed
    target: str | None = None
    #: why a queued task is waiting for a placement (e.g. ``local: no_capacity``); None when not waiting
    queue_reason: str | None = None
    #: when its current wait began
    queued_since: datetime | None = None


@dataclass(frozen=True, kw_only=True)
class Attempt:
    """One launch of the worker for a task on one candidate.

    The attempt id names the backend resource (Job name, ClientToken, VM
    name), which is what makes launches idempotent.
    """

    id: str
    task_id: str
    number: int
    target: str
    provider: str
    state: AttemptState
    created_at: datetime
    updated_at: datetime
    region: str | None = None
    instance_type: str | None = None
    #: the provider's handle for what it started (pod/job name, instance id, VM id, pid)
    backend_ref: str | None = None
    reason: str | None = None
    exit_code: int | None = None
    #: the number of the first attempt of its hedged launch; None when it was launched alone
    hedge_group: int | None = None
    #: where its worker writes the output (the chosen target's store or the task's own URI); None until sent
    output_uri: str | None = None
