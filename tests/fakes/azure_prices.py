"""A small, faithful stand-in for the Azure Retail Prices API, for the real ``AzureSpotPriceSource``.

The real API (``https://prices.azure.com/api/retail/prices``) cannot be
reached from CI, and its prices move, so tests could not pin a number to it.
This serves a fixed catalogue of Virtual Machines meters on 127.0.0.1 over
real HTTP/1.1, following what the API's overview documents
(learn.microsoft.com, "Azure Retail Prices overview"):

* ``GET /api/retail/prices`` with ``api-version``, an OData ``$filter`` of
  ``eq`` comparisons joined by ``and``/``or`` with parentheses, on the
  documented filter fields (``armRegionName``, ``armSkuName``,
  ``serviceName``, ``priceType``, ``skuName``, ``productName``, ...; the
  field ``priceType`` filters the items' ``type``), ``meterRegion='primary'``
  and ``$skip``.
* Filter values are case-sensitive from ``2023-01-01-preview`` on and
  case-insensitive before, as the overview says.
* The answer: ``BillingCurrency``, ``CustomerEntityId``,
  ``CustomerEntityType``, ``Items`` (the documented item fields),
  ``NextPageLink`` (this server's own URL with ``$skip``, null on the last
  page) and ``Count`` (the items on this page).
* A filter it cannot read, or a field it does not know, is refused with 400.

Deliberate differences: only the ``eq``/``and``/``or`` part of OData is
understood; anything else (``ne``, ``contains()``, numbers) is refused with
400, where the real API may accept it: the source under test never sends it,
and a refusal makes a change to the filter fail loudly here. Pages hold
``page_size`` items (1,000 in the documentation; tests use fewer to exercise
paging). There is one currency (USD; ``currencyCode`` other than ``'USD'``
is refused) and no savings-plan fields. The exact wording of the real API's
400 body is not documented; the one here is a guess of the same shape. The
API does not document its throttling either: :meth:`FakeAzurePrices.throttle`
answers 429 with a ``Retry-After`` in seconds, the common Azure form.

Faults (each optionally limited to requests whose filter names one region):
429 with ``Retry-After``, any status (500), a slow answer (sleeps, bounded by
``max_delay_s``, cut short by ``stop()``), a garbage 200 body, and
``stop()``/``start()`` on the same port.
"""

from __future__ import annotations

import hashlib
import json
import re
import socket
import threading
import time
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit

from tests.fakes.loopback import LoopbackFake, TrackedHTTPServer

__all__ = [
    "API_PATH",
    "CATALOGUE",
    "DOCUMENTED_PAGE_SIZE",
    "FILTER_FIELDS",
    "FakeAzurePrices",
    "ODataError",
    "SPOT_LINUX",
    "RecordedRequest",
    "matches",
    "parse_filter",
    "vm_item",
]

API_PATH = "/api/retail/prices"
#: the overview: "For each API request, a maximum of 1,000 records are returned"
DOCUMENTED_PAGE_SIZE = 1000
#: the version from which filter values are case-sensitive (ISO dates sort as text)
CASE_SENSITIVE_FROM = "2023-01-01-preview"
KNOWN_API_VERSIONS = ("2021-10-01-preview", "2023-01-01-preview")

#: the documented filter fields, and the item field each one compares
FILTER_FIELDS: Mapping[str, str] = {
    "armRegionName": "armRegionName",
    "location": "location",
    "meterId": "meterId",
    "meterName": "meterName",
    "productId": "productId",
    "skuId": "skuId",
    "productName": "productName",
    "skuName": "skuName",
    "serviceName": "serviceName",
    "serviceId": "serviceId",
    "serviceFamily": "serviceFamily",
    "priceType": "type",  # the filter's name differs from the item's field
    "armSkuName": "armSkuName",
}

_LOCATIONS = {"eastus": "US East", "westeurope": "EU West"}


# ---- the catalogue ------------------------------------------------------------------


def _id(*parts: str) -> str:
    """A stable identifier in the API's style, derived from the meter's description (no randomness in fixtures)."""
    return hashlib.sha256("/".join(parts).encode()).hexdigest()[:12].upper()


