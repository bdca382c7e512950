"""AwsSpotPriceSource against real HTTP endpoints, driven by the real boto3 client via ``endpoint_url``.

Two kinds of server:

* **moto in server mode** (``ThreadedMotoServer`` on 127.0.0.1). moto 5.2.5's
  ``DescribeSpotPriceHistory`` cannot carry injected prices: its backend only
  lists which (instance type, zone) pairs exist (from moto's bundled
  instance-type offerings), and the response layer writes the same constant
  for every entry: ``SpotPrice "0.00001"``, ``ProductDescription "Linux/UNIX
  (Amazon VPC)"``, ``Timestamp 2006-01-02T15:04:05.999999999Z``. It ignores
  ``ProductDescriptions``, ``StartTime`` and ``MaxResults`` and never sends a
  ``NextToken``. Setting backend data cannot change a price (the number is
  in the response code, not in any backend object), so the moto tests assert
  exactly that: one 0.00001 sample per offer moto knows, the zones moto
  lists, a problem for an offer it does not, and the region/endpoint/
  failure handling around it.
* **a small EC2 query-API server** (:class:`_FakeEc2`, in this file) for the
  per-zone logic: it answers ``DescribeSpotPriceHistory`` in EC2's XML with
  realistic prices, pages of three entries and a ``NextToken``, filters by
  instance type as EC2 does, and (like moto) ignores ``ProductDescriptions``
  and ``StartTime``, so it returns older history and Windows/SUSE/RHEL
  prices that the source itself must discard. It can also answer throttling,
  AuthFailure, garbage, or slowly.

Nothing in boto3 or botocore is patched: every request is signed, sent over
a socket and parsed by botocore.
"""

from __future__ import annotations

import contextlib
import re
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs
from xml.sax.saxutils import escape

import pytest
from moto.server import ThreadedMotoServer

from controlplane.domain import SPOT_PRICE_SOURCE
from controlplane.signals.aws_spot import (
    ON_DEMAND_USD_H,
    AwsSpotPriceSource,
    AwsSpotPricesUnavailable,
    current_zone_prices,
    is_linux,
    on_demand_price,
)
from controlplane.signals.base import PollResult, Wanted
from tests.support.aws import isolate_aws_environment
from tests.support.loopback import SilentServer, free_port, serving

pytestmark = pytest.mark.timeout(60)

NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)


def clock() -> datetime:
    return NOW


def wanted(*offers: tuple[str, str]) -> Wanted:
    return Wanted(aws_offers=tuple(sorted(offers)))


def values(result: PollResult) -> dict[str, float]:
    """``spot_price/<key>`` -> value, checking what every sample of this source must carry."""
    out: dict[str, float] = {}
    for sample in result.samples:
        assert sample.source == SPOT_PRICE_SOURCE
        assert sample.observed_at == NOW  # the poll's time, never EC2's Timestamp
        out[f"{sample.source}/{sample.key}"] = sample.value
    return out


# --------------------------------------------------------------------------- environment


@pytest.fixture(autouse=True)
def _aws_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    """Dummy credentials from the environment only; nothing of the developer's AWS setup is read."""
    isolate_aws_environment(monkeypatch, tmp_path)


@pytest.fixture
def make_source() -> Iterator[Callable[..., AwsSpotPriceSource]]:
    """Sources whose clients are closed at the end of the test."""
    made: list[AwsSpotPriceSource] = []

    def make(**kwargs: Any) -> AwsSpotPriceSource:
        source = AwsSpotPriceSource(**kwargs)
        made.append(source)
        return source

    yield make
    for source in made:
        source.close()


@contextlib.contextmanager
def _moto(port: int = 0) -> Iterator[str]:
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        host, bound = server.get_host_and_port()
        assert bound != 0
        yield f"http://{host}:{bound}"
    finally:
        server.stop()
        if server._server is not None:  # stop() leaves the listening socket open
            server._server.server_close()


@pytest.fixture(scope="module")
def moto_url() -> Iterator[str]:
    with _moto() as url:
        yield url


