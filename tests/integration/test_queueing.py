"""Queueing: a task with no placement now waits in ``queued`` with its reason, and is placed when capacity frees.

It fails only when nothing could ever place it (at once), or when its wait
reaches ``thresholds.max_queue_seconds`` or its own deadline, naming which.
Waiting writes a receipt and a ``task.waiting`` event when the reason
changes, not on every re-plan. The backend is ``providers/noop.py`` with a
fixed number of slots; the store and the scheduler share an injected clock,
so backoffs and limits are exact and nothing sleeps.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from controlplane.domain import (
    AttemptState,
    DataSensitivity,
    InsufficientCapacity,
    PlacementPlan,
    Priority,
    SignalSample,
    SignalSnapshot,
    Task,
    TaskKind,
    TaskSpec,
    TaskState,
)
from controlplane.policy import Policy, parse_policy
from controlplane.runtime import standalone_scheduler
from controlplane.scheduler import Scheduler
from controlplane.scheduler.wakeups import CONDITIONS_WAKE_MIN_S
from controlplane.store import Store, make_engine, upgrade, waiting_summary
from controlplane.store.tables import decisions, events, tasks
from providers.base import BackendState, BackendStatus
from providers.noop import NoopProvider
from tests.support.clock import Clock
from tests.support.policies import SPOT_KEY, home_and_spot

# fixtures: a session PostgreSQL and `database_url` on both databases
pytest_plugins = ["tests.integration.store_fixtures"]
pytestmark = pytest.mark.timeout(60)

T0 = datetime(2026, 12, 4, 12, 0, tzinfo=UTC)


def policy(**thresholds: Any) -> Policy:
    return parse_policy(
        {
            "targets": [{"name": "home", "provider": "local", "private": True}],
            "rules": [{"name": "home", "targets": ["home"]}],
            "thresholds": thresholds,
        }
    )


@dataclass
class World:
    store: Store
    clock: Clock
    local: NoopProvider
    scheduler: Scheduler

    def submit(
        self, name: str, *, deadline: int | None = None, priority: Priority = Priority.NORMAL, private: bool = False
    ) -> str:
        task, _ = self.store.create_task(
            spec=TaskSpec(
                tenant="acme",
                kind=TaskKind.IMAGE,
                source_uri="s3://in/face.png",
                target_uri=f"s3://in/{name}.png",
                output_uri=f"s3://out/{name}.png",
                priority=priority,
                deadline_seconds=deadline,
                data_sensitivity=DataSensitivity.PRIVATE if private else DataSensitivity.PUBLIC,
            ),
            request_hash=name,
        )
        return task.id

    def finish(self, task_id: str) -> None:
        """The task's live attempt succeeds, and follow applies it: its slot frees."""
        (live,) = [a for a in self.store.attempts_for(task_id) if not a.state.is_final]
        self.local.set_status(live.id, BackendStatus(state=BackendState.SUCCEEDED, exit_code=0))
        assert self.scheduler.follow() == 1

    def count(self, table: Any, task_id: str, **where: Any) -> int:
        stmt = select(func.count()).select_from(table).where(table.c.task_id == task_id)
        for column, value in where.items():
            stmt = stmt.where(table.c[column] == value)
        with self.store.engine.connect() as conn:
            return int(conn.execute(stmt).scalar_one())


def make_world(url: str, *, slots: int, the_policy: Policy) -> World:
    engine = make_engine(url)
    upgrade(engine=engine)
    clock = Clock(T0)
    store = Store(engine, clock=clock)
    local = NoopProvider(name="local", slots=slots)
    scheduler = standalone_scheduler(
        store=store,
        policy=lambda: the_policy,
        providers={"local": local},
        callback_base="http://127.0.0.1:9",
        scheduler_id="sched",
        clock=clock,
    )
    return World(store, clock, local, scheduler)


@pytest.fixture
def world(database_url: str) -> Iterator[World]:
    made = make_world(database_url, slots=2, the_policy=policy(max_queue_seconds=120))
    yield made
    made.store.engine.dispose()


@pytest.fixture
def long_world(database_url: str) -> Iterator[World]:
    """Two slots, and waits allowed past the 30-minute safety net (max_queue_seconds 2 h)."""
    made = make_world(database_url, slots=2, the_policy=policy(max_queue_seconds=7200))
    yield made
    made.store.engine.dispose()