def vm_item(
    region: str,
    arm_sku: str,
    sku: str,
    product: str,
    price: float,
    *,
    price_type: str = "Consumption",
    primary: bool = True,
    effective: str = "2024-03-01T00:00:00Z",
    unit: str = "1 Hour",
    currency: str = "USD",
    service: str = "Virtual Machines",
    reservation_term: str | None = None,
) -> dict[str, Any]:
    """One item as the API lists it (field names and order as in its answers)."""
    product_id = _id("product", product)
    item: dict[str, Any] = {
        "currencyCode": currency,
        "tierMinimumUnits": 0.0,
        "retailPrice": price,
        "unitPrice": price,
        "armRegionName": region,
        "location": _LOCATIONS.get(region, region),
        "effectiveStartDate": effective,
        "meterId": str(uuid.uuid5(uuid.NAMESPACE_URL, f"meter/{region}/{product}/{sku}/{primary}")),
        "meterName": sku,
        "productId": product_id,
        "skuId": f"{product_id}/{_id('sku', sku)[:4]}",
        "availabilityId": None,
        "productName": product,
        "skuName": sku,
        "serviceName": service,
        "serviceId": "DZH313Z7MMC8" if service == "Virtual Machines" else _id("service", service),
        "serviceFamily": "Compute" if service == "Virtual Machines" else "Storage",
        "unitOfMeasure": unit,
        "type": price_type,
        "isPrimaryMeterRegion": primary,
        "armSkuName": arm_sku,
    }
    if reservation_term is not None:
        item["reservationTerm"] = reservation_term
    return item


def _size(
    region: str,
    arm_sku: str,
    sku: str,
    series: str,
    *,
    linux: float,
    windows: float,
    spot: float | None,
    spot_windows: float | None,
    low_priority: float | None = None,
) -> list[dict[str, Any]]:
    """Every meter of one size in one region, regular and Windows first, Spot last (so paging matters)."""
    linux_product = f"Virtual Machines {series} Series"
    windows_product = f"Virtual Machines {series} Series Windows"
    items = [
        vm_item(region, arm_sku, sku, linux_product, linux),
        vm_item(region, arm_sku, sku, windows_product, windows),
        # reservations list the whole term's price per "1 Hour" unit: filtered out by priceType
        vm_item(region, arm_sku, sku, linux_product, round(linux * 5500, 0), price_type="Reservation",
                reservation_term="1 Year"),
        # dev/test removes the Windows licence: a lower price that is not pay-as-you-go
        vm_item(region, arm_sku, sku, windows_product, linux, price_type="DevTestConsumption"),
    ]  # fmt: skip
    if low_priority is not None:  # Batch's Low Priority is cheaper than Spot, and not what we buy
        items.append(vm_item(region, arm_sku, f"{sku} Low Priority", linux_product, low_priority))
        items.append(vm_item(region, arm_sku, f"{sku} Low Priority", windows_product, round(low_priority * 1.8, 4)))
    if spot_windows is not None:
        items.append(vm_item(region, arm_sku, f"{sku} Spot", windows_product, spot_windows))
    if spot is not None:
        items.append(vm_item(region, arm_sku, f"{sku} Spot", linux_product, spot))
    return items


T4_4, T4_8, A100 = "Standard_NC4as_T4_v3", "Standard_NC8as_T4_v3", "Standard_NC24ads_A100_v4"

