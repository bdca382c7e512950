"""Which signal sources a control plane runs, on what schedule, and where their history goes.

Sources and their defaults (every number overridable with
``FUSIONPLANE_SIGNALS_<SOURCE>_<INTERVAL|TIMEOUT|JITTER>_S``):

| source | on when | interval | timeout | jitter | TTL |
|---|---|---|---|---|---|
| ``queue`` | always | 5 s | 2 s | 0 | 30 s |
| ``breaker`` | always; queries only while the policy has aws or azure targets | 15 s | 5 s | 2 s | 60 s |
| ``budget`` | always; queries only while a policy (base or overlay) sets a daily budget | 15 s | 5 s | 2 s | 60 s |
| ``spot_history`` | always; queries only while the policy has spot targets | 60 s | 5 s | 5 s | 120 s |
| ``prometheus`` | ``FUSIONPLANE_PROMETHEUS_URL`` is set | 15 s | 5 s | 2 s | 60 s |
| ``kubernetes`` | the policy has kubernetes targets | 15 s | 5 s | 2 s | 30 s |
| ``aws_spot`` | the policy has aws targets with regions and instance types | 300 s | 10 s | 30 s | 600 s |
| ``azure_spot`` | the policy has azure targets with regions and VM sizes | 1800 s | 20 s | 60 s | 3600 s |
| ``aws_on_demand`` | aws targets with ``market: on-demand``, regions and types | 21600 s | 20 s | 300 s | 86400 s |
| ``azure_on_demand`` | azure targets with ``market: on-demand``, regions and sizes | 21600 s | 20 s | 300 s | 86400 s |

The TTL is the one TTL of each source's values: plan(), ``fusionctl
explain`` and ``fusionctl signals`` all apply it (a policy's
``load_ttl_seconds`` / ``price_ttl_seconds`` can only cut it shorter). A
schedule that could let a working source's values go stale between two
polls (interval + jitter + timeout not below the TTL) is refused at
start-up, naming the variable (:func:`check_signal_schedules`).

``FUSIONPLANE_SIGNALS_OFF`` (comma-separated source names) turns pollers
off: their signals are then missing, which ``plan()`` reads as unknown,
never as a reason. That, not a schedule slower than the TTL, is how a
source is switched off.

A source whose policy part is empty polls nothing and costs nothing; they
are all built, so a policy change that adds a cloud target starts pricing
it on the next poll. ``breaker``, ``budget`` and ``spot_history`` read the
store (attempts and receipts): the spot circuit breakers, today's cloud
spend and each spot offer's record over the policy's
``spot_risk.history_hours``, which ``plan()`` reads as ``breaker/...``,
``budget/...`` and ``spot_history/...`` samples. History is
kept for ``FUSIONPLANE_SIGNAL_RETENTION_HOURS`` (default 48), pruned hourly.

Every variable is read by :class:`controlplane.config.SignalSettings`; the
functions here take one (None: this process's environment, as tests set it).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

from controlplane.config import SIGNAL_RETENTION_VARIABLE, SIGNALS_OFF_VARIABLE, SIGNALS_PREFIX, SignalSettings
from controlplane.domain import CLOUD_PROVIDERS, ON_DEMAND_PRICE_TTL_SECONDS, SPOT_PRICE_TTL_SECONDS, Target, TaskState
from controlplane.metrics import Metrics
from controlplane.policy import Policy
from controlplane.policy.breaker import BreakerParams, BreakerRules
from controlplane.policy_sources import PolicySet
from controlplane.runtime.pool_offers import POD_PROVIDER, merge_pool_offers, pool_clouds, summed
from controlplane.signals.base import SignalSource, Wanted, wanted_from_targets
from controlplane.signals.breaker import BreakerSource
from controlplane.signals.budget import BudgetSource
from controlplane.signals.guard_metrics import Budgets, GuardCollector
from controlplane.signals.hub import PollSchedule, SignalAgeCollector, SignalHub
from controlplane.signals.queue import QueueDepthSource
from controlplane.signals.spot_history import SpotHistorySource
from controlplane.store import DailySpend, OfferOutcomes, Store, cloud_spend_today, offer_outcomes, utcnow
from controlplane.store.offer_stats import OfferKey
from controlplane.store.spend import PriceCache
from controlplane.store.spot_history import OfferHistory, spot_history

__all__ = [
    "DEFAULT_SCHEDULES",
    "OFF_VARIABLE",
    "SOURCE_TTLS",
    "build_signal_hub",
    "check_signal_schedules",
    "schedule_for",
    "sources_off",
]

log = logging.getLogger("fusionplane.signals")

DEFAULT_SCHEDULES: Mapping[str, PollSchedule] = {
    "queue": PollSchedule(interval_s=5, timeout_s=2, jitter_s=0),
    "breaker": PollSchedule(interval_s=15, timeout_s=5, jitter_s=2),
    "budget": PollSchedule(interval_s=15, timeout_s=5, jitter_s=2),
    "spot_history": PollSchedule(interval_s=60, timeout_s=5, jitter_s=5),
    "prometheus": PollSchedule(interval_s=15, timeout_s=5, jitter_s=2),
    "kubernetes": PollSchedule(interval_s=15, timeout_s=5, jitter_s=2),
    "aws_spot": PollSchedule(interval_s=300, timeout_s=10, jitter_s=30),
    "azure_spot": PollSchedule(interval_s=1800, timeout_s=20, jitter_s=60),
    # list prices change a few times a year: every 6 h is plenty, and well inside the day's TTL
    "aws_on_demand": PollSchedule(interval_s=21600, timeout_s=20, jitter_s=300),
    "azure_on_demand": PollSchedule(interval_s=21600, timeout_s=20, jitter_s=300),
}
DEFAULT_RETENTION_HOURS = 48.0
#: each source's TTL as the sources are built here (their constructors' defaults), for the start-up check
SOURCE_TTLS: Mapping[str, float] = {
    "queue": 30.0,
    "breaker": 60.0,
    "budget": 60.0,
    "spot_history": 120.0,
    "prometheus": 60.0,
    "kubernetes": 30.0,
    "aws_spot": SPOT_PRICE_TTL_SECONDS["aws"],
    "azure_spot": SPOT_PRICE_TTL_SECONDS["azure"],
    "aws_on_demand": ON_DEMAND_PRICE_TTL_SECONDS["aws"],
    "azure_on_demand": ON_DEMAND_PRICE_TTL_SECONDS["azure"],
}


def _signals(settings: SignalSettings | None) -> SignalSettings:
    return SignalSettings.from_env() if settings is None else settings


def _number(name: str, raw: str | None, default: float) -> float:
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError as exc:
        raise ValueError(f"{name}: {raw!r} is not a number") from exc
    if value < 0 or value != value:
        raise ValueError(f"{name}: must be a number >= 0")
    return value


def schedule_for(name: str, *, ttl_s: float | None = None, settings: SignalSettings | None = None) -> PollSchedule:
    """The source's schedule from its defaults and ``FUSIONPLANE_SIGNALS_<NAME>_*``.

    With ``ttl_s`` (the TTL of the source's values) a schedule whose next
    value may arrive after the last one went stale is refused: a working
    poller must never leave the planner without a fresh value.
    """
    base = DEFAULT_SCHEDULES[name]
    prefix = f"{SIGNALS_PREFIX}{name.upper()}_"
    given = _signals(settings).schedules

    def number(variable: str, default: float) -> float:
        return _number(variable, given.get(variable), default)

    interval = number(prefix + "INTERVAL_S", base.interval_s)
    timeout = number(prefix + "TIMEOUT_S", base.timeout_s)
    if interval <= 0 or timeout <= 0:
        raise ValueError(f"{prefix}INTERVAL_S and {prefix}TIMEOUT_S must be above 0")
    jitter = number(prefix + "JITTER_S", base.jitter_s)
    if ttl_s is not None and interval + jitter + timeout >= ttl_s:
        raise ValueError(
            f"{prefix}INTERVAL_S: a poll every {interval:g} s (+ up to {jitter:g} s jitter, {prefix}JITTER_S, "
            f"+ up to {timeout:g} s to answer, {prefix}TIMEOUT_S) is not within the {ttl_s:g} s TTL of "
            f"{name}'s values: they would go stale between polls; poll more often"
        )
    return PollSchedule(
        interval_s=interval,
        timeout_s=timeout,
        jitter_s=jitter,
        max_backoff_s=max(base.max_backoff_s, interval),
    )


#: the setting that turns pollers off (comma-separated source names)
OFF_VARIABLE = SIGNALS_OFF_VARIABLE


def sources_off(settings: SignalSettings | None = None) -> frozenset[str]:
    """The sources ``FUSIONPLANE_SIGNALS_OFF`` turns off; an unknown name is refused naming the variable."""
    raw = _signals(settings).off
    names = frozenset(part.strip() for part in raw.split(",") if part.strip())
    unknown = sorted(names - set(DEFAULT_SCHEDULES))
    if unknown:
        raise ValueError(f"{OFF_VARIABLE}: unknown source {', '.join(unknown)} (known: {', '.join(DEFAULT_SCHEDULES)})")
    return names


def check_signal_schedules(settings: SignalSettings | None = None) -> None:
    """Refuse (ValueError naming the variable) any source's schedule that does not fit its values' TTL.

    ``fusionctl serve`` calls it with its other settings, before it starts anything. A source
    turned off is not checked.
    """
    settings = _signals(settings)
    off = sources_off(settings)
    for name, ttl in SOURCE_TTLS.items():
        if name not in off:
            schedule_for(name, ttl_s=ttl, settings=settings)


def build_sources(settings: SignalSettings | Mapping[str, str] | None = None) -> list[SignalSource]:
    """Every source this control plane runs (see the module's table); a mapping is read as an environment."""
    if not isinstance(settings, SignalSettings):
        settings = SignalSettings.from_env(settings)
    sources: list[SignalSource] = []
    url = settings.prometheus_url
    if url:
        from controlplane.signals.prometheus import PrometheusSource

        sources.append(PrometheusSource(url))
    from controlplane.signals.aws_on_demand import AwsOnDemandPriceSource
    from controlplane.signals.aws_spot import AwsSpotPriceSource
    from controlplane.signals.azure_on_demand import AzureOnDemandPriceSource
    from controlplane.signals.azure_spot import DEFAULT_BASE_URL, AzureSpotPriceSource
    from controlplane.signals.kubernetes_capacity import KubernetesCapacitySource

    sources.append(KubernetesCapacitySource())
    sources.append(AwsSpotPriceSource(endpoint_url=settings.aws_endpoint_url or None))
    sources.append(AzureSpotPriceSource(base_url=settings.azure_prices_url or DEFAULT_BASE_URL))
    # the Price List API has its own endpoint (us-east-1): FUSIONPLANE_AWS_ENDPOINT_URL is EC2's, so it is
    # not passed; boto3 reads AWS_ENDPOINT_URL_PRICING / AWS_ENDPOINT_URL itself
    sources.append(AwsOnDemandPriceSource())
    sources.append(AzureOnDemandPriceSource(base_url=settings.azure_prices_url or DEFAULT_BASE_URL))
    return sources


def build_signal_hub(
    *,
    store: Store,
    policy: Callable[[], Policy | PolicySet],
    metrics: Metrics | None = None,
    sources: list[SignalSource] | None = None,
    settings: SignalSettings | None = None,
) -> SignalHub:
    """The hub with the store's sources (queue, breaker, budget), the configured ones, history and the age gauge."""
    settings = _signals(settings)
    queue = QueueDepthSource(lambda: store.count_tasks_in(TaskState.QUEUED))
    chosen = [queue, *store_sources(store, policy), *(build_sources(settings) if sources is None else sources)]
    off = sources_off(settings)
    chosen = [source for source in chosen if source.name not in off]

    def wanted() -> Wanted:
        return wanted_from_targets(policy().targets)

    hub = SignalHub(
        # schedules against TTLs are checked once, at serve's start-up (check_signal_schedules)
        [(source, schedule_for(source.name, settings=settings)) for source in chosen],
        wanted=wanted,
        on_samples=store.record_signal_samples,
        metrics=metrics,
    )
    if metrics is not None:
        metrics.registry.register(SignalAgeCollector(hub))
        metrics.registry.register(GuardCollector(hub.samples, lambda: budgets_in_force(policy())))
    return hub


def budgets_in_force(policy: Policy | PolicySet) -> Budgets:
    """The daily budgets for ``fusionplane_*_budget_usd``: the base's overall one, each tenant's from its policy."""
    base = _base(policy)
    tenants = policy.tenants if isinstance(policy, PolicySet) else {}
    named = set(base.thresholds.tenant_daily_budget_usd)
    for own in tenants.values():
        named |= set(own.thresholds.tenant_daily_budget_usd)
    named.discard("*")

    def tenant_usd(tenant: str) -> float | None:
        return tenants.get(tenant, base).thresholds.tenant_budget(tenant)

    return Budgets(daily_usd=base.thresholds.daily_budget_usd, named_tenants=sorted(named), tenant_usd=tenant_usd)


def _base(policy: Policy | PolicySet) -> Policy:
    return policy.base if isinstance(policy, PolicySet) else policy


def store_sources(store: Store, policy: Callable[[], Policy | PolicySet]) -> list[SignalSource]:
    """The spot circuit breakers and today's cloud spend, both read from the store.

    The breakers follow the base policy's thresholds (they are one set for
    every tenant); spend is computed while any policy in force, base or a
    tenant's overlay, sets a budget.
    """

    def params() -> BreakerParams:
        return BreakerParams.from_thresholds(_base(policy()).thresholds)

    def pool_targets() -> list[Target]:
        """Every kubernetes target on a cloud node pool, in the base policy or a tenant's overlay."""
        current = policy()
        overlays = current.tenants.values() if isinstance(current, PolicySet) else ()
        return [t for p in (_base(current), *overlays) for t in p.targets if t.cloud is not None]

    def pools() -> dict[tuple[str, str], str]:
        return pool_clouds(pool_targets())

    def outcomes(now: datetime) -> dict[OfferKey, OfferOutcomes]:
        since = now - timedelta(seconds=params().window_seconds)
        clouds = pools()
        if not clouds:
            return offer_outcomes(store.engine, since=since)
        # a pod reclaimed on a spot node pool is evidence against its cloud's offer, like a VM's
        found = offer_outcomes(store.engine, since=since, providers=(*CLOUD_PROVIDERS, POD_PROVIDER))
        return merge_pool_offers(found, clouds, summed)

    prices: PriceCache = {}  # attempt id -> $/h, kept across polls: receipts are read once per attempt

    def spend(now: datetime) -> DailySpend | None:
        current = policy()
        overlays = current.tenants.values() if isinstance(current, PolicySet) else ()
        if not any(p.thresholds.has_budget for p in (_base(current), *overlays)):
            prices.clear()
            return None
        # pods on cloud node pools cost what their receipts priced them at, like VMs; the private cluster's do not
        return cloud_spend_today(store.engine, now=now, prices=prices, targets=sorted({t.name for t in pool_targets()}))

    def history(now: datetime, targets: Sequence[str]) -> dict[OfferKey, OfferHistory]:
        hours = _base(policy()).spot_risk.history_hours
        found = spot_history(store.engine, since=now - timedelta(hours=hours), now=now, targets=targets)
        clouds = pools()
        return merge_pool_offers(found, clouds, summed) if clouds else found

    return [BreakerSource(outcomes, BreakerRules(params)), BudgetSource(spend), SpotHistorySource(history)]


def prune_history(store: Store, settings: SignalSettings | None = None) -> int:
    """Delete signal history older than ``FUSIONPLANE_SIGNAL_RETENTION_HOURS``; how many samples went."""
    hours = _number(SIGNAL_RETENTION_VARIABLE, _signals(settings).retention_hours, DEFAULT_RETENTION_HOURS)
    deleted = store.prune_signal_samples(older_than=utcnow() - timedelta(hours=hours))
    if deleted:
        log.info("", extra={"event": "signals.history_pruned", "deleted": deleted, "retention_hours": hours})
    return deleted


def pollers_json(hub: SignalHub) -> list[dict[str, Any]]:
    return [status.to_json() for status in hub.status()]
