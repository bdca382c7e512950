"""Queue depth: tasks waiting to be placed, from the store (``queue/depth``)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from controlplane.domain import QUEUE_SOURCE, SignalSample
from controlplane.signals.base import PollResult, Wanted

__all__ = ["QueueDepthSource"]


class QueueDepthSource:
    """``count_queued`` is injected (the store's count), so this layer does not depend on the store."""

    name = "queue"

    def __init__(self, count_queued: Callable[[], int], *, ttl_seconds: float = 30.0) -> None:
        self.count_queued, self.ttl_seconds = count_queued, ttl_seconds

    def poll(self, wanted: Wanted, *, timeout_s: float, clock: Callable[[], datetime]) -> PollResult:
        depth = self.count_queued()
        sample = SignalSample(
            source=QUEUE_SOURCE, key="depth", value=float(depth), observed_at=clock(), ttl_seconds=self.ttl_seconds
        )
        return PollResult(samples=[sample])
