"""What else ends a wait: the signals a waiting task's reason names, compared between scheduler rounds.

A waiting task sleeps between plans (``queueing.recheck_after``: 30 minutes to 4 hours).
Free capacity wakes tasks waiting for it at once (``Placing._wake_waiting``);
this module says when the other reasons may have lifted, so the tasks that
wait for them are planned again in the round the change is seen instead of
after their backoff:

- ``breaker_open``: a spot breaker closed (or is no longer reported); one
  that turned half-open lets one probe through, so only as many tasks as it
  has probes are woken for it (:func:`breakers_to_probe`, per target);
- ``stale_price``, ``price_above_max``: a new spot price sample arrived (a
  poll, with a new time or a new value);
- ``budget_exhausted``, ``budget_unknown``: today's spend became known or
  went down (the UTC day turned);
- every reason: the policy in force changed, or a rule's ``when`` flipped
  (a rule that bursts to spot at peak starts to hold).

The sleep is then only a safety net, like Kubernetes' unschedulable pod
queue, which moves a pod back on the cluster events that can make it
schedulable and flushes the rest after a few minutes.

A change wakes its waiting tasks in waves of one batch, most urgent and
oldest first (:meth:`WaitWatcher.wave_due`): the next wave goes once the
batch that planned the last one launched at least one of them. A change
that helps nobody (a rule's ``when`` that flips while every cloud offer is
still held back by its deadline, a breaker that closes on a zone with no
capacity) so costs one batch of plans, not one plan per waiting task: with
thousands waiting (the launch-day simulator, docs/performance.md) waking
them all on each flip was most of the scheduler's work. :func:`watch` and
:func:`reasons_to_wake` are pure; :class:`WaitWatcher` keeps one scheduler's
last :class:`WaitWatch` between its batches.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime

from controlplane.domain import BUDGET_SOURCE, SPOT, SPOT_PRICE_SOURCE, SignalSnapshot, spot_price_key
from controlplane.domain.reliability import BREAKER_CLOSED, BREAKER_OPEN, BREAKER_SOURCE
from controlplane.policy import Policy, conditions_held
from controlplane.policy_sources import PolicySet
from controlplane.scheduler.queueing import WAIT_RECHECK_S

__all__ = [
    "ASK_AGAIN_S",
    "CONDITIONS_WAKE_MIN_S",
    "EVERY_REASON",
    "WaitWatch",
    "WaitWatcher",
    "breakers_to_probe",
    "held_by_breakers",
    "probing_targets",
    "reasons_to_wake",
    "watch",
]

#: :func:`reasons_to_wake`'s answer when every waiting task must be planned again
EVERY_REASON: frozenset[str] = frozenset({"*"})
#: a rule's ``when`` that flips again and again (a cluster on the edge of its peak) wakes every waiting task at most
#: this often: the old backoff's pace, not every round
CONDITIONS_WAKE_MIN_S = 30.0
#: how long a target whose capacity wake found nobody waiting is not asked again (unless this scheduler sends a task
#: to wait for it): the shortest sleep of the safety net, so no waiting task sleeps longer than that for a free slot
ASK_AGAIN_S = WAIT_RECHECK_S
_PRICE_CODES = frozenset({"stale_price", "price_above_max"})
_BUDGET_CODES = frozenset({"budget_exhausted", "budget_unknown"})


@dataclass(frozen=True, kw_only=True)
class WaitWatch:
    """The part of the world a waiting task's reason depends on, besides free capacity."""

    #: the version of every policy in force (base, then each tenant's)
    policies: tuple[str, ...]
    #: per policy, whether each rule's ``when`` holds
    conditions: tuple[tuple[bool, ...], ...]
    #: spot breakers that are open
    open_breakers: frozenset[str]
    #: spot breakers that are half-open (one probe may go)
    half_open_breakers: frozenset[str] = frozenset()
    #: spot price sample -> (value, when observed)
    prices: Mapping[str, tuple[float, datetime]]
    #: budget sample -> (value, fresh)
    budget: Mapping[str, tuple[float, bool]]


def watch(policies: Policy | PolicySet, snapshot: SignalSnapshot, now: datetime) -> WaitWatch:
    """What :func:`reasons_to_wake` compares, read from one snapshot."""
    effective = [policies] if isinstance(policies, Policy) else [policies.base, *policies.tenants.values()]
    samples = snapshot.samples
    return WaitWatch(
        policies=tuple(policy.version for policy in effective),
        conditions=tuple(conditions_held(policy, snapshot, now) for policy in effective),
        open_breakers=frozenset(
            name
            for name, sample in samples.items()
            if name.startswith(BREAKER_SOURCE + "/") and sample.value >= BREAKER_OPEN
        ),
        half_open_breakers=frozenset(
            name
            for name, sample in samples.items()
            if name.startswith(BREAKER_SOURCE + "/") and BREAKER_CLOSED < sample.value < BREAKER_OPEN
        ),
        prices={
            name: (sample.value, sample.observed_at)
            for name, sample in samples.items()
            if name.startswith(SPOT_PRICE_SOURCE + "/")
        },
        budget={
            name: (sample.value, not sample.is_stale(now))
            for name, sample in samples.items()
            if name.startswith(BUDGET_SOURCE + "/")
        },
    )


