"""The spot circuit breaker of one offer (provider, region, instance type), as a pure state machine.

Evidence is what the store counts over a rolling window
(``controlplane.store.offer_stats``): failures (preemptions and
``insufficient_capacity`` launch errors) against attempts that got capacity
(running or succeeded). :func:`step` moves a :class:`Breaker` on that
evidence; nothing here reads a clock or the store, so every transition is a
function of (breaker, evidence, parameters, now) and is tested as such.

::

    closed --(>= min_attempts, failure rate >= open rate)--> open
    open --(cool-down over)--> half_open                   (sample 0.5: placements allowed, they are probes)
    half_open --(an attempt created since it half-opened)--> half_open, probing   (sample 1: held)
    half_open --(a probe failed)--> open, cool-down x 2 (up to the max)
    half_open --(a probe got capacity, rate <= close rate or < min_attempts)--> closed
    half_open --(a probe got capacity, rate still above the close rate)--> half_open (next probe)
    half_open, probing --(no verdict within the cool-down)--> half_open (next probe)
    closed --(opens again within one window of closing)--> open with the escalated cool-down

Two thresholds make the hysteresis: a breaker opens at ``open`` and, once
open, closes only at or below ``close``; a rate between the two changes
nothing. A failed probe, or a reopening soon after closing, doubles the
cool-down, so an offer that keeps failing is tried less and less often.

The breaker poller (``controlplane.signals.breaker``) keeps one
:class:`Breaker` per offer and publishes :attr:`Breaker.value`; ``plan()``
reads only that sample. The poller cannot import this layer, so the
scheduler hands it a :class:`BreakerRules`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Protocol

from controlplane.domain.reliability import BREAKER_CLOSED, BREAKER_HALF_OPEN, BREAKER_OPEN
from controlplane.policy.model import Thresholds

__all__ = [
    "COOLDOWN_FACTOR",
    "Breaker",
    "BreakerParams",
    "BreakerRules",
    "BreakerState",
    "OfferEvidence",
    "step",
]

#: a failed probe (or a quick reopening) multiplies the cool-down by this, up to the max
COOLDOWN_FACTOR = 2.0


class BreakerState(StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class OfferEvidence(Protocol):
    """What the store counted for one offer over the window (``OfferOutcomes`` has these fields)."""

    @property
    def failures(self) -> int:
        """Preempted attempts plus launches refused for capacity."""
        ...

    @property
    def successes(self) -> int:
        """Attempts that got capacity: running now, or succeeded."""
        ...

    @property
    def last_failure_created_at(self) -> datetime | None:
        """Creation time of the newest attempt among the failures."""
        ...

    @property
    def last_success_created_at(self) -> datetime | None:
        """Creation time of the newest attempt among the successes."""
        ...

    @property
    def last_created_at(self) -> datetime | None:
        """Creation time of the newest attempt of any outcome, launching included."""
        ...


@dataclass(frozen=True, kw_only=True)
class BreakerParams:
    """The breaker's thresholds (docs/policies.md, "Spot circuit breaker"); defaults as in :class:`Thresholds`."""

    window_seconds: float = 1800.0
    min_attempts: int = 5
    open_failure_rate: float = 0.5
    close_failure_rate: float = 0.2
    cooldown_seconds: float = 300.0
    max_cooldown_seconds: float = 3600.0

    @classmethod
    def from_thresholds(cls, thresholds: Thresholds) -> BreakerParams:
        return cls(
            window_seconds=thresholds.breaker_window_seconds,
            min_attempts=thresholds.breaker_min_attempts,
            open_failure_rate=thresholds.breaker_open_failure_rate,
            close_failure_rate=thresholds.breaker_close_failure_rate,
            cooldown_seconds=thresholds.breaker_cooldown_seconds,
            max_cooldown_seconds=thresholds.breaker_max_cooldown_seconds,
        )


@dataclass(frozen=True, kw_only=True)
class Breaker:
    """One offer's breaker at one moment (a new offer's is closed)."""

    state: BreakerState = BreakerState.CLOSED
    #: when it entered ``state`` (None: never left closed)
    since: datetime | None = None
    #: the cool-down of the current (or latest) opening
    cooldown_seconds: float = 0.0
    #: open: when it turns half-open
    reopen_at: datetime | None = None
    #: half-open: attempts created at or after this are probes
    probe_after: datetime | None = None
    #: half-open: a probe was launched and its verdict is awaited (the offer is held meanwhile)
    probing: bool = False
    #: half-open: when the awaited probe was first seen
    probe_seen_at: datetime | None = None
    #: when it last closed after having been open: a reopening within a window escalates the cool-down
    closed_at: datetime | None = None
    #: why it is in this state, for logs and ``fusionctl signals``
    reason: str = "no evidence"

    @property
    def value(self) -> float:
        """The sample ``plan()`` reads: 0 closed, 1 open (or a probe in flight), 0.5 half-open (probe allowed)."""
        if self.state is BreakerState.CLOSED:
            return BREAKER_CLOSED
        if self.state is BreakerState.OPEN or self.probing:
            return BREAKER_OPEN
        return BREAKER_HALF_OPEN

    def idle(self, now: datetime, params: BreakerParams) -> bool:
        """Closed with nothing left to remember: the poller may forget it."""
        return self.state is BreakerState.CLOSED and (
            self.closed_at is None or (now - self.closed_at).total_seconds() >= params.window_seconds
        )


