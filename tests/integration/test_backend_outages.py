"""A backend that refuses or stops answering holds up neither the others nor its own tasks for good.

- every candidate refusing a launch for a reason that passes sends the task
  back to the queue with a backoff (``launch_refused``): a shortage on every
  one (capacity, the market price) waits for room without spending an
  attempt, until ``thresholds.max_queue_seconds`` since the task last needed
  a placement; any other (throttling, a timed-out API) spends one of the
  tenant's max attempts; a terminal refusal (``InvalidSpec``) still fails it
  at once;
- ``follow`` asks each backend in its own thread and stops asking one whose
  API timed out for the rest of the round;
- ``release_finished`` keeps a failed cancel for the next round and goes on
  with the other backends.

Backends are ``providers/noop.py``; the store and scheduler share a clock.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from controlplane.domain import (
    AttemptState,
    Candidate,
    DataSensitivity,
    InsufficientCapacity,
    InvalidSpec,
    PlacementPlan,
    TaskKind,
    TaskSpec,
    TaskState,
    Unavailable,
)
from controlplane.policy import parse_policy
from controlplane.runtime import standalone_scheduler
from controlplane.scheduler import Scheduler
from controlplane.store import Event, Store, make_engine, upgrade
from providers.base import BackendState
from providers.noop import NoopProvider
from tests.support.clock import Clock

pytestmark = pytest.mark.timeout(60)

T0 = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
POLICY = parse_policy(
    {
        "targets": [
            {
                "name": "spot",
                "provider": "aws",
                "storage": {"uri": "s3://fp-work/aws/"},
                "private": False,
                "regions": ["us-east-1"],
            },
            {
                "name": "azure",
                "provider": "azure",
                "storage": {"uri": "az://fpwork/work/"},
                "private": False,
                "regions": ["eastus"],
            },
        ],
        "rules": [{"name": "clouds", "targets": ["spot", "azure"]}],
        "thresholds": {
            "max_attempts": 3,
            "retry_backoff_seconds": 2,
            "retry_backoff_max_seconds": 10,
            "max_queue_seconds": 30,
        },
    }
)


@pytest.fixture
def clock() -> Clock:
    return Clock(T0)


@pytest.fixture
def backends() -> dict[str, NoopProvider]:
    return {"aws": NoopProvider(name="aws"), "azure": NoopProvider(name="azure")}


@pytest.fixture
def store(tmp_path: Path, clock: Clock) -> Store:
    engine = make_engine(f"sqlite:///{tmp_path / 'state.db'}")
    upgrade(engine=engine)
    return Store(engine, clock=clock)


@pytest.fixture
def scheduler(store: Store, clock: Clock, backends: dict[str, NoopProvider]) -> Scheduler:
    return standalone_scheduler(
        store=store,
        policy=lambda: POLICY,
        providers=dict(backends),
        scheduler_id="sched",
        clock=clock,
    )


def submit(store: Store, name: str) -> str:
    task, _ = store.create_task(
        spec=TaskSpec(
            tenant="acme",
            kind=TaskKind.IMAGE,
            source_uri="https://img.example/faces/a.png",
            target_uri=f"https://img.example/media/{name}.png",
            output_uri=f"/var/fp/outputs/out/{name}.png",
            data_sensitivity=DataSensitivity.PUBLIC,
        ),
        request_hash=name,
    )
    return task.id


def refuse_everything(backends: dict[str, NoopProvider], error: type[Exception] = InsufficientCapacity) -> None:
    for backend in backends.values():
        backend.fail_next(error("no spot capacity", target=backend.name))  # type: ignore[call-arg]


def refusals(store: Store, task_id: str, kind: str) -> list[Event]:
    return [e for e in store.list_events(task_id) if e.kind == kind]


def test_an_api_that_keeps_failing_spends_the_attempts_until_max_attempts(
    store: Store, scheduler: Scheduler, clock: Clock, backends: dict[str, NoopProvider]
) -> None:
    task_id = submit(store, "clip")
    refuse_everything(backends, Unavailable)
    scheduler.place_batch()
    task = store.get_task(task_id)
    assert task.state == TaskState.QUEUED
    assert task.queue_reason is None  # not waiting for room: planned again after the backoff
    (event,) = refusals(store, task_id, "attempt.failover")
    assert event.detail["trigger"] == "launch_refused"
    assert event.detail["not_before"] == (T0 + timedelta(seconds=2)).isoformat()
    assert "spot: unavailable" in event.detail["reason"]
    assert "azure: unavailable" in event.detail["reason"]
    assert scheduler.place_batch() == 0  # backing off
    clock.advance(2)
    refuse_everything(backends, Unavailable)
    scheduler.place_batch()
    assert store.get_task(task_id).state == TaskState.QUEUED
    clock.advance(4)
    refuse_everything(backends, Unavailable)
    scheduler.place_batch()
    failed = store.get_task(task_id)
    assert failed.state == TaskState.FAILED
    assert failed.reason is not None
    assert failed.reason.startswith("max attempts reached (3 of 3); last: launch_refused: every candidate refused")
    assert refusals(store, task_id, "attempt.refused") == []
    assert backends["aws"].launched() == []
    assert backends["azure"].launched() == []


def test_a_capacity_shortage_everywhere_waits_for_room_without_spending_attempts(
    store: Store, scheduler: Scheduler, clock: Clock, backends: dict[str, NoopProvider]
) -> None:
    task_id = submit(store, "clip")
    waits = [2, 4, 8, 10, 6]  # the backoff doubles up to its max, and the last stops at the 30 s queue limit
    for n, wait in enumerate(waits, start=1):
        refuse_everything(backends)
        scheduler.place_batch()
        task = store.get_task(task_id)
        assert task.state == TaskState.QUEUED, n  # more refusals than the 3 max attempts: none was spent
        assert task.queue_reason == "spot: insufficient_capacity; azure: insufficient_capacity"
        assert task.queued_since == T0  # refusals do not restart the queue clock
        last = refusals(store, task_id, "attempt.refused")[-1]
        assert last.detail["not_before"] == (clock.now + timedelta(seconds=wait)).isoformat()
        assert task.target is None
        assert scheduler.place_batch() == 0  # backing off
        clock.advance(wait)
    assert refusals(store, task_id, "attempt.failover") == []
    events = refusals(store, task_id, "attempt.refused")
    assert [e.detail["outcome"] for e in events] == ["waiting"] * len(waits)
    assert {e.detail["attempts"] for e in events} == {0}
    assert "spot: insufficient_capacity: no spot capacity" in events[0].detail["reason"]
    # 30 s after the task was created, the next refusal fails it, naming the limit and the refusals
    refuse_everything(backends)
    scheduler.place_batch()
    failed = store.get_task(task_id)
    assert failed.state == TaskState.FAILED
    assert failed.reason is not None
    assert failed.reason.startswith(
        "waited 30 s (thresholds.max_queue_seconds 30 s) without a launch that held; last: launch_refused: "
    )
    assert "azure: insufficient_capacity" in failed.reason
    assert backends["aws"].launched() == []


def test_a_shortage_beside_an_api_failure_spends_an_attempt(
    store: Store, scheduler: Scheduler, backends: dict[str, NoopProvider]
) -> None:
    task_id = submit(store, "clip")
    backends["aws"].fail_next(InsufficientCapacity("no spot capacity", target="spot"))
    backends["azure"].fail_next(Unavailable("ARM did not answer", target="azure"))
    scheduler.place_batch()
    task = store.get_task(task_id)
    assert task.state == TaskState.QUEUED
    assert task.queue_reason is None
    (event,) = refusals(store, task_id, "attempt.failover")
    assert event.detail["attempts"] == 1
    assert refusals(store, task_id, "attempt.refused") == []


def test_after_a_spent_attempt_the_wait_for_room_counts_from_that_failover(
    store: Store, scheduler: Scheduler, clock: Clock, backends: dict[str, NoopProvider]
) -> None:
    task_id = submit(store, "clip")
    clock.advance(25)  # most of the queue limit gone before anything happened
    refuse_everything(backends, Unavailable)
    scheduler.place_batch()
    spent_at = clock.now
    clock.advance(2)
    refuse_everything(backends)
    scheduler.place_batch()
    task = store.get_task(task_id)
    assert task.state == TaskState.QUEUED
    assert task.queued_since == spent_at
    # the backoff counts every send back: the second one waits 4 s, not 2
    (refused,) = refusals(store, task_id, "attempt.refused")
    assert refused.detail["not_before"] == (clock.now + timedelta(seconds=4)).isoformat()
    clock.advance(4)
    refuse_everything(backends)
    scheduler.place_batch()
    assert store.get_task(task_id).state == TaskState.QUEUED  # 6 s into a fresh 30 s, though 31 s since creation


def test_a_task_waiting_after_refusals_launches_once_room_is_back(
    store: Store, scheduler: Scheduler, clock: Clock, backends: dict[str, NoopProvider]
) -> None:
    task_id = submit(store, "clip")
    refuse_everything(backends)
    scheduler.place_batch()
    clock.advance(2)
    scheduler.place_batch()
    task = store.get_task(task_id)
    assert task.state == TaskState.LAUNCHING
    assert task.queue_reason is None  # it waits no longer
    assert task.queued_since is None
    live = [a.id for a in store.attempts_for(task_id) if not a.state.is_final]
    assert backends["aws"].launched() == live


def test_capacity_back_on_the_second_try_launches_once(
    store: Store, scheduler: Scheduler, clock: Clock, backends: dict[str, NoopProvider]
) -> None:
    task_id = submit(store, "clip")
    refuse_everything(backends, Unavailable)
    scheduler.place_batch()
    clock.advance(2)
    scheduler.place_batch()
    assert store.get_task(task_id).state == TaskState.LAUNCHING
    assert backends["aws"].launched() == [a.id for a in store.attempts_for(task_id) if not a.state.is_final]


def test_a_terminal_refusal_still_fails_at_once(
    store: Store, scheduler: Scheduler, backends: dict[str, NoopProvider]
) -> None:
    task_id = submit(store, "clip")
    backends["aws"].fail_next(InvalidSpec("image_id does not exist", target="spot"))
    scheduler.place_batch()
    task = store.get_task(task_id)
    assert task.state == TaskState.FAILED
    assert "image_id does not exist" in (task.reason or "")
    assert [e for e in store.list_events(task_id) if e.kind == "attempt.failover"] == []


def test_follow_stops_asking_a_timed_out_backend_and_goes_on_with_the_others(
    store: Store, scheduler: Scheduler, backends: dict[str, NoopProvider]
) -> None:
    aws_tasks = [submit(store, f"aws{n}") for n in range(3)]
    scheduler.place_batch()
    backends["aws"].fail_next(InsufficientCapacity("full", target="spot"))  # the next task lands on azure
    azure_task = submit(store, "az")
    scheduler.place_batch()
    (azure_attempt,) = [a for a in store.attempts_for(azure_task) if not a.state.is_final]
    assert azure_attempt.provider == "azure"
    backends["azure"].set_status(azure_attempt.id, BackendState.SUCCEEDED)
    backends["aws"].fail_next(Unavailable("EC2 API timed out", target="spot"), operation="status")
    backends["aws"].calls.clear()
    scheduler.follow()
    assert [op for op, _ in backends["aws"].calls] == ["status"]  # one timeout, then no more this round
    assert store.get_task(azure_task).state == TaskState.SUCCEEDED  # azure was followed all the same
    assert {store.get_task(t).state for t in aws_tasks} == {TaskState.LAUNCHING}
    scheduler.follow()  # next round: aws answers again
    assert {store.get_task(t).state for t in aws_tasks} == {TaskState.RUNNING}


def test_a_failed_release_is_retried_without_holding_up_other_backends(
    store: Store, scheduler: Scheduler, backends: dict[str, NoopProvider]
) -> None:
    assert scheduler.release_finished() == 0  # sets the cursor
    first, second = submit(store, "one"), submit(store, "two")
    scheduler.place_batch()
    backends["aws"].fail_next(InsufficientCapacity("full", target="spot"))
    third = submit(store, "three")
    scheduler.place_batch()
    attempts = {t: next(a for a in store.attempts_for(t) if not a.state.is_final) for t in (first, second, third)}
    assert attempts[third].provider == "azure"
    for attempt in attempts.values():  # the workers said "complete"; their resources are still there
        store.transition_attempt(attempt.id, wanted=AttemptState.SUCCEEDED, actor="worker", exit_code=0)
    backends["aws"].fail_next(Unavailable("EC2 API timed out", target="spot"), operation="cancel")
    assert scheduler.release_finished() == 1  # azure's, despite aws failing first
    # the first aws release (the refused launch of "three": a timed-out launch may have created something)
    # failed; aws was not asked again this round
    assert len([key for op, key in backends["aws"].calls if op == "cancel"]) == 1
    assert scheduler.release_finished() == 3  # that one, and both finished aws attempts, next round
    assert {r.state for r in backends["aws"].list_owned()} == {BackendState.FAILED}


PROBE = "aws/us-east-1/-"


def probing_planner(*, alternatives: bool):  # type: ignore[no-untyped-def]
    """A planner whose plans say what the engine says for a half-open breaker: the spot launch is its probe."""

    def planner(task, snapshot, policy, now):  # type: ignore[no-untyped-def]
        spot = Candidate(target="spot", provider="aws", private=False, region="us-east-1", breaker_probe=PROBE)
        azure = Candidate(target="azure", provider="azure", private=False, region="eastus")
        return PlacementPlan(
            task_id=task.id,
            policy_version=policy.version,
            decided_at=now,
            candidates=(spot, azure) if alternatives else (spot,),
            rejections=(),
        )

    return planner


def test_one_probe_per_half_open_breaker_is_in_flight(
    store: Store, scheduler: Scheduler, backends: dict[str, NoopProvider]
) -> None:
    scheduler.planner = probing_planner(alternatives=True)
    scheduler.probe_launch_s = 0  # only the probe's attempt says whether it is in flight
    probe_task = submit(store, "probe")
    scheduler.place_batch()
    (probe,) = store.attempts_for(probe_task)
    assert probe.provider == "aws"
    others = [submit(store, f"other{n}") for n in range(3)]
    scheduler.place_batch()
    assert {store.attempts_for(t)[0].provider for t in others} == {"azure"}  # the offer is skipped meanwhile
    # a task with nowhere else to go is not failed for it: it launches there (a second probe)
    scheduler.planner = probing_planner(alternatives=False)
    lonely = submit(store, "lonely")
    scheduler.place_batch()
    assert [a.provider for a in store.attempts_for(lonely)] == ["aws"]
    # the probe ends: the next task may probe again
    backends["aws"].set_status(probe.id, BackendState.SUCCEEDED)
    backends["aws"].set_status(store.attempts_for(lonely)[0].id, BackendState.SUCCEEDED)
    scheduler.follow()
    scheduler.planner = probing_planner(alternatives=True)
    after = submit(store, "after")
    scheduler.place_batch()
    assert store.attempts_for(after)[0].provider == "aws"


def test_a_probe_chosen_moments_ago_counts_as_in_flight_within_one_batch(store: Store, scheduler: Scheduler) -> None:
    scheduler.planner = probing_planner(alternatives=True)
    tasks = [submit(store, f"t{n}") for n in range(4)]
    scheduler.place_batch()  # one batch: the first task probes, the rest go elsewhere
    assert [store.attempts_for(t)[0].provider for t in tasks] == ["aws", "azure", "azure", "azure"]
