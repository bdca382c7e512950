"""Signal sources that read the simulated world, polled through the product's own ``SignalHub``.

- ``sim_spot``: the spot price of every (region, instance type) the policy
  wants, from the price history (else the catalog), under the same keys the
  AWS and Azure price sources use, so ``plan()`` reads them unchanged. The
  static-cheapest baseline runs without it (no live signals at all).
  It publishes each offer's on-demand list price too
  (``on_demand_price/...``, from the scenario's ``world.on_demand``), as the
  product's on-demand price sources do.
- ``sim_cluster``: the private cluster's GPU utilisation (GPUs held / GPUs
  there), per private target, as Prometheus would report DCGM's; when the
  cluster's PriorityClasses preempt (``world.private.preemption``), the GPUs
  each task priority's class may preempt on each private kubernetes target
  (``preemptible_gpus/<target>/<priority>``), as the kubernetes source
  counts them.
- ``queue``: the product's own queue-depth source over the simulated store.

The hub polls each on its interval of simulated time (the runner asks it),
so prices and load are as stale as they would be in production.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from controlplane.domain import (
    GPU_UTILIZATION_SOURCE,
    ON_DEMAND_PRICE_SOURCE,
    PREEMPTIBLE_SOURCE,
    SPOT_PRICE_SOURCE,
    SignalSample,
    on_demand_price_ttl,
    preemptible_key,
    spot_price_key,
)
from controlplane.domain.signals import spot_price_ttl
from controlplane.signals.base import PollResult, Wanted
from simulator.world import SimWorld, class_rank

__all__ = ["SimClusterLoad", "SimSpotPrices"]


class SimSpotPrices:
    name = "sim_spot"

    def __init__(self, world: SimWorld) -> None:
        self.world = world

    def poll(self, wanted: Wanted, *, timeout_s: float, clock: Callable[[], datetime]) -> PollResult:
        now = clock()
        samples = []
        for provider, offers in (("aws", wanted.aws_offers), ("azure", wanted.azure_offers)):
            for region, instance_type in offers:
                listed = self.world.prices.hourly(provider, region, None, instance_type, self.world.now_s, "on_demand")
                if listed is not None:
                    samples.append(
                        SignalSample(
                            source=ON_DEMAND_PRICE_SOURCE,
                            key=spot_price_key(provider, region, instance_type),
                            value=listed,
                            observed_at=now,
                            ttl_seconds=on_demand_price_ttl(provider),
                        )
                    )
                price = self.world.prices.hourly(provider, region, None, instance_type, self.world.now_s)
                if price is None:
                    continue  # unpriced: missing, as a price API that does not list the offer
                samples.append(
                    SignalSample(
                        source=SPOT_PRICE_SOURCE,
                        key=spot_price_key(provider, region, instance_type),
                        value=price,
                        observed_at=now,
                        ttl_seconds=spot_price_ttl(provider),
                    )
                )
        return PollResult(samples=samples)


class SimClusterLoad:
    name = "sim_cluster"

    def __init__(self, world: SimWorld, *, ttl_seconds: float = 120.0) -> None:
        self.world, self.ttl_seconds = world, ttl_seconds

    def poll(self, wanted: Wanted, *, timeout_s: float, clock: Callable[[], datetime]) -> PollResult:
        now = clock()
        there = self.world.private_gpus
        busy = there - self.world.private_free()
        utilization = 1.0 if there == 0 else busy / there
        samples = [
            SignalSample(
                source=GPU_UTILIZATION_SOURCE,
                key=target.name,
                value=utilization,
                observed_at=now,
                ttl_seconds=self.ttl_seconds,
            )
            for target in wanted.targets.values()
            if target.market_provider is None  # a cloud node pool is not the operator's own GPUs
        ]
        if self.world.private.preemption:
            # what the kubernetes source counts from the cluster's pods and PriorityClasses
            samples += [
                SignalSample(
                    source=PREEMPTIBLE_SOURCE,
                    key=preemptible_key(target.name, priority),
                    value=float(self.world.preemptible(class_rank(target, priority))),
                    observed_at=now,
                    ttl_seconds=self.ttl_seconds,
                )
                for target in wanted.targets.values()
                if target.market_provider is None and target.provider == "kubernetes"
                for priority in sorted(target.settings.get("priority_classes") or {})
            ]
        return PollResult(samples=samples)