#: GPU sizes in eastus and westeurope, priced in the API's style (figures made up, shapes real).
#: The Spot Linux price a correct client must pick for each (region, size) is in SPOT_LINUX.
CATALOGUE: tuple[dict[str, Any], ...] = (
    *_size("eastus", T4_4, "NC4as T4 v3", "NCasT4_v3", linux=0.526, windows=0.710, spot=0.1578,
           spot_windows=0.3418, low_priority=0.1052),
    # the same Spot meter again under a secondary meter region, cheaper: meterRegion='primary' drops it
    vm_item("eastus", T4_4, "NC4as T4 v3 Spot", "Virtual Machines NCasT4_v3 Series", 0.1199, primary=False),
    *_size("eastus", T4_8, "NC8as T4 v3", "NCasT4_v3", linux=0.752, windows=1.120, spot=0.2412,
           spot_windows=0.5264, low_priority=0.1504),
    # a second Spot Linux meter of one size (a repriced meter listed next to the old one): take the lowest
    vm_item("eastus", T4_8, "NC8as T4 v3 Spot", "Virtual Machines NCasT4_v3 Series", 0.2256,
            effective="2024-06-01T00:00:00Z"),
    *_size("eastus", A100, "NC24ads A100 v4", "NCadsA100v4", linux=3.673, windows=4.777, spot=1.1019,
           spot_windows=2.2059),
    *_size("westeurope", T4_4, "NC4as T4 v3", "NCasT4_v3", linux=0.617, windows=0.801, spot=0.1851,
           spot_windows=0.3693, low_priority=0.1234),
    # Spot Windows but no Spot Linux meter: a client must report a gap, not the Windows price
    *_size("westeurope", T4_8, "NC8as T4 v3", "NCasT4_v3", linux=0.882, windows=1.250, spot=None,
           spot_windows=0.5512, low_priority=0.1764),
    *_size("westeurope", A100, "NC24ads A100 v4", "NCadsA100v4", linux=4.220, windows=5.324, spot=1.3660,
           spot_windows=2.4530),
    # another service in the same region: serviceName must keep it out
    vm_item("eastus", "", "Hot LRS", "Blob Storage", 0.0208, unit="1 GB/Month", service="Storage"),
)  # fmt: skip

#: what the catalogue says each (region, size) costs on Spot Linux, for assertions
SPOT_LINUX: Mapping[tuple[str, str], float] = {
    ("eastus", T4_4): 0.1578,
    ("eastus", T4_8): 0.2256,
    ("eastus", A100): 1.1019,
    ("westeurope", T4_4): 0.1851,
    ("westeurope", A100): 1.3660,
}


# ---- OData $filter: the eq/and/or subset ------------------------------------------------


class ODataError(ValueError):
    """A filter outside the subset understood here; the API answers 400."""


_TOKEN = re.compile(r"\s+|(?P<lp>\()|(?P<rp>\))|(?P<str>'(?:[^']|'')*')|(?P<word>[A-Za-z_][A-Za-z0-9_]*)")


@dataclass(frozen=True)
class Eq:
    field: str
    value: str


@dataclass(frozen=True)
class BoolOp:
    op: str  # "and" or "or"
    parts: tuple[Node, ...]


Node = Eq | BoolOp


def _tokens(text: str) -> list[tuple[str, str]]:
    tokens: list[tuple[str, str]] = []
    pos = 0
    while pos < len(text):
        match = _TOKEN.match(text, pos)
        if match is None:
            raise ODataError(f"unexpected {text[pos : pos + 10]!r} at position {pos}")
        pos = match.end()
        kind = match.lastgroup
        if kind == "str":
            tokens.append(("str", match.group()[1:-1].replace("''", "'")))
        elif kind is not None:
            tokens.append((kind, match.group()))
    return tokens


