"""Per-tenant overlays: a tenant's own rules and thresholds on top of the base policy.

An overlay is a small document::

    {"description": "...", "rules": [...], "thresholds": {...}}

Its rules are tried before the base rules, for that tenant's tasks only
(a rule without ``match.tenant`` gets the tenant; one naming another tenant
is refused). Its thresholds replace the base's, key by key. It cannot add
or change targets: where work may run, and which targets are private, stays
one document for everyone. The result is an ordinary full policy document,
so its sha256 is the version receipts name and ``policy_versions`` stores.
"""

from __future__ import annotations

import re
from dataclasses import replace
from typing import Any

from controlplane.domain import TENANT_RULE, is_tenant_name
from controlplane.domain.tenant import TENANT_NAME as DOMAIN_TENANT_NAME
from controlplane.policy.model import Policy, PolicyError
from controlplane.policy.parse import parse_policy
from controlplane.policy.seed import NO_SEED_CLOUDS, SEED_KEY, SeedClouds, mark_unconfigured, seed_document

__all__ = ["OVERLAY_KEYS", "TENANT_NAME", "apply_overlay", "full_document"]

OVERLAY_KEYS = frozenset({"$schema", "description", "rules", "thresholds"})
#: tenant names as tokens and the API accept them (the overlay's key or file name carries it)
TENANT_NAME = DOMAIN_TENANT_NAME
_RULE_PATH = re.compile(r"^rules\[(\d+)\](.*)$")


def full_document(document: dict[str, Any], seed_clouds: SeedClouds = NO_SEED_CLOUDS) -> dict[str, Any]:
    """The document in full form (the seed ``task_rules`` form expanded), for merging."""
    if SEED_KEY in document:
        expanded = seed_document(document, seed_clouds)
        return {key: value for key, value in expanded.items() if key != "$schema"}
    return dict(document)


def apply_overlay(
    base: dict[str, Any], overlay: Any, tenant: str, *, seed_clouds: SeedClouds = NO_SEED_CLOUDS
) -> tuple[dict[str, Any], Policy]:
    """The effective document and policy for ``tenant``; errors name the overlay's JSON paths."""
    if not is_tenant_name(tenant):
        raise PolicyError("", f"tenant name {tenant!r} is not valid ({TENANT_RULE})")
    if not isinstance(overlay, dict):
        raise PolicyError("", "an overlay must be an object with rules and/or thresholds")
    for key in overlay:
        if key not in OVERLAY_KEYS:
            hint = " (targets stay in the base policy)" if key in ("targets", SEED_KEY) else ""
            raise PolicyError(key, f"unknown field in an overlay{hint} (allowed: {', '.join(sorted(OVERLAY_KEYS))})")
    rules = overlay.get("rules", [])
    if not isinstance(rules, list):
        raise PolicyError("rules", "must be an array")
    thresholds = overlay.get("thresholds", {})
    if not isinstance(thresholds, dict):
        raise PolicyError("thresholds", "must be an object")
    own: list[Any] = []
    for index, rule in enumerate(rules):
        if not isinstance(rule, dict):
            raise PolicyError(f"rules[{index}]", "must be an object")
        match = rule.get("match", {})
        if not isinstance(match, dict):
            raise PolicyError(f"rules[{index}].match", "must be an object")
        named = match.get("tenant")
        if named is not None and named not in (tenant, [tenant]):
            raise PolicyError(f"rules[{index}].match.tenant", f"an overlay for {tenant!r} matches only that tenant")
        own.append({**rule, "match": {**match, "tenant": tenant}})
    merged = full_document(base, seed_clouds)
    merged["rules"] = own + list(merged.get("rules", []))
    merged["thresholds"] = {**merged.get("thresholds", {}), **thresholds}
    merged["description"] = f"{merged.get('description', 'policy')} + overlay for tenant {tenant}"
    try:
        effective = parse_policy(merged)
    except PolicyError as exc:
        raise _overlay_error(exc, len(own)) from exc
    if SEED_KEY in base:
        # the merged document is in full form, but its clouds are still the seed's built-ins
        effective = replace(effective, targets=tuple(mark_unconfigured(t) for t in effective.targets))
    return merged, effective


def _overlay_error(exc: PolicyError, own_rules: int) -> PolicyError:
    """Point an error in the merged document back at the overlay (or say it comes from the base)."""
    found = _RULE_PATH.match(exc.path)
    if found is not None:
        index = int(found.group(1))
        if index < own_rules:
            return PolicyError(f"rules[{index}]{found.group(2)}", exc.message)
        return PolicyError("", f"with the base policy: base rules[{index - own_rules}]{found.group(2)}: {exc.message}")
    return PolicyError(exc.path, exc.message)
