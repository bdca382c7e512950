"""Spot price history (a CSV of step functions) and on-demand list prices for the simulator.

The CSV has the shape EC2's spot price history and Azure's retail prices give::

    timestamp,provider,region,instance_type,usd_per_hour
    2023-02-15T00:00:00Z,aws,us-east-1a,p3.2xlarge,0.918

Rows may come in any order; per key ``(provider, region, instance_type)`` a
price holds from its timestamp until the next row of that key. See
docs/simulator.md, "Price history".

Public surface::

    load_price_series(path, *, max_bytes=MAX_PRICE_BYTES) -> PriceSeries
    PriceSeries.price_at(provider, region, instance_type, when) / next_change_after(...) / keys()
    parse_on_demand(document) -> OnDemandPrices     # {"aws": {"p3.2xlarge": 3.06}, ...}
    PriceError                                      # names the file, line and column, or the field
"""

from __future__ import annotations

import bisect
import csv
import io
import math
import re
from collections.abc import Iterator, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import NamedTuple

from simulator.input_files import InputFileRefused, read_capped

__all__ = [
    "COLUMNS",
    "MAX_PRICE_BYTES",
    "OnDemandPrices",
    "PriceError",
    "PriceKey",
    "PriceSeries",
    "load_price_series",
    "parse_on_demand",
]

#: the header a price file must carry (in any order, nothing more)
COLUMNS = ("timestamp", "provider", "region", "instance_type", "usd_per_hour")
#: a price file larger than this is refused before it is read (a year of hourly rows for 50 keys is ~25 MB)
MAX_PRICE_BYTES = 64 * 1024 * 1024

_PROVIDER = re.compile(r"[a-z][a-z0-9-]{0,31}")
# zones and regions (us-east-1a, eastus), instance types (p3.2xlarge, Standard_NC6s_v3)
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
# a plain decimal: float() alone would also take "nan", "inf" and "1_000"
_DECIMAL = re.compile(r"[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?")


class PriceError(ValueError):
    """A price file or document that cannot be used; the message names where (file, line, column or field)."""

    def __init__(self, where: str, problem: str, *, source: str = "") -> None:
        self.source = source
        self.where = where
        self.problem = problem
        super().__init__(": ".join(part for part in (source, where, problem) if part))


class PriceKey(NamedTuple):
    provider: str
    region: str
    instance_type: str


class _Steps(NamedTuple):
    """One key's price changes: ``times[i]`` starts ``prices[i]``; rows repeating the price are dropped."""

    times: tuple[datetime, ...]
    prices: tuple[float, ...]


class PriceSeries:
    """Per key, a step function of time: each price holds from its timestamp until the key's next one."""

    def __init__(self, points: Mapping[PriceKey, Sequence[tuple[datetime, float]]]) -> None:
        """``points`` per key, in any order; refuses naive times, bad prices and one time with two prices."""
        self._steps: dict[PriceKey, _Steps] = {}
        for key, rows in points.items():
            self._steps[PriceKey(*key)] = _steps_of(key, rows)

    def keys(self) -> tuple[PriceKey, ...]:
        return tuple(sorted(self._steps))

    def price_at(self, provider: str, region: str, instance_type: str, when: datetime) -> float | None:
        """USD per hour in force at ``when``; None for an unknown key or before the key's first row."""
        steps = self._steps.get(PriceKey(provider, region, instance_type))
        if steps is None:
            return None
        found = bisect.bisect_right(steps.times, _aware(when)) - 1
        return steps.prices[found] if found >= 0 else None

    def next_change_after(self, provider: str, region: str, instance_type: str, when: datetime) -> datetime | None:
        """The first time after ``when`` at which the key's price differs from the one at ``when`` (UTC)."""
        steps = self._steps.get(PriceKey(provider, region, instance_type))
        if steps is None:
            return None
        # steps hold only real changes (and the first row, a change from "no price"), so the next step is one
        found = bisect.bisect_right(steps.times, _aware(when))
        return steps.times[found] if found < len(steps.times) else None


def _aware(when: datetime) -> datetime:
    if when.tzinfo is None or when.utcoffset() is None:
        raise ValueError(f"a price time needs a timezone (got naive {when.isoformat()})")
    return when


def _steps_of(key: PriceKey, rows: Sequence[tuple[datetime, float]]) -> _Steps:
    ordered = sorted(((_aware(when).astimezone(UTC), price) for when, price in rows), key=lambda row: row[0])
    times: list[datetime] = []
    prices: list[float] = []
    previous: tuple[datetime, float] | None = None
    for when, price in ordered:
        if isinstance(price, bool) or not isinstance(price, int | float) or not math.isfinite(price) or price < 0:
            raise ValueError(f"{key}: price at {when.isoformat()} must be a non-negative number (got {price!r})")
        if previous is not None and previous[0] == when and previous[1] != price:
            raise ValueError(f"{key}: two prices at {when.isoformat()} ({previous[1]} and {price})")
        if not prices or prices[-1] != price:
            times.append(when)
            prices.append(float(price))
        previous = (when, price)
    return _Steps(tuple(times), tuple(prices))


def load_price_series(path: Path, *, max_bytes: int = MAX_PRICE_BYTES) -> PriceSeries:
    """A price history CSV, whole and checked, or :class:`PriceError` naming the file, line and column."""
    source = str(path)
    try:
        content = read_capped(path, max_bytes)
    except InputFileRefused as error:
        raise PriceError("", str(error), source=source) from error
    try:
        # utf-8-sig: spreadsheet exports start with a byte-order mark
        text = content.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise PriceError("", "not UTF-8 text", source=source) from error
    try:
        return _parse_rows(text)
    except PriceError as error:
        raise PriceError(error.where, error.problem, source=source) from error
    except csv.Error as error:
        raise PriceError("", f"not a CSV file ({error})", source=source) from error


