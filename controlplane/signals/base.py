"""What every signal source implements, and what it is asked to poll.

A source turns one backend (Prometheus, EC2's spot price history, Azure's
Retail Prices API, a Kubernetes API server, the store) into
:class:`~controlplane.domain.SignalSample` values. The poll runner
(``controlplane.signals.hub``) calls it on its own interval with a timeout,
jitter and backoff; the source itself only has to answer one poll and say
what went wrong.

What to poll comes from the policy in force (:func:`wanted_from_targets`),
so adding a target or an instance type to the policy starts its signals on
the next poll, with no separate configuration to keep in step.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

from controlplane.domain import ON_DEMAND, SignalSample, Target

__all__ = [
    "GPU_MEMORY_SOURCE",
    "PollResult",
    "SignalSource",
    "SourceUnavailable",
    "Wanted",
    "wanted_from_targets",
]

#: ``gpu_memory_used/<target>``: fraction of GPU memory in use (0..1), from DCGM
GPU_MEMORY_SOURCE = "gpu_memory_used"


@dataclass(frozen=True, kw_only=True)
class Wanted:
    """Everything the sources should observe now."""

    #: every target of the policy, by name (Prometheus reads each one's query and settings)
    targets: Mapping[str, Target] = field(default_factory=dict)
    #: (region, instance type) pairs to price on EC2 Spot, sorted
    aws_offers: tuple[tuple[str, str], ...] = ()
    #: (region, VM size) pairs to price on Azure Spot, sorted
    azure_offers: tuple[tuple[str, str], ...] = ()
    #: (region, instance type) pairs of aws targets with ``market: on-demand``, to price at list price, sorted
    aws_on_demand_offers: tuple[tuple[str, str], ...] = ()
    #: (region, VM size) pairs of azure targets with ``market: on-demand``, sorted
    azure_on_demand_offers: tuple[tuple[str, str], ...] = ()

    @property
    def kubernetes(self) -> list[Target]:
        """The clusters whose free GPUs bound what they take: not a cloud node pool, whose autoscaler brings
        nodes on demand (none free is its normal idle state; a refusal shows on the pod, as a capacity error)."""
        return [t for t in self.targets.values() if t.provider == "kubernetes" and t.cloud is None]


def wanted_from_targets(targets: Sequence[Target]) -> Wanted:
    spot: dict[str, set[tuple[str, str]]] = {"aws": set(), "azure": set()}
    on_demand: dict[str, set[tuple[str, str]]] = {"aws": set(), "azure": set()}
    for target in targets:
        # a kubernetes target on an EKS or AKS node pool is priced from its cloud's market, like a VM target
        cloud = target.market_provider
        if cloud not in spot:
            continue
        offers = {(region, size) for region in target.regions for size in target.instance_types}
        spot[cloud] |= offers
        if target.market == ON_DEMAND:
            on_demand[cloud] |= offers
    return Wanted(
        targets={target.name: target for target in targets},
        aws_offers=tuple(sorted(spot["aws"])),
        azure_offers=tuple(sorted(spot["azure"])),
        aws_on_demand_offers=tuple(sorted(on_demand["aws"])),
        azure_on_demand_offers=tuple(sorted(on_demand["azure"])),
    )


@dataclass(frozen=True, kw_only=True)
class PollResult:
    """One poll's samples, and the parts that failed (the rest still counts).

    A source raises only when nothing at all could be read (backend down,
    timeout); a partial failure (one region of five) comes back as a
    ``problem`` next to the samples that did arrive.
    """

    samples: Sequence[SignalSample] = ()
    problems: Sequence[str] = ()


class SourceUnavailable(RuntimeError):
    """Nothing at all could be read in one poll; ``problems`` lists why for each part that was tried."""

    def __init__(self, what: str, problems: Sequence[str]) -> None:
        super().__init__(f"{what}: nothing could be read: " + "; ".join(problems))
        self.problems = tuple(problems)


class SignalSource(Protocol):
    #: the source's name in metrics, logs and ``fusionctl signals`` (prometheus, aws_spot, ...)
    name: str

    def poll(self, wanted: Wanted, *, timeout_s: float, clock: Callable[[], datetime]) -> PollResult:
        """Read the backend once, within ``timeout_s``; ``clock()`` stamps ``observed_at``."""
        ...
