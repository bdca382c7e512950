"""Azure on-demand list prices from the Retail Prices API (``on_demand_price/azure/<region>/<VM size>``, USD/h).

The same API, request, paging, throttling and failure handling as the Spot
prices (:mod:`controlplane.signals.azure_retail`); this source prices
``Wanted.azure_on_demand_offers`` (the azure targets with ``market:
on-demand``) and keeps the regular Linux meter: ``skuName`` without "Spot"
or "Low Priority" ("NC4as T4 v3"), neither name saying "Windows", type
Consumption, "1 Hour", USD, in effect.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from controlplane.domain import ON_DEMAND_PRICE_SOURCE, ON_DEMAND_PRICE_TTL_SECONDS
from controlplane.signals.azure_retail import AzureRetailPriceSource, AzureRetailPricesUnavailable
from controlplane.signals.base import Wanted

__all__ = ["DEFAULT_TTL_SECONDS", "AzureOnDemandPriceSource", "AzureOnDemandPricesUnavailable"]

#: A day: list prices change a few times a year, announced; the default poll (every 6 h) refreshes
#: them long before, and a poller failing for a day must not keep a price alive.
DEFAULT_TTL_SECONDS = ON_DEMAND_PRICE_TTL_SECONDS["azure"]


class AzureOnDemandPricesUnavailable(AzureRetailPricesUnavailable):
    """No request of the poll got an answer: the on-demand source is down (its earlier prices age out)."""


class AzureOnDemandPriceSource(AzureRetailPriceSource):
    """On-demand (Regular) Linux prices of every (region, VM size) in ``Wanted.azure_on_demand_offers``."""

    name = "azure_on_demand"
    signal_source = ON_DEMAND_PRICE_SOURCE
    spot = False
    market_words = "on-demand Linux"
    unavailable = AzureOnDemandPricesUnavailable

    def __init__(self, *, ttl_seconds: float = DEFAULT_TTL_SECONDS, **options: Any) -> None:
        super().__init__(ttl_seconds=ttl_seconds, **options)

    def offers_of(self, wanted: Wanted) -> Sequence[tuple[str, str]]:
        return wanted.azure_on_demand_offers
