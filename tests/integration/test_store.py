"""The state store on SQLite and on a real PostgreSQL 15 (every test runs on both)."""

from __future__ import annotations

import hashlib
import threading
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import Engine, func, select
from sqlalchemy.exc import StatementError

from controlplane.domain import (
    AttemptState,
    Candidate,
    DataSensitivity,
    InvalidTransition,
    PlacementPlan,
    Priority,
    Rejection,
    TaskKind,
    TaskSpec,
    TaskState,
)
from controlplane.domain.states import ATTEMPT_TRANSITIONS, TASK_TRANSITIONS
from controlplane.store import IdempotencyConflict, NewTask, NotFound, StateMismatch, Store, make_engine
from controlplane.store.tables import events, tasks

# fixtures: a session PostgreSQL and `database_url` / `engine` / `store` on both databases
pytest_plugins = ["tests.integration.store_fixtures"]

# the shortest allowed path from queued to each state
PATHS: dict[TaskState, list[TaskState]] = {
    TaskState.QUEUED: [],
    TaskState.PLANNED: [TaskState.PLANNED],
    TaskState.LAUNCHING: [TaskState.PLANNED, TaskState.LAUNCHING],
    TaskState.RUNNING: [TaskState.PLANNED, TaskState.LAUNCHING, TaskState.RUNNING],
    TaskState.SUCCEEDED: [TaskState.PLANNED, TaskState.LAUNCHING, TaskState.RUNNING, TaskState.SUCCEEDED],
    TaskState.FAILED: [TaskState.FAILED],
    TaskState.CANCELLED: [TaskState.CANCELLED],
}
TOKEN_HASH = hashlib.sha256(b"attempt-token").hexdigest()


class Clock:
    """A settable aware-UTC clock."""

    def __init__(self, start: datetime) -> None:
        self.now = start

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> datetime:
        self.now += timedelta(seconds=seconds)
        return self.now


def spec(**overrides: Any) -> TaskSpec:
    values: dict[str, Any] = {
        "tenant": "acme",
        "kind": TaskKind.IMAGE,
        "source_uri": "file:///in/face.png",
        "target_uri": "file:///in/target.png",
        "output_uri": "file:///out/result.png",
    }
    values.update(overrides)
    return TaskSpec(**values)


def new_task(store: Store, **overrides: Any) -> str:
    task, created = store.create_task(spec=spec(**overrides), request_hash="h")
    assert created
    return task.id


def count(engine: Engine, table: Any = events) -> int:
    with engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(table)).scalar_one())


def task_row(engine: Engine, task_id: str) -> Any:
    with engine.connect() as conn:
        return conn.execute(select(tasks).where(tasks.c.id == task_id)).one()


def assert_utc(moment: datetime | None) -> None:
    assert moment is not None
    assert moment.tzinfo is not None
    assert moment.utcoffset() == timedelta(0)


def test_create_and_get_round_trip_every_field(store: Store) -> None:
    full = spec(
        kind=TaskKind.VIDEO,
        priority=Priority.URGENT,
        data_sensitivity=DataSensitivity.PRIVATE,
        deadline_seconds=300,
        budget_usd=1.25,
        options={"swapper": "classic", "quality": 18, "mask_padding": [0.1, 0, 0, 0]},
        labels={"campaign": "launch", "ünïcode": "✓"},
        input_bytes=123_456_789_012,
    )
    task, created = store.create_task(spec=full, request_hash="abc", idempotency_key=None)
    assert created
    assert task.id.startswith("tsk_")
    assert len(task.id) == 30
    assert task.state is TaskState.QUEUED
    got = store.get_task(task.id)
    assert got == task
    assert got.spec == full
    assert_utc(got.created_at)
    assert_utc(got.updated_at)
    with pytest.raises(NotFound, match="no task"):
        store.get_task("tsk_missing")


