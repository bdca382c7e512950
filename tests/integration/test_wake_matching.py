"""Free capacity on a target wakes the tasks waiting for that target's capacity, and only those.

The queue reason is text ("<target>: <code>" entries joined by "; ") and the
wake matches it with LIKE: a target name is matched as itself, whole, even
when it holds LIKE's wildcard ``_`` or is a suffix of another name.
"""

from __future__ import annotations

from datetime import timedelta

import pytest

from controlplane.domain import PlacementPlan
from controlplane.store import PlannedLaunch, Store, wake_waiting
from tests.support.claimed import claimed_task

pytest_plugins = ["tests.integration.store_fixtures"]


def waiting(store: Store, reason: str) -> str:
    """A task back in the queue with ``reason``, backing off for an hour; its id."""
    claimed = claimed_task(store)
    plan = PlacementPlan(task_id=claimed.id, policy_version="v", decided_at=store.now(), candidates=(), rejections=())
    store.start_launch_groups(
        [PlannedLaunch(plan=plan, wait=reason, not_before=store.now() + timedelta(hours=1))], actor="s"
    )
    return claimed.id


@pytest.mark.parametrize(
    ("free", "reasons", "woken"),
    [
        # "_" is a LIKE wildcard: "gpu_a" must not match "gpuxa"
        ("gpu_a", ["gpuxa: no_capacity", "gpu_a: no_capacity"], [1]),
        # a suffix of another target's name, first entry or a later one
        ("prem", ["onprem: no_capacity", "spot: breaker_open; onprem: no_capacity", "spot: x; prem: no_capacity"], [2]),
        # the right target, another code: it does not wait for capacity
        ("home", ["home: breaker_open", "home: no_capacity; cloud: private_data"], [1]),
        ("a.b", ["axb: no_capacity", "a.b: no_capacity"], [1]),
    ],
    ids=["underscore", "suffix", "other-code", "dot"],
)
def test_a_target_wakes_the_tasks_waiting_for_its_own_capacity(
    store: Store, free: str, reasons: list[str], woken: list[int]
) -> None:
    ids = [waiting(store, reason) for reason in reasons]
    assert wake_waiting(store, {free: 10}) == {free: len(woken)}
    claimed = {task.id for task in store.claim_queued(batch_size=10, scheduler_id="s")}
    assert claimed == {ids[n] for n in woken}


def test_a_half_open_breaker_wakes_as_many_tasks_as_it_has_probes_most_urgent_first(store: Store) -> None:
    reasons = [
        "spot: breaker_open",
        "spot: breaker_open; home: no_capacity",
        "spot: no_capacity",
        "spoty: breaker_open",
    ]
    ids = [waiting(store, reason) for reason in reasons]
    assert wake_waiting(store, {"spot": 1}, code="breaker_open") == {"spot": 1}
    claimed = [task.id for task in store.claim_queued(batch_size=10, scheduler_id="s")]
    assert claimed == [ids[0]]  # the oldest of the two waiting for that breaker; not capacity waits, not "spoty"
