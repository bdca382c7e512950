"""Which ``serve`` replica schedules: the lease holder, renewed every third of the lease.

Every replica serves the API and polls signals; only the leader runs the
scheduler's jobs (place, follow, release, reconcile), each through
:meth:`Leadership.guard`. On election the scheduler gets a store fenced
with the new token and reconciliation runs at once (adopt what the previous
leader launched, re-queue what it claimed but never launched). A leader
that cannot renew (database unreachable) keeps leading only until its own
lease would expire, minus a margin, then stops; one whose write is refused
by the fence (:class:`~controlplane.store.Fenced`) stops at once.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any, TypeVar

from sqlalchemy.exc import SQLAlchemyError

from controlplane.metrics import Metrics
from controlplane.store import Fence, Fenced, LeaderLease, LeaseState, Store, utcnow

__all__ = ["Leadership"]

log = logging.getLogger("fusionplane.leader")

T = TypeVar("T")


class Leadership:
    """One replica's view of the scheduler lease: renew it, know whether it leads, step down."""

    def __init__(
        self,
        *,
        store: Store,
        holder: str,
        lease_seconds: float,
        on_elected: Callable[[Store], None],
        metrics: Metrics | None = None,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.lease = LeaderLease(store, holder=holder, seconds=lease_seconds)
        self.holder, self.lease_seconds = holder, lease_seconds
        self.on_elected, self.metrics, self.clock = on_elected, metrics, clock
        self._lock = threading.Lock()
        self._leading: Fence | None = None
        #: until when our last successful renewal lets us lead, by our clock
        self._valid_until: datetime | None = None
        self.last_seen: LeaseState | None = None

    @property
    def is_leader(self) -> bool:
        with self._lock:
            if self._leading is None or self._valid_until is None:
                return False
            return self.clock() < self._valid_until

    @property
    def renew_every_seconds(self) -> float:
        return self.lease_seconds / 3

    def renew(self) -> bool:
        """Acquire or renew the lease; returns whether this replica leads afterwards."""
        try:
            state = self.lease.acquire()
        except SQLAlchemyError as exc:
            # cannot reach the database: go on leading only while our lease surely still holds
            log.warning("", extra={"event": "leader.renew_failed", "holder": self.holder, "error": str(exc)})
            if not self.is_leader and self._leading is not None:
                self.step_down("lease not renewed before it expired")
            return self.is_leader
        self.last_seen = state
        if not state.mine:
            if self._leading is not None:
                self.step_down(f"lease held by {state.holder}")
            return False
        # renewed: lead until a margin before the stored expiry, so a slow write never outlives the lease
        margin = timedelta(seconds=self.renew_every_seconds / 2)
        with self._lock:
            elected = self._leading is None or self._leading.token != state.token
            self._leading = Fence(state.name, state.holder, state.token)
            self._valid_until = state.expires_at - margin
        if elected:
            # winning the lease is the normal start of a replica's leadership; losing it is the warning
            log.info("", extra={"event": "leader.elected", "holder": self.holder, "token": state.token})
            if self.metrics:
                self.metrics.leader_changes.inc()
                self.metrics.leader.set(1)
            self.on_elected(self.lease.store.fenced(self._leading))
        return True

    def step_down(self, reason: str, *, lost: bool = True) -> None:
        """Stop leading; ``lost`` (the lease taken, expired or fenced) is a warning, a clean resign is not."""
        with self._lock:
            was = self._leading
            self._leading, self._valid_until = None, None
        if was is not None:
            event = {"holder": self.holder, "token": was.token, "reason": reason}
            if lost:
                log.warning("", extra={"event": "leader.deposed", **event})
            else:
                log.info("", extra={"event": "leader.resigned", **event})
            if self.metrics:
                self.metrics.leader.set(0)

    def resign(self) -> None:
        """Give the lease back at a clean shutdown, so another replica takes over without waiting."""
        if self._leading is None:
            return
        self.step_down("shutting down", lost=False)
        try:
            self.lease.resign()
        except SQLAlchemyError as exc:
            log.warning("", extra={"event": "leader.resign_failed", "holder": self.holder, "error": str(exc)})

    def guard(self, job: Callable[..., T], *, default: T) -> Callable[..., T]:
        """``job`` run only while this replica leads; a fenced write makes it step down."""

        def run(*args: Any, **kwargs: Any) -> T:
            if not self.is_leader:
                return default
            try:
                return job(*args, **kwargs)
            except Fenced as exc:
                self.step_down(str(exc))
                return default

        run.__name__ = getattr(job, "__name__", "job")
        return run

    def status(self) -> dict[str, Any]:
        """For ``/readyz`` and ``fusionctl``: this replica, whether it leads, and the lease as last seen."""
        return {
            "replica": self.holder,
            "is_leader": self.is_leader,
            "lease_seconds": self.lease_seconds,
            "lease": self.last_seen.json() if self.last_seen is not None else None,
        }
