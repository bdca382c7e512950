"""What a planning batch sees of capacity after each launch it decides (``taken_by_launch``).

Each plan of a batch reads the same signal snapshot; without counting down
what the batch's earlier launches took, every task would see the same free
GPUs, and all but the first few would be refused at launch instead of
waiting (or preempting).
"""

from __future__ import annotations

import dataclasses

from controlplane.domain import (
    CAPACITY_SOURCE,
    PREEMPTIBLE_SOURCE,
    Candidate,
    Priority,
    SignalSample,
    SignalSnapshot,
    preemptible_key,
)
from controlplane.store.tables import PRIORITY_RANK

__all__ = ["taken_by_launch"]


def taken_by_launch(snapshot: SignalSnapshot, group: list[Candidate], priority: Priority) -> SignalSnapshot:
    """The snapshot with one free GPU less on each target of ``group``: what the batch's next plans see.

    Without it every task of a batch would see the same free slots, and all
    but the first few would be refused at launch instead of waiting. On a
    full target the launch takes a GPU held by a lower-priority pod
    instead: one less that a pod of this priority, or of any lower one,
    may preempt (the victim may be below all of them; the new pod, which a
    higher priority could preempt in turn, is not counted).
    """
    samples: dict[str, SignalSample] | None = None
    for candidate in group:
        key = f"{CAPACITY_SOURCE}/{candidate.target}"
        sample = snapshot.samples.get(key)
        if sample is None:
            continue
        if samples is None:
            samples = dict(snapshot.samples)
        if sample.value >= 1.0:
            samples[key] = dataclasses.replace(sample, value=sample.value - 1.0)
            continue
        samples[key] = dataclasses.replace(sample, value=0.0)
        # this priority and every lower one (a higher rank number): a pod preempts only pods below its own
        for lower in (p for p in Priority if PRIORITY_RANK[p] >= PRIORITY_RANK[priority]):
            name = f"{PREEMPTIBLE_SOURCE}/{preemptible_key(candidate.target, lower.value)}"
            held = samples.get(name)
            if held is not None:
                samples[name] = dataclasses.replace(held, value=max(held.value - 1.0, 0.0))
    return snapshot if samples is None else dataclasses.replace(snapshot, samples=samples)
