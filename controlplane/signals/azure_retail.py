"""Azure prices from the Azure Retail Prices API: what ``azure_spot`` and ``azure_on_demand`` share.

The Retail Prices API (``https://prices.azure.com/api/retail/prices``) is
public and unauthenticated. One poll asks it once per region (more if a
region has many sizes, see ``sizes_per_request``) with an OData ``$filter``::

    serviceName eq 'Virtual Machines' and priceType eq 'Consumption'
    and armRegionName eq 'eastus'
    and (armSkuName eq 'Standard_NC4as_T4_v3' or armSkuName eq 'Standard_NC8as_T4_v3')

plus ``meterRegion='primary'`` (so the same meter is not listed again under
a secondary region), and follows ``NextPageLink`` until it is null, only
while it stays on the API's own origin (scheme, host, port).

The filter cannot say "Spot, Linux": that lives in ``skuName`` ("NC4as T4 v3
Spot") and ``productName`` ("Virtual Machines NCasT4_v3 Series Windows"), and
the API only documents ``eq`` on fields. So the answer holds the regular,
Windows, Spot and Low Priority meters of each size, and :func:`select_price`
keeps the one price a source means: the Spot meter (``skuName`` has the word
"Spot") or the regular one (neither "Spot" nor "Low Priority"); neither name
says "Windows", ``type`` is "Consumption", ``unitOfMeasure`` is "1 Hour",
``currencyCode`` is "USD", the price is positive and already in effect. When
several meters remain, the lowest wins and a note says so.

Failures are per region: a 5xx, a refusal, an unreadable body, a throttle
that outlasts the budget, or running out of time make a ``problem`` for that
region while the other regions are still read. Only when no request at all
got an answer does ``poll`` raise, so that the hub counts the source as down
and backs off.

Throttling: the API answers 429 when asked too often (its limits are not
documented). A ``Retry-After`` (seconds or an HTTP date) is waited out when
it still leaves time for the request within the poll's ``timeout_s``; if
not, that region is given up at once with a problem, never waited past the
budget. Throttles are kept per region: the API does not document their
scope, and a region that is not throttled should not lose its price because
another one was.
"""

from __future__ import annotations

import json
import logging
import math
import re
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from types import TracebackType
from typing import Any, ClassVar, Self
from urllib.parse import quote

import httpx

from controlplane.domain import SignalSample, spot_price_key
from controlplane.signals.base import PollResult, SourceUnavailable, Wanted

__all__ = [
    "API_VERSION",
    "DEFAULT_BASE_URL",
    "AzureRetailPriceSource",
    "AzureRetailPricesUnavailable",
    "PriceChoice",
    "build_filter",
    "select_price",
]

log = logging.getLogger("fusionplane.signals")

DEFAULT_BASE_URL = "https://prices.azure.com/api/retail/prices"
#: the newest version the API's overview documents; filter values are case-sensitive from this one on
API_VERSION = "2023-01-01-preview"
#: the docs promise up to 1,000 items a page; a few sizes of one region fit on one. Ten pages
#: is far beyond any honest answer, and stops a NextPageLink that loops.
DEFAULT_MAX_PAGES = 10
#: eight ``armSkuName eq '...'`` clauses keep the encoded URL under about 1 KB
DEFAULT_SIZES_PER_REQUEST = 8
#: how often one request is retried after a 429 before its region is given up
DEFAULT_MAX_THROTTLE_RETRIES = 3
#: a 429 without Retry-After: wait this long (if it fits) rather than hammer the API
DEFAULT_THROTTLE_WAIT_S = 1.0
#: a Retry-After is honoured only if at least this much time is left for the retried request
MIN_REQUEST_S = 0.2
#: an answer larger than this is not a price list for a few VM sizes
MAX_BODY_BYTES = 16 * 1024 * 1024
#: how much of an error body goes into a problem line
_SNIPPET = 200

_SPOT = re.compile(r"\bspot\b", re.IGNORECASE)
_LOW_PRIORITY = re.compile(r"\blow priority\b", re.IGNORECASE)
_WINDOWS = re.compile(r"windows", re.IGNORECASE)


