"""The simulated world on its own: boot, run, finish, preemption by trace, checkpoints, billing, private queueing."""

from __future__ import annotations

from datetime import datetime

import pytest

from controlplane.domain import Candidate, CloudPool, InsufficientCapacity, Target
from providers.base import BackendState
from simulator.markets import Market, MarketMode, PriceBook, Zone
from simulator.scenario import LatencyRange, Outage, PrivateCluster, World
from simulator.world import SimWorld, TaskWork
from tests.support.sim import StepTrace, at

SPOT = Target(name="spot", provider="aws", private=False, regions=("r1",), instance_types=("gpu.x",))
K8S = Target(name="onprem", provider="kubernetes", private=True)
LOCAL = Target(name="home", provider="local", private=True)


class Prices:
    """$1/h until 1000 s, then $3/h."""

    def price_at(self, provider: str, region: str, instance_type: str, when: datetime) -> float | None:
        return 1.0 if when < at(1000) else 3.0

    def next_change_after(self, provider: str, region: str, instance_type: str, when: datetime) -> datetime | None:
        return at(1000) if when < at(1000) else None


def make(
    steps: list[tuple[float, int]],
    *,
    gpus: int = 2,
    mode: MarketMode = "spot",
    latency: float = 10.0,
    outages: tuple[Outage, ...] = (),
    preemption: bool = False,
) -> SimWorld:
    world = World(
        private=PrivateCluster(
            gpus=gpus, launch_latency=LatencyRange(min_s=5, max_s=5), outages=outages, preemption=preemption
        ),
        on_demand={"aws": {"gpu.x": 2.0}},
    )
    market = Market(
        provider="aws",
        region="r1",
        speed={},
        latency=(latency, latency),
        zones=[Zone(name="r1a", trace=StepTrace(steps), per_unit=1, trace_offset_s=0.0)],
    )
    return SimWorld(
        private=world.private,
        markets={"aws/r1": market},
        prices=PriceBook(world, Prices(), mode=mode, at=at),
        mode=mode,
        seed=3,
    )


def candidate(target: Target) -> Candidate:
    return Candidate(
        target=target.name,
        provider=target.provider,
        private=target.private,
        region=target.regions[0] if target.regions else None,
        instance_type="gpu.x",
    )


def test_an_instance_boots_runs_its_work_and_is_billed_by_the_price_steps() -> None:
    world = make([(0, 1)])
    world.tasks["t1"] = TaskWork(work_s=1990.0, segment_s=None)
    world.launch("a1", "t1", SPOT, candidate(SPOT))
    assert world.status("a1").state is BackendState.PENDING
    world.advance_to(10)
    assert world.status("a1").state is BackendState.RUNNING
    assert world.called_in == ["a1"]
    world.advance_to(1999)
    assert world.status("a1").state is BackendState.RUNNING
    world.advance_to(2000)
    assert world.status("a1").state is BackendState.SUCCEEDED
    # billed from the request: 1000 s at $1/h, then 1000 s at $3/h
    assert world.books.usd_by_target == {"spot": pytest.approx((1000 * 1 + 1000 * 3) / 3600)}


def test_a_zone_going_dry_preempts_the_newest_first_and_refuses_launches() -> None:
    world = make([(0, 2), (100, 1), (200, 0)])
    for n in (1, 2):
        world.tasks[f"t{n}"] = TaskWork(work_s=10_000.0, segment_s=None)
        world.launch(f"a{n}", f"t{n}", SPOT, candidate(SPOT))
    world.advance_to(100)
    assert [world.status(a).state for a in ("a1", "a2")] == [BackendState.RUNNING, BackendState.PREEMPTED]
    world.advance_to(200)
    assert world.status("a1").state is BackendState.PREEMPTED
    assert world.books.preemptions == 2
    # both ran from 10 s: 90 s and 190 s of work thrown away (images keep nothing)
    assert world.books.gpu_s_lost == pytest.approx(90 + 190)
    world.tasks["t3"] = TaskWork(work_s=1.0, segment_s=None)
    with pytest.raises(InsufficientCapacity):
        world.launch("a3", "t3", SPOT, candidate(SPOT))