def test_allowed_path_sets_timestamps_and_events(store: Store, engine: Engine) -> None:
    task_id = new_task(store)
    for wanted in PATHS[TaskState.SUCCEEDED]:
        task = store.transition_task(task_id, wanted=wanted, actor="test", target="local")
        assert task.state is wanted
        assert task.target == "local"
    row = task_row(engine, task_id)
    for column in ("planned_at", "started_at", "finished_at", "updated_at", "created_at"):
        assert_utc(getattr(row, column))
    assert row.planned_at <= row.started_at <= row.finished_at
    history = store.list_events(task_id)
    assert [e.kind for e in history] == ["task.created"] + ["task.transition"] * 4
    assert [(e.from_state, e.to_state) for e in history[1:]] == [
        ("queued", "planned"),
        ("planned", "launching"),
        ("launching", "running"),
        ("running", "succeeded"),
    ]
    assert all(e.actor == "test" for e in history[1:])
    for event in history:
        assert_utc(event.at)


def test_every_transition_is_allowed_or_refused_as_the_state_machine_says(store: Store, engine: Engine) -> None:
    for current, path in PATHS.items():
        for wanted in TaskState:
            task_id = new_task(store)
            for step in path:
                store.transition_task(task_id, wanted=step, actor="setup")
            before_events, before_row = count(engine), task_row(engine, task_id)
            if wanted in TASK_TRANSITIONS[current]:
                moved = store.transition_task(task_id, wanted=wanted, actor="t", reason="why")
                assert moved.state is wanted
                assert count(engine) == before_events + 1
            else:
                with pytest.raises(InvalidTransition):
                    store.transition_task(task_id, wanted=wanted, actor="t", reason="why")
                assert count(engine) == before_events, f"{current} -> {wanted} wrote an event"
                assert task_row(engine, task_id) == before_row, f"{current} -> {wanted} changed the row"


def test_expected_state_guards_against_lost_races(store: Store, engine: Engine) -> None:
    task_id = new_task(store)
    store.transition_task(task_id, wanted=TaskState.CANCELLED, actor="user", reason="not needed")
    before = count(engine)
    with pytest.raises(StateMismatch, match="cancelled"):
        store.transition_task(task_id, wanted=TaskState.PLANNED, actor="s", expected=TaskState.QUEUED)
    assert count(engine) == before
    task = store.get_task(task_id)
    assert task.state is TaskState.CANCELLED
    assert task.reason == "not needed"
    with pytest.raises(NotFound):
        store.transition_task("tsk_nope", wanted=TaskState.PLANNED, actor="s")


def test_a_transition_and_its_event_commit_together(store: Store, engine: Engine) -> None:
    task_id = new_task(store)
    before = count(engine)
    # the event's detail cannot be stored: the state change must be rolled back with it
    with pytest.raises((StatementError, TypeError)):  # SQLAlchemy's JSON wraps it, psycopg's JSONB does not
        store.transition_task(task_id, wanted=TaskState.PLANNED, actor="s", detail={"bad": object()})
    assert store.get_task(task_id).state is TaskState.QUEUED
    assert count(engine) == before


def test_idempotency_key(store: Store, engine: Engine) -> None:
    first, created = store.create_task(spec=spec(), request_hash="body-1", idempotency_key="key-1")
    assert created
    again, created = store.create_task(spec=spec(), request_hash="body-1", idempotency_key="key-1")
    assert not created
    assert again == first
    tasks_before, events_before = count(engine, tasks), count(engine)
    with pytest.raises(IdempotencyConflict, match="key-1") as info:
        store.create_task(spec=spec(source_uri="file:///other.png"), request_hash="body-2", idempotency_key="key-1")
    assert info.value.task_id == first.id
    assert (count(engine, tasks), count(engine)) == (tasks_before, events_before)
    # keys are per tenant; no key means no deduplication
    other, created = store.create_task(spec=spec(tenant="globex"), request_hash="body-1", idempotency_key="key-1")
    assert created
    assert other.id != first.id
    a, _ = store.create_task(spec=spec(), request_hash="body-1")
    b, _ = store.create_task(spec=spec(), request_hash="body-1")
    assert a.id != b.id


