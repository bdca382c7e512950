"""Spot price history and on-demand prices (simulator.prices), checked against a scan of the rows."""

from __future__ import annotations

import random
import tempfile
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from simulator.prices import COLUMNS, PriceKey, PriceSeries, load_price_series, parse_on_demand

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "policies" / "scenarios" / "prices" / "v100-spot-2023.csv"
HEADER = ",".join(COLUMNS)
T0 = datetime(2023, 2, 15, tzinfo=UTC)
TRACE_ZONES = {"us-east-1a", "us-east-1c", "us-east-1d", "us-east-1f", "us-east-2a", "us-east-2b"}
TRACE_ZONES |= {"us-west-2a", "us-west-2b", "us-west-2c"}


def _brute_price(rows: Sequence[tuple[datetime, float]], when: datetime) -> float | None:
    """The price of the latest row at or before ``when``, by looking at every row."""
    earlier = [row for row in rows if row[0] <= when]
    return max(earlier, key=lambda row: row[0])[1] if earlier else None


def _brute_next_change(rows: Sequence[tuple[datetime, float]], when: datetime) -> datetime | None:
    here = _brute_price(rows, when)
    for time in sorted({row[0] for row in rows if row[0] > when}):
        if _brute_price(rows, time) != here:
            return time
    return None


def _probe_times(rows: Sequence[tuple[datetime, float]]) -> list[datetime]:
    times = sorted({row[0] for row in rows})
    around = [time + delta for time in times for delta in (timedelta(seconds=-1), timedelta(0), timedelta(seconds=1))]
    return [times[0] - timedelta(days=1), *around, times[-1] + timedelta(days=365)]


def _write(tmp_path: Path, lines: Sequence[str]) -> Path:
    path = tmp_path / "prices.csv"
    path.write_text("\n".join([HEADER, *lines]) + "\n", encoding="utf-8")
    return path


@settings(max_examples=100, deadline=None)
@given(
    hours=st.lists(st.tuples(st.integers(0, 60), st.sampled_from([0.9, 0.95, 1.0, 1.2])), min_size=1, max_size=20),
    seed=st.integers(0, 1000),
)
def test_a_shuffled_file_answers_like_a_scan_of_its_rows(hours: list[tuple[int, float]], seed: int) -> None:
    # one price per hour mark: the same time twice with two prices is refused elsewhere
    rows = [(T0 + timedelta(hours=hour), price) for hour, price in dict(hours).items()]
    lines = [f"{when.isoformat()},aws,us-east-1a,p3.2xlarge,{price}" for when, price in rows]
    lines.append("2023-01-01T00:00:00Z,aws,us-west-2a,p3.2xlarge,0.5")
    random.Random(seed).shuffle(lines)
    with tempfile.TemporaryDirectory() as folder:
        series = load_price_series(_write(Path(folder), lines))
    for when in _probe_times(rows):
        assert series.price_at("aws", "us-east-1a", "p3.2xlarge", when) == _brute_price(rows, when), when
        found = series.next_change_after("aws", "us-east-1a", "p3.2xlarge", when)
        assert found == _brute_next_change(rows, when), when
        if found is not None:
            assert found > when
            assert series.price_at("aws", "us-east-1a", "p3.2xlarge", found) != series.price_at(
                "aws", "us-east-1a", "p3.2xlarge", when
            )


def test_prices_hold_until_the_next_row_of_the_same_key(tmp_path: Path) -> None:
    series = load_price_series(
        _write(
            tmp_path,
            [
                "2023-03-01T00:00:00Z,aws,us-east-1a,p3.2xlarge,1.10",
                "2023-02-15T00:00:00+00:00,aws,us-east-1a,p3.2xlarge,1.00",
                "2023-02-20T00:00:00Z,aws,us-east-1c,p3.2xlarge,0.80",
                # the same price again is no change
                "2023-03-05T00:00:00Z,aws,us-east-1a,p3.2xlarge,1.10",
                "2023-03-09T00:00:00Z,aws,us-east-1a,p3.2xlarge,1.05",
            ],
        )
    )
    key = ("aws", "us-east-1a", "p3.2xlarge")
    assert series.price_at(*key, datetime(2023, 2, 14, tzinfo=UTC)) is None
    assert series.price_at(*key, datetime(2023, 2, 15, tzinfo=UTC)) == 1.00
    assert series.price_at(*key, datetime(2023, 3, 6, tzinfo=UTC)) == 1.10
    assert series.price_at(*key, datetime(2030, 1, 1, tzinfo=UTC)) == 1.05
    assert series.next_change_after(*key, datetime(2023, 1, 1, tzinfo=UTC)) == datetime(2023, 2, 15, tzinfo=UTC)
    assert series.next_change_after(*key, datetime(2023, 3, 1, tzinfo=UTC)) == datetime(2023, 3, 9, tzinfo=UTC)
    assert series.next_change_after(*key, datetime(2023, 3, 9, tzinfo=UTC)) is None
    assert series.price_at("aws", "us-east-1c", "p3.2xlarge", datetime(2023, 2, 19, tzinfo=UTC)) is None
    assert series.keys() == (PriceKey(*key), PriceKey("aws", "us-east-1c", "p3.2xlarge"))