def test_a_preempted_video_keeps_its_finished_segments_for_the_next_attempt() -> None:
    world = make([(0, 1), (105, 0), (300, 1)])
    world.tasks["v"] = TaskWork(work_s=200.0, segment_s=30.0)
    world.launch("a1", "v", SPOT, candidate(SPOT))
    world.advance_to(105)  # ran 95 s: three 30 s segments committed, 5 s lost
    assert world.tasks["v"].committed_s == 90.0
    assert world.books.gpu_s_lost == pytest.approx(5.0)
    world.advance_to(300)
    world.launch("a2", "v", SPOT, candidate(SPOT))
    world.advance_to(310 + 109.9)
    assert world.status("a2").state is BackendState.RUNNING
    world.advance_to(310 + 110)  # only the 110 s left
    assert world.status("a2").state is BackendState.SUCCEEDED


def test_on_demand_mode_never_preempts_and_bills_the_on_demand_price() -> None:
    world = make([(0, 1), (50, 0)], mode="on_demand")
    world.tasks["t"] = TaskWork(work_s=3590.0, segment_s=None)
    world.launch("a1", "t", SPOT, candidate(SPOT))
    world.launch("a1", "t", SPOT, candidate(SPOT))  # the same attempt: adopted, not a second instance
    world.advance_to(3600)
    assert world.status("a1").state is BackendState.SUCCEEDED
    assert world.books.preemptions == 0
    assert world.books.usd_by_target == {"spot": pytest.approx(2.0)}


def test_a_full_cluster_queues_pods_in_order_and_says_how_long_they_waited() -> None:
    world = make([(0, 0)], gpus=1)
    for n in (1, 2, 3):
        world.tasks[f"t{n}"] = TaskWork(work_s=100.0, segment_s=None)
        world.launch(f"a{n}", f"t{n}", K8S, candidate(K8S))
    world.advance_to(50)
    assert world.status("a2").unschedulable_for_s == 50
    world.advance_to(105)  # a1: 5 s boot + 100 s
    assert world.status("a1").state is BackendState.SUCCEEDED
    assert world.status("a2").state is BackendState.PENDING
    assert world.status("a2").unschedulable_for_s is None
    world.advance_to(110)
    assert world.status("a2").state is BackendState.RUNNING
    assert world.status("a3").unschedulable_for_s == 110


def test_with_priority_classes_the_cluster_starts_the_most_urgent_waiting_pod_first() -> None:
    classed = Target(
        name="onprem", provider="kubernetes", private=True, settings={"priority_classes": {"urgent": "u", "high": "h"}}
    )
    world = make([(0, 0)], gpus=1)
    for n, priority in enumerate(("normal", "low", "high", "urgent", "urgent"), start=1):
        world.tasks[f"t{n}"] = TaskWork(work_s=100.0, segment_s=None)
        world.launch(f"a{n}", f"t{n}", classed, candidate(classed), priority)
    started = []
    for t in range(105, 600, 105):
        world.advance_to(t + 5)
        started += [a for a in ("a2", "a3", "a4", "a5") if world.status(a).state is BackendState.RUNNING]
    # urgent (oldest first), then high; normal and low share the unlisted class: arrival order
    assert started == ["a4", "a5", "a3", "a2"]


CLASSED = Target(
    name="onprem",
    provider="kubernetes",
    private=True,
    settings={"priority_classes": {"urgent": "u", "high": "h", "normal": "n"}},
)


def _fill(world: SimWorld, priorities: tuple[str, ...]) -> None:
    for n, priority in enumerate(priorities, start=1):
        world.tasks[f"t{n}"] = TaskWork(work_s=1000.0, segment_s=None)
        world.launch(f"a{n}", f"t{n}", CLASSED, candidate(CLASSED), priority)
        world.advance_to(10 * n)


def test_with_preemption_a_pod_takes_the_gpu_of_the_newest_pod_of_the_lowest_class_below_it() -> None:
    world = make([(0, 0)], gpus=3, preemption=True)
    _fill(world, ("normal", "low", "low"))  # a3 is the newest of the lowest class (low: no class of its own)
    assert world.preemptible(0) == 3  # an urgent pod may take any of them
    assert world.preemptible(2) == 2  # a normal one only the low ones
    world.tasks["t9"] = TaskWork(work_s=100.0, segment_s=None)
    world.launch("a9", "t9", CLASSED, candidate(CLASSED), "high")
    victim = world.status("a3")
    assert victim.state is BackendState.PREEMPTED
    assert victim.reason is not None
    assert "PriorityClass" in victim.reason
    assert [world.status(a).state for a in ("a1", "a2")] == [BackendState.RUNNING] * 2
    world.advance_to(world.now_s + 5)
    assert world.status("a9").state is BackendState.RUNNING
    # nothing below urgent's class is left but a normal and a low pod; a normal pod finds only the low one
    assert world.preemptible(2) == 1


