"""What-if replay: plan recorded tasks again, with the signals they saw, under a candidate policy.

Each recorded decision is planned again by the same pure ``plan()`` at its
original decision time with its batch's stored snapshot, so the only thing
that differs is the policy. A placement is the plan's first candidate (the
target the scheduler tries first); "none" when the plan had none.

Cost is an estimate, and says how it was made: the hourly rate of a
placement is its expected spot price, else its max price, else 0 for
private targets; a cloud placement with neither is counted as unpriced.
Hours are the task's recorded runtime, else its deadline, else
``assumed_runtime_s``.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from controlplane.domain import PlacementPlan, SignalSnapshot, Task
from controlplane.policy.engine import plan
from controlplane.policy.model import CLOUD_PROVIDERS, Policy

__all__ = [
    "DEFAULT_ASSUMED_RUNTIME_S",
    "NONE",
    "Placement",
    "ReplayItem",
    "SimulationReport",
    "simulate",
    "with_capacity",
]

#: runtime for tasks that never finished and had no deadline (10 minutes: a typical short video)
DEFAULT_ASSUMED_RUNTIME_S = 600.0
#: how the report names "no candidate"
NONE = "(none)"


@dataclass(frozen=True, kw_only=True)
class Placement:
    target: str | None
    provider: str | None
    expected_usd_h: float | None = None
    max_price_usd_h: float | None = None

    @property
    def name(self) -> str:
        return self.target or NONE

    def rate(self) -> float | None:
        """USD per hour, or None for a cloud placement whose price nobody knew."""
        if self.target is None:
            return 0.0
        if self.provider not in CLOUD_PROVIDERS and self.expected_usd_h is None and self.max_price_usd_h is None:
            return 0.0  # owned capacity; a pod on a cloud node pool has its pool's price like a VM
        if self.expected_usd_h is not None:
            return self.expected_usd_h
        return self.max_price_usd_h


@dataclass(frozen=True, kw_only=True)
class ReplayItem:
    task: Task
    decided_at: datetime
    snapshot: SignalSnapshot
    before: Placement
    runtime_seconds: float | None = None


@dataclass(kw_only=True)
class SimulationReport:
    policy_version: str
    replayed: int = 0
    changed: int = 0
    moves: Counter[tuple[str, str]] = field(default_factory=Counter)
    before_usd: float = 0.0
    after_usd: float = 0.0
    unpriced: int = 0
    assumed_runtimes: int = 0
    first_decided_at: datetime | None = None
    last_decided_at: datetime | None = None
    #: recorded decisions that could not be replayed (no stored snapshot), counted, never guessed
    skipped: int = 0

    @property
    def delta_usd(self) -> float:
        return self.after_usd - self.before_usd

    def to_json(self) -> dict[str, Any]:
        return {
            "policy_version": self.policy_version,
            "replayed": self.replayed,
            "changed": self.changed,
            "skipped_without_snapshot": self.skipped,
            "window": {
                "first_decided_at": self.first_decided_at.isoformat() if self.first_decided_at else None,
                "last_decided_at": self.last_decided_at.isoformat() if self.last_decided_at else None,
            },
            "moves": [
                {"from": source, "to": target, "count": count}
                for (source, target), count in sorted(self.moves.items(), key=lambda item: (-item[1], item[0]))
            ],
            "cost": {
                "before_usd": round(self.before_usd, 4),
                "after_usd": round(self.after_usd, 4),
                "delta_usd": round(self.delta_usd, 4),
                "unpriced_placements": self.unpriced,
                "assumed_runtimes": self.assumed_runtimes,
            },
        }


def _first(decision: PlacementPlan) -> Placement:
    if not decision.candidates:
        return Placement(target=None, provider=None)
    chosen = decision.candidates[0]
    return Placement(
        target=chosen.target,
        provider=chosen.provider,
        expected_usd_h=chosen.expected_usd_h,
        max_price_usd_h=chosen.max_price_usd_h,
    )


def with_capacity(snapshot: SignalSnapshot, seen: Mapping[str, float]) -> SignalSnapshot:
    """The batch's snapshot with the free GPUs one decision saw (its batch's earlier launches taken).

    The scheduler takes a slot from the batch's free capacity with each
    launch, so later tasks of a batch saw less than the stored snapshot;
    their receipts record what they read, and the replay uses that.
    """
    changed = {
        name: dataclasses.replace(sample, value=seen[name])
        for name, sample in snapshot.samples.items()
        if name in seen and sample.value != seen[name]
    }
    if not changed:
        return snapshot
    return dataclasses.replace(snapshot, samples={**snapshot.samples, **changed})


def simulate(
    items: Iterable[ReplayItem],
    policy: Policy,
    *,
    assumed_runtime_s: float = DEFAULT_ASSUMED_RUNTIME_S,
) -> SimulationReport:
    """Replay ``items`` under ``policy``; pure, like ``plan()``."""
    report = SimulationReport(policy_version=policy.version)
    for item in items:
        after = _first(plan(item.task, item.snapshot, policy, item.decided_at))
        report.replayed += 1
        if report.first_decided_at is None:
            report.first_decided_at = item.decided_at
        report.last_decided_at = item.decided_at
        if after.target == item.before.target:
            continue
        report.changed += 1
        report.moves[(item.before.name, after.name)] += 1
        seconds = item.runtime_seconds
        if seconds is None:
            deadline = item.task.spec.deadline_seconds
            seconds = float(deadline) if deadline else assumed_runtime_s
            report.assumed_runtimes += 1
        hours = seconds / 3600.0
        old, new = item.before.rate(), after.rate()
        if old is None or new is None:
            report.unpriced += 1
            continue
        report.before_usd += old * hours
        report.after_usd += new * hours
    return report