class _Parser:
    def __init__(self, text: str) -> None:
        self.tokens = _tokens(text)
        self.pos = 0

    def parse(self) -> Node:
        if not self.tokens:
            raise ODataError("empty filter")
        node = self._or()
        if self.pos != len(self.tokens):
            raise ODataError(f"unexpected {self.tokens[self.pos][1]!r}")
        return node

    def _peek_word(self) -> str | None:
        if self.pos < len(self.tokens) and self.tokens[self.pos][0] == "word":
            return self.tokens[self.pos][1]
        return None

    def _take(self, kind: str) -> str:
        if self.pos >= len(self.tokens):
            raise ODataError(f"filter ends where a {kind} was expected")
        got_kind, value = self.tokens[self.pos]
        if got_kind != kind:
            raise ODataError(f"expected a {kind}, found {value!r}")
        self.pos += 1
        return value

    def _or(self) -> Node:
        parts = [self._and()]
        while self._peek_word() == "or":
            self.pos += 1
            parts.append(self._and())
        return parts[0] if len(parts) == 1 else BoolOp("or", tuple(parts))

    def _and(self) -> Node:
        parts = [self._atom()]
        while self._peek_word() == "and":
            self.pos += 1
            parts.append(self._atom())
        return parts[0] if len(parts) == 1 else BoolOp("and", tuple(parts))

    def _atom(self) -> Node:
        if self.pos < len(self.tokens) and self.tokens[self.pos][0] == "lp":
            self.pos += 1
            node = self._or()
            self._take("rp")
            return node
        name = self._take("word")
        if name not in FILTER_FIELDS:
            raise ODataError(f"unknown filter field {name!r}")
        operator = self._take("word")
        if operator != "eq":
            raise ODataError(f"operator {operator!r} is not supported")
        return Eq(name, self._take("str"))


def parse_filter(text: str) -> Node:
    """The filter's tree; ODataError for anything outside ``field eq 'value'``, ``and``, ``or``, parentheses."""
    return _Parser(text).parse()


def matches(node: Node, item: Mapping[str, Any], *, case_sensitive: bool = True) -> bool:
    if isinstance(node, Eq):
        actual = item.get(FILTER_FIELDS[node.field])
        if not isinstance(actual, str):
            return False
        return actual == node.value if case_sensitive else actual.casefold() == node.value.casefold()
    results = (matches(part, item, case_sensitive=case_sensitive) for part in node.parts)
    return all(results) if node.op == "and" else any(results)


def _regions(node: Node) -> frozenset[str]:
    """Every armRegionName the filter names (to aim a fault at one region's requests)."""
    if isinstance(node, Eq):
        return frozenset({node.value}) if node.field == "armRegionName" else frozenset()
    return frozenset().union(*(_regions(part) for part in node.parts))


# ---- requests, replies, faults --------------------------------------------------------


@dataclass(frozen=True)
class RecordedRequest:
    """What a client sent and what it got, for assertions about how it talks to the API."""

    method: str
    path: str
    query: Mapping[str, list[str]]
    #: the decoded ``$filter`` ("" when none)
    filter: str
    #: regions the filter names
    regions: frozenset[str]
    #: time.monotonic() when the request arrived
    at: float
    status: int


@dataclass(frozen=True)
class _Reply:
    status: int
    body: bytes = b""
    headers: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def json(cls, status: int, value: Any, headers: Mapping[str, str] | None = None) -> _Reply:
        return cls(
            status,
            json.dumps(value, separators=(",", ":")).encode(),
            {"Content-Type": "application/json; charset=utf-8", **(headers or {})},
        )

    @classmethod
    def error(cls, status: int, code: str, message: str, headers: Mapping[str, str] | None = None) -> _Reply:
        return cls.json(status, {"Error": {"Code": code, "Message": message}}, headers)


@dataclass
class _Fault:
    kind: str  # "status", "throttle", "slow", "garbage"
    remaining: int | None  # None: until heal()
    region: str | None
    status: int = 500
    retry_after: str | None = None
    delay_s: float = 0.0
    body: bytes = b""


class _Stopping(Exception):
    """The server is going away: drop the connection without an answer."""


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: TrackedHTTPServer
    timeout = 30  # an idle keep-alive connection does not hold a thread forever

    def setup(self) -> None:
        super().setup()
        # headers and body leave in two writes; without NODELAY the client's delayed ACK adds 40 ms a request
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def do_GET(self) -> None:
        self._dispatch()

    def do_POST(self) -> None:
        self._dispatch()

    def _dispatch(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)  # read what was sent, so refusing it does not reset the connection
        try:
            reply = self.server.fake._answer(self.command, self.path)
        except _Stopping:
            self.close_connection = True
            return
        self.send_response(reply.status)
        for name, value in reply.headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(reply.body)))
        self.end_headers()
        self.wfile.write(reply.body)

    def log_message(self, format: str, *args: Any) -> None:
        pass  # tests read fake.requests


