"""``AzureSpotPriceSource`` against the fake Retail Prices API, over loopback HTTP.

The source is the real one with its own httpx client; only the base URL
points at :class:`tests.fakes.azure_prices.FakeAzurePrices`. The catalogue
lists, for each GPU size, the regular, Windows, Low Priority, reservation,
dev/test and Spot meters, with Low Priority and a secondary-region Spot meter
priced *below* Spot Linux: a client that takes the wrong meter gets a wrong
number, so every price assertion here can fail.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email.utils import formatdate
from typing import Any

import httpx
import pytest

from controlplane.domain import SPOT_PRICE_SOURCE
from controlplane.signals.azure_spot import (
    DEFAULT_TTL_SECONDS,
    AzureSpotPriceSource,
    AzureSpotPricesUnavailable,
    build_filter,
    select_spot_price,
)
from controlplane.signals.base import PollResult, Wanted
from tests.fakes.azure_prices import A100, SPOT_LINUX, T4_4, T4_8, FakeAzurePrices, vm_item

pytestmark = pytest.mark.timeout(30)

NOW = datetime(2025, 1, 15, 12, 0, tzinfo=UTC)
PRICED = tuple(sorted(SPOT_LINUX))  # every (region, size) the catalogue prices on Spot Linux
EXPECTED = {f"azure/{region}/{size}": price for (region, size), price in SPOT_LINUX.items()}


def clock() -> datetime:
    return NOW


def wanted(*offers: tuple[str, str]) -> Wanted:
    return Wanted(azure_offers=tuple(sorted(offers)))


def prices(result: PollResult) -> dict[str, float]:
    return {sample.key: sample.value for sample in result.samples}


@pytest.fixture(autouse=True)
def _no_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    # the source's default client honours proxy settings (right in production); a proxy in the
    # test environment must not stand between it and 127.0.0.1
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def fake() -> Iterator[FakeAzurePrices]:
    # two items a page: every region's answer spans several pages, and Spot Linux sits on a late one
    with FakeAzurePrices(page_size=2) as server:
        yield server


@pytest.fixture
def source(fake: FakeAzurePrices) -> Iterator[AzureSpotPriceSource]:
    with AzureSpotPriceSource(base_url=fake.url) as spot:
        yield spot


# ---- prices -------------------------------------------------------------------------------


def test_takes_the_spot_linux_price_of_every_offer(fake: FakeAzurePrices, source: AzureSpotPriceSource) -> None:
    result = source.poll(wanted(*PRICED), timeout_s=10, clock=clock)

    # eastus NC4as: Spot Linux 0.1578; not Low Priority 0.1052, the secondary meter 0.1199,
    # Spot Windows 0.3418, regular 0.526, dev/test 0.526 or the reservation's term price
    assert prices(result) == EXPECTED
    assert prices(result)[f"azure/eastus/{T4_4}"] == 0.1578
    assert list(result.problems) == []
    for sample in result.samples:
        assert sample.source == SPOT_PRICE_SOURCE
        assert sample.observed_at == NOW
        assert sample.ttl_seconds == DEFAULT_TTL_SECONDS
    # two Spot Linux meters of NC8as in eastus (0.2412 and 0.2256): the lowest, and a note saying so
    assert prices(result)[f"azure/eastus/{T4_8}"] == 0.2256
    assert source.notes == (f"azure/eastus/{T4_8}: 2 Spot Linux prices listed, took the lowest",)


def test_sends_one_filter_per_region_with_the_documented_parameters(
    fake: FakeAzurePrices, source: AzureSpotPriceSource
) -> None:
    source.poll(wanted(*PRICED), timeout_s=10, clock=clock)

    first_pages = [r for r in fake.requests if "$skip" not in r.query]
    assert [sorted(r.regions) for r in first_pages] == [["eastus"], ["westeurope"]]
    assert first_pages[0].filter == (
        "serviceName eq 'Virtual Machines' and priceType eq 'Consumption' and armRegionName eq 'eastus' "
        f"and (armSkuName eq '{A100}' or armSkuName eq '{T4_4}' or armSkuName eq '{T4_8}')"
    )
    for request in fake.requests:
        assert request.method == "GET"
        assert request.status == 200
        assert request.query["api-version"] == ["2023-01-01-preview"]
        assert request.query["meterRegion"] == ["'primary'"]


def test_follows_next_page_links_to_the_last_page(fake: FakeAzurePrices, source: AzureSpotPriceSource) -> None:
    result = source.poll(wanted(("eastus", T4_4)), timeout_s=10, clock=clock)

    # NC4as in eastus: 6 primary Consumption meters at 2 a page; Spot Linux is the 6th, on page 3
    skips = [r.query.get("$skip", ["0"])[0] for r in fake.requests]
    assert skips == ["0", "2", "4"]
    assert prices(result) == {f"azure/eastus/{T4_4}": 0.1578}


def test_one_page_when_the_page_holds_everything(fake: FakeAzurePrices) -> None:
    with FakeAzurePrices(page_size=1000) as roomy, AzureSpotPriceSource(base_url=roomy.url) as spot:
        result = spot.poll(wanted(*PRICED), timeout_s=10, clock=clock)

        assert prices(result) == EXPECTED
        assert len(roomy.requests) == 2  # one request per region, no paging


def test_too_many_pages_is_a_problem_not_a_partial_price(fake: FakeAzurePrices) -> None:
    with AzureSpotPriceSource(base_url=fake.url, max_pages=2) as spot:
        result = spot.poll(wanted(("eastus", T4_4), ("westeurope", A100)), timeout_s=10, clock=clock)

    # eastus NC4as needs 3 pages: refused rather than priced from the first 2 (which lack Spot Linux);
    # westeurope A100 (Low Priority-less, 4 meters) fits in 2
    assert prices(result) == {f"azure/westeurope/{A100}": 1.3660}
    assert len(result.problems) == 1
    assert result.problems[0].startswith("azure/eastus: more than 2 pages")
    assert len([r for r in fake.requests if "eastus" in r.regions]) == 2


def test_a_size_with_only_windows_spot_is_a_gap_not_the_windows_price(source: AzureSpotPriceSource) -> None:
    result = source.poll(wanted(("westeurope", T4_8), ("westeurope", T4_4)), timeout_s=10, clock=clock)

    assert prices(result) == {f"azure/westeurope/{T4_4}": 0.1851}
    assert list(result.problems) == [f"azure/westeurope/{T4_8}: no Spot Linux hourly USD price listed"]


def test_many_sizes_are_split_into_requests_of_bounded_length(fake: FakeAzurePrices) -> None:
    sizes = [f"Standard_NC{n}as_T4_v3" for n in (4, 8, 16, 64)] + [f"Standard_ND{n}_v9" for n in range(6)]
    with AzureSpotPriceSource(base_url=fake.url, sizes_per_request=4) as spot:
        result = spot.poll(wanted(*[("eastus", size) for size in sizes]), timeout_s=10, clock=clock)

    first_pages = [r for r in fake.requests if "$skip" not in r.query]
    assert len(first_pages) == 3  # 10 sizes, 4 a request
    assert all(r.status == 200 for r in fake.requests)  # the fake parsed every filter
    assert prices(result) == {f"azure/eastus/{T4_4}": 0.1578, f"azure/eastus/{T4_8}": 0.2256}
    assert len(result.problems) == 8  # the sizes the catalogue does not price


def test_nothing_wanted_asks_nothing(fake: FakeAzurePrices, source: AzureSpotPriceSource) -> None:
    assert source.poll(Wanted(aws_offers=(("us-east-1", "g4dn.xlarge"),)), timeout_s=1, clock=clock) == PollResult()
    assert fake.requests == []


# ---- throttling ------------------------------------------------------------------------


def test_429_with_retry_after_is_waited_out_within_the_budget(
    fake: FakeAzurePrices, source: AzureSpotPriceSource
) -> None:
    fake.throttle(retry_after="1", times=1)

    started = time.monotonic()
    result = source.poll(wanted(*PRICED), timeout_s=10, clock=clock)
    elapsed = time.monotonic() - started

    assert prices(result) == EXPECTED
    assert list(result.problems) == []
    throttled, retried = fake.requests[0], fake.requests[1]
    assert throttled.status == 429
    assert retried.status == 200
    assert retried.query == throttled.query  # the same page again
    assert retried.at - throttled.at >= 0.99  # Retry-After: 1 was honoured, not skipped
    assert 1.0 <= elapsed < 5.0


def test_retry_after_beyond_the_budget_gives_up_that_region_at_once(
    fake: FakeAzurePrices, source: AzureSpotPriceSource
) -> None:
    fake.throttle(retry_after="60", times=None, region="eastus")

    started = time.monotonic()
    result = source.poll(wanted(*PRICED), timeout_s=3, clock=clock)
    elapsed = time.monotonic() - started

    assert elapsed < 2.0  # no waiting for a retry that could not happen in time
    assert prices(result) == {k: v for k, v in EXPECTED.items() if k.startswith("azure/westeurope/")}
    assert len(result.problems) == 1
    assert result.problems[0].startswith("azure/eastus: throttled (HTTP 429, Retry-After 60s)")
    assert len([r for r in fake.requests if "eastus" in r.regions]) == 1


def test_a_region_throttled_again_and_again_is_given_up_after_the_retry_limit(fake: FakeAzurePrices) -> None:
    fake.throttle(retry_after="0", times=None, region="westeurope")

    with AzureSpotPriceSource(base_url=fake.url, max_throttle_retries=2) as spot:
        result = spot.poll(wanted(*PRICED), timeout_s=10, clock=clock)

    assert prices(result) == {k: v for k, v in EXPECTED.items() if k.startswith("azure/eastus/")}
    assert [p.split(" (")[0] for p in result.problems] == ["azure/westeurope: throttled"]
    assert "3 times" in result.problems[0]
    assert len([r for r in fake.requests if "westeurope" in r.regions]) == 3


def test_429_without_retry_after_waits_a_default_second(fake: FakeAzurePrices, source: AzureSpotPriceSource) -> None:
    fake.throttle(retry_after=None, times=1)

    result = source.poll(wanted(("eastus", T4_4)), timeout_s=10, clock=clock)

    assert prices(result) == {f"azure/eastus/{T4_4}": 0.1578}
    assert fake.requests[1].at - fake.requests[0].at >= 0.99


def test_retry_after_as_an_http_date_is_measured_from_the_answers_date(fake: FakeAzurePrices) -> None:
    # the fake's Date header is the time of its answer (whole seconds, like the HTTP date here)
    waits: list[float] = []
    fake.throttle(retry_after=formatdate(time.time() + 2, usegmt=True), times=1)
    with AzureSpotPriceSource(base_url=fake.url, sleep=waits.append) as spot:
        result = spot.poll(wanted(("eastus", T4_4)), timeout_s=10, clock=clock)

    assert prices(result) == {f"azure/eastus/{T4_4}": 0.1578}
    assert len(waits) == 1
    assert 1.0 <= waits[0] <= 3.0


def test_retry_after_as_a_far_http_date_is_a_problem_without_sleeping(fake: FakeAzurePrices) -> None:
    waits: list[float] = []
    fake.throttle(retry_after="Wed, 21 Oct 2037 07:28:00 GMT", times=1)
    with AzureSpotPriceSource(base_url=fake.url, sleep=waits.append) as spot:  # noqa: SIM117
        with pytest.raises(AzureSpotPricesUnavailable, match=r"HTTP 429, Retry-After .+s\), more than the"):
            spot.poll(wanted(("eastus", T4_4)), timeout_s=3, clock=clock)
    assert waits == []


# ---- failures ----------------------------------------------------------------------------


def test_500_for_one_region_is_a_problem_and_the_other_region_is_priced(
    fake: FakeAzurePrices, source: AzureSpotPriceSource
) -> None:
    fake.fail(status=500, region="westeurope")

    result = source.poll(wanted(*PRICED), timeout_s=10, clock=clock)

    assert prices(result) == {k: v for k, v in EXPECTED.items() if k.startswith("azure/eastus/")}
    assert len(result.problems) == 1
    assert result.problems[0].startswith("azure/westeurope: HTTP 500: ")
    assert f"{T4_4}" in result.problems[0]


def test_500_everywhere_raises(fake: FakeAzurePrices, source: AzureSpotPriceSource) -> None:
    fake.fail(status=503)

    with pytest.raises(AzureSpotPricesUnavailable) as raised:
        source.poll(wanted(*PRICED), timeout_s=10, clock=clock)

    assert [p.split(":")[0] for p in raised.value.problems] == ["azure/eastus", "azure/westeurope"]
    assert all("HTTP 503" in p for p in raised.value.problems)


def test_a_slow_api_is_cut_off_at_the_poll_timeout(fake: FakeAzurePrices, source: AzureSpotPriceSource) -> None:
    fake.slow(5.0)

    started = time.monotonic()
    with pytest.raises(AzureSpotPricesUnavailable) as raised:
        source.poll(wanted(*PRICED), timeout_s=1.0, clock=clock)
    elapsed = time.monotonic() - started

    assert 0.9 <= elapsed < 2.5  # the whole poll, both regions, within its budget (slack for CI load)
    assert raised.value.problems[0].startswith("azure/eastus: timed out")
    assert raised.value.problems[1].startswith("azure/westeurope: poll timed out")
    assert len(fake.requests) <= 1  # westeurope was not even asked (the fake records on answering)


def test_a_slow_answer_within_the_budget_is_waited_for(fake: FakeAzurePrices) -> None:
    fake.slow(0.5, times=1, region="eastus")

    started = time.monotonic()
    with AzureSpotPriceSource(base_url=fake.url) as spot:
        result = spot.poll(wanted(*PRICED), timeout_s=2, clock=clock)

    assert prices(result) == EXPECTED  # slow but within the budget is fine
    assert 0.5 <= time.monotonic() - started < 2.0


def test_a_garbage_body_is_an_error(fake: FakeAzurePrices, source: AzureSpotPriceSource) -> None:
    fake.garbage()

    with pytest.raises(AzureSpotPricesUnavailable, match=r"not JSON\): <html><body><h1>Service Unavailable"):
        source.poll(wanted(*PRICED), timeout_s=10, clock=clock)


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        (b'{"Items": [], "NextPageLink": nu', "unreadable answer (not JSON)"),
        (b'{"items": []}', "malformed answer: no Items list"),
        (b"[1, 2, 3]", "malformed answer: not a JSON object"),
        (b'{"Items": [], "NextPageLink": 7}', "malformed answer: NextPageLink is not a string"),
        (b'{"Items": [], "NextPageLink": "https://prices.example.net/next"}', "NextPageLink leaves"),
    ],
)
def test_a_malformed_page_for_one_region_is_a_problem(
    fake: FakeAzurePrices, source: AzureSpotPriceSource, body: bytes, problem: str
) -> None:
    fake.garbage(body, region="eastus")

    result = source.poll(wanted(*PRICED), timeout_s=10, clock=clock)

    assert prices(result) == {k: v for k, v in EXPECTED.items() if k.startswith("azure/westeurope/")}
    assert len(result.problems) == 1
    assert result.problems[0].startswith(f"azure/eastus: {problem}")


def test_api_down_raises_quickly_and_recovers_after_restart(
    fake: FakeAzurePrices, source: AzureSpotPriceSource
) -> None:
    assert prices(source.poll(wanted(*PRICED), timeout_s=10, clock=clock)) == EXPECTED
    port = fake.port
    fake.stop()

    started = time.monotonic()
    with pytest.raises(AzureSpotPricesUnavailable, match="ConnectError"):
        source.poll(wanted(*PRICED), timeout_s=10, clock=clock)
    assert time.monotonic() - started < 2.0  # refused, not waited out

    fake.start()
    assert fake.port == port
    later = NOW + timedelta(minutes=5)
    result = source.poll(wanted(*PRICED), timeout_s=10, clock=lambda: later)
    assert prices(result) == EXPECTED
    assert {sample.observed_at for sample in result.samples} == {later}


def test_a_price_change_shows_on_the_next_poll(fake: FakeAzurePrices, source: AzureSpotPriceSource) -> None:
    assert prices(source.poll(wanted(("eastus", A100)), timeout_s=10, clock=clock)) == {f"azure/eastus/{A100}": 1.1019}
    fake.set_items([vm_item("eastus", A100, "NC24ads A100 v4 Spot", "Virtual Machines NCadsA100v4 Series", 0.9876)])

    assert prices(source.poll(wanted(("eastus", A100)), timeout_s=10, clock=clock)) == {f"azure/eastus/{A100}": 0.9876}


# ---- the fake is as strict as the API ------------------------------------------------------


def _get(fake: FakeAzurePrices, query: str) -> httpx.Response:
    with httpx.Client(trust_env=False) as client:
        return client.get(f"{fake.url}?{query}")


@pytest.mark.parametrize(
    "odata",
    [
        "armSkuName ne 'x'",
        "contains(skuName, 'Spot')",
        "armRegionName eq 'eastus' and",
        "(armRegionName eq 'eastus'",
        "regionName eq 'eastus'",
        "armRegionName eq 'eastus",
        "retailPrice eq 0.1",
    ],
)
def test_the_fake_refuses_filters_outside_its_subset(fake: FakeAzurePrices, odata: str) -> None:
    response = _get(fake, f"api-version=2023-01-01-preview&$filter={odata}")

    assert response.status_code == 400
    assert response.json()["Error"]["Code"] == "BadRequest"


def test_the_fake_compares_values_case_sensitively_from_the_2023_version(fake: FakeAzurePrices) -> None:
    odata = "serviceName eq 'virtual machines' and armRegionName eq 'eastus' and armSkuName eq 'Standard_NC4as_T4_v3'"

    assert _get(fake, f"api-version=2023-01-01-preview&$filter={odata}").json()["Items"] == []
    assert _get(fake, f"api-version=2021-10-01-preview&$filter={odata}").json()["Count"] == 2  # page_size 2


def test_build_filter_quotes_values_and_groups_sizes() -> None:
    assert build_filter("eastus", ["it's"]) == (
        "serviceName eq 'Virtual Machines' and priceType eq 'Consumption' and armRegionName eq 'eastus' "
        "and armSkuName eq 'it''s'"
    )
    with pytest.raises(ValueError, match="at least one"):
        build_filter("eastus", [])


# ---- choosing among items ------------------------------------------------------------------


def _spot(**changes: Any) -> dict[str, Any]:
    item = vm_item("eastus", T4_4, "NC4as T4 v3 Spot", "Virtual Machines NCasT4_v3 Series", 0.5)
    item.update(changes)
    return item


@pytest.mark.parametrize(
    "odd",
    [
        {"currencyCode": "EUR", "retailPrice": 0.01},
        {"unitOfMeasure": "1/Day", "retailPrice": 0.01},
        {"type": "DevTestConsumption", "retailPrice": 0.01},
        {"effectiveStartDate": "2025-02-01T00:00:00Z", "retailPrice": 0.01},  # not in effect yet at NOW
        {"retailPrice": 0.0},
        {"retailPrice": True},
        {"retailPrice": "0.01"},
        {"skuName": "NC4as T4 v3 Spotless", "retailPrice": 0.01},
        {"productName": "Virtual Machines NCasT4_v3 Series Windows", "retailPrice": 0.01},
        {"armSkuName": T4_8, "retailPrice": 0.01},
        {"armRegionName": "westeurope", "retailPrice": 0.01},
    ],
)
def test_items_that_are_not_a_spot_linux_hourly_usd_price_are_ignored(odd: dict[str, Any]) -> None:
    choice = select_spot_price([_spot(), _spot(**odd)], region="eastus", size=T4_4, now=NOW)

    assert choice is not None
    assert choice.price == 0.5
    assert choice.candidates == 1


def test_no_candidate_is_none() -> None:
    assert select_spot_price([_spot(skuName="NC4as T4 v3")], region="eastus", size=T4_4, now=NOW) is None


def test_the_fake_pages_link_back_to_itself(fake: FakeAzurePrices) -> None:
    body = json.loads(_get(fake, "api-version=2023-01-01-preview&$filter=armRegionName eq 'eastus'").content)

    assert body["Count"] == 2
    assert body["NextPageLink"].startswith(f"{fake.url}?")
    assert body["NextPageLink"].endswith("&$skip=2")
