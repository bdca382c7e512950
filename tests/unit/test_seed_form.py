"""The seed's bare ``task_rules`` form behaves as the seed's ``route_task``, and its built-in clouds can launch.

Row by row: an unmatched task runs on the local cluster; when the cluster is
full, Azure Spot (preemptible); AWS Spot for urgent or peak work when its
price is under the budget threshold (the configured AWS max price). A cloud
entry falls back to local; a built-in cloud with no launch settings is left
out of the plan (``not_configured``) rather than refusing the policy.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from controlplane.config import seed_clouds_from_env
from controlplane.domain import DataSensitivity, PlacementPlan, Priority, SignalSample, SignalSnapshot, Target
from controlplane.policy import Policy, PolicyError, parse_policy, plan
from controlplane.policy.checks import validate_document
from controlplane.policy.seed import BuiltinCloud, SeedClouds
from controlplane.policy_sources import build_policy_set
from controlplane.policy_sources.active import PolicyDocuments
from tests.unit.test_policy_checks import AZURE_SETTINGS
from tests.unit.test_policy_language import _task

NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
SEED = {
    "task_rules": [
        {"priority": "high", "data_sensitivity": "public", "use_cloud": True, "cloud_provider": "aws"},
        {"priority": "normal", "data_sensitivity": "private", "use_cloud": False},
    ]
}
AWS_PRICE = "spot_price/aws/us-east-1/g4dn.xlarge"
AZURE_PRICE = "spot_price/azure/eastus/Standard_NC4as_T4_v3"
#: both clouds configured, each with a store to stage the tasks' local files into; 0.30 $/h is the budget
#: threshold for AWS
CLOUDS = SeedClouds(
    aws=BuiltinCloud(
        settings={"launch_template": "fusionplane-worker", "subnets": ["subnet-0abc"]},
        max_price_usd_h=0.3,
        storage={"uri": "s3://fp-work/aws/"},
    ),
    azure=BuiltinCloud(settings=AZURE_SETTINGS, storage={"uri": "az://fpwork/work/"}),
)
POLICY = parse_policy(SEED, seed_clouds=CLOUDS)
FULL = {"free_gpus/local": 0.0}
CHEAP, DEAR = {AWS_PRICE: 0.21, AZURE_PRICE: 0.18}, {AWS_PRICE: 0.45, AZURE_PRICE: 0.18}


def _snapshot(values: dict[str, float]) -> SignalSnapshot:
    samples = {}
    for name, value in values.items():
        source, _, key = name.partition("/")
        samples[name] = SignalSample(
            source=source, key=key, value=value, observed_at=NOW - timedelta(seconds=5), ttl_seconds=60
        )
    return SignalSnapshot(taken_at=NOW, samples=samples)


def _plan(policy: Policy, values: dict[str, float], **task: Any) -> PlacementPlan:
    return plan(_task(**task), _snapshot(values), policy, NOW)


def _names(result: PlacementPlan) -> list[str]:
    return [c.target for c in result.candidates]


def _codes(result: PlacementPlan) -> dict[str, str]:
    return {r.target: r.code for r in result.rejections}


# -- route_task, row by row -------------------------------------------------------------------------


def test_an_unmatched_task_runs_on_the_local_cluster_and_never_on_aws() -> None:
    result = _plan(POLICY, CHEAP, priority=Priority.LOW)
    assert _names(result) == ["local", "azure"]
    assert _codes(result) == {"aws": "excluded_by_rule"}
    assert "rule seed-unmatched: matched" in result.trace


def test_a_full_local_cluster_falls_back_to_azure_spot_not_aws() -> None:
    result = _plan(POLICY, {**FULL, **DEAR}, priority=Priority.LOW)
    assert _names(result) == ["azure"]
    assert _codes(result) == {"local": "no_capacity", "aws": "excluded_by_rule"}
    # AWS has no price under the threshold: the peak rule does not fire
    assert any(line.startswith("rule seed-peak-aws-spot: task matches, conditions do not") for line in result.trace)


def test_urgent_work_goes_to_aws_spot_when_its_price_is_under_the_budget_threshold() -> None:
    result = _plan(POLICY, CHEAP, priority=Priority.URGENT)
    assert _names(result) == ["aws", "local", "azure"]
    assert (result.candidates[0].expected_usd_h, result.candidates[0].max_price_usd_h) == (0.21, 0.3)
    assert any(line.startswith("rule seed-urgent-aws-spot: matched") for line in result.trace)
    # over the threshold: the cluster, as for any unmatched task
    assert _names(_plan(POLICY, DEAR, priority=Priority.URGENT)) == ["local", "azure"]


def test_a_full_cluster_is_not_peak_azure_even_when_aws_is_cheap() -> None:
    """The issue's case: an unmatched public task, the cluster full, a short queue: Azure, not AWS."""
    result = _plan(POLICY, {**FULL, **CHEAP, "queue/depth": 3.0}, priority=Priority.NORMAL)
    assert _names(result) == ["azure"]
    assert _codes(result) == {"local": "no_capacity", "aws": "excluded_by_rule"}