def _rate(failures: int, total: int) -> str:
    return f"{failures} of {total} attempts failed ({failures / total:.0%})" if total else "no attempts"


def _opened(breaker: Breaker, now: datetime, cooldown: float, reason: str) -> Breaker:
    return Breaker(
        state=BreakerState.OPEN,
        since=now,
        cooldown_seconds=cooldown,
        reopen_at=now + timedelta(seconds=cooldown),
        closed_at=breaker.closed_at,
        reason=f"{reason}; open for {cooldown:g}s",
    )


def step(breaker: Breaker | None, evidence: OfferEvidence | None, params: BreakerParams, now: datetime) -> Breaker:
    """The breaker after seeing ``evidence`` (None: no attempt in the window) at ``now``. Pure."""
    current = breaker or Breaker()
    failures = evidence.failures if evidence is not None else 0
    total = failures + (evidence.successes if evidence is not None else 0)
    window = f"in the last {params.window_seconds:g}s"

    if current.state is BreakerState.CLOSED:
        if total >= params.min_attempts and failures >= params.open_failure_rate * total:
            cooldown = params.cooldown_seconds
            recent = current.closed_at is not None and (now - current.closed_at).total_seconds() < params.window_seconds
            if recent:
                # it failed again soon after a probe closed it: wait longer than last time
                cooldown = min(max(current.cooldown_seconds, cooldown) * COOLDOWN_FACTOR, params.max_cooldown_seconds)
            return _opened(
                current,
                now,
                cooldown,
                f"{_rate(failures, total)} {window} >= {params.open_failure_rate:g}"
                + (" (again, soon after closing)" if recent else ""),
            )
        return current

    if current.state is BreakerState.OPEN:
        if current.reopen_at is not None and now < current.reopen_at:
            return current
        return replace(
            current,
            state=BreakerState.HALF_OPEN,
            since=now,
            reopen_at=None,
            probe_after=now,
            probing=False,
            probe_seen_at=None,
            reason=f"cool-down of {current.cooldown_seconds:g}s over: the next launch is a probe",
        )

    # half-open: judge the probes, attempts created since it half-opened (or since the last good probe)
    after = current.probe_after or current.since or now
    last_failure = evidence.last_failure_created_at if evidence is not None else None
    last_success = evidence.last_success_created_at if evidence is not None else None
    last_any = evidence.last_created_at if evidence is not None else None
    if last_failure is not None and last_failure >= after:
        # a failed probe wins over a good one launched in the same interval: stay cautious
        cooldown = min(current.cooldown_seconds * COOLDOWN_FACTOR, params.max_cooldown_seconds)
        return _opened(current, now, cooldown, "the probe failed (preempted or no capacity)")
    if last_success is not None and last_success >= after:
        if total < params.min_attempts or failures <= params.close_failure_rate * total:
            return Breaker(
                state=BreakerState.CLOSED,
                since=now,
                cooldown_seconds=current.cooldown_seconds,
                closed_at=now,
                reason=f"the probe got capacity; {_rate(failures, total)} {window}",
            )
        return replace(
            current,
            probe_after=now,
            probing=False,
            probe_seen_at=None,
            reason=(
                f"the probe got capacity but {_rate(failures, total)} {window} is above "
                f"{params.close_failure_rate:g}: the next launch is another probe"
            ),
        )
    if current.probing:
        seen = current.probe_seen_at or now
        if (now - seen).total_seconds() >= current.cooldown_seconds:
            # the probe ended without a verdict (cancelled, lost, another error) or is stuck launching:
            # let another one through rather than hold the offer for ever
            return replace(
                current,
                probe_after=now,
                probing=False,
                probe_seen_at=None,
                reason=f"no verdict from the probe in {current.cooldown_seconds:g}s: the next launch is a probe",
            )
        return current
    if last_any is not None and last_any >= after:
        return replace(current, probing=True, probe_seen_at=now, reason="a probe is launching: held until its outcome")
    return current


class BreakerRules:
    """:func:`step` with the parameters of the policy in force, in the shape the breaker poller takes."""

    def __init__(self, params: Callable[[], BreakerParams]) -> None:
        self.params = params

    def step(self, breaker: Breaker | None, evidence: OfferEvidence | None, now: datetime) -> Breaker:
        return step(breaker, evidence, self.params(), now)

    def value(self, breaker: Breaker) -> float:
        return breaker.value

    def idle(self, breaker: Breaker, now: datetime) -> bool:
        return breaker.idle(now, self.params())

    def explain(self, breaker: Breaker) -> str:
        return f"{breaker.state.value}{' (probing)' if breaker.probing else ''}: {breaker.reason}"
