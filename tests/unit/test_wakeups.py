"""What wakes a waiting task besides free capacity: the changes its queue reason can be lifted by, and only those."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from controlplane.domain import SignalSample, SignalSnapshot
from controlplane.policy import Policy, conditions_held, parse_policy
from controlplane.scheduler.wakeups import (
    ASK_AGAIN_S,
    CONDITIONS_WAKE_MIN_S,
    EVERY_REASON,
    WaitWatcher,
    breakers_to_probe,
    held_by_breakers,
    probing_targets,
    watch,
)
from tests.support.policies import SPOT_KEY as KEY
from tests.support.policies import home_and_spot

T0 = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)
PRICE_CODES = frozenset({"stale_price", "price_above_max"})
BUDGET_CODES = frozenset({"budget_exhausted", "budget_unknown"})


def policy(queue_above: int = 10) -> Policy:
    return parse_policy(
        {
            "targets": home_and_spot(),
            "rules": [
                {"name": "burst", "when": {"queue_depth_above": queue_above}, "targets": ["spot", "home"]},
                {"name": "home-first", "targets": ["home", "spot"]},
            ],
        }
    )


def snapshot(at: datetime, **values: Any) -> SignalSnapshot:
    """Samples by short name (queue, breaker, price, spent): a value, or (value, observed at)."""
    names = {
        "queue": "queue/depth",
        "breaker": f"breaker/{KEY}",
        "price": f"spot_price/{KEY}",
        "spent": "budget/spent_today_usd",
    }
    samples = {}
    for short, given in values.items():
        value, observed = given if isinstance(given, tuple) else (given, at)
        source, _, key = names[short].partition("/")
        samples[names[short]] = SignalSample(
            source=source, key=key, value=float(value), observed_at=observed, ttl_seconds=120
        )
    return SignalSnapshot(taken_at=at, samples=samples)


def watched(*snapshots: SignalSnapshot, the_policy: Policy | None = None) -> list[frozenset[str]]:
    """What a watcher says for each snapshot in turn (the first is its first batch)."""
    watcher, used = WaitWatcher(), the_policy or policy()
    return [watcher.observe(used, shot) for shot in snapshots]


def test_the_first_batch_wakes_every_waiting_task_and_an_unchanged_world_wakes_none() -> None:
    same = snapshot(T0, queue=3, breaker=1, price=(0.3, T0), spent=5)
    later = snapshot(T0 + timedelta(seconds=5), queue=4, breaker=1, price=(0.3, T0), spent=5)
    # a queue that moves but flips no rule is no reason: nothing waits for the queue depth itself
    assert watched(same, later) == [EVERY_REASON, frozenset()]


def test_a_breaker_that_closes_wakes_the_breaker_waits_and_one_that_opens_or_half_opens_wakes_none() -> None:
    t1, t2, t3, t4 = (T0 + timedelta(seconds=s) for s in (5, 10, 15, 20))
    shots = [snapshot(T0, breaker=1), snapshot(t1, breaker=0.5), snapshot(t2, breaker=1), snapshot(t3)]
    shots.append(snapshot(t4, breaker=0))
    result = watched(*shots)
    # half-open (one probe: not every waiting task), open again (nothing to lift), then no sample at all (closed,
    # no longer reported), then closed while it was already not open
    assert result[1:] == [frozenset(), frozenset(), frozenset({"breaker_open"}), frozenset()]
    opened_to_closed = watched(snapshot(T0, breaker=1), snapshot(t1, breaker=0))
    assert opened_to_closed[1] == frozenset({"breaker_open"})


def test_a_probe_that_closes_a_half_open_breaker_wakes_the_rest() -> None:
    # open -> half-open (one probe) -> closed (the probe ran): the tasks still waiting for it may all go now
    t1, t2 = T0 + timedelta(seconds=5), T0 + timedelta(seconds=10)
    assert watched(snapshot(T0, breaker=1), snapshot(t1, breaker=0.5), snapshot(t2, breaker=0))[1:] == [
        frozenset(),
        frozenset({"breaker_open"}),
    ]
    # nor when the half-open breaker is no longer reported at all
    assert watched(snapshot(T0, breaker=1), snapshot(t1, breaker=0.5), snapshot(t2))[2] == frozenset({"breaker_open"})


def test_a_breaker_that_turns_half_open_names_itself_for_one_probe_per_target() -> None:
    watcher, used = WaitWatcher(), policy()
    watcher.observe(used, snapshot(T0, breaker=1))
    assert watcher.probing == frozenset()
    watcher.observe(used, snapshot(T0 + timedelta(seconds=5), breaker=0.5))
    assert watcher.probing == frozenset({f"breaker/{KEY}"})
    # the target that runs there gets one probe, the private one none
    assert probing_targets(used, watcher.probing) == {"spot": 1}
    # still half-open a round later: no second probe from the watch (the probe's outcome decides)
    watcher.observe(used, snapshot(T0 + timedelta(seconds=10), breaker=0.5))
    assert watcher.probing == frozenset()


def test_probing_targets_match_the_provider_and_region_whatever_the_instance_type() -> None:
    used = policy()
    assert probing_targets(used, frozenset({"breaker/aws/us-east-1/p3.2xlarge"})) == {"spot": 1}
    assert probing_targets(used, frozenset({"breaker/aws/eu-west-1/g4dn.xlarge"})) == {}
    assert probing_targets(used, frozenset({"breaker/azure/us-east-1/g4dn.xlarge"})) == {}
    assert probing_targets(used, frozenset()) == {}


def test_breakers_to_probe_needs_a_breaker_that_was_open() -> None:
    closed, half = watch(policy(), snapshot(T0, breaker=0), T0), watch(policy(), snapshot(T0, breaker=0.5), T0)
    opened = watch(policy(), snapshot(T0, breaker=1), T0)
    assert breakers_to_probe(None, half) == frozenset()
    assert breakers_to_probe(closed, half) == frozenset()  # closed -> half-open: nobody waited for it
    assert breakers_to_probe(opened, half) == frozenset({f"breaker/{KEY}"})


def test_a_new_price_sample_wakes_the_price_waits_even_at_the_same_price() -> None:
    t1, t2 = T0 + timedelta(seconds=5), T0 + timedelta(seconds=300)
    result = watched(
        snapshot(T0, price=(0.9, T0)),
        snapshot(t1, price=(0.9, T0)),  # the same sample: nothing new
        snapshot(t2, price=(0.9, t2)),  # a new poll: a stale price is fresh again
        snapshot(t2 + timedelta(seconds=1), price=(0.4, t2)),  # a new value
    )
    assert result[1:] == [frozenset(), PRICE_CODES, PRICE_CODES]


def test_budget_waits_wake_when_spend_becomes_known_or_the_day_turns_not_while_it_grows() -> None:
    t = [T0 + timedelta(seconds=s) for s in (60, 120, 400, 460)]
    result = watched(
        snapshot(T0, spent=90),
        snapshot(t[0], spent=95),  # spent more: a spent budget stays spent
        snapshot(t[1], spent=(95, t[0] - timedelta(seconds=200))),  # stale: unknown, nothing to lift
        snapshot(t[2], spent=96),  # known again
        snapshot(t[3], spent=0),  # the UTC day turned
    )
    assert result[1:] == [frozenset(), frozenset(), BUDGET_CODES, BUDGET_CODES]


def test_a_rule_that_flips_wakes_every_waiting_task_at_most_every_conditions_pace() -> None:
    assert conditions_held(policy(), snapshot(T0, queue=50), T0) == (True, True)
    assert conditions_held(policy(), snapshot(T0, queue=5), T0) == (False, True)
    pace = CONDITIONS_WAKE_MIN_S
    at = [T0 + timedelta(seconds=s) for s in (0, 5, 10, pace + 1, pace + 5, 2 * pace + 10)]
    result = watched(
        snapshot(at[0], queue=5),  # the first batch wakes every waiting task
        snapshot(at[1], queue=50),  # "burst" starts to hold within the pace: held back, pending
        snapshot(at[2], queue=5),  # and flips back: nothing pending any more
        snapshot(at[3], queue=50),  # a flip once the pace allows: waiting tasks may go to spot now
        snapshot(at[4], queue=5),  # flips back within the pace: held back ...
        snapshot(at[5], queue=5),  # ... and woken when the pace allows, as it stuck
    )
    assert result == [EVERY_REASON, frozenset(), frozenset(), EVERY_REASON, frozenset(), EVERY_REASON]


def test_a_new_policy_wakes_every_waiting_task_at_once() -> None:
    watcher = WaitWatcher()
    watcher.observe(policy(), snapshot(T0, queue=5))
    # the first batch woke every waiting task; an operator's change a second later is not held back by the pace

    changed = watcher.observe(policy(queue_above=2), snapshot(T0 + timedelta(seconds=2), queue=50))
    assert changed == EVERY_REASON


def test_a_wave_goes_on_while_its_tasks_launch_and_stops_at_the_first_that_launches_none() -> None:
    watcher = WaitWatcher()
    assert watcher.wave_due(frozenset({"breaker_open"})) == frozenset({"breaker_open"})
    watcher.woke(["a", "b"], limit=2)
    assert watcher.wave_due(frozenset()) == frozenset()  # its tasks are not planned yet: no second wave
    watcher.planned({"a": True, "new": False}, claimed_any=True)
    assert watcher.wave_due(frozenset()) == frozenset()  # "b" is still to be planned
    watcher.planned({"b": False}, claimed_any=True)
    assert watcher.wave_due(frozenset()) == frozenset({"breaker_open"})  # one of them launched: the next wave
    watcher.woke(["c", "d"], limit=2)
    watcher.planned({"c": False, "d": False}, claimed_any=True)
    assert (watcher.wave, watcher.wave_due(frozenset())) == (None, frozenset())  # none launched: the wave is over


def test_a_wave_that_wakes_fewer_than_a_batch_has_woken_them_all() -> None:
    watcher = WaitWatcher()
    assert watcher.wave_due(frozenset({"stale_price"})) == frozenset({"stale_price"})
    watcher.woke(["a"], limit=2)
    assert watcher.wave is None
    watcher.planned({"a": True}, claimed_any=True)
    assert watcher.wave_due(frozenset()) == frozenset()


def test_a_new_change_widens_the_wave_under_way_and_sends_one_at_once() -> None:
    watcher = WaitWatcher()
    watcher.wave_due(frozenset({"breaker_open"}))
    watcher.woke(["a", "b"], limit=2)
    assert watcher.wave_due(PRICE_CODES) == PRICE_CODES | {"breaker_open"}
    watcher.woke(["c", "d"], limit=2)
    assert watcher.wave_due(EVERY_REASON) == EVERY_REASON
    watcher.woke(["e", "f"], limit=2)
    assert watcher.wave_due(PRICE_CODES) == EVERY_REASON  # every reason stays every reason


def test_a_wave_whose_tasks_went_elsewhere_is_settled_by_a_batch_that_claims_nothing() -> None:
    watcher = WaitWatcher()
    watcher.wave_due(EVERY_REASON)
    watcher.woke(["a", "b"], limit=2)
    watcher.planned({"a": True}, claimed_any=True)
    watcher.planned({}, claimed_any=False)  # "b" was claimed by another scheduler, or cancelled
    assert watcher.wave_due(frozenset()) == EVERY_REASON  # "a" launched: go on


def test_a_target_whose_capacity_wake_found_no_waiter_is_asked_again_once_a_task_waits_for_it_or_after_a_while() -> (
    None
):
    watcher, now = WaitWatcher(), T0
    assert watcher.capacity_to_ask({"home": 2, "spot": 5}, now) == {"home": 2, "spot": 5}  # a new scheduler asks all
    watcher.capacity_woken({"home": 2, "spot": 5}, {"home": 2, "spot": 0}, now)
    # home had as many waiting as free slots: there may be more; nobody waits for spot's capacity
    assert watcher.capacity_to_ask({"home": 1, "spot": 5}, now) == {"home": 1}
    watcher.capacity_woken({"home": 1}, {"home": 0}, now)
    assert watcher.capacity_to_ask({"home": 1, "spot": 5}, now) == {}
    watcher.waiting_for_capacity(["spot"])  # a batch sent a task back to wait for spot's capacity
    assert watcher.capacity_to_ask({"home": 1, "spot": 5}, now) == {"spot": 5}
    # another scheduler may send tasks to wait for home meanwhile: asked again after ASK_AGAIN_S
    just_before = now + timedelta(seconds=ASK_AGAIN_S - 1)
    assert watcher.capacity_to_ask({"home": 1}, just_before) == {}
    assert watcher.capacity_to_ask({"home": 1}, now + timedelta(seconds=ASK_AGAIN_S)) == {"home": 1}


def _spot_policy(*, regions: list[str], rule_type: str | None = None, market: str = "spot") -> Policy:
    spot = {**home_and_spot()[1], "regions": regions, "market": market}
    rule: dict[str, Any] = {"name": "spot-first", "targets": ["spot", "home"]}
    if rule_type is not None:
        rule["instance_type"] = rule_type
    return parse_policy({"targets": [home_and_spot()[0], spot], "rules": [rule]})


def _breakers(at: datetime, **by_offer: float | tuple[float, datetime]) -> SignalSnapshot:
    """Breaker samples by offer (``region__type`` with dots as underscores): a value, or (value, observed at)."""
    samples = {}
    for offer, given in by_offer.items():
        value, observed = given if isinstance(given, tuple) else (given, at)
        region, _, kind = offer.partition("__")
        key = f"aws/{region.replace('_', '-')}/{kind.replace('_', '.')}"
        samples[f"breaker/{key}"] = SignalSample(
            source="breaker", key=key, value=float(value), observed_at=observed, ttl_seconds=600
        )
    return SignalSnapshot(taken_at=at, samples=samples)


def test_free_capacity_behind_open_breakers_on_every_offer_wakes_nobody_and_any_other_breaker_state_does() -> None:
    one_region = _spot_policy(regions=["us-east-1"])
    assert held_by_breakers(one_region, _breakers(T0, us_east_1__g4dn_xlarge=1.0), T0) == frozenset({"spot"})
    # half-open lets a probe through; closed, missing and stale all read as closed, as plan() reads them
    assert held_by_breakers(one_region, _breakers(T0, us_east_1__g4dn_xlarge=0.5), T0) == frozenset()
    assert held_by_breakers(one_region, _breakers(T0, us_east_1__g4dn_xlarge=0.0), T0) == frozenset()
    assert held_by_breakers(one_region, _breakers(T0), T0) == frozenset()
    stale = T0 - timedelta(seconds=121)  # older than the policy's load_ttl_seconds (120), within its own TTL
    assert held_by_breakers(one_region, _breakers(T0, us_east_1__g4dn_xlarge=(1.0, stale)), T0) == frozenset()
    # another region with a closed breaker, or none, may still launch
    two_regions = _spot_policy(regions=["us-east-1", "us-west-2"])
    assert held_by_breakers(two_regions, _breakers(T0, us_east_1__g4dn_xlarge=1.0), T0) == frozenset()
    both_open = _breakers(T0, us_east_1__g4dn_xlarge=1.0, us_west_2__g4dn_xlarge=1.0)
    assert held_by_breakers(two_regions, both_open, T0) == frozenset({"spot"})


def test_an_instance_type_a_rule_may_pick_keeps_the_target_awake_and_on_demand_is_never_held() -> None:
    ruled = _spot_policy(regions=["us-east-1"], rule_type="g5.xlarge")
    assert held_by_breakers(ruled, _breakers(T0, us_east_1__g4dn_xlarge=1.0), T0) == frozenset()
    both = _breakers(T0, us_east_1__g4dn_xlarge=1.0, us_east_1__g5_xlarge=1.0)
    assert held_by_breakers(ruled, both, T0) == frozenset({"spot"})
    on_demand = _spot_policy(regions=["us-east-1"], market="on-demand")
    assert held_by_breakers(on_demand, _breakers(T0, us_east_1__g4dn_xlarge=1.0), T0) == frozenset()
