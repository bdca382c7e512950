"""EC2 on-demand list prices from the AWS Price List Query API (``on_demand_price/aws/<region>/<type>``, USD/h).

One poll asks, for each (region, instance type) of ``Wanted.aws_on_demand_offers``
(the aws targets with ``market: on-demand``)::

    pricing.GetProducts(ServiceCode="AmazonEC2", Filters=[TERM_MATCH instanceType, regionCode,
                        operatingSystem=Linux, tenancy=Shared, preInstalledSw=NA,
                        capacitystatus=Used, licenseModel="No License required"])

and follows ``NextToken`` (at most ``max_pages`` pages: a token that never
ends is a problem, not a loop). The Price List endpoint lives in us-east-1
whatever region is priced, so every request goes to one client there.

*Which price.* Each ``PriceList`` entry is a JSON string (a product and its
terms). The price is ``terms.OnDemand.*.priceDimensions.*.pricePerUnit.USD``
of a dimension whose ``unit`` is ``Hrs``, of a product whose attributes
match every filter again (a server that ignores a filter must not hand us a
Windows or dedicated-host price). Entries that are not JSON, or have no
positive finite hourly USD price, are skipped and counted in ``notes``. When
several prices remain the **highest** is taken (a note says so): a list price
should be one number, and a plan must never understate a cost.

*Failures, time and credentials* are as for the spot prices
(:mod:`controlplane.signals.aws_common`): per region a problem line
(throttling after one retry, refused credentials, a dead or slow endpoint,
an unreadable answer), the other regions still priced; regions read in
parallel and the poll returns by ``timeout_s``; :class:`AwsOnDemandPricesUnavailable`
when no region could be read. boto3's standard credential chain; the caller
needs ``pricing:GetProducts``.

*observed_at* is the poll's clock; the TTL is a day (``ON_DEMAND_PRICE_TTL_SECONDS``):
list prices change a few times a year.
"""

from __future__ import annotations

import functools
import json
import logging
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

import boto3

from controlplane.domain import ON_DEMAND_PRICE_SOURCE, ON_DEMAND_PRICE_TTL_SECONDS, SignalSample, spot_price_key
from controlplane.signals.aws_common import (
    BotoClients,
    RegionFailed,
    by_region,
    positive_price,
    problem_text,
    read_regions,
)
from controlplane.signals.base import PollResult, SourceUnavailable, Wanted

__all__ = [
    "DEFAULT_MAX_PAGES",
    "DEFAULT_TTL_SECONDS",
    "LINUX_FILTERS",
    "PRICING_REGION",
    "AwsOnDemandPriceSource",
    "AwsOnDemandPricesUnavailable",
    "hourly_usd_prices",
]

log = logging.getLogger("fusionplane.signals")

#: A day: EC2 list prices change a few times a year; the default poll (every 6 h) refreshes them
DEFAULT_TTL_SECONDS = ON_DEMAND_PRICE_TTL_SECONDS["aws"]
#: the region of the Price List Query API's endpoint (api.pricing.us-east-1.amazonaws.com)
PRICING_REGION = "us-east-1"
#: one (region, type) with the filters below is a handful of products; five pages is beyond any honest answer
DEFAULT_MAX_PAGES = 5
#: GetProducts' largest page
PAGE_SIZE = 100
DEFAULT_MAX_WORKERS = 8
#: the product attributes every price must have (besides its instance type and region): Linux,
#: shared tenancy, no SQL or other software, an instance actually in use, no licence in the price
LINUX_FILTERS: Mapping[str, str] = {
    "operatingSystem": "Linux",
    "tenancy": "Shared",
    "preInstalledSw": "NA",
    "capacitystatus": "Used",
    "licenseModel": "No License required",
}


class AwsOnDemandPricesUnavailable(SourceUnavailable):
    """No region could be read (endpoint down, credentials refused, throttled everywhere): the source is down."""

    def __init__(self, problems: Sequence[str]) -> None:
        super().__init__("AWS Price List API", problems)