def test_peak_work_goes_to_aws_spot_when_its_price_is_under_the_budget_threshold() -> None:
    peak = {**FULL, **CHEAP, "queue/depth": 250.0}  # a campaign's backlog
    result = _plan(POLICY, peak, priority=Priority.LOW)
    assert _names(result) == ["aws", "azure"]
    assert _codes(result) == {"local": "no_capacity"}
    assert any(
        line.startswith("rule seed-peak-aws-spot: matched; conditions hold (queue depth 250 > 100")
        for line in result.trace
    )
    # at peak but AWS over the threshold: the cluster, then Azure
    assert _names(_plan(POLICY, {**peak, **DEAR}, priority=Priority.LOW)) == ["azure"]


def test_without_a_budget_threshold_aws_is_never_chosen_for_unmatched_work() -> None:
    no_threshold = parse_policy(SEED, seed_clouds=SeedClouds(aws=BuiltinCloud(settings={"image_id": "ami-0abc"})))
    assert [r.name for r in no_threshold.rules] == ["task-rule-1", "task-rule-2", "seed-unmatched"]
    urgent = _plan(no_threshold, {**FULL, **CHEAP}, priority=Priority.URGENT)
    # local is full, AWS is not offered, Azure is not configured here: nothing now, never AWS
    assert _codes(urgent) == {"local": "no_capacity", "aws": "excluded_by_rule", "azure": "not_configured"}


def test_a_cloud_entry_goes_to_its_cloud_then_falls_back_to_local() -> None:
    result = _plan(POLICY, CHEAP, priority=Priority.HIGH)
    assert _names(result) == ["aws", "local"]
    assert (result.candidates[0].instance_type, result.candidates[0].max_price_usd_h) == ("g4dn.xlarge", 0.3)
    # no price under the threshold (here: none fresh): local
    assert _names(_plan(POLICY, {}, priority=Priority.HIGH)) == ["local"]


def test_private_work_stays_local_whatever_the_prices() -> None:
    result = _plan(POLICY, CHEAP, priority=Priority.URGENT, sensitivity=DataSensitivity.PRIVATE)
    assert _names(result) == ["local"]
    assert _codes(result) == {"aws": "private_data", "azure": "private_data"}


# -- launch settings --------------------------------------------------------------------------------


def test_the_built_in_clouds_carry_the_configured_launch_settings() -> None:
    aws, azure = POLICY.target("aws"), POLICY.target("azure")
    assert isinstance(aws, Target)
    assert isinstance(azure, Target)
    assert (aws.settings, aws.max_price_usd_h, aws.not_configured) == (
        {"launch_template": "fusionplane-worker", "subnets": ["subnet-0abc"]},
        0.3,
        None,
    )
    assert (azure.settings, azure.not_configured) == (AZURE_SETTINGS, None)


def test_an_unconfigured_built_in_cloud_is_left_out_and_the_task_falls_back_to_local() -> None:
    bare = parse_policy(SEED)  # nothing configured: what `make run` gets
    result = _plan(bare, {}, priority=Priority.HIGH)
    assert _names(result) == ["local"]
    (aws,) = [r for r in result.rejections if r.target == "aws"]
    assert aws.code == "not_configured"
    assert "needs launch_template or image_id" in aws.detail
    assert "FUSIONPLANE_AWS_" in aws.detail
    full = _plan(bare, FULL, priority=Priority.LOW)
    assert _names(full) == []
    assert _codes(full) == {"local": "no_capacity", "aws": "excluded_by_rule", "azure": "not_configured"}
    # valid all the same: the operator's seed policy is not refused, validate says why the clouds sit out
    findings = validate_document(SEED)
    assert [(f.path, f.severity) for f in findings] == [("task_rules", "warning"), ("task_rules", "warning")]
    assert "subscription_id, resource_group, subnet_id, image, ssh_public_key" in findings[1].message
    assert build_policy_set(PolicyDocuments(base=SEED, source="file:seed.json")).base.target("aws") == bare.target(
        "aws"
    )


