"""Provider settings models: a bad or unknown target setting is refused by its JSON path when a policy is checked."""

from __future__ import annotations

from typing import Any

import pytest

from controlplane.policy.checks import launch_problems, validate_document
from controlplane.policy.parse import parse_policy
from providers.aws import validate_settings as aws_settings
from providers.azure import validate_settings as azure_settings
from providers.kubernetes import validate_settings as kubernetes_settings
from providers.target_settings import check_target_settings

AWS = {
    "launch_template": {"us-east-1": "fp-worker", "eu-west-1": "lt-0123456789abcdef0"},
    "launch_template_version": "$Latest",
    "image_id": "ami-0123456789abcdef0",
    "iam_instance_profile": "arn:aws:iam::123456789012:instance-profile/fp-worker",
    "subnet_ids": {"us-east-1": ["subnet-a", "subnet-b"]},
    "security_group_ids": "sg-0123",
    "worker_image": "registry.example/fusionplane-worker:1.0.0-gpu",
    "prometheus_selector": 'cluster="aws"',
}
AZURE = {
    "subscription_id": "00000000-0000-0000-0000-000000000000",
    "resource_group": "rg-fusionplane_(gpu).east",
    "subnet_id": "/subscriptions/x/resourceGroups/rg/providers/Microsoft.Network/virtualNetworks/v/subnets/s",
    "image": "Canonical:ubuntu-24_04-lts:server:latest",
    "ssh_public_key": "ssh-ed25519 AAAA fusionplane@test",
    "worker_image": "registry.example/fusionplane-worker:1.0.0-gpu",
    "worker_gpus": True,
    "admin_username": "fp",
    "os_disk_type": "Premium_LRS",
    "os_disk_size_gb": 128,
    "network_security_group_id": "/subscriptions/x/resourceGroups/rg/providers/Microsoft.Network/nsg/n",
    "accelerated_networking": False,
}
KUBERNETES = {
    "namespace": "fusionplane-gpu",
    "worker_image": "registry.example/fusionplane-worker:1.0.0-gpu",
    "gpus": 1,
    "gpu_resource": "nvidia.com/gpu",
    "node_selector": {"gpu": "t4"},
    "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
    "priority_class": "batch-low",
    "service_account": "fp-worker",
    "image_pull_secrets": ["registry"],
    "models_pvc": "models",
    "trt_cache_pvc": "trt-cache",
    "scratch_size_limit": "40Gi",
    "resources": {"requests": {"cpu": "4", "memory": "16Gi"}, "limits": {"memory": 17179869184}},
    "ttl_seconds_after_finished": 600,
    "kubeconfig": "~/.kube/config",
    "context": "onprem",
}


@pytest.mark.parametrize(
    ("check", "settings"),
    [(aws_settings, AWS), (azure_settings, AZURE), (kubernetes_settings, KUBERNETES), (kubernetes_settings, {})],
)
def test_every_documented_setting_is_accepted(check: Any, settings: dict[str, Any]) -> None:
    assert check(settings) == []


@pytest.mark.parametrize(
    ("provider", "settings", "path", "message"),
    [
        ("kubernetes", {"namespace": "Not_A_Namespace"}, "namespace", "must be a DNS label, not 'Not_A_Namespace'"),
        ("kubernetes", {"node_selector": {"gpu": True}}, "node_selector.gpu", "input should be a valid string"),
        ("kubernetes", {"gpus": True}, "gpus", "input should be a valid integer"),
        ("kubernetes", {"models_pvc": "Models PVC"}, "models_pvc", "must be a Kubernetes object name"),
        ("kubernetes", {"image": "a:1", "worker_image": "b:1"}, "image", "and settings.worker_image differ"),
        ("aws", {"subnets": ["subnet-a", ""]}, "subnets", "must be a string or a list of strings"),
        ("aws", {"image_id": {"us-east-1": "ubuntu"}}, "image_id", "(region us-east-1) must be an ami- id"),
        ("aws", {"launch_template": ""}, "launch_template", "must be a non-empty string"),
        ("azure", {"resource_group": "rg/with/slashes"}, "resource_group", "must be a resource group name"),
        ("azure", {"resource_group": "ends-with."}, "resource_group", "must be a resource group name"),
        ("azure", {"subnet_id": "/subscriptions/x/resourceGroups/y"}, "subnet_id", "must be a subnet resource id"),
        ("azure", {"worker_gpus": "yes"}, "worker_gpus", "must be true or false"),
        ("azure", {"ssh_public_key": " "}, "ssh_public_key", "is required (a non-empty string)"),
    ],
)
def test_a_setting_of_the_wrong_form_is_named_by_its_path(
    provider: str, settings: dict[str, Any], path: str, message: str
) -> None:
    problems = check_target_settings(provider, settings)
    assert [p for p, _ in problems] == [path]
    assert message in problems[0][1]


@pytest.mark.parametrize("provider", ["aws", "azure", "kubernetes"])
def test_an_unknown_setting_is_refused(provider: str) -> None:
    # a typo ("namespce") would otherwise be ignored and the default used, silently
    assert check_target_settings(provider, {"namespce": "gpu"}) == [
        ("namespce", f"is not a setting of {provider} targets (docs/providers.md lists them)")
    ]


def test_a_setting_given_as_null_is_the_same_as_left_out() -> None:
    assert check_target_settings("kubernetes", {"namespace": None, "worker_image": None}) == []
    assert check_target_settings("aws", {"image_id": None, "launch_template": "fp"}) == []


def test_providers_without_a_settings_model_have_no_problems() -> None:
    assert check_target_settings("local", {"slots": 2, "anything": True}) == []


def _policy(*targets: dict[str, Any]) -> dict[str, Any]:
    return {"targets": [{"name": "local", "provider": "local", "private": True}, *targets]}


def _target(name: str, provider: str, settings: dict[str, Any]) -> dict[str, Any]:
    return {"name": name, "provider": provider, "private": False, "regions": ["r1"], "settings": settings}


def test_policy_validation_refuses_each_bad_setting_by_its_json_path() -> None:
    document = _policy(
        _target("onprem", "kubernetes", {"namespace": "GPU_jobs"}),
        _target("spot", "aws", {"image_id": "ami-1", "subnets": 7}),
        _target("azure", "azure", {**AZURE, "resource_group": "rg?"}),
    )
    findings = validate_document(document, check_settings=check_target_settings)
    assert [(f.path, f.severity) for f in findings] == [
        ("targets[1].settings.namespace", "error"),
        ("targets[2].settings.subnets", "error"),
        ("targets[3].settings.resource_group", "error"),
    ]
    assert str(findings[0]) == (
        "targets[1].settings.namespace: kubernetes target 'onprem': must be a DNS label, not 'GPU_jobs'"
    )
    # the policy layer alone checks presence only: the forms are the providers' models, passed in
    assert validate_document(document) == []


def test_a_missing_setting_and_a_bad_one_are_both_reported() -> None:
    policy = parse_policy(_policy(_target("spot", "aws", {"subnet_ids": [""]})))
    assert [(p.path, p.message) for p in launch_problems(policy, check_settings=check_target_settings)] == [
        (
            "targets[1].settings",
            "aws target 'spot' cannot launch: needs launch_template or image_id (docs/providers.md)",
        ),
        (
            "targets[1].settings.subnet_ids",
            "aws target 'spot': must be a string or a list of strings (or a map of region -> that)",
        ),
    ]
