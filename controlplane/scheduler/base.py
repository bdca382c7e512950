"""What the scheduler's three jobs share: its state, the signal snapshot, and the two acts all of them do.

:class:`SchedulerBase` holds the store, the providers, the policy and the
bookkeeping of launches in flight; placing (:mod:`.placing`), following
(:mod:`.following`) and releasing (:mod:`.releasing`) each add their own
methods on top of it, and :class:`~controlplane.scheduler.executor.Scheduler`
is the three together. Stopping a backend resource and failing an attempt
over are here because more than one job does them.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

from controlplane.dataplane.stager import Stager
from controlplane.domain import (
    Attempt,
    AttemptState,
    PlacementPlan,
    ProviderError,
    SignalSample,
    SignalSnapshot,
    Task,
    Unavailable,
)
from controlplane.domain.tenant_storage import TenantStorage
from controlplane.metrics import Metrics
from controlplane.policy import CAPACITY_SOURCE, Policy, plan
from controlplane.policy_sources import PolicySet
from controlplane.scheduler.outcomes import FailoverRules, is_retryable
from controlplane.scheduler.wakeups import WaitWatcher
from controlplane.store import Shortage, Store, utcnow
from providers.base import Provider

__all__ = [
    "CAPACITY_TTL_S",
    "FENCE_CHECK_S",
    "LAUNCH_GRACE_S",
    "PROBE_LAUNCH_S",
    "SEND_GRACE_S",
    "Planner",
    "SchedulerBase",
    "log",
]

Planner = Callable[[Task, SignalSnapshot, Policy, datetime], PlacementPlan]

log = logging.getLogger("fusionplane.scheduler")

CAPACITY_TTL_S = 30.0
#: a probe chosen less than this long ago counts as in flight even before its attempt row is read back
PROBE_LAUNCH_S = 10.0
#: an attempt reported LOST before its launch was recorded may simply not be launched yet (place_batch
#: records the batch's backend refs after its last launch, while follow runs in another thread); without
#: leadership (several schedulers sharing the work), only after this long is it a launch that never happened
LAUNCH_GRACE_S = 300.0
#: with leadership: how long after an election a launch the previous leader had under way may still
#: arrive at a backend (longer than any provider's client timeouts for one launch call, retries included)
SEND_GRACE_S = 60.0
#: how old a passed fence check may be before the next launch checks again
FENCE_CHECK_S = 1.0


class SchedulerBase:
    def __init__(
        self,
        *,
        store: Store,
        policy: Callable[[], Policy | PolicySet],
        providers: Mapping[str, Provider],
        callback_base: str,
        checkpoint_root: Path | str | None,
        scheduler_id: str,
        metrics: Metrics | None = None,
        batch_size: int = 64,
        clock: Callable[[], datetime] = utcnow,
        planner: Planner = plan,
        signals: Callable[[], Mapping[str, SignalSample]] | None = None,
        storage: TenantStorage | None = None,
        grants: Callable[[str], Mapping[str, Any]] | None = None,
        stager: Stager | None = None,
        follow_in_parallel: bool = True,
    ) -> None:
        self.store, self.policy, self.providers = store, policy, providers
        #: the tenant folders every local path of a task must be in, checked before each launch (None: unchecked)
        self.storage = storage
        self.callback_base, self.checkpoint_root = callback_base, checkpoint_root
        self.scheduler_id, self.metrics, self.batch_size, self.clock = scheduler_id, metrics, batch_size, clock
        #: the pure ``plan()``; tests hand in a faulty one to prove the executor's own checks
        self.planner = planner
        #: the poll hub's latest values (Prometheus, spot prices, cluster capacity, queue depth)
        self.signals = signals
        #: a tenant's worker-spec ``access`` and ``fetch`` blocks (None: the worker's defaults, no s3)
        self.grants = grants
        #: copies local inputs into a cloud target's store before its launch (None: nothing is staged)
        self.stager = stager
        #: the last event whose finished attempt had its backend resource released
        self._release_cursor: int | None = None
        #: attempts whose launch this scheduler is sending (rows written, backend refs not yet recorded)
        self._sending: set[str] = set()
        #: when this scheduler was elected leader (None: it runs without the lease, e.g. in tests)
        self.leading_since: datetime | None = None
        #: attempt id -> provider: releases whose cancel failed, tried again each round
        self._release_retries: dict[str, str] = {}
        #: half-open breaker key -> (the task sent as its probe, when): one probe in flight per breaker
        self._probes: dict[str, tuple[str, datetime]] = {}
        self.probe_launch_s = PROBE_LAUNCH_S
        #: one thread per backend in ``follow`` (serve); off, backends are asked in turn, in a fixed order (the
        #: simulator: no threads, and the same store writes in the same order on every run of a seed)
        self.follow_in_parallel = follow_in_parallel
        #: what waiting tasks' reasons depend on, as the last batch saw it (``scheduler/wakeups.py``)
        self._waits = WaitWatcher()

    def snapshot(self, policy: Policy | PolicySet) -> SignalSnapshot:
        """The hub's latest values, with the free capacity of providers configured here asked for now.

        A provider's own answer is newer than any poll, so it wins over the
        hub's value for the same target.
        """
        now = self.clock()
        samples: dict[str, SignalSample] = dict(self.signals()) if self.signals is not None else {}
        for target in policy.targets:
            provider = self.providers.get(target.provider)
            if provider is None:
                continue
            try:
                free = provider.capacity(target).free
            except ProviderError:
                continue  # no sample: the planner treats it as missing, never as a reason
            if free is not None:
                key = f"{CAPACITY_SOURCE}/{target.name}"
                samples[key] = SignalSample(
                    source=CAPACITY_SOURCE,
                    key=target.name,
                    value=float(free),
                    observed_at=now,
                    ttl_seconds=CAPACITY_TTL_S,
                )
        return SignalSnapshot(taken_at=now, samples=samples)

    def start_leading(self) -> None:
        """This scheduler was just elected: note when, and release from here on (reconciliation covers before).

        The cursor is taken now, not at the next release round, so attempts
        ending in between are released too.
        """
        self.leading_since = self.clock()
        self._release_cursor = self.store.last_event_id()

    def _stop_resource(self, attempt_id: str, provider_name: str) -> bool:
        """Cancel an attempt's backend resource (gone already is fine); False, logged, when the cancel failed."""
        provider = self.providers.get(provider_name)
        if provider is None:
            return True
        try:
            provider.cancel(attempt_id)
        except (ProviderError, Unavailable) as exc:
            log.warning("", extra={"event": "attempt.release_failed", "attempt_id": attempt_id, "error": str(exc)})
            return False
        return True

    def _fail_over(
        self,
        attempt: Attempt,
        rules: FailoverRules,
        *,
        ended: AttemptState | None,
        trigger: str,
        reason: str,
        exit_code: int | None = None,
        retryable: Callable[[AttemptState, int | None], bool] = is_retryable,
        shortage: Shortage | None = None,
    ) -> int:
        """End the attempt (unless it has ended) and re-queue or fail its task, in one store transaction."""
        result = self.store.fail_over(
            attempt.id,
            actor=self.scheduler_id,
            trigger=trigger,
            reason=reason,
            ended=ended,
            exit_code=exit_code,
            retryable=retryable,
            max_attempts=rules.max_attempts,
            backoff_seconds=rules.backoff_seconds,
            shortage=shortage,
        )
        if result.outcome is None:
            if not result.ended:
                return 0  # another scheduler or the worker's callback got there first
            # ended here, but the task waits on a live sibling of its hedged launch (or has finished)
            if self.metrics and ended is not None:
                self.metrics.attempt_ended(provider=attempt.provider, target=attempt.target, outcome=ended.value)
            return 1
        log.warning(
            "",
            extra={
                "event": "attempt.failover",
                "task_id": attempt.task_id,
                "attempt_id": attempt.id,
                "target": attempt.target,
                "trigger": trigger,
                "reason": reason,
                "outcome": result.outcome,
                "attempts": result.attempts,
            },
        )
        if self.metrics:
            self.metrics.failovers.labels(target=attempt.target, trigger=trigger, outcome=result.outcome).inc()
            if ended is not None:
                self.metrics.attempt_ended(provider=attempt.provider, target=attempt.target, outcome=ended.value)
        return 1
