"""The reliability guards as Prometheus series, computed at scrape from the hub's latest samples.

``plan()`` reads the spot breakers and today's spend as signal samples;
an operator wants the same values as series to graph and alert on:

- ``fusionplane_breaker_state{provider,region,instance_type}``: 0 closed,
  0.5 half-open, 1 open;
- ``fusionplane_cloud_spend_today_usd`` and
  ``fusionplane_tenant_cloud_spend_today_usd{tenant}``: spend so far today
  (UTC) as the budget poller last counted it;
- ``fusionplane_daily_budget_usd`` and
  ``fusionplane_tenant_daily_budget_usd{tenant}``: the budgets in force, from
  the policy (injected: this layer may not import it), for every tenant
  named in a budget and every tenant that spent today.

Nothing is queried at scrape: the samples are in the hub's memory and the
budgets in the policy's. How old the samples are is
``fusionplane_signal_age_seconds{source="breaker"|"budget"}``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from controlplane.domain import BUDGET_SOURCE, SignalSample
from controlplane.domain.reliability import BREAKER_SOURCE, SPENT_TODAY_KEY

__all__ = ["Budgets", "GuardCollector"]

_TENANT_PREFIX = SPENT_TODAY_KEY + "/"


@dataclass(frozen=True, kw_only=True)
class Budgets:
    """The daily budgets in force: the overall one, and each tenant's (``tenant_budget``, ``"*"`` applied)."""

    daily_usd: float | None = None
    #: tenants named in the policy's budgets (``"*"`` left out: it names no one)
    named_tenants: Iterable[str] = ()
    tenant_usd: Callable[[str], float | None] = field(default=lambda tenant: None)


class GuardCollector:
    """A ``prometheus_client`` collector over ``samples()`` (the hub's) and ``budgets()`` (the policy's)."""

    def __init__(self, samples: Callable[[], Mapping[str, SignalSample]], budgets: Callable[[], Budgets]) -> None:
        self.samples, self.budgets = samples, budgets

    def collect(self) -> Iterable[Any]:
        from prometheus_client.core import GaugeMetricFamily

        samples = list(self.samples().values())
        breaker = GaugeMetricFamily(
            "fusionplane_breaker_state",
            "Spot circuit breaker per offer: 0 closed, 0.5 half-open (next launch is a probe), 1 open",
            labels=["provider", "region", "instance_type"],
        )
        for sample in samples:
            if sample.source == BREAKER_SOURCE:
                breaker.add_metric(_offer(sample.key), sample.value)
        yield breaker
        yield from _spend_and_budgets(samples, self.budgets())


def _offer(key: str) -> list[str]:
    # provider/region/instance_type; a region or type the offer did not name is "-", as in the key
    provider, _, rest = key.partition("/")
    region, _, instance_type = rest.partition("/")
    return [provider, region or "-", instance_type or "-"]


def _spend_and_budgets(samples: list[SignalSample], budgets: Budgets) -> Iterable[Any]:
    from prometheus_client.core import GaugeMetricFamily

    spend = {sample.key: sample.value for sample in samples if sample.source == BUDGET_SOURCE}
    total = GaugeMetricFamily(
        "fusionplane_cloud_spend_today_usd", "Cloud spend so far today (UTC), every tenant together"
    )
    per_tenant = GaugeMetricFamily(
        "fusionplane_tenant_cloud_spend_today_usd", "One tenant's cloud spend so far today (UTC)", labels=["tenant"]
    )
    if SPENT_TODAY_KEY in spend:
        total.add_metric([], spend[SPENT_TODAY_KEY])
    spenders = {key[len(_TENANT_PREFIX) :]: value for key, value in spend.items() if key.startswith(_TENANT_PREFIX)}
    for tenant, value in sorted(spenders.items()):
        per_tenant.add_metric([tenant], value)
    daily = GaugeMetricFamily("fusionplane_daily_budget_usd", "The overall daily cloud budget in force (UTC day)")
    if budgets.daily_usd is not None:
        daily.add_metric([], budgets.daily_usd)
    tenant_daily = GaugeMetricFamily(
        "fusionplane_tenant_daily_budget_usd", "A tenant's own daily cloud budget in force (UTC day)", labels=["tenant"]
    )
    for tenant in sorted(set(budgets.named_tenants) | set(spenders)):
        own = budgets.tenant_usd(tenant)
        if own is not None:
            tenant_daily.add_metric([tenant], own)
    yield from (total, per_tenant, daily, tenant_daily)
