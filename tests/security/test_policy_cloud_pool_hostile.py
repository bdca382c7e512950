"""Hostile node pools in a policy, and hostile events from a pool's cluster.

A pool's region and instance types become signal keys (``aws/<region>/<type>``),
price API arguments and node-selector label values, so anything that could
read as another offer or another label is refused when the policy loads. An
autoscaler event's text becomes an attempt's reason, shown in receipts and
consoles: it is kept to one short printable line.
"""

from __future__ import annotations

from typing import Any

import pytest

from controlplane.domain.cloud_pool import CloudPool
from controlplane.policy import PolicyError, parse_policy
from providers.kubernetes.pools import capacity_refusal

POOL: dict[str, Any] = {"provider": "aws", "region": "us-east-1", "instance_types": ["g5.xlarge"]}


def _parse(**pool: Any) -> None:
    parse_policy({"targets": [{"name": "eks", "provider": "kubernetes", "private": False, "cloud": {**POOL, **pool}}]})


@pytest.mark.parametrize(
    "region",
    [
        "us-east-1/g6.xlarge",  # would read as another offer's key
        "us-east-1\n",
        "us east 1",
        "../us-east-1",
        "-us-east-1",
        "us-east-1\x00",
        "ús-east-1",
        "",
        "a" * 64,
        7,
        None,
        ["us-east-1"],
    ],
)
def test_a_region_that_could_read_as_something_else_is_refused(region: Any) -> None:
    with pytest.raises(PolicyError) as caught:
        _parse(region=region)
    assert caught.value.path == "targets[0].cloud.region"


@pytest.mark.parametrize(
    "instance_type", ["g5.xlarge/x", "g5.xlarge\n", "g5 xlarge", "g5.xlarge,g6.xlarge", "g5=xlarge", "x" * 64, {}]
)
def test_an_instance_type_that_is_not_a_label_value_is_refused(instance_type: Any) -> None:
    with pytest.raises(PolicyError) as caught:
        _parse(instance_types=["g6.xlarge", instance_type])
    assert caught.value.path == "targets[0].cloud.instance_types[1]"


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("provider", {"aws": 1}),
        ("provider", ["aws"]),
        ("capacity_type", ["spot"]),
        ("autoscaler", {"karpenter": True}),
        ("capacity_wait_seconds", True),
        ("capacity_wait_seconds", -1),
        ("instance_types", "g5.xlarge"),
    ],
)
def test_wrong_types_are_refused_naming_the_field(field: str, value: Any) -> None:
    with pytest.raises(PolicyError) as caught:
        _parse(**{field: value})
    assert caught.value.path == f"targets[0].cloud.{field}"


@pytest.mark.parametrize("wait", [float("nan"), float("inf"), float("-inf")])
def test_a_wait_that_is_not_a_number_is_refused(wait: float) -> None:
    # refused before the pool is read: a policy with NaN anywhere has no canonical JSON, hence no version
    with pytest.raises(PolicyError, match="canonical JSON"):
        _parse(capacity_wait_seconds=wait)


POOL_VALUE = CloudPool(
    provider="aws",
    region="us-east-1",
    capacity_type="spot",
    instance_types=("g5.xlarge",),
    autoscaler="karpenter",
    capacity_wait_seconds=60,
)


def test_an_event_flood_becomes_one_short_printable_reason() -> None:
    hostile = {
        "reason": "InsufficientCapacity\r\n\x1b[31mFAKE",
        "message": "<script>alert(1)</script>\n" + "x" * 100_000,
        "source": {"component": "karpenter\x00\x07"},
    }
    refusal = capacity_refusal(POOL_VALUE, unschedulable_for_s=1, events=[hostile])
    assert refusal is not None
    assert refusal.isprintable()
    assert len(refusal) < 700
    assert refusal.startswith("karpenter")


def test_events_with_missing_or_odd_fields_do_not_break_the_reading() -> None:
    odd: list[Any] = [{}, {"reason": None, "message": 5}, {"reason": ["NotTriggerScaleUp"]}, {"source": "x"}]
    assert capacity_refusal(POOL_VALUE, unschedulable_for_s=10, events=odd) is None
    late = capacity_refusal(POOL_VALUE, unschedulable_for_s=61, events=odd)
    assert late is not None
    assert "no scale-up" in late
