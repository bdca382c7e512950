"""Which plans with no candidate wait and which fail at once, and the waiting task's pacing (pure)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from controlplane.domain import (
    Candidate,
    InsufficientCapacity,
    PlacementPlan,
    PriceTooHigh,
    ProviderError,
    QuotaExceeded,
    Rejection,
    Task,
    TaskKind,
    TaskSpec,
    TaskState,
    Throttled,
    Unavailable,
)
from controlplane.scheduler.queueing import (
    WAIT_RECHECK_MAX_S,
    WAIT_RECHECK_S,
    WAITABLE_CODES,
    max_queue_seconds,
    no_launch,
    overdue,
    recheck_after,
    shortage_wait,
)
from controlplane.store import Shortage

NOW = datetime(2026, 12, 4, 12, 0, tzinfo=UTC)


def task(*, deadline: int | None = None, since: datetime | None = None, reason: str | None = None) -> Task:
    spec = TaskSpec(
        tenant="acme",
        kind=TaskKind.IMAGE,
        source_uri="s3://in/a.png",
        target_uri="s3://in/b.png",
        output_uri="s3://out/c.png",
        deadline_seconds=deadline,
    )
    return Task(
        id="tsk_1",
        spec=spec,
        state=TaskState.PLANNED,
        created_at=NOW - timedelta(seconds=5),
        updated_at=NOW,
        queue_reason=reason,
        queued_since=since,
    )


def plan(*codes: str, candidates: tuple[Candidate, ...] = ()) -> PlacementPlan:
    rejections = tuple(Rejection(target=f"t{n}", code=code, detail="d") for n, code in enumerate(codes))
    return PlacementPlan(
        task_id="tsk_1", policy_version="v", decided_at=NOW, candidates=candidates, rejections=rejections
    )


@pytest.mark.parametrize(
    "code", ["no_capacity", "stale_price", "breaker_open", "price_above_max", "budget_exhausted", "budget_unknown"]
)
def test_reasons_time_can_fix_wait(code: str) -> None:
    outcome = no_launch(task=task(), decision=plan(code), history=[], now=NOW, max_queue_s=3600)
    assert (outcome.wait, outcome.failure) == (f"t0: {code}", None)
    # what it waits for wakes it (scheduler/wakeups.py): the timer is only the safety net
    assert outcome.not_before == NOW + timedelta(seconds=WAIT_RECHECK_S) == NOW + timedelta(minutes=30)


@pytest.mark.parametrize(
    ("waited_min", "sleeps_min"), [(0, 30), (10, 30), (30, 30), (45, 45), (60, 60), (120, 120), (240, 240), (600, 240)]
)
def test_the_safety_net_grows_with_the_wait_from_30_minutes_to_4_hours(waited_min: int, sleeps_min: int) -> None:
    since = NOW - timedelta(minutes=waited_min)
    waiting = task(since=since, reason="t0: no_capacity")
    outcome = no_launch(task=waiting, decision=plan("no_capacity"), history=[], now=NOW, max_queue_s=86_400)
    assert outcome.not_before == NOW + timedelta(minutes=sleeps_min)
    assert recheck_after(waited_min * 60.0) == sleeps_min * 60.0
    assert WAIT_RECHECK_S <= recheck_after(waited_min * 60.0) <= WAIT_RECHECK_MAX_S == 4 * 3600


@pytest.mark.parametrize("codes", [("private_data",), ("excluded_by_rule", "private_data"), ("a_future_code",), ()])
def test_reasons_no_wait_can_fix_fail_at_once(codes: tuple[str, ...]) -> None:
    outcome = no_launch(task=task(), decision=plan(*codes), history=[], now=NOW, max_queue_s=3600)
    assert outcome.wait is None
    assert outcome.failure == "no placement: " + ("; ".join(f"t{n}: {c}" for n, c in enumerate(codes)) or "no targets")


def test_one_waitable_rejection_is_enough_to_wait() -> None:
    outcome = no_launch(
        task=task(), decision=plan("private_data", "no_capacity"), history=[], now=NOW, max_queue_s=3600
    )
    assert outcome.wait == "t0: private_data; t1: no_capacity"


def test_candidates_this_scheduler_refused_fail_at_once() -> None:
    candidate = Candidate(target="k8s", provider="kubernetes", private=True)
    outcome = no_launch(
        task=task(),
        decision=plan(candidates=(candidate,)),
        history=["k8s: provider kubernetes is not configured"],
        now=NOW,
        max_queue_s=3600,
    )
    assert outcome.failure == "every candidate failed to launch: k8s: provider kubernetes is not configured"


def test_the_safety_net_wait_never_passes_the_limit() -> None:
    waited = task(since=NOW - timedelta(seconds=115), reason="t0: no_capacity")
    outcome = no_launch(task=waited, decision=plan("no_capacity"), history=[], now=NOW, max_queue_s=120)
    assert outcome.not_before == NOW + timedelta(seconds=5)  # the limit, not a 30-minute wait past it


def test_a_bad_or_missing_threshold_falls_back_to_the_default() -> None:
    assert max_queue_seconds(object()) == 3600.0
    assert max_queue_seconds(type("P", (), {"thresholds": type("T", (), {"max_queue_seconds": -1})()})()) == 3600.0


def test_only_a_waiting_task_past_its_deadline_is_overdue() -> None:
    assert overdue(task=task(deadline=5), now=NOW) is None  # not waiting: not this module's to stop
    assert overdue(task=task(deadline=6, since=NOW, reason="t0: no_capacity"), now=NOW) is None
    late = overdue(task=task(deadline=5, since=NOW - timedelta(seconds=3), reason="t0: no_capacity"), now=NOW)
    assert late == "waited 3 s (the task's deadline_seconds 5 s) without a placement: t0: no_capacity"


def test_refusals_that_are_all_shortages_wait_naming_each_target_once() -> None:
    refused: list[tuple[str, ProviderError]] = [
        ("spot", InsufficientCapacity("no g5 capacity in us-east-1a")),
        ("azure", PriceTooHigh("spot price 0.61 over the max price 0.5")),
        ("spot", InsufficientCapacity("no g5 capacity in us-east-1b")),
    ]
    wait = shortage_wait(refused, max_queue_s=900)
    assert wait == Shortage(queue_reason="spot: insufficient_capacity; azure: price_too_high", max_wait_seconds=900)
    # not the plan's codes: a target's free capacity (a "no_capacity" wake) must not wake it into the same refusal
    assert not any(entry.split(": ")[1] in WAITABLE_CODES for entry in wait.queue_reason.split("; "))


@pytest.mark.parametrize("other", [Unavailable, Throttled, QuotaExceeded])
def test_one_refusal_that_is_not_a_shortage_spends_an_attempt(other: type[ProviderError]) -> None:
    refused: list[tuple[str, ProviderError]] = [("spot", InsufficientCapacity("full")), ("azure", other("no"))]
    assert shortage_wait(refused, max_queue_s=900) is None
    assert shortage_wait([], max_queue_s=900) is None