class AzureRetailPricesUnavailable(SourceUnavailable):
    """No request of the poll got an answer (API down, every region failed, no time): the source is down."""

    def __init__(self, problems: Sequence[str]) -> None:
        super().__init__("Azure Retail Prices API", problems)


class _RequestFailed(Exception):
    """One region's request went wrong; the message becomes its problem line."""


@dataclass(frozen=True, kw_only=True)
class PriceChoice:
    """The price chosen for one (region, size), and what else was on offer."""

    price: float
    #: the chosen item's meterName (or skuName), for notes and debugging
    meter: str
    #: how many items passed every check (more than one: the lowest was taken)
    candidates: int


def build_filter(region: str, sizes: Sequence[str]) -> str:
    """The OData ``$filter`` for some VM sizes of one region (the values are quoted as OData wants)."""
    if not sizes:
        raise ValueError("at least one VM size is needed")
    skus = " or ".join(f"armSkuName eq {_odata_string(size)}" for size in sizes)
    if len(sizes) > 1:
        skus = f"({skus})"  # ``and`` binds tighter than ``or``: without them the region would apply to one size
    return (
        f"serviceName eq 'Virtual Machines' and priceType eq 'Consumption' "
        f"and armRegionName eq {_odata_string(region)} and {skus}"
    )


def _odata_string(value: str) -> str:
    """An OData string literal: single quotes, an inner quote doubled."""
    return "'" + value.replace("'", "''") + "'"


def select_price(
    items: Sequence[Mapping[str, Any]], *, region: str, size: str, now: datetime, spot: bool
) -> PriceChoice | None:
    """The lowest Linux pay-as-you-go hourly USD price of ``size`` in ``region`` among ``items``, if any.

    ``spot``: the Spot meter (``skuName`` has the word "Spot"); otherwise the
    regular (on-demand) meter, whose ``skuName`` says neither "Spot" nor
    "Low Priority".
    """
    chosen: tuple[float, str] | None = None
    count = 0
    for item in items:
        price = _linux_price(item, region=region, size=size, now=now, spot=spot)
        if price is None:
            continue
        count += 1
        meter = str(item.get("meterName") or item.get("skuName") or "?")
        if chosen is None or price < chosen[0]:
            chosen = (price, meter)
    if chosen is None:
        return None
    return PriceChoice(price=chosen[0], meter=chosen[1], candidates=count)


def _market_matches(sku_name: str, *, spot: bool) -> bool:
    """``skuName`` names the meter's market: "NC4as T4 v3 Spot", "NC4as T4 v3 Low Priority", "NC4as T4 v3"."""
    if spot:
        return bool(_SPOT.search(sku_name))
    return not _SPOT.search(sku_name) and not _LOW_PRIORITY.search(sku_name)


def _linux_price(item: Mapping[str, Any], *, region: str, size: str, now: datetime, spot: bool) -> float | None:
    """The item's hourly USD price if it is a Linux consumption meter of this market, size and region, else None."""
    if item.get("armSkuName") != size or item.get("armRegionName") != region:
        return None
    sku_name, product_name = item.get("skuName"), item.get("productName")
    if not isinstance(sku_name, str) or not isinstance(product_name, str):
        return None
    if not _market_matches(sku_name, spot=spot):
        return None
    # Windows meters carry the licence in the price; the workers run Linux
    if _WINDOWS.search(sku_name) or _WINDOWS.search(product_name):
        return None
    if item.get("type") != "Consumption" or item.get("unitOfMeasure") != "1 Hour":
        return None
    if item.get("currencyCode") != "USD":
        return None
    if not _in_effect(item.get("effectiveStartDate"), now):
        return None
    raw = item.get("retailPrice", item.get("unitPrice"))
    # bool is an int to Python, and never a price
    if isinstance(raw, bool) or not isinstance(raw, int | float):
        return None
    price = float(raw)
    if not math.isfinite(price) or price <= 0:
        return None
    return price


