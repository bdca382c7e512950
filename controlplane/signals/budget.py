"""Cloud spend so far today (UTC): ``budget/spent_today_usd`` and ``budget/spent_today_usd/<tenant>``.

``spend(now)`` is injected (the store's ``cloud_spend_today`` with a price
cache, so this layer does not import the store); it returns None when no
policy in force sets a budget, and then nothing is queried or emitted.

Every poll writes the total, every tenant with a cloud attempt today, a 0
for a tenant written by the previous poll but not this one (a new UTC day),
and ``budget/unpriced_attempts_today``. So a tenant without a fresh sample
beside a fresh total has spent nothing today, which is how ``plan()`` reads
it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Protocol

from controlplane.domain import BUDGET_SOURCE, SignalSample
from controlplane.domain.reliability import SPENT_TODAY_KEY, tenant_spend_key
from controlplane.signals.base import PollResult, Wanted

__all__ = ["UNPRICED_KEY", "BudgetSource", "SpendLike"]

#: ``budget/unpriced_attempts_today``: cloud attempts today whose receipt gives no price (counted at 0 USD:
#: a target without ``max_price_usd_h`` planned on no fresh spot price). Not read by ``plan()``
UNPRICED_KEY = "unpriced_attempts_today"


class SpendLike(Protocol):
    """What the store's ``DailySpend`` holds."""

    @property
    def total_usd(self) -> float: ...

    @property
    def per_tenant(self) -> Mapping[str, float]: ...

    @property
    def unpriced_attempts(self) -> int: ...


class BudgetSource:
    name = "budget"

    def __init__(self, spend: Callable[[datetime], SpendLike | None], *, ttl_seconds: float = 60.0) -> None:
        self.spend, self.ttl_seconds = spend, ttl_seconds
        self._tenants: set[str] = set()

    def poll(self, wanted: Wanted, *, timeout_s: float, clock: Callable[[], datetime]) -> PollResult:
        now = clock()
        spent = self.spend(now)
        if spent is None:
            self._tenants = set()
            return PollResult()

        def sample(key: str, value: float) -> SignalSample:
            return SignalSample(
                source=BUDGET_SOURCE, key=key, value=round(value, 4), observed_at=now, ttl_seconds=self.ttl_seconds
            )

        samples = [sample(SPENT_TODAY_KEY, spent.total_usd)]
        tenants = dict(spent.per_tenant)
        for tenant in sorted(self._tenants | set(tenants)):
            samples.append(sample(tenant_spend_key(tenant), tenants.get(tenant, 0.0)))
        self._tenants = set(tenants)
        # shown by ``fusionctl signals``, not a poll error: it stays true all day and is a policy matter
        samples.append(sample(UNPRICED_KEY, float(spent.unpriced_attempts)))
        return PollResult(samples=samples)
