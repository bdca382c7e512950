"""Kubernetes targets on EKS and AKS node pools: parsed, checked and planned like the cloud's spot VMs (issue 21).

The property at the heart of it: whatever the prices, breakers and max
price, a pod target on an ``aws`` spot pool and an ``aws`` VM target over the
same (region, instance types) get the same verdict from ``plan()``, and the
same price in the receipt.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from controlplane.domain import (
    DataSensitivity,
    PlacementPlan,
    Priority,
    SignalSample,
    SignalSnapshot,
    Task,
    TaskKind,
    TaskSpec,
    TaskState,
)
from controlplane.domain.reliability import SPENT_TODAY_KEY
from controlplane.policy import PolicyError, parse_policy, plan
from controlplane.policy.checks import validate_document
from controlplane.runtime.pool_offers import merge_pool_offers, pool_clouds, summed
from controlplane.signals.base import wanted_from_targets
from controlplane.store.offer_stats import OfferOutcomes

NOW = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)
TYPES = ["g5.xlarge", "g6.xlarge"]
EKS: dict[str, Any] = {
    "name": "eks-spot",
    "provider": "kubernetes",
    "private": False,
    "max_price_usd_h": 1.0,
    "cloud": {"provider": "aws", "region": "us-east-1", "instance_types": TYPES},
    "settings": {"namespace": "fusionplane", "worker_image": "registry.example/fp/worker:1"},
    "storage": {"uri": "s3://fp-work/eks/"},
}
AKS: dict[str, Any] = {
    "name": "aks-spot",
    "provider": "kubernetes",
    "private": False,
    "cloud": {"provider": "azure", "region": "eastus", "instance_types": ["Standard_NC4as_T4_v3"]},
    "storage": {"uri": "az://fpwork/work/aks/"},
}
ONPREM: dict[str, Any] = {"name": "onprem", "provider": "kubernetes", "private": True}


def policy(*targets: dict[str, Any], **sections: Any) -> Any:
    return parse_policy({"targets": list(targets) or [ONPREM, EKS], **sections})


def task(*, sensitivity: DataSensitivity = DataSensitivity.PUBLIC, tenant: str = "acme") -> Task:
    spec = TaskSpec(
        tenant=tenant,
        kind=TaskKind.IMAGE,
        source_uri="s3://in/face.png",
        target_uri="s3://in/target.png",
        output_uri="s3://out/x.png",
        priority=Priority.NORMAL,
        data_sensitivity=sensitivity,
    )
    return Task(id="tsk_1", spec=spec, state=TaskState.QUEUED, created_at=NOW, updated_at=NOW)


def snapshot(values: dict[str, float], *, age_s: float = 1.0) -> SignalSnapshot:
    samples = {}
    for name, value in values.items():
        source, _, key = name.partition("/")
        observed = NOW - timedelta(seconds=age_s)
        samples[name] = SignalSample(source=source, key=key, value=value, observed_at=observed, ttl_seconds=600)
    return SignalSnapshot(taken_at=NOW, samples=samples)


def codes(result: PlacementPlan) -> dict[str, str]:
    return {r.target: r.code for r in result.rejections}


# -- parsing ----------------------------------------------------------------------------------------


def test_a_node_pool_gives_the_target_its_region_types_and_market() -> None:
    target = policy(EKS).targets[0]
    assert target.provider == "kubernetes"
    assert (target.regions, target.instance_types, target.market) == (("us-east-1",), tuple(TYPES), "spot")
    assert target.cloud is not None
    assert (target.cloud.provider, target.cloud.autoscaler, target.cloud.capacity_wait_seconds) == (
        "aws",
        "karpenter",
        90.0,
    )
    assert target.market_provider == "aws"
    aks = policy(AKS).targets[0]
    assert aks.cloud is not None
    assert aks.cloud.autoscaler == "aks-node-pool"
    assert policy(ONPREM).targets[0].market_provider is None


@pytest.mark.parametrize(
    ("change", "path"),
    [
        ({"provider": "aws", "settings": {}}, "targets[0].cloud"),
        ({"regions": ["us-east-1"]}, "targets[0].regions"),
        ({"instance_types": ["g5.xlarge"]}, "targets[0].instance_types"),
        ({"market": "spot"}, "targets[0].market"),
        ({"cloud": {"provider": "gcp", "region": "x", "instance_types": ["a"]}}, "targets[0].cloud.provider"),
        ({"cloud": {"provider": "aws", "instance_types": ["a"]}}, "targets[0].cloud.region"),
        ({"cloud": {"provider": "aws", "region": " us-east-1", "instance_types": ["a"]}}, "targets[0].cloud.region"),
        ({"cloud": {"provider": "aws", "region": "r", "instance_types": []}}, "targets[0].cloud.instance_types"),
        (
            {"cloud": {"provider": "aws", "region": "r", "instance_types": ["a", "a"]}},
            "targets[0].cloud.instance_types[1]",
        ),
        ({"cloud": {"provider": "aws", "region": "r", "instance_types": [7]}}, "targets[0].cloud.instance_types[0]"),
        (
            {"cloud": {"provider": "azure", "region": "r", "instance_types": ["a"], "autoscaler": "karpenter"}},
            "targets[0].cloud.autoscaler",
        ),
        (
            {"cloud": {"provider": "aws", "region": "r", "instance_types": ["a"], "capacity_type": "reserved"}},
            "targets[0].cloud.capacity_type",
        ),
        (
            {"cloud": {"provider": "aws", "region": "r", "instance_types": ["a"], "capacity_wait_seconds": 0}},
            "targets[0].cloud.capacity_wait_seconds",
        ),
        ({"cloud": {"provider": "aws", "region": "r", "instance_types": ["a"], "zone": "a"}}, "targets[0].cloud.zone"),
        ({"cloud": ["aws"]}, "targets[0].cloud"),
    ],
)
def test_a_wrong_node_pool_names_its_field(change: dict[str, Any], path: str) -> None:
    with pytest.raises(PolicyError) as raised:
        policy({**EKS, **change})
    assert raised.value.path == path


def test_validate_warns_when_a_cloud_pool_is_marked_private_and_not_otherwise() -> None:
    public = [f for f in validate_document({"targets": [EKS]}) if f.path.startswith("targets[0]")]
    assert public == []
    findings = validate_document({"targets": [{**EKS, "private": True}]})
    warned = [f for f in findings if f.path == "targets[0].private"]
    assert [f.severity for f in warned] == ["warning"]
    assert "aws spot nodes in us-east-1" in warned[0].message


# -- planning ---------------------------------------------------------------------------------------


def test_a_pod_target_is_priced_from_its_clouds_spot_price_and_named_in_the_receipt() -> None:
    values = {"spot_price/aws/us-east-1/g5.xlarge": 1.4, "spot_price/aws/us-east-1/g6.xlarge": 0.62}
    result = plan(task(), snapshot(values), policy(EKS), NOW)
    (candidate,) = result.candidates
    assert (candidate.provider, candidate.market, candidate.region) == ("kubernetes", "spot", "us-east-1")
    assert (candidate.instance_type, candidate.expected_usd_h, candidate.max_price_usd_h) == ("g6.xlarge", 0.62, 1.0)
    assert "spot price aws/us-east-1/g6.xlarge 0.6200 USD/h <= max 1" in candidate.reasons
    assert "spot_price/aws/us-east-1/g6.xlarge" in result.signals_used


def test_a_pod_target_above_its_max_price_or_with_a_stale_price_is_rejected() -> None:
    high = {"spot_price/aws/us-east-1/g5.xlarge": 1.4, "spot_price/aws/us-east-1/g6.xlarge": 1.1}
    assert codes(plan(task(), snapshot(high), policy(EKS), NOW)) == {"eks-spot": "price_above_max"}
    stale = snapshot({"spot_price/aws/us-east-1/g5.xlarge": 0.5}, age_s=3600)
    assert codes(plan(task(), stale, policy(EKS), NOW)) == {"eks-spot": "stale_price"}


def test_the_clouds_breaker_guards_the_pod_target_too() -> None:
    values = {
        "spot_price/aws/us-east-1/g5.xlarge": 0.5,
        "spot_price/aws/us-east-1/g6.xlarge": 0.6,
        "breaker/aws/us-east-1/g5.xlarge": 1.0,
    }
    (candidate,) = plan(task(), snapshot(values), policy(EKS), NOW).candidates
    assert candidate.instance_type == "g6.xlarge"  # the open breaker's offer is passed over
    both = {**values, "breaker/aws/us-east-1/g6.xlarge": 1.0}
    assert codes(plan(task(), snapshot(both), policy(EKS), NOW)) == {"eks-spot": "breaker_open"}


def test_a_spent_budget_keeps_work_off_the_pod_target_but_not_off_the_private_cluster() -> None:
    values = {"spot_price/aws/us-east-1/g5.xlarge": 0.5, f"budget/{SPENT_TODAY_KEY}": 120.0}
    result = plan(task(), snapshot(values), policy(ONPREM, EKS, thresholds={"daily_budget_usd": 100}), NOW)
    assert [c.target for c in result.candidates] == ["onprem"]
    assert codes(result) == {"eks-spot": "budget_exhausted"}


def test_private_data_never_goes_to_a_public_pool_and_rules_see_it_as_a_cloud() -> None:
    values = {"spot_price/aws/us-east-1/g5.xlarge": 0.5}
    private = plan(task(sensitivity=DataSensitivity.PRIVATE), snapshot(values), policy(), NOW)
    assert [c.target for c in private.candidates] == ["onprem"]
    assert codes(private) == {"eks-spot": "private_data"}
    rules = [{"name": "home", "use_cloud": False}]
    assert codes(plan(task(), snapshot(values), policy(ONPREM, EKS, rules=rules), NOW)) == {
        "eks-spot": "excluded_by_rule"
    }
    rules = [{"name": "azure-only", "cloud_provider": "azure"}]
    assert codes(plan(task(), snapshot(values), policy(ONPREM, EKS, rules=rules), NOW)) == {
        "eks-spot": "excluded_by_rule"
    }


def test_an_on_demand_pool_reads_the_list_price() -> None:
    on_demand = {**EKS, "cloud": {**EKS["cloud"], "capacity_type": "on-demand"}}
    values = {"on_demand_price/aws/us-east-1/g5.xlarge": 1.006 / 2, "spot_price/aws/us-east-1/g5.xlarge": 9.0}
    (candidate,) = plan(task(), snapshot(values), policy(on_demand), NOW).candidates
    assert (candidate.market, candidate.expected_usd_h) == ("on-demand", 0.503)


def test_the_price_pollers_are_asked_for_the_pools_offers() -> None:
    wanted = wanted_from_targets(policy(ONPREM, EKS, AKS).targets)
    assert wanted.aws_offers == (("us-east-1", "g5.xlarge"), ("us-east-1", "g6.xlarge"))
    assert wanted.azure_offers == (("eastus", "Standard_NC4as_T4_v3"),)
    # an autoscaled pool has no free GPUs when idle: only the private cluster's are counted (no_capacity)
    assert [t.name for t in wanted.kubernetes] == ["onprem"]


prices = st.one_of(st.none(), st.floats(min_value=0.01, max_value=5.0))
breakers = st.sampled_from([None, 0.0, 0.5, 1.0])


@settings(max_examples=150, deadline=None)
@given(
    first=prices,
    second=prices,
    first_breaker=breakers,
    second_breaker=breakers,
    ceiling=st.one_of(st.none(), st.floats(min_value=0.05, max_value=5.0)),
)
def test_a_pod_on_a_spot_pool_is_planned_exactly_like_a_vm_on_the_same_offers(
    first: float | None,
    second: float | None,
    first_breaker: float | None,
    second_breaker: float | None,
    ceiling: float | None,
) -> None:
    pod = {**EKS, "max_price_usd_h": ceiling}
    vm = {
        "name": "eks-spot",
        "provider": "aws",
        "private": False,
        "regions": ["us-east-1"],
        "instance_types": TYPES,
        "max_price_usd_h": ceiling,
        "settings": {"launch_template": "fp", "subnets": ["subnet-1"]},
        "storage": {"uri": "s3://fp-work/eks/"},
    }
    values: dict[str, float] = {}
    for offer, price, breaker in (("g5.xlarge", first, first_breaker), ("g6.xlarge", second, second_breaker)):
        if price is not None:
            values[f"spot_price/aws/us-east-1/{offer}"] = price
        if breaker is not None:
            values[f"breaker/aws/us-east-1/{offer}"] = breaker
    as_pod = plan(task(), snapshot(values), policy(pod), NOW)
    as_vm = plan(task(), snapshot(values), policy(vm), NOW)
    assert codes(as_pod) == codes(as_vm)
    assert [r.detail for r in as_pod.rejections] == [r.detail for r in as_vm.rejections]
    shown = [
        (c.region, c.instance_type, c.expected_usd_h, c.market, c.breaker_probe, c.reasons) for c in as_pod.candidates
    ]
    assert shown == [
        (c.region, c.instance_type, c.expected_usd_h, c.market, c.breaker_probe, c.reasons) for c in as_vm.candidates
    ]
    assert all(c.provider == "kubernetes" for c in as_pod.candidates)


# -- the breaker's and the spend's evidence -----------------------------------------------------------


def test_a_pods_preemption_counts_against_its_clouds_offer() -> None:
    clouds = pool_clouds(policy(ONPREM, EKS, AKS).targets)
    assert clouds[("us-east-1", "g5.xlarge")] == "aws"
    assert clouds[("eastus", "Standard_NC4as_T4_v3")] == "azure"
    vm = OfferOutcomes(provider="aws", region="us-east-1", instance_type="g5.xlarge", preempted=1, succeeded=2)
    pod = OfferOutcomes(
        provider="kubernetes",
        region="us-east-1",
        instance_type="g5.xlarge",
        preempted=2,
        capacity_errors=1,
        last_failure_created_at=NOW,
    )
    onprem = OfferOutcomes(provider="kubernetes", region=None, instance_type=None, succeeded=4)
    found = {
        ("aws", "us-east-1", "g5.xlarge"): vm,
        ("kubernetes", "us-east-1", "g5.xlarge"): pod,
        ("kubernetes", None, None): onprem,
    }
    merged = merge_pool_offers(found, clouds, summed)
    assert set(merged) == {("aws", "us-east-1", "g5.xlarge")}  # the private cluster's pods guard no offer
    offer = merged[("aws", "us-east-1", "g5.xlarge")]
    assert (offer.provider, offer.preempted, offer.capacity_errors, offer.succeeded) == ("aws", 3, 1, 2)
    assert offer.last_failure_created_at == NOW
