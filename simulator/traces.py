"""Spot availability and preemption traces: how many spot instances could be had at each tick.

The format is the one published with "Can't Be Late" (NSDI '24,
skypilot-org/spot-traces), one file per (cloud, zone, instance type)::

    {"metadata": {"gap_seconds": N}, "data": [v0, v1, ...]}

one value per tick of ``gap_seconds``. The publishers describe each value as
the number of spot instances available at that tick; some readers take 1 to
mean "preempted". Which one a file means is the explicit ``reading`` setting
(default ``"available"``); a :class:`SpotTrace` always holds instances
obtainable, whatever the file said. See docs/simulator.md, "Trace formats".

Public surface::

    load_trace(path, *, reading="available", beyond_end="repeat", name=None, max_bytes=MAX_TRACE_BYTES) -> SpotTrace
    parse_trace(document, *, source, name, reading="available", beyond_end="repeat") -> SpotTrace
    SpotTrace.available_at(offset_s) / next_change_after(offset_s) / share_available() / duration_s
    TraceError                              # names the file and the JSON path of the bad field
"""

from __future__ import annotations

import bisect
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, cast, get_args

from simulator.input_files import InputFileRefused, read_capped

__all__ = [
    "MAX_TRACE_BYTES",
    "BeyondEnd",
    "SpotTrace",
    "TraceError",
    "TraceReading",
    "load_trace",
    "parse_trace",
]

#: a trace file larger than this is refused before it is read (the real 45-day files are about 60 KB)
MAX_TRACE_BYTES = 64 * 1024 * 1024

#: "available": a value is the number of instances obtainable; "preempted": a value > 0 means none was
TraceReading = Literal["available", "preempted"]
#: what the trace says after its last tick: "repeat" it from the start, or "hold" the last value for ever
BeyondEnd = Literal["repeat", "hold"]


class TraceError(ValueError):
    """A trace file or document that cannot be used; the message names the file and the field."""

    def __init__(self, source: str, where: str, problem: str) -> None:
        self.source = source
        self.where = where
        self.problem = problem
        super().__init__(": ".join(part for part in (source, where, problem) if part))


