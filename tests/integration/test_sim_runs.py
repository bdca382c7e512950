"""The simulator end to end: the product's scheduler and store under the virtual clock, in a small world.

Asserted from the run's own store and the world's books: no task lost, no
private task outside a private target, a receipt for every placed task,
preemptions followed by failovers, determinism for a seed, and the on-demand
and greedy-spot figures of a single-zone world against counts made by hand.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from controlplane.policy import parse_policy
from simulator.outcomes import summarize
from simulator.runner import RunSetup, run
from simulator.scenario import parse_scenario
from tests.support.sim import SMALL_FLEET, StepTrace, small_scenario

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]


def scenario(**workload: Any) -> Any:
    return parse_scenario(small_scenario(**workload))


def simulate(tmp_path: Path, steps: list[tuple[float, int]], *, mode: str = "spot", **workload: Any) -> Any:
    setup = RunSetup(name="policy:small", kind="policy", policy=parse_policy(SMALL_FLEET), mode=mode)  # type: ignore[arg-type]
    outcome = run(
        scenario(**workload),
        setup,
        traces={("aws", "r1"): {"r1a": StepTrace(steps)}},
        history=None,
        workdir=tmp_path,
    )
    return outcome, summarize(outcome)


def test_every_task_ends_private_ones_stay_home_and_each_placed_task_has_its_receipt(tmp_path: Path) -> None:
    outcome, summary = simulate(tmp_path, [(0.0, 1)])
    assert summary["tasks"] == len(outcome.arrivals) > 150
    assert summary["lost"] == 0
    assert summary["private_off_private"] == 0
    assert summary["completed"] + summary["failed"] + summary["unfinished"] == summary["tasks"]
    assert summary["unfinished"] == 0  # three hours of drain are plenty
    assert summary["receipts"] == summary["tasks"]  # every task was planned at least once, with a receipt
    # every plan is counted, re-plans too: failovers and the waits of the burst add plans beyond one per task
    assert summary["plans"] >= summary["tasks"] + summary["failovers"]
    # the burst beyond three private GPUs went to spot, and was paid for
    assert summary["spend_by_target"]["spot"] > 0
    private_ids = {i for i, a in outcome.arrivals.items() if a.spec.data_sensitivity.value == "private"}
    assert {i.target for i in outcome.world.instances.values() if i.task_id in private_ids} == {"onprem"}


#: spot for 20 minutes, then none for 40, then back
DRY_SPELL = [(0.0, 1), (1200.0, 0), (3600.0, 1)]


@pytest.fixture(scope="module")
def dry_spell(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """One run over the dry spell, shared: the failover test reads it, the determinism test runs it again."""
    return simulate(tmp_path_factory.mktemp("dry"), DRY_SPELL)


def test_a_zone_going_dry_preempts_and_the_scheduler_fails_over(dry_spell: Any) -> None:
    _outcome, summary = dry_spell
    assert summary["preemptions"] > 0
    assert summary["failovers"] >= summary["preemptions"]
    assert summary["gpu_hours_lost"] > 0
    assert summary["lost"] == 0
    assert summary["unfinished"] == 0


def test_the_same_seed_gives_the_same_report(dry_spell: Any, tmp_path: Path) -> None:
    first = dry_spell
    second = simulate(tmp_path, DRY_SPELL)
    one = json.dumps([first[1], vars(first[0].series)], sort_keys=True)
    two = json.dumps([second[1], vars(second[0].series)], sort_keys=True)
    assert one == two


def test_on_demand_costs_exactly_what_the_cloud_held_at_the_on_demand_price(tmp_path: Path) -> None:
    outcome, summary = simulate(tmp_path, [(0.0, 0)], mode="on_demand")
    cloud = [i for i in outcome.world.instances.values() if i.target == "spot"]
    held_s = sum((i.ended_s or outcome.world.now_s) - i.requested_s for i in cloud)
    assert cloud
    assert summary["preemptions"] == 0
    assert summary["spend_by_target"]["spot"] == pytest.approx(held_s * 1.5 / 3600, abs=1e-3)


#: the small fleet with its spot target as pods on an EKS spot node pool in the same (aws, r1) market
POOL_FLEET: dict[str, Any] = {
    **SMALL_FLEET,
    "targets": [
        SMALL_FLEET["targets"][0],
        {
            "name": "eks-spot",
            "provider": "kubernetes",
            "private": False,
            "max_price_usd_h": 2.0,
            "cloud": {"provider": "aws", "region": "r1", "instance_types": ["gpu.x"]},
            "storage": {"uri": "s3://fp-work/eks/"},
        },
    ],
    "rules": [
        {"name": "private", "match": {"data_sensitivity": "private"}, "targets": ["onprem"]},
        {"name": "rest", "targets": ["onprem", "eks-spot"]},
    ],
}


def test_pods_on_a_spot_node_pool_ride_the_same_trace_as_spot_vms(tmp_path: Path) -> None:
    setup = RunSetup(name="policy:pool", kind="policy", policy=parse_policy(POOL_FLEET), mode="spot")
    outcome = run(
        scenario(), setup, traces={("aws", "r1"): {"r1a": StepTrace(DRY_SPELL)}}, history=None, workdir=tmp_path
    )
    summary = summarize(outcome)
    pods = [i for i in outcome.world.instances.values() if i.target == "eks-spot"]
    assert pods
    assert {(i.provider, i.pool) for i in pods} == {("kubernetes", "aws/r1")}
    # the dry spell reclaims pods as it reclaims VMs, and the scheduler fails them over
    assert summary["preemptions"] > 0
    assert summary["failovers"] >= summary["preemptions"]
    assert summary["spend_by_target"]["eks-spot"] > 0
    assert summary["private_off_private"] == 0
    assert (summary["lost"], summary["unfinished"]) == (0, 0)
