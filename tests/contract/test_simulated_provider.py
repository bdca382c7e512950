"""The simulator's providers pass the same contract suite as the real ones (a private pool and a spot market)."""

from __future__ import annotations

from pathlib import Path

import pytest

from controlplane.domain import InsufficientCapacity, Target
from providers.base import BackendState, Provider
from simulator.markets import Market, PriceBook, Zone
from simulator.providers import SimulatedProvider
from simulator.scenario import PrivateCluster, World
from simulator.world import SimWorld
from tests.contract.provider_contract import TARGET, ProviderContract, launch_request
from tests.support.sim import StepTrace, at

SPOT = Target(name="spot", provider="aws", private=False, regions=("us-east-1",), instance_types=("p3.2xlarge",))
WORLD = World(private=PrivateCluster(gpus=2), catalog_spot={"aws": {"p3.2xlarge": 0.9}})


def world(*, zone_capacity: int = 4) -> SimWorld:
    market = Market(
        provider="aws",
        region="us-east-1",
        zones=[Zone(name="us-east-1a", trace=StepTrace([(0.0, 1)]), per_unit=zone_capacity, trace_offset_s=0.0)],
        speed={},
        latency=(60.0, 60.0),
    )
    return SimWorld(
        private=WORLD.private,
        markets={"aws/us-east-1": market},
        prices=PriceBook(WORLD, None, mode="spot", at=at),
        mode="spot",
        seed=1,
        unknown_task_work_s=3600.0,
    )


def provider_for(target: Target, sim: SimWorld) -> SimulatedProvider:
    return SimulatedProvider(target.provider, sim, lambda: {target.name: target})


class TestSimulatedPrivatePoolContract(ProviderContract):
    target = TARGET  # a local target: its slots are the private cluster's GPUs

    def make_provider(self, tmp_path: Path) -> Provider:
        return provider_for(TARGET, world())


class TestSimulatedSpotMarketContract(ProviderContract):
    target = SPOT

    def make_provider(self, tmp_path: Path) -> Provider:
        return provider_for(SPOT, world())


def test_a_full_zone_refuses_with_insufficient_capacity_and_a_cancel_frees_it() -> None:
    sim = world(zone_capacity=1)
    provider = provider_for(SPOT, sim)
    provider.launch(launch_request("att-1", on=SPOT))
    with pytest.raises(InsufficientCapacity, match="spot capacity"):
        provider.launch(launch_request("att-2", on=SPOT))
    provider.cancel("att-1")
    sim.apply_cancels()
    assert provider.launch(launch_request("att-2", on=SPOT)).backend_ref


def test_another_providers_attempt_is_unknown_here() -> None:
    sim = world()
    provider_for(SPOT, sim).launch(launch_request("att-aws", on=SPOT))
    local = provider_for(TARGET, sim)
    assert local.status("att-aws").state is BackendState.LOST
    local.cancel("att-aws")
    sim.apply_cancels()
    assert sim.status("att-aws").state is BackendState.PENDING  # the other provider's instance was not touched