def test_a_burst_waits_for_capacity_with_its_reason_instead_of_failing(long_world: World) -> None:
    world = long_world
    ids = [world.submit(f"t{n}") for n in range(5)]
    assert world.scheduler.place_batch() == 5

    tasks = [world.store.get_task(task_id) for task_id in ids]
    # the batch counts its own launches against the 2 free slots: the others wait, none is refused at launch
    assert [t.state for t in tasks] == [TaskState.LAUNCHING] * 2 + [TaskState.QUEUED] * 3
    assert all(len(world.store.attempts_for(t.id)) == 1 for t in tasks[:2])
    for waiting in tasks[2:]:
        assert waiting.queue_reason == "home: no_capacity"
        assert waiting.queued_since == T0
        assert waiting.reason is None
        assert world.store.attempts_for(waiting.id) == []
        (receipt,) = world.store.get_decisions(waiting.id)
        assert receipt.candidates == ()
        assert [(r.target, r.code) for r in receipt.rejections] == [("home", "no_capacity")]
        (event,) = [e for e in world.store.list_events(waiting.id) if e.kind == "task.waiting"]
        assert (event.from_state, event.to_state) == ("planned", "queued")
        assert event.detail["reason"] == "home: no_capacity"
        # what it waits for (a free slot) wakes it: the timer is the 30-minute safety net
        assert event.detail["not_before"] == (T0 + timedelta(minutes=30)).isoformat()
    summary = waiting_summary(world.store)
    assert (summary.count, summary.oldest_since) == (3, T0)

    # asleep: nothing it waits for changed, so it is not planned again
    world.clock.advance(60)
    assert world.scheduler.place_batch() == 0
    # a restarted scheduler does not know what they wait for: its first batch plans them again; still full,
    # so no new receipt, no new event, nothing else written
    world.scheduler = standalone_scheduler(
        store=world.store,
        policy=world.scheduler.policy,
        providers={"local": world.local},
        callback_base="http://127.0.0.1:9",
        scheduler_id="sched",
        clock=world.clock,
    )
    before = [(world.count(decisions, t), world.count(events, t)) for t in ids[2:]]
    assert world.scheduler.place_batch() == 3
    assert [(world.count(decisions, t), world.count(events, t)) for t in ids[2:]] == before
    assert [world.store.get_task(t).state for t in ids[2:]] == [TaskState.QUEUED] * 3

    # a slot frees: the oldest waiting task is placed at once, without sitting out its backoff
    world.clock.advance(0.5)
    world.finish(ids[0])
    assert world.scheduler.place_batch() == 1
    placed = world.store.get_task(ids[2])
    assert (placed.state, placed.queue_reason, placed.queued_since) == (TaskState.LAUNCHING, None, None)
    assert [d.candidates[0].target for d in world.store.get_decisions(ids[2])[1:]] == ["home"]
    assert [world.store.get_task(t).state for t in ids[3:]] == [TaskState.QUEUED] * 2

    # every task ends succeeded as slots free
    for task_id in ids[1:]:
        world.clock.advance(0.5)
        world.finish(task_id)
        world.scheduler.place_batch()
    assert [world.store.get_task(t).state for t in ids] == [TaskState.SUCCEEDED] * 5
    assert waiting_summary(world.store).count == 0


def test_an_old_waiting_task_is_placed_before_a_newer_one(world: World) -> None:
    busy = [world.submit("busy-1"), world.submit("busy-2")]
    old = world.submit("old")
    assert world.scheduler.place_batch() == 3
    world.clock.advance(30)
    assert world.scheduler.place_batch() == 0  # asleep: nothing it waits for changed
    assert world.store.get_task(old).state == TaskState.QUEUED
    newer = world.submit("newer")
    assert world.scheduler.place_batch() == 1  # the newer one is planned at once, and waits too
    world.finish(busy[0])
    world.scheduler.place_batch()
    assert world.store.get_task(old).state == TaskState.LAUNCHING
    assert world.store.get_task(newer).state == TaskState.QUEUED