# --------------------------------------------------------------------------- the EC2 query-API server


def _entry(instance_type: str, zone: str, product: str, price: str, when: str) -> dict[str, str]:
    return {"type": instance_type, "zone": zone, "product": product, "price": price, "timestamp": when}


LINUX, VPC = "Linux/UNIX", "Linux/UNIX (Amazon VPC)"

#: us-east-1's answer, in the order it is served (three entries a page, five pages). The current
#: Linux prices are g5.xlarge 1a 0.4437 / 1b 0.3915 / 1c 0.4120 / 1d 0.4310 (cheapest: 1b) and
#: g4dn.xlarge 1a 0.2104 / 1c 0.2263 / 1d 0.2390 (cheapest: 1a). The traps: older and lower history
#: (1b 0.3702, g4dn 1a 0.1980, 1d 0.1875), cheaper Windows/SUSE prices, and the current 1b and 1a
#: prices only on the last page.
US_EAST_1 = [
    _entry("g5.xlarge", "us-east-1a", LINUX, "0.451200", "2026-11-20T08:00:00.000Z"),
    _entry("g5.xlarge", "us-east-1d", "Windows", "0.205000", "2026-11-24T07:00:00.000Z"),
    _entry("g4dn.xlarge", "us-east-1d", LINUX, "0.239000", "2026-11-23T10:00:00.000Z"),
    _entry("g5.xlarge", "us-east-1b", LINUX, "0.370200", "2026-11-22T04:00:00.000Z"),
    _entry("g5.xlarge", "us-east-1c", VPC, "0.412000", "2026-11-18T16:30:00.000Z"),
    _entry("g4dn.xlarge", "us-east-1a", LINUX, "0.198000", "2026-11-21T02:00:00.000Z"),
    _entry("g5.xlarge", "us-east-1f", "SUSE Linux", "0.300100", "2026-11-24T05:00:00.000Z"),
    _entry("g5.xlarge", "us-east-1d", LINUX, "0.431000", "2026-11-21T12:00:00.000Z"),
    _entry("g4dn.xlarge", "us-east-1c", LINUX, "0.226300", "2026-11-19T09:00:00.000Z"),
    _entry("g5.xlarge", "us-east-1a", LINUX, "0.443700", "2026-11-23T09:15:00.000Z"),
    _entry("g4dn.xlarge", "us-east-1d", LINUX, "0.187500", "2026-11-20T11:00:00.000Z"),
    _entry("g6.xlarge", "us-east-1a", "Windows", "0.310000", "2026-11-24T01:00:00.000Z"),
    _entry("g6.xlarge", "us-east-1b", "Red Hat Enterprise Linux", "0.350000", "2026-11-24T01:00:00.000Z"),
    _entry("g4dn.xlarge", "us-east-1a", LINUX, "0.210400", "2026-11-23T18:45:00.000Z"),
    _entry("g5.xlarge", "us-east-1b", LINUX, "0.391500", "2026-11-24T06:00:00.000Z"),
]
EU_WEST_1 = [
    _entry("g5.xlarge", "eu-west-1a", LINUX, "0.480100", "2026-11-22T00:00:00.000Z"),
    _entry("g5.xlarge", "eu-west-1b", LINUX, "0.465000", "2026-11-23T00:00:00.000Z"),
]
HISTORY = {"us-east-1": US_EAST_1, "eu-west-1": EU_WEST_1}

_REGION_IN_AUTH = re.compile(r"Credential=[^/]+/\d{8}/([a-z0-9-]+)/ec2/aws4_request")
_ERRORS = {
    "throttle": (503, "RequestLimitExceeded", "Request limit exceeded."),
    "auth": (401, "AuthFailure", "AWS was not able to validate the provided access credentials"),
}


