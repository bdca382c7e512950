"""JSON -> :class:`Policy`, refusing anything that is not exactly right.

Every error is a :class:`PolicyError` whose ``path`` is the JSON path of the
bad field (``rules[2].when.gpu_utilization_above.k8s``). The first error
stops the parse; ``fusionctl policy validate`` adds the semantic checks of
:mod:`controlplane.policy.checks` on top.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from typing import Any, TypeVar

from controlplane.domain import (
    MARKETS,
    SPOT,
    TENANT_RULE,
    DataSensitivity,
    Priority,
    Target,
    TaskKind,
    is_tenant_name,
)
from controlplane.domain.fields import json_path, json_type_name
from controlplane.policy.model import (
    CLOUD_PROVIDERS,
    FIRST_HEARTBEAT_DEFAULTS,
    PROVIDERS,
    Actions,
    Conditions,
    Match,
    Policy,
    PolicyError,
    Range,
    Rule,
    Thresholds,
    policy_version,
)
from controlplane.policy.parse_cloud import CLOUD_KEY, pool_fields
from controlplane.policy.parse_economics import parse_deadlines, parse_estimates, parse_rank, parse_spot_risk
from controlplane.policy.parse_fields import boolean as _bool
from controlplane.policy.parse_fields import json_object as _object
from controlplane.policy.parse_fields import number as _number
from controlplane.policy.seed import NO_SEED_CLOUDS, SEED_KEY, SeedClouds, mark_unconfigured, seed_document
from controlplane.policy.stores import parse_target_storage

__all__ = ["parse_policy"]

_NAME = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,62}$")
_LABEL_KEY = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
_E = TypeVar("_E", Priority, DataSensitivity, TaskKind)

_TOP_KEYS = frozenset(
    {"$schema", "description", "thresholds", "estimates", "deadlines", "spot_risk", "targets", "rules", SEED_KEY}
)
_TARGET_KEYS = frozenset(
    {
        "name",
        "provider",
        "private",
        "regions",
        "zones",
        "instance_types",
        "max_price_usd_h",
        "market",
        "gpu_utilization_query",
        "settings",
        "storage",
        "description",
        CLOUD_KEY,
    }
)
_RULE_KEYS = frozenset(
    {
        "name",
        "description",
        "match",
        "when",
        "targets",
        "exclude",
        "require",
        "use_cloud",
        "cloud_provider",
        "instance_type",
        "max_price_usd_h",
        "hedge",
        "deadline_aware",
        "rank",
    }
)
_MATCH_KEYS = frozenset({"priority", "data_sensitivity", "kind", "tenant", "labels", "deadline_seconds", "input_bytes"})
_WHEN_KEYS = frozenset(
    {
        "peak",
        "gpu_utilization_above",
        "free_gpus_below",
        "queue_depth_above",
        "spot_price_under_budget",
        "budget_left_today_usd_above",
    }
)
_THRESHOLD_KEYS = frozenset(
    {
        "peak_gpu_utilization",
        "peak_free_gpus_below",
        "peak_queue_depth",
        "price_ttl_seconds",
        "load_ttl_seconds",
        "daily_budget_usd",
        "tenant_daily_budget_usd",
        "breaker_window_seconds",
        "breaker_min_attempts",
        "breaker_open_failure_rate",
        "breaker_close_failure_rate",
        "breaker_cooldown_seconds",
        "breaker_max_cooldown_seconds",
        "max_attempts",
        "retry_backoff_seconds",
        "retry_backoff_max_seconds",
        "heartbeat_timeout_seconds",
        "unschedulable_timeout_seconds",
        "max_queue_seconds",
        "first_heartbeat_timeout_seconds",
    }
)
MAX_HEDGE = 4
#: the tenant budget that applies to every tenant not listed
EVERY_TENANT = "*"


def _string_list(value: Any, path: str) -> tuple[str, ...]:
    if not isinstance(value, list):
        raise PolicyError(path, f"must be an array of strings, not {json_type_name(value)}")
    for index, item in enumerate(value):
        if not isinstance(item, str) or not item:
            raise PolicyError(f"{path}[{index}]", "must be a non-empty string")
    return tuple(value)


def _name(value: Any, path: str) -> str:
    if not isinstance(value, str) or not _NAME.match(value):
        raise PolicyError(path, "must be a name of 1..63 of [a-z0-9_.-], starting with a letter or digit")
    return value


def _positive_price(value: Any, path: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value <= 0:
        raise PolicyError(path, "must be a positive number or null")
    return float(value)


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


def _range(value: Any, path: str) -> Range:
    raw = _object(value, path, frozenset({"min", "max"}))
    if not raw:
        raise PolicyError(path, "needs min, max or both")
    low = _number(raw["min"], json_path(path, "min"), low=0) if "min" in raw else None
    high = _number(raw["max"], json_path(path, "max"), low=0) if "max" in raw else None
    if low is not None and high is not None and low > high:
        raise PolicyError(json_path(path, "min"), f"is above max ({low:g} > {high:g})")
    return Range(min=low, max=high)


def _parse_target(value: Any, path: str) -> Target:
    raw = _object(value, path, _TARGET_KEYS)
    for required in ("name", "provider", "private"):
        if required not in raw:
            raise PolicyError(f"{path}.{required}", "is required")
    name = _name(raw["name"], f"{path}.name")
    provider = raw["provider"]
    if provider not in PROVIDERS:
        raise PolicyError(f"{path}.provider", f"must be one of {', '.join(PROVIDERS)}")
    query = raw.get("gpu_utilization_query")
    if query is not None and (not isinstance(query, str) or not query.strip()):
        raise PolicyError(f"{path}.gpu_utilization_query", "must be a non-empty PromQL string")
    settings = raw.get("settings", {})
    if not isinstance(settings, dict):
        raise PolicyError(f"{path}.settings", f"must be an object, not {json_type_name(settings)}")
    # a node pool brings its own region, types and market (parse_cloud); a VM target names them itself
    market = pool_fields(raw, provider, path) or {
        "regions": _string_list(raw.get("regions", []), f"{path}.regions"),
        "instance_types": _string_list(raw.get("instance_types", []), f"{path}.instance_types"),
        "market": _market(raw, provider, f"{path}.market"),
    }
    pool = market.get("cloud")
    return Target(
        name=name,
        provider=provider,
        private=_bool(raw["private"], f"{path}.private"),
        zones=_string_list(raw.get("zones", []), f"{path}.zones"),
        max_price_usd_h=_positive_price(raw.get("max_price_usd_h"), f"{path}.max_price_usd_h"),
        **market,
        gpu_utilization_query=query,
        settings=dict(settings),
        storage=parse_target_storage(
            raw["storage"], f"{path}.storage", provider=provider, cloud=pool.provider if pool else None
        )
        if "storage" in raw
        else None,
    )


def _market(raw: dict[str, Any], provider: str, path: str) -> str:
    """A cloud target's market (spot unless it says on-demand); other providers have none to choose."""
    if "market" not in raw:
        return SPOT
    market = raw["market"]
    if provider not in CLOUD_PROVIDERS:
        raise PolicyError(path, f"only aws and azure targets buy machines on a market, not {provider}")
    if market not in MARKETS:
        raise PolicyError(path, f"must be one of {', '.join(MARKETS)}")
    return str(market)


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


