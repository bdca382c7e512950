"""verdict(): every branch of the one outcome function, with no database and no provider."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta

import pytest

from controlplane.domain import Attempt, AttemptState
from controlplane.domain.backend import BackendState, BackendStatus
from controlplane.domain.verdict import Next, Verdict, verdict, worker_report
from controlplane.scheduler.outcomes import FailoverRules

T0 = datetime(2026, 1, 1, tzinfo=UTC)
RULES = FailoverRules(
    heartbeat_timeout_seconds=60.0,
    unschedulable_timeout_seconds=120.0,
    first_heartbeat_timeout_seconds={"local": 120.0, "kubernetes": 600.0},
)


def attempt(state: AttemptState = AttemptState.RUNNING, **fields: object) -> Attempt:
    base = Attempt(
        id="att_1",
        task_id="tsk_1",
        number=2,
        target="home",
        provider="local",
        state=state,
        created_at=T0,
        updated_at=T0,
    )
    return dataclasses.replace(base, **fields)  # type: ignore[arg-type]


def judge(
    of: Attempt,
    status: BackendStatus | None = None,
    *,
    heartbeat: datetime | None = T0,
    after: float = 1.0,
    rules: FailoverRules | None = RULES,
    cancelled: bool = False,
    sending: bool = False,
) -> Verdict:
    return verdict(
        attempt=of,
        status=status,
        last_heartbeat=heartbeat,
        rules=rules,
        now=T0 + timedelta(seconds=after),
        task_cancelled=cancelled,
        sending=sending,
    )


def status(state: BackendState, **fields: object) -> BackendStatus:
    return BackendStatus(state=state, **fields)  # type: ignore[arg-type]


# ---- the task was cancelled -------------------------------------------------------------------------------


def test_a_cancelled_task_is_cancelled_whatever_the_backend_says() -> None:
    assert judge(attempt(), status(BackendState.SUCCEEDED), cancelled=True) == Verdict(
        next=Next.CANCEL, ended=AttemptState.CANCELLED, reason="task cancelled"
    )


# ---- a final status ---------------------------------------------------------------------------------------


def test_succeeded_finishes_the_task() -> None:
    assert judge(attempt(), status(BackendState.SUCCEEDED, exit_code=0)) == Verdict(
        next=Next.SUCCEED, ended=AttemptState.SUCCEEDED, exit_code=0
    )


@pytest.mark.parametrize(
    ("backend", "exit_code", "ended", "trigger"),
    [
        (BackendState.PREEMPTED, 75, AttemptState.PREEMPTED, "preempted"),
        (BackendState.LOST, None, AttemptState.LOST, "lost"),
        (BackendState.FAILED, 70, AttemptState.FAILED, "exit_code"),  # a crash: another attempt may work
    ],
)
def test_an_ending_another_attempt_may_fix_fails_over(
    backend: BackendState, exit_code: int | None, ended: AttemptState, trigger: str
) -> None:
    decided = judge(attempt(), status(backend, reason="why", exit_code=exit_code))
    assert decided == Verdict(next=Next.FAIL_OVER, ended=ended, reason="why", exit_code=exit_code, trigger=trigger)
    assert not decided.cancel_first  # the resource ended on its own


def test_a_fail_over_without_a_reason_names_the_backend_state() -> None:
    assert judge(attempt(), status(BackendState.PREEMPTED)).reason == "the backend reported preempted"


@pytest.mark.parametrize("exit_code", [None, 2, 65, 69])
def test_a_terminal_failure_fails_the_task(exit_code: int | None) -> None:
    assert judge(attempt(), status(BackendState.FAILED, reason="no face", exit_code=exit_code)) == Verdict(
        next=Next.FAIL, ended=AttemptState.FAILED, reason="no face", exit_code=exit_code
    )


def test_lost_while_the_launch_may_still_be_on_its_way_is_followed() -> None:
    launching = attempt(AttemptState.LAUNCHING)
    assert judge(launching, status(BackendState.LOST), sending=True).next is Next.FOLLOW
    assert judge(launching, status(BackendState.LOST), sending=False).next is Next.FAIL_OVER
    # only LOST means "maybe not sent yet": an outcome is an outcome
    assert judge(launching, status(BackendState.SUCCEEDED), sending=True).next is Next.SUCCEED


def test_a_final_status_is_judged_without_rules() -> None:
    assert judge(attempt(), status(BackendState.FAILED, exit_code=65), rules=None).next is Next.FAIL


# ---- the worker's own report (the API callbacks) ------------------------------------------------------------


def test_the_workers_complete_is_a_success_with_exit_0() -> None:
    assert worker_report(kind=None) == BackendStatus(state=BackendState.SUCCEEDED, exit_code=0)
    assert judge(attempt(), worker_report(kind=None), rules=None) == Verdict(
        next=Next.SUCCEED, ended=AttemptState.SUCCEEDED, exit_code=0
    )


@pytest.mark.parametrize(
    ("kind", "exit_code", "expected", "ended"),
    [
        ("preempted", 75, Next.FAIL_OVER, AttemptState.PREEMPTED),
        ("temporary", 75, Next.FAIL_OVER, AttemptState.PREEMPTED),
        ("crash", 70, Next.FAIL_OVER, AttemptState.FAILED),
        ("input", 65, Next.FAIL, AttemptState.FAILED),
    ],
)
def test_the_workers_fail_ends_the_attempt_by_its_kind(
    kind: str, exit_code: int, expected: Next, ended: AttemptState
) -> None:
    decided = judge(attempt(), worker_report(kind=kind, reason=f"{kind}: x", exit_code=exit_code), rules=None)
    assert (decided.next, decided.ended, decided.reason, decided.exit_code) == (
        expected,
        ended,
        f"{kind}: x",
        exit_code,
    )


# ---- an attempt that has ended already (failover of callback endings, stranded tasks) ----------------------


@pytest.mark.parametrize(
    ("ended", "fields", "expected"),
    [
        (AttemptState.SUCCEEDED, {"exit_code": 0}, Verdict(next=Next.SUCCEED, exit_code=0)),
        (
            AttemptState.PREEMPTED,
            {"reason": "spot interruption"},
            Verdict(next=Next.FAIL_OVER, reason="spot interruption", trigger="preempted"),
        ),
        (AttemptState.LOST, {}, Verdict(next=Next.FAIL_OVER, reason="lost", trigger="lost")),
        (
            AttemptState.FAILED,
            {"exit_code": 70},
            Verdict(next=Next.FAIL_OVER, reason="failed", exit_code=70, trigger="exit_code"),
        ),
        (
            AttemptState.FAILED,
            {"reason": "insufficient_capacity: full"},
            Verdict(next=Next.REQUEUE, reason="attempt 2 ended failed and the scheduler stopped"),
        ),
        (
            AttemptState.CANCELLED,
            {},
            Verdict(next=Next.REQUEUE, reason="attempt 2 ended cancelled and the scheduler stopped"),
        ),
        (
            AttemptState.FAILED,
            {"exit_code": 65, "reason": "no face found"},
            Verdict(next=Next.FAIL, reason="no face found", exit_code=65),
        ),
        (AttemptState.FAILED, {"exit_code": 65}, Verdict(next=Next.FAIL, reason="attempt failed", exit_code=65)),
    ],
)
def test_an_ended_attempt_keeps_its_ending_and_decides_the_task(
    ended: AttemptState, fields: dict[str, object], expected: Verdict
) -> None:
    assert judge(attempt(ended, **fields), rules=None) == expected
    assert expected.ended is None  # the attempt is not ended again


# ---- a live attempt held to its limits ---------------------------------------------------------------------


def test_a_silent_worker_is_cancelled_then_failed_over() -> None:
    decided = judge(attempt(), status(BackendState.RUNNING), heartbeat=T0, after=61)
    assert decided == Verdict(
        next=Next.FAIL_OVER,
        ended=AttemptState.LOST,
        trigger="heartbeat",
        reason="no heartbeat for 61 s (limit 60 s)",
        cancel_first=True,
    )
    assert judge(attempt(), status(BackendState.RUNNING), heartbeat=T0, after=60).next is Next.FOLLOW
    # the backend's silence (no status) does not save a silent worker
    assert judge(attempt(), None, heartbeat=T0, after=61).trigger == "heartbeat"


def test_only_a_running_attempt_is_held_to_the_heartbeat_timeout() -> None:
    launching = attempt(AttemptState.LAUNCHING, created_at=T0 + timedelta(seconds=50))
    assert judge(launching, status(BackendState.PENDING), heartbeat=T0, after=61).next is Next.FOLLOW


def test_a_pod_unschedulable_past_its_limit_is_cancelled_then_failed_over() -> None:
    waiting = attempt(AttemptState.LAUNCHING, provider="kubernetes")
    pending = status(BackendState.PENDING, reason="unschedulable: 0/3 nodes", unschedulable_for_s=121)
    assert judge(waiting, pending, heartbeat=None, after=121) == Verdict(
        next=Next.FAIL_OVER,
        ended=AttemptState.FAILED,
        trigger="unschedulable",
        reason="unschedulable for 121 s (limit 120 s)",
        cancel_first=True,
    )
    at_limit = dataclasses.replace(pending, unschedulable_for_s=120)
    assert judge(waiting, at_limit, heartbeat=None, after=120).next is Next.FOLLOW


def test_a_pod_its_cloud_refused_capacity_fails_over_at_once_as_a_capacity_error() -> None:
    waiting = attempt(AttemptState.LAUNCHING, provider="kubernetes")
    refused = status(
        BackendState.PENDING,
        reason="unschedulable: 0/3 nodes",
        unschedulable_for_s=5,
        capacity_refusal="Karpenter InsufficientCapacityError: no g5.xlarge spot capacity in us-east-1",
    )
    decided = judge(waiting, refused, heartbeat=None, after=5)
    assert decided == Verdict(
        next=Next.FAIL_OVER,
        ended=AttemptState.FAILED,
        trigger="insufficient_capacity",
        reason="insufficient_capacity: Karpenter InsufficientCapacityError: no g5.xlarge spot capacity in us-east-1",
        cancel_first=True,
    )
    # a refusal is only news while the pod waits: one that has since run is judged by its own outcome
    ran = dataclasses.replace(refused, state=BackendState.RUNNING)
    assert judge(waiting, ran, heartbeat=None, after=5).next is Next.RUN


def test_a_worker_that_never_called_in_is_cancelled_then_failed_over() -> None:
    decided = judge(attempt(AttemptState.LAUNCHING), status(BackendState.RUNNING), heartbeat=None, after=121)
    assert decided == Verdict(
        next=Next.FAIL_OVER,
        ended=AttemptState.LOST,
        trigger="first_heartbeat",
        reason="no heartbeat 121 s after launch (limit 120 s on local)",
        cancel_first=True,
    )


def test_a_launch_still_on_its_way_is_not_held_to_the_first_heartbeat_limit() -> None:
    decided = judge(attempt(AttemptState.LAUNCHING), None, heartbeat=None, after=121, sending=True)
    assert decided == Verdict(next=Next.FOLLOW)


def test_without_rules_no_limit_applies() -> None:
    assert judge(attempt(), None, heartbeat=T0, after=10_000, rules=None).next is Next.FOLLOW


def test_the_heartbeat_limit_is_checked_before_the_unschedulable_one() -> None:
    pending = status(BackendState.PENDING, unschedulable_for_s=999)
    assert judge(attempt(), pending, heartbeat=T0, after=61).trigger == "heartbeat"


# ---- a live attempt within its limits ----------------------------------------------------------------------


def test_a_running_backend_starts_a_launching_attempt() -> None:
    assert judge(attempt(AttemptState.LAUNCHING), status(BackendState.RUNNING), heartbeat=None) == Verdict(
        next=Next.RUN
    )


@pytest.mark.parametrize(
    ("state", "backend"),
    [
        (AttemptState.RUNNING, BackendState.RUNNING),
        (AttemptState.LAUNCHING, BackendState.PENDING),
        (AttemptState.RUNNING, None),
    ],
)
def test_otherwise_it_is_followed(state: AttemptState, backend: BackendState | None) -> None:
    given = status(backend) if backend is not None else None
    assert judge(attempt(state), given) == Verdict(next=Next.FOLLOW)
