"""The policy document: targets, ordered rules, and its version.

A policy is parsed once from JSON (``parse_policy``) into frozen values and
never changes afterwards; ``plan()`` only reads it. Its ``version`` is the
sha256 of the document's canonical JSON (sorted keys, no whitespace, UTF-8),
so the same document always has the same version whatever its formatting.

Minimal language (the policy-engine issue grows it)::

    {
      "targets": [{"name": "local", "provider": "local", "private": true, "settings": {"slots": 2}}],
      "rules": [
        {"name": "film", "match": {"data_sensitivity": "private"}, "targets": ["local"]},
        {"name": "rest", "targets": ["k8s", "aws"], "exclude": ["azure"]}
      ]
    }

A rule's ``match`` fields (``priority``, ``data_sensitivity``, ``kind``,
``tenant``) take one value or a list; an absent field matches anything.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from controlplane.domain import DataSensitivity, Priority, Target, TaskKind

__all__ = [
    "PROVIDERS",
    "Match",
    "Policy",
    "PolicyError",
    "Rule",
    "canonical_json",
    "parse_policy",
    "policy_version",
]

#: the providers a target may name, in the order error messages list them
PROVIDERS: tuple[str, ...] = ("local", "kubernetes", "aws", "azure")
_NAME = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,62}$")
_E = TypeVar("_E", Priority, DataSensitivity, TaskKind)


class PolicyError(ValueError):
    """A policy document that is not valid; ``path`` is the JSON path of the bad field."""

    def __init__(self, path: str, message: str) -> None:
        super().__init__(f"{path}: {message}" if path else message)
        self.path = path
        self.message = message


@dataclass(frozen=True, kw_only=True)
class Match:
    """What a rule applies to; an empty tuple means "any"."""

    priority: tuple[Priority, ...] = ()
    data_sensitivity: tuple[DataSensitivity, ...] = ()
    kind: tuple[TaskKind, ...] = ()
    tenant: tuple[str, ...] = ()


@dataclass(frozen=True, kw_only=True)
class Rule:
    """One rule: when ``match`` holds, try ``targets`` in order (all targets when empty), minus ``exclude``."""

    name: str
    match: Match = field(default_factory=Match)
    #: preferred targets, best first; empty means every target in document order
    targets: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()


@dataclass(frozen=True, kw_only=True)
class Policy:
    """A parsed, validated policy document."""

    #: sha256 (hex) of the document's canonical JSON
    version: str
    targets: tuple[Target, ...]
    rules: tuple[Rule, ...] = ()

    def target(self, name: str) -> Target | None:
        """The target called ``name``, if the policy defines one."""
        for target in self.targets:
            if target.name == name:
                return target
        return None


def canonical_json(document: Any) -> str:
    """The canonical form hashed into a policy version: sorted keys, no whitespace, no NaN."""
    return json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def policy_version(document: Mapping[str, Any]) -> str:
    """sha256 hex digest of ``canonical_json(document)``."""
    return hashlib.sha256(canonical_json(document).encode("utf-8")).hexdigest()


# -- parsing ----------------------------------------------------------------------------------------

_TOP_KEYS = frozenset({"$schema", "description", "targets", "rules"})
_TARGET_KEYS = frozenset(
    {"name", "provider", "private", "regions", "instance_types", "max_price_usd_h", "settings", "description"}
)
_RULE_KEYS = frozenset({"name", "description", "match", "targets", "exclude"})
_MATCH_KEYS = frozenset({"priority", "data_sensitivity", "kind", "tenant"})


def _type_name(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


def _object(value: Any, path: str, allowed: frozenset[str]) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise PolicyError(path, f"must be an object, not {_type_name(value)}")
    for key in sorted(value):
        if key not in allowed:
            where = f"{path}.{key}" if path else key
            raise PolicyError(where, f"unknown field (allowed: {', '.join(sorted(allowed))})")
    return value


def _string_list(value: Any, path: str) -> tuple[str, ...]:
    if not isinstance(value, list):
        raise PolicyError(path, f"must be an array of strings, not {_type_name(value)}")
    for index, item in enumerate(value):
        if not isinstance(item, str) or not item:
            raise PolicyError(f"{path}[{index}]", "must be a non-empty string")
    return tuple(value)


def _name(value: Any, path: str) -> str:
    if not isinstance(value, str) or not _NAME.match(value):
        raise PolicyError(path, "must be a name of 1..63 of [a-z0-9_.-], starting with a letter or digit")
    return value


def _one_or_many(value: Any, path: str) -> tuple[str, ...]:
    """A match field: one string or a non-empty list of strings."""
    if isinstance(value, str):
        return (value,)
    items = _string_list(value, path)
    if not items:
        raise PolicyError(path, "must not be empty (leave the field out to match anything)")
    return items


def _enum_values(value: Any, path: str, enum: type[_E]) -> tuple[_E, ...]:
    items = _one_or_many(value, path)
    allowed = [member.value for member in enum]
    out: list[_E] = []
    for index, item in enumerate(items):
        if item not in allowed:
            where = path if isinstance(value, str) else f"{path}[{index}]"
            raise PolicyError(where, f"must be one of {', '.join(allowed)}")
        out.append(enum(item))
    return tuple(out)


def _parse_target(value: Any, path: str) -> Target:
    raw = _object(value, path, _TARGET_KEYS)
    for required in ("name", "provider", "private"):
        if required not in raw:
            raise PolicyError(f"{path}.{required}", "is required")
    name = _name(raw["name"], f"{path}.name")
    provider = raw["provider"]
    if provider not in PROVIDERS:
        raise PolicyError(f"{path}.provider", f"must be one of {', '.join(PROVIDERS)}")
    private = raw["private"]
    if not isinstance(private, bool):
        raise PolicyError(f"{path}.private", f"must be true or false, not {_type_name(private)}")
    regions = _string_list(raw.get("regions", []), f"{path}.regions")
    instance_types = _string_list(raw.get("instance_types", []), f"{path}.instance_types")
    max_price = raw.get("max_price_usd_h")
    if max_price is not None and (
        isinstance(max_price, bool)
        or not isinstance(max_price, (int, float))
        or not math.isfinite(max_price)
        or max_price <= 0
    ):
        raise PolicyError(f"{path}.max_price_usd_h", "must be a positive number or null")
    settings = raw.get("settings", {})
    if not isinstance(settings, dict):
        raise PolicyError(f"{path}.settings", f"must be an object, not {_type_name(settings)}")
    return Target(
        name=name,
        provider=provider,
        private=private,
        regions=regions,
        instance_types=instance_types,
        max_price_usd_h=None if max_price is None else float(max_price),
        settings=dict(settings),
    )


def _target_refs(value: Any, path: str, known: Sequence[str]) -> tuple[str, ...]:
    names = _string_list(value, path)
    seen: set[str] = set()
    for index, name in enumerate(names):
        if name not in known:
            raise PolicyError(f"{path}[{index}]", f"unknown target {name!r} (targets: {', '.join(known)})")
        if name in seen:
            raise PolicyError(f"{path}[{index}]", f"target {name!r} is listed twice")
        seen.add(name)
    return names


def _parse_rule(value: Any, path: str, index: int, known: Sequence[str]) -> Rule:
    raw = _object(value, path, _RULE_KEYS)
    name = _name(raw["name"], f"{path}.name") if "name" in raw else f"rules[{index}]"
    match_raw = _object(raw.get("match", {}), f"{path}.match", _MATCH_KEYS)
    mpath = f"{path}.match"
    match = Match(
        priority=_enum_values(match_raw["priority"], f"{mpath}.priority", Priority) if "priority" in match_raw else (),
        data_sensitivity=(
            _enum_values(match_raw["data_sensitivity"], f"{mpath}.data_sensitivity", DataSensitivity)
            if "data_sensitivity" in match_raw
            else ()
        ),
        kind=_enum_values(match_raw["kind"], f"{mpath}.kind", TaskKind) if "kind" in match_raw else (),
        tenant=_one_or_many(match_raw["tenant"], f"{mpath}.tenant") if "tenant" in match_raw else (),
    )
    targets = _target_refs(raw.get("targets", []), f"{path}.targets", known)
    exclude = _target_refs(raw.get("exclude", []), f"{path}.exclude", known)
    return Rule(name=name, match=match, targets=targets, exclude=exclude)


def parse_policy(document: Any) -> Policy:
    """Validate a decoded JSON document and build the :class:`Policy`.

    Raises :class:`PolicyError` naming the JSON path of the first bad field,
    e.g. ``targets[1].provider: must be one of local, kubernetes, aws, azure``.
    """
    raw = _object(document, "", _TOP_KEYS)
    if "targets" not in raw:
        raise PolicyError("targets", "is required")
    if not isinstance(raw["targets"], list):
        raise PolicyError("targets", f"must be an array, not {_type_name(raw['targets'])}")
    if not raw["targets"]:
        raise PolicyError("targets", "must name at least one target")
    targets: list[Target] = []
    for index, item in enumerate(raw["targets"]):
        target = _parse_target(item, f"targets[{index}]")
        if any(existing.name == target.name for existing in targets):
            raise PolicyError(f"targets[{index}].name", f"duplicate target name {target.name!r}")
        targets.append(target)
    known = [target.name for target in targets]
    rules_raw = raw.get("rules", [])
    if not isinstance(rules_raw, list):
        raise PolicyError("rules", f"must be an array, not {_type_name(rules_raw)}")
    rules: list[Rule] = []
    for index, item in enumerate(rules_raw):
        rule = _parse_rule(item, f"rules[{index}]", index, known)
        if any(existing.name == rule.name for existing in rules):
            raise PolicyError(f"rules[{index}].name", f"duplicate rule name {rule.name!r}")
        rules.append(rule)
    try:
        version = policy_version(raw)
    except ValueError as exc:  # NaN / Infinity somewhere in settings
        raise PolicyError("", f"is not representable as canonical JSON: {exc}") from exc
    return Policy(version=version, targets=tuple(targets), rules=tuple(rules))
