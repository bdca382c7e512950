"""Placement policies: the JSON model, validation, sources, and the pure ``plan()`` function.

Public surface::

    load_policy_file(path) -> Policy        # one file, validated
    build_policy_set(documents) -> PolicySet  # base + per-tenant overlays (overlay.py)
    ActivePolicy / PolicyWatcher            # the policy in force, hot-reloaded (watch.py)
    loads_policy(text) -> Policy
    parse_policy(document) -> Policy        # a decoded JSON document (full or seed form)
    plan(task, snapshot, policy, now) -> PlacementPlan   # pure

Every validation error is a :class:`PolicyError` naming the JSON path of the
bad field. docs/policies.md is the reference for the document.
"""

from controlplane.policy.active import ActivePolicy, PolicyDocuments, PolicySet, build_policy_set
from controlplane.policy.engine import (
    BUDGET_SOURCE,
    CAPACITY_SOURCE,
    DEFAULT_RULE,
    GPU_UTILIZATION_SOURCE,
    QUEUE_SOURCE,
    SPOT_PRICE_SOURCE,
    plan,
    spot_price_key,
)
from controlplane.policy.model import (
    CLOUD_PROVIDERS,
    PROVIDERS,
    Actions,
    Conditions,
    Match,
    Policy,
    PolicyError,
    Range,
    Rule,
    Thresholds,
    canonical_json,
    policy_version,
)
from controlplane.policy.parse import parse_policy
from controlplane.policy.seed import SEED_TARGETS
from controlplane.policy.sources import DEFAULT_POLICY_PATH, MAX_POLICY_BYTES, load_policy_file, loads_policy

__all__ = [
    "BUDGET_SOURCE",
    "CAPACITY_SOURCE",
    "CLOUD_PROVIDERS",
    "DEFAULT_POLICY_PATH",
    "DEFAULT_RULE",
    "GPU_UTILIZATION_SOURCE",
    "MAX_POLICY_BYTES",
    "PROVIDERS",
    "QUEUE_SOURCE",
    "SEED_TARGETS",
    "SPOT_PRICE_SOURCE",
    "ActivePolicy",
    "Actions",
    "Conditions",
    "Match",
    "Policy",
    "PolicyDocuments",
    "PolicyError",
    "PolicySet",
    "Range",
    "Rule",
    "Thresholds",
    "build_policy_set",
    "canonical_json",
    "load_policy_file",
    "loads_policy",
    "parse_policy",
    "plan",
    "policy_version",
    "spot_price_key",
]
