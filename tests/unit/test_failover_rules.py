"""Which endings are retried, and the limits failover works within (defaults or the policy's thresholds)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

import pytest

from controlplane.domain import Attempt, AttemptState
from controlplane.policy import parse_policy
from controlplane.scheduler.executor import unschedulable_seconds
from controlplane.scheduler.outcomes import FailoverRules, is_retryable, never_called_in
from providers.base import BackendState, BackendStatus

T0 = datetime(2026, 12, 4, 12, 0, tzinfo=UTC)

# the table of docs/reliability.md: (attempt state, exit code) -> retried?
RETRY_TABLE = [
    (AttemptState.PREEMPTED, None, True),
    (AttemptState.PREEMPTED, 75, True),
    (AttemptState.PREEMPTED, 143, True),  # SIGTERM on a node shutdown, reported as a disruption
    (AttemptState.LOST, None, True),
    (AttemptState.LOST, 137, True),
    (AttemptState.FAILED, 70, True),  # EX_SOFTWARE: may be a node fault
    (AttemptState.FAILED, 1, True),  # an unhandled crash
    (AttemptState.FAILED, 65, False),  # EX_DATAERR: the input fails the same way anywhere
    (AttemptState.FAILED, 69, False),  # EX_UNAVAILABLE: an operator's alert, not a retry
    (AttemptState.FAILED, 2, False),  # usage: an image or provider bug
    (AttemptState.FAILED, None, False),  # a launch refusal, an image that cannot be pulled, a cancel
    (AttemptState.FAILED, 75, False),  # a provider kept it FAILED on purpose (the task's deadline)
    (AttemptState.FAILED, 143, False),  # killed by our own cancel
    (AttemptState.FAILED, 0, False),
    (AttemptState.SUCCEEDED, 0, False),
    (AttemptState.CANCELLED, None, False),
]


@pytest.mark.parametrize(("state", "exit_code", "retried"), RETRY_TABLE)
def test_which_endings_are_retried(state: AttemptState, exit_code: int | None, retried: bool) -> None:
    assert is_retryable(state, exit_code) is retried


def test_the_documented_defaults() -> None:
    rules = FailoverRules()
    assert (rules.max_attempts, rules.retry_backoff_seconds, rules.retry_backoff_max_seconds) == (5, 2.0, 60.0)
    assert (rules.heartbeat_timeout_seconds, rules.unschedulable_timeout_seconds) == (60.0, 120.0)
    assert [rules.backoff_seconds(n) for n in range(1, 8)] == [2, 4, 8, 16, 32, 60, 60]
    assert [rules.first_heartbeat_limit(p) for p in ("local", "kubernetes", "aws", "azure")] == [120, 600, 900, 900]
    assert rules.first_heartbeat_limit("elsewhere") == 900  # an unknown backend gets the longest wait


def test_a_policy_without_the_fields_gets_the_defaults() -> None:
    policy = parse_policy({"targets": [{"name": "local", "provider": "local", "private": True}]})
    assert FailoverRules.of(policy) == FailoverRules()
    assert FailoverRules.of(object()) == FailoverRules()


def test_the_policy_thresholds_win_when_present() -> None:
    thresholds = SimpleNamespace(
        max_attempts=3,
        retry_backoff_seconds=1.5,
        retry_backoff_max_seconds=5,
        heartbeat_timeout_seconds=30,
        unschedulable_timeout_seconds=300,
    )
    rules = FailoverRules.of(SimpleNamespace(thresholds=thresholds))
    assert rules == FailoverRules(
        max_attempts=3,
        retry_backoff_seconds=1.5,
        retry_backoff_max_seconds=5.0,
        heartbeat_timeout_seconds=30.0,
        unschedulable_timeout_seconds=300.0,
    )
    assert [rules.backoff_seconds(n) for n in (1, 2, 3)] == [1.5, 3.0, 5.0]


@pytest.mark.parametrize("bad", [None, 0, -1, "5"])
def test_a_missing_or_nonsensical_threshold_falls_back_to_the_default(bad: object) -> None:
    rules = FailoverRules.of(
        SimpleNamespace(thresholds=SimpleNamespace(max_attempts=bad, heartbeat_timeout_seconds=bad))
    )
    assert rules.max_attempts == 5
    assert rules.heartbeat_timeout_seconds == 60.0


@pytest.mark.parametrize(
    ("status", "seconds"),
    [
        (BackendStatus(state=BackendState.PENDING, reason="unschedulable: 0/3 nodes", unschedulable_for_s=42), 42),
        (BackendStatus(state=BackendState.PENDING, reason="pulling image"), None),
        (BackendStatus(state=BackendState.PENDING), None),
        (BackendStatus(state=BackendState.RUNNING, unschedulable_for_s=42), None),
    ],
)
def test_unschedulable_seconds_reads_what_the_kubernetes_provider_writes(
    status: BackendStatus, seconds: int | None
) -> None:
    assert unschedulable_seconds(status) == seconds


def test_the_executor_reads_the_field_the_kubernetes_provider_sets() -> None:
    status_module = pytest.importorskip("providers.kubernetes.status")
    now = datetime(2026, 1, 1, tzinfo=UTC)
    pod = {
        "status": {
            "phase": "Pending",
            "conditions": [
                {
                    "type": "PodScheduled",
                    "status": "False",
                    "reason": "Unschedulable",
                    "message": "0/3 nodes",
                    "lastTransitionTime": (now - timedelta(seconds=7)).strftime("%Y-%m-%dT%H:%M:%SZ"),
                }
            ],
        }
    }
    status = status_module.pending_pod_status(pod, now)
    assert status.unschedulable_for_s == unschedulable_seconds(status) == 7


def test_the_first_heartbeat_limits_come_per_provider_and_bad_ones_fall_back() -> None:
    given = {"local": 30, "aws": 0, "azure": "soon", "kubernetes": True}
    rules = FailoverRules.of(SimpleNamespace(thresholds=SimpleNamespace(first_heartbeat_timeout_seconds=given)))
    assert dict(rules.first_heartbeat_timeout_seconds) == {"local": 30, "kubernetes": 600, "aws": 900, "azure": 900}
    policy = parse_policy(
        {
            "targets": [{"name": "local", "provider": "local", "private": True}],
            "thresholds": {"first_heartbeat_timeout_seconds": {"kubernetes": 1800}},
        }
    )
    assert FailoverRules.of(policy).first_heartbeat_limit("kubernetes") == 1800


@pytest.mark.parametrize(
    ("state", "heartbeat", "age", "expected"),
    [
        (AttemptState.RUNNING, None, 121, 121.0),  # never called in, past the local limit
        (AttemptState.LAUNCHING, None, 121, 121.0),  # a VM that never even reported running
        (AttemptState.RUNNING, None, 120, None),  # at the limit: still waiting
        (AttemptState.RUNNING, T0, 3600, None),  # called in once: the silent-heartbeat rule's case
        (AttemptState.LOST, None, 3600, None),  # ended already
    ],
)
def test_never_called_in(state: AttemptState, heartbeat: datetime | None, age: float, expected: float | None) -> None:
    attempt = Attempt(
        id="att_1",
        task_id="tsk_1",
        number=1,
        target="home",
        provider="local",
        state=state,
        created_at=T0,
        updated_at=T0,
    )
    now = T0 + timedelta(seconds=age)
    assert never_called_in(attempt, last_heartbeat=heartbeat, rules=FailoverRules(), now=now) == expected
