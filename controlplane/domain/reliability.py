"""Signal vocabulary of the reliability guards: spot circuit breakers and daily cloud budgets.

The breaker and budget pollers (``controlplane.signals``) write these
samples and ``plan()`` (``controlplane.policy``) reads them; those two
layers may not import each other, so the names live here, next to
:mod:`controlplane.domain.signals`.
"""

from __future__ import annotations

from controlplane.domain.signals import BUDGET_SOURCE, spot_price_key

__all__ = [
    "BREAKER_CLOSED",
    "BREAKER_HALF_OPEN",
    "BREAKER_OPEN",
    "BREAKER_SOURCE",
    "BUDGET_SOURCE",
    "SPENT_TODAY_KEY",
    "breaker_key",
    "tenant_spend_key",
]

#: ``breaker/<provider>/<region>/<instance type>``: the offer's spot circuit breaker
BREAKER_SOURCE = "breaker"
#: breaker sample values; the engine blocks an offer at >= BREAKER_OPEN and lets a probe through in between
BREAKER_CLOSED = 0.0
BREAKER_HALF_OPEN = 0.5
BREAKER_OPEN = 1.0

#: ``budget/spent_today_usd``: every tenant's cloud spend so far today (UTC)
SPENT_TODAY_KEY = "spent_today_usd"


def breaker_key(provider: str, region: str | None, instance_type: str | None) -> str:
    """The breaker sample's key: the same ``provider/region/type`` spelling as the offer's spot price."""
    return spot_price_key(provider, region, instance_type)


def tenant_spend_key(tenant: str) -> str:
    """``spent_today_usd/<tenant>``: one tenant's cloud spend so far today (UTC)."""
    return f"{SPENT_TODAY_KEY}/{tenant}"