def test_with_preemption_a_pod_never_takes_the_gpu_of_its_own_class_or_a_higher_one() -> None:
    world = make([(0, 0)], gpus=2, preemption=True)
    _fill(world, ("urgent", "high"))
    assert world.preemptible(1) == 0
    world.tasks["t9"] = TaskWork(work_s=100.0, segment_s=None)
    world.launch("a9", "t9", CLASSED, candidate(CLASSED), "high")
    world.advance_to(world.now_s + 5)
    assert [world.status(a).state for a in ("a1", "a2")] == [BackendState.RUNNING] * 2
    assert world.status("a9").state is BackendState.PENDING


def test_without_preemption_or_on_the_local_provider_a_full_cluster_only_queues() -> None:
    world = make([(0, 0)], gpus=1)
    _fill(world, ("low",))
    world.tasks["t9"] = TaskWork(work_s=100.0, segment_s=None)
    world.launch("a9", "t9", CLASSED, candidate(CLASSED), "urgent")
    world.advance_to(world.now_s + 5)
    assert world.status("a1").state is BackendState.RUNNING
    assert world.status("a9").state is BackendState.PENDING
    local = make([(0, 0)], gpus=1, preemption=True)
    local.tasks["t1"] = TaskWork(work_s=1000.0, segment_s=None)
    local.launch("a1", "t1", LOCAL, candidate(LOCAL), "low")
    local.advance_to(10)
    with pytest.raises(InsufficientCapacity):
        local.launch("a2", "t1", LOCAL, candidate(LOCAL), "urgent")
    assert local.status("a1").state is BackendState.RUNNING
    # nor does a pod evict the local provider's worker: it shares the GPUs, it is not the cluster's
    assert local.preemptible(0) == 0
    local.launch("a3", "t1", CLASSED, candidate(CLASSED), "urgent")
    local.advance_to(20)
    assert local.status("a1").state is BackendState.RUNNING
    assert local.status("a3").state is BackendState.PENDING


def test_on_demand_instances_of_a_spot_world_live_outside_the_trace_and_pay_the_list_price() -> None:
    on_demand = Target(name="od", provider="aws", private=False, regions=("r1",), market="on-demand")
    world = make([(0, 0)])  # no spot capacity at all
    world.tasks["t"] = TaskWork(work_s=3590.0, segment_s=None)
    world.launch("a1", "t", on_demand, candidate(on_demand))
    with pytest.raises(InsufficientCapacity):
        world.launch("a2", "t", SPOT, candidate(SPOT))
    world.advance_to(3600)
    assert world.status("a1").state is BackendState.SUCCEEDED
    assert world.books.usd_by_target == {"od": pytest.approx(2.0)}  # $2/h on-demand, for the hour from the request


def test_the_local_provider_refuses_when_the_cluster_is_full() -> None:
    world = make([(0, 0)], gpus=1)
    world.tasks["t"] = TaskWork(work_s=100.0, segment_s=None)
    world.launch("a1", "t", LOCAL, candidate(LOCAL))
    with pytest.raises(InsufficientCapacity, match="private GPUs"):
        world.launch("a2", "t", LOCAL, candidate(LOCAL))


def test_a_private_outage_loses_the_newest_work_and_gives_the_gpus_back_later() -> None:
    world = make([(0, 0)], gpus=2, outages=(Outage(at_hours=0.1, gpus=1, for_hours=0.1),))
    for n in (1, 2):
        world.tasks[f"t{n}"] = TaskWork(work_s=10_000.0, segment_s=None)
        world.launch(f"a{n}", f"t{n}", K8S, candidate(K8S))
    world.advance_to(360)
    assert [world.status(a).state for a in ("a1", "a2")] == [BackendState.RUNNING, BackendState.LOST]
    assert world.private_free() == 0
    assert world.private_gpus == 1
    world.advance_to(720)
    assert world.private_gpus == 2
    assert world.private_free() == 1


