"""Azure Spot prices from the Azure Retail Prices API (``spot_price/azure/<region>/<VM size>``, USD per hour).

How the API is asked, which meter is kept and how failures and throttling
are handled is shared with the on-demand prices: :mod:`controlplane.signals.azure_retail`.
This source prices ``Wanted.azure_offers`` and keeps the Spot Linux meter
(``skuName`` has the word "Spot": "NC4as T4 v3 Spot").
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from controlplane.domain import SPOT_PRICE_SOURCE, SPOT_PRICE_TTL_SECONDS
from controlplane.signals.azure_retail import (
    API_VERSION,
    DEFAULT_BASE_URL,
    AzureRetailPriceSource,
    AzureRetailPricesUnavailable,
    PriceChoice,
    build_filter,
    select_price,
)
from controlplane.signals.base import Wanted

__all__ = [
    "API_VERSION",
    "DEFAULT_BASE_URL",
    "DEFAULT_TTL_SECONDS",
    "AzureSpotPriceSource",
    "AzureSpotPricesUnavailable",
    "SpotPriceChoice",
    "build_filter",
    "select_spot_price",
]

#: An hour: the one TTL of an Azure spot price (the domain's ``SPOT_PRICE_TTL_SECONDS``), which
#: plan(), ``explain`` and ``fusionctl signals`` all apply. Retail Spot prices move slowly (Azure
#: revises them, it does not auction them per minute), so an hour-old price is still a fair basis,
#: and the default poll (every 1800 s) refreshes it well before then. A policy's
#: ``price_ttl_seconds`` can only cut it shorter.
DEFAULT_TTL_SECONDS = SPOT_PRICE_TTL_SECONDS["azure"]

#: the name this module has always had
SpotPriceChoice = PriceChoice


class AzureSpotPricesUnavailable(AzureRetailPricesUnavailable):
    """No request of the poll got an answer (API down, every region failed, no time): the source is down."""


def select_spot_price(
    items: Sequence[Mapping[str, Any]], *, region: str, size: str, now: datetime
) -> PriceChoice | None:
    """The lowest Spot Linux pay-as-you-go hourly USD price of ``size`` in ``region`` among ``items``, if any."""
    return select_price(items, region=region, size=size, now=now, spot=True)


class AzureSpotPriceSource(AzureRetailPriceSource):
    """Spot Linux prices of every (region, VM size) in ``Wanted.azure_offers``, one poll at a time.

    ``client`` may be given (tests, a proxy, custom TLS); otherwise the source
    makes its own and closes it in :meth:`close`. ``sleep`` and ``monotonic``
    exist so that waits can be observed; by default they are the real ones.
    """

    name = "azure_spot"
    signal_source = SPOT_PRICE_SOURCE
    spot = True
    market_words = "Spot Linux"
    unavailable = AzureSpotPricesUnavailable

    def __init__(self, *, ttl_seconds: float = DEFAULT_TTL_SECONDS, **options: Any) -> None:
        super().__init__(ttl_seconds=ttl_seconds, **options)

    def offers_of(self, wanted: Wanted) -> Sequence[tuple[str, str]]:
        return wanted.azure_offers
