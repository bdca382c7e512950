"""Spot circuit breakers: one per (provider, region, instance type), published as ``breaker/<offer>`` samples.

Each poll reads the offers' recent outcomes (an injected callable: the
store's ``offer_outcomes`` over the policy's window, so this layer does not
import the store), moves every breaker one step with the injected rules
(``controlplane.policy.breaker``, which this layer may not import either)
and emits one sample per known breaker: 0 closed, 1 open (or a probe in
flight), 0.5 half-open (the next launch is a probe). ``plan()`` reads them.

The breakers live in this poller's memory. A restart closes them all; the
first poll reopens any whose window still shows the failures, since the
evidence itself is in the database. A closed breaker with nothing to
remember is forgotten (its last sample, 0, ages out).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Generic, Protocol, TypeVar

from controlplane.domain import SignalSample
from controlplane.domain.reliability import BREAKER_SOURCE, breaker_key
from controlplane.signals.base import PollResult, Wanted

__all__ = ["BreakerRulesLike", "BreakerSource", "OfferKey"]

log = logging.getLogger("fusionplane.signals")

#: (provider, region, instance type) as attempts record them
OfferKey = tuple[str, str | None, str | None]
E_contra = TypeVar("E_contra", contravariant=True)
E = TypeVar("E")
S = TypeVar("S")


class BreakerRulesLike(Protocol[E_contra, S]):
    """The state machine (``controlplane.policy.breaker.BreakerRules`` in production)."""

    def step(self, breaker: S | None, evidence: E_contra | None, now: datetime) -> S: ...

    def value(self, breaker: S) -> float: ...

    def idle(self, breaker: S, now: datetime) -> bool: ...

    def explain(self, breaker: S) -> str: ...


class BreakerSource(Generic[E, S]):
    """``outcomes(now)``: offer -> evidence over the window ending ``now``; ``rules``: how breakers move."""

    name = "breaker"

    def __init__(
        self,
        outcomes: Callable[[datetime], Mapping[OfferKey, E]],
        rules: BreakerRulesLike[E, S],
        *,
        ttl_seconds: float = 60.0,
    ) -> None:
        self.outcomes, self.rules, self.ttl_seconds = outcomes, rules, ttl_seconds
        self._breakers: dict[OfferKey, S] = {}

    def breakers(self) -> dict[OfferKey, S]:
        """The breakers now, for inspection."""
        return dict(self._breakers)

    def poll(self, wanted: Wanted, *, timeout_s: float, clock: Callable[[], datetime]) -> PollResult:
        if not any(target.market_provider is not None for target in wanted.targets.values()):
            return PollResult()  # no cloud target: nothing to guard, no query
        now = clock()
        evidence = self.outcomes(now)
        samples: list[SignalSample] = []
        for key in sorted(set(self._breakers) | set(evidence), key=_order):
            before = self._breakers.get(key)
            after = self.rules.step(before, evidence.get(key), now)
            value = self.rules.value(after)
            if before is None or self.rules.value(before) != value:
                _log_change(key, before is None, value, self.rules.explain(after))
            if key not in evidence and self.rules.idle(after, now):
                self._breakers.pop(key, None)
            else:
                self._breakers[key] = after
            samples.append(
                SignalSample(
                    source=BREAKER_SOURCE,
                    key=breaker_key(*key),
                    value=value,
                    observed_at=now,
                    ttl_seconds=self.ttl_seconds,
                )
            )
        return PollResult(samples=samples)


def _order(key: OfferKey) -> tuple[str, str, str]:
    return key[0], key[1] or "", key[2] or ""


def _log_change(key: OfferKey, new: bool, value: float, why: str) -> None:
    if new and value == 0:
        return  # a breaker seen for the first time, closed: nothing happened
    log.log(
        logging.WARNING if value > 0 else logging.INFO,
        "",
        extra={"event": "breaker.changed", "offer": breaker_key(*key), "value": value, "state": why},
    )
