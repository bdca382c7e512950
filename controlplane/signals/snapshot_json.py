"""The signals snapshot as JSON, and back (docs/policies.md, "Signals snapshot JSON").

A snapshot document is what an operator writes by hand for ``fusionctl plan``
and ``POST /v1/plan``, and what :func:`snapshot_to_json` writes for a live
snapshot so that a decision can be replayed offline::

    {"taken_at": "2026-11-24T12:00:00Z",
     "gpu_utilization": {"local": 0.93, "k8s": {"value": 0.4, "observed_at": "2026-11-24T11:59:50Z"}},
     "free_gpus": {"local": 0, "k8s": 3},
     "spot_prices": [{"provider": "aws", "region": "us-east-1", "instance_type": "g5.xlarge",
                      "usd_per_hour": 0.41, "observed_at": "2026-11-24T11:58:00Z"}],
     "queue_depth": 120,
     "budget_spent_today_usd": 12.5}

Samples are named the way ``plan()`` reads them (``free_gpus/<target>``,
``spot_price/<provider>/<region|->/<type|->``, ...); the mapping name is what
the engine consults, so it is what the JSON keeps. Every error is a
:class:`SnapshotError` naming the JSON path of the bad field.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from controlplane.domain import (
    BUDGET_SOURCE,
    CAPACITY_SOURCE,
    CLOUD_PROVIDERS,
    GPU_UTILIZATION_SOURCE,
    QUEUE_SOURCE,
    SPOT_PRICE_SOURCE,
    SignalSample,
    SignalSnapshot,
    spot_price_key,
)
from controlplane.domain.fields import FieldError, json_path, json_type_name, loads_document, read_document

__all__ = [
    "MAX_SNAPSHOT_BYTES",
    "SnapshotError",
    "load_snapshot_file",
    "loads_snapshot",
    "parse_time",
    "snapshot_from_json",
    "snapshot_to_json",
]

#: thousands of prices fit easily; anything bigger is a mistake (or an attack on the API)
MAX_SNAPSHOT_BYTES = 4 << 20

_QUEUE_KEY = "depth"
_BUDGET_KEY = "spent_today_usd"
#: the policy's target-name syntax: a snapshot key a policy cannot name would never be read
_TARGET = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,62}$")
#: a region or instance type: '/' would make the spot_price key ambiguous, '-' means "unknown" there
_PART = re.compile(r"^[^/\s]{1,128}$")

_TOP_FIELDS = frozenset(
    {"taken_at", "gpu_utilization", "free_gpus", "spot_prices", "queue_depth", "budget_spent_today_usd", "other"}
)
_READING_FIELDS = frozenset({"value", "observed_at", "ttl_seconds"})
_PRICE_FIELDS = frozenset({"provider", "region", "instance_type", "usd_per_hour", "observed_at", "ttl_seconds"})
_OTHER_FIELDS = frozenset({"source", "key", "value", "observed_at", "ttl_seconds"})
#: the per-target sections: sample source -> the document's field
_PER_TARGET = {GPU_UTILIZATION_SOURCE: "gpu_utilization", CAPACITY_SOURCE: "free_gpus"}


#: a value check: (raw value, its JSON path) -> the number, or SnapshotError
_Check = Callable[[Any, str], float]


class SnapshotError(FieldError):
    """A snapshot document that is not valid; ``path`` is the JSON path of the bad field."""


# -- checks -----------------------------------------------------------------------------------------


def _object(value: Any, path: str, allowed: frozenset[str]) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise SnapshotError(path, f"must be an object, not {json_type_name(value)}")
    for key in sorted(value, key=str):
        if key not in allowed:
            raise SnapshotError(json_path(path, str(key)), f"unknown field (allowed: {', '.join(sorted(allowed))})")
    return value


def _number(value: Any, path: str) -> float:
    # bool is an int in Python but never a measurement; NaN/Infinity are not JSON
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise SnapshotError(path, f"must be a number, not {json_type_name(value)}")
    try:
        number = float(value)
    except OverflowError as exc:
        raise SnapshotError(path, "is too large") from exc
    if not math.isfinite(number):
        raise SnapshotError(path, "must be a finite number")
    return number


def _fraction(value: Any, path: str) -> float:
    number = _number(value, path)
    if not 0.0 <= number <= 1.0:
        raise SnapshotError(path, "must be within 0..1")
    return number


def _non_negative(value: Any, path: str) -> float:
    number = _number(value, path)
    if number < 0:
        raise SnapshotError(path, "must be a number >= 0")
    return number


def _positive(value: Any, path: str) -> float:
    number = _number(value, path)
    if number <= 0:
        raise SnapshotError(path, "must be a positive number")
    return number


def parse_time(value: Any, path: str) -> datetime:
    """An ISO 8601 time with a zone (``2026-11-24T12:00:00Z``), in UTC; :class:`SnapshotError` otherwise."""
    if not isinstance(value, str):
        raise SnapshotError(path, f"must be an ISO 8601 time string, not {json_type_name(value)}")
    try:
        moment = datetime.fromisoformat(value)
    except ValueError as exc:
        raise SnapshotError(path, f"is not an ISO 8601 time: {value!r}") from exc
    if moment.tzinfo is None or moment.utcoffset() is None:
        # a zoneless time means a different instant on every machine that reads it
        raise SnapshotError(path, "needs a time zone (e.g. 2026-11-24T12:00:00Z)")
    try:
        return moment.astimezone(UTC)
    except OverflowError as exc:  # 9999-12-31T23:00:00-05:00 is past the last representable UTC time
        raise SnapshotError(path, "is out of range") from exc


def _time_text(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


# -- reading ----------------------------------------------------------------------------------------


class _Reader:
    """Builds the samples of one document, checking each against ``taken_at``."""

    def __init__(self, taken_at: datetime) -> None:
        self.taken_at = taken_at
        self.samples: dict[str, SignalSample] = {}
        #: sample name -> the JSON path that defined it (for duplicate errors)
        self.defined_at: dict[str, str] = {}

    def observed(self, raw: dict[str, Any], path: str) -> datetime:
        if "observed_at" not in raw:
            return self.taken_at
        moment = parse_time(raw["observed_at"], json_path(path, "observed_at"))
        if moment > self.taken_at:
            # a sample from the future would have a negative age and look fresh for ever
            raise SnapshotError(json_path(path, "observed_at"), f"is after taken_at ({_time_text(self.taken_at)})")
        return moment

    @staticmethod
    def ttl(raw: dict[str, Any], path: str) -> float:
        # no TTL of its own: the policy's thresholds TTLs govern (the engine takes the lower)
        return _non_negative(raw["ttl_seconds"], json_path(path, "ttl_seconds")) if "ttl_seconds" in raw else math.inf

    def add(self, source: str, key: str, value: float, observed_at: datetime, ttl: float, path: str) -> None:
        name = f"{source}/{key}"
        if name in self.samples:
            raise SnapshotError(path, f"duplicates {self.defined_at[name]} (both are {name})")
        self.samples[name] = SignalSample(source=source, key=key, value=value, observed_at=observed_at, ttl_seconds=ttl)
        self.defined_at[name] = path

    def reading(self, source: str, key: str, raw: Any, path: str, check: _Check) -> None:
        """A number (observed at taken_at, no TTL) or ``{value, observed_at?, ttl_seconds?}``."""
        if isinstance(raw, dict):
            fields = _object(raw, path, _READING_FIELDS)
            if "value" not in fields:
                raise SnapshotError(json_path(path, "value"), "is required")
            value = check(fields["value"], json_path(path, "value"))
            self.add(source, key, value, self.observed(fields, path), self.ttl(fields, path), path)
        else:
            self.add(source, key, check(raw, path), self.taken_at, math.inf, path)

    def per_target(self, source: str, raw: Any, path: str, check: _Check) -> None:
        """``{target: reading}``: keys are target names, so any name is allowed if it is one."""
        if not isinstance(raw, dict):
            raise SnapshotError(path, f"must be an object of target: value, not {json_type_name(raw)}")
        for target, reading in raw.items():
            where = json_path(path, target)
            if not _TARGET.match(target):
                raise SnapshotError(where, "is not a target name (1..63 of [a-z0-9_.-], from a letter or digit)")
            self.reading(source, target, reading, where, check)

    def spot_prices(self, raw: Any, path: str) -> None:
        if not isinstance(raw, list):
            raise SnapshotError(path, f"must be an array, not {json_type_name(raw)}")
        for index, item in enumerate(raw):
            where = f"{path}[{index}]"
            fields = _object(item, where, _PRICE_FIELDS)
            for required in ("provider", "usd_per_hour"):
                if required not in fields:
                    raise SnapshotError(json_path(where, required), "is required")
            provider = fields["provider"]
            if provider not in CLOUD_PROVIDERS:
                # the engine asks for cloud prices only; anything else would sit unread
                raise SnapshotError(json_path(where, "provider"), f"must be one of {', '.join(CLOUD_PROVIDERS)}")
            region = self.part(fields.get("region"), json_path(where, "region"))
            instance_type = self.part(fields.get("instance_type"), json_path(where, "instance_type"))
            price = _positive(fields["usd_per_hour"], json_path(where, "usd_per_hour"))
            key = spot_price_key(provider, region, instance_type)
            self.add(SPOT_PRICE_SOURCE, key, price, self.observed(fields, where), self.ttl(fields, where), where)

    @staticmethod
    def part(value: Any, path: str) -> str | None:
        if value is None:
            return None
        if not isinstance(value, str) or not _PART.match(value):
            raise SnapshotError(path, "must be null or 1..128 characters without '/' or spaces")
        if value == "-":
            raise SnapshotError(path, "use null for an unknown value ('-' is how the signal name spells it)")
        return value

    def other(self, raw: Any, path: str) -> None:
        if not isinstance(raw, list):
            raise SnapshotError(path, f"must be an array, not {json_type_name(raw)}")
        for index, item in enumerate(raw):
            where = f"{path}[{index}]"
            fields = _object(item, where, _OTHER_FIELDS)
            for required in ("source", "key", "value"):
                if required not in fields:
                    raise SnapshotError(json_path(where, required), "is required")
            source, key = fields["source"], fields["key"]
            if not isinstance(source, str) or not source or "/" in source:
                raise SnapshotError(json_path(where, "source"), "must be a non-empty string without '/'")
            if not isinstance(key, str) or not key:
                raise SnapshotError(json_path(where, "key"), "must be a non-empty string")
            section = _section_of(f"{source}/{key}")
            if section is not None:
                # typed samples are checked (ranges, names) in their own section; no way around that
                raise SnapshotError(where, f"{source}/{key} belongs in {section[0]}")
            value = _number(fields["value"], json_path(where, "value"))
            self.add(source, key, value, self.observed(fields, where), self.ttl(fields, where), where)


def snapshot_from_json(document: Any) -> SignalSnapshot:
    """Validate a decoded snapshot document and build the :class:`SignalSnapshot`.

    Raises :class:`SnapshotError` naming the JSON path of the first bad
    field, e.g. ``spot_prices[2].usd_per_hour: must be a positive number``.
    """
    raw = _object(document, "", _TOP_FIELDS)
    if "taken_at" not in raw:
        raise SnapshotError("taken_at", "is required")
    reader = _Reader(parse_time(raw["taken_at"], "taken_at"))
    for source, check in ((GPU_UTILIZATION_SOURCE, _fraction), (CAPACITY_SOURCE, _non_negative)):
        section = _PER_TARGET[source]
        if section in raw:
            reader.per_target(source, raw[section], section, check)
    if "spot_prices" in raw:
        reader.spot_prices(raw["spot_prices"], "spot_prices")
    if "queue_depth" in raw:
        reader.reading(QUEUE_SOURCE, _QUEUE_KEY, raw["queue_depth"], "queue_depth", _non_negative)
    if "budget_spent_today_usd" in raw:
        reader.reading(
            BUDGET_SOURCE, _BUDGET_KEY, raw["budget_spent_today_usd"], "budget_spent_today_usd", _non_negative
        )
    if "other" in raw:
        reader.other(raw["other"], "other")
    return SignalSnapshot(taken_at=reader.taken_at, samples=reader.samples)


def loads_snapshot(text: str | bytes) -> SignalSnapshot:
    """Parse a snapshot from JSON text (NaN and Infinity refused: they are not JSON)."""
    document = loads_document(text, max_bytes=MAX_SNAPSHOT_BYTES, error=SnapshotError)
    return snapshot_from_json(document)


def load_snapshot_file(path: Path | str) -> SignalSnapshot:
    """Read and validate a snapshot file; an unreadable or malformed file names the file."""
    return read_document(path, loads_snapshot, error=SnapshotError)


# -- writing ----------------------------------------------------------------------------------------


def _section_of(name: str) -> tuple[str, tuple[str | None, ...]] | None:
    """Which typed section a sample name belongs to, and its parts there; None for "other".

    The same syntax :func:`snapshot_from_json` accepts, so whatever is written
    to a section reads back as the same sample name.
    """
    source, _, key = name.partition("/")
    if source in _PER_TARGET and _TARGET.match(key):
        return _PER_TARGET[source], (key,)
    if name == f"{QUEUE_SOURCE}/{_QUEUE_KEY}":
        return "queue_depth", ()
    if name == f"{BUDGET_SOURCE}/{_BUDGET_KEY}":
        return "budget_spent_today_usd", ()
    if source == SPOT_PRICE_SOURCE:
        parts = key.split("/")
        if len(parts) == 3 and parts[0] in CLOUD_PROVIDERS and all(_PART.match(p) for p in parts[1:]):
            provider, region, instance_type = (None if part == "-" else part for part in parts)
            return "spot_prices", (provider, region, instance_type)
    return None


def _number_out(value: float) -> float | int:
    # counts read better as 3 than 3.0; both compare equal, so the round trip holds
    if isinstance(value, float) and value.is_integer() and abs(value) < 2**53:
        return int(value)
    return value


def _reading_out(sample: SignalSample) -> dict[str, Any]:
    out: dict[str, Any] = {"value": _number_out(sample.value), "observed_at": _time_text(sample.observed_at)}
    if math.isfinite(sample.ttl_seconds):
        out["ttl_seconds"] = _number_out(sample.ttl_seconds)
    return out


def snapshot_to_json(snapshot: SignalSnapshot) -> dict[str, Any]:
    """The snapshot as a document, every value in the object form.

    ``snapshot_from_json(snapshot_to_json(s)) == s`` for every snapshot read
    from a valid document. Samples outside the typed sections go to
    ``other`` so nothing is lost; the mapping name (what ``plan()`` reads)
    is kept, and ``source``/``key`` are rebuilt from it.
    """
    per_target: dict[str, dict[str, Any]] = {section: {} for section in _PER_TARGET.values()}
    prices: list[dict[str, Any]] = []
    single: dict[str, Any] = {}
    other: list[dict[str, Any]] = []
    for name in sorted(snapshot.samples):
        sample = snapshot.samples[name]
        found = _section_of(name)
        if found is None:
            source, slash, key = name.partition("/")
            if not slash or not source or not key:
                raise ValueError(f"sample name {name!r} is not source/key")
            other.append({"source": source, "key": key, **_reading_out(sample)})
            continue
        section, parts = found
        if section in per_target:
            per_target[section][str(parts[0])] = _reading_out(sample)
        elif section == "spot_prices":
            provider, region, instance_type = parts
            reading = _reading_out(sample)
            prices.append(
                {
                    "provider": provider,
                    "region": region,
                    "instance_type": instance_type,
                    "usd_per_hour": reading.pop("value"),
                    **reading,
                }
            )
        else:
            single[section] = _reading_out(sample)
    # the documented field order, empty sections left out
    document: dict[str, Any] = {"taken_at": _time_text(snapshot.taken_at)}
    document.update((section, readings) for section, readings in per_target.items() if readings)
    if prices:
        document["spot_prices"] = prices
    for section in ("queue_depth", "budget_spent_today_usd"):
        if section in single:
            document[section] = single[section]
    if other:
        document["other"] = other
    return document