def _in_effect(start: Any, now: datetime) -> bool:
    """False only for a readable start date after ``now``: a price that does not apply yet."""
    if not isinstance(start, str):
        return True
    try:
        begins = datetime.fromisoformat(start.replace("Z", "+00:00"))
    except ValueError:
        return True  # an odd date format is not a reason to drop the price
    if begins.tzinfo is None:
        begins = begins.replace(tzinfo=UTC)
    if now.tzinfo is None:
        now = now.replace(tzinfo=UTC)
    return begins <= now


def _retry_after_s(headers: Mapping[str, str]) -> float | None:
    """Seconds to wait from a Retry-After header: delay-seconds or an HTTP date (RFC 9110); None if unreadable.

    A date is measured from the answer's own ``Date`` header when it has one,
    so that a skew between our clock and the API's does not stretch the wait.
    """
    value = headers.get("Retry-After")
    if value is None:
        return None
    text = value.strip()
    try:
        seconds = float(text)  # the RFC says whole seconds; a fraction costs nothing to accept
    except ValueError:
        when = _http_date(text)
        if when is None:
            return None
        sent = _http_date(headers.get("Date", "")) or datetime.now(UTC)
        seconds = (when - sent).total_seconds()
    if not math.isfinite(seconds):
        return None
    return max(seconds, 0.0)


def _http_date(text: str) -> datetime | None:
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    return when if when.tzinfo is not None else when.replace(tzinfo=UTC)


