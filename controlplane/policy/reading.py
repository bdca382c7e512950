"""What ``plan()`` reads from a signal snapshot, and the record of every value it consulted.

A sample counts only while it is younger than both its own TTL and the
policy's; a stale or missing one reads as ``None`` and leaves a note in the
trace. ``used`` becomes the receipt's ``signals_used``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from controlplane.domain import BUDGET_SOURCE, PREEMPTIBLE_SOURCE, SPOT_PRICE_SOURCE, SignalSnapshot, preemptible_key
from controlplane.domain.reliability import tenant_spend_key
from controlplane.policy.freshness import price_ttl
from controlplane.policy.model import Thresholds

__all__ = ["SignalReader"]


class SignalReader:
    """Reads the snapshot with the policy's TTLs and records every value it consulted."""

    __slots__ = ("notes", "now", "samples", "thresholds", "used")

    def __init__(self, snapshot: SignalSnapshot, thresholds: Thresholds, now: datetime) -> None:
        self.samples, self.thresholds, self.now = snapshot.samples, thresholds, now
        self.used: dict[str, Any] = {}
        self.notes: list[str] = []

    def fresh(self, source: str, key: str, ttl: float) -> float | None:
        """The value if present and younger than both its own TTL and ``ttl``; otherwise None (noted)."""
        return self.read(f"{source}/{key}", ttl)

    def read(self, name: str, ttl: float) -> float | None:
        """:meth:`fresh` by full sample name."""
        seen = self.used.get(name)
        if seen is not None:
            # a name belongs to one source, so ``ttl`` is the one it was first read with
            return None if seen["stale"] else seen["value"]
        sample = self.samples.get(name)
        if sample is None:
            self.used[name] = {"value": None, "age_seconds": None, "stale": True, "missing": True}
            self.notes.append(f"signal {name}: missing, not used")
            return None
        age = round(sample.age_seconds(self.now), 3)
        own = sample.ttl_seconds
        limit = ttl if ttl < own else own  # min(own, ttl), ties keep ``own`` as min() does
        stale = age > limit
        self.used[name] = {
            "value": sample.value,
            "age_seconds": age,
            "ttl_seconds": limit,
            "stale": stale,
            "missing": False,
        }
        if stale:
            self.notes.append(f"signal {name}: stale ({age}s old, ttl {limit:g}s), not used")
            return None
        return sample.value

    def load(self, source: str, key: str) -> float | None:
        return self.read(f"{source}/{key}", self.thresholds.load_ttl_seconds)

    def price(self, key: str) -> float | None:
        # the key starts with the provider, whose prices have their own TTL (policy/freshness.py)
        return self.read(f"{SPOT_PRICE_SOURCE}/{key}", price_ttl(self.thresholds, key.partition("/")[0]))

    def breaker(self, name: str) -> float | None:
        """A fresh breaker sample, by full name; None when stale or missing (both mean closed).

        A missing breaker is not recorded: absence of evidence never blocks, and
        receipts of snapshots without breakers stay as they were.
        """
        if name not in self.used and name not in self.samples:
            return None
        return self.read(name, self.thresholds.load_ttl_seconds)

    def preemptible(self, target: str, priority: str) -> float | None:
        """GPUs a pod of ``priority`` could take on full ``target`` by preempting lower ones; None when unknown.

        Read only for a full target; a missing sample is not noted (most
        targets have no PriorityClass that preempts), a stale one is.
        """
        name = f"{PREEMPTIBLE_SOURCE}/{preemptible_key(target, priority)}"
        if name not in self.used and name not in self.samples:
            return None
        return self.read(name, self.thresholds.load_ttl_seconds)

    def history(self, name: str) -> float | None:
        """A fresh spot-history sample, by full name; None when stale or missing, and a missing one is not noted.

        No history is the cold start the priors are for, not a fault to
        report; receipts record only the history there was.
        """
        if name not in self.used and name not in self.samples:
            return None
        return self.read(name, self.thresholds.load_ttl_seconds)

    def tenant_spend(self, tenant: str) -> float:
        """The tenant's spend today; called only once the total is known to be fresh.

        The budget poller writes every tenant with spend today at each poll (and a
        0 for one that drops out), so a tenant without a fresh sample beside a
        fresh total has spent nothing today.
        """
        name = f"{BUDGET_SOURCE}/{tenant_spend_key(tenant)}"
        if name in self.samples:
            value = self.read(name, self.thresholds.load_ttl_seconds)
            if value is not None:
                return value
        else:
            self.used[name] = {"value": None, "age_seconds": None, "stale": True, "missing": True}
        self.notes.append(f"signal {name}: none fresh beside a fresh total, so no spend today: 0")
        return 0.0
