"""The poll runner: every source on its own schedule, one latest value per signal, snapshots on demand.

Each source gets an interval, a timeout, jitter (so pollers of several
control planes do not hit a backend in step) and exponential backoff after
failures. A poll that raises marks the source failed and keeps every value it
produced before: they age, turn stale at their TTL, and the planner's
conservative rules take over. Nothing a source does can stop the control
plane: every exception is caught, counted and logged here.

``snapshot()`` copies the latest values into one immutable
:class:`SignalSnapshot`; the scheduler takes one per planning batch, so every
receipt in a batch saw the same world.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from controlplane.domain import SignalSample, SignalSnapshot
from controlplane.signals.base import PollResult, SignalSource, Wanted

if TYPE_CHECKING:
    from apscheduler.schedulers.base import BaseScheduler

    from controlplane.metrics import Metrics

__all__ = ["PollSchedule", "SignalAgeCollector", "SignalHub", "SourceStatus", "merged"]

log = logging.getLogger("fusionplane.signals")

#: a value this much older than its TTL is dropped from memory (history keeps it)
_FORGET_AFTER_TTLS = 10


def _utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True, kw_only=True)
class PollSchedule:
    """How often and how patiently one source is polled."""

    interval_s: float
    timeout_s: float
    #: up to this many seconds added at random to each run
    jitter_s: float = 0.0
    #: the longest wait after repeated failures
    max_backoff_s: float = 300.0


@dataclass(kw_only=True)
class SourceStatus:
    """What ``fusionctl signals`` shows per source."""

    name: str
    schedule: PollSchedule
    polls: int = 0
    failures_in_a_row: int = 0
    last_success_at: datetime | None = None
    last_attempt_at: datetime | None = None
    last_error: str | None = None
    last_duration_s: float | None = None
    problems: list[str] = field(default_factory=list)
    #: no poll before this time (backoff)
    retry_at: datetime | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "source": self.name,
            "interval_s": self.schedule.interval_s,
            "timeout_s": self.schedule.timeout_s,
            "polls": self.polls,
            "failures_in_a_row": self.failures_in_a_row,
            "last_success_at": self.last_success_at.isoformat() if self.last_success_at else None,
            "last_attempt_at": self.last_attempt_at.isoformat() if self.last_attempt_at else None,
            "last_duration_s": None if self.last_duration_s is None else round(self.last_duration_s, 4),
            "last_error": self.last_error,
            "problems": list(self.problems),
            "retry_at": self.retry_at.isoformat() if self.retry_at else None,
        }


class SignalHub:
    """The sources, their schedules, and the newest sample of every signal."""

    def __init__(
        self,
        sources: Sequence[tuple[SignalSource, PollSchedule]],
        *,
        wanted: Callable[[], Wanted],
        clock: Callable[[], datetime] = _utcnow,
        on_samples: Callable[[Sequence[SignalSample]], object] | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        names = [source.name for source, _ in sources]
        if len(set(names)) != len(names):
            raise ValueError(f"source names must be unique: {names}")
        self._sources = {source.name: source for source, _ in sources}
        self._status = {source.name: SourceStatus(name=source.name, schedule=schedule) for source, schedule in sources}
        self._wanted, self._clock, self._on_samples, self._metrics = wanted, clock, on_samples, metrics
        self._latest: dict[str, SignalSample] = {}
        self._lock = threading.Lock()

    # -- reading -----------------------------------------------------------------
    def snapshot(self, now: datetime | None = None) -> SignalSnapshot:
        """Every latest sample, as one immutable snapshot taken ``now``."""
        with self._lock:
            samples = dict(self._latest)
        return SignalSnapshot(taken_at=now or self._clock(), samples=samples)

    def samples(self) -> dict[str, SignalSample]:
        with self._lock:
            return dict(self._latest)

    def status(self) -> list[SourceStatus]:
        with self._lock:
            return [SourceStatus(**vars(s)) for s in self._status.values()]

    @property
    def names(self) -> list[str]:
        return list(self._sources)

    # -- polling -----------------------------------------------------------------
    def poll(self, name: str, *, force: bool = False) -> bool:
        """Poll one source now (unless it is backing off); True when the poll produced a result."""
        status = self._status[name]
        now = self._clock()
        if not force and status.retry_at is not None and now < status.retry_at:
            return False
        source = self._sources[name]
        started = time.perf_counter()
        status.last_attempt_at = now
        try:
            result: PollResult = source.poll(self._wanted(), timeout_s=status.schedule.timeout_s, clock=self._clock)
        except Exception as exc:  # a source must never take the control plane down
            self._failed(status, f"{type(exc).__name__}: {exc}", time.perf_counter() - started)
            return False
        self._succeeded(status, result, time.perf_counter() - started)
        return True

    def poll_all(self, *, force: bool = False) -> None:
        for name in self._sources:
            self.poll(name, force=force)

    def _succeeded(self, status: SourceStatus, result: PollResult, seconds: float) -> None:
        now = self._clock()
        samples = list(result.samples)
        with self._lock:
            for sample in samples:
                self._latest[f"{sample.source}/{sample.key}"] = sample
            self._forget_old(now)
            recovered = status.failures_in_a_row > 0
            before = status.problems
            status.polls += 1
            status.failures_in_a_row = 0
            status.last_success_at = now
            status.last_error = None
            status.last_duration_s = seconds
            status.problems = list(result.problems)
            status.retry_at = None
        if self._metrics is not None:
            self._metrics.signal_polls.labels(source=status.name, outcome="ok").inc()
            self._metrics.signal_poll_seconds.labels(source=status.name).observe(seconds)
            if result.problems:
                self._metrics.signal_poll_errors.labels(source=status.name).inc(len(result.problems))
        if recovered:
            log.info("", extra={"event": "signals.source_back", "source": status.name})
        self._log_problem_changes(status.name, before=before, now=result.problems)
        if self._on_samples is not None and samples:
            try:
                self._on_samples(samples)
            except Exception:  # history is a convenience: a store hiccup never drops live values
                log.exception("", extra={"event": "signals.history_write_failed", "source": status.name})

    @staticmethod
    def _log_problem_changes(source: str, *, before: Sequence[str], now: Sequence[str]) -> None:
        """Log a problem when it appears and when it goes, not on every poll that still has it."""
        for problem in now:
            if problem not in before:
                log.warning("", extra={"event": "signals.partial", "source": source, "problem": problem})
        for problem in before:
            if problem not in now:
                log.info("", extra={"event": "signals.partial_resolved", "source": source, "problem": problem})

    def _failed(self, status: SourceStatus, error: str, seconds: float) -> None:
        now = self._clock()
        with self._lock:
            status.polls += 1
            status.failures_in_a_row += 1
            status.last_error = error
            status.last_duration_s = seconds
            backoff = min(
                status.schedule.interval_s * 2 ** (status.failures_in_a_row - 1), status.schedule.max_backoff_s
            )
            status.retry_at = now + timedelta(seconds=backoff) if status.failures_in_a_row > 1 else None
            first = status.failures_in_a_row == 1
        if self._metrics is not None:
            self._metrics.signal_polls.labels(source=status.name, outcome="error").inc()
            self._metrics.signal_poll_errors.labels(source=status.name).inc()
            self._metrics.signal_poll_seconds.labels(source=status.name).observe(seconds)
        if first:  # log the change, not every retry
            log.warning("", extra={"event": "signals.source_down", "source": status.name, "error": error})

    def _forget_old(self, now: datetime) -> None:
        dead = [
            key
            for key, sample in self._latest.items()
            if sample.ttl_seconds != float("inf")
            and (now - sample.observed_at).total_seconds() > sample.ttl_seconds * _FORGET_AFTER_TTLS
        ]
        for key in dead:
            del self._latest[key]

    def close(self) -> None:
        """Release what the sources hold (HTTP connection pools, API clients)."""
        for source in self._sources.values():
            close = getattr(source, "close", None)
            if callable(close):
                try:
                    close()
                except Exception:  # closing is best effort at shutdown
                    log.exception("", extra={"event": "signals.close_failed", "source": source.name})

    # -- wiring --------------------------------------------------------------------
    def schedule(self, jobs: BaseScheduler) -> None:
        """One APScheduler interval job per source, with its jitter; backoff is applied inside the job."""
        for name, status in self._status.items():
            jobs.add_job(
                self.poll,
                "interval",
                seconds=status.schedule.interval_s,
                jitter=status.schedule.jitter_s or None,
                args=(name,),
                id=f"signals-{name}",
                next_run_time=datetime.now(UTC),
                max_instances=1,
                coalesce=True,
            )

    def ages(self, now: datetime | None = None) -> Iterable[tuple[str, str, float, bool]]:
        """(source, key, age in seconds, stale) for every latest sample: what the age gauge exports."""
        now = now or self._clock()
        for sample in self.samples().values():
            age = max((now - sample.observed_at).total_seconds(), 0.0)
            yield sample.source, sample.key, age, age > sample.ttl_seconds


def merged(*parts: Mapping[str, SignalSample]) -> dict[str, SignalSample]:
    """Later parts win: the scheduler lays provider capacity it just asked for over the hub's values."""
    out: dict[str, SignalSample] = {}
    for part in parts:
        out.update(part)
    return out


class SignalAgeCollector:
    """``fusionplane_signal_age_seconds{source,key}`` and ``fusionplane_signal_stale{source,key}``, computed at scrape.

    Ages grow between polls, so a gauge set at poll time would understate
    them exactly when a poller is stuck, the case worth alerting on.
    """

    def __init__(self, hub: SignalHub) -> None:
        self.hub = hub

    def collect(self) -> Iterable[Any]:
        from prometheus_client.core import GaugeMetricFamily

        age = GaugeMetricFamily(
            "fusionplane_signal_age_seconds", "Age of the newest value of each signal", labels=["source", "key"]
        )
        stale = GaugeMetricFamily(
            "fusionplane_signal_stale", "1 when the newest value is older than its TTL", labels=["source", "key"]
        )
        for source, key, seconds, is_stale in self.hub.ages():
            age.add_metric([source, key], seconds)
            stale.add_metric([source, key], 1.0 if is_stale else 0.0)
        yield age
        yield stale