def test_a_cancel_is_seen_at_once_and_carried_out_in_launch_order() -> None:
    world = make([(0, 3)])
    for n in (1, 2):
        world.tasks[f"t{n}"] = TaskWork(work_s=100.0, segment_s=None)
        world.launch(f"a{n}", f"t{n}", SPOT, candidate(SPOT))
    world.cancel("a2")
    world.cancel("a1")
    assert world.status("a2").state is BackendState.FAILED
    world.apply_cancels()
    assert [world.instances[a].ended_s for a in ("a1", "a2")] == [0.0, 0.0]
    assert world.markets["aws/r1"].free(0.0, "spot") == 3


class ZonePrices:
    """Zone rows only, as EC2's spot price history gives them: r1a $0.9/h, r1b $0.5/h until 1000 s then $1.2/h."""

    def price_at(self, provider: str, region: str, instance_type: str, when: datetime) -> float | None:
        if region == "r1b":
            return 0.5 if when < at(1000) else 1.2
        return {"r1a": 0.9}.get(region)

    def next_change_after(self, provider: str, region: str, instance_type: str, when: datetime) -> datetime | None:
        return at(1000) if region == "r1b" and when < at(1000) else None


def test_a_region_price_without_a_region_row_is_its_cheapest_zone_as_the_aws_source_reads_it() -> None:
    world = World(
        private=PrivateCluster(gpus=1, launch_latency=LatencyRange(min_s=5, max_s=5)),
        clouds=[{"provider": "aws", "region": "r1", "zones": {"r1a": "a.json", "r1b": "b.json"}}],
        catalog_spot={"aws": {"gpu.x": 7.0}},
    )
    book = PriceBook(world, ZonePrices(), mode="spot", at=at)
    # the quote and the price signal ask per region (no zone): the cheapest zone, then it follows that zone's steps
    assert book.hourly("aws", "r1", None, "gpu.x", 0.0) == 0.5
    assert book.hourly("aws", "r1", None, "gpu.x", 2000.0) == 0.9
    assert book.hourly("aws", "r1", "r1b", "gpu.x", 2000.0) == 1.2  # billing a zone stays that zone's price
    assert book.cost("aws", "r1", None, "gpu.x", 0.0, 2000.0) == pytest.approx((0.5 * 1000 + 0.9 * 1000) / 3600)
    # a region the history does not know falls back to the catalog
    assert book.hourly("aws", "r9", None, "gpu.x", 0.0) == 7.0


EKS_POOL = Target(
    name="eks-spot",
    provider="kubernetes",
    private=False,
    regions=("r1",),
    instance_types=("gpu.x",),
    cloud=CloudPool(
        provider="aws", region="r1", capacity_type="spot", instance_types=("gpu.x",), autoscaler="karpenter"
    ),
)


def test_a_pod_on_a_cloud_node_pool_draws_on_the_same_trace_market_as_a_spot_vm() -> None:
    world = make([(0, 2), (100, 1), (200, 0)], gpus=1)
    for n in (1, 2):
        world.tasks[f"t{n}"] = TaskWork(work_s=10_000.0, segment_s=None)
    world.launch("vm", "t1", SPOT, candidate(SPOT))
    world.launch("pod", "t2", EKS_POOL, candidate(EKS_POOL))
    assert world.private_free() == 1  # the pod took a node of the aws market, not one of the operator's GPUs
    assert world.markets["aws/r1"].free(0.0, "spot") == 0
    world.advance_to(100)  # the zone shrinks: the newest (the pod) is reclaimed first, like a VM
    assert [world.status(a).state for a in ("vm", "pod")] == [BackendState.RUNNING, BackendState.PREEMPTED]
    assert world.instances["pod"].provider == "kubernetes"  # followed by the kubernetes provider
    # billed at its node's spot price: requested at 0, reclaimed at 100 s, $1/h
    assert world.books.usd_by_target["eks-spot"] == pytest.approx(100 / 3600)
    world.tasks["t3"] = TaskWork(work_s=1.0, segment_s=None)
    world.advance_to(200)
    with pytest.raises(InsufficientCapacity):
        world.launch("pod2", "t3", EKS_POOL, candidate(EKS_POOL))  # a dry market refuses the pool's pods too
