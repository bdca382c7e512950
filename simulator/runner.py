"""One simulated run: the product's scheduler and store, under a virtual clock, against the simulated world.

The scheduler is the one ``serve`` runs (``standalone_scheduler``: claim,
plan, receipt, launch, follow, failover with backoff, max attempts,
breaker-free, budget guard, hedging, queueing); the store is the real store on
a SQLite file; only the clock, the providers and the signal sources are
simulated. The loop jumps from event to event:

- an arrival: the task is stored with its arrival time, as the API would (one round's arrivals in one write);
- a world event (a worker booted, finished, called in; a zone's trace or a
  private outage changed capacity);
- a scheduler round, every ``scheduling.tick_s`` of simulated time while
  anything is queued or running: the signal sources due are polled, then
  ``follow()`` then ``place_batch()`` until a batch comes back short, as the
  serve loop does on its timers;
- a sample of the series the report plots, every ``scheduling.sample_s``.

When nothing is queued or running the clock jumps to the next arrival.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, event

from controlplane.domain import PlacementPlan, SignalSnapshot, Task, TaskState
from controlplane.policy import Policy, plan
from controlplane.runtime import standalone_scheduler
from controlplane.runtime.signals import DEFAULT_SCHEDULES, store_sources
from controlplane.signals.base import wanted_from_targets
from controlplane.signals.hub import PollSchedule, SignalHub
from controlplane.signals.queue import QueueDepthSource
from controlplane.store import NewTask, Store, make_engine, upgrade
from simulator.clock import VirtualClock
from simulator.markets import MarketMode, PriceBook, PriceHistory, TraceLike, market_of
from simulator.providers import simulated_providers
from simulator.scenario import Scenario
from simulator.signals import SimClusterLoad, SimSpotPrices
from simulator.workload import Arrival, arrivals
from simulator.world import SimWorld, TaskWork

__all__ = ["RunSetup", "RunOutcome", "Series", "run"]

log = logging.getLogger("fusionplane.sim")

#: how often each source is polled (simulated seconds): serve's defaults for the real source each stands for
_POLLS = {
    "sim_spot": DEFAULT_SCHEDULES["aws_spot"].interval_s,
    "sim_cluster": DEFAULT_SCHEDULES["prometheus"].interval_s,
    "queue": DEFAULT_SCHEDULES["queue"].interval_s,
    "breaker": DEFAULT_SCHEDULES["breaker"].interval_s,
    "budget": DEFAULT_SCHEDULES["budget"].interval_s,
    "spot_history": DEFAULT_SCHEDULES["spot_history"].interval_s,
}


@dataclass(frozen=True, kw_only=True)
class RunSetup:
    """What one run compares: a policy in a market mode, with or without live signals."""

    name: str
    kind: str  # policy | baseline
    policy: Policy
    mode: MarketMode = "spot"
    live_signals: bool = True


@dataclass(kw_only=True)
class Series:
    t_s: list[float] = field(default_factory=list)
    queue_depth: list[int] = field(default_factory=list)
    gpus_in_use: dict[str, list[int]] = field(default_factory=dict)
    spend_usd_per_h: list[float] = field(default_factory=list)
    sla_misses: list[int] = field(default_factory=list)


@dataclass(kw_only=True)
class RunOutcome:
    setup: RunSetup
    world: SimWorld
    store: Store
    arrivals: dict[str, Arrival]
    series: Series
    ended_s: float
    wall_s: float
    #: plans made over the run (first plans and re-plans)
    plans: int = 0


def _scratch(engine: Engine) -> None:
    """The run's database is scratch, rebuilt by running again: no sync to disk at each commit.

    The store's own settings (WAL, ``synchronous=NORMAL``) are for a
    database that must outlive a power cut; a simulation's does not, and its
    ~10 commits a round were 6% of a run's time. Same schema, same
    statements, same transactions: only when the bytes reach the disk
    differs.
    """

    @event.listens_for(engine, "connect")
    def _no_sync(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute("PRAGMA synchronous=OFF")
        finally:
            cursor.close()


def run(
    scenario: Scenario,
    setup: RunSetup,
    *,
    traces: dict[tuple[str, str], dict[str, TraceLike]],
    history: PriceHistory | None,
    workdir: Path,
    progress: Callable[[str, float], None] | None = None,
) -> RunOutcome:
    """Simulate ``scenario`` under ``setup``; the store is left in ``workdir`` for the report to read."""
    began = time.perf_counter()
    clock = VirtualClock(scenario.start)
    engine = make_engine(f"sqlite:///{workdir / (setup.name.replace(':', '-') + '.db')}")
    _scratch(engine)
    upgrade(engine=engine)
    store = Store(engine, clock=clock)
    world = _world(scenario, setup.mode, traces, history, clock)
    loop = _Loop(scenario, setup, clock, store, world, progress)
    loop.run()
    loop.submit_arrived()  # none is left unless the horizon cut the run short: stored all the same, never lost
    loop.write_heartbeats()
    world.settle()
    return RunOutcome(
        setup=setup,
        world=world,
        store=store,
        arrivals=loop.by_task,
        series=loop.series,
        ended_s=clock.offset_s,
        wall_s=time.perf_counter() - began,
        plans=loop.plans,
    )


def _world(
    scenario: Scenario,
    mode: MarketMode,
    traces: dict[tuple[str, str], dict[str, TraceLike]],
    history: PriceHistory | None,
    clock: VirtualClock,
) -> SimWorld:
    prices_start = scenario.world.prices_start or scenario.start

    def history_time(offset_s: float) -> datetime:
        return VirtualClock(prices_start).at(offset_s)

    markets = {
        f"{cloud.provider}/{cloud.region}": market_of(cloud, traces[(cloud.provider, cloud.region)])
        for cloud in scenario.world.clouds
    }
    book = PriceBook(scenario.world, history, mode=mode, at=history_time)
    return SimWorld(private=scenario.world.private, markets=markets, prices=book, mode=mode, seed=scenario.seed)


class _Loop:
    def __init__(
        self,
        scenario: Scenario,
        setup: RunSetup,
        clock: VirtualClock,
        store: Store,
        world: SimWorld,
        progress: Callable[[str, float], None] | None,
    ) -> None:
        self.scenario, self.setup, self.clock, self.store, self.world = scenario, setup, clock, store, world
        self.progress = progress
        targets = {target.name: target for target in setup.policy.targets}
        providers = simulated_providers(world, lambda: targets)
        sources: list[Any] = []
        if setup.live_signals:
            # the store's own sources (queue depth, spot circuit breakers, today's spend), as serve runs them
            sources += [QueueDepthSource(self._queued), *store_sources(store, lambda: setup.policy)]
            sources += [SimSpotPrices(world), SimClusterLoad(world)]
        self.hub = SignalHub(
            [(source, PollSchedule(interval_s=_POLLS[source.name], timeout_s=5.0)) for source in sources],
            wanted=lambda: wanted_from_targets(setup.policy.targets),
            clock=clock,
        )
        self._next_poll = {source.name: 0.0 for source in sources}
        #: plans made (first plans and every re-plan of a waiting or failed-over task): what a run costs
        self.plans = 0

        def counted(task: Task, snapshot: SignalSnapshot, policy: Policy, now: datetime) -> PlacementPlan:
            self.plans += 1
            return plan(task, snapshot, policy, now)

        self.scheduler = standalone_scheduler(
            store=store,
            policy=setup.policy,
            providers=providers,
            scheduler_id="sim",
            clock=clock,
            signals=self.hub.samples,
            batch_size=scenario.scheduling.batch_size,
            follow_in_parallel=False,
            planner=counted,
        )
        self.by_task: dict[str, Arrival] = {}
        #: arrived since the last round, stored at the next one (``submit_arrived``)
        self._arrived: list[Arrival] = []
        #: workers that called in since the last round, with when (``_record_heartbeats``)
        self._heartbeats: list[tuple[str, datetime]] = []
        self.series = Series()
        self._acted, self._seen_changes, self._seen_tasks, self._last_round = True, -1, -1, -1e18
        self._sla_misses = 0

    def _queued(self) -> int:
        return self.store.count_tasks_in(TaskState.QUEUED)

    def run(self) -> None:
        tick_s, sample_s = self.scenario.scheduling.tick_s, self.scenario.scheduling.sample_s
        idle_s = max(self.scenario.scheduling.idle_tick_s, tick_s)
        end_s = self.scenario.end_s
        horizon_s = end_s + self.scenario.drain_hours * 3600.0
        incoming: Iterator[Arrival] = arrivals(self.scenario.workload, seed=self.scenario.seed, until_s=end_s)
        upcoming = next(incoming, None)
        next_tick, next_sample, next_report = 0.0, 0.0, 0.0
        while True:
            busy = bool(self._arrived) or self._busy()
            moments = [next_sample, next_tick if busy else None, self.world.next_event_s()]
            moments.append(upcoming.at_s if upcoming is not None else None)
            t = min(m for m in moments if m is not None)
            if t > horizon_s or (upcoming is None and not busy and t >= end_s and next_sample > end_s):
                break
            self.clock.move_to(t)
            self.world.advance_to(t)
            self._record_heartbeats()
            while upcoming is not None and upcoming.at_s <= t:
                self._arrived.append(upcoming)
                upcoming = next(incoming, None)
            if busy and t >= next_tick:
                # a round when anything happened since the last one, else at least every idle_tick_s (deadlines,
                # backoffs, heartbeat limits are time's doing alone): the same decisions, far fewer empty rounds
                if self._dirty(upcoming) or t - self._last_round >= idle_s:
                    self._round()
                next_tick = t + tick_s
            elif not busy:
                next_tick = (t // tick_s + 1) * tick_s  # the serve loop's next beat after idling
            if t >= next_sample:
                self.submit_arrived()
                self._sample(t)
                next_sample += sample_s
            if self.progress is not None and t >= next_report:
                self.progress(self.setup.name, min(t / horizon_s, 1.0))
                next_report = t + 3600.0

    def _dirty(self, upcoming: Arrival | None) -> bool:
        return (
            self._acted
            or bool(self._arrived)
            or self.world.changes != self._seen_changes
            or len(self.by_task) != self._seen_tasks
        )

    def _busy(self) -> bool:
        if self.world.live:
            return True
        unfinished = (TaskState.QUEUED, TaskState.LAUNCHING, TaskState.PLANNED, TaskState.RUNNING)
        return self.store.count_tasks_in(*unfinished) > 0

    def submit_arrived(self) -> None:
        """Store the arrivals gathered since the last round in one write, each at its own arrival time.

        The API stores each request when it comes; nothing reads a task
        before the next round, so one group commit per round stores the same
        rows (``NewTask.submitted_at``) for one write instead of one each.
        """
        arrived, self._arrived = self._arrived, []
        if not arrived:
            return
        outcomes = self.store.create_tasks(
            [NewTask(spec=a.spec, request_hash=f"sim-{a.number}", submitted_at=self.clock.at(a.at_s)) for a in arrived]
        )
        for arrival, outcome in zip(arrived, outcomes, strict=True):
            if isinstance(outcome, Exception):  # no idempotency keys here: cannot happen
                raise outcome
            task, _created = outcome
            self.world.tasks[task.id] = TaskWork(work_s=arrival.work_s, segment_s=arrival.segment_s)
            self.by_task[task.id] = arrival

    def _record_heartbeats(self) -> None:
        """Gather the workers that called in at this instant, with its time, for the next round to write.

        The API writes each call on its own request. Only ``follow`` reads
        heartbeats, and only in a round, and nothing else moves an attempt
        between rounds: written at the round, each at the simulated time it
        came, the rows are what they would have been, for one write a round
        instead of one each instant a worker called in.
        """
        called, self.world.called_in = self.world.called_in, []
        if called:
            at = self.clock()
            self._heartbeats.extend((attempt_id, at) for attempt_id in called)

    def write_heartbeats(self) -> None:
        beats, self._heartbeats = self._heartbeats, []
        self.store.record_heartbeats_at(beats)

    def _round(self) -> None:
        self.submit_arrived()
        self.write_heartbeats()
        now = self.clock.offset_s
        for name, due in self._next_poll.items():
            if now >= due:
                self.hub.poll(name, force=True)
                self._next_poll[name] = now + _POLLS[name]
        acted = self.scheduler.follow()
        self.world.apply_cancels()
        while (placed := self.scheduler.place_batch()) >= self.scenario.scheduling.batch_size:
            acted += placed
        acted += placed
        self.world.apply_cancels()
        acted += self.scheduler.release_finished()  # stops what ended without its backend knowing (a hedge's loser)
        self.world.apply_cancels()
        self._acted = acted > 0
        self._seen_changes, self._seen_tasks = self.world.changes, len(self.by_task)
        self._last_round = now

    def _sample(self, t: float) -> None:
        series = self.series
        series.t_s.append(round(t, 3))
        series.queue_depth.append(self._queued())
        in_use = self.world.in_use_by_target()
        for target in sorted(set(series.gpus_in_use) | set(in_use)):
            column = series.gpus_in_use.setdefault(target, [0] * (len(series.t_s) - 1))
            column.append(in_use.get(target, 0))
        series.spend_usd_per_h.append(round(self.world.spend_rate_usd_h(), 6))
        series.sla_misses.append(self._missed())

    def _missed(self) -> int:
        return self.store.count_tasks_in(TaskState.FAILED)
