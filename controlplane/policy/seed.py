"""The seed's policy form: a bare ``task_rules`` list, read as the seed's ``route_task`` means it.

A document such as::

    {"task_rules": [
        {"priority": "high", "data_sensitivity": "public",
         "use_cloud": true, "cloud_provider": "aws", "instance_type": "g4dn.2xlarge"},
        {"priority": "normal", "data_sensitivity": "private", "use_cloud": false}]}

becomes three built-in targets (``local``: this machine's private target;
``aws``: EC2 Spot; ``azure``: Azure Spot) and one rule per entry, in order.
``use_cloud: false`` keeps the task on ``local``; ``use_cloud: true`` sends
it to ``cloud_provider`` (both clouds, AWS first, when absent) with the
given ``instance_type``, and to ``local`` when no cloud can take it.

After the entries come the seed's own routes for a task no entry matches
(rules named ``seed-*``):

1. urgent work, and any work at peak (a backlog: more than
   ``PEAK_QUEUE_DEPTH`` tasks queued, a campaign's batch), goes to AWS Spot
   when its spot price is under the budget threshold (the aws target's max
   price); then ``local``, then Azure. A cluster that is only full is not
   peak: its work falls back to Azure, rule 2. Without a max price for AWS there is
   no threshold to be under, and these two rules are left out;
2. anything else runs on ``local``, and on Azure Spot (preemptible) when
   ``local`` is full; AWS is not used.

The built-in clouds take their launch settings, region and max price from
:class:`SeedClouds` (the operator's configuration, read where policies are
loaded, never here). A built-in cloud whose settings cannot launch is kept
but marked ``not_configured``: ``plan()`` rejects it with that code and the
task falls back to ``local`` rather than the whole seed policy being
refused.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from controlplane.domain import DataSensitivity, Priority, Target, missing_launch_settings
from controlplane.policy.model import CLOUD_PROVIDERS, PolicyError

__all__ = [
    "NO_SEED_CLOUDS",
    "SEED_KEY",
    "SEED_RULE_PREFIX",
    "SEED_TARGETS",
    "BuiltinCloud",
    "SeedClouds",
    "mark_unconfigured",
    "seed_document",
]

SEED_KEY = "task_rules"
#: the seed's own routes after the entries are named ``seed-...`` (entries are ``task-rule-N``)
SEED_RULE_PREFIX = "seed-"
#: the seed's peak: more tasks queued than this (the policy language's default ``peak_queue_depth``)
PEAK_QUEUE_DEPTH = 100


@dataclass(frozen=True, kw_only=True)
class BuiltinCloud:
    """The operator's configuration of one built-in cloud target of the seed form."""

    #: provider settings, as a full policy's target would carry them (launch_template, subnets, ...)
    settings: Mapping[str, Any] = field(default_factory=dict)
    #: the budget threshold: spot prices above it are refused, and AWS is chosen for urgent or peak
    #: work only under it. None: no threshold (the provider caps spot at on-demand)
    max_price_usd_h: float | None = None
    #: replaces the built-in region when given
    region: str | None = None
    #: the target's ``storage`` in its JSON form (``{"uri": "s3://bucket/prefix/"}``), checked like a full
    #: policy's; empty: no store, so the cloud takes only tasks whose URIs it reaches without one
    storage: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, kw_only=True)
class SeedClouds:
    """Both built-in clouds' configuration (``controlplane.cloud_defaults`` reads it from the environment)."""

    aws: BuiltinCloud = field(default_factory=BuiltinCloud)
    azure: BuiltinCloud = field(default_factory=BuiltinCloud)

    def get(self, provider: str) -> BuiltinCloud:
        return self.aws if provider == "aws" else self.azure


#: nothing configured: both built-in clouds are ``not_configured``
NO_SEED_CLOUDS = SeedClouds()
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
    if use_cloud:
        # the cloud(s) first; local when none can take the task (not configured, price, budget, a failed
        # launch), as the seed falls back to the cluster rather than failing the task
        rule["targets"] = [provider] if provider else list(CLOUD_PROVIDERS)
        rule["targets"].append("local")
        if instance_type:
            rule["instance_type"] = instance_type
    else:
        if instance_type is not None:
            raise PolicyError(f"{path}.instance_type", "only applies with use_cloud: true")
        rule["use_cloud"] = False
        rule["targets"] = ["local"]
    return rule


def _seed_routes(clouds: SeedClouds) -> list[dict[str, Any]]:
    """``route_task`` for a task no entry matched (see the module docstring)."""
    routes: list[dict[str, Any]] = []
    if clouds.aws.max_price_usd_h is not None:
        spot_first = ["aws", "local", "azure"]
        routes += [
            {
                "name": f"{SEED_RULE_PREFIX}urgent-aws-spot",
                "description": "Urgent work: AWS Spot when its price is under the budget threshold.",
                "match": {"priority": "urgent"},
                "when": {"spot_price_under_budget": True},
                "targets": spot_first,
            },
            {
                # peak is a backlog (a campaign's batch), not a full cluster: a cluster that is merely
                # full falls back to Azure (the last route), as the seed's table says
                "name": f"{SEED_RULE_PREFIX}peak-aws-spot",
                "description": "Peak (a queue deeper than the peak queue depth): AWS Spot when its price is "
                "under the budget threshold.",
                "when": {"queue_depth_above": PEAK_QUEUE_DEPTH, "spot_price_under_budget": True},
                "targets": spot_first,
            },
        ]
    routes.append(
        {
            "name": f"{SEED_RULE_PREFIX}unmatched",
            "description": "The local cluster; Azure Spot (preemptible) when it is full.",
            "targets": ["local", "azure"],
        }
    )
    return routes


def _builtin_target(template: Mapping[str, Any], clouds: SeedClouds) -> dict[str, Any]:
    target = dict(template)
    if target["provider"] in CLOUD_PROVIDERS:
        cloud = clouds.get(target["provider"])
        if cloud.settings:
            target["settings"] = dict(cloud.settings)
        if cloud.max_price_usd_h is not None:
            target["max_price_usd_h"] = cloud.max_price_usd_h
        if cloud.region:
            target["regions"] = [cloud.region]
        if cloud.storage:
            target["storage"] = dict(cloud.storage)
    return target


def mark_unconfigured(target: Target) -> Target:
    """A built-in target as plan() should see it: ``not_configured`` says what its settings lack."""
    missing = missing_launch_settings(target.provider, target.settings)
    if not missing:
        return target
    variables = "FUSIONPLANE_AWS_*" if target.provider == "aws" else "FUSIONPLANE_AZURE_*"
    return replace(
        target,
        not_configured=(
            f"the seed's built-in {target.provider} target has no launch settings: needs "
            f"{', '.join(missing)} (set {variables}, docs/policies.md#the-seed-form)"
        ),
    )


def seed_document(raw: dict[str, Any], clouds: SeedClouds = NO_SEED_CLOUDS) -> dict[str, Any]:
    """The full-form document equivalent to a seed document (``task_rules`` + optional ``thresholds``).

    ``clouds`` configures the built-in cloud targets (settings, max price, region).
    """
    entries = raw[SEED_KEY]
    if not isinstance(entries, list):
        raise PolicyError(SEED_KEY, "must be an array of rules")
    document: dict[str, Any] = {
        "targets": [_builtin_target(t, clouds) for t in SEED_TARGETS],
        "rules": [_entry(value, index) for index, value in enumerate(entries)] + _seed_routes(clouds),
    }
    if "thresholds" in raw:
        document["thresholds"] = raw["thresholds"]
    return document