class FakeAzurePrices(LoopbackFake):
    """The Retail Prices API on 127.0.0.1 for tests; ``stop()`` then ``start()`` keeps the port.

    ``items`` replaces the catalogue (default :data:`CATALOGUE`); ``page_size``
    is how many items a page holds. Slow answers never sleep longer than
    ``max_delay_s``, and ``stop()`` cuts them short.
    """

    def __init__(
        self,
        *,
        port: int = 0,
        items: Iterable[Mapping[str, Any]] = CATALOGUE,
        page_size: int = DOCUMENTED_PAGE_SIZE,
        max_delay_s: float = 5.0,
    ) -> None:
        if page_size < 1:
            raise ValueError("page_size must be at least 1")
        super().__init__(port)
        self._items = [dict(item) for item in items]
        self.page_size = page_size
        self.max_delay_s = max_delay_s
        self._lock = threading.Lock()
        self._faults: list[_Fault] = []
        self._requests: list[RecordedRequest] = []
        self._stopping = threading.Event()

    # ---- lifecycle -------------------------------------------------------------------

    thread_name = "fake-azure-prices"

    def _new_server(self, port: int) -> TrackedHTTPServer:
        server = TrackedHTTPServer(port, self, _Handler)
        # a client that gave up (it timed out) is not a bug in the fake
        server.quiet_errors = (ConnectionError, TimeoutError, OSError)
        return server

    def _on_start(self) -> None:
        self._stopping.clear()

    def _on_stop(self) -> None:
        self._stopping.set()  # a slow answer in progress is dropped at once

    @property
    def url(self) -> str:
        """The base URL to give the source (the API's path on this server)."""
        return f"http://127.0.0.1:{self.port}{API_PATH}"

    # ---- faults ----------------------------------------------------------------------

    def throttle(self, *, retry_after: str | None = "1", times: int | None = 1, region: str | None = None) -> None:
        """Answer 429 (with this ``Retry-After``, none if None) to the next ``times`` matching requests."""
        self._add(_Fault("throttle", _times(times), region, status=429, retry_after=retry_after))

    def fail(self, *, status: int = 500, times: int | None = None, region: str | None = None) -> None:
        """Answer ``status`` to the next ``times`` matching requests (every one until ``heal()`` if None)."""
        self._add(_Fault("status", _times(times), region, status=status))

    def slow(self, delay_s: float, *, times: int | None = None, region: str | None = None) -> None:
        """Wait ``delay_s`` (at most ``max_delay_s``) before answering the next matching requests."""
        self._add(_Fault("slow", _times(times), region, delay_s=min(delay_s, self.max_delay_s)))

    def garbage(self, body: bytes | None = None, *, times: int | None = None, region: str | None = None) -> None:
        """Answer 200 with a body that is no price list (an HTML error page unless ``body`` is given)."""
        page = body if body is not None else b"<html><body><h1>Service Unavailable</h1></body></html>"
        self._add(_Fault("garbage", _times(times), region, status=200, body=page))

    def heal(self) -> None:
        with self._lock:
            self._faults.clear()

    def _add(self, fault: _Fault) -> None:
        with self._lock:
            self._faults.append(fault)

    # ---- direct access ---------------------------------------------------------------

    @property
    def requests(self) -> list[RecordedRequest]:
        with self._lock:
            return list(self._requests)

    def clear_requests(self) -> None:
        with self._lock:
            self._requests.clear()

    def set_items(self, items: Iterable[Mapping[str, Any]]) -> None:
        """Replace the catalogue (a price change, as the API publishes one)."""
        with self._lock:
            self._items = [dict(item) for item in items]

    # ---- called by the handler threads -----------------------------------------------

    def _answer(self, method: str, target: str) -> _Reply:
        arrived = time.monotonic()
        split = urlsplit(target)
        query = parse_qs(split.query, keep_blank_values=True)
        text = query.get("$filter", [""])[0]
        try:
            regions = _regions(parse_filter(text)) if text else frozenset()
        except ODataError:
            regions = frozenset()
        with self._lock:
            fault = self._take_fault(regions)
        if fault is not None and fault.kind == "slow":
            if self._stopping.wait(fault.delay_s):
                raise _Stopping
            fault = None
        reply = self._fault_reply(fault) if fault is not None else self._serve(method, split.path, query)
        with self._lock:
            self._requests.append(RecordedRequest(method, split.path, query, text, regions, arrived, reply.status))
        return reply

    def _take_fault(self, regions: frozenset[str]) -> _Fault | None:
        for fault in self._faults:
            if fault.region is not None and fault.region not in regions:
                continue
            if fault.remaining is not None:
                fault.remaining -= 1
                if fault.remaining <= 0:
                    self._faults.remove(fault)
            return fault
        return None

    @staticmethod
    def _fault_reply(fault: _Fault) -> _Reply:
        if fault.kind == "throttle":
            headers = {"Retry-After": fault.retry_after} if fault.retry_after is not None else {}
            return _Reply.error(429, "TooManyRequests", "Too many requests. Please retry later.", headers)
        if fault.kind == "garbage":
            return _Reply(200, fault.body, {"Content-Type": "application/json; charset=utf-8"})
        return _Reply.error(fault.status, "InternalServerError", "An error occurred while processing the request.")

    def _serve(self, method: str, path: str, query: Mapping[str, list[str]]) -> _Reply:
        if path.rstrip("/") != API_PATH:
            return _Reply.error(404, "NotFound", f"No resource at {path}")
        if method != "GET":
            return _Reply.error(405, "MethodNotAllowed", f"{method} is not allowed", {"Allow": "GET"})
        version = query.get("api-version", [""])[0]
        if version and version not in KNOWN_API_VERSIONS:
            return _Reply.error(400, "BadRequest", f"api-version {version!r} is not supported")
        currency = query.get("currencyCode", ["'USD'"])[0]
        if currency.strip("'") != "USD":
            return _Reply.error(400, "BadRequest", "FakeAzurePrices serves USD only")
        meter_region = query.get("meterRegion", [None])[0]
        if meter_region is not None and meter_region.strip("'") != "primary":
            return _Reply.error(400, "BadRequest", f"Invalid meterRegion {meter_region!r}")
        skip_text = query.get("$skip", ["0"])[0]
        if not skip_text.isdigit():
            return _Reply.error(400, "BadRequest", "Invalid OData parameters supplied: $skip")
        skip = int(skip_text)
        text = query.get("$filter", [""])[0]
        try:
            node = parse_filter(text) if text else None
        except ODataError as exc:
            return _Reply.error(400, "BadRequest", f"Invalid OData parameters supplied: {exc}")
        case_sensitive = bool(version) and version >= CASE_SENSITIVE_FROM
        with self._lock:
            items = list(self._items)
        chosen = [
            item
            for item in items
            if (node is None or matches(node, item, case_sensitive=case_sensitive))
            and (meter_region is None or item.get("isPrimaryMeterRegion", True))
        ]
        page = chosen[skip : skip + self.page_size]
        following = skip + self.page_size
        next_link = self._next_link(query, following) if following < len(chosen) else None
        return _Reply.json(
            200,
            {
                "BillingCurrency": "USD",
                "CustomerEntityId": "Default",
                "CustomerEntityType": "Retail",
                "Items": page,
                "NextPageLink": next_link,
                "Count": len(page),
            },
        )

    def _next_link(self, query: Mapping[str, list[str]], skip: int) -> str:
        """This server's URL with the same query and the next ``$skip``, as the API links its pages."""
        parts = [
            f"{name}={quote(value, safe=chr(39) + '()$')}"
            for name, values in query.items()
            if name != "$skip"
            for value in values
        ]
        parts.append(f"$skip={skip}")
        return f"{self.url}?{'&'.join(parts)}"


def _times(times: int | None) -> int | None:
    if times is not None and times < 1:
        raise ValueError("times must be at least 1 (or None for every request until heal())")
    return times