class AzureRetailPriceSource:
    """Linux prices of one market for every (region, VM size) it is given, one poll at a time.

    The shared body of ``azure_spot`` and ``azure_on_demand``: a subclass
    names the source (``name``), the snapshot source its samples go to
    (``signal_source``), the market (``spot``) and which offers of
    :class:`Wanted` it prices (:meth:`offers_of`).

    ``client`` may be given (tests, a proxy, custom TLS); otherwise the source
    makes its own and closes it in :meth:`close`. ``sleep`` and ``monotonic``
    exist so that waits can be observed; by default they are the real ones.
    """

    name: str
    #: the snapshot source of its samples (``spot_price``, ``on_demand_price``)
    signal_source: ClassVar[str]
    #: the Spot meters (True) or the regular, on-demand ones
    spot: ClassVar[bool]
    #: what its prices are called in problem lines and notes ("Spot Linux", "on-demand Linux")
    market_words: ClassVar[str]
    #: what poll raises when nothing could be read
    unavailable: ClassVar[type[AzureRetailPricesUnavailable]] = AzureRetailPricesUnavailable

    def __init__(
        self,
        *,
        ttl_seconds: float,
        base_url: str = DEFAULT_BASE_URL,
        api_version: str | None = API_VERSION,
        max_pages: int = DEFAULT_MAX_PAGES,
        sizes_per_request: int = DEFAULT_SIZES_PER_REQUEST,
        max_throttle_retries: int = DEFAULT_MAX_THROTTLE_RETRIES,
        primary_meters_only: bool = True,
        client: httpx.Client | None = None,
        sleep: Callable[[float], None] = time.sleep,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        if ttl_seconds <= 0:
            raise ValueError("ttl_seconds must be positive")
        if max_pages < 1 or sizes_per_request < 1 or max_throttle_retries < 0:
            raise ValueError("max_pages and sizes_per_request must be at least 1, max_throttle_retries at least 0")
        self.base_url = base_url.rstrip("?")
        self.api_version = api_version
        self.ttl_seconds = ttl_seconds
        self.max_pages = max_pages
        self.sizes_per_request = sizes_per_request
        self.max_throttle_retries = max_throttle_retries
        self.primary_meters_only = primary_meters_only
        self._own_client = client is None
        agent = f"fusionplane-{self.name.replace('_', '-')}"
        self._client = client or httpx.Client(
            follow_redirects=True, headers={"Accept": "application/json", "User-Agent": agent}
        )
        self._sleep, self._monotonic = sleep, monotonic
        self._origin = _origin(httpx.URL(self.base_url))
        self._notes: tuple[str, ...] = ()
        self._lock = threading.Lock()  # one poll at a time: the hub never overlaps them, a test might

    # ---- lifecycle --------------------------------------------------------------------

    def close(self) -> None:
        if self._own_client:
            self._client.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    @property
    def notes(self) -> tuple[str, ...]:
        """The last poll's remarks that are not failures (several meters for one size: the lowest was taken)."""
        return self._notes

    # ---- the poll ---------------------------------------------------------------------

    def offers_of(self, wanted: Wanted) -> Sequence[tuple[str, str]]:
        """The (region, VM size) pairs of ``wanted`` this source prices."""
        raise NotImplementedError

    def poll(self, wanted: Wanted, *, timeout_s: float, clock: Callable[[], datetime]) -> PollResult:
        """One price per wanted (region, size), within ``timeout_s``; raises only if no request got an answer."""
        with self._lock:
            return self._poll(wanted, timeout_s=timeout_s, clock=clock)

    def _poll(self, wanted: Wanted, *, timeout_s: float, clock: Callable[[], datetime]) -> PollResult:
        offers = self.offers_of(wanted)
        if not offers:
            self._notes = ()
            return PollResult()
        if not timeout_s > 0:
            raise ValueError("timeout_s must be positive")
        deadline = self._monotonic() + timeout_s
        observed_at = clock()
        samples: list[SignalSample] = []
        problems: list[str] = []
        notes: list[str] = []
        answered = 0
        for region, sizes in _by_region(offers).items():
            for batch in _batches(sizes, self.sizes_per_request):
                try:
                    items = self._fetch_all(region, batch, deadline=deadline)
                except _RequestFailed as exc:
                    problems.append(f"azure/{region}: {exc} ({', '.join(batch)})")
                    continue
                answered += 1
                for size in batch:
                    key = spot_price_key("azure", region, size)
                    choice = select_price(items, region=region, size=size, now=observed_at, spot=self.spot)
                    if choice is None:
                        problems.append(f"{key}: no {self.market_words} hourly USD price listed")
                        continue
                    if choice.candidates > 1:
                        notes.append(f"{key}: {choice.candidates} {self.market_words} prices listed, took the lowest")
                    samples.append(
                        SignalSample(
                            source=self.signal_source,
                            key=key,
                            value=choice.price,
                            observed_at=observed_at,
                            ttl_seconds=self.ttl_seconds,
                        )
                    )
        if answered == 0:
            raise self.unavailable(problems)
        if notes and tuple(notes) != self._notes:  # log a change, not the same remark every poll
            log.info("", extra={"event": f"signals.{self.name}.notes", "source": self.name, "notes": notes})
        self._notes = tuple(notes)
        return PollResult(samples=samples, problems=problems)

    # ---- HTTP -------------------------------------------------------------------------

    def _first_url(self, region: str, sizes: Sequence[str]) -> str:
        # built by hand: httpx would send "%24filter" and "+" for spaces; "$filter" with %20 is what
        # the API's own examples (and NextPageLink) use, so there is nothing for a proxy to mangle
        query = []
        if self.api_version:
            query.append(f"api-version={quote(self.api_version, safe='')}")
        query.append("$filter=" + quote(build_filter(region, sizes), safe="'()"))
        if self.primary_meters_only:
            query.append("meterRegion='primary'")
        return f"{self.base_url}?{'&'.join(query)}"

    def _fetch_all(self, region: str, sizes: Sequence[str], *, deadline: float) -> list[dict[str, Any]]:
        """Every item of every page for one request, or _RequestFailed."""
        url: str | None = self._first_url(region, sizes)
        items: list[dict[str, Any]] = []
        pages = 0
        while url is not None:
            if pages >= self.max_pages:
                raise _RequestFailed(f"more than {self.max_pages} pages (NextPageLink still set)")
            body = self._get_json(url, deadline=deadline)
            pages += 1
            page_items = body.get("Items")
            if not isinstance(page_items, list):
                raise _RequestFailed("malformed answer: no Items list")
            items.extend(item for item in page_items if isinstance(item, dict))
            url = self._next_page(body.get("NextPageLink"))
        return items

    def _next_page(self, link: Any) -> str | None:
        if link is None or link == "":
            return None
        if not isinstance(link, str):
            raise _RequestFailed("malformed answer: NextPageLink is not a string")
        try:
            parsed = httpx.URL(link)
        except httpx.InvalidURL as exc:
            raise _RequestFailed(f"malformed NextPageLink: {exc}") from None
        # follow pages of the API we were pointed at, and nothing else (no open redirect to elsewhere)
        if _origin(parsed) != self._origin:
            raise _RequestFailed(f"NextPageLink leaves {self.base_url}: {link[:_SNIPPET]}")
        return link

    def _get_json(self, url: str, *, deadline: float) -> dict[str, Any]:
        """One page, waiting out 429s that fit in the budget; _RequestFailed on anything else."""
        throttles = 0
        while True:  # bounded: each pass either returns, raises, or counts a throttle
            remaining = deadline - self._monotonic()
            if remaining <= 0:
                raise _RequestFailed("poll timed out")
            status, headers, body = self._get(url, remaining=remaining, deadline=deadline)
            if status == 429:
                wait = _retry_after_s(headers)
                shown = "no Retry-After" if wait is None else f"Retry-After {wait:g}s"
                wait = DEFAULT_THROTTLE_WAIT_S if wait is None else wait
                left = deadline - self._monotonic()
                if throttles >= self.max_throttle_retries:
                    raise _RequestFailed(f"throttled (HTTP 429, {shown}) {throttles + 1} times")
                if wait + MIN_REQUEST_S > left:
                    raise _RequestFailed(f"throttled (HTTP 429, {shown}), more than the {max(left, 0):.1f}s left")
                throttles += 1
                self._sleep(wait)
                continue
            if status != 200:
                raise _RequestFailed(f"HTTP {status}: {_snippet(body)}")
            try:
                decoded = json.loads(body)
            except (ValueError, UnicodeDecodeError):
                raise _RequestFailed(f"unreadable answer (not JSON): {_snippet(body)}") from None
            if not isinstance(decoded, dict):
                raise _RequestFailed("malformed answer: not a JSON object")
            return decoded

    def _get(self, url: str, *, remaining: float, deadline: float) -> tuple[int, httpx.Headers, bytes]:
        """Status, headers and body of one GET, giving up at ``deadline``.

        httpx's timeout applies to each connect and each socket read, not to
        the whole exchange, so the body is read in chunks with the deadline
        checked between them; a server that trickles bytes cannot hold the
        poll past its budget by more than one read (itself capped by
        ``remaining``).
        """
        try:
            with self._client.stream("GET", url, timeout=httpx.Timeout(remaining)) as response:
                chunks: list[bytes] = []
                size = 0
                for chunk in response.iter_bytes():
                    chunks.append(chunk)
                    size += len(chunk)
                    if size > MAX_BODY_BYTES:
                        raise _RequestFailed(f"answer larger than {MAX_BODY_BYTES} bytes")
                    if self._monotonic() > deadline:
                        raise _RequestFailed("poll timed out while reading the answer")
                return response.status_code, response.headers, b"".join(chunks)
        except httpx.TimeoutException as exc:
            raise _RequestFailed(f"timed out ({type(exc).__name__})") from None
        except httpx.HTTPError as exc:
            raise _RequestFailed(f"{type(exc).__name__}: {exc}") from None


def _origin(url: httpx.URL) -> tuple[str, str, int | None]:
    default = {"http": 80, "https": 443}.get(url.scheme)
    return url.scheme, url.host.lower(), url.port or default


def _snippet(body: bytes) -> str:
    text = body[:_SNIPPET].decode("utf-8", "replace").strip()
    return " ".join(text.split()) or "(empty body)"


def _by_region(offers: Sequence[tuple[str, str]]) -> dict[str, list[str]]:
    regions: dict[str, list[str]] = {}
    for region, size in sorted(set(offers)):
        regions.setdefault(region, []).append(size)
    return regions


def _batches(sizes: Sequence[str], per_batch: int) -> Iterator[list[str]]:
    for start in range(0, len(sizes), per_batch):
        yield list(sizes[start : start + per_batch])
