"""Small building blocks for the simulator's tests: a trace given as steps, and a fixed price-history clock."""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

__all__ = ["T0", "StepTrace", "at"]

T0 = datetime(2023, 2, 20, tzinfo=UTC)


def at(offset_s: float) -> datetime:
    return T0 + timedelta(seconds=offset_s)


class StepTrace:
    """Instances obtainable from each step's offset (seconds) until the next step; the last step holds."""

    def __init__(self, steps: Sequence[tuple[float, int]]) -> None:
        self.offsets = [offset for offset, _ in steps]
        self.values = [value for _, value in steps]

    def available_at(self, offset_s: float) -> int:
        index = bisect.bisect_right(self.offsets, offset_s) - 1
        return self.values[max(index, 0)]

    def next_change_after(self, offset_s: float) -> float | None:
        index = bisect.bisect_right(self.offsets, offset_s)
        return self.offsets[index] if index < len(self.offsets) else None