def test_a_batch_of_submissions_behaves_like_the_same_submissions_one_by_one(store: Store, engine: Engine) -> None:
    earlier, _ = store.create_task(spec=spec(), request_hash="body-0", idempotency_key="stored")
    events_before = count(engine)
    outcomes = store.create_tasks(
        [
            NewTask(spec=spec(), request_hash="body-1"),
            NewTask(spec=spec(), request_hash="body-0", idempotency_key="stored"),  # replay of a stored task
            NewTask(spec=spec(), request_hash="other", idempotency_key="stored"),  # conflict with it
            NewTask(spec=spec(), request_hash="body-2", idempotency_key="fresh"),
            NewTask(spec=spec(), request_hash="body-2", idempotency_key="fresh"),  # replay inside the batch
            NewTask(spec=spec(), request_hash="body-3", idempotency_key="fresh"),  # conflict inside the batch
            NewTask(spec=spec(tenant="globex"), request_hash="body-3", idempotency_key="fresh"),  # keys are per tenant
        ]
    )
    plain, replayed, stored_conflict, fresh, fresh_again, fresh_conflict, globex = outcomes
    assert isinstance(plain, tuple)
    assert plain[1]
    assert plain[0].state == TaskState.QUEUED
    assert replayed == (earlier, False)
    assert isinstance(stored_conflict, IdempotencyConflict)
    assert stored_conflict.task_id == earlier.id
    assert isinstance(fresh, tuple)
    assert fresh[1]
    assert fresh_again == (fresh[0], False)
    assert isinstance(fresh_conflict, IdempotencyConflict)
    assert fresh_conflict.task_id == fresh[0].id
    assert isinstance(globex, tuple)
    assert globex[1]
    assert globex[0].spec.tenant == "globex"
    assert len({plain[0].id, fresh[0].id, globex[0].id, earlier.id}) == 4
    # three tasks created, each with its one task.created event, nothing for the rest
    assert count(engine) - events_before == 3
    assert store.get_task(fresh[0].id) == fresh[0]
    assert store.create_tasks([]) == []


def test_a_batch_gathered_over_a_while_keeps_each_arrival_s_own_time_and_none_from_the_future(engine: Engine) -> None:
    clock = Clock(datetime(2026, 12, 6, 12, 0, tzinfo=UTC))
    store = Store(engine, clock=clock)
    arrived = [clock.now - timedelta(seconds=s) for s in (4.5, 2.0)]
    outcomes = store.create_tasks(
        [
            NewTask(spec=spec(), request_hash="a", submitted_at=arrived[0]),
            NewTask(spec=spec(), request_hash="b", submitted_at=arrived[1]),
            NewTask(spec=spec(), request_hash="c"),  # the store's now
        ]
    )
    made = [outcome[0] for outcome in outcomes if isinstance(outcome, tuple)]
    assert [task.created_at for task in made] == [*arrived, clock.now]
    assert [store.get_task(task.id).created_at for task in made] == [*arrived, clock.now]
    created = [e.at for task in made for e in store.list_events(task.id) if e.kind == "task.created"]
    assert created == [*arrived, clock.now]
    stored = count(engine)
    for bad in (clock.now + timedelta(seconds=1), datetime(2026, 12, 6, 11, 0)):  # the future; no time zone
        with pytest.raises(ValueError, match="submitted_at"):
            store.create_tasks(
                [NewTask(spec=spec(), request_hash="d"), NewTask(spec=spec(), request_hash="e", submitted_at=bad)]
            )
    assert count(engine) == stored  # nothing of a refused batch is written


def test_list_filters_and_cursor_pagination(engine: Engine) -> None:
    clock = Clock(datetime(2026, 1, 1, 12, 0, tzinfo=UTC))
    store = Store(engine, clock=clock)
    priorities = list(Priority)
    sensitivities = list(DataSensitivity)
    created: list[str] = []
    for i in range(23):
        clock.advance(60)
        created.append(
            new_task(
                store,
                tenant="acme" if i % 2 else "globex",
                priority=priorities[i % 4],
                data_sensitivity=sensitivities[i % 3],
            )
        )
    store.transition_task(created[5], wanted=TaskState.PLANNED, actor="s", target="local")
    store.transition_task(created[6], wanted=TaskState.PLANNED, actor="s", target="aws-spot")

    for newest_first in (True, False):
        seen: list[str] = []
        cursor: str | None = None
        pages = 0
        while True:
            page, cursor = store.list_tasks(limit=5, cursor=cursor, newest_first=newest_first)
            seen.extend(t.id for t in page)
            pages += 1
            if cursor is None:
                break
        assert pages == 5
        assert seen == (created[::-1] if newest_first else created)

    def ids(**filters: Any) -> set[str]:
        page, cursor = store.list_tasks(limit=100, **filters)
        assert cursor is None
        return {t.id for t in page}

    assert ids(tenant="acme") == set(created[1::2])
    assert ids(priority=Priority.URGENT) == set(created[3::4])
    assert ids(data_sensitivity=DataSensitivity.PRIVATE) == set(created[2::3])
    assert ids(state=TaskState.PLANNED) == {created[5], created[6]}
    assert ids(target="local") == {created[5]}
    start = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
    # created_after inclusive, created_before exclusive: task i was created at start + (i+1) min
    window = ids(created_after=start + timedelta(minutes=3), created_before=start + timedelta(minutes=6))
    assert window == set(created[2:5])
    assert ids(tenant="acme", priority=Priority.HIGH, state=TaskState.QUEUED) == {
        t for i, t in enumerate(created) if i % 2 and i % 4 == 2
    }
    with pytest.raises(ValueError, match="limit"):
        store.list_tasks(limit=0)
    with pytest.raises(StatementError, match="naive"):
        store.list_tasks(created_after=datetime(2026, 1, 1))