def _per_target(value: Any, path: str, known: Sequence[str], *, low: float, high: float | None) -> dict[str, float]:
    raw = _object(value, path, frozenset(known))
    if not raw:
        raise PolicyError(path, "must name at least one target")
    return {name: _number(raw[name], f"{path}.{name}", low=low, high=high) for name in raw}


def _labels(value: Any, path: str) -> dict[str, tuple[str, ...]]:
    if not isinstance(value, dict) or not value:
        raise PolicyError(path, 'must be a non-empty object of label -> value, list of values, or "*"')
    out: dict[str, tuple[str, ...]] = {}
    for key in sorted(value):
        if not _LABEL_KEY.match(key):
            raise PolicyError(f"{path}.{key}", "is not a valid label name")
        out[key] = _one_or_many(value[key], f"{path}.{key}")
    return out


def _parse_match(value: Any, path: str) -> Match:
    raw = _object(value, path, _MATCH_KEYS)
    return Match(
        priority=_enum_values(raw["priority"], f"{path}.priority", Priority) if "priority" in raw else (),
        data_sensitivity=(
            _enum_values(raw["data_sensitivity"], f"{path}.data_sensitivity", DataSensitivity)
            if "data_sensitivity" in raw
            else ()
        ),
        kind=_enum_values(raw["kind"], f"{path}.kind", TaskKind) if "kind" in raw else (),
        tenant=_one_or_many(raw["tenant"], f"{path}.tenant") if "tenant" in raw else (),
        labels=_labels(raw["labels"], f"{path}.labels") if "labels" in raw else {},
        deadline_seconds=_range(raw["deadline_seconds"], f"{path}.deadline_seconds")
        if "deadline_seconds" in raw
        else None,
        input_bytes=_range(raw["input_bytes"], f"{path}.input_bytes") if "input_bytes" in raw else None,
    )