def test_free_slots_on_another_target_wake_no_task_waiting_for_a_full_one(database_url: str) -> None:
    """Private tasks wait for the full home cluster while a public target ("prem", a suffix of its name) has room.

    Waking them would re-plan every one of them every round for nothing; a slot on "onprem" wakes one.
    """
    the_policy = parse_policy(
        {
            "targets": [
                {"name": "onprem", "provider": "local", "private": True},
                {"name": "prem", "provider": "kubernetes", "private": False},
            ],
            "rules": [
                {"name": "private-home", "match": {"data_sensitivity": "private"}, "targets": ["onprem"]},
                {"name": "rest", "targets": ["prem"]},
            ],
        }
    )
    world = make_world(database_url, slots=1, the_policy=the_policy)
    world.scheduler.providers = {"local": world.local, "kubernetes": NoopProvider(name="kubernetes", slots=50)}
    try:
        busy = world.submit("busy", private=True)
        waiting = [world.submit(f"w{n}", private=True) for n in range(3)]
        assert world.scheduler.place_batch() == 4
        reasons = [world.store.get_task(t).queue_reason for t in waiting]
        assert reasons == ["onprem: no_capacity; prem: private_data"] * 3
        world.clock.advance(0.5)  # inside their 1 s backoff: "prem" has 50 free slots, "onprem" none
        assert world.scheduler.place_batch() == 0
        world.finish(busy)  # a slot frees on onprem: one waiting task (the oldest) is woken, and placed
        assert world.scheduler.place_batch() == 1
        assert [world.store.get_task(t).state for t in waiting] == [TaskState.LAUNCHING] + [TaskState.QUEUED] * 2
    finally:
        world.store.engine.dispose()


def home_and_spot_world(database_url: str) -> tuple[World, dict[str, float]]:
    """Private work on ``home`` (one slot), public on ``spot`` (ten), whose breaker starts open.

    The signals are the returned dict (sample name -> value), observed at the world's clock when read.
    """
    the_policy = parse_policy(
        {
            "targets": home_and_spot(),
            "rules": [
                {"name": "private-home", "match": {"data_sensitivity": "private"}, "targets": ["home"]},
                {"name": "public-spot", "targets": ["spot"]},
            ],
        }
    )
    world = make_world(database_url, slots=1, the_policy=the_policy)
    live: dict[str, float] = {f"spot_price/{SPOT_KEY}": 0.3, f"breaker/{SPOT_KEY}": 1.0}

    def samples() -> dict[str, SignalSample]:
        now = world.clock()
        return {
            name: SignalSample(
                source=name.partition("/")[0], key=name.partition("/")[2], value=value, observed_at=now, ttl_seconds=600
            )
            for name, value in live.items()
        }

    world.scheduler.signals = samples
    world.scheduler.providers = {"local": world.local, "aws": NoopProvider(name="aws", slots=10)}
    return world, live


def test_a_breaker_that_closes_wakes_the_tasks_waiting_for_it_and_leaves_the_others_asleep(
    database_url: str,
) -> None:
    """Public work waits for spot's open breaker, private work for the full home cluster.

    Both sleep until what they wait for changes (30 minutes at most); the
    breaker closing plans the spot waiter again in the next batch, and only it.
    """
    world, live = home_and_spot_world(database_url)

    def not_before(task_id: str) -> datetime | None:
        with world.store.engine.connect() as conn:
            value = conn.execute(select(tasks.c.not_before).where(tasks.c.id == task_id)).scalar_one()
        return None if value is None else value.replace(tzinfo=UTC)

    try:
        world.submit("busy", private=True)
        home_waiter, spot_waiter = world.submit("home-waiter", private=True), world.submit("spot-waiter")
        assert world.scheduler.place_batch() == 3
        assert world.store.get_task(home_waiter).queue_reason == "home: no_capacity; spot: private_data"
        assert world.store.get_task(spot_waiter).queue_reason == "home: excluded_by_rule; spot: breaker_open"
        backoff = not_before(home_waiter)
        assert backoff == world.clock() + timedelta(minutes=30)  # the safety net: what they wait for wakes them
        world.clock.advance(100)
        assert world.scheduler.place_batch() == 0  # nothing they wait for changed: both asleep
        world.clock.advance(5)
        live[f"breaker/{SPOT_KEY}"] = 0.0  # the breaker closes
        assert world.scheduler.place_batch() == 1
        assert world.store.get_task(spot_waiter).state == TaskState.LAUNCHING
        assert (world.store.get_task(spot_waiter).target, world.store.get_task(home_waiter).state) == (
            "spot",
            TaskState.QUEUED,
        )
        assert not_before(home_waiter) == backoff  # not re-planned: nothing it waits for changed
    finally:
        world.store.engine.dispose()


