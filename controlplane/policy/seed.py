"""The seed's policy form: a bare ``task_rules`` list, read as the seed table means it.

A document such as::

    {"task_rules": [
        {"priority": "high", "data_sensitivity": "public",
         "use_cloud": true, "cloud_provider": "aws", "instance_type": "g4dn.2xlarge"},
        {"priority": "normal", "data_sensitivity": "private", "use_cloud": false}]}

becomes three default targets (``local``: this machine's private target;
``aws``: EC2 Spot; ``azure``: Azure Spot) and one rule per entry, in order.
``use_cloud: false`` keeps the task on ``local``; ``use_cloud: true`` sends
it to ``cloud_provider`` (both clouds, AWS first, when absent) with the
given ``instance_type``. A task no entry matches may use every target,
local first. The default spot targets carry no max price: AWS and Azure then
cap a spot price at the on-demand price.
"""

from __future__ import annotations

from typing import Any

from controlplane.domain import DataSensitivity, Priority
from controlplane.policy.model import CLOUD_PROVIDERS, PolicyError

__all__ = ["SEED_KEY", "SEED_TARGETS", "seed_document"]

SEED_KEY = "task_rules"
_ENTRY_KEYS = ("priority", "data_sensitivity", "use_cloud", "cloud_provider", "instance_type")

SEED_TARGETS: tuple[dict[str, Any], ...] = (
    {"name": "local", "provider": "local", "private": True, "description": "this machine (the private target)"},
    {
        "name": "aws",
        "provider": "aws",
        "private": False,
        "regions": ["us-east-1"],
        "instance_types": ["g4dn.xlarge"],
        "description": "EC2 Spot",
    },
    {
        "name": "azure",
        "provider": "azure",
        "private": False,
        "regions": ["eastus"],
        "instance_types": ["Standard_NC4as_T4_v3"],
        "description": "Azure Spot",
    },
)


def _entry(value: Any, index: int) -> dict[str, Any]:
    path = f"{SEED_KEY}[{index}]"
    if not isinstance(value, dict):
        raise PolicyError(path, "must be an object")
    for key in sorted(value):
        if key not in _ENTRY_KEYS:
            raise PolicyError(f"{path}.{key}", f"unknown field (allowed: {', '.join(_ENTRY_KEYS)})")
    rule: dict[str, Any] = {"name": f"task-rule-{index + 1}", "match": {}}
    for key, enum in (("priority", Priority), ("data_sensitivity", DataSensitivity)):
        if key in value:
            allowed = [member.value for member in enum]
            if value[key] not in allowed:
                raise PolicyError(f"{path}.{key}", f"must be one of {', '.join(allowed)}")
            rule["match"][key] = value[key]
    use_cloud = value.get("use_cloud", False)
    if not isinstance(use_cloud, bool):
        raise PolicyError(f"{path}.use_cloud", "must be true or false")
    provider = value.get("cloud_provider")
    if provider is not None and provider not in CLOUD_PROVIDERS:
        raise PolicyError(f"{path}.cloud_provider", f"must be one of {', '.join(CLOUD_PROVIDERS)}")
    if provider is not None and not use_cloud:
        raise PolicyError(f"{path}.cloud_provider", "needs use_cloud: true")
    instance_type = value.get("instance_type")
    if instance_type is not None and (not isinstance(instance_type, str) or not instance_type):
        raise PolicyError(f"{path}.instance_type", "must be a non-empty string")
    rule["use_cloud"] = use_cloud
    if use_cloud:
        rule["targets"] = [provider] if provider else list(CLOUD_PROVIDERS)
        if instance_type:
            rule["instance_type"] = instance_type
    else:
        if instance_type is not None:
            raise PolicyError(f"{path}.instance_type", "only applies with use_cloud: true")
        rule["targets"] = ["local"]
    return rule


def seed_document(raw: dict[str, Any]) -> dict[str, Any]:
    """The full-form document equivalent to a seed document (``task_rules`` + optional ``thresholds``)."""
    entries = raw[SEED_KEY]
    if not isinstance(entries, list):
        raise PolicyError(SEED_KEY, "must be an array of rules")
    document: dict[str, Any] = {
        "targets": [dict(t) for t in SEED_TARGETS],
        "rules": [_entry(value, index) for index, value in enumerate(entries)],
    }
    if "thresholds" in raw:
        document["thresholds"] = raw["thresholds"]
    return document
