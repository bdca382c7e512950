"""Live signals as the planner sees them: one consistent snapshot per planning batch."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime

__all__ = ["SignalSample", "SignalSnapshot"]


@dataclass(frozen=True, kw_only=True)
class SignalSample:
    """One observed value: ``source`` (prometheus, aws_spot, azure_spot, capacity, queue), ``key``."""

    source: str
    key: str
    value: float
    observed_at: datetime
    ttl_seconds: float

    def age_seconds(self, now: datetime) -> float:
        return max((now - self.observed_at).total_seconds(), 0.0)

    def is_stale(self, now: datetime) -> bool:
        return self.age_seconds(now) > self.ttl_seconds


@dataclass(frozen=True, kw_only=True)
class SignalSnapshot:
    """Every sample known at ``taken_at``, keyed ``source/key``."""

    taken_at: datetime
    samples: Mapping[str, SignalSample] = field(default_factory=dict)

    def get(self, source: str, key: str) -> SignalSample | None:
        return self.samples.get(f"{source}/{key}")

    def fresh(self, source: str, key: str, now: datetime) -> SignalSample | None:
        """The sample if it exists and is within its TTL at ``now``; stale values are never used."""
        sample = self.get(source, key)
        return sample if sample is not None and not sample.is_stale(now) else None