def test_the_safety_net_grows_with_the_wait_through_the_store(database_url: str) -> None:
    """Re-planned by its timer alone, a waiting task sleeps 30, 30, 60, 120, 240, 240 minutes: its wait so far."""
    world = make_world(database_url, slots=1, the_policy=policy(max_queue_seconds=86_400))
    try:
        world.submit("busy")
        waiter = world.submit("waits")
        assert world.scheduler.place_batch() == 2
        began = world.store.get_task(waiter).queued_since
        sleeps = []
        for _ in range(6):
            task = world.store.get_task(waiter)
            assert (task.state, task.queued_since) == (TaskState.QUEUED, began)  # one wait, however often planned
            with world.store.engine.connect() as conn:
                until = conn.execute(select(tasks.c.not_before).where(tasks.c.id == waiter)).scalar_one()
            sleep_s = (until.replace(tzinfo=UTC) - world.clock()).total_seconds()
            sleeps.append(round(sleep_s / 60))
            world.clock.advance(sleep_s - 1)
            assert world.scheduler.place_batch() == 0  # asleep until its timer
            world.clock.advance(1)
            assert world.scheduler.place_batch() == 1  # its timer: planned again, still no slot
        assert sleeps == [30, 30, 60, 120, 240, 240]
        assert world.count(decisions, waiter) == 1  # the same reason each time: no new receipt
    finally:
        world.store.engine.dispose()


def test_a_waiting_task_fails_at_the_max_queue_time_naming_it(world: World) -> None:
    for name in ("busy-1", "busy-2"):
        world.submit(name)
    task_id = world.submit("waits")
    world.scheduler.place_batch()
    for _ in range(40):  # planned again and again while the slots stay busy, never longer than the limit
        world.clock.advance(5)
        world.scheduler.place_batch()
        if world.store.get_task(task_id).state != TaskState.QUEUED:
            break
    task = world.store.get_task(task_id)
    assert task.state == TaskState.FAILED
    assert task.reason == "waited 120 s (thresholds.max_queue_seconds 120 s) without a placement: home: no_capacity"
    assert world.clock() == T0 + timedelta(seconds=120)  # failed at the limit, not a backoff later
    assert (task.queue_reason, task.queued_since) == (None, None)
    assert world.count(decisions, task_id) == 2  # the wait, and the plan that ended it


def test_a_waiting_task_fails_at_its_own_deadline_when_that_comes_first(world: World) -> None:
    busy = [world.submit(name) for name in ("busy-1", "busy-2")]
    task_id = world.submit("hurry", deadline=20)
    world.scheduler.place_batch()
    world.clock.advance(19)
    world.scheduler.place_batch()
    assert world.store.get_task(task_id).state == TaskState.QUEUED
    world.clock.advance(1)
    world.finish(busy[0])  # a slot frees just as the deadline passes: too late to start the work
    world.scheduler.place_batch()
    task = world.store.get_task(task_id)
    assert world.store.attempts_for(task_id) == []
    assert task.state == TaskState.FAILED
    assert task.reason == ("waited 20 s (the task's deadline_seconds 20 s) without a placement: home: no_capacity")


def test_a_plan_nothing_could_ever_satisfy_fails_at_once(tmp_path: Path) -> None:
    public_only = parse_policy(
        {
            "targets": [{"name": "spot", "provider": "local", "private": False}],
            "rules": [{"name": "spot", "targets": ["spot"]}],
        }
    )
    world = make_world(f"sqlite:///{tmp_path / 'state.db'}", slots=2, the_policy=public_only)
    task_id = world.submit("secret", private=True)
    assert world.scheduler.place_batch() == 1
    task = world.store.get_task(task_id)
    assert (task.state, task.reason, task.queue_reason) == (TaskState.FAILED, "no placement: spot: private_data", None)
    world.store.engine.dispose()


def test_a_waiting_task_can_be_cancelled(world: World) -> None:
    for name in ("busy-1", "busy-2"):
        world.submit(name)
    task_id = world.submit("waits")
    world.scheduler.place_batch()
    world.store.transition_task(task_id, wanted=TaskState.CANCELLED, actor="ops", reason="not needed")
    task = world.store.get_task(task_id)
    assert (task.state, task.queue_reason) == (TaskState.CANCELLED, None)
    world.clock.advance(5)
    world.scheduler.place_batch()
    assert world.store.get_task(task_id).state == TaskState.CANCELLED
    assert all(a.state != AttemptState.LAUNCHING for a in world.store.attempts_for(task_id))


def test_max_queue_seconds_is_validated_with_its_json_path() -> None:
    from controlplane.policy import PolicyError

    with pytest.raises(PolicyError) as caught:
        policy(max_queue_seconds=0)
    assert caught.value.path == "thresholds.max_queue_seconds"
    assert policy().thresholds.max_queue_seconds == 3600


