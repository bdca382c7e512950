"""The policy language beyond first-match: the seed table row by row, the seed form, conditions, prices, hedging."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

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
from controlplane.policy import PolicyError, parse_policy, plan
from controlplane.policy.seed import BuiltinCloud, SeedClouds
from controlplane.policy_sources import load_policy_file

NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
EXAMPLES = Path(__file__).resolve().parents[2] / "policies" / "examples"
TABLE = load_policy_file(EXAMPLES / "seed-table.json")


def _task(
    *,
    sensitivity: DataSensitivity = DataSensitivity.PUBLIC,
    priority: Priority = Priority.NORMAL,
    labels: dict[str, str] | None = None,
    deadline: int | None = None,
) -> Task:
    spec = TaskSpec(
        tenant="acme",
        kind=TaskKind.VIDEO,
        # uploads on the control plane's disk: every target of the table has a store to stage them into
        source_uri="/in/acme/a.png",
        target_uri="/in/acme/b.mp4",
        output_uri="/out/acme/b.mp4",
        priority=priority,
        data_sensitivity=sensitivity,
        labels=labels or {},
        deadline_seconds=deadline,
    )
    return Task(id="tsk_1", spec=spec, state=TaskState.QUEUED, created_at=NOW, updated_at=NOW)


def _snapshot(values: dict[str, float | tuple[float, float]]) -> SignalSnapshot:
    """Full sample names -> value (1 s old) or (value, age in seconds); TTL 900 s (the policy's TTLs apply too)."""
    samples = {}
    for name, spec in values.items():
        value, age = spec if isinstance(spec, tuple) else (spec, 1.0)
        source, _, key = name.partition("/")
        samples[name] = SignalSample(
            source=source, key=key, value=value, observed_at=NOW - timedelta(seconds=age), ttl_seconds=900
        )
    return SignalSnapshot(taken_at=NOW, samples=samples)


PRICES_AWS = "spot_price/aws/us-east-1/g4dn.xlarge"
PRICES = {
    "spot_price/aws/us-east-1/g4dn.xlarge": 0.21,
    "spot_price/azure/westeurope/Standard_NC4as_T4_v3": 0.33,
    "spot_price/azure/eastus/Standard_NC4as_T4_v3": 0.18,
}


def _names(result: PlacementPlan) -> list[str]:
    return [c.target for c in result.candidates]


def _codes(result: PlacementPlan) -> dict[str, str]:
    return {r.target: r.code for r in result.rejections}


# -- the seed table, row by row ---------------------------------------------------------------------


def test_ordinary_public_work_goes_to_the_local_cluster() -> None:
    result = plan(_task(), _snapshot({**PRICES, "free_gpus/onprem": 4, "gpu_utilization/onprem": 0.4}), TABLE, NOW)
    assert _names(result) == ["onprem", "azure-spot"]
    assert "rule ordinary-public: matched" in result.trace


def test_a_campaign_at_peak_goes_to_aws_spot_when_the_price_is_under_budget() -> None:
    peak = {**PRICES, "gpu_utilization/onprem": 0.93}
    result = plan(_task(labels={"campaign": "launch-day"}), _snapshot(peak), TABLE, NOW)
    (only,) = result.candidates
    assert (only.target, only.instance_type, only.region, only.expected_usd_h) == (
        "aws-spot",
        "g4dn.xlarge",
        "us-east-1",
        0.21,
    )
    assert any(
        line.startswith("rule peak-aws-spot: matched; conditions hold (peak: onprem GPU") for line in result.trace
    )
    # the seed's row is "urgent or peak", not campaigns only: any work at peak goes there
    assert _names(plan(_task(), _snapshot(peak), TABLE, NOW)) == ["aws-spot"]
    # price over the budget threshold: the rule does not fire, the campaign stays on the cluster rules
    expensive = plan(_task(labels={"campaign": "x"}), _snapshot({**peak, PRICES_AWS: 0.45}), TABLE, NOW)
    assert _names(expensive) == ["onprem", "azure-spot"]
    assert any("peak-aws-spot: task matches, conditions do not (no cloud target" in t for t in expensive.trace)
    # a stale price is never the reason to go to the cloud
    stale = plan(_task(labels={"campaign": "x"}), _snapshot({**peak, PRICES_AWS: (0.1, 3600)}), TABLE, NOW)
    assert _names(stale) == ["onprem", "azure-spot"]
    # not at peak: stays local even with a cheap price
    calm = plan(_task(labels={"campaign": "x"}), _snapshot({**PRICES, "gpu_utilization/onprem": 0.5}), TABLE, NOW)
    assert _names(calm)[0] == "onprem"


def test_private_film_work_is_forced_onto_the_isolated_zone() -> None:
    result = plan(_task(sensitivity=DataSensitivity.PRIVATE, labels={"campaign": "x"}), _snapshot(PRICES), TABLE, NOW)
    assert _names(result) == ["isolated"]
    codes = _codes(result)
    assert {codes[n] for n in ("aws-spot", "azure-lowlatency", "azure-spot")} == {"private_data"}
    assert codes["onprem"] == "excluded_by_rule"


def test_urgent_short_deadline_work_is_hedged_across_clouds_azure_low_latency_first() -> None:
    result = plan(_task(priority=Priority.URGENT, deadline=240), _snapshot(PRICES), TABLE, NOW)
    assert _names(result) == ["azure-lowlatency", "aws-spot", "onprem"]
    assert [c.hedge_group for c in result.candidates] == [1, 1, None]
    assert "hedge: the first 2 candidates are launched together" in result.trace
    # a long deadline is not this rule's business
    relaxed = plan(_task(priority=Priority.URGENT, deadline=3600), _snapshot(PRICES), TABLE, NOW)
    assert "rule urgent-sla: no match (deadline_seconds 3600 not <= 300)" in relaxed.trace


def test_urgent_work_goes_to_aws_spot_when_the_price_is_under_budget() -> None:
    result = plan(_task(priority=Priority.URGENT), _snapshot(PRICES), TABLE, NOW)
    assert [(c.target, c.instance_type, c.expected_usd_h) for c in result.candidates] == [
        ("aws-spot", "g4dn.xlarge", 0.21)
    ]
    assert "rule urgent-aws-spot: matched; conditions hold (spot price aws/us-east-1/g4dn.xlarge" in result.trace[2]
    over = plan(_task(priority=Priority.URGENT), _snapshot({**PRICES, PRICES_AWS: 0.45}), TABLE, NOW)
    assert _names(over) == ["onprem", "azure-spot"]


def test_a_full_local_cluster_falls_back_to_azure_spot() -> None:
    # a full cluster is at peak: AWS when under the budget threshold (the row above), Azure Spot otherwise
    full = {**PRICES, "free_gpus/onprem": 0}
    result = plan(_task(), _snapshot({**full, PRICES_AWS: 0.45}), TABLE, NOW)
    assert _names(result) == ["azure-spot"]
    assert _codes(result)["onprem"] == "no_capacity"
    assert result.candidates[0].expected_usd_h == 0.18
    assert _names(plan(_task(), _snapshot(full), TABLE, NOW)) == ["aws-spot"]


# -- the seed form ----------------------------------------------------------------------------------


def test_the_seed_form_is_valid_and_means_what_the_seed_table_says() -> None:
    policy = load_policy_file(EXAMPLES / "seed-form.json")
    assert policy.from_seed
    assert [t.name for t in policy.targets] == ["local", "aws", "azure"]
    # nothing configured (no FUSIONPLANE_AWS_* / FUSIONPLANE_AZURE_*): the clouds sit out, local takes the work
    high = plan(_task(priority=Priority.HIGH), SignalSnapshot(taken_at=NOW), policy, NOW)
    assert _names(high) == ["local"]
    assert _codes(high)["aws"] == "not_configured"
    configured = load_policy_file(
        EXAMPLES / "seed-form.json",
        seed_clouds=SeedClouds(
            aws=BuiltinCloud(settings={"launch_template": "fusionplane-worker"}, storage={"uri": "s3://fp-work/"})
        ),
    )
    (aws, local) = plan(_task(priority=Priority.HIGH), SignalSnapshot(taken_at=NOW), configured, NOW).candidates
    assert (aws.target, aws.provider, aws.instance_type, local.target) == ("aws", "aws", "g4dn.2xlarge", "local")
    assert aws.expected_usd_h is None  # no max price: the provider's on-demand cap applies
    private = plan(_task(sensitivity=DataSensitivity.PRIVATE), SignalSnapshot(taken_at=NOW), policy, NOW)
    assert _names(private) == ["local"]
    other = plan(_task(priority=Priority.LOW), SignalSnapshot(taken_at=NOW), configured, NOW)
    assert _names(other) == ["local"]  # the seed's route: local, then Azure (not configured here); never AWS


@pytest.mark.parametrize(
    ("document", "path"),
    [
        ({"task_rules": [{"priority": "asap"}]}, "task_rules[0].priority"),
        ({"task_rules": [{"use_cloud": "yes"}]}, "task_rules[0].use_cloud"),
        ({"task_rules": [{"use_cloud": True, "cloud_provider": "gcp"}]}, "task_rules[0].cloud_provider"),
        ({"task_rules": [{"use_cloud": False, "instance_type": "g4dn.xlarge"}]}, "task_rules[0].instance_type"),
        ({"task_rules": [{"gpu": 1}]}, "task_rules[0].gpu"),
        ({"task_rules": [], "targets": []}, "task_rules"),
    ],
)
def test_bad_seed_documents_name_the_field(document: dict[str, Any], path: str) -> None:
    with pytest.raises(PolicyError) as info:
        parse_policy(document)
    assert info.value.path == path


# -- the full language's errors ---------------------------------------------------------------------


BASE: dict[str, Any] = {
    "targets": [
        {"name": "local", "provider": "local", "private": True},
        {"name": "aws", "provider": "aws", "private": False, "storage": {"uri": "s3://fp-work/aws/"}},
    ]
}


@pytest.mark.parametrize(
    ("rule", "path"),
    [
        ({"when": {"peak": "nowhere"}}, "rules[0].when.peak[0]"),
        ({"when": {"gpu_utilization_above": {"local": 1.5}}}, "rules[0].when.gpu_utilization_above.local"),
        ({"when": {"free_gpus_below": {"ghost": 1}}}, "rules[0].when.free_gpus_below.ghost"),
        ({"when": {"spot_price_under_budget": "yes"}}, "rules[0].when.spot_price_under_budget"),
        ({"when": {"sunny": True}}, "rules[0].when.sunny"),
        ({"match": {"labels": {"campaign": []}}}, "rules[0].match.labels.campaign"),
        ({"match": {"deadline_seconds": {"min": 600, "max": 60}}}, "rules[0].match.deadline_seconds.min"),
        ({"match": {"input_bytes": {}}}, "rules[0].match.input_bytes"),
        ({"hedge": 9}, "rules[0].hedge"),
        ({"hedge": True}, "rules[0].hedge"),
        ({"use_cloud": False, "cloud_provider": "aws"}, "rules[0].cloud_provider"),
        ({"cloud_provider": "gcp"}, "rules[0].cloud_provider"),
        ({"require": ["aws"], "exclude": ["aws"]}, "rules[0].require[0]"),
        ({"max_price_usd_h": -1}, "rules[0].max_price_usd_h"),
    ],
)
def test_bad_rules_name_the_field(rule: dict[str, Any], path: str) -> None:
    with pytest.raises(PolicyError) as info:
        parse_policy({**BASE, "rules": [rule]})
    assert info.value.path == path


def test_bad_thresholds_name_the_field() -> None:
    with pytest.raises(PolicyError) as info:
        parse_policy({**BASE, "thresholds": {"peak_gpu_utilization": 2}})
    assert info.value.path == "thresholds.peak_gpu_utilization"


def test_require_and_budget_conditions() -> None:
    policy = parse_policy(
        {
            **BASE,
            "thresholds": {"daily_budget_usd": 100},
            "rules": [{"name": "spend", "when": {"budget_left_today_usd_above": 20}, "require": ["aws"]}],
        }
    )
    rich = plan(_task(), _snapshot({"budget/spent_today_usd": 50}), policy, NOW)
    assert _names(rich) == ["aws"]
    assert _codes(rich) == {"local": "excluded_by_rule"}
    broke = plan(_task(), _snapshot({"budget/spent_today_usd": 90}), policy, NOW)
    assert "rule spend: task matches, conditions do not (budget left today 10 not above 20 USD)" in broke.trace
    assert _names(broke) == ["local", "aws"]
    unknown = plan(_task(), SignalSnapshot(taken_at=NOW), policy, NOW)
    # an unknown spend never unlocks a budget rule, and with a budget set it keeps the clouds out
    assert _names(unknown) == ["local"]
    assert _codes(unknown) == {"aws": "budget_unknown"}


@pytest.mark.parametrize(
    ("thresholds", "path"),
    [
        ({"max_attempts": 0}, "thresholds.max_attempts"),
        ({"max_attempts": 2.5}, "thresholds.max_attempts"),
        ({"retry_backoff_seconds": 10, "retry_backoff_max_seconds": 5}, "thresholds.retry_backoff_max_seconds"),
        ({"heartbeat_timeout_seconds": 0}, "thresholds.heartbeat_timeout_seconds"),
        ({"unschedulable_timeout_seconds": -1}, "thresholds.unschedulable_timeout_seconds"),
        ({"first_heartbeat_timeout_seconds": 0}, "thresholds.first_heartbeat_timeout_seconds"),
        ({"first_heartbeat_timeout_seconds": True}, "thresholds.first_heartbeat_timeout_seconds"),
        ({"first_heartbeat_timeout_seconds": "600"}, "thresholds.first_heartbeat_timeout_seconds"),
        ({"first_heartbeat_timeout_seconds": {}}, "thresholds.first_heartbeat_timeout_seconds"),
        ({"first_heartbeat_timeout_seconds": {"gcp": 60}}, "thresholds.first_heartbeat_timeout_seconds.gcp"),
        ({"first_heartbeat_timeout_seconds": {"aws": -5}}, "thresholds.first_heartbeat_timeout_seconds.aws"),
        ({"first_heartbeat_timeout_seconds": {"azure": None}}, "thresholds.first_heartbeat_timeout_seconds.azure"),
    ],
)
def test_failover_thresholds_are_checked(thresholds: dict[str, object], path: str) -> None:
    document = {"targets": [{"name": "local", "provider": "local", "private": True}], "thresholds": thresholds}
    with pytest.raises(PolicyError) as raised:
        parse_policy(document)
    assert raised.value.path == path


def test_failover_thresholds_reach_the_policy() -> None:
    document = {
        "targets": [{"name": "local", "provider": "local", "private": True}],
        "thresholds": {"max_attempts": 3, "retry_backoff_seconds": 1, "heartbeat_timeout_seconds": 30},
    }
    thresholds = parse_policy(document).thresholds
    assert (thresholds.max_attempts, thresholds.retry_backoff_seconds, thresholds.heartbeat_timeout_seconds) == (
        3,
        1,
        30,
    )
    assert (thresholds.retry_backoff_max_seconds, thresholds.unschedulable_timeout_seconds) == (60, 120)


def test_the_first_heartbeat_limit_is_one_number_or_per_provider_over_the_defaults() -> None:
    def limits(value: object | None) -> dict[str, float]:
        thresholds: dict[str, object] = {} if value is None else {"first_heartbeat_timeout_seconds": value}
        document = {"targets": [{"name": "local", "provider": "local", "private": True}], "thresholds": thresholds}
        return dict(parse_policy(document).thresholds.first_heartbeat_timeout_seconds)

    assert limits(None) == {"local": 120, "kubernetes": 600, "aws": 900, "azure": 900}
    assert limits(300) == {"local": 300, "kubernetes": 300, "aws": 300, "azure": 300}
    assert limits({"aws": 1200, "local": 45}) == {"local": 45, "kubernetes": 600, "aws": 1200, "azure": 900}
