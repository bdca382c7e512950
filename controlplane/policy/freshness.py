"""One TTL per signal: how long a sample stays fresh under a policy, the same for plan(), explain and signals.

A sample carries the TTL its source gave it (a spot price: its provider's,
:data:`~controlplane.domain.SPOT_PRICE_TTL_SECONDS`; a load sample: its
poller's). The policy may only cut that shorter: ``load_ttl_seconds`` for
loads, queue depth, spend and breakers, and ``price_ttl_seconds`` (unset by
default) for spot prices. A price with no TTL of its own (a hand-written
dry-run snapshot) gets its provider's. ``plan()`` records the TTL it applied
in the receipt (what ``fusionctl explain`` shows), and ``GET /v1/signals``
(``fusionctl signals``) applies the same function with the base policy, so
the three never disagree about whether a value is fresh.
"""

from __future__ import annotations

from controlplane.domain import (
    ON_DEMAND_PRICE_SOURCE,
    SPOT_PRICE_SOURCE,
    SignalSample,
    on_demand_price_ttl,
    spot_price_ttl,
)
from controlplane.policy.model import Thresholds

__all__ = ["applied_ttl", "policy_ttl", "price_ttl"]


def price_ttl(thresholds: Thresholds, provider: str) -> float:
    """The policy's TTL for ``provider``'s spot prices: the provider's, or the policy's cap when lower."""
    own = spot_price_ttl(provider)
    cap = thresholds.price_ttl_seconds
    return own if cap is None or cap >= own else cap


def policy_ttl(thresholds: Thresholds, source: str, key: str) -> float:
    """The policy's TTL for the sample ``source/key`` (a spot price's key starts with its provider)."""
    if source == SPOT_PRICE_SOURCE:
        return price_ttl(thresholds, key.partition("/")[0])
    if source == ON_DEMAND_PRICE_SOURCE:
        # list prices are not what price_ttl_seconds is about (spot moves by the hour): their own TTL
        return on_demand_price_ttl(key.partition("/")[0])
    return thresholds.load_ttl_seconds


def applied_ttl(sample: SignalSample, thresholds: Thresholds) -> float:
    """The TTL that decides whether ``sample`` is fresh: the lower of its own and the policy's."""
    limit = policy_ttl(thresholds, sample.source, sample.key)
    return limit if limit < sample.ttl_seconds else sample.ttl_seconds