def test_a_new_reason_writes_a_new_receipt_and_event(world: World) -> None:
    for name in ("busy-1", "busy-2"):
        world.submit(name)
    task_id = world.submit("waits")
    world.scheduler.place_batch()
    wider = parse_policy(
        {
            "targets": [
                {"name": "home", "provider": "local", "private": True},
                {"name": "annex", "provider": "local", "private": True},
            ],
            "rules": [{"name": "both", "targets": ["home", "annex"]}],
            "thresholds": {"max_queue_seconds": 120},
        }
    )
    world.scheduler.policy = lambda: wider
    world.clock.advance(1)
    world.scheduler.place_batch()
    task = world.store.get_task(task_id)
    assert (task.state, task.queue_reason) == (TaskState.QUEUED, "home: no_capacity; annex: no_capacity")
    assert task.queued_since == T0  # the same wait goes on
    assert len(world.store.get_decisions(task_id)) == 2
    changes = [e.detail for e in world.store.list_events(task_id) if e.kind == "task.waiting"]
    assert [(c["previous"], c["reason"]) for c in changes] == [
        (None, "home: no_capacity"),
        ("home: no_capacity", "home: no_capacity; annex: no_capacity"),
    ]


def counting_plans(world: World) -> Counter[str]:
    """How many times each task is planned from now on (the scheduler's planner, counted)."""
    counted: Counter[str] = Counter()
    planner = world.scheduler.planner

    def counting(task: Task, snapshot: SignalSnapshot, policy: Policy, now: datetime) -> PlacementPlan:
        counted[task.id] += 1
        return planner(task, snapshot, policy, now)

    world.scheduler.planner = counting
    return counted


def test_a_change_wakes_waiting_tasks_one_batch_at_a_time_while_they_launch(database_url: str) -> None:
    """A breaker that closes wakes the tasks waiting for it in waves of one batch (2 here), most urgent first.

    Spot has room: each wave launches, so the next goes in the next batch. Private work waiting for the full
    home cluster meanwhile is never re-planned: nothing it waits for changed.
    """
    world, live = home_and_spot_world(database_url)
    world.scheduler.batch_size = 2
    plans = counting_plans(world)
    try:
        world.submit("busy", private=True)
        home_waiter = world.submit("home-waiter", private=True)
        spot = [world.submit(f"spot-{n}", priority=Priority.HIGH if n == 4 else Priority.NORMAL) for n in range(5)]
        while world.scheduler.place_batch():
            pass
        assert {world.store.get_task(t).queue_reason for t in spot} == {"home: excluded_by_rule; spot: breaker_open"}
        world.clock.advance(200)
        assert world.scheduler.place_batch() == 0  # all asleep: nothing they wait for changed
        live[f"breaker/{SPOT_KEY}"] = 0.0  # the breaker closes
        launched: list[list[str]] = []
        for _ in range(4):
            assert world.scheduler.place_batch() <= 2
            launched.append([t for t in spot if world.store.get_task(t).state == TaskState.LAUNCHING])
        # the urgent one first, then the oldest: a wave of two per batch, the last wave of one ends it
        assert launched == [[spot[0], spot[4]], [spot[0], spot[1], spot[2], spot[4]], spot, spot]
        assert world.store.get_task(home_waiter).state == TaskState.QUEUED
        assert plans[home_waiter] == 1  # its first plan only: the breaker is nothing it waits for
    finally:
        world.store.engine.dispose()