def _filters(region: str, instance_type: str) -> dict[str, str]:
    return {"instanceType": instance_type, "regionCode": region, **LINUX_FILTERS}


def _hourly_usd(terms: Any) -> list[float]:
    prices: list[float] = []
    on_demand = terms.get("OnDemand") if isinstance(terms, dict) else None
    for term in on_demand.values() if isinstance(on_demand, dict) else ():
        dimensions = term.get("priceDimensions") if isinstance(term, dict) else None
        for dimension in dimensions.values() if isinstance(dimensions, dict) else ():
            if not isinstance(dimension, dict) or dimension.get("unit") != "Hrs":
                continue
            per_unit = dimension.get("pricePerUnit")
            price = positive_price(per_unit.get("USD")) if isinstance(per_unit, dict) else None
            if price is not None:
                prices.append(price)
    return prices


def hourly_usd_prices(price_list: Iterable[Any], *, region: str, instance_type: str) -> tuple[list[float], int]:
    """The hourly USD on-demand prices in GetProducts' ``PriceList`` entries, and how many entries were unusable.

    An entry counts only when it is a JSON object whose product attributes
    match every filter of the request, and it gives one price per hourly USD
    price dimension with a positive finite value.
    """
    wanted = _filters(region, instance_type)
    prices: list[float] = []
    skipped = 0
    for entry in price_list:
        try:
            item = json.loads(entry) if isinstance(entry, str | bytes) else None
        except ValueError:
            item = None
        product = item.get("product") if isinstance(item, dict) else None
        attributes = product.get("attributes") if isinstance(product, dict) else None
        if not isinstance(attributes, dict):
            skipped += 1
            continue
        if any(attributes.get(field) != value for field, value in wanted.items()):
            continue  # another product (a server that ignores a filter): not ours, not an error
        found = _hourly_usd(item.get("terms") if isinstance(item, dict) else None)
        if not found:
            skipped += 1
        prices.extend(found)
    return prices, skipped


