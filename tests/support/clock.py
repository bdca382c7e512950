"""One settable clock for the store and the scheduler in a test; tests move it, threads may read it."""

from __future__ import annotations

import threading
from datetime import datetime, timedelta

__all__ = ["Clock"]


class Clock:
    """An aware-UTC clock that stands still until a test advances it (thread-safe)."""

    def __init__(self, start: datetime) -> None:
        if start.tzinfo is None:
            raise ValueError("the clock must be timezone-aware, as the store's")
        self.now = start
        self._lock = threading.Lock()

    def __call__(self) -> datetime:
        with self._lock:
            return self.now

    def advance(self, seconds: float) -> None:
        with self._lock:
            self.now += timedelta(seconds=seconds)
