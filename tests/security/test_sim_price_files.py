"""Hostile price files and on-demand documents: refused whole, naming the file, line and column or the field."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from simulator.prices import COLUMNS, MAX_PRICE_BYTES, PriceError, load_price_series, parse_on_demand
from tests.support.sim import write_input

HEADER = ",".join(COLUMNS)
GOOD = "2023-02-15T00:00:00Z,aws,us-east-1a,p3.2xlarge,1.15"


def _write(tmp_path: Path, text: str | bytes) -> Path:
    return write_input(tmp_path, "prices.csv", text)


@pytest.mark.parametrize(
    ("row", "column", "problem"),
    [
        ("2023-02-15T00:00:00Z,aws,us-east-1a,p3.2xlarge,-0.5", "usd_per_hour", "must be a non-negative number"),
        ("2023-02-15T00:00:00Z,aws,us-east-1a,p3.2xlarge,nan", "usd_per_hour", "must be a non-negative number"),
        ("2023-02-15T00:00:00Z,aws,us-east-1a,p3.2xlarge,inf", "usd_per_hour", "must be a non-negative number"),
        ("2023-02-15T00:00:00Z,aws,us-east-1a,p3.2xlarge,1e999", "usd_per_hour", "must be a non-negative number"),
        ("2023-02-15T00:00:00Z,aws,us-east-1a,p3.2xlarge,1_000", "usd_per_hour", "must be a non-negative number"),
        ("2023-02-15T00:00:00Z,aws,us-east-1a,p3.2xlarge,", "usd_per_hour", "must be a non-negative number"),
        ("2023-02-15T00:00:00Z,aws,us-east-1a,p3.2xlarge,$1.15", "usd_per_hour", "must be a non-negative number"),
        ("2023-02-15T00:00:00,aws,us-east-1a,p3.2xlarge,1.15", "timestamp", "must carry a timezone"),
        ("2023-02-15,aws,us-east-1a,p3.2xlarge,1.15", "timestamp", "must carry a timezone"),
        ("15/02/2023 00:00,aws,us-east-1a,p3.2xlarge,1.15", "timestamp", "must be an ISO 8601 time"),
        ("1676419200,aws,us-east-1a,p3.2xlarge,1.15", "timestamp", "must be an ISO 8601 time"),
        ("2023-02-15T00:00:00Z,AWS,us-east-1a,p3.2xlarge,1.15", "provider", "must be a lowercase name"),
        ("2023-02-15T00:00:00Z,,us-east-1a,p3.2xlarge,1.15", "provider", "must be a lowercase name"),
        ("2023-02-15T00:00:00Z,aws,../etc,p3.2xlarge,1.15", "region", "must be letters, digits"),
        ("2023-02-15T00:00:00Z,aws,us east 1a,p3.2xlarge,1.15", "region", "must be letters, digits"),
        ("2023-02-15T00:00:00Z,aws,us-east-1a,,1.15", "instance_type", "must be letters, digits"),
        ("2023-02-15T00:00:00Z,aws,us-east-1a,p3.2xlarge\x00,1.15", "instance_type", "must be letters, digits"),
    ],
)
def test_each_bad_cell_is_named_by_line_and_column(tmp_path: Path, row: str, column: str, problem: str) -> None:
    path = _write(tmp_path, f"{HEADER}\n{GOOD}\n{row}\n")
    with pytest.raises(PriceError) as caught:
        load_price_series(path)
    assert caught.value.where == "line 3"
    assert caught.value.problem.startswith(f"{column}: {problem}")
    assert str(caught.value).startswith(f"{path}: line 3: {column}: ")


@pytest.mark.parametrize(
    ("header", "problem"),
    [
        ("timestamp,provider,region,usd_per_hour", "missing instance_type"),
        (HEADER + ",currency", "unexpected 'currency'"),
        ("timestamp,provider,zone,instance_type,usd_per_hour", "missing region; unexpected 'zone'"),
        (HEADER + ",region", "a column named twice"),
        ("Timestamp,Provider,Region,InstanceType,SpotPrice", "missing timestamp"),
    ],
)
def test_a_header_that_is_not_the_five_columns_is_refused(tmp_path: Path, header: str, problem: str) -> None:
    path = _write(tmp_path, f"{header}\n{GOOD}\n")
    with pytest.raises(PriceError, match=r"prices\.csv: line 1: header must be") as caught:
        load_price_series(path)
    assert problem in caught.value.problem


def test_a_row_with_too_many_or_too_few_fields_is_refused(tmp_path: Path) -> None:
    for row, count in ((GOOD + ",USD", 6), ("2023-02-15T00:00:00Z,aws,us-east-1a,p3.2xlarge", 4)):
        with pytest.raises(PriceError, match=rf"prices\.csv: line 3: expected 5 fields, got {count}"):
            load_price_series(_write(tmp_path, f"{HEADER}\n{GOOD}\n{row}\n"))


def test_two_prices_for_one_key_and_time_are_refused_naming_both_lines(tmp_path: Path) -> None:
    rows = [
        GOOD,
        "2023-02-16T00:00:00Z,aws,us-east-1a,p3.2xlarge,1.2",
        "2023-02-15T00:00:00+00:00,aws,us-east-1a,p3.2xlarge,1.3",
    ]
    path = _write(tmp_path, "\n".join([HEADER, *rows]) + "\n")
    with pytest.raises(PriceError, match=r"prices\.csv: line 4: usd_per_hour: 1\.3 differs from 1\.15 on line 2"):
        load_price_series(path)
    # the same row twice (an export that overlaps) is harmless
    assert load_price_series(_write(tmp_path, f"{HEADER}\n{GOOD}\n{GOOD}\n")).keys()


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (b"", "empty file"),
        (b"\n", "header must be"),
        (HEADER.encode() + b"\n", "no price rows"),
        (HEADER.encode() + b"\n\n\n", "no price rows"),
        (HEADER.encode() + b"\n" + GOOD.encode() + b"\xff\n", "not UTF-8"),
        (HEADER.encode() + b'\n"2023-02-15T00:00:00Z",aws,"us-east-1a"x,p3.2xlarge,1\n', "not a CSV file"),
        (HEADER.encode() + b'\n"' + b"a" * (csv.field_size_limit() + 10) + b'",aws,x,y,1\n', "not a CSV file"),
    ],
    ids=["empty", "blank", "header-only", "blank-rows", "not-utf8", "bad-quote", "huge-field"],
)
def test_files_that_hold_no_usable_prices_are_refused(tmp_path: Path, content: bytes, problem: str) -> None:
    path = _write(tmp_path, content)
    with pytest.raises(PriceError, match=r"prices\.csv: ") as caught:
        load_price_series(path)
    assert problem in str(caught.value)


def test_an_oversize_file_is_refused_before_it_is_read(tmp_path: Path) -> None:
    path = tmp_path / "prices.csv"
    with path.open("wb") as stream:
        stream.truncate(MAX_PRICE_BYTES + 1)
    with pytest.raises(PriceError, match=rf"prices\.csv: file is {MAX_PRICE_BYTES + 1} bytes, over the cap"):
        load_price_series(path)
    small = _write(tmp_path, f"{HEADER}\n{GOOD}\n")
    with pytest.raises(PriceError, match="over the cap of 20"):
        load_price_series(small, max_bytes=20)


@pytest.mark.parametrize(
    ("document", "field", "problem"),
    [
        ([], "on_demand", "must be an object"),
        ({"aws": [3.06]}, "on_demand.aws", "must be an object"),
        ({"AWS": {"p3.2xlarge": 3.06}}, "on_demand.AWS", "provider must be a lowercase name"),
        ({"aws": {"p3.2xlarge": 0}}, "on_demand.aws.p3.2xlarge", "must be a positive number"),
        ({"aws": {"p3.2xlarge": -3.06}}, "on_demand.aws.p3.2xlarge", "must be a positive number"),
        ({"aws": {"p3.2xlarge": "3.06"}}, "on_demand.aws.p3.2xlarge", "must be a positive number"),
        ({"aws": {"p3.2xlarge": True}}, "on_demand.aws.p3.2xlarge", "must be a positive number"),
        ({"aws": {"p3.2xlarge": None}}, "on_demand.aws.p3.2xlarge", "must be a positive number"),
        ({"aws": {"p3.2xlarge": float("nan")}}, "on_demand.aws.p3.2xlarge", "must be a positive number"),
        ({"aws": {"p3.2xlarge": float("inf")}}, "on_demand.aws.p3.2xlarge", "must be a positive number"),
        ({"aws": {"p3 2xlarge": 3.06}}, "on_demand.aws.p3 2xlarge", "instance type must be"),
    ],
)
def test_on_demand_errors_name_the_field(document: object, field: str, problem: str) -> None:
    with pytest.raises(PriceError) as caught:
        parse_on_demand(document)
    assert caught.value.where == field
    assert str(caught.value).startswith(f"{field}: {problem}")


def test_on_demand_read_from_json_refuses_a_nan_price() -> None:
    # Python's json reads NaN; the check must not depend on the caller having refused it
    document = json.loads('{"azure": {"Standard_NC6s_v3": NaN}}')
    with pytest.raises(PriceError, match=r"^scenario\.on_demand\.azure\.Standard_NC6s_v3: must be a positive number"):
        parse_on_demand(document, where="scenario.on_demand")