def test_unknown_keys_have_no_price_and_no_change(tmp_path: Path) -> None:
    series = load_price_series(_write(tmp_path, ["2023-02-15T00:00:00Z,aws,us-east-1a,p3.2xlarge,1"]))
    when = datetime(2023, 3, 1, tzinfo=UTC)
    assert series.price_at("aws", "us-east-1b", "p3.2xlarge", when) is None
    assert series.price_at("azure", "us-east-1a", "p3.2xlarge", when) is None
    assert series.next_change_after("aws", "us-east-1a", "g4dn.xlarge", when) is None


def test_timezones_are_compared_as_instants(tmp_path: Path) -> None:
    series = load_price_series(
        _write(
            tmp_path,
            [
                "2023-02-15T02:00:00+02:00,azure,eastus,Standard_NC6s_v3,0.6",
                "2023-02-15T01:00:00Z,azure,eastus,Standard_NC6s_v3,0.7",
            ],
        )
    )
    key = ("azure", "eastus", "Standard_NC6s_v3")
    # 02:00+02:00 is 00:00Z: the 0.6 row starts first
    assert series.price_at(*key, datetime(2023, 2, 15, 0, 30, tzinfo=UTC)) == 0.6
    eastern = timezone(timedelta(hours=-5))
    assert series.price_at(*key, datetime(2023, 2, 14, 20, 30, tzinfo=eastern)) == 0.7
    assert series.next_change_after(*key, datetime(2023, 2, 15, tzinfo=UTC)) == datetime(2023, 2, 15, 1, tzinfo=UTC)


def test_a_naive_question_is_refused(tmp_path: Path) -> None:
    series = load_price_series(_write(tmp_path, ["2023-02-15T00:00:00Z,aws,us-east-1a,p3.2xlarge,1"]))
    with pytest.raises(ValueError, match="timezone"):
        series.price_at("aws", "us-east-1a", "p3.2xlarge", datetime(2023, 3, 1))
    with pytest.raises(ValueError, match="timezone"):
        series.next_change_after("aws", "us-east-1a", "p3.2xlarge", datetime(2023, 3, 1))


def test_a_series_built_in_code_is_checked_too() -> None:
    key = PriceKey("aws", "us-east-1a", "p3.2xlarge")
    with pytest.raises(ValueError, match="two prices"):
        PriceSeries({key: [(T0, 1.0), (T0, 2.0)]})
    with pytest.raises(ValueError, match="non-negative"):
        PriceSeries({key: [(T0, float("nan"))]})
    with pytest.raises(ValueError, match="timezone"):
        PriceSeries({key: [(datetime(2023, 2, 15), 1.0)]})
    assert PriceSeries({key: [(T0, 1.0), (T0, 1.0)]}).price_at(*key, T0) == 1.0


def test_header_columns_may_come_in_any_order_and_a_bom_is_ignored(tmp_path: Path) -> None:
    path = tmp_path / "export.csv"
    path.write_text(
        "\ufeffprovider,region,instance_type,usd_per_hour,timestamp\r\n"
        "aws,us-west-2a,p3.2xlarge,0.918,2023-02-15T00:00:00Z\r\n\r\n",
        encoding="utf-8",
    )
    assert load_price_series(path).price_at("aws", "us-west-2a", "p3.2xlarge", T0) == 0.918


def test_the_shipped_example_covers_the_traces_zones_and_dates() -> None:
    series = load_price_series(EXAMPLE)
    keys = series.keys()
    aws = [key for key in keys if key.provider == "aws"]
    assert {key.region for key in aws} == TRACE_ZONES
    assert {key.instance_type for key in aws} == {"p3.2xlarge"}
    assert PriceKey("azure", "eastus", "Standard_NC6s_v3") in keys
    on_demand = parse_on_demand({"aws": {"p3.2xlarge": 3.06}, "azure": {"Standard_NC6s_v3": 3.06}})
    rows = EXAMPLE.read_text(encoding="utf-8").splitlines()[1:]
    assert 30 <= len(rows) <= 80
    for key in keys:
        for when in (T0, datetime(2023, 4, 30, 23, 59, tzinfo=UTC)):
            price = series.price_at(*key, when)
            assert price is not None, (key, when)
            # spot below on-demand, and in the published range for a V100 spot hour
            assert 0.3 < price < on_demand[(key.provider, key.instance_type)], key
        if key.provider == "aws":
            assert 0.9 <= (series.price_at(*key, T0) or 0) <= 1.25


def test_on_demand_prices_are_read_per_provider_and_type() -> None:
    prices = parse_on_demand({"aws": {"p3.2xlarge": 3.06, "g4dn.xlarge": 0.526}, "azure": {"Standard_NC6s_v3": 3}})
    assert dict(prices) == {
        ("aws", "p3.2xlarge"): 3.06,
        ("aws", "g4dn.xlarge"): 0.526,
        ("azure", "Standard_NC6s_v3"): 3.0,
    }
    assert len(prices) == 3
    assert prices.price("aws", "p3.2xlarge") == 3.06
    assert prices.price("aws", "p4d.24xlarge") is None
    assert parse_on_demand({}) == {}
