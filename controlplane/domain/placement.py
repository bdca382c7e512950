"""What ``plan()`` returns: ordered candidates, rejected targets with reasons, and a trace.

Every field is plain data so that a plan is stored verbatim as the task's
receipt and replayed later (``fusionctl explain``, ``policy simulate``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from controlplane.domain.cloud_pool import CloudPool
from controlplane.domain.signals import CLOUD_PROVIDERS
from controlplane.domain.target_storage import TargetStorage

__all__ = ["MARKETS", "ON_DEMAND", "SPOT", "Candidate", "PlacementPlan", "Rejection", "Target"]

#: how a cloud target buys its machines: spot (cheaper, can be refused and taken back) or on-demand
#: (list price, not preempted); the policy's ``targets[].market``
SPOT = "spot"
ON_DEMAND = "on-demand"
MARKETS: tuple[str, ...] = (SPOT, ON_DEMAND)


@dataclass(frozen=True, kw_only=True)
class Target:
    """A named place work can run, as the policy defines it."""

    name: str
    provider: str  # local, kubernetes, aws, azure
    private: bool
    regions: tuple[str, ...] = ()
    zones: tuple[str, ...] = ()
    #: instance types or VM sizes, preferred first
    instance_types: tuple[str, ...] = ()
    max_price_usd_h: float | None = None
    #: a cloud target's market (:data:`MARKETS`); private and local targets keep the default, unused
    market: str = SPOT
    #: PromQL giving the target's GPU utilisation (0..1)
    gpu_utilization_query: str | None = None
    #: provider-specific settings (namespace, image, subnet, resource group, slots, ...)
    settings: dict[str, Any] = field(default_factory=dict)
    #: why nothing can be launched here (a seed form's built-in cloud with no launch settings configured),
    #: or None. plan() rejects such a target ``not_configured``; a full policy's target never has one (it
    #: is refused when the policy is loaded instead)
    not_configured: str | None = None
    #: where the target's workers read and write (the policy's ``storage``); None: no store of its own (a
    #: local target then uses the control plane's output root, any other reaches only remote URIs)
    storage: TargetStorage | None = None
    #: a ``kubernetes`` target's cloud node pool (EKS or AKS); None: a cluster whose nodes are not bought by the
    #: hour (the private cluster). The parser copies its region, instance types and market into the fields above
    cloud: CloudPool | None = None

    @property
    def market_provider(self) -> str | None:
        """The cloud whose market prices this target's machines: its own (aws, azure), its node pool's, or None."""
        if self.cloud is not None:
            return self.cloud.provider
        return self.provider if self.provider in CLOUD_PROVIDERS else None


@dataclass(frozen=True, kw_only=True)
class Candidate:
    """One place to try, in plan order; ``reasons`` say why it is here and at this rank."""

    target: str
    provider: str
    private: bool
    region: str | None = None
    instance_type: str | None = None
    max_price_usd_h: float | None = None
    expected_usd_h: float | None = None
    #: under ``rank: expected_cost``: expected dollars until the task is done here, the chance one try runs it to
    #: the end, and how many launches of this offer the history held (0: the policy's priors alone)
    expected_usd_per_task: float | None = None
    completion_chance: float | None = None
    history_launches: int | None = None
    #: a cloud candidate's market (:data:`MARKETS`): the provider launches spot or on-demand; None off the clouds
    market: str | None = None
    #: candidates sharing a hedge group are launched together; the first to run wins
    hedge_group: int | None = None
    #: the half-open circuit breaker (provider/region/type) this launch would probe; the executor lets
    #: one probe per breaker be in flight at a time
    breaker_probe: str | None = None
    reasons: tuple[str, ...] = ()


@dataclass(frozen=True, kw_only=True)
class Rejection:
    """A target the plan will not use, and why (``code`` is stable, ``detail`` is for people)."""

    target: str
    code: str  # private_data, excluded_by_rule, not_configured, price_above_max, stale_price, no_capacity, ...
    detail: str


@dataclass(frozen=True, kw_only=True)
class PlacementPlan:
    """The decision for one task at one moment."""

    task_id: str
    policy_version: str
    decided_at: datetime
    candidates: tuple[Candidate, ...]
    rejections: tuple[Rejection, ...]
    #: the rules evaluated, in order, with what each did
    trace: tuple[str, ...] = ()
    #: the signal values the decision used, with their age (seconds) at ``decided_at``
    signals_used: dict[str, Any] = field(default_factory=dict)
    #: a plan with no candidate because the deadline rule held on-demand back: plan again no later than this
    replan_by: datetime | None = None

    @property
    def placeable(self) -> bool:
        return bool(self.candidates)