def reasons_to_wake(before: WaitWatch | None, after: WaitWatch) -> frozenset[str]:
    """The rejection codes whose waiting tasks to plan again now; :data:`EVERY_REASON` for all of them.

    ``before`` None (the scheduler's first round) wakes every waiting task:
    a restarted scheduler does not know what they waited for last.
    """
    if before is None or before.policies != after.policies or before.conditions != after.conditions:
        return EVERY_REASON
    codes: set[str] = set()
    held_before = before.open_breakers | before.half_open_breakers
    if held_before - after.open_breakers - after.half_open_breakers:
        # closed or gone, from open or from half-open (its probe ran): every task waiting for it may go
        codes.add("breaker_open")
    if any(before.prices.get(name) != seen for name, seen in after.prices.items()):
        codes |= _PRICE_CODES
    if any(_budget_lifted(before.budget.get(name), seen) for name, seen in after.budget.items()):
        codes |= _BUDGET_CODES
    return frozenset(codes)


def breakers_to_probe(before: WaitWatch | None, after: WaitWatch) -> frozenset[str]:
    """The breakers (sample names) that went from open to half-open since ``before``.

    Half-open lets one launch through to see whether the capacity is back
    (``Placing._gate_probes``): waking every task that waits for it would
    send them all (a task whose every candidate is the probing offer still
    launches), the stampede the breaker is there to stop. So a half-open
    breaker wakes one task per target; its probe's outcome closes the breaker
    (and :func:`reasons_to_wake` wakes the rest) or opens it again.
    """
    if before is None:
        return frozenset()
    return (before.open_breakers - after.open_breakers) & after.half_open_breakers


def probing_targets(policies: Policy | PolicySet, breakers: frozenset[str]) -> dict[str, int]:
    """Target -> probes: one for each target whose offers a half-open breaker of ``breakers`` covers.

    A breaker is ``breaker/<provider>/<region>/<instance type>``; a target of
    that provider that runs in that region is matched whatever its instance
    type (a rule may pick another one): one task too many planned, never one
    forgotten.
    """
    if not breakers:
        return {}
    places = set()
    for name in breakers:
        parts = name.split("/")
        if len(parts) >= 3:
            places.add((parts[1], parts[2]))
    effective = [policies] if isinstance(policies, Policy) else [policies.base, *policies.tenants.values()]
    return {
        target.name: 1
        for policy in effective
        for target in policy.targets
        if any((target.provider, region) in places for region in target.regions or ("-",))
    }


def held_by_breakers(policies: Policy | PolicySet, snapshot: SignalSnapshot, now: datetime) -> frozenset[str]:
    """Spot targets whose every offer has a fresh open breaker: free capacity there launches nothing.

    A task waiting for capacity on such a target that a capacity wake
    planned again would be turned back ``breaker_open`` (in the launch-day
    simulator, one in sixteen of all plans at scale 0.02). Left asleep, it
    is woken by the capacity wake once the breaker closes, or turns
    half-open (that lets a probe through). An offer is each region of the
    target with each instance type it or any rule may pick; a breaker that
    is stale by its own TTL or by any policy's ``load_ttl_seconds`` counts
    as closed, as ``plan()`` reads it. A target some offer of which may
    launch is never in the answer: one plan too many, never a forgotten task.
    """
    samples = snapshot.samples
    if not any(name.startswith(BREAKER_SOURCE + "/") for name in samples):
        return frozenset()
    effective = [policies] if isinstance(policies, Policy) else [policies.base, *policies.tenants.values()]
    ttl = min(policy.thresholds.load_ttl_seconds for policy in effective)

    def open_(name: str) -> bool:
        sample = samples.get(name)
        return (
            sample is not None
            and sample.age_seconds(now) <= min(ttl, sample.ttl_seconds)
            and sample.value >= BREAKER_OPEN
        )

    held: set[str] = set()
    free: set[str] = set()
    for policy in effective:
        ruled_types = {rule.actions.instance_type for rule in policy.rules if rule.actions.instance_type}
        for target in policy.targets:
            cloud = target.market_provider
            if cloud is None or target.market != SPOT:
                free.add(target.name)
                continue
            types = set(target.instance_types or (None,)) | ruled_types
            offers = [
                f"{BREAKER_SOURCE}/{spot_price_key(cloud, region, instance_type)}"
                for region in target.regions or (None,)
                for instance_type in types
            ]
            (held if all(open_(name) for name in offers) else free).add(target.name)
    return frozenset(held - free)  # a name two policies define differently is held only if both say so


