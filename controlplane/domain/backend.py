"""What a backend says about one attempt's resource: its state, and the facts that come with it.

Providers produce these (``providers.base`` re-exports them for the
provider contract); the pure :func:`controlplane.domain.verdict.verdict`
reads them, so they live in the domain.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

__all__ = ["BackendState", "BackendStatus", "unschedulable_seconds"]


class BackendState(StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    PREEMPTED = "preempted"
    #: the resource is gone and nobody reported an outcome (node died, VM deleted)
    LOST = "lost"

    @property
    def is_final(self) -> bool:
        return self not in (BackendState.PENDING, BackendState.RUNNING)


@dataclass(frozen=True, kw_only=True)
class BackendStatus:
    """One answer of ``Provider.status``; ``reason`` is for people, the other fields are for deciding."""

    state: BackendState
    reason: str | None = None
    exit_code: int | None = None
    #: seconds a PENDING attempt has waited for a node that fits (a Kubernetes pod ``Unschedulable``);
    #: None where the backend does not know of such a wait
    unschedulable_for_s: int | None = None
    #: a PENDING attempt whose cloud refused the capacity it waits for (Karpenter ``InsufficientCapacity``, an
    #: autoscaler that will not scale up past the node pool's wait): the cloud's words. The attempt fails over
    #: and counts against its offer's breaker, like a VM launch refused ``InsufficientInstanceCapacity``
    capacity_refusal: str | None = None


def unschedulable_seconds(status: BackendStatus) -> int | None:
    """How long a PENDING attempt has been unschedulable; None for any other state or when not known."""
    return status.unschedulable_for_s if status.state is BackendState.PENDING else None