class _FakeEc2(ThreadingHTTPServer):
    """EC2's query API for DescribeSpotPriceHistory only; ``modes[region]`` picks a failure."""

    daemon_threads = True

    def __init__(self, history: Mapping[str, Sequence[dict[str, str]]], *, page_size: int = 3) -> None:
        super().__init__(("127.0.0.1", 0), _Ec2Handler)
        self.history, self.page_size = history, page_size
        #: region -> "ok" (default), "throttle", "auth" or "garbage"
        self.modes: dict[str, str] = {}
        #: seconds to wait before each answer
        self.delay_s = 0.0
        self.requests: list[tuple[str, dict[str, str]]] = []
        self.lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def seen(self, region: str) -> list[dict[str, str]]:
        with self.lock:
            return [params for where, params in self.requests if where == region]


class _Ec2Handler(BaseHTTPRequestHandler):
    server: _FakeEc2
    protocol_version = "HTTP/1.0"  # one request per connection: no handler thread outlives a test

    def log_message(self, format: str, *args: Any) -> None:
        return None

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", "0"))).decode()
        params = {key: value[0] for key, value in parse_qs(body, keep_blank_values=True).items()}
        found = _REGION_IN_AUTH.search(self.headers.get("Authorization", ""))
        region = found.group(1) if found else "?"
        with self.server.lock:
            self.server.requests.append((region, params))
        if self.server.delay_s:
            time.sleep(self.server.delay_s)
        mode = self.server.modes.get(region, "ok")
        if mode == "garbage":
            self._send(200, b"<html><body>upstream proxy says hi", "text/html")
        elif mode in _ERRORS:
            status, code, message = _ERRORS[mode]
            xml = (
                f"<?xml version='1.0' encoding='UTF-8'?><Response><Errors><Error><Code>{code}</Code>"
                f"<Message>{escape(message)}</Message></Error></Errors><RequestID>r-1</RequestID></Response>"
            )
            self._send(status, xml.encode(), "text/xml")
        elif params.get("Action") != "DescribeSpotPriceHistory":
            self._send(400, b"<Response><Errors><Error><Code>InvalidAction</Code></Error></Errors></Response>")
        else:
            self._send(200, self._history_page(region, params).encode(), "text/xml")

    def _history_page(self, region: str, params: Mapping[str, str]) -> str:
        types = {value for key, value in params.items() if key.startswith("InstanceType.")}
        entries = [e for e in self.server.history.get(region, ()) if e["type"] in types]
        start = int(params.get("NextToken") or 0)
        size = min(self.server.page_size, int(params.get("MaxResults", 1000)))
        page = entries[start : start + size]
        following = start + size
        items = "".join(
            f"<item><instanceType>{e['type']}</instanceType><productDescription>{escape(e['product'])}"
            f"</productDescription><spotPrice>{e['price']}</spotPrice><timestamp>{e['timestamp']}</timestamp>"
            f"<availabilityZone>{e['zone']}</availabilityZone></item>"
            for e in page
        )
        # EC2 ends with an empty nextToken element rather than none
        token = str(following) if following < len(entries) else ""
        return (
            '<?xml version="1.0" encoding="UTF-8"?>'
            '<DescribeSpotPriceHistoryResponse xmlns="http://ec2.amazonaws.com/doc/2016-11-15/">'
            f"<requestId>r-{start}</requestId><spotPriceHistorySet>{items}</spotPriceHistorySet>"
            f"<nextToken>{token}</nextToken></DescribeSpotPriceHistoryResponse>"
        )

    def _send(self, status: int, body: bytes, content_type: str = "text/xml") -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture
def ec2() -> Iterator[_FakeEc2]:
    with serving(_FakeEc2(HISTORY)) as server:
        yield server


# --------------------------------------------------------------------------- moto


