"""The on-demand price sources: ``aws_on_demand`` (real boto3 ``pricing`` client against tests/fakes/aws_pricing.py)
and ``azure_on_demand`` (against tests/fakes/azure_prices.py), over loopback HTTP; nothing patched.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from controlplane.domain import ON_DEMAND_PRICE_SOURCE
from controlplane.signals.aws_on_demand import AwsOnDemandPriceSource, AwsOnDemandPricesUnavailable
from controlplane.signals.azure_on_demand import AzureOnDemandPriceSource
from controlplane.signals.base import Wanted
from tests.fakes.aws_pricing import FakeAwsPricing, ec2_product
from tests.fakes.azure_prices import T4_4, T4_8, FakeAzurePrices
from tests.support.aws import isolate_aws_environment

pytestmark = pytest.mark.timeout(30)
NOW = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)

PRODUCTS = [
    ec2_product("us-east-1", "g5.xlarge", "1.0060000000"),
    ec2_product("us-east-1", "g5.xlarge", "1.8100000000", operatingSystem="Windows"),
    ec2_product("us-east-1", "g5.xlarge", "1.0060000000", tenancy="Dedicated"),
    ec2_product("us-east-1", "g5.xlarge", "0.0000000000", capacitystatus="UnusedCapacityReservation"),
    ec2_product("us-east-1", "g4dn.xlarge", "0.5260000000"),
    ec2_product("eu-west-1", "g4dn.xlarge", "0.5870000000"),
]


@pytest.fixture(autouse=True)
def _aws_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    isolate_aws_environment(monkeypatch, tmp_path)


@pytest.fixture
def pricing() -> Iterator[FakeAwsPricing]:
    with FakeAwsPricing(PRODUCTS, page_size=1) as server:
        yield server


def aws_wanted(*offers: tuple[str, str]) -> Wanted:
    return Wanted(aws_on_demand_offers=tuple(sorted(offers)))


def test_aws_list_prices_through_the_real_client(pricing: FakeAwsPricing) -> None:
    with AwsOnDemandPriceSource(endpoint_url=pricing.url) as source:
        wanted = aws_wanted(("us-east-1", "g5.xlarge"), ("us-east-1", "g4dn.xlarge"), ("eu-west-1", "g4dn.xlarge"))
        result = source.poll(wanted, timeout_s=5, clock=lambda: NOW)
    assert result.problems == []
    got = {(s.source, s.key): s.value for s in result.samples}
    assert got == {
        (ON_DEMAND_PRICE_SOURCE, "aws/us-east-1/g5.xlarge"): 1.006,
        (ON_DEMAND_PRICE_SOURCE, "aws/us-east-1/g4dn.xlarge"): 0.526,
        (ON_DEMAND_PRICE_SOURCE, "aws/eu-west-1/g4dn.xlarge"): 0.587,
    }
    assert all(s.observed_at == NOW and s.ttl_seconds == 86400 for s in result.samples)
    assert set(pricing.targets) == {"AWSPriceListService.GetProducts"}
    [first] = [r for r in pricing.requests if {"Field": "regionCode", "Type": "TERM_MATCH", "Value": "eu-west-1"}
               in r["Filters"]]  # fmt: skip
    assert first["ServiceCode"] == "AmazonEC2"
    assert {f["Field"]: f["Value"] for f in first["Filters"]} == {
        "instanceType": "g4dn.xlarge",
        "regionCode": "eu-west-1",
        "operatingSystem": "Linux",
        "tenancy": "Shared",
        "preInstalledSw": "NA",
        "capacitystatus": "Used",
        "licenseModel": "No License required",
    }
    assert all(f["Type"] == "TERM_MATCH" for f in first["Filters"])
    assert len(pricing.requests) == 3  # one query a (region, type): the filters leave one product each


def test_aws_follows_next_token_and_takes_the_highest_of_several_prices() -> None:
    two = [ec2_product("us-east-1", "g5.xlarge", "1.006"), ec2_product("us-east-1", "g5.xlarge", "1.1")]
    with FakeAwsPricing(two, page_size=1) as pricing, AwsOnDemandPriceSource(endpoint_url=pricing.url) as source:
        result = source.poll(aws_wanted(("us-east-1", "g5.xlarge")), timeout_s=5, clock=lambda: NOW)
        assert [s.value for s in result.samples] == [1.1]
        assert [r.get("NextToken") for r in pricing.requests] == [None, "1"]
        assert source.notes == ("aws/us-east-1/g5.xlarge: 2 on-demand prices listed, took the highest",)


def test_aws_nothing_wanted_asks_nothing(pricing: FakeAwsPricing) -> None:
    with AwsOnDemandPriceSource(endpoint_url=pricing.url) as source:
        assert (
            source.poll(Wanted(aws_offers=(("us-east-1", "g5.xlarge"),)), timeout_s=5, clock=lambda: NOW).samples == ()
        )
    assert pricing.requests == []


def test_aws_a_type_not_listed_is_a_problem_and_throttling_is_one_retry(pricing: FakeAwsPricing) -> None:
    with AwsOnDemandPriceSource(endpoint_url=pricing.url) as source:
        result = source.poll(aws_wanted(("us-east-1", "p5.48xlarge")), timeout_s=5, clock=lambda: NOW)
        assert list(result.samples) == []
        assert result.problems == [
            "aws/us-east-1/p5.48xlarge: no on-demand Linux hourly USD price listed (not offered in us-east-1?)"
        ]
        pricing.throttle(times=2)
        with pytest.raises(AwsOnDemandPricesUnavailable, match="throttled by the Price List API"):
            source.poll(aws_wanted(("us-east-1", "g4dn.xlarge")), timeout_s=5, clock=lambda: NOW)


def test_aws_endpoint_down_is_unavailable() -> None:
    source = AwsOnDemandPriceSource(endpoint_url="http://127.0.0.1:9")
    with source, pytest.raises(AwsOnDemandPricesUnavailable, match="cannot connect"):
        source.poll(aws_wanted(("us-east-1", "g4dn.xlarge")), timeout_s=2, clock=lambda: NOW)


def test_azure_takes_the_regular_linux_meter() -> None:
    with FakeAzurePrices(page_size=2) as fake, AzureOnDemandPriceSource(base_url=fake.url) as source:
        wanted = Wanted(
            azure_on_demand_offers=(("eastus", T4_4), ("westeurope", T4_8)),
            azure_offers=(("eastus", "Standard_NC24ads_A100_v4"),),
        )
        result = source.poll(wanted, timeout_s=5, clock=lambda: NOW)
    assert result.problems == []
    # not the Spot, Low Priority, Windows, DevTest or Reservation meters of the same sizes
    assert {(s.source, s.key): s.value for s in result.samples} == {
        (ON_DEMAND_PRICE_SOURCE, f"azure/eastus/{T4_4}"): 0.526,
        (ON_DEMAND_PRICE_SOURCE, f"azure/westeurope/{T4_8}"): 0.882,
    }
    assert all(s.ttl_seconds == 86400 for s in result.samples)