def test_decisions_round_trip(store: Store) -> None:
    task_id = new_task(store)
    decided = datetime(2026, 3, 4, 5, 6, 7, 890123, tzinfo=UTC)
    first = PlacementPlan(
        task_id=task_id,
        policy_version="a" * 64,
        decided_at=decided,
        candidates=(
            Candidate(
                target="aws-spot",
                provider="aws",
                private=False,
                region="us-east-1",
                instance_type="g4dn.xlarge",
                max_price_usd_h=0.4,
                expected_usd_h=0.21,
                hedge_group=1,
                reasons=("rule 2: batch at peak", "spot 0.21 < 0.40"),
            ),
            Candidate(target="local", provider="local", private=True),
        ),
        rejections=(Rejection(target="azure-spot", code="stale_price", detail="price is 900 s old"),),
        trace=("rule 1: no match", "rule 2: matched"),
        signals_used={"aws_spot/us-east-1/g4dn.xlarge": {"value": 0.21, "age_s": 12.5}, "queue": 3},
    )
    second = PlacementPlan(
        task_id=task_id,
        policy_version="b" * 64,
        decided_at=decided + timedelta(minutes=1),
        candidates=(),
        rejections=(),
    )
    store.record_decision(plan=first)
    store.record_decision(plan=second)
    assert store.get_decisions(task_id) == [first, second]
    assert store.get_decisions("tsk_other") == []
    kinds = [e.kind for e in store.list_events(task_id)]
    assert kinds.count("decision.recorded") == 2
    with pytest.raises(NotFound):
        store.record_decision(plan=PlacementPlan(**{**second.__dict__, "task_id": "tsk_missing"}))


def test_heartbeats_recorded_together_touch_live_attempts_only(store: Store) -> None:
    task_id = new_task(store)
    live, ended, untouched = (
        store.create_attempt(task_id=task_id, target=f"t{i}", provider="local", token_sha256=TOKEN_HASH)
        for i in range(3)
    )
    store.transition_attempt(ended.id, wanted=AttemptState.FAILED, actor="worker", exit_code=1)
    store.record_heartbeats([live.id, ended.id, live.id, "att_unknown"])
    assert store.get_progress(live.id).last_heartbeat_at is not None
    assert store.get_progress(ended.id).last_heartbeat_at is None  # a late call from an ended attempt: nothing
    assert store.get_progress(untouched.id).last_heartbeat_at is None
    store.record_heartbeats([])  # nothing to write: no error


def test_heartbeats_written_late_keep_their_own_times_and_never_go_back(store: Store) -> None:
    """``record_heartbeats_at``: each call at its own time, in one write; a late, older one moves nothing back."""
    task_id = new_task(store)
    first, second, ended = (
        store.create_attempt(task_id=task_id, target=f"t{i}", provider="local", token_sha256=TOKEN_HASH)
        for i in range(3)
    )
    store.transition_attempt(ended.id, wanted=AttemptState.FAILED, actor="worker", exit_code=1)
    t0 = store.now() - timedelta(minutes=5)
    store.record_heartbeats_at(
        [(first.id, t0), (second.id, t0 + timedelta(seconds=30)), (first.id, t0 + timedelta(seconds=60))]
    )
    store.record_heartbeats_at([(first.id, t0 + timedelta(seconds=10)), (ended.id, t0), ("att_unknown", t0)])
    assert store.get_progress(first.id).last_heartbeat_at == t0 + timedelta(seconds=60)
    assert store.get_progress(second.id).last_heartbeat_at == t0 + timedelta(seconds=30)
    assert store.get_progress(ended.id).last_heartbeat_at is None
    store.record_heartbeats_at([])  # nothing to write: no error
    with pytest.raises(ValueError, match="timezone-aware"):
        store.record_heartbeats_at([(first.id, t0.replace(tzinfo=None))])