def _parse_rows(text: str) -> PriceSeries:
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    columns = _header(reader)
    points: dict[PriceKey, list[tuple[datetime, float]]] = {}
    first_line: dict[tuple[PriceKey, datetime], tuple[int, float]] = {}
    for fields in reader:
        line = reader.line_num
        if not any(cell.strip() for cell in fields):
            continue
        if len(fields) != len(COLUMNS):
            raise PriceError(f"line {line}", f"expected {len(COLUMNS)} fields, got {len(fields)}")
        row = dict(zip(columns, fields, strict=True))
        key, when, price = _row(row, line)
        earlier = first_line.setdefault((key, when), (line, price))
        if earlier[1] != price:
            raise PriceError(
                f"line {line}",
                f"usd_per_hour: {price} differs from {earlier[1]} on line {earlier[0]} for the same key and timestamp",
            )
        points.setdefault(key, []).append((when, price))
    if not points:
        raise PriceError("", "no price rows after the header")
    return PriceSeries(points)


def _header(reader: Iterator[list[str]]) -> list[str]:
    header = next(reader, None)
    if header is None:
        raise PriceError("", "empty file (expected the header " + ",".join(COLUMNS) + ")")
    columns = [cell.strip() for cell in header]
    missing = [column for column in COLUMNS if column not in columns]
    extra = [column for column in columns if column not in COLUMNS]
    if missing or extra or len(columns) != len(COLUMNS):
        problems = [f"missing {', '.join(missing)}"] if missing else []
        problems += [f"unexpected {', '.join(repr(column) for column in extra)}"] if extra else []
        problems += [] if problems else ["a column named twice"]
        raise PriceError("line 1", f"header must be {','.join(COLUMNS)}: {'; '.join(problems)}")
    return columns


def _row(row: Mapping[str, str], line: int) -> tuple[PriceKey, datetime, float]:
    where = f"line {line}"
    provider = row["provider"].strip()
    if not _PROVIDER.fullmatch(provider):
        raise PriceError(where, f"provider: must be a lowercase name such as aws or azure (got {provider[:40]!r})")
    key = PriceKey(provider, _name(row, "region", where), _name(row, "instance_type", where))
    return key, _timestamp(row["timestamp"].strip(), where), _usd(row["usd_per_hour"].strip(), where)


def _name(row: Mapping[str, str], column: str, where: str) -> str:
    value = row[column].strip()
    if not _NAME.fullmatch(value):
        raise PriceError(where, f"{column}: must be letters, digits, '.', '_' or '-' (got {value[:40]!r})")
    return value


def _timestamp(text: str, where: str) -> datetime:
    try:
        when = datetime.fromisoformat(text)
    except ValueError as error:
        raise PriceError(where, f"timestamp: must be an ISO 8601 time (got {text[:40]!r})") from error
    if when.tzinfo is None or when.utcoffset() is None:
        raise PriceError(where, f"timestamp: must carry a timezone, Z or +00:00 (got {text[:40]!r})")
    return when.astimezone(UTC)


def _usd(text: str, where: str) -> float:
    price = float(text) if _DECIMAL.fullmatch(text) else math.nan
    if not math.isfinite(price) or price < 0:
        raise PriceError(where, f"usd_per_hour: must be a non-negative number (got {text[:40]!r})")
    return price


class OnDemandPrices(Mapping[tuple[str, str], float]):
    """On-demand USD per hour per ``(provider, instance_type)``: the same everywhere a type is offered."""

    def __init__(self, prices: Mapping[tuple[str, str], float]) -> None:
        self._prices = dict(prices)

    def __getitem__(self, key: tuple[str, str]) -> float:
        return self._prices[key]

    def __iter__(self) -> Iterator[tuple[str, str]]:
        return iter(self._prices)

    def __len__(self) -> int:
        return len(self._prices)

    def price(self, provider: str, instance_type: str) -> float | None:
        return self._prices.get((provider, instance_type))


def parse_on_demand(document: object, *, where: str = "on_demand") -> OnDemandPrices:
    """``{"aws": {"p3.2xlarge": 3.06}, "azure": {...}}`` checked; errors name the field (``on_demand.aws.X``)."""
    if not isinstance(document, Mapping):
        raise PriceError(where, "must be an object of provider -> {instance type: USD per hour}")
    prices: dict[tuple[str, str], float] = {}
    for provider, types in document.items():
        if not isinstance(provider, str) or not _PROVIDER.fullmatch(provider):
            raise PriceError(f"{where}.{provider}", "provider must be a lowercase name such as aws or azure")
        if not isinstance(types, Mapping):
            raise PriceError(f"{where}.{provider}", "must be an object of instance type -> USD per hour")
        for instance_type, price in types.items():
            field = f"{where}.{provider}.{instance_type}"
            if not isinstance(instance_type, str) or not _NAME.fullmatch(instance_type):
                raise PriceError(field, "instance type must be letters, digits, '.', '_' or '-'")
            if isinstance(price, bool) or not isinstance(price, int | float) or not math.isfinite(price) or price <= 0:
                raise PriceError(field, f"must be a positive number (got {price!r})")
            prices[(provider, instance_type)] = float(price)
    return OnDemandPrices(prices)