@dataclass(frozen=True)
class SpotTrace:
    """Spot instances obtainable per tick of ``gap_seconds``, from offset 0 (the trace's start).

    ``values`` are already in the "available" reading. Offsets are seconds
    from the trace's start; tick ``k`` covers ``[k * gap_seconds, (k + 1) * gap_seconds)``.
    """

    name: str
    gap_seconds: float
    values: tuple[int, ...]
    beyond_end: BeyondEnd = "repeat"
    #: ticks k (1 <= k < len(values)) whose value differs from tick k - 1, ascending
    _changes: tuple[int, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if isinstance(self.gap_seconds, bool) or not isinstance(self.gap_seconds, int | float):
            raise ValueError("gap_seconds must be a positive number")
        if not (math.isfinite(self.gap_seconds) and self.gap_seconds > 0):
            raise ValueError("gap_seconds must be a positive number")
        if not self.values:
            raise ValueError("a trace needs at least one value")
        if any(isinstance(value, bool) or not isinstance(value, int) or value < 0 for value in self.values):
            raise ValueError("values must be non-negative integers")
        if self.beyond_end not in get_args(BeyondEnd):
            raise ValueError(f"beyond_end must be one of {', '.join(get_args(BeyondEnd))}")
        changes = tuple(tick for tick in range(1, len(self.values)) if self.values[tick] != self.values[tick - 1])
        object.__setattr__(self, "_changes", changes)

    @property
    def ticks(self) -> int:
        return len(self.values)

    @property
    def duration_s(self) -> float:
        """Seconds the file covers (before ``beyond_end`` applies)."""
        return len(self.values) * self.gap_seconds

    def share_available(self) -> float:
        """The share of the file's ticks at which at least one instance was obtainable."""
        return sum(1 for value in self.values if value > 0) / len(self.values)

    def available_at(self, offset_s: float) -> int:
        """Spot instances obtainable ``offset_s`` seconds after the trace's start."""
        return self._value_of_tick(self._tick_at(offset_s))

    def next_change_after(self, offset_s: float) -> float | None:
        """The first offset after ``offset_s`` whose value differs from the value at ``offset_s``.

        None when the value never changes again (a constant trace, or past the
        last change with ``beyond_end="hold"``). O(log n): a bisect over the
        change ticks computed once.
        """
        tick = self._tick_at(offset_s)
        count = len(self.values)
        if self.beyond_end == "hold":
            if tick >= count:
                return None
            found = bisect.bisect_right(self._changes, tick)
            return self._start_of(self._changes[found]) if found < len(self._changes) else None
        if not self._changes:
            # every value equal, so the wrap from the last tick to the first changes nothing either
            return None
        cycle, position = divmod(tick, count)
        found = bisect.bisect_right(self._changes, position)
        if found < len(self._changes):
            return self._start_of(cycle * count + self._changes[found])
        if self.values[-1] != self.values[0]:
            return self._start_of((cycle + 1) * count)
        return self._start_of((cycle + 1) * count + self._changes[0])

    def _start_of(self, tick: int) -> float:
        return tick * self.gap_seconds

    def _tick_at(self, offset_s: float) -> int:
        if not math.isfinite(offset_s) or offset_s < 0:
            raise ValueError(f"offset must be a finite number of seconds >= 0 (got {offset_s!r})")
        tick = math.floor(offset_s / self.gap_seconds)
        # floating division can land one tick off a boundary; the boundaries are tick * gap_seconds exactly
        # (what next_change_after returns), so available_at(next_change_after(x)) is the new value
        if self._start_of(tick) > offset_s:
            tick -= 1
        elif self._start_of(tick + 1) <= offset_s:
            tick += 1
        return tick

    def _value_of_tick(self, tick: int) -> int:
        if tick < len(self.values):
            return self.values[tick]
        if self.beyond_end == "hold":
            return self.values[-1]
        return self.values[tick % len(self.values)]


def load_trace(
    path: Path,
    *,
    reading: str = "available",
    beyond_end: str = "repeat",
    name: str | None = None,
    max_bytes: int = MAX_TRACE_BYTES,
) -> SpotTrace:
    """One trace file, whole and checked, or :class:`TraceError`; ``name`` defaults to the file's stem."""
    source = str(path)
    try:
        content = read_capped(path, max_bytes)
    except InputFileRefused as error:
        raise TraceError(source, "", str(error)) from error
    try:
        text = content.decode("utf-8")
    except UnicodeDecodeError as error:
        raise TraceError(source, "", "not UTF-8 text") from error
    try:
        document = json.loads(text, parse_constant=_refuse_constant)
    except (ValueError, RecursionError) as error:
        # json's own errors, the NaN/Infinity refusal, and integers too long for int()
        raise TraceError(source, "", f"not a JSON trace document ({error})") from error
    return parse_trace(document, source=source, name=name or path.stem, reading=reading, beyond_end=beyond_end)


def parse_trace(
    document: Any,
    *,
    source: str,
    name: str,
    reading: str = "available",
    beyond_end: str = "repeat",
) -> SpotTrace:
    """A trace from an already-decoded document; ``source`` names it in errors (a file path, a scenario key)."""
    if reading not in get_args(TraceReading):
        raise TraceError(source, "reading", f"must be one of {', '.join(get_args(TraceReading))} (got {reading!r})")
    if beyond_end not in get_args(BeyondEnd):
        raise TraceError(source, "beyond_end", f"must be one of {', '.join(get_args(BeyondEnd))} (got {beyond_end!r})")
    if not isinstance(document, dict):
        raise TraceError(source, "", "must be a JSON object with metadata and data")
    gap = _gap_seconds(document, source)
    counts = _counts(document, source)
    if reading == "preempted":
        # 1 (or any positive value) = the instance was preempted, none to be had; 0 = one was running
        counts = [0 if value > 0 else 1 for value in counts]
    return SpotTrace(name=name, gap_seconds=gap, values=tuple(counts), beyond_end=cast(BeyondEnd, beyond_end))


def _gap_seconds(document: dict[str, Any], source: str) -> float:
    if "metadata" not in document:
        raise TraceError(source, "metadata", "missing")
    metadata = document["metadata"]
    if not isinstance(metadata, dict):
        raise TraceError(source, "metadata", "must be an object")
    if "gap_seconds" not in metadata:
        raise TraceError(source, "metadata.gap_seconds", "missing")
    gap = metadata["gap_seconds"]
    if isinstance(gap, bool) or not isinstance(gap, int | float) or not math.isfinite(gap) or gap <= 0:
        raise TraceError(source, "metadata.gap_seconds", f"must be a positive number (got {gap!r})")
    return float(gap)


def _counts(document: dict[str, Any], source: str) -> list[int]:
    if "data" not in document:
        raise TraceError(source, "data", "missing")
    data = document["data"]
    if not isinstance(data, list):
        raise TraceError(source, "data", "must be a list of instance counts")
    if not data:
        raise TraceError(source, "data", "must hold at least one value")
    return [_count(value, index, source) for index, value in enumerate(data)]


def _count(value: object, index: int, source: str) -> int:
    # JSON true is not a count, though Python's bool is an int
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    if isinstance(value, float) and math.isfinite(value) and value >= 0 and value.is_integer():
        return int(value)
    raise TraceError(source, f"data[{index}]", f"must be a non-negative whole number (got {_shown(value)})")


def _shown(value: object) -> str:
    text = json.dumps(value) if isinstance(value, bool | int | float | str | type(None)) else type(value).__name__
    return text if len(text) <= 40 else text[:37] + "..."


def _refuse_constant(constant: str) -> float:
    raise ValueError(f"{constant} is not a number a trace may hold")