def test_moto_one_sample_per_offer_with_moto_constant_price(
    moto_url: str, make_source: Callable[..., AwsSpotPriceSource]
) -> None:
    source = make_source(endpoint_url=moto_url)
    result = source.poll(
        wanted(("us-east-1", "g5.xlarge"), ("us-east-1", "g4dn.xlarge"), ("eu-west-1", "g5.xlarge")),
        timeout_s=10,
        clock=clock,
    )
    assert result.problems == []
    # 0.00001 is moto's constant; the keys are what the planner reads
    assert values(result) == {
        "spot_price/aws/eu-west-1/g5.xlarge": 0.00001,
        "spot_price/aws/us-east-1/g4dn.xlarge": 0.00001,
        "spot_price/aws/us-east-1/g5.xlarge": 0.00001,
    }
    assert {sample.ttl_seconds for sample in result.samples} == {600.0}
    offer = source.offers[("us-east-1", "g5.xlarge")]
    # moto's offerings for g5.xlarge in us-east-1 (no 1e); its answer says "Linux/UNIX (Amazon VPC)"
    assert sorted(offer.zones) == ["us-east-1a", "us-east-1b", "us-east-1c", "us-east-1d", "us-east-1f"]
    assert offer.cheapest_zone == "us-east-1a"  # all equal: the first by name
    # moto's Timestamp is 2006-01-02: kept as when the price changed, not as when it was observed
    assert offer.zones["us-east-1b"].changed_at.year == 2006


def test_moto_offer_not_sold_in_region_is_a_problem_not_a_failure(
    moto_url: str, make_source: Callable[..., AwsSpotPriceSource]
) -> None:
    source = make_source(endpoint_url=moto_url, ttl_seconds=120)
    result = source.poll(wanted(("eu-west-1", "p5.48xlarge"), ("eu-west-1", "g5.xlarge")), timeout_s=10, clock=clock)
    assert values(result) == {"spot_price/aws/eu-west-1/g5.xlarge": 0.00001}
    assert [sample.ttl_seconds for sample in result.samples] == [120]
    assert len(result.problems) == 1
    assert result.problems[0].startswith("aws/eu-west-1/p5.48xlarge: no current Linux/UNIX spot price")


def test_one_of_two_regions_down_keeps_the_other(moto_url: str, make_source: Callable[..., AwsSpotPriceSource]) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    source = make_source(endpoint_url={"us-east-1": moto_url, "eu-west-1": dead})
    started = time.monotonic()
    result = source.poll(wanted(("us-east-1", "g5.xlarge"), ("eu-west-1", "g5.xlarge")), timeout_s=3, clock=clock)
    assert time.monotonic() - started < 3
    assert values(result) == {"spot_price/aws/us-east-1/g5.xlarge": 0.00001}
    assert len(result.problems) == 1
    assert result.problems[0].startswith("aws/eu-west-1: cannot connect")
    assert result.problems[0].endswith("(g5.xlarge)")


def test_server_down_raises_quickly_and_recovers_when_it_is_back(
    make_source: Callable[..., AwsSpotPriceSource],
) -> None:
    offers = wanted(("us-east-1", "g4dn.xlarge"))
    with _moto() as url:
        source = make_source(endpoint_url=url)
        assert values(source.poll(offers, timeout_s=4, clock=clock)) == {
            "spot_price/aws/us-east-1/g4dn.xlarge": 0.00001
        }
    # the same client (cached, its pooled connection now dead) against a closed port
    started = time.monotonic()
    with pytest.raises(AwsSpotPricesUnavailable, match=r"aws/us-east-1: cannot connect") as raised:
        source.poll(offers, timeout_s=4, clock=clock)
    assert time.monotonic() - started < 5
    assert len(raised.value.problems) == 1
    port = int(url.rsplit(":", 1)[1])
    with _moto(port) as again:
        assert again == url
        result = source.poll(offers, timeout_s=4, clock=clock)
        assert result.problems == []
        assert values(result) == {"spot_price/aws/us-east-1/g4dn.xlarge": 0.00001}


# --------------------------------------------------------------------------- per-zone logic


