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
    "SPOT_HISTORY_FIELDS",
    "SPOT_HISTORY_SOURCE",
    "breaker_key",
    "spot_history_key",
    "tenant_spend_key",
]

#: ``breaker/<provider>/<region>/<instance type>``: the offer's spot circuit breaker
BREAKER_SOURCE = "breaker"
#: breaker sample values; the engine blocks an offer at >= BREAKER_OPEN and lets a probe through in between
BREAKER_CLOSED = 0.0
BREAKER_HALF_OPEN = 0.5
BREAKER_OPEN = 1.0

#: ``spot_history/<provider>/<region>/<instance type>/<field>``: how a spot offer fared over the history
#: window (launches, refusals, preemptions, run_hours); the learned spot risk of plan() reads them
SPOT_HISTORY_SOURCE = "spot_history"
SPOT_HISTORY_FIELDS: tuple[str, ...] = ("launches", "refusals", "preemptions", "run_hours")

#: ``budget/spent_today_usd``: every tenant's cloud spend so far today (UTC)
SPENT_TODAY_KEY = "spent_today_usd"


def breaker_key(provider: str, region: str | None, instance_type: str | None) -> str:
    """The breaker sample's key: the same ``provider/region/type`` spelling as the offer's spot price."""
    return spot_price_key(provider, region, instance_type)


def tenant_spend_key(tenant: str) -> str:
    """``spent_today_usd/<tenant>``: one tenant's cloud spend so far today (UTC)."""
    return f"{SPENT_TODAY_KEY}/{tenant}"


def spot_history_key(provider: str, region: str | None, instance_type: str | None, field: str) -> str:
    """One history sample's key: the offer's ``provider/region/type`` spelling, then the field."""
    return f"{spot_price_key(provider, region, instance_type)}/{field}"
