"""The spot history ``plan()``'s learned risk reads: ``spot_history/<offer>/<field>`` samples from the store.

Each poll asks an injected callable (the store's ``spot_history`` over the
window, for the policy's spot targets; this layer does not import the store)
and publishes, per offer, its ``launches``, ``refusals``, ``preemptions`` and
``run_hours`` (:data:`~controlplane.domain.reliability.SPOT_HISTORY_FIELDS`).
An offer with no attempt in the window publishes nothing: ``plan()`` then
uses the policy's priors alone, the documented cold start.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Protocol

from controlplane.domain import SPOT, SignalSample
from controlplane.domain.reliability import SPOT_HISTORY_SOURCE, spot_history_key
from controlplane.signals.base import PollResult, Wanted

__all__ = ["HistoryLike", "SpotHistorySource"]

#: (provider, region, instance type)
OfferKey = tuple[str, str | None, str | None]


class HistoryLike(Protocol):
    """One offer's record (``controlplane.store.spot_history.OfferHistory`` in production)."""

    @property
    def launches(self) -> int: ...

    @property
    def refusals(self) -> int: ...

    @property
    def preemptions(self) -> int: ...

    @property
    def run_hours(self) -> float: ...


class SpotHistorySource:
    """``history(now, spot_targets)``: offer -> its record over the window ending ``now``."""

    name = "spot_history"

    def __init__(
        self,
        history: Callable[[datetime, Sequence[str]], Mapping[OfferKey, HistoryLike]],
        *,
        ttl_seconds: float = 120.0,
    ) -> None:
        self.history, self.ttl_seconds = history, ttl_seconds

    def poll(self, wanted: Wanted, *, timeout_s: float, clock: Callable[[], datetime]) -> PollResult:
        spot = sorted(
            name
            for name, target in wanted.targets.items()
            if target.market_provider is not None and target.market == SPOT
        )
        if not spot:
            return PollResult()  # no spot target: no risk to learn, no query
        now = clock()
        samples: list[SignalSample] = []
        for (provider, region, instance_type), record in sorted(
            self.history(now, spot).items(), key=lambda item: tuple(part or "" for part in item[0])
        ):
            values = {
                "launches": float(record.launches),
                "refusals": float(record.refusals),
                "preemptions": float(record.preemptions),
                "run_hours": float(record.run_hours),
            }
            samples += [
                SignalSample(
                    source=SPOT_HISTORY_SOURCE,
                    key=spot_history_key(provider, region, instance_type, field),
                    value=value,
                    observed_at=now,
                    ttl_seconds=self.ttl_seconds,
                )
                for field, value in values.items()
            ]
        return PollResult(samples=samples)