def test_newest_price_per_zone_cheapest_zone_every_page_linux_only(
    ec2: _FakeEc2, make_source: Callable[..., AwsSpotPriceSource]
) -> None:
    source = make_source(endpoint_url=ec2.url)
    result = source.poll(
        wanted(("us-east-1", "g5.xlarge"), ("us-east-1", "g4dn.xlarge"), ("eu-west-1", "g5.xlarge")),
        timeout_s=10,
        clock=clock,
    )
    assert result.problems == []
    assert values(result) == {
        "spot_price/aws/us-east-1/g5.xlarge": 0.3915,
        "spot_price/aws/us-east-1/g4dn.xlarge": 0.2104,
        "spot_price/aws/eu-west-1/g5.xlarge": 0.465,
    }
    g5 = source.offers[("us-east-1", "g5.xlarge")]
    assert g5.cheapest_zone == "us-east-1b"
    # the newest per zone, older history ignored; Windows (1d 0.205) and SUSE (1f) never counted
    assert {zone: price.usd_per_hour for zone, price in g5.zones.items()} == {
        "us-east-1a": 0.4437,
        "us-east-1b": 0.3915,
        "us-east-1c": 0.412,  # "Linux/UNIX (Amazon VPC)" counts as Linux
        "us-east-1d": 0.431,
    }
    assert g5.zones["us-east-1b"].changed_at == datetime(2026, 11, 24, 6, 0, tzinfo=UTC)
    g4dn = source.offers[("us-east-1", "g4dn.xlarge")]
    assert (g4dn.cheapest_zone, sorted(g4dn.zones)) == ("us-east-1a", ["us-east-1a", "us-east-1c", "us-east-1d"])

    # every page was read: 13 matching entries of us-east-1 at three a page, one request for eu-west-1
    east = ec2.seen("us-east-1")
    assert [params.get("NextToken") for params in east] == [None, "3", "6", "9", "12"]
    assert len(ec2.seen("eu-west-1")) == 1
    first = east[0]
    assert first["Action"] == "DescribeSpotPriceHistory"
    assert (first["InstanceType.1"], first["InstanceType.2"]) == ("g4dn.xlarge", "g5.xlarge")
    assert "InstanceType.3" not in first
    assert first["ProductDescription.1"] == "Linux/UNIX"
    assert "ProductDescription.2" not in first
    assert datetime.fromisoformat(first["StartTime"]) == NOW  # "the price in effect now", per zone
    assert first["MaxResults"] == "1000"


def test_only_windows_or_rhel_prices_give_no_sample(
    ec2: _FakeEc2, make_source: Callable[..., AwsSpotPriceSource]
) -> None:
    source = make_source(endpoint_url=ec2.url)
    result = source.poll(wanted(("us-east-1", "g6.xlarge"), ("us-east-1", "g5.xlarge")), timeout_s=10, clock=clock)
    assert values(result) == {"spot_price/aws/us-east-1/g5.xlarge": 0.3915}
    assert result.problems == ["aws/us-east-1/g6.xlarge: no current Linux/UNIX spot price (not offered in us-east-1?)"]
    assert ("us-east-1", "g6.xlarge") not in source.offers


def test_page_limit_fails_the_region_not_the_poll(
    ec2: _FakeEc2, make_source: Callable[..., AwsSpotPriceSource]
) -> None:
    source = make_source(endpoint_url=ec2.url, max_pages=2)
    result = source.poll(wanted(("us-east-1", "g5.xlarge"), ("eu-west-1", "g5.xlarge")), timeout_s=10, clock=clock)
    assert values(result) == {"spot_price/aws/eu-west-1/g5.xlarge": 0.465}
    assert result.problems == ["aws/us-east-1: more than 2 pages (NextToken still set) (g5.xlarge)"]
    assert len(ec2.seen("us-east-1")) == 2  # stopped there, did not read the third page


def test_throttled_region_is_a_clear_problem_after_one_retry(
    ec2: _FakeEc2, make_source: Callable[..., AwsSpotPriceSource]
) -> None:
    ec2.modes["eu-west-1"] = "throttle"
    source = make_source(endpoint_url=ec2.url)
    result = source.poll(wanted(("us-east-1", "g5.xlarge"), ("eu-west-1", "g5.xlarge")), timeout_s=10, clock=clock)
    assert values(result) == {"spot_price/aws/us-east-1/g5.xlarge": 0.3915}
    assert len(result.problems) == 1
    assert result.problems[0].startswith("aws/eu-west-1: throttled by EC2 (RequestLimitExceeded)")
    # total_max_attempts=2: the first request and exactly one retry, then the region is given up
    assert len(ec2.seen("eu-west-1")) == 2