class AwsOnDemandPriceSource(BotoClients):
    """EC2 on-demand Linux list prices of ``Wanted.aws_on_demand_offers``, one sample per (region, type).

    ``endpoint_url``: the Price List endpoint (tests, private endpoints);
    None leaves it to boto3 (``AWS_ENDPOINT_URL_PRICING``, ``AWS_ENDPOINT_URL``,
    else AWS). ``session``: the boto3 session whose credential chain is used.
    """

    name = "aws_on_demand"

    def __init__(
        self,
        *,
        ttl_seconds: float = DEFAULT_TTL_SECONDS,
        endpoint_url: str | None = None,
        session: boto3.session.Session | None = None,
        max_pages: int = DEFAULT_MAX_PAGES,
        max_workers: int = DEFAULT_MAX_WORKERS,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        if not ttl_seconds > 0:
            raise ValueError("ttl_seconds must be positive")
        if max_pages < 1 or max_workers < 1:
            raise ValueError("max_pages and max_workers must be at least 1")
        self.ttl_seconds = ttl_seconds
        self.endpoint_url = endpoint_url
        self.max_pages = max_pages
        self.max_workers = max_workers
        super().__init__(session, user_agent="fusionplane-aws-on-demand")
        self._monotonic = monotonic
        self._notes: tuple[str, ...] = ()

    def client_for(self, *, timeout_s: float) -> Any:
        """The cached Price List client (us-east-1) for polls of ``timeout_s``."""
        return self.cached_client("pricing", PRICING_REGION, self.endpoint_url, timeout_s=timeout_s)

    @property
    def notes(self) -> tuple[str, ...]:
        """The last poll's remarks that are not failures (unusable entries, several prices for one type)."""
        return self._notes

    def poll(self, wanted: Wanted, *, timeout_s: float, clock: Callable[[], datetime]) -> PollResult:
        """One list price per wanted (region, type), within ``timeout_s``; raises only if no region could be read."""
        with self._lock:
            return self._poll(wanted, timeout_s=timeout_s, clock=clock)

    def _poll(self, wanted: Wanted, *, timeout_s: float, clock: Callable[[], datetime]) -> PollResult:
        if not wanted.aws_on_demand_offers:
            self._notes = ()
            return PollResult()
        if not timeout_s > 0:
            raise ValueError("timeout_s must be positive")
        deadline = self._monotonic() + timeout_s
        now = clock()
        regions = by_region(wanted.aws_on_demand_offers)
        client = self.client_for(timeout_s=timeout_s)
        futures = read_regions(
            {
                region: functools.partial(self._read_region, client, region, types, deadline=deadline)
                for region, types in regions.items()
            },
            remaining_s=deadline - self._monotonic(),
            max_workers=self.max_workers,
            thread_prefix="aws-on-demand",
        )
        samples: list[SignalSample] = []
        problems: list[str] = []
        notes: list[str] = []
        answered = 0
        for region, types in regions.items():
            future = futures[region]
            listed = ", ".join(types)
            if not future.done():
                problems.append(f"aws/{region}: no answer within the poll's {timeout_s:g}s ({listed})")
                continue
            try:
                found = future.result()
            except RegionFailed as exc:
                problems.append(f"aws/{region}: {exc} ({listed})")
                continue
            except Exception as exc:  # botocore and anything below it: this region only
                text = problem_text(exc, timeout_s=timeout_s, service="the Price List API", answer="JSON")
                problems.append(f"aws/{region}: {text} ({listed})")
                continue
            answered += 1
            for instance_type in types:
                key = spot_price_key("aws", region, instance_type)
                prices, skipped = found[instance_type]
                if skipped:
                    notes.append(f"{key}: skipped {skipped} price list entries without a usable hourly USD price")
                if not prices:
                    problems.append(f"{key}: no on-demand Linux hourly USD price listed (not offered in {region}?)")
                    continue
                if len(set(prices)) > 1:
                    notes.append(f"{key}: {len(prices)} on-demand prices listed, took the highest")
                samples.append(
                    SignalSample(
                        source=ON_DEMAND_PRICE_SOURCE,
                        key=key,
                        value=max(prices),
                        observed_at=now,
                        ttl_seconds=self.ttl_seconds,
                    )
                )
        if answered == 0:
            raise AwsOnDemandPricesUnavailable(problems)
        if notes and tuple(notes) != self._notes:  # log a change, not the same remark every poll
            log.info("", extra={"event": "signals.aws_on_demand.notes", "source": self.name, "notes": notes})
        self._notes = tuple(notes)
        return PollResult(samples=samples, problems=problems)

    def _read_region(
        self, client: Any, region: str, types: Sequence[str], *, deadline: float
    ) -> dict[str, tuple[list[float], int]]:
        """Every type's prices in one region (one GetProducts query each, every page of it)."""
        return {kind: self._read_type(client, region, kind, deadline=deadline) for kind in types}

    def _read_type(self, client: Any, region: str, instance_type: str, *, deadline: float) -> tuple[list[float], int]:
        filters = [{"Type": "TERM_MATCH", "Field": k, "Value": v} for k, v in _filters(region, instance_type).items()]
        entries: list[Any] = []
        token: str | None = None
        for count in range(1, self.max_pages + 1):  # bounded: max_pages, then a problem
            if self._monotonic() >= deadline:
                raise RegionFailed(f"ran out of time after {count - 1} pages")
            request: dict[str, Any] = {
                "ServiceCode": "AmazonEC2",
                "Filters": filters,
                "FormatVersion": "aws_v1",
                "MaxResults": PAGE_SIZE,
            }
            if token:
                request["NextToken"] = token
            page = client.get_products(**request)
            entries.extend(page.get("PriceList") or ())
            token = page.get("NextToken")
            if not token:
                return hourly_usd_prices(entries, region=region, instance_type=instance_type)
        raise RegionFailed(f"{instance_type}: more than {self.max_pages} pages (NextToken still set)")
