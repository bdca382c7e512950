"""EC2 Spot prices from ``DescribeSpotPriceHistory`` (``spot_price/aws/<region>/<instance type>``, USD per hour).

One poll asks each region of ``Wanted.aws_offers`` once, through boto3's
paginator, for the wanted instance types of that region::

    DescribeSpotPriceHistory(InstanceTypes=[...], ProductDescriptions=["Linux/UNIX"],
                             StartTime=<now>, MaxResults=1000)

and follows ``NextToken`` to the last page (at most ``max_pages``).

*Why StartTime = now.* Given a start time, EC2 returns every price change
since then **and the last change before it**, i.e. the price in effect now
for every (instance type, availability zone). Without it the answer is up to
90 days of history; with an older start it is more pages for nothing.

*Newest per zone.* Several entries can come back for one (type, AZ): a
change that happened between ``StartTime`` and the moment EC2 answered, or a
server that ignores ``StartTime`` and sends history (moto does; so could a
proxy). For each (type, AZ) the entry with the newest ``Timestamp`` is the
price in effect; older entries are history, whatever their price.

*Region value = the cheapest zone.* The planner prices a (region, type)
offer, and the provider tries the region's zones in order until one has
capacity; the cheapest current zone is the price a launch in that region can
get. It is a lower bound, not an average: a launch that lands in a dearer
zone pays that zone's price, which is why the per-zone detail is kept
(:attr:`AwsSpotPriceSource.offers`).

*No per-zone samples.* Per-zone prices are **not** published as samples.
Their natural key, ``spot_price/aws/<az>/<type>``, would put a zone name
where the snapshot JSON (``docs/policies.md``) and the planner expect a
region, so a replayed snapshot would list "regions" like ``us-east-1b``, and
nothing reads them today. They stay on :attr:`AwsSpotPriceSource.offers` for
``fusionctl signals`` and logs; publishing them is a one-line change once a
reader exists.

*observed_at = clock() at the poll.* A history entry's ``Timestamp`` is when
that price was *set*, which can be days ago for a price that is still in
effect (moto even answers 2006-01-02). The sample says "this was the current
price when we asked", so it is stamped with the poll's time and ages from
there.

*Linux only.* ``ProductDescriptions=["Linux/UNIX"]`` asks EC2 for Linux
prices; the answer is checked again, because the workers run Linux and a
Windows or SUSE price (different, often lower or higher) must never be read
as ours: only ``Linux/UNIX`` and ``Linux/UNIX (Amazon VPC)`` count (the
latter is the pre-2023 EC2-Classic/VPC spelling, and what moto answers).

*Failures are per region.* Throttling, refused credentials, a dead or slow
endpoint, an unreadable answer: that region becomes one ``problem`` line and
the other regions still produce samples. When no region could be read,
:meth:`AwsSpotPriceSource.poll` raises :class:`AwsSpotPricesUnavailable` so
the hub counts the source as down and backs off. Regions are read in
parallel (one thread each, up to ``max_workers``) so that one hung region
cannot use up the whole poll's time; the poll returns by ``timeout_s``
whatever the threads are doing.

*Credentials and region* come from boto3's standard chain (environment,
shared config/credentials files, SSO, instance or task role). This module
reads no environment variable itself; ``endpoint_url`` is for tests and
private endpoints.

*Spot placement scores* (``GetSpotPlacementScores``) are not read: moto
5.2.5 does not implement the call (its server answers HTTP 500 "not
implemented"), so it could not be tested here, and the scores need an extra
IAM permission and a separate, stricter rate limit.

*On-demand prices* for planning are another source's (``aws_on_demand``, the
Price List API). :data:`ON_DEMAND_USD_H` is a small, dated table of list
prices for savings reports, and :func:`on_demand_price` reads it.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import boto3

from controlplane.domain import SPOT_PRICE_SOURCE, SPOT_PRICE_TTL_SECONDS, SignalSample, spot_price_key
from controlplane.signals.aws_common import (
    BotoClients,
    RegionFailed,
    by_region,
    client_config,
    positive_price,
    problem_text,
    read_regions,
)
from controlplane.signals.base import PollResult, SourceUnavailable, Wanted

__all__ = [
    "DEFAULT_MAX_PAGES",
    "DEFAULT_PAGE_SIZE",
    "DEFAULT_TTL_SECONDS",
    "LINUX_PRODUCT",
    "ON_DEMAND_AS_OF",
    "ON_DEMAND_SOURCE",
    "ON_DEMAND_USD_H",
    "AwsSpotPriceSource",
    "AwsSpotPricesUnavailable",
    "OfferPrice",
    "ZonePrice",
    "client_config",
    "current_zone_prices",
    "is_linux",
    "on_demand_price",
]

log = logging.getLogger("fusionplane.signals")

#: Ten minutes: the one TTL of an EC2 spot price (the domain's ``SPOT_PRICE_TTL_SECONDS``), which
#: plan(), ``explain`` and ``fusionctl signals`` all apply. EC2 Spot prices move in small steps a few
#: times a day, so a price a few polls old is still a fair basis; a poller failing for longer than
#: this must not keep a price alive. A policy's ``price_ttl_seconds`` can only cut it shorter.
DEFAULT_TTL_SECONDS = SPOT_PRICE_TTL_SECONDS["aws"]
#: DescribeSpotPriceHistory's largest page (MaxResults 1..1000)
DEFAULT_PAGE_SIZE = 1000
#: with StartTime = now an answer is about (types x zones) entries, well under one page; twenty
#: pages is far beyond an honest answer and stops a NextToken that never ends
DEFAULT_MAX_PAGES = 20
#: regions read at once; the policies name a handful
DEFAULT_MAX_WORKERS = 8
#: what ``ProductDescriptions`` asks for
LINUX_PRODUCT = "Linux/UNIX"


class AwsSpotPricesUnavailable(SourceUnavailable):
    """No region could be read (endpoint down, credentials refused, throttled everywhere): the source is down."""

    def __init__(self, problems: Sequence[str]) -> None:
        super().__init__("EC2 spot price history", problems)


@dataclass(frozen=True, kw_only=True)
class ZonePrice:
    """The Linux/UNIX spot price in effect in one availability zone."""

    availability_zone: str
    instance_type: str
    usd_per_hour: float
    #: when EC2 set this price (not when it was read: a current price can be days old)
    changed_at: datetime


@dataclass(frozen=True, kw_only=True)
class OfferPrice:
    """One (region, instance type): the cheapest zone's price, and every zone's."""

    region: str
    instance_type: str
    #: the sample's value: the cheapest current zone
    usd_per_hour: float
    cheapest_zone: str
    #: availability zone -> its current price, sorted by zone name
    zones: Mapping[str, ZonePrice]


# ---- pure parts ---------------------------------------------------------------------------------


def is_linux(product_description: str) -> bool:
    """``Linux/UNIX`` or ``Linux/UNIX (Amazon VPC)``; never Windows, SUSE or Red Hat (priced differently)."""
    return product_description.removesuffix(" (Amazon VPC)") == LINUX_PRODUCT


def _utc(moment: Any) -> datetime | None:
    if not isinstance(moment, datetime):
        return None
    # botocore parses EC2's "...Z" into an aware datetime (tzutc, or tzlocal for some answers)
    return moment.astimezone(UTC) if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def current_zone_prices(history: Iterable[Mapping[str, Any]]) -> tuple[dict[tuple[str, str], ZonePrice], int]:
    """The price in effect per (instance type, AZ) from ``SpotPriceHistory`` entries, and how many were unusable.

    Only Linux/UNIX entries count. Per (type, AZ) the newest ``Timestamp``
    wins, whatever the order of the answer; two entries with the same
    timestamp (the classic and VPC spellings of one change) resolve to the
    higher price, so that the planner never sees a cost lower than what a
    launch may be billed. Entries without a positive price, a timestamp, a
    type or a zone are skipped and counted.
    """
    current: dict[tuple[str, str], ZonePrice] = {}
    skipped = 0
    for entry in history:
        if not is_linux(str(entry.get("ProductDescription", ""))):
            continue
        instance_type, zone = entry.get("InstanceType"), entry.get("AvailabilityZone")
        price, changed_at = positive_price(entry.get("SpotPrice")), _utc(entry.get("Timestamp"))
        if not isinstance(instance_type, str) or not isinstance(zone, str) or price is None or changed_at is None:
            skipped += 1
            continue
        candidate = ZonePrice(
            availability_zone=zone, instance_type=instance_type, usd_per_hour=price, changed_at=changed_at
        )
        known = current.get((instance_type, zone))
        if known is None or (candidate.changed_at, candidate.usd_per_hour) > (known.changed_at, known.usd_per_hour):
            current[(instance_type, zone)] = candidate
    return current, skipped


def _offer(region: str, instance_type: str, zones: Iterable[ZonePrice]) -> OfferPrice | None:
    by_zone = {zone.availability_zone: zone for zone in sorted(zones, key=lambda z: z.availability_zone)}
    if not by_zone:
        return None
    # ties between zones go to the first by name, so the same answer always names the same zone
    cheapest = min(by_zone.values(), key=lambda z: (z.usd_per_hour, z.availability_zone))
    return OfferPrice(
        region=region,
        instance_type=instance_type,
        usd_per_hour=cheapest.usd_per_hour,
        cheapest_zone=cheapest.availability_zone,
        zones=by_zone,
    )


# ---- the on-demand reference table ------------------------------------------------------------

#: Where :data:`ON_DEMAND_USD_H` comes from. These are AWS's published On-Demand list prices
#: (https://aws.amazon.com/ec2/pricing/on-demand/), Linux, shared tenancy, USD per hour, as
#: known to the author of this module; they were NOT fetched from AWS while writing it (no
#: network), and only g5.xlarge was cross-checked, against a third-party summary dated
#: 2026-06-17 that quotes $1.006/h for us-east-1. AWS has kept these families' list prices
#: unchanged since launch, but it can change them: verify with the Price List API
#: (``pricing:GetProducts``) or the page above before quoting a saving to anyone.
ON_DEMAND_SOURCE = "AWS EC2 On-Demand list prices, Linux, shared tenancy (aws.amazon.com/ec2/pricing/on-demand/)"
#: when the table was last checked (see :data:`ON_DEMAND_SOURCE` for how)
ON_DEMAND_AS_OF = "2026-11-24"
#: region -> instance type -> USD per hour. Only regions and types whose price is known are
#: listed; everything else is ``None`` from :func:`on_demand_price`, never a guess.
ON_DEMAND_USD_H: Mapping[str, Mapping[str, float]] = {
    "us-east-1": {
        "g4dn.xlarge": 0.526,
        "g4dn.2xlarge": 0.752,
        "g4dn.4xlarge": 1.204,
        "g5.xlarge": 1.006,
        "g5.2xlarge": 1.212,
        "g5.4xlarge": 1.624,
        "g6.xlarge": 0.8048,
        "g6.2xlarge": 0.9776,
    },
}


def on_demand_price(region: str, instance_type: str) -> float | None:
    """The On-Demand list price (USD/h) from :data:`ON_DEMAND_USD_H`, or None when the table does not know it."""
    return ON_DEMAND_USD_H.get(region, {}).get(instance_type)


# ---- the source -----------------------------------------------------------------------------------


class AwsSpotPriceSource(BotoClients):
    """EC2 Spot prices of ``Wanted.aws_offers``, one sample per (region, instance type).

    ``endpoint_url``: one URL for every region, or a mapping region -> URL
    (regions not in it use AWS's own endpoint), for tests and private
    endpoints; None reads whatever boto3 reads (``AWS_ENDPOINT_URL``...),
    else AWS. ``session``: the boto3 session whose credential chain is used
    (a new one by default, never the shared default session, which is not
    thread-safe).
    """

    name = "aws_spot"

    def __init__(
        self,
        *,
        ttl_seconds: float = DEFAULT_TTL_SECONDS,
        endpoint_url: str | Mapping[str, str] | None = None,
        session: boto3.session.Session | None = None,
        page_size: int = DEFAULT_PAGE_SIZE,
        max_pages: int = DEFAULT_MAX_PAGES,
        max_workers: int = DEFAULT_MAX_WORKERS,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        if not ttl_seconds > 0:
            raise ValueError("ttl_seconds must be positive")
        if not 1 <= page_size <= 1000:
            raise ValueError("page_size must be within 1..1000 (DescribeSpotPriceHistory's MaxResults)")
        if max_pages < 1 or max_workers < 1:
            raise ValueError("max_pages and max_workers must be at least 1")
        self.ttl_seconds = ttl_seconds
        self.endpoint_url = endpoint_url
        self.page_size = page_size
        self.max_pages = max_pages
        self.max_workers = max_workers
        super().__init__(session, user_agent="fusionplane-aws-spot")
        self._monotonic = monotonic
        self._offers: dict[tuple[str, str], OfferPrice] = {}
        self._notes: tuple[str, ...] = ()

    # ---- clients --------------------------------------------------------------------------

    def _endpoint_for(self, region: str) -> str | None:
        if self.endpoint_url is None or isinstance(self.endpoint_url, str):
            return self.endpoint_url
        return self.endpoint_url.get(region)

    def client_for(self, region: str, *, timeout_s: float) -> Any:
        """The cached EC2 client of ``region`` for polls of ``timeout_s`` (see :func:`client_config`)."""
        return self.cached_client("ec2", region, self._endpoint_for(region), timeout_s=timeout_s)

    # ---- what the last poll saw --------------------------------------------------------------

    @property
    def offers(self) -> Mapping[tuple[str, str], OfferPrice]:
        """The last poll's (region, type) -> per-zone detail, for ``fusionctl signals`` and logs."""
        return dict(self._offers)

    @property
    def notes(self) -> tuple[str, ...]:
        """The last poll's remarks that are not failures (unusable history entries skipped)."""
        return self._notes

    # ---- the poll ----------------------------------------------------------------------------

    def poll(self, wanted: Wanted, *, timeout_s: float, clock: Callable[[], datetime]) -> PollResult:
        """One price per wanted (region, type), within ``timeout_s``; raises only if no region could be read."""
        with self._lock:
            return self._poll(wanted, timeout_s=timeout_s, clock=clock)

    def _poll(self, wanted: Wanted, *, timeout_s: float, clock: Callable[[], datetime]) -> PollResult:
        if not wanted.aws_offers:
            self._offers, self._notes = {}, ()
            return PollResult()
        if not timeout_s > 0:
            raise ValueError("timeout_s must be positive")
        deadline = self._monotonic() + timeout_s
        # one instant for the whole poll: what EC2 is asked about (StartTime) and what samples say
        now = clock()
        regions = by_region(wanted.aws_offers)
        clients = {region: self.client_for(region, timeout_s=timeout_s) for region in regions}
        futures = read_regions(
            {
                region: functools.partial(self._read_region, clients[region], types, now=now, deadline=deadline)
                for region, types in regions.items()
            },
            remaining_s=deadline - self._monotonic(),
            max_workers=self.max_workers,
            thread_prefix="aws-spot",
        )

        samples: list[SignalSample] = []
        problems: list[str] = []
        notes: list[str] = []
        offers: dict[tuple[str, str], OfferPrice] = {}
        answered = 0
        for region, types in regions.items():
            future = futures[region]
            if not future.done():
                problems.append(f"aws/{region}: no answer within the poll's {timeout_s:g}s ({', '.join(types)})")
                continue
            try:
                zone_prices, skipped = future.result()
            except RegionFailed as exc:
                problems.append(f"aws/{region}: {exc} ({', '.join(types)})")
                continue
            except Exception as exc:  # botocore and anything below it: this region only
                problems.append(f"aws/{region}: {problem_text(exc, timeout_s=timeout_s)} ({', '.join(types)})")
                continue
            answered += 1
            if skipped:
                notes.append(f"aws/{region}: skipped {skipped} history entries without a usable price")
            for instance_type in types:
                key = spot_price_key("aws", region, instance_type)
                offer = _offer(region, instance_type, (z for (t, _), z in zone_prices.items() if t == instance_type))
                if offer is None:
                    problems.append(f"{key}: no current Linux/UNIX spot price (not offered in {region}?)")
                    continue
                offers[(region, instance_type)] = offer
                samples.append(
                    SignalSample(
                        source=SPOT_PRICE_SOURCE,
                        key=key,
                        value=offer.usd_per_hour,
                        observed_at=now,
                        ttl_seconds=self.ttl_seconds,
                    )
                )
        if answered == 0:
            raise AwsSpotPricesUnavailable(problems)
        if notes and tuple(notes) != self._notes:  # log a change, not the same remark every poll
            log.info("", extra={"event": "signals.aws_spot.notes", "source": self.name, "notes": notes})
        self._offers, self._notes = offers, tuple(notes)
        return PollResult(samples=samples, problems=problems)

    def _read_region(
        self, client: Any, types: Sequence[str], *, now: datetime, deadline: float
    ) -> tuple[dict[tuple[str, str], ZonePrice], int]:
        """Every page of one region's answer, reduced to the current price per (type, AZ)."""
        pages = client.get_paginator("describe_spot_price_history").paginate(
            InstanceTypes=list(types),
            ProductDescriptions=[LINUX_PRODUCT],
            StartTime=now.astimezone(UTC),
            PaginationConfig={"PageSize": self.page_size},
        )
        history: list[Mapping[str, Any]] = []
        for count, page in enumerate(pages, start=1):  # bounded: max_pages, then a problem
            history.extend(page.get("SpotPriceHistory", ()))
            if not page.get("NextToken"):
                break
            if count >= self.max_pages:
                raise RegionFailed(f"more than {self.max_pages} pages (NextToken still set)")
            if self._monotonic() >= deadline:
                raise RegionFailed(f"ran out of time after {count} pages")
        return current_zone_prices(history)