def test_a_wave_whose_every_launch_is_refused_for_room_stops_there(database_url: str) -> None:
    """A breaker closes, but spot has no room after all: each launch of the first wave is refused for capacity.

    Those two go back to waiting for room (no attempt spent), and the wave stops there: a wave goes on only
    while its tasks really launch, so the three others sleep out their backoff instead of being woken one
    batch after another into the same refusal.
    """
    world, live = home_and_spot_world(database_url)
    world.scheduler.batch_size = 2
    plans = counting_plans(world)
    try:
        spot = [world.submit(f"spot-{n}", priority=Priority.HIGH if n == 4 else Priority.NORMAL) for n in range(5)]
        while world.scheduler.place_batch():
            pass
        world.clock.advance(200)
        before = dict(plans)
        spot_backend = world.scheduler.providers["aws"]
        assert isinstance(spot_backend, NoopProvider)
        for _ in range(2):  # the backend reports room, but each launch of the wave is refused for want of it
            spot_backend.fail_next(InsufficientCapacity("no spot capacity in the zone", target="spot"))
        live[f"breaker/{SPOT_KEY}"] = 0.0  # the breaker closes
        assert world.scheduler.place_batch() == 2  # the first wave: the urgent one and the oldest
        assert world.scheduler.place_batch() == 0  # it launched none: no second wave
        assert [plans[t] - before[t] for t in spot] == [1, 0, 0, 0, 1]
        refused = [world.store.get_task(t) for t in (spot[0], spot[4])]
        assert [(t.state, t.queue_reason) for t in refused] == [(TaskState.QUEUED, "spot: insufficient_capacity")] * 2
        assert all(len(world.store.attempts_for(t)) == 1 for t in (spot[0], spot[4]))
    finally:
        world.store.engine.dispose()


def test_a_change_that_helps_nobody_re_plans_one_batch_of_the_waiting_tasks_not_all(database_url: str) -> None:
    """A rule's ``when`` flips (the queue grows past its mark): every waiting task *might* go elsewhere now.

    Here none can (the home cluster is full, and the rule that starts to hold names it too), so the first
    wave of two goes back to waiting and the wave ends: the other waiting tasks sleep out their backoff.
    """
    the_policy = parse_policy(
        {
            "targets": [{"name": "home", "provider": "local", "private": True}],
            "rules": [
                {"name": "busy", "when": {"queue_depth_above": 4}, "targets": ["home"]},
                {"name": "home", "targets": ["home"]},
            ],
        }
    )
    world = make_world(database_url, slots=1, the_policy=the_policy)
    world.scheduler.batch_size = 2
    depth = {"value": 0.0}

    def samples() -> dict[str, SignalSample]:
        return {
            "queue/depth": SignalSample(
                source="queue", key="depth", value=depth["value"], observed_at=world.clock(), ttl_seconds=600
            )
        }

    world.scheduler.signals = samples
    plans = counting_plans(world)
    try:
        world.submit("busy")
        waiting = [world.submit(f"w{n}") for n in range(6)]
        while world.scheduler.place_batch():
            pass
        before = dict(plans)
        world.clock.advance(CONDITIONS_WAKE_MIN_S + 1)
        depth["value"] = 6.0  # "busy" starts to hold: a flip
        assert world.scheduler.place_batch() == 2
        assert world.scheduler.place_batch() == 0  # the wave launched none: no second one
        replanned = [plans[t] - before[t] for t in waiting]
        assert sorted(replanned) == [0, 0, 0, 0, 1, 1]
        assert all(world.store.get_task(t).state == TaskState.QUEUED for t in waiting)
    finally:
        world.store.engine.dispose()


def test_free_spot_capacity_behind_an_open_breaker_wakes_no_task_until_the_breaker_closes(
    database_url: str,
) -> None:
    """A task waiting for spot capacity sleeps while the capacity comes back behind an open breaker.

    Planned then, it would only be turned back ``breaker_open``; once the
    breaker closes, the free capacity wakes it and it launches.
    """
    world, live = home_and_spot_world(database_url)
    live[f"breaker/{SPOT_KEY}"] = 0.0
    aws = world.scheduler.providers["aws"]
    assert isinstance(aws, NoopProvider)
    aws.slots = 0  # the provider's own count is the target's free capacity
    try:
        waiter = world.submit("spot-waiter")
        assert world.scheduler.place_batch() == 1
        assert world.store.get_task(waiter).queue_reason == "home: excluded_by_rule; spot: no_capacity"
        decided = world.count(decisions, waiter)
        world.clock.advance(5)
        live[f"breaker/{SPOT_KEY}"], aws.slots = 1.0, 3  # room again, but the breaker is open
        assert world.scheduler.place_batch() == 0
        world.clock.advance(5)
        assert world.scheduler.place_batch() == 0
        task = world.store.get_task(waiter)
        assert (task.state, task.queue_reason) == (TaskState.QUEUED, "home: excluded_by_rule; spot: no_capacity")
        assert world.count(decisions, waiter) == decided  # not planned again
        world.clock.advance(5)
        live[f"breaker/{SPOT_KEY}"] = 0.0  # closed: the free capacity wakes it
        assert world.scheduler.place_batch() == 1
        assert world.store.get_task(waiter).state == TaskState.LAUNCHING
    finally:
        world.store.engine.dispose()