def test_attempts_numbering_transitions_and_heartbeats(store: Store, engine: Engine) -> None:
    task_id = new_task(store)
    other_id = new_task(store)
    made = [
        store.create_attempt(task_id=task_id, target=f"t{i}", provider="local", token_sha256=TOKEN_HASH)
        for i in range(3)
    ]
    assert [a.number for a in made] == [1, 2, 3]
    assert store.create_attempt(task_id=other_id, target="x", provider="aws", token_sha256=TOKEN_HASH).number == 1
    assert store.attempts_for(task_id) == made
    attempt = made[0]
    assert attempt.id.startswith("att_")
    assert attempt.state is AttemptState.LAUNCHING
    assert_utc(attempt.created_at)
    assert store.attempt_token_sha256(attempt.id) == TOKEN_HASH

    running = store.transition_attempt(attempt.id, wanted=AttemptState.RUNNING, actor="local", backend_ref="pid:42")
    assert (running.state, running.backend_ref) == (AttemptState.RUNNING, "pid:42")
    beat = store.record_heartbeat(attempt.id, progress={"frames": 10, "of": 100})
    assert beat.state is AttemptState.RUNNING
    progress = store.get_progress(attempt.id)
    assert dict(progress.progress) == {"frames": 10, "of": 100}
    assert_utc(progress.last_heartbeat_at)

    done = store.transition_attempt(attempt.id, wanted=AttemptState.SUCCEEDED, actor="worker", exit_code=0)
    assert (done.state, done.exit_code) == (AttemptState.SUCCEEDED, 0)
    before = count(engine)
    for wanted in AttemptState:
        assert wanted not in ATTEMPT_TRANSITIONS[AttemptState.SUCCEEDED]
        with pytest.raises(InvalidTransition):
            store.transition_attempt(attempt.id, wanted=wanted, actor="worker")
    assert count(engine) == before
    # a late heartbeat does not touch a finished attempt
    store.record_heartbeat(attempt.id, progress={"frames": 99})
    assert dict(store.get_progress(attempt.id).progress) == {"frames": 10, "of": 100}
    with pytest.raises(StateMismatch):
        store.transition_attempt(made[1].id, wanted=AttemptState.FAILED, actor="x", expected=AttemptState.RUNNING)

    history = [e for e in store.list_events(task_id) if e.attempt_id == attempt.id]
    assert [(e.kind, e.to_state) for e in history] == [
        ("attempt.created", "launching"),
        ("attempt.transition", "running"),
        ("attempt.transition", "succeeded"),
    ]
    with pytest.raises(ValueError, match="sha256"):
        store.create_attempt(task_id=task_id, target="t", provider="local", token_sha256="plain-token")
    with pytest.raises(NotFound):
        store.create_attempt(task_id="tsk_missing", target="t", provider="local", token_sha256=TOKEN_HASH)
    with pytest.raises(NotFound):
        store.get_attempt("att_missing")


def test_claim_takes_most_urgent_then_oldest(store: Store) -> None:
    low = new_task(store, priority=Priority.LOW)
    normal_old = new_task(store, priority=Priority.NORMAL)
    urgent = new_task(store, priority=Priority.URGENT)
    normal_new = new_task(store, priority=Priority.NORMAL)
    high = new_task(store, priority=Priority.HIGH)
    gone = new_task(store, priority=Priority.URGENT)
    store.transition_task(gone, wanted=TaskState.CANCELLED, actor="user")

    first = store.claim_queued(batch_size=3, scheduler_id="sched-a")
    assert [t.id for t in first] == [urgent, high, normal_old]
    assert all(t.state is TaskState.PLANNED for t in first)
    second = store.claim_queued(batch_size=3, scheduler_id="sched-b")
    assert [t.id for t in second] == [normal_new, low]
    assert store.claim_queued(batch_size=3, scheduler_id="sched-a") == []
    claimed = [e for e in store.list_events(urgent) if e.kind == "task.claimed"]
    assert [(e.actor, e.from_state, e.to_state) for e in claimed] == [("sched-a", "queued", "planned")]
    counts = store.count_tasks_by_state()
    assert counts[TaskState.PLANNED] == 5
    assert counts[TaskState.CANCELLED] == 1
    assert counts[TaskState.QUEUED] == 0
    assert set(counts) == set(TaskState)


