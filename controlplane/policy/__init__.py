"""Placement policies: the JSON model, its validation, and the pure ``plan()`` function.

Public surface::

    parse_policy(document) -> Policy        # a decoded JSON document (full or seed form)
    plan(task, snapshot, policy, now) -> PlacementPlan   # pure
    conditions_held(policy, snapshot, now) -> tuple[bool, ...]   # each rule's ``when``

What lives here: ``model`` (the parsed policy as frozen values), ``parse``
and ``seed`` (JSON in the full and the seed form), ``checks`` (semantic
checks), ``overlay`` (per-tenant overlays), ``engine`` (``plan()`` and the
per-target signal checks) over ``compiled`` (what a policy derives once),
``rules`` (which rule a task gets) and ``reading`` (what ``plan()`` reads from
the snapshot), ``freshness`` (one TTL per signal), ``breaker`` (the spot
breaker's state machine), ``simulate`` (what-if replay) and ``storage`` (the
per-tenant storage allow-lists). Pure: no network or clock, and no file but
the storage allow-lists file that ``storage`` reads and follows. Where
policies come from (files, Consul), the policy in force and its hot reload
live in :mod:`controlplane.policy_sources`.

Every validation error is a :class:`PolicyError` naming the JSON path of the
bad field. docs/policies.md is the reference for the document.
"""

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
from controlplane.policy.rules import conditions_held
from controlplane.policy.seed import SEED_TARGETS

__all__ = [
    "BUDGET_SOURCE",
    "CAPACITY_SOURCE",
    "CLOUD_PROVIDERS",
    "DEFAULT_RULE",
    "GPU_UTILIZATION_SOURCE",
    "PROVIDERS",
    "QUEUE_SOURCE",
    "SEED_TARGETS",
    "SPOT_PRICE_SOURCE",
    "Actions",
    "Conditions",
    "Match",
    "Policy",
    "PolicyError",
    "Range",
    "Rule",
    "Thresholds",
    "canonical_json",
    "conditions_held",
    "parse_policy",
    "plan",
    "policy_version",
    "spot_price_key",
]
