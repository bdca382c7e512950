"""The spot circuit breaker: the pure state machine, its thresholds in the policy, and its poller."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from controlplane.domain import Target
from controlplane.policy import PolicyError, parse_policy
from controlplane.policy.breaker import Breaker, BreakerParams, BreakerRules, BreakerState, step
from controlplane.signals.base import Wanted, wanted_from_targets
from controlplane.signals.breaker import BreakerSource, OfferKey
from controlplane.store.offer_stats import OfferOutcomes

T0 = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
PARAMS = BreakerParams()  # the documented defaults: 30 min window, 5 attempts, open 0.5, close 0.2, 300 s .. 3600 s
OFFER: OfferKey = ("aws", "us-east-1", "g4dn.xlarge")


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def seen(
    failures: int = 0,
    successes: int = 0,
    *,
    failed_at: float | None = None,
    ok_at: float | None = None,
    launched_at: float | None = None,
) -> OfferOutcomes:
    """Evidence as the store counts it; ``*_at`` are creation times (seconds after T0) of the newest attempts."""
    moments = [m for m in (failed_at, ok_at, launched_at) if m is not None]
    return OfferOutcomes(
        provider="aws",
        region="us-east-1",
        instance_type="g4dn.xlarge",
        preempted=failures,
        succeeded=successes,
        launching=1 if launched_at is not None else 0,
        last_failure_created_at=None if failed_at is None else at(failed_at),
        last_success_created_at=None if ok_at is None else at(ok_at),
        last_created_at=at(max(moments)) if moments else None,
    )


def opened(now: float = 0) -> Breaker:
    breaker = step(None, seen(3, 2, failed_at=now - 10, ok_at=now - 20), PARAMS, at(now))
    assert breaker.state is BreakerState.OPEN
    return breaker


# -- the state machine -----------------------------------------------------------------------------


def test_a_new_offer_is_closed_and_few_attempts_never_open_it() -> None:
    assert step(None, None, PARAMS, T0).state is BreakerState.CLOSED
    assert step(None, None, PARAMS, T0).value == 0
    every_one_failed = step(None, seen(4, 0, failed_at=-1), PARAMS, T0)  # 4 < breaker_min_attempts
    assert every_one_failed.state is BreakerState.CLOSED


def test_it_opens_when_the_failure_rate_reaches_the_open_rate_over_enough_attempts() -> None:
    assert step(None, seen(2, 3, failed_at=-1), PARAMS, T0).state is BreakerState.CLOSED  # 40 % < 50 %
    breaker = step(None, seen(3, 3, failed_at=-1), PARAMS, T0)  # exactly 50 %
    assert breaker.state is BreakerState.OPEN
    assert breaker.value == 1
    assert breaker.reopen_at == at(300)
    assert "3 of 6 attempts failed (50%)" in breaker.reason


def test_open_holds_for_the_cool_down_then_half_opens_for_one_probe() -> None:
    breaker = opened()
    assert step(breaker, seen(3, 2, failed_at=-10), PARAMS, at(299)) == breaker
    half = step(breaker, seen(3, 2, failed_at=-10), PARAMS, at(300))
    assert half.state is BreakerState.HALF_OPEN
    assert half.value == 0.5
    assert half.probe_after == at(300)
    # nothing launched yet: still half-open, still letting a probe through
    assert step(half, seen(3, 2, failed_at=-10), PARAMS, at(315)) == half


def test_once_a_probe_is_launching_the_offer_is_held_until_its_verdict() -> None:
    half = step(opened(), None, PARAMS, at(300))
    probing = step(half, seen(3, 2, failed_at=-10, launched_at=305), PARAMS, at(315))
    assert probing.state is BreakerState.HALF_OPEN
    assert probing.probing
    assert probing.value == 1  # no second probe while the first is out
    assert step(probing, seen(3, 2, failed_at=-10, launched_at=305), PARAMS, at(330)) == probing


def test_a_probe_that_gets_capacity_closes_it() -> None:
    half = step(opened(), None, PARAMS, at(300))
    probing = step(half, seen(0, 0, launched_at=305), PARAMS, at(315))
    closed = step(probing, seen(0, 1, ok_at=305), PARAMS, at(330))  # the old failures aged out of the window
    assert closed.state is BreakerState.CLOSED
    assert closed.value == 0
    assert closed.closed_at == at(330)


def test_a_failed_probe_reopens_it_with_a_longer_cool_down_up_to_the_max() -> None:
    breaker = opened()
    cooldowns = []
    now = 0.0
    for _ in range(6):
        now = (breaker.reopen_at - T0).total_seconds()  # type: ignore[operator]
        half = step(breaker, None, PARAMS, at(now))
        assert half.state is BreakerState.HALF_OPEN
        breaker = step(half, seen(1, 0, failed_at=now + 5), PARAMS, at(now + 15))
        assert breaker.state is BreakerState.OPEN
        assert "probe failed" in breaker.reason
        cooldowns.append(breaker.cooldown_seconds)
    assert cooldowns == [600, 1200, 2400, 3600, 3600, 3600]


def test_a_failure_beside_a_good_probe_in_the_same_poll_reopens_it() -> None:
    half = step(opened(), None, PARAMS, at(300))
    assert step(half, seen(1, 1, failed_at=306, ok_at=305), PARAMS, at(315)).state is BreakerState.OPEN


def test_hysteresis_a_good_probe_closes_only_at_or_below_the_close_rate() -> None:
    half = step(opened(), None, PARAMS, at(300))
    # 3 failures of 8 (37.5 %) are still in the window: between the rates, so it probes again
    again = step(half, seen(3, 5, failed_at=-10, ok_at=305), PARAMS, at(315))
    assert again.state is BreakerState.HALF_OPEN
    assert not again.probing
    assert again.probe_after == at(315)
    assert "another probe" in again.reason
    # older probes do not count twice: nothing new since 315
    assert step(again, seen(3, 5, failed_at=-10, ok_at=305), PARAMS, at(330)) == again
    closed = step(again, seen(2, 8, failed_at=-10, ok_at=320), PARAMS, at(345))  # 20 %
    assert closed.state is BreakerState.CLOSED


def test_no_flapping_a_rate_between_the_two_thresholds_changes_nothing() -> None:
    breaker: Breaker | None = None
    changes = 0
    for i in range(200):  # the rate wanders between 25 % and 45 % for 50 minutes
        failures = 5 + i % 5
        evidence = seen(failures, 20 - failures, failed_at=i * 15 - 1, ok_at=i * 15 - 2)
        after = step(breaker, evidence, PARAMS, at(i * 15))
        changes += breaker is not None and after.state is not breaker.state
        breaker = after
    assert breaker is not None
    assert breaker.state is BreakerState.CLOSED
    assert changes == 0


def test_reopening_soon_after_closing_escalates_the_cool_down() -> None:
    half = step(opened(), None, PARAMS, at(300))
    closed = step(half, seen(0, 1, ok_at=305), PARAMS, at(315))
    assert closed.state is BreakerState.CLOSED
    again = step(closed, seen(3, 3, failed_at=400), PARAMS, at(420))
    assert again.state is BreakerState.OPEN
    assert again.cooldown_seconds == 600  # not back to 300: it failed again within a window of closing
    later = step(closed, seen(3, 3, failed_at=2200), PARAMS, at(315 + 1800))
    assert later.cooldown_seconds == 300  # a window after closing, it starts over


def test_a_probe_without_a_verdict_lets_another_probe_through_after_the_cool_down() -> None:
    half = step(opened(), None, PARAMS, at(300))
    probing = step(half, seen(0, 0, launched_at=305), PARAMS, at(315))
    assert step(probing, None, PARAMS, at(314 + 300)).probing  # the probe was cancelled: wait a cool-down
    freed = step(probing, None, PARAMS, at(315 + 300))
    assert freed.state is BreakerState.HALF_OPEN
    assert not freed.probing
    assert freed.value == 0.5
    assert freed.probe_after == at(615)


def test_idle_breakers_are_the_closed_ones_with_nothing_to_remember() -> None:
    assert Breaker().idle(T0, PARAMS)
    assert not opened().idle(T0, PARAMS)
    closed = Breaker(state=BreakerState.CLOSED, closed_at=T0)
    assert not closed.idle(at(1799), PARAMS)
    assert closed.idle(at(1800), PARAMS)


# -- the thresholds in the policy ------------------------------------------------------------------

TARGETS = [{"name": "local", "provider": "local", "private": True}]


def test_breaker_thresholds_have_documented_defaults_and_are_read_from_the_policy() -> None:
    assert BreakerParams.from_thresholds(parse_policy({"targets": TARGETS}).thresholds) == PARAMS
    custom = {
        "breaker_window_seconds": 600,
        "breaker_min_attempts": 3,
        "breaker_open_failure_rate": 0.7,
        "breaker_close_failure_rate": 0.1,
        "breaker_cooldown_seconds": 60,
        "breaker_max_cooldown_seconds": 600,
    }
    params = BreakerParams.from_thresholds(parse_policy({"targets": TARGETS, "thresholds": custom}).thresholds)
    assert params == BreakerParams(
        window_seconds=600,
        min_attempts=3,
        open_failure_rate=0.7,
        close_failure_rate=0.1,
        cooldown_seconds=60,
        max_cooldown_seconds=600,
    )


@pytest.mark.parametrize(
    ("thresholds", "path", "message"),
    [
        ({"breaker_min_attempts": 0}, "thresholds.breaker_min_attempts", "whole number >= 1"),
        ({"breaker_min_attempts": 2.5}, "thresholds.breaker_min_attempts", "whole number >= 1"),
        ({"breaker_min_attempts": True}, "thresholds.breaker_min_attempts", "whole number >= 1"),
        ({"breaker_open_failure_rate": 0}, "thresholds.breaker_open_failure_rate", "above 0"),
        ({"breaker_open_failure_rate": 1.5}, "thresholds.breaker_open_failure_rate", "within 0..1"),
        ({"breaker_close_failure_rate": 0.5}, "thresholds.breaker_close_failure_rate", "below breaker_open"),
        ({"breaker_window_seconds": 0}, "thresholds.breaker_window_seconds", "above 0"),
        ({"breaker_cooldown_seconds": 0}, "thresholds.breaker_cooldown_seconds", "above 0"),
        ({"breaker_max_cooldown_seconds": 100}, "thresholds.breaker_max_cooldown_seconds", "at least"),
        ({"breaker_window_seconds": "600"}, "thresholds.breaker_window_seconds", "must be a number"),
    ],
)
def test_bad_breaker_thresholds_name_the_field(thresholds: dict[str, Any], path: str, message: str) -> None:
    with pytest.raises(PolicyError) as caught:
        parse_policy({"targets": TARGETS, "thresholds": thresholds})
    assert caught.value.path == path
    assert message in caught.value.message


# -- the poller ------------------------------------------------------------------------------------

CLOUD = wanted_from_targets(
    [Target(name="aws", provider="aws", private=False, regions=("us-east-1",), instance_types=("g4dn.xlarge",))]
)


class Evidence:
    """What the fake store answers, and the windows it was asked for."""

    def __init__(self) -> None:
        self.now: dict[OfferKey, OfferOutcomes] = {}
        self.asked: list[datetime] = []

    def __call__(self, now: datetime) -> Mapping[OfferKey, OfferOutcomes]:
        self.asked.append(now)
        return dict(self.now)


def poll(source: BreakerSource[Any, Any], wanted: Wanted, now: datetime) -> dict[str, float]:
    result = source.poll(wanted, timeout_s=1, clock=lambda: now)
    assert all(s.source == "breaker" and s.observed_at == now and s.ttl_seconds == 60 for s in result.samples)
    return {s.key: s.value for s in result.samples}


def test_the_poller_publishes_one_sample_per_offer_and_keeps_the_states() -> None:
    evidence = Evidence()
    source = BreakerSource(evidence, BreakerRules(lambda: PARAMS))
    other: OfferKey = ("azure", "eastus", None)
    evidence.now = {
        OFFER: seen(4, 1, failed_at=-5),
        other: OfferOutcomes(provider="azure", region="eastus", instance_type=None, succeeded=3),
    }
    assert poll(source, CLOUD, T0) == {"aws/us-east-1/g4dn.xlarge": 1.0, "azure/eastus/-": 0.0}
    assert source.breakers()[OFFER].state is BreakerState.OPEN
    evidence.now = {}  # the failures aged out; the breaker remembers it is open
    # the idle closed one is written a last time, then forgotten (closed with nothing to remember)
    assert poll(source, CLOUD, at(15)) == {"aws/us-east-1/g4dn.xlarge": 1.0, "azure/eastus/-": 0.0}
    assert other not in source.breakers()
    assert poll(source, CLOUD, at(300)) == {"aws/us-east-1/g4dn.xlarge": 0.5}
    evidence.now = {OFFER: seen(0, 0, launched_at=305)}
    assert poll(source, CLOUD, at(315)) == {"aws/us-east-1/g4dn.xlarge": 1.0}
    evidence.now = {OFFER: seen(0, 1, ok_at=305)}
    assert poll(source, CLOUD, at(330)) == {"aws/us-east-1/g4dn.xlarge": 0.0}


def test_without_cloud_targets_the_poller_asks_nothing() -> None:
    evidence = Evidence()
    source = BreakerSource(evidence, BreakerRules(lambda: PARAMS))
    local_only = wanted_from_targets([Target(name="local", provider="local", private=True)])
    assert poll(source, local_only, T0) == {}
    assert evidence.asked == []