def test_two_schedulers_never_claim_the_same_task(database_url: str, engine: Engine, store: Store) -> None:
    total = 1000 if engine.dialect.name == "postgresql" else 200
    queued = {new_task(store, priority=list(Priority)[i % 4]) for i in range(total)}
    start = threading.Barrier(2)
    claims: dict[str, list[str]] = {"a": [], "b": []}
    errors: list[BaseException] = []

    def scheduler(name: str) -> None:
        own = make_engine(database_url)
        try:
            own_store = Store(own)
            start.wait(timeout=10)
            while batch := own_store.claim_queued(batch_size=20, scheduler_id=name):
                claims[name].extend(t.id for t in batch)
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)
        finally:
            own.dispose()

    threads = [threading.Thread(target=scheduler, args=(name,)) for name in claims]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not errors
    a, b = set(claims["a"]), set(claims["b"])
    assert len(a) == len(claims["a"])
    assert len(b) == len(claims["b"])
    assert not a & b
    assert a | b == queued
    assert store.count_tasks_by_state()[TaskState.PLANNED] == total


def test_policy_versions_are_stored_once_per_content(store: Store) -> None:
    document = {"task_rules": [{"priority": "high", "data_sensitivity": "public", "use_cloud": True}]}
    version = store.save_policy_version(document=document, created_by="ops", source="file:policies/default.json")
    assert len(version) == 64
    reordered = {"task_rules": [{"use_cloud": True, "data_sensitivity": "public", "priority": "high"}]}
    assert store.save_policy_version(document=reordered, created_by="other", source="cli") == version
    stored = store.get_policy_version(version)
    assert stored.document == document
    assert stored.created_by == "ops"
    assert_utc(stored.created_at)
    assert [p.version for p in store.list_policy_versions()] == [version]
    with pytest.raises(NotFound):
        store.get_policy_version("0" * 64)


def test_a_claim_skips_rows_another_scheduler_holds(engine: Engine, store: Store) -> None:
    if engine.dialect.name != "postgresql":
        pytest.skip("row locks are PostgreSQL's; SQLite serialises whole claims (covered above)")
    held, free = new_task(store, priority=Priority.URGENT), new_task(store)
    with engine.connect() as other, other.begin():
        # another scheduler is mid-claim on the most urgent task
        other.execute(select(tasks.c.id).where(tasks.c.id == held).with_for_update()).one()
        claimed = store.claim_queued(batch_size=10, scheduler_id="sched-b")  # must not wait for the lock
        assert [t.id for t in claimed] == [free]
    assert store.get_task(held).state is TaskState.QUEUED


def test_a_batch_that_loses_a_key_race_retries_item_by_item(engine: Engine, store: Store) -> None:
    if engine.dialect.name != "postgresql":
        pytest.skip("SQLite writers are serialised, so the race cannot happen there")
    other_process = Store(engine)
    outcomes: list[Any] = []
    with engine.connect() as conn:
        holder = conn.begin()
        # another control plane is inserting the same key and has not committed yet
        other_process._insert_tasks(conn, [NewTask(spec=spec(), request_hash="body", idempotency_key="raced")])
        worker = threading.Thread(
            target=lambda: outcomes.extend(
                store.create_tasks(
                    [
                        NewTask(spec=spec(), request_hash="body", idempotency_key="raced"),
                        NewTask(spec=spec(), request_hash="plain"),
                    ]
                )
            )
        )
        worker.start()
        worker.join(timeout=1.0)
        assert worker.is_alive(), "the batch should be waiting on the unique index"
        holder.commit()
    worker.join(timeout=10)
    raced, plain = outcomes
    assert raced[1] is False
    assert raced[0].spec.tenant == spec().tenant
    assert plain[1] is True
    assert count(engine, tasks) == 2