def _parse_when(value: Any, path: str, known: Sequence[str]) -> Conditions:
    raw = _object(value, path, _WHEN_KEYS)
    peak: tuple[str, ...] = ()
    if "peak" in raw:
        peak = (
            _target_refs([raw["peak"]], f"{path}.peak", known)
            if isinstance(raw["peak"], str)
            else _target_refs(raw["peak"], f"{path}.peak", known)
        )
    return Conditions(
        peak=peak,
        gpu_utilization_above=_per_target(
            raw["gpu_utilization_above"], f"{path}.gpu_utilization_above", known, low=0, high=1
        )
        if "gpu_utilization_above" in raw
        else {},
        free_gpus_below=_per_target(raw["free_gpus_below"], f"{path}.free_gpus_below", known, low=0, high=None)
        if "free_gpus_below" in raw
        else {},
        queue_depth_above=_number(raw["queue_depth_above"], f"{path}.queue_depth_above", low=0)
        if "queue_depth_above" in raw
        else None,
        spot_price_under_budget=_bool(raw["spot_price_under_budget"], f"{path}.spot_price_under_budget")
        if "spot_price_under_budget" in raw
        else False,
        budget_left_today_usd_above=_number(raw["budget_left_today_usd_above"], f"{path}.budget_left_today_usd_above")
        if "budget_left_today_usd_above" in raw
        else None,
    )


def _parse_rule(value: Any, path: str, index: int, known: Sequence[str]) -> Rule:
    raw = _object(value, path, _RULE_KEYS)
    name = _name(raw["name"], f"{path}.name") if "name" in raw else f"rules[{index}]"
    description = raw.get("description", "")
    if not isinstance(description, str):
        raise PolicyError(f"{path}.description", "must be a string")
    cloud_provider = raw.get("cloud_provider")
    if cloud_provider is not None and cloud_provider not in CLOUD_PROVIDERS:
        raise PolicyError(f"{path}.cloud_provider", f"must be one of {', '.join(CLOUD_PROVIDERS)}")
    use_cloud = _bool(raw["use_cloud"], f"{path}.use_cloud") if "use_cloud" in raw else None
    if cloud_provider is not None and use_cloud is False:
        raise PolicyError(f"{path}.cloud_provider", "contradicts use_cloud: false")
    instance_type = raw.get("instance_type")
    if instance_type is not None and (not isinstance(instance_type, str) or not instance_type):
        raise PolicyError(f"{path}.instance_type", "must be a non-empty string")
    hedge = raw.get("hedge", 1)
    if isinstance(hedge, bool) or not isinstance(hedge, int) or not 1 <= hedge <= MAX_HEDGE:
        raise PolicyError(f"{path}.hedge", f"must be a whole number from 1 to {MAX_HEDGE}")
    actions = Actions(
        targets=_target_refs(raw.get("targets", []), f"{path}.targets", known),
        exclude=_target_refs(raw.get("exclude", []), f"{path}.exclude", known),
        require=_target_refs(raw.get("require", []), f"{path}.require", known),
        use_cloud=use_cloud,
        cloud_provider=cloud_provider,
        instance_type=instance_type,
        max_price_usd_h=_positive_price(raw.get("max_price_usd_h"), f"{path}.max_price_usd_h"),
        hedge=hedge,
        deadline_aware=_bool(raw.get("deadline_aware", False), f"{path}.deadline_aware"),
        rank=parse_rank(raw.get("rank", "order"), f"{path}.rank"),
    )
    for index_, name_ in enumerate(actions.require):
        if name_ in actions.exclude:
            raise PolicyError(f"{path}.require[{index_}]", f"target {name_!r} is both required and excluded")
    return Rule(
        name=name,
        description=description,
        match=_parse_match(raw.get("match", {}), f"{path}.match"),
        when=_parse_when(raw.get("when", {}), f"{path}.when", known),
        actions=actions,
    )


