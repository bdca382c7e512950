"""Simulated providers: the provider contract (providers/base.py) answered from the simulated world.

One per provider name (``kubernetes``, ``local``, ``aws``, ``azure``), all
over one :class:`~simulator.world.SimWorld`. They pass the same contract
suite as the real providers (tests/contract/test_simulated_provider.py):
``launch`` is idempotent on the attempt id, ``cancel`` of something gone is
success, ``status`` of an unknown attempt is LOST. The scheduler cannot tell
them from the real ones; that is the point.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from controlplane.domain import ON_DEMAND, Candidate, Target
from providers.base import BackendState, BackendStatus, Capacity, LaunchRequest, LaunchResult, OwnedResource, Quote
from simulator.markets import MarketMode
from simulator.world import SimWorld

__all__ = ["SimulatedProvider", "simulated_providers"]


class SimulatedProvider:
    def __init__(self, name: str, world: SimWorld, targets: Callable[[], Mapping[str, Target]]) -> None:
        self.name, self.world, self._targets = name, world, targets

    def _target(self, name: str) -> Target:
        target = self._targets().get(name)
        if target is None or target.provider != self.name:
            # the scheduler only sends candidates of its policy's targets; anything else is a wiring bug
            raise KeyError(f"{self.name}: no target {name!r} in the simulated policy")
        return target

    def capacity(self, target: Target) -> Capacity:
        cloud = target.market_provider
        if cloud is None:
            return Capacity(free=self.world.private_free(), total=self.world.private_gpus)
        # a pod on a cloud node pool draws on its cloud's market like a VM
        markets = [self.world.markets.get(f"{cloud}/{region}") for region in target.regions]
        mode: MarketMode = "on_demand" if target.market == ON_DEMAND else self.world.mode
        free = [market.free(self.world.now_s, mode) for market in markets if market is not None]
        if not free or any(value is None for value in free):
            return Capacity(free=None, total=None)
        return Capacity(free=sum(value for value in free if value is not None), total=None)

    def quote(self, candidate: Candidate) -> Quote:
        target = self._targets().get(candidate.target)
        cloud = target.market_provider if target is not None else None
        if cloud is None or candidate.region is None:
            return Quote(usd_per_hour=None)
        mode: MarketMode | None = "on_demand" if candidate.market == ON_DEMAND else None
        price = self.world.prices.hourly(
            cloud, candidate.region, None, candidate.instance_type or "default", self.world.now_s, mode
        )
        return Quote(usd_per_hour=price, observed_at=self.world.prices.at(self.world.now_s))

    def launch(self, request: LaunchRequest) -> LaunchResult:
        adopted = request.attempt_id in self.world.instances
        target = self._target(request.candidate.target)
        self.world.launch(request.attempt_id, request.task_id, target, request.candidate, request.priority)
        return LaunchResult(backend_ref=f"sim:{self.name}:{request.attempt_id}", adopted=adopted)

    def status(self, attempt_id: str) -> BackendStatus:
        instance = self.world.instances.get(attempt_id)
        if instance is not None and instance.provider != self.name:
            return BackendStatus(state=BackendState.LOST, reason="unknown attempt: never launched here")
        return self.world.status(attempt_id)

    def cancel(self, attempt_id: str) -> None:
        instance = self.world.instances.get(attempt_id)
        if instance is not None and instance.provider == self.name:
            self.world.cancel(attempt_id)

    def list_owned(self) -> list[OwnedResource]:
        return [
            OwnedResource(
                attempt_id=instance.attempt_id,
                task_id=instance.task_id,
                backend_ref=f"sim:{self.name}:{instance.attempt_id}",
                state=instance.state,
            )
            for instance in self.world.instances.values()
            if instance.provider == self.name
        ]


def simulated_providers(world: SimWorld, targets: Callable[[], Mapping[str, Target]]) -> dict[str, SimulatedProvider]:
    return {name: SimulatedProvider(name, world, targets) for name in ("kubernetes", "local", "aws", "azure")}
