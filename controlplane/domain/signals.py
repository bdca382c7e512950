"""Live signals as the planner sees them: one consistent snapshot per planning batch."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime

__all__ = [
    "BUDGET_SOURCE",
    "CAPACITY_SOURCE",
    "CLOUD_PROVIDERS",
    "GPU_UTILIZATION_SOURCE",
    "ON_DEMAND_PRICE_SOURCE",
    "PREEMPTIBLE_SOURCE",
    "ON_DEMAND_PRICE_TTL_SECONDS",
    "PROVIDERS",
    "QUEUE_SOURCE",
    "SPOT_PRICE_SOURCE",
    "SPOT_PRICE_TTL_SECONDS",
    "SignalSample",
    "SignalSnapshot",
    "on_demand_price_ttl",
    "preemptible_key",
    "spot_price_key",
    "spot_price_ttl",
]

# The snapshot's vocabulary, shared by the pollers that write it and the planner that reads it.
#: ``free_gpus/<target>``: a target's free GPUs (the local provider's free slots)
CAPACITY_SOURCE = "free_gpus"
#: ``preemptible_gpus/<target>/<priority>``: GPUs on a full Kubernetes target held by pods of a lower priority than
#: that task priority's PriorityClass, which that class may preempt (none: the class never preempts, or no mapping)
PREEMPTIBLE_SOURCE = "preemptible_gpus"
#: ``gpu_utilization/<target>``: 0..1
GPU_UTILIZATION_SOURCE = "gpu_utilization"
#: ``spot_price/<provider>/<region>/<instance type>``: USD per hour
SPOT_PRICE_SOURCE = "spot_price"
#: ``on_demand_price/<provider>/<region>/<instance type>``: USD per hour, the list price (same key as spot)
ON_DEMAND_PRICE_SOURCE = "on_demand_price"
#: ``queue/depth``: tasks waiting to be placed
QUEUE_SOURCE = "queue"
#: ``budget/spent_today_usd``: cloud spend so far today (UTC)
BUDGET_SOURCE = "budget"
#: every provider a target can name
PROVIDERS: tuple[str, ...] = ("local", "kubernetes", "aws", "azure")
#: providers whose capacity is bought by the hour (spot prices apply, private data never goes there)
CLOUD_PROVIDERS: tuple[str, ...] = ("aws", "azure")


#: How long one provider's spot price stays fresh: the one TTL of that signal. The price pollers stamp
#: their samples with it, ``plan()`` applies it (capped by a policy's ``price_ttl_seconds`` when one is
#: set), and ``fusionctl signals`` and ``explain`` show the TTL plan() applied. Each is longer than its
#: poller's interval + jitter + timeout (``serve`` refuses a schedule that is not), so a poller that
#: works never lets its price go stale. EC2 Spot prices move in small steps a few times a day; Azure
#: revises its retail Spot prices rather than auctioning them, and is polled every 30 minutes.
SPOT_PRICE_TTL_SECONDS: Mapping[str, float] = {"aws": 600.0, "azure": 3600.0}
#: a spot price of a provider not in the table (none today)
_OTHER_SPOT_PRICE_TTL_SECONDS = 600.0


def spot_price_ttl(provider: str) -> float:
    """The TTL of ``provider``'s spot prices (:data:`SPOT_PRICE_TTL_SECONDS`)."""
    return SPOT_PRICE_TTL_SECONDS.get(provider, _OTHER_SPOT_PRICE_TTL_SECONDS)


#: How long an on-demand list price stays fresh. List prices change a few times a year, and both price
#: APIs (the AWS Price List, Azure Retail Prices) are polled every few hours; a day keeps a working
#: poller's price fresh through a long outage of the price API itself.
ON_DEMAND_PRICE_TTL_SECONDS: Mapping[str, float] = {"aws": 86400.0, "azure": 86400.0}


def on_demand_price_ttl(provider: str) -> float:
    """The TTL of ``provider``'s on-demand list prices (:data:`ON_DEMAND_PRICE_TTL_SECONDS`)."""
    return ON_DEMAND_PRICE_TTL_SECONDS.get(provider, 86400.0)


def preemptible_key(target: str, priority: str) -> str:
    """The snapshot key of the GPUs a pod of ``priority`` could take on ``target`` by preempting lower ones."""
    return f"{target}/{priority}"


def spot_price_key(provider: str, region: str | None, instance_type: str | None) -> str:
    """The snapshot key of one spot price (``-`` for an unknown region or type)."""
    return f"{provider}/{region or '-'}/{instance_type or '-'}"


@dataclass(frozen=True, kw_only=True)
class SignalSample:
    """One observed value: ``source`` (prometheus, aws_spot, azure_spot, capacity, queue), ``key``."""

    source: str
    key: str
    value: float
    observed_at: datetime
    ttl_seconds: float

    def age_seconds(self, now: datetime) -> float:
        return max((now - self.observed_at).total_seconds(), 0.0)

    def is_stale(self, now: datetime) -> bool:
        return self.age_seconds(now) > self.ttl_seconds


@dataclass(frozen=True, kw_only=True)
class SignalSnapshot:
    """Every sample known at ``taken_at``, keyed ``source/key``."""

    taken_at: datetime
    samples: Mapping[str, SignalSample] = field(default_factory=dict)

    def get(self, source: str, key: str) -> SignalSample | None:
        return self.samples.get(f"{source}/{key}")

    def fresh(self, source: str, key: str, now: datetime) -> SignalSample | None:
        """The sample if it exists and is within its TTL at ``now``; stale values are never used."""
        sample = self.get(source, key)
        return sample if sample is not None and not sample.is_stale(now) else None