def _tenant_budgets(value: Any, path: str) -> dict[str, float]:
    """One number for every tenant, or tenant -> USD (``"*"``: every tenant not listed)."""
    if not isinstance(value, dict):
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise PolicyError(path, f"must be a number or an object of tenant -> number, not {json_type_name(value)}")
        return {EVERY_TENANT: _number(value, path, low=0)}
    if not value:
        raise PolicyError(path, "must name at least one tenant (leave the field out for no tenant budgets)")
    out: dict[str, float] = {}
    for tenant in sorted(value):
        if tenant != EVERY_TENANT and not is_tenant_name(tenant):
            raise PolicyError(json_path(path, tenant), f'is not a tenant name ({TENANT_RULE}) or "*"')
        out[tenant] = _number(value[tenant], json_path(path, tenant), low=0)
    return out


def _first_heartbeat(value: Any, path: str) -> dict[str, float]:
    """One number for every provider, or provider -> seconds (a provider not named keeps its default)."""
    limits = dict(FIRST_HEARTBEAT_DEFAULTS)
    if not isinstance(value, dict):
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise PolicyError(path, f"must be a number or an object of provider -> number, not {json_type_name(value)}")
        seconds = _number(value, path, low=0)
        if seconds <= 0:
            raise PolicyError(path, "must be above 0")
        return dict.fromkeys(limits, seconds)
    if not value:
        raise PolicyError(path, "must name at least one provider (leave the field out for the defaults)")
    for provider in sorted(value):
        where = json_path(path, provider)
        if provider not in PROVIDERS:
            raise PolicyError(where, f"is not a provider ({', '.join(PROVIDERS)})")
        seconds = _number(value[provider], where, low=0)
        if seconds <= 0:
            raise PolicyError(where, "must be above 0")
        limits[provider] = seconds
    return limits


def _parse_thresholds(value: Any) -> Thresholds:
    raw = _object(value, "thresholds", _THRESHOLD_KEYS)
    defaults = Thresholds()

    def get(key: str, *, low: float = 0, high: float | None = None) -> float:
        return _number(raw[key], f"thresholds.{key}", low=low, high=high) if key in raw else getattr(defaults, key)

    budget = raw.get("daily_budget_usd")
    tenant_budgets = raw.get("tenant_daily_budget_usd")
    min_attempts = raw.get("breaker_min_attempts", defaults.breaker_min_attempts)
    if isinstance(min_attempts, bool) or not isinstance(min_attempts, int) or min_attempts < 1:
        raise PolicyError("thresholds.breaker_min_attempts", "must be a whole number >= 1")
    open_rate = get("breaker_open_failure_rate", high=1)
    if open_rate <= 0:
        raise PolicyError("thresholds.breaker_open_failure_rate", "must be above 0 (0 would open on no failure)")
    close_rate = get("breaker_close_failure_rate", high=1)
    if close_rate >= open_rate:
        # without the gap a rate hovering at the threshold would open and close the breaker in turn
        raise PolicyError(
            "thresholds.breaker_close_failure_rate",
            f"must be below breaker_open_failure_rate ({close_rate:g} >= {open_rate:g})",
        )
    window = get("breaker_window_seconds")
    cooldown = get("breaker_cooldown_seconds")
    for key, seconds in (("breaker_window_seconds", window), ("breaker_cooldown_seconds", cooldown)):
        if seconds <= 0:
            raise PolicyError(f"thresholds.{key}", "must be above 0")
    max_cooldown = get("breaker_max_cooldown_seconds")
    if max_cooldown < cooldown:
        raise PolicyError(
            "thresholds.breaker_max_cooldown_seconds",
            f"must be at least breaker_cooldown_seconds ({max_cooldown:g} < {cooldown:g})",
        )
    max_attempts = raw.get("max_attempts", defaults.max_attempts)
    if isinstance(max_attempts, bool) or not isinstance(max_attempts, int) or not 1 <= max_attempts <= 100:
        raise PolicyError("thresholds.max_attempts", "must be a whole number from 1 to 100")
    backoff, backoff_max = get("retry_backoff_seconds"), get("retry_backoff_max_seconds")
    if backoff_max < backoff:
        raise PolicyError(
            "thresholds.retry_backoff_max_seconds",
            f"must be at least retry_backoff_seconds ({backoff_max:g} < {backoff:g})",
        )
    timeouts = {
        key: get(key) for key in ("heartbeat_timeout_seconds", "unschedulable_timeout_seconds", "max_queue_seconds")
    }
    for key, seconds in timeouts.items():
        if seconds <= 0:
            raise PolicyError(f"thresholds.{key}", "must be above 0")
    return Thresholds(
        max_attempts=max_attempts,
        retry_backoff_seconds=backoff,
        retry_backoff_max_seconds=backoff_max,
        heartbeat_timeout_seconds=timeouts["heartbeat_timeout_seconds"],
        unschedulable_timeout_seconds=timeouts["unschedulable_timeout_seconds"],
        max_queue_seconds=timeouts["max_queue_seconds"],
        first_heartbeat_timeout_seconds=(
            _first_heartbeat(raw["first_heartbeat_timeout_seconds"], "thresholds.first_heartbeat_timeout_seconds")
            if "first_heartbeat_timeout_seconds" in raw
            else dict(FIRST_HEARTBEAT_DEFAULTS)
        ),
        peak_gpu_utilization=get("peak_gpu_utilization", high=1),
        peak_free_gpus_below=get("peak_free_gpus_below"),
        peak_queue_depth=get("peak_queue_depth"),
        price_ttl_seconds=get("price_ttl_seconds") if "price_ttl_seconds" in raw else None,
        load_ttl_seconds=get("load_ttl_seconds"),
        daily_budget_usd=None if budget is None else _number(budget, "thresholds.daily_budget_usd", low=0),
        tenant_daily_budget_usd=(
            {} if tenant_budgets is None else _tenant_budgets(tenant_budgets, "thresholds.tenant_daily_budget_usd")
        ),
        breaker_window_seconds=window,
        breaker_min_attempts=min_attempts,
        breaker_open_failure_rate=open_rate,
        breaker_close_failure_rate=close_rate,
        breaker_cooldown_seconds=cooldown,
        breaker_max_cooldown_seconds=max_cooldown,
    )


