"""The reliability guards' store queries on SQLite and on a real PostgreSQL: offer outcomes and today's spend."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import Engine

from controlplane.domain import AttemptState, Candidate, PlacementPlan, TaskKind, TaskSpec, TaskState
from controlplane.policy import parse_policy, plan
from controlplane.runtime.signals import build_signal_hub
from controlplane.store import Store, TaskCost, cloud_spend_today, offer_outcomes, task_costs
from controlplane.store.spend import day_start

pytest_plugins = ["tests.integration.store_fixtures"]

TOKEN = hashlib.sha256(b"attempt-token").hexdigest()
NOON = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
EAST = ("aws", "us-east-1", "g4dn.xlarge")
WEST = ("aws", "us-west-2", "g4dn.xlarge")


class Clock:
    def __init__(self, start: datetime) -> None:
        self.now = start

    def __call__(self) -> datetime:
        return self.now

    def at(self, moment: datetime) -> None:
        self.now = moment


@pytest.fixture
def clock() -> Clock:
    return Clock(NOON)


@pytest.fixture
def timed(engine: Engine, clock: Clock) -> Store:
    """A store on both databases whose clock the test moves."""
    return Store(engine, clock=clock)


def new_task(store: Store, tenant: str = "acme") -> str:
    task, _ = store.create_task(
        spec=TaskSpec(
            tenant=tenant,
            kind=TaskKind.IMAGE,
            source_uri="s3://in/face.png",
            target_uri="s3://in/target.png",
            output_uri=f"s3://out/{tenant}.png",
        ),
        request_hash="h",
    )
    store.transition_task(task.id, wanted=TaskState.PLANNED, actor="test")
    return task.id


def attempt(
    store: Store,
    clock: Clock,
    offer: tuple[str, str, str],
    *,
    at: datetime,
    ends: Sequence[tuple[datetime, AttemptState, str | None]] = (),
    tenant: str = "acme",
    task_id: str | None = None,
    price: tuple[float | None, float | None] | None = (0.4, 0.5),
) -> str:
    """A task (unless given) with a receipt naming the offer at ``price`` (expected, max), and an attempt on it."""
    provider, region, instance_type = offer
    task_id = task_id or new_task(store, tenant)
    clock.at(at)
    if price is not None:
        candidate = Candidate(
            target=provider,
            provider=provider,
            private=False,
            region=region,
            instance_type=instance_type,
            expected_usd_h=price[0],
            max_price_usd_h=price[1],
        )
        store.record_decision(
            plan=PlacementPlan(
                task_id=task_id, policy_version="v", decided_at=at, candidates=(candidate,), rejections=()
            )
        )
    created = store.create_attempt(
        task_id=task_id,
        target=provider,
        provider=provider,
        token_sha256=TOKEN,
        region=region,
        instance_type=instance_type,
    )
    for moment, state, reason in ends:
        clock.at(moment)
        store.transition_attempt(created.id, wanted=state, actor="test", reason=reason)
    return created.id


def minutes(n: float) -> timedelta:
    return timedelta(minutes=n)


# -- offer outcomes --------------------------------------------------------------------------------


def test_offer_outcomes_count_attempts_by_outcome_per_offer_over_the_window(timed: Store, clock: Clock) -> None:
    start = NOON - minutes(20)
    running = (start + minutes(1), AttemptState.RUNNING, None)
    attempt(
        timed, clock, EAST, at=start, ends=[running, (start + minutes(5), AttemptState.PREEMPTED, "spot interruption")]
    )
    attempt(timed, clock, EAST, at=start, ends=[running, (start + minutes(6), AttemptState.PREEMPTED, "evicted")])
    attempt(
        timed,
        clock,
        EAST,
        at=start + minutes(7),
        ends=[(start + minutes(7), AttemptState.FAILED, "insufficient_capacity: no g4dn.xlarge in us-east-1a")],
    )
    attempt(timed, clock, EAST, at=start, ends=[running, (start + minutes(8), AttemptState.SUCCEEDED, None)])
    attempt(timed, clock, EAST, at=start + minutes(9), ends=[(start + minutes(9), AttemptState.RUNNING, None)])
    attempt(timed, clock, EAST, at=start + minutes(10))  # still launching
    attempt(
        timed,
        clock,
        EAST,
        at=start + minutes(11),
        ends=[(start + minutes(11), AttemptState.FAILED, "throttled: slow down")],  # not a capacity verdict
    )
    attempt(timed, clock, EAST, at=start + minutes(12), ends=[(start + minutes(12), AttemptState.CANCELLED, None)])
    # outside the window (outcome recorded 2 h ago), on another offer, or not a cloud
    attempt(timed, clock, EAST, at=NOON - minutes(130), ends=[(NOON - minutes(120), AttemptState.PREEMPTED, "old")])
    attempt(timed, clock, WEST, at=start, ends=[running])
    attempt(
        timed, clock, ("local", "here", "cpu"), at=start, ends=[(start, AttemptState.FAILED, "insufficient_capacity")]
    )

    found = offer_outcomes(timed.engine, since=NOON - minutes(30))
    assert set(found) == {EAST, WEST}
    east = found[EAST]
    assert (east.preempted, east.capacity_errors, east.succeeded, east.running, east.launching, east.other) == (
        2,
        1,
        1,
        1,
        1,
        2,
    )
    assert (east.failures, east.successes, east.failure_rate) == (3, 2, 0.6)
    assert east.last_failure_created_at == start + minutes(7)
    assert east.last_success_created_at == start + minutes(9)
    assert east.last_created_at == start + minutes(12)
    assert east.last_created_at.tzinfo is not None
    assert (found[WEST].running, found[WEST].failure_rate) == (1, 0.0)
    # a running attempt counts however long ago it started; a finished one only if it ended in the window
    later = offer_outcomes(timed.engine, since=NOON + minutes(60))
    assert set(later) == {EAST, WEST}
    assert (later[EAST].running, later[EAST].launching, later[EAST].failures) == (1, 1, 0)


def test_the_breaker_poller_opens_on_stored_preemptions(timed: Store, clock: Clock) -> None:
    start = NOON - minutes(10)
    for index in range(5):
        attempt(
            timed,
            clock,
            EAST,
            at=start + minutes(index),
            ends=[
                (start + minutes(index), AttemptState.RUNNING, None),
                (start + minutes(index + 1), AttemptState.PREEMPTED if index < 3 else AttemptState.SUCCEEDED, None),
            ],
        )
    policy = parse_policy(
        {
            "targets": [
                {
                    "name": "aws",
                    "provider": "aws",
                    "private": False,
                    "regions": ["us-east-1"],
                    "instance_types": ["g4dn.xlarge"],
                }
            ]
        }
    )
    hub = build_signal_hub(store=timed, policy=lambda: policy, sources=[])
    hub._clock = lambda: NOON
    hub.poll("breaker", force=True)
    hub.poll("budget", force=True)  # no budget in the policy: nothing computed
    samples = hub.samples()
    assert samples["breaker/aws/us-east-1/g4dn.xlarge"].value == 1
    assert not any(name.startswith("budget/") for name in samples)


# -- spend today -----------------------------------------------------------------------------------


def test_spend_today_is_runtime_times_the_receipts_price_per_tenant(timed: Store, clock: Clock) -> None:
    today = day_start(NOON)
    assert today == datetime(2026, 11, 24, tzinfo=UTC)
    # acme: 1 h at the expected 0.4 $/h, finished
    attempt(
        timed,
        clock,
        EAST,
        at=NOON - minutes(120),
        ends=[(NOON - minutes(119), AttemptState.RUNNING, None), (NOON - minutes(60), AttemptState.SUCCEEDED, None)],
    )
    # acme: still running since 11:30, no expected price: the max price, 0.5 $/h, for 30 min
    attempt(
        timed,
        clock,
        WEST,
        at=NOON - minutes(30),
        ends=[(NOON - minutes(29), AttemptState.RUNNING, None)],
        price=(None, 0.5),
    )
    # film: running since yesterday 23:00 at 0.25 $/h: only today's 12 h count
    attempt(
        timed,
        clock,
        ("azure", "eastus", "NC4"),
        at=today - minutes(60),
        ends=[(today - minutes(59), AttemptState.RUNNING, None)],
        tenant="film",
        price=(0.25, None),
    )
    # film: a launch refused at once costs nothing
    attempt(
        timed,
        clock,
        EAST,
        at=NOON - minutes(10),
        ends=[(NOON - minutes(10), AttemptState.FAILED, "insufficient_capacity: x")],
        tenant="film",
    )
    # not counted: finished yesterday; a local attempt; a cloud attempt without any price (counted as unpriced)
    attempt(
        timed,
        clock,
        EAST,
        at=today - minutes(180),
        ends=[(today - minutes(170), AttemptState.RUNNING, None), (today - minutes(61), AttemptState.SUCCEEDED, None)],
    )
    attempt(
        timed,
        clock,
        ("local", "here", "cpu"),
        at=NOON - minutes(60),
        ends=[(NOON - minutes(59), AttemptState.RUNNING, None)],
    )
    attempt(
        timed,
        clock,
        EAST,
        at=NOON - minutes(60),
        ends=[(NOON - minutes(59), AttemptState.RUNNING, None)],
        tenant="ops",
        price=(None, None),
    )

    prices: dict[str, float | None] = {}
    spend = cloud_spend_today(timed.engine, now=NOON, prices=prices)
    assert spend.attempts == 5
    assert spend.unpriced_attempts == 1
    assert spend.per_tenant == pytest.approx({"acme": 0.4 + 0.25, "film": 3.0, "ops": 0.0})
    assert spend.total_usd == pytest.approx(3.65)
    assert len(prices) == 5  # every attempt of today priced once, kept for the next poll

    # an hour later, from the cache: the live ones grew, the finished one did not
    later = cloud_spend_today(timed.engine, now=NOON + minutes(60), prices=prices)
    assert later.per_tenant == pytest.approx({"acme": 0.4 + 0.75, "film": 3.25, "ops": 0.0})
    # the next UTC day: yesterday's finished attempts drop out, and out of the cache
    tomorrow = today + timedelta(days=1)
    next_day = cloud_spend_today(timed.engine, now=tomorrow + minutes(60), prices=prices)
    assert next_day.attempts == 3  # the three still running
    assert next_day.per_tenant == pytest.approx({"acme": 0.5, "film": 0.25, "ops": 0.0})
    assert len(prices) == 3


def test_a_failover_attempt_is_priced_from_its_own_candidate(timed: Store, clock: Clock) -> None:
    task_id = new_task(timed)
    clock.at(NOON - minutes(60))
    east = Candidate(
        target="aws", provider="aws", private=False, region="us-east-1", instance_type="g4dn.xlarge", expected_usd_h=0.3
    )
    azure = Candidate(
        target="azure", provider="azure", private=False, region="eastus", instance_type="NC4", expected_usd_h=0.9
    )
    timed.record_decision(
        plan=PlacementPlan(
            task_id=task_id, policy_version="v", decided_at=clock.now, candidates=(east, azure), rejections=()
        )
    )
    first = timed.create_attempt(
        task_id=task_id,
        target="aws",
        provider="aws",
        token_sha256=TOKEN,
        region="us-east-1",
        instance_type="g4dn.xlarge",
    )
    timed.transition_attempt(first.id, wanted=AttemptState.FAILED, actor="test", reason="insufficient_capacity: none")
    second = timed.create_attempt(
        task_id=task_id, target="azure", provider="azure", token_sha256=TOKEN, region="eastus", instance_type="NC4"
    )
    timed.transition_attempt(second.id, wanted=AttemptState.RUNNING, actor="test")
    prices: dict[str, Any] = {}
    spend = cloud_spend_today(timed.engine, now=NOON, prices=prices)
    assert prices == {first.id: 0.3, second.id: 0.9}
    assert spend.total_usd == pytest.approx(0.9)


def test_a_tasks_cost_is_every_cloud_attempt_over_its_whole_life(timed: Store, clock: Clock) -> None:
    today = day_start(NOON)
    # since yesterday 23:00 at 0.4 $/h, failed over at 01:00 (2 h), then 30 min at the max 0.5 $/h, still running
    first = attempt(
        timed,
        clock,
        EAST,
        at=today - minutes(60),
        ends=[(today - minutes(59), AttemptState.RUNNING, None), (today + minutes(60), AttemptState.PREEMPTED, None)],
    )
    task_id = timed.get_attempt(first).task_id
    attempt(timed, clock, WEST, at=NOON - minutes(30), task_id=task_id, price=(None, 0.5))
    # a local attempt costs nothing; a cloud attempt with no price in its receipt is counted apart
    private = attempt(timed, clock, ("local", "here", "cpu"), at=NOON - minutes(60), price=(None, None))
    # a pod on a cloud node pool is not an aws or azure attempt, but its receipt prices it: it counts
    pod = attempt(timed, clock, ("kubernetes", "us-east-1", "g5.xlarge"), at=NOON - minutes(30), price=(1.0, None))
    unpriced = attempt(timed, clock, EAST, at=NOON - minutes(60), price=(None, None))
    private_task, unpriced_task = timed.get_attempt(private).task_id, timed.get_attempt(unpriced).task_id
    pod_task = timed.get_attempt(pod).task_id
    costs = task_costs(timed.engine, [task_id, private_task, unpriced_task, pod_task, "tsk_none"], now=NOON)
    assert costs[pod_task] == TaskCost(usd=pytest.approx(0.5))
    assert costs[task_id].usd == pytest.approx(2 * 0.4 + 0.5 * 0.5)  # not clipped to today, unlike the budget
    assert costs[task_id].unpriced_attempts == 0
    assert costs[private_task] == TaskCost(usd=0.0)
    assert costs[unpriced_task] == TaskCost(usd=0.0, unpriced_attempts=1)
    assert costs["tsk_none"] == TaskCost(usd=0.0)
    assert task_costs(timed.engine, [], now=NOON) == {}


def test_the_budget_poller_and_plan_hold_back_a_tenant_over_its_budget(timed: Store, clock: Clock) -> None:
    attempt(
        timed,
        clock,
        EAST,
        at=NOON - minutes(120),
        ends=[(NOON - minutes(119), AttemptState.RUNNING, None)],
        tenant="marketing",
        price=(3.0, 5.0),
    )
    policy = parse_policy(
        {
            "targets": [
                {"name": "local", "provider": "local", "private": True},
                {
                    "name": "aws",
                    "provider": "aws",
                    "private": False,
                    "regions": ["us-east-1"],
                    "instance_types": ["g4dn.xlarge"],
                },
            ],
            "rules": [{"name": "cloud-first", "targets": ["aws", "local"]}],
            "thresholds": {"daily_budget_usd": 100, "tenant_daily_budget_usd": {"marketing": 5}},
        }
    )
    hub = build_signal_hub(store=timed, policy=lambda: policy, sources=[])
    hub._clock = lambda: NOON
    hub.poll("budget", force=True)
    snapshot = hub.snapshot(NOON)
    assert snapshot.get("budget", "spent_today_usd").value == pytest.approx(6.0)  # type: ignore[union-attr]
    assert snapshot.get("budget", "spent_today_usd/marketing").value == pytest.approx(6.0)  # type: ignore[union-attr]

    def placed(tenant: str) -> PlacementPlan:
        return plan(timed.get_task(new_task(timed, tenant)), snapshot, policy, NOON)

    marketing = placed("marketing")
    assert [(r.target, r.code) for r in marketing.rejections] == [("aws", "budget_exhausted")]
    assert "spent 6.00 of 5 USD" in marketing.rejections[0].detail
    assert [c.target for c in placed("acme").candidates] == ["aws", "local"]