def test_refused_credentials_everywhere_raise(ec2: _FakeEc2, make_source: Callable[..., AwsSpotPriceSource]) -> None:
    ec2.modes.update({"us-east-1": "auth", "eu-west-1": "auth"})
    source = make_source(endpoint_url=ec2.url)
    with pytest.raises(AwsSpotPricesUnavailable) as raised:
        source.poll(wanted(("us-east-1", "g5.xlarge"), ("eu-west-1", "g5.xlarge")), timeout_s=10, clock=clock)
    assert [problem.split(":")[0] for problem in raised.value.problems] == ["aws/eu-west-1", "aws/us-east-1"]
    assert all("credentials refused (AuthFailure)" in problem for problem in raised.value.problems)
    assert len(ec2.requests) == 2  # an auth failure is not retried


def test_no_credentials_anywhere_is_named(
    ec2: _FakeEc2, make_source: Callable[..., AwsSpotPriceSource], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    source = make_source(endpoint_url=ec2.url)
    with pytest.raises(AwsSpotPricesUnavailable, match=r"aws/us-east-1: no AWS credentials found"):
        source.poll(wanted(("us-east-1", "g5.xlarge")), timeout_s=5, clock=clock)
    assert ec2.requests == []  # nothing unsigned ever left


def test_garbage_answer_raises(ec2: _FakeEc2, make_source: Callable[..., AwsSpotPriceSource]) -> None:
    ec2.modes["us-east-1"] = "garbage"
    source = make_source(endpoint_url=ec2.url)
    started = time.monotonic()
    with pytest.raises(AwsSpotPricesUnavailable, match=r"aws/us-east-1: unreadable answer \(not EC2 XML\)"):
        source.poll(wanted(("us-east-1", "g5.xlarge")), timeout_s=5, clock=clock)
    assert time.monotonic() - started < 5
    assert len(ec2.seen("us-east-1")) == 1  # an unparsable answer is not retried (standard mode)


def test_silent_server_times_out_on_the_fail_fast_client_timeouts(
    make_source: Callable[..., AwsSpotPriceSource],
) -> None:
    with SilentServer() as silent:
        url = silent.url
        source = make_source(endpoint_url=url)
        source.client_for("us-east-1", timeout_s=1.0)  # built (service model loaded) before the clock starts
        started = time.monotonic()
        with pytest.raises(AwsSpotPricesUnavailable) as raised:
            source.poll(wanted(("us-east-1", "g5.xlarge")), timeout_s=1.0, clock=clock)
        elapsed = time.monotonic() - started
    # the client gave up by itself (0.25 s a read, two attempts), before the poll's own deadline
    assert elapsed < 2.0  # bounded (the SDK default would wait 60 s); slack for a loaded CI machine
    assert raised.value.problems == ("aws/us-east-1: timed out (ReadTimeoutError, 0.25s a call) (g5.xlarge)",)


def test_slow_pages_stop_at_the_poll_deadline(ec2: _FakeEc2, make_source: Callable[..., AwsSpotPriceSource]) -> None:
    # one entry a page, 0.15 s each: every page comes within the client's read timeout (0.3 s a
    # call), but the 13 pages (about 2 s) do not fit in the poll's 1.2 s
    ec2.page_size, ec2.delay_s = 1, 0.15
    source = make_source(endpoint_url=ec2.url)
    started = time.monotonic()
    with pytest.raises(AwsSpotPricesUnavailable) as raised:
        source.poll(wanted(("us-east-1", "g5.xlarge"), ("us-east-1", "g4dn.xlarge")), timeout_s=1.2, clock=clock)
    elapsed = time.monotonic() - started
    # the poll's deadline, not the sum of the pages (1.95 s); slack for a loaded CI machine
    assert 1.2 <= elapsed < 1.9
    (problem,) = raised.value.problems
    assert re.fullmatch(
        r"aws/us-east-1: (no answer within the poll's 1\.2s|ran out of time after \d+ pages)"
        r" \(g4dn\.xlarge, g5\.xlarge\)",
        problem,
    ), problem
    # how many pages fit depends on the machine's load; that not all 13 did is the point
    assert len(ec2.seen("us-east-1")) < 13


def test_no_wanted_offers_sends_nothing(ec2: _FakeEc2, make_source: Callable[..., AwsSpotPriceSource]) -> None:
    source = make_source(endpoint_url=ec2.url)
    assert source.poll(Wanted(azure_offers=(("eastus", "Standard_NC4as_T4_v3"),)), timeout_s=1, clock=clock) == (
        PollResult()
    )
    assert ec2.requests == []


def test_clients_are_cached_per_region_with_the_fail_fast_config(
    ec2: _FakeEc2, make_source: Callable[..., AwsSpotPriceSource]
) -> None:
    source = make_source(endpoint_url=ec2.url)
    east = source.client_for("us-east-1", timeout_s=2.0)
    assert source.client_for("us-east-1", timeout_s=2.0) is east
    assert source.client_for("eu-west-1", timeout_s=2.0) is not east
    config = east.meta.config
    assert (config.connect_timeout, config.read_timeout) == (0.5, 0.5)
    assert config.retries == {"total_max_attempts": 2, "mode": "standard"}
    assert (east.meta.region_name, east.meta.endpoint_url) == ("us-east-1", ec2.url)
    # a poll uses the cached client: two polls, one client per region
    source.poll(wanted(("us-east-1", "g5.xlarge")), timeout_s=2.0, clock=clock)
    assert source.client_for("us-east-1", timeout_s=2.0) is east


# --------------------------------------------------------------------------- pure parts


def test_current_zone_prices_tie_and_unusable_entries() -> None:
    when = datetime(2026, 11, 24, 1, 0, tzinfo=UTC)
    entry = {"InstanceType": "g5.xlarge", "AvailabilityZone": "us-east-1a", "Timestamp": when}
    history = [
        {**entry, "ProductDescription": "Linux/UNIX", "SpotPrice": "0.40"},
        # the same change under the VPC spelling, dearer: the higher is kept (never understate a cost)
        {**entry, "ProductDescription": "Linux/UNIX (Amazon VPC)", "SpotPrice": "0.42"},
        {**entry, "ProductDescription": "Linux/UNIX", "SpotPrice": "not a number"},
        {**entry, "ProductDescription": "Linux/UNIX", "SpotPrice": "0"},
        {**entry, "ProductDescription": "Linux/UNIX", "SpotPrice": "nan"},
        {"InstanceType": "g5.xlarge", "AvailabilityZone": "us-east-1b", "ProductDescription": "Linux/UNIX"},
        {**entry, "ProductDescription": "Windows (Amazon VPC)", "SpotPrice": "0.01"},
    ]
    prices, skipped = current_zone_prices(history)
    assert {key: zone.usd_per_hour for key, zone in prices.items()} == {("g5.xlarge", "us-east-1a"): 0.42}
    assert skipped == 4  # the Windows entry is not ours, not unusable


@pytest.mark.parametrize(
    ("description", "linux"),
    [
        ("Linux/UNIX", True),
        ("Linux/UNIX (Amazon VPC)", True),
        ("SUSE Linux", False),
        ("Red Hat Enterprise Linux (Amazon VPC)", False),
        ("Windows", False),
        ("linux/unix", False),
    ],
)
def test_is_linux(description: str, linux: bool) -> None:
    assert is_linux(description) is linux


def test_on_demand_reference_table() -> None:
    assert on_demand_price("us-east-1", "g5.xlarge") == 1.006
    assert on_demand_price("us-east-1", "g4dn.xlarge") == 0.526
    assert on_demand_price("us-east-1", "p5.48xlarge") is None  # not in the table: no guess
    assert on_demand_price("eu-west-1", "g5.xlarge") is None  # regions differ; only known ones listed
    assert all(0 < price < 10 for prices in ON_DEMAND_USD_H.values() for price in prices.values())