class WaitWatcher:
    """One scheduler's view between batches: what the last batch saw, when a flip last woke everyone, the wave."""

    def __init__(self) -> None:
        self.seen: WaitWatch | None = None
        self._woke_every_at: datetime | None = None
        #: the breakers the last :meth:`observe` saw turn half-open (:func:`breakers_to_probe`)
        self.probing: frozenset[str] = frozenset()
        #: the reasons whose waiting tasks are being woken in waves (None: no wave under way)
        self.wave: frozenset[str] | None = None
        #: the last wave's tasks not planned yet, and how many of those planned were launched
        self._wave_pending: set[str] = set()
        self._wave_launched = 0
        self._wave_go = False
        #: targets a capacity wake found no waiting task for, and when, while none was sent to wait for since:
        #: not asked again for a while
        self._none_waits_for: dict[str, datetime] = {}

    def capacity_to_ask(self, free: Mapping[str, int], now: datetime) -> dict[str, int]:
        """``free`` less the targets no task can be waiting for (the wake read walks the queue to find none).

        A target is left out for :data:`ASK_AGAIN_S` at most: another
        scheduler may have sent tasks to wait for it since, and they must
        not be left to the safety net, which grows to hours.
        """
        return {
            target: slots
            for target, slots in free.items()
            if target not in self._none_waits_for or (now - self._none_waits_for[target]).total_seconds() >= ASK_AGAIN_S
        }

    def capacity_woken(self, asked: Mapping[str, int], found: Mapping[str, int], now: datetime) -> None:
        """A capacity wake found fewer tasks than free slots for a target: every task waiting for it is awake."""
        self._none_waits_for.update({target: now for target, slots in asked.items() if found.get(target, 0) < slots})

    def waiting_for_capacity(self, targets: Iterable[str]) -> None:
        """This scheduler sent tasks back to wait for these targets' capacity: the next free slot asks again.

        Only the scheduler that places writes waits, and a new one starts
        knowing nothing (every target is asked), so this never hides a
        waiting task; two schedulers that share the queue each wake what
        they sent to wait at once, and the other's within
        :data:`ASK_AGAIN_S`.
        """
        for target in targets:
            self._none_waits_for.pop(target, None)

    def wave_due(self, codes: frozenset[str]) -> frozenset[str]:
        """The reasons to wake a wave for now (:data:`EVERY_REASON` for all), given what :meth:`observe` said.

        A new change starts (or widens) a wave at once; a wave under way
        sends its next batch only once the last one was planned and at
        least one of its tasks launched (:meth:`planned`).
        """
        if codes:
            self.wave = EVERY_REASON if EVERY_REASON in (codes, self.wave) else codes | (self.wave or frozenset())
            self._wave_go = True
        if self.wave is None or not self._wave_go:
            return frozenset()
        self._wave_go = False
        return self.wave

    def nobody_asleep(self) -> None:
        """No waiting task is asleep: a wave under way has nothing left to wake."""
        self.wave = None

    def woke(self, ids: list[str], *, limit: int) -> None:
        """The tasks a wave woke: fewer than ``limit`` means none is left asleep for it, and the wave ends."""
        self._wave_pending, self._wave_launched = set(ids), 0
        if len(ids) < limit:
            self.wave = None

    def planned(self, launched: Mapping[str, bool], *, claimed_any: bool) -> None:
        """A batch's tasks, each with whether it launched: once the last wave is all planned, go on or stop.

        A batch that claimed nothing settles the wave too (its tasks went to
        another scheduler, or were cancelled): no wave waits forever.
        """
        if self.wave is None or self._wave_go:
            return
        for task_id in self._wave_pending & launched.keys():
            self._wave_pending.discard(task_id)
            self._wave_launched += int(launched[task_id])
        if self._wave_pending and claimed_any:
            return
        if self._wave_launched > 0:
            self._wave_go = True
        else:
            self.wave = None

    def observe(self, policies: Policy | PolicySet, snapshot: SignalSnapshot) -> frozenset[str]:
        """The reasons to wake now (:func:`reasons_to_wake`), with rule flips paced by :data:`CONDITIONS_WAKE_MIN_S`.

        A flip held back stays pending: the conditions kept are the ones last
        acted on, so the flip wakes everyone once the pace allows, unless the
        rule has flipped back by then.
        """
        now = snapshot.taken_at
        before, after = self.seen, watch(policies, snapshot, now)
        self.probing = breakers_to_probe(before, after)
        codes = reasons_to_wake(before, after)
        recent = self._woke_every_at is not None and (now - self._woke_every_at).total_seconds() < CONDITIONS_WAKE_MIN_S
        if codes == EVERY_REASON and recent and before is not None and before.policies == after.policies:
            # only a rule flipped, too soon after the last wake of everyone: hold it back (still pending)
            after = dataclasses.replace(after, conditions=before.conditions)
            codes = reasons_to_wake(before, after)
        elif codes == EVERY_REASON:
            self._woke_every_at = now
        self.seen = after
        return codes


def _budget_lifted(before: tuple[float, bool] | None, after: tuple[float, bool]) -> bool:
    """Spend became known (new, or fresh again) or went down: a budget wait may be over."""
    value, fresh = after
    if not fresh:
        return False
    return before is None or not before[1] or value < before[0]