@pytest.mark.parametrize(
    ("target", "missing"),
    [
        ({"name": "spot", "provider": "aws", "private": False}, "launch_template or image_id"),
        (
            {"name": "spot", "provider": "aws", "private": False, "settings": {"launch_template": "  "}},
            "launch_template or image_id",
        ),
        (
            {"name": "spot", "provider": "azure", "private": False, "settings": {"resource_group": "rg"}},
            "subscription_id, subnet_id, image, ssh_public_key",
        ),
    ],
)
def test_a_full_policy_target_that_cannot_launch_is_refused_at_load_time(target: dict[str, Any], missing: str) -> None:
    document = {"targets": [{"name": "local", "provider": "local", "private": True}, target]}
    expected = f"{target['provider']} target 'spot' cannot launch: needs {missing}"
    # what start-up and every Consul or file reload go through
    with pytest.raises(PolicyError) as info:
        build_policy_set(PolicyDocuments(base=document, source="consul:fusionplane/policy"))
    assert info.value.path == "targets[1].settings"
    assert expected in info.value.message
    # `fusionctl policy validate`
    [finding] = validate_document(document)
    assert (finding.path, finding.severity) == ("targets[1].settings", "error")
    assert expected in finding.message


def test_the_built_in_clouds_are_read_from_the_environment() -> None:
    env = {
        "FUSIONPLANE_AWS_LAUNCH_TEMPLATE": "fusionplane-worker",
        "FUSIONPLANE_AWS_SUBNETS": "subnet-0abc, subnet-0def",
        "FUSIONPLANE_AWS_SECURITY_GROUPS": "sg-0123",
        "FUSIONPLANE_AWS_MAX_PRICE_USD_H": "0.3",
        "FUSIONPLANE_AWS_REGION": "eu-west-1",
        **{f"FUSIONPLANE_AZURE_{key.upper()}": value for key, value in AZURE_SETTINGS.items()},
    }
    clouds = seed_clouds_from_env(env)
    assert clouds.aws == BuiltinCloud(
        settings={
            "launch_template": "fusionplane-worker",
            "subnets": ["subnet-0abc", "subnet-0def"],
            "security_group_ids": ["sg-0123"],
        },
        max_price_usd_h=0.3,
        region="eu-west-1",
    )
    assert clouds.azure == BuiltinCloud(settings=AZURE_SETTINGS)
    policy = parse_policy(SEED, seed_clouds=clouds)
    assert [t.not_configured for t in policy.targets] == [None, None, None]
    assert policy.target("aws").regions == ("eu-west-1",)  # type: ignore[union-attr]
    assert seed_clouds_from_env({}) == SeedClouds()


@pytest.mark.parametrize("value", ["cheap", "0", "-1", "nan", "inf"])
def test_a_bad_max_price_names_the_variable(value: str) -> None:
    with pytest.raises(ValueError, match="FUSIONPLANE_AZURE_MAX_PRICE_USD_H"):
        seed_clouds_from_env({"FUSIONPLANE_AZURE_MAX_PRICE_USD_H": value})


def test_the_built_in_clouds_take_their_store_from_the_environment() -> None:
    clouds = seed_clouds_from_env(
        {
            "FUSIONPLANE_AWS_LAUNCH_TEMPLATE": "fusionplane-worker",
            "FUSIONPLANE_AWS_STORAGE_URI": "s3://fp-work/aws",
            "FUSIONPLANE_AZURE_STORAGE_URI": "az://fpwork/work/",
            "FUSIONPLANE_AZURE_STORAGE_ENDPOINT_URL": "http://127.0.0.1:10000/devstoreaccount1",
        }
    )
    policy = parse_policy(SEED, seed_clouds=clouds)
    aws, azure = policy.target("aws"), policy.target("azure")
    assert aws is not None
    assert aws.storage is not None
    assert aws.storage.root == "s3://fp-work/aws/"
    assert azure is not None
    assert azure.storage is not None
    assert azure.storage.endpoint_url == "http://127.0.0.1:10000/devstoreaccount1"
    with pytest.raises(PolicyError) as caught:
        parse_policy(SEED, seed_clouds=seed_clouds_from_env({"FUSIONPLANE_AWS_STORAGE_URI": "az://fpwork/work/"}))
    assert caught.value.path == "targets[1].storage.uri"