def parse_policy(document: Any, *, seed_clouds: SeedClouds = NO_SEED_CLOUDS) -> Policy:
    """Validate a decoded JSON document and build the :class:`Policy`.

    Raises :class:`PolicyError` naming the JSON path of the first bad field,
    e.g. ``targets[1].provider: must be one of local, kubernetes, aws, azure``.
    A document holding the seed's ``task_rules`` (alone, or next to
    ``thresholds``) is read as the seed table describes it, its built-in
    clouds configured by ``seed_clouds`` (those that cannot launch are marked
    ``not_configured``). Whether a full policy's cloud targets can launch is
    :func:`controlplane.policy.checks.require_launchable`'s question.
    """
    raw = _object(document, "", _TOP_KEYS)
    try:
        version = policy_version(raw)
    except ValueError as exc:  # NaN / Infinity somewhere in settings
        raise PolicyError("", f"is not representable as canonical JSON: {exc}") from exc
    from_seed = SEED_KEY in raw
    if from_seed:
        if "targets" in raw or "rules" in raw:
            raise PolicyError(SEED_KEY, "the seed form stands alone: write targets and rules, or task_rules")
        raw = seed_document(raw, seed_clouds)
    if "targets" not in raw:
        raise PolicyError("targets", "is required")
    if not isinstance(raw["targets"], list):
        raise PolicyError("targets", f"must be an array, not {json_type_name(raw['targets'])}")
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
        raise PolicyError("rules", f"must be an array, not {json_type_name(rules_raw)}")
    rules: list[Rule] = []
    for index, item in enumerate(rules_raw):
        rule = _parse_rule(item, f"rules[{index}]", index, known)
        if any(existing.name == rule.name for existing in rules):
            raise PolicyError(f"rules[{index}].name", f"duplicate rule name {rule.name!r}")
        rules.append(rule)
    thresholds = _parse_thresholds(raw.get("thresholds", {}))
    if from_seed:
        targets = [mark_unconfigured(target) for target in targets]
    deadlines = parse_deadlines(raw["deadlines"]) if "deadlines" in raw else None
    for index, rule in enumerate(rules):
        if rule.actions.deadline_aware and deadlines is None:
            raise PolicyError(f"rules[{index}].deadline_aware", "needs the policy's deadlines section")
    return Policy(
        version=version,
        targets=tuple(targets),
        rules=tuple(rules),
        thresholds=thresholds,
        estimates=parse_estimates(raw.get("estimates", {})),
        deadlines=deadlines,
        spot_risk=parse_spot_risk(raw.get("spot_risk", {})),
        from_seed=from_seed,
    )
