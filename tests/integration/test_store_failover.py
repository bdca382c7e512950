"""The store's failover on both databases: a shortage waits without spending an attempt, the rest count.

``Store.fail_over`` with a ``Shortage`` sends the task back as a waiting
task (queue reason, ``queued_since`` from when it last needed a placement)
and writes ``attempt.refused``; without, it spends one of ``max_attempts``
(``attempt.failover``). The backoff counts both; the wait for room is
bounded by ``max_wait_seconds`` from the task's creation or its last spent
attempt, whichever is later. The timestamps that decide it round-trip
through each database, so this runs on SQLite and the real PostgreSQL.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import Engine, select

from controlplane.domain import AttemptState, Candidate, PlacementPlan, TaskState
from controlplane.store import PlannedLaunch, Shortage, Store
from controlplane.store.failover import FailoverResult
from controlplane.store.tables import tasks
from tests.support.claimed import image_spec
from tests.support.clock import Clock

pytest_plugins = ["tests.integration.store_fixtures"]

T0 = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)
SPOT = Candidate(target="spot", provider="aws", private=False, region="us-east-1", instance_type="p3.2xlarge")
WAIT = Shortage(queue_reason="spot: insufficient_capacity", max_wait_seconds=60)


def backoff(n: int) -> float:
    return 2.0 * 2 ** (n - 1)


def launch(store: Store, task_id: str) -> str:
    """Claim the queued task and start one launch on ``SPOT``, refused at once: the attempt's id."""
    (claimed,) = store.claim_queued(batch_size=1, scheduler_id="s")
    assert claimed.id == task_id
    plan = PlacementPlan(task_id=task_id, policy_version="v", decided_at=store.now(), candidates=(SPOT,), rejections=())
    ((attempt,),) = store.start_launch_groups(
        [PlannedLaunch(plan=plan, candidate=SPOT, token_sha256="a" * 64)], actor="s"
    )
    store.transition_attempt(attempt.id, wanted=AttemptState.FAILED, actor="s", reason="insufficient_capacity: full")
    return attempt.id


def send_back(store: Store, attempt_id: str, shortage: Shortage | None) -> FailoverResult:
    return store.fail_over(
        attempt_id,
        actor="s",
        trigger="launch_refused",
        reason="every candidate refused the launch: spot: insufficient_capacity: full",
        retryable=lambda _state, _code: True,
        max_attempts=3,
        backoff_seconds=backoff,
        shortage=shortage,
    )


def row(engine: Engine, task_id: str) -> tuple[str, str | None, datetime | None, datetime | None]:
    with engine.connect() as conn:
        found = conn.execute(
            select(tasks.c.state, tasks.c.queue_reason, tasks.c.queued_since, tasks.c.not_before).where(
                tasks.c.id == task_id
            )
        ).one()
    return found.state, found.queue_reason, found.queued_since, found.not_before


def test_shortages_wait_from_the_last_spent_attempt_and_fail_at_the_limit(engine: Engine) -> None:
    clock = Clock(T0)
    store = Store(engine, clock=clock)
    task, _ = store.create_task(spec=image_spec(), request_hash="h")

    first = send_back(store, launch(store, task.id), WAIT)
    assert (first.outcome, first.attempts) == ("waiting", 0)
    assert first.not_before == T0 + timedelta(seconds=2)
    assert row(engine, task.id) == ("queued", "spot: insufficient_capacity", T0, T0 + timedelta(seconds=2))
    assert store.get_task(task.id).target is None

    clock.advance(2)
    spent = send_back(store, launch(store, task.id), None)  # an API that did not answer: one attempt spent
    assert (spent.outcome, spent.attempts) == ("requeued", 1)
    assert spent.not_before == clock.now + timedelta(seconds=4)  # the second time sent back
    spent_at = clock.now
    assert row(engine, task.id)[1:3] == (None, None)  # not waiting for room: re-planned after the backoff

    clock.advance(50)  # 52 s since creation, more than the 60 s limit will allow from creation below
    again = send_back(store, launch(store, task.id), WAIT)
    assert again.outcome == "waiting"
    assert again.not_before == clock.now + timedelta(seconds=8)
    assert row(engine, task.id)[2] == spent_at  # the wait counts from the spent attempt, not from creation

    clock.advance(10)  # 60 s after the spent attempt
    last = send_back(store, launch(store, task.id), WAIT)
    assert last.outcome == "failed"
    failed = store.get_task(task.id)
    assert failed.state == TaskState.FAILED
    assert failed.reason is not None
    assert failed.reason.startswith("waited 60 s (thresholds.max_queue_seconds 60 s) without a launch that held")
    sent_back = ("attempt.refused", "attempt.failover")
    assert [(e.kind, e.detail["outcome"]) for e in store.list_events(task.id) if e.kind in sent_back] == [
        ("attempt.refused", "waiting"),
        ("attempt.failover", "requeued"),
        ("attempt.refused", "waiting"),
        ("attempt.refused", "failed"),
    ]


def test_the_wait_never_sleeps_past_the_limit(engine: Engine) -> None:
    clock = Clock(T0)
    store = Store(engine, clock=clock)
    task, _ = store.create_task(spec=image_spec(), request_hash="h")
    clock.advance(59)
    result = send_back(store, launch(store, task.id), WAIT)
    assert result.outcome == "waiting"
    assert result.not_before == T0 + timedelta(seconds=60)  # the backoff (2 s) would pass the limit
