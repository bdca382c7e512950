"""Placement policies: the JSON model, validation, sources, and the pure ``plan()`` function.

Public surface::

    load_policy_file(path) -> Policy        # sources: JSON files (Consul comes later)
    loads_policy(text) -> Policy
    parse_policy(document) -> Policy        # a decoded JSON document
    plan(task, snapshot, policy, now) -> PlacementPlan   # pure

Every validation error is a :class:`PolicyError` naming the JSON path of the
bad field.
"""

from controlplane.policy.engine import CAPACITY_SOURCE, DEFAULT_RULE, plan
from controlplane.policy.model import (
    PROVIDERS,
    Match,
    Policy,
    PolicyError,
    Rule,
    canonical_json,
    parse_policy,
    policy_version,
)
from controlplane.policy.sources import DEFAULT_POLICY_PATH, MAX_POLICY_BYTES, load_policy_file, loads_policy

__all__ = [
    "CAPACITY_SOURCE",
    "DEFAULT_POLICY_PATH",
    "DEFAULT_RULE",
    "MAX_POLICY_BYTES",
    "PROVIDERS",
    "Match",
    "Policy",
    "PolicyError",
    "Rule",
    "canonical_json",
    "load_policy_file",
    "loads_policy",
    "parse_policy",
    "plan",
    "policy_version",
]
