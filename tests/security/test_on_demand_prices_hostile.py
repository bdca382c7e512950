"""Hostile answers to the on-demand price sources: bad prices, not JSON, endless paging, links to elsewhere."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from controlplane.signals.aws_on_demand import AwsOnDemandPriceSource, AwsOnDemandPricesUnavailable, hourly_usd_prices
from controlplane.signals.azure_on_demand import AzureOnDemandPriceSource, AzureOnDemandPricesUnavailable
from controlplane.signals.azure_retail import select_price
from controlplane.signals.base import Wanted
from tests.fakes.aws_pricing import FakeAwsPricing, ec2_product
from tests.fakes.azure_prices import T4_4, FakeAzurePrices, vm_item
from tests.support.aws import isolate_aws_environment

pytestmark = pytest.mark.timeout(30)
NOW = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)
WANTED = Wanted(aws_on_demand_offers=(("us-east-1", "g5.xlarge"),))


@pytest.fixture(autouse=True)
def _aws_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    isolate_aws_environment(monkeypatch, tmp_path)


@pytest.mark.parametrize("price", ["-1.0", "NaN", "inf", "0", "", "1e400", "one dollar"])
def test_aws_unusable_prices_give_no_sample(price: str) -> None:
    entries = [json.dumps(ec2_product("us-east-1", "g5.xlarge", price))]
    assert hourly_usd_prices(entries, region="us-east-1", instance_type="g5.xlarge") == ([], 1)


def test_aws_non_usd_non_hourly_and_non_json_entries_are_skipped() -> None:
    entries = [
        json.dumps(ec2_product("us-east-1", "g5.xlarge", "0.9", currency="CNY")),
        json.dumps(ec2_product("us-east-1", "g5.xlarge", "0.9", unit="Quantity")),
        "{not json",
        "[1, 2]",
        json.dumps({"product": {"attributes": "x"}}),
        json.dumps(ec2_product("us-east-1", "g5.xlarge", "1.006")),
    ]
    assert hourly_usd_prices(entries, region="us-east-1", instance_type="g5.xlarge") == ([1.006], 5)


def test_aws_a_page_that_is_not_json_is_a_problem_not_a_crash() -> None:
    with FakeAwsPricing([]) as pricing, AwsOnDemandPriceSource(endpoint_url=pricing.url) as source:
        pricing.canned.extend([(200, b"<html>proxy error</html>")] * 2)
        # botocore reads a body that is not JSON as an answer without PriceList: no price, a problem
        result = source.poll(WANTED, timeout_s=5, clock=lambda: NOW)
        assert list(result.samples) == []
        assert result.problems == [
            "aws/us-east-1/g5.xlarge: no on-demand Linux hourly USD price listed (not offered in us-east-1?)"
        ]


def test_aws_endless_paging_is_bounded() -> None:
    products = [ec2_product("us-east-1", "g5.xlarge", "1.006")]
    with FakeAwsPricing(products) as pricing, AwsOnDemandPriceSource(endpoint_url=pricing.url, max_pages=3) as source:
        pricing.endless = True
        with pytest.raises(AwsOnDemandPricesUnavailable, match=r"more than 3 pages \(NextToken still set\)"):
            source.poll(WANTED, timeout_s=5, clock=lambda: NOW)
        assert len(pricing.requests) == 3


@pytest.mark.parametrize("price", [-0.5, float("nan"), float("inf"), 0, True, "0.5"])
def test_azure_unusable_prices_are_never_chosen(price: object) -> None:
    item = vm_item("eastus", T4_4, "NC4as T4 v3", "Virtual Machines NCasT4_v3 Series", 0.5)
    item["retailPrice"] = item["unitPrice"] = price
    assert select_price([item], region="eastus", size=T4_4, now=NOW, spot=False) is None


def test_azure_other_currencies_and_markets_are_not_the_on_demand_price() -> None:
    items = [
        vm_item("eastus", T4_4, "NC4as T4 v3", "Virtual Machines NCasT4_v3 Series", 0.4, currency="EUR"),
        vm_item("eastus", T4_4, "NC4as T4 v3 Spot", "Virtual Machines NCasT4_v3 Series", 0.1),
        vm_item("eastus", T4_4, "NC4as T4 v3 Low Priority", "Virtual Machines NCasT4_v3 Series", 0.1),
        vm_item("eastus", T4_4, "NC4as T4 v3", "Virtual Machines NCasT4_v3 Series Windows", 0.7),
    ]
    assert select_price(items, region="eastus", size=T4_4, now=NOW, spot=False) is None


@pytest.mark.parametrize(
    "link", ["http://169.254.169.254/latest/meta-data/", "http://example.invalid/api/retail/prices?$skip=2", 42]
)
def test_azure_a_next_page_link_elsewhere_is_not_followed(link: object) -> None:
    with FakeAzurePrices(page_size=1) as fake, AzureOnDemandPriceSource(base_url=fake.url) as source:
        fake.garbage(json.dumps({"Items": [], "NextPageLink": link}).encode(), times=1)
        with pytest.raises(AzureOnDemandPricesUnavailable, match="NextPageLink"):
            source.poll(Wanted(azure_on_demand_offers=(("eastus", T4_4),)), timeout_s=5, clock=lambda: NOW)
        assert len(fake.requests) == 1
