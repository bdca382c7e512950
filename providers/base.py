"""The one contract every backend implements: local, Kubernetes, AWS EC2 Spot, Azure Spot.

Everything is keyed by the **attempt id**. A provider names or tags what it
starts with it (Job name, EC2 ClientToken and tag, VM name, pid record), so:

- ``launch`` is idempotent: it looks for an existing resource of that
  attempt first and adopts it (``LaunchResult.adopted``) instead of creating
  a second one;
- ``status`` and ``cancel`` need nothing but the attempt id, even after the
  control plane restarted and lost its memory;
- ``cancel`` of something already gone is success;
- ``list_owned`` finds every resource this control plane started, for
  reconciliation.

SDK errors are translated here, at the boundary, into the taxonomy of
:mod:`controlplane.domain.errors` (``InsufficientCapacity``, ``Throttled``,
``InvalidSpec``, ...). Deciding is not a provider's business: it launches
what the executor hands it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol, runtime_checkable

from controlplane.domain import Candidate, InvalidSpec, Target
from controlplane.domain.backend import BackendState, BackendStatus
from controlplane.domain.target_storage import TargetStorage
from controlplane.domain.worker_spec import WorkerSpec

__all__ = [
    "BackendState",
    "BackendStatus",
    "Capacity",
    "LaunchRequest",
    "LaunchResult",
    "OwnedResource",
    "Provider",
    "Quote",
]


@dataclass(frozen=True, kw_only=True)
class LaunchRequest:
    """Everything a provider needs to start one attempt.

    The worker spec arrives checked (:func:`controlplane.domain.worker_spec.parse_worker_spec`,
    or rendered by the scheduler), so a provider never validates it again;
    it sends ``worker_spec.wire_document()``. A spec of another attempt is
    refused here, once, with ``InvalidSpec``.
    """

    attempt_id: str
    task_id: str
    candidate: Candidate
    #: the worker spec (docs/worker-spec.schema.json); holds the callback token
    worker_spec: WorkerSpec
    deadline_seconds: int | None = None
    #: the task's priority (urgent, high, normal, low): a cluster may schedule by it (Kubernetes priority classes)
    priority: str | None = None
    labels: Mapping[str, str] = field(default_factory=dict)
    #: the chosen target's store (the policy's ``targets[].storage``): the Kubernetes provider mounts a
    #: ``pvc`` store into the pod; the URIs in ``worker_spec`` already point into it
    target_storage: TargetStorage | None = None

    def __post_init__(self) -> None:
        if self.worker_spec.attempt_id != self.attempt_id:
            raise InvalidSpec(
                "worker_spec.attempt_id: differs from the launch's attempt id", target=self.candidate.target
            )


@dataclass(frozen=True, kw_only=True)
class LaunchResult:
    backend_ref: str
    #: True when a resource for this attempt already existed and was taken over
    adopted: bool = False


@dataclass(frozen=True, kw_only=True)
class Capacity:
    """Free and total slots (GPUs) of a target; ``None`` where the provider cannot tell."""

    free: int | None
    total: int | None


@dataclass(frozen=True, kw_only=True)
class Quote:
    """The price of running one candidate, per hour, and when it was observed."""

    usd_per_hour: float | None
    observed_at: datetime | None = None


@dataclass(frozen=True, kw_only=True)
class OwnedResource:
    """Something running (or left) on a backend that this control plane started."""

    attempt_id: str
    task_id: str
    backend_ref: str
    state: BackendState


@runtime_checkable
class Provider(Protocol):
    """One backend. Implementations live in ``providers/<name>.py``."""

    name: str

    def capacity(self, target: Target) -> Capacity:
        """Free and total slots of ``target`` now."""
        ...

    def quote(self, candidate: Candidate) -> Quote:
        """What ``candidate`` costs per hour (``None`` for owned capacity)."""
        ...

    def launch(self, request: LaunchRequest) -> LaunchResult:
        """Start the worker for ``request.attempt_id``, or adopt the one already started."""
        ...

    def status(self, attempt_id: str) -> BackendStatus:
        """Where the attempt's resource is; ``LOST`` when it vanished without an outcome."""
        ...

    def cancel(self, attempt_id: str) -> None:
        """Stop and remove the attempt's resource; already gone is success."""
        ...

    def list_owned(self) -> list[OwnedResource]:
        """Every resource this control plane started on this backend."""
        ...
