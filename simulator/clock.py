"""The simulated time: one settable clock that the store, the scheduler and the world all read.

Nothing in a simulation waits on wall time: the runner moves this clock
from one event to the next, so a simulated day takes as long as the work the
real code does in it.
"""

from __future__ import annotations

from datetime import datetime, timedelta

__all__ = ["VirtualClock"]


class VirtualClock:
    """An aware-UTC clock that moves only when the runner moves it, and never backwards."""

    def __init__(self, start: datetime) -> None:
        if start.tzinfo is None:
            raise ValueError("the simulated clock must be timezone-aware (UTC), as the store's")
        self.start = start
        self._offset_s = 0.0
        self._now = start

    def __call__(self) -> datetime:
        return self._now

    @property
    def offset_s(self) -> float:
        """Seconds since the start of the simulation."""
        return self._offset_s

    def move_to(self, offset_s: float) -> None:
        """Jump to ``offset_s`` seconds after the start (a jump into the past is a bug of the caller)."""
        if offset_s < self._offset_s:
            raise ValueError(f"the simulated clock cannot go back ({offset_s} < {self._offset_s})")
        self._offset_s = offset_s
        # microsecond resolution, as the store keeps it: the same offset always gives the same instant
        self._now = self.start + timedelta(microseconds=round(offset_s * 1_000_000))

    def at(self, offset_s: float) -> datetime:
        return self.start + timedelta(microseconds=round(offset_s * 1_000_000))
