"""Each spot offer's record over a window, read from the attempts (SQLite and PostgreSQL), and its samples."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import update

from controlplane.domain import AttemptState, Target
from controlplane.signals.base import Wanted
from controlplane.signals.spot_history import SpotHistorySource
from controlplane.store import Store
from controlplane.store.spot_history import spot_history
from controlplane.store.tables import attempts
from tests.support.claimed import launched_on

pytest_plugins = ["tests.integration.store_fixtures"]


def launched(store: Store, *, target: str = "spot", region: str = "us-east-1") -> str:
    return launched_on(store, target=target, region=region)


def ended(store: Store, attempt_id: str, state: AttemptState, *, ran_hours: float, reason: str | None = None) -> None:
    if state in (AttemptState.RUNNING, AttemptState.SUCCEEDED, AttemptState.PREEMPTED):
        store.transition_attempt(attempt_id, wanted=AttemptState.RUNNING, actor="s")
    if state is not AttemptState.RUNNING:
        store.transition_attempt(attempt_id, wanted=state, actor="s", reason=reason)
    # the attempt was launched ``ran_hours`` before it ended: set its launch time back
    row_updated = store.get_attempt(attempt_id).updated_at
    with store.engine.begin() as conn:
        conn.execute(
            update(attempts)
            .where(attempts.c.id == attempt_id)
            .values(created_at=row_updated - timedelta(hours=ran_hours))
        )


def test_launches_refusals_preemptions_and_hours_per_offer_of_the_spot_targets_only(store: Store) -> None:
    ended(store, launched(store), AttemptState.SUCCEEDED, ran_hours=1.0)
    ended(store, launched(store), AttemptState.PREEMPTED, ran_hours=0.5)
    ended(store, launched(store), AttemptState.FAILED, ran_hours=0.0, reason="insufficient_capacity: no p3 in use1a")
    ended(store, launched(store), AttemptState.FAILED, ran_hours=0.0, reason="crash: exit 70")  # not a refusal
    ended(store, launched(store, region="us-west-2"), AttemptState.SUCCEEDED, ran_hours=2.0)
    ended(store, launched(store, target="ondemand"), AttemptState.SUCCEEDED, ran_hours=3.0)  # not asked for
    now = store.now()

    found = spot_history(store.engine, since=now - timedelta(hours=24), now=now, targets=["spot"])

    east = found[("aws", "us-east-1", "p3.2xlarge")]
    assert (east.launches, east.refusals, east.preemptions) == (4, 1, 1)
    assert east.run_hours == pytest.approx(1.5, abs=0.01)  # the succeeded and the preempted ones held an instance
    west = found[("aws", "us-west-2", "p3.2xlarge")]
    assert (west.launches, west.preemptions, west.run_hours) == (1, 0, pytest.approx(2.0, abs=0.01))
    assert len(found) == 2  # the on-demand target's attempt is not spot history
    assert spot_history(store.engine, since=now + timedelta(seconds=1), now=now, targets=["spot"]) == {}


def test_a_running_attempt_counts_its_hours_up_to_now(store: Store) -> None:
    attempt_id = launched(store)
    ended(store, attempt_id, AttemptState.RUNNING, ran_hours=0.25)
    now = store.now()
    (record,) = spot_history(store.engine, since=now - timedelta(hours=1), now=now, targets=["spot"]).values()
    assert record.run_hours == pytest.approx(0.25, abs=0.01)


def test_the_source_publishes_four_samples_per_offer_and_nothing_without_spot_targets(store: Store) -> None:
    ended(store, launched(store), AttemptState.PREEMPTED, ran_hours=1.0)
    source = SpotHistorySource(
        lambda now, targets: spot_history(store.engine, since=now - timedelta(hours=24), now=now, targets=targets)
    )
    spot = Target(name="spot", provider="aws", private=False, regions=("us-east-1",), instance_types=("p3.2xlarge",))
    result = source.poll(Wanted(targets={"spot": spot}), timeout_s=5, clock=store.now)
    values = {f"{s.source}/{s.key}": s.value for s in result.samples}
    assert values["spot_history/aws/us-east-1/p3.2xlarge/preemptions"] == 1.0
    assert values["spot_history/aws/us-east-1/p3.2xlarge/launches"] == 1.0
    assert set(values) == {
        f"spot_history/aws/us-east-1/p3.2xlarge/{f}" for f in ("launches", "refusals", "preemptions", "run_hours")
    }
    on_demand = Target(name="spot", provider="aws", private=False, market="on-demand")
    assert source.poll(Wanted(targets={"spot": on_demand}), timeout_s=5, clock=store.now).samples == ()
