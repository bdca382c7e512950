"""The poll runner: schedules, backoff, last values kept through failures, snapshots, metrics."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta

import pytest

from controlplane.domain import SignalSample
from controlplane.metrics import Metrics
from controlplane.signals.base import PollResult, Wanted
from controlplane.signals.hub import PollSchedule, SignalAgeCollector, SignalHub, merged
from controlplane.signals.queue import QueueDepthSource

T0 = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


class Scripted:
    """A source whose next answers are scripted: a value, a PollResult, or an exception to raise."""

    def __init__(self, name: str, *answers: float | PollResult | Exception) -> None:
        self.name = name
        self.answers = list(answers)
        self.calls: list[float] = []

    def poll(self, wanted: Wanted, *, timeout_s: float, clock: Callable[[], datetime]) -> PollResult:
        self.calls.append(timeout_s)
        answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        if isinstance(answer, PollResult):
            return answer
        return PollResult(
            samples=[
                SignalSample(source="gpu_utilization", key="onprem", value=answer, observed_at=clock(), ttl_seconds=60)
            ]
        )


def hub_of(*sources: Scripted, clock: Clock, interval: float = 10.0, **kwargs: object) -> SignalHub:
    schedule = PollSchedule(interval_s=interval, timeout_s=2.5, max_backoff_s=60)
    return SignalHub([(s, schedule) for s in sources], wanted=Wanted, clock=clock, **kwargs)  # type: ignore[arg-type]


def test_a_failed_poll_keeps_the_last_value_which_then_ages_into_stale() -> None:
    clock = Clock()
    source = Scripted("prometheus", 0.42, RuntimeError("connection refused"))
    hub = hub_of(source, clock=clock)
    assert hub.poll("prometheus")
    clock.advance(30)
    assert not hub.poll("prometheus")  # raised: caught here, never propagated
    sample = hub.snapshot().get("gpu_utilization", "onprem")
    assert sample is not None
    assert sample.value == 0.42
    assert sample.observed_at == T0
    assert not sample.is_stale(clock.now)
    clock.advance(31)
    assert sample.is_stale(clock.now)
    [status] = hub.status()
    assert status.failures_in_a_row == 1
    assert "connection refused" in (status.last_error or "")
    assert source.calls == [2.5, 2.5]  # the schedule's timeout reaches the source


def test_backoff_doubles_up_to_the_cap_and_a_success_resets_it() -> None:
    clock = Clock()
    source = Scripted("aws_spot", *[RuntimeError("throttled")] * 5, 0.5)
    hub = hub_of(source, clock=clock, interval=10.0)
    assert not hub.poll("aws_spot")
    assert hub.status()[0].retry_at is None  # one failure: the next interval tries again
    waits = []
    for _ in range(4):
        assert not hub.poll("aws_spot")
        retry_at = hub.status()[0].retry_at
        assert retry_at is not None
        waits.append((retry_at - clock.now).total_seconds())
        calls = len(source.calls)
        clock.advance(1)
        assert not hub.poll("aws_spot")  # backing off: the source is not called
        assert len(source.calls) == calls
        clock.now = retry_at
    assert waits == [20.0, 40.0, 60.0, 60.0]
    assert hub.poll("aws_spot")
    assert hub.status()[0].retry_at is None
    assert hub.status()[0].failures_in_a_row == 0


def test_partial_problems_are_reported_next_to_the_samples_that_arrived() -> None:
    clock = Clock()
    result = PollResult(
        samples=[
            SignalSample(source="spot_price", key="aws/us-east-1/g5.xlarge", value=0.4, observed_at=T0, ttl_seconds=600)
        ],
        problems=["us-west-2: RequestLimitExceeded"],
    )
    metrics = Metrics.create()
    hub = hub_of(Scripted("aws_spot", result), clock=clock, metrics=metrics)
    assert hub.poll("aws_spot")
    assert hub.status()[0].problems == ["us-west-2: RequestLimitExceeded"]
    assert hub.snapshot().get("spot_price", "aws/us-east-1/g5.xlarge") is not None
    assert metrics.registry.get_sample_value("fusionplane_signal_poll_errors_total", {"source": "aws_spot"}) == 1.0
    assert (
        metrics.registry.get_sample_value("fusionplane_signal_polls_total", {"source": "aws_spot", "outcome": "ok"})
        == 1.0
    )


def test_snapshots_are_copies_a_later_poll_does_not_change() -> None:
    clock = Clock()
    hub = hub_of(Scripted("prometheus", 0.1, 0.9), clock=clock)
    hub.poll("prometheus")
    before = hub.snapshot()
    clock.advance(5)
    hub.poll("prometheus")
    assert before.get("gpu_utilization", "onprem").value == 0.1  # type: ignore[union-attr]
    assert hub.snapshot().get("gpu_utilization", "onprem").value == 0.9  # type: ignore[union-attr]


def test_history_write_failures_never_lose_live_values() -> None:
    clock = Clock()
    written: list[Sequence[SignalSample]] = []

    def broken_history(samples: Sequence[SignalSample]) -> None:
        written.append(samples)
        raise OSError("disk full")

    hub = hub_of(Scripted("prometheus", 0.3), clock=clock, on_samples=broken_history)
    assert hub.poll("prometheus")
    assert len(written) == 1
    assert hub.snapshot().get("gpu_utilization", "onprem") is not None


def test_age_gauge_is_computed_when_scraped() -> None:
    clock = Clock()
    hub = hub_of(Scripted("prometheus", 0.3), clock=clock)
    hub.poll("prometheus")
    clock.advance(75)
    metrics = Metrics.create()
    metrics.registry.register(SignalAgeCollector(hub))
    labels = {"source": "gpu_utilization", "key": "onprem"}
    assert metrics.registry.get_sample_value("fusionplane_signal_age_seconds", labels) == 75.0
    assert metrics.registry.get_sample_value("fusionplane_signal_stale", labels) == 1.0


def test_values_far_past_their_ttl_are_forgotten() -> None:
    clock = Clock()
    old = PollResult(samples=[SignalSample(source="free_gpus", key="gone", value=1, observed_at=T0, ttl_seconds=30)])
    hub = hub_of(Scripted("kubernetes", old, 0.5), clock=clock)
    hub.poll("kubernetes")
    clock.advance(301)  # more than ten TTLs
    hub.poll("kubernetes")
    assert hub.snapshot().get("free_gpus", "gone") is None


def test_queue_depth_source_and_merge_order() -> None:
    clock = Clock()
    source = QueueDepthSource(lambda: 17)
    [sample] = source.poll(Wanted(), timeout_s=1, clock=clock).samples
    assert (sample.source, sample.key, sample.value) == ("queue", "depth", 17.0)
    a = {"free_gpus/x": SignalSample(source="free_gpus", key="x", value=1, observed_at=T0, ttl_seconds=1)}
    b = {"free_gpus/x": SignalSample(source="free_gpus", key="x", value=2, observed_at=T0, ttl_seconds=1)}
    assert merged(a, b)["free_gpus/x"].value == 2


def test_duplicate_source_names_are_refused() -> None:
    with pytest.raises(ValueError, match="unique"):
        hub_of(Scripted("prometheus"), Scripted("prometheus"), clock=Clock())


def test_a_partial_poll_is_logged_when_it_starts_and_when_it_ends_not_on_every_poll(
    caplog: pytest.LogCaptureFixture,
) -> None:
    missing = "gpu_memory/onprem: no series [query: DCGM_FI_DEV_FB_USED]"
    partial = PollResult(samples=[], problems=[missing])
    source = Scripted("prometheus", partial, partial, partial, 0.5, 0.5, partial, partial)
    clock = Clock()
    hub = hub_of(source, clock=clock)
    caplog.set_level(logging.INFO, logger="fusionplane.signals")
    for _ in range(7):
        hub.poll("prometheus")
        clock.advance(10)
    events = [(r.levelno, getattr(r, "event", None)) for r in caplog.records]
    assert events == [
        (logging.WARNING, "signals.partial"),  # missing
        (logging.INFO, "signals.partial_resolved"),  # present again
        (logging.WARNING, "signals.partial"),  # missing once more
    ]
    assert [s.problems for s in hub.status()] == [[missing]]
