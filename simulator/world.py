"""The simulated world the real scheduler places into: instances that boot, run, finish or get taken away.

It answers what a cloud or a cluster would (``launch`` gives capacity or an
``InsufficientCapacity`` error, ``status`` says pending, running, succeeded,
preempted or lost, ``cancel`` stops and bills) through the simulated
providers (``simulator.providers``), and it keeps the books the report is made
of: dollars per target, GPU-seconds lost to preemption, GPUs in use.

Time only moves through :meth:`SimWorld.advance_to`, called by the runner;
every change happens at an event (a worker that finished booting, finished its
work, or calls in; a zone's trace changing; a private outage starting or
ending), in time order, ties in the order they were scheduled.

Work: a task needs ``work_s`` GPU-seconds on the reference GPU (``speed``
scales it per instance type). A video commits a checkpoint each ``segment_s``
of work, kept across attempts (the checkpoint store is shared): a preempted
video loses only its unfinished segment; an image starts over.
"""

from __future__ import annotations

import bisect
import heapq
import math
import threading
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from controlplane.domain import ON_DEMAND, Candidate, InsufficientCapacity, PriceTooHigh, Target
from controlplane.domain.backend import BackendState, BackendStatus
from simulator.markets import Market, MarketMode, PriceBook
from simulator.scenario import PrivateCluster

__all__ = ["HEARTBEAT_EVERY_S", "NO_CLASS", "Instance", "SimWorld", "TaskWork", "class_rank"]

#: a running simulated worker calls in this often (the policy's heartbeat timeout defaults to 60 s)
HEARTBEAT_EVERY_S = 20.0
PRIVATE = "private"
#: the order of the priority classes a kubernetes target may map task priorities to (settings.priority_classes)
_CLASS_RANK = {"urgent": 0, "high": 1, "normal": 2, "low": 3}
#: the rank of a pod without a PriorityClass (priority 0 in Kubernetes: below every class)
NO_CLASS = len(_CLASS_RANK)
_EventKind = Literal["started", "finished", "heartbeat", "zone", "outage", "restore"]


def class_rank(target: Target, priority: str | None) -> int:
    """A private pod's PriorityClass rank: its task priority's, when the target maps it to a class; else none."""
    classes = target.settings.get("priority_classes") or {}
    return _CLASS_RANK.get(priority or "", NO_CLASS) if priority in classes else NO_CLASS


@dataclass(slots=True)
class TaskWork:
    work_s: float
    segment_s: float | None
    #: GPU-seconds of work already committed to a checkpoint
    committed_s: float = 0.0


@dataclass(slots=True, kw_only=True)
class Instance:
    attempt_id: str
    task_id: str
    provider: str
    target: str
    #: PRIVATE, or "<provider>/<region>"
    pool: str
    region: str | None
    zone: str | None
    instance_type: str
    requested_s: float
    state: BackendState = BackendState.PENDING
    started_s: float | None = None
    ended_s: float | None = None
    reason: str | None = None
    speed: float = 1.0
    #: waiting for a free private GPU (a pod the cluster cannot fit yet), since when
    queued_since_s: float | None = None
    usd: float = 0.0
    #: how a cloud instance was bought (private ones: spot, unused)
    market: MarketMode = "spot"
    #: launch order, for deterministic tie-breaks
    seq: int = 0
    #: a private pod's PriorityClass rank (0 = urgent's class; :data:`NO_CLASS`: none, the lowest)
    rank: int = NO_CLASS


@dataclass(kw_only=True)
class Books:
    """The running totals the report reads."""

    usd_by_target: dict[str, float] = field(default_factory=dict)
    gpu_s_lost: float = 0.0
    preemptions: int = 0
    lost: int = 0
    gpu_s_used: float = 0.0


class SimWorld:
    def __init__(
        self,
        *,
        private: PrivateCluster,
        markets: dict[str, Market],
        prices: PriceBook,
        mode: MarketMode,
        seed: int,
        unknown_task_work_s: float | None = None,
    ) -> None:
        self.private, self.markets, self.prices, self.mode = private, markets, prices, mode
        #: the work of a task the workload never submitted (None: such a launch is refused); contract tests only
        self.unknown_task_work_s = unknown_task_work_s
        self.rng = np.random.Generator(np.random.PCG64(seed ^ 0x5EED))
        self.now_s = 0.0
        self.tasks: dict[str, TaskWork] = {}
        self.instances: dict[str, Instance] = {}
        self.books = Books()
        #: instances holding or waiting for a GPU now
        self.live = 0
        #: bumped by every change a scheduler round could act on (a boot, an end, capacity moving)
        self.changes = 0
        #: GPUs the private cluster has now (outages take some away)
        self.private_gpus = private.gpus
        self._private_used: list[str] = []
        #: pods waiting for a GPU, in the order the cluster starts them: (class rank, arrival, attempt id)
        self._private_waiting: list[tuple[int, int, str]] = []
        self._events: list[tuple[float, int, _EventKind, str]] = []
        self._seq = 0
        #: attempts whose worker called in since the runner last asked (the runner records the heartbeats)
        self.called_in: list[str] = []
        self._cancels: set[str] = set()
        self._lock = threading.Lock()
        for key, market in markets.items():
            for index, _zone in enumerate(market.zones):
                self._schedule_zone(key, index)
        for index, outage in enumerate(private.outages):
            self._schedule(outage.at_hours * 3600.0, "outage", str(index))

    # -- the clock ------------------------------------------------------------------------------------

    def next_event_s(self) -> float | None:
        return self._events[0][0] if self._events else None

    def advance_to(self, t_s: float) -> None:
        """Apply every event up to and including ``t_s``, in order."""
        while self._events and self._events[0][0] <= t_s:
            at, _seq, kind, key = heapq.heappop(self._events)
            self.now_s = max(self.now_s, at)
            self._apply(kind, key)
        self.now_s = max(self.now_s, t_s)

    def _schedule(self, at_s: float, kind: _EventKind, key: str) -> None:
        self._seq += 1
        heapq.heappush(self._events, (at_s, self._seq, kind, key))

    def _apply(self, kind: _EventKind, key: str) -> None:
        if kind == "zone":
            market_key, _, index = key.rpartition("#")
            self._zone_changed(market_key, int(index))
            return
        if kind in ("outage", "restore"):
            self._outage(int(key), starting=kind == "outage")
            return
        instance = self.instances.get(key)
        if instance is None or instance.state.is_final:
            return  # the event of an instance that was stopped or taken away meanwhile
        if kind == "started":
            self._start(instance)
        elif kind == "finished":
            self._end(instance, BackendState.SUCCEEDED, None)
        elif kind == "heartbeat" and instance.state == BackendState.RUNNING:
            self.called_in.append(instance.attempt_id)
            self._schedule(self.now_s + HEARTBEAT_EVERY_S, "heartbeat", instance.attempt_id)

    # -- launching ------------------------------------------------------------------------------------

    def launch(
        self, attempt_id: str, task_id: str, target: Target, candidate: Candidate, priority: str | None = None
    ) -> Instance:
        """Start an instance for the attempt, or raise what the backend would (capacity, price)."""
        existing = self.instances.get(attempt_id)
        if existing is not None:
            return existing
        if task_id not in self.tasks and self.unknown_task_work_s is not None:
            self.tasks[task_id] = TaskWork(work_s=self.unknown_task_work_s, segment_s=None)
        if task_id not in self.tasks:
            raise InsufficientCapacity(f"task {task_id} is not in the simulated workload", target=target.name)
        if target.market_provider is None:
            instance = self._launch_private(attempt_id, task_id, target, candidate, priority)
        else:
            instance = self._launch_cloud(attempt_id, task_id, target, candidate)
        self._seq += 1
        instance.seq = self._seq
        self.instances[attempt_id] = instance
        self.live += 1
        self.changes += 1
        return instance

    def _launch_private(
        self, attempt_id: str, task_id: str, target: Target, candidate: Candidate, priority: str | None
    ) -> Instance:
        room = len(self._private_used) < self.private_gpus
        # kube-scheduler's queue is ordered by pod priority, then age: with the target's priority_classes a task's
        # priority orders the wait (and may preempt); without, every pod has the same priority and the wait is FIFO
        rank = class_rank(target, priority)
        if not room and target.provider == "local":
            # the local provider refuses when its slots are taken; a cluster queues the pod instead
            raise InsufficientCapacity(f"all {self.private_gpus} private GPUs are busy", target=target.name)
        instance = Instance(
            attempt_id=attempt_id,
            task_id=task_id,
            provider=target.provider,
            target=target.name,
            pool=PRIVATE,
            region=candidate.region,
            zone=None,
            instance_type=candidate.instance_type or "gpu",
            requested_s=self.now_s,
            rank=rank,
        )
        if room:
            self._private_used.append(attempt_id)
            self._schedule(
                self.now_s + self._latency(self.private.launch_latency.min_s, self.private.launch_latency.max_s),
                "started",
                attempt_id,
            )
        else:
            instance.queued_since_s = self.now_s
            self._seq += 1
            bisect.insort(self._private_waiting, (rank, self._seq, attempt_id))
            # (only a pod gets here: the local provider refused above)
            victim = self._victim(rank) if self.private.preemption else None
            if victim is not None:
                # the instance is registered first: freeing the victim's GPU starts the most urgent waiting pod
                self.instances[attempt_id] = instance
                self._end(victim, BackendState.PREEMPTED, "preempted by a higher-priority pod (PriorityClass)")
        return instance

    def _victim(self, rank: int) -> Instance | None:
        """The pod kube-scheduler would evict for a pod of ``rank``: the lowest class below it, newest first."""
        lower = self._pods_below(rank)
        return max(reversed(lower), key=lambda instance: instance.rank) if lower else None

    def preemptible(self, rank: int) -> int:
        """Private GPUs held by pods of a lower class than ``rank``: what a pod of that class may preempt."""
        return len(self._pods_below(rank))

    def _pods_below(self, rank: int) -> list[Instance]:
        """The pods holding a private GPU with a lower class than ``rank``, in the order they took it.

        Only pods: a local provider's worker shares the simulated GPUs but is
        not the cluster's to evict.
        """
        return [
            instance
            for instance in (self.instances[a] for a in self._private_used)
            if instance.rank > rank and instance.provider == "kubernetes"
        ]

    def _launch_cloud(self, attempt_id: str, task_id: str, target: Target, candidate: Candidate) -> Instance:
        """A VM, or a pod on a cloud node pool: either takes a node from its cloud's (region) trace market."""
        region = candidate.region or (target.regions[0] if target.regions else "")
        cloud = target.market_provider or target.provider
        market = self.markets.get(f"{cloud}/{region}")
        if market is None:
            raise InsufficientCapacity(f"no simulated {cloud} market in {region!r}", target=target.name)
        instance_type = candidate.instance_type or "default"
        bought: MarketMode = "on_demand" if self.mode == "on_demand" or target.market == ON_DEMAND else "spot"
        zone = market.pick_zone(self.now_s, bought, target.zones)
        if zone is None:
            raise InsufficientCapacity(
                f"no {instance_type} spot capacity in {region} (every zone's trace is at its limit)", target=target.name
            )
        price = self.prices.hourly(market.provider, region, zone.name, instance_type, self.now_s)
        cap = candidate.max_price_usd_h
        if bought == "on_demand":
            price = self.prices.hourly(market.provider, region, zone.name, instance_type, self.now_s, bought)
        if price is not None and cap is not None and price > cap:
            word = "spot" if bought == "spot" else "on-demand"
            raise PriceTooHigh(f"{word} price {price:.4f} over the max price {cap:g}", target=target.name)
        (zone.used if bought == "spot" else zone.on_demand).append(attempt_id)
        self._schedule(self.now_s + self._latency(*market.latency), "started", attempt_id)
        return Instance(
            attempt_id=attempt_id,
            task_id=task_id,
            provider=target.provider,
            target=target.name,
            pool=f"{cloud}/{region}",
            region=region,
            zone=zone.name,
            instance_type=instance_type,
            requested_s=self.now_s,
            speed=market.speed.get(instance_type, 1.0),
            market=bought,
        )

    def _latency(self, low: float, high: float) -> float:
        return low if high <= low else float(self.rng.uniform(low, high))

    def _start(self, instance: Instance) -> None:
        instance.state, instance.started_s = BackendState.RUNNING, self.now_s
        self.changes += 1
        work = self.tasks[instance.task_id]
        remaining = max(work.work_s - work.committed_s, 0.0) / instance.speed
        self._schedule(self.now_s + remaining, "finished", instance.attempt_id)
        # the worker calls in first thing, then every HEARTBEAT_EVERY_S
        self.called_in.append(instance.attempt_id)
        self._schedule(self.now_s + HEARTBEAT_EVERY_S, "heartbeat", instance.attempt_id)

    # -- ending ---------------------------------------------------------------------------------------

    def cancel(self, attempt_id: str) -> None:
        """Note a stop; :meth:`apply_cancels` carries it out, in launch order.

        The scheduler follows each provider in its own thread, so stops arrive
        in an order that varies from run to run; applied later in launch
        order, at the same simulated instant, they keep a run deterministic.
        """
        with self._lock:
            self._cancels.add(attempt_id)

    def apply_cancels(self) -> None:
        with self._lock:
            cancels, self._cancels = self._cancels, set()
        for instance in sorted(
            (self.instances[a] for a in cancels if a in self.instances), key=lambda instance: instance.seq
        ):
            if not instance.state.is_final:
                self._end(instance, BackendState.FAILED, "cancelled")

    def settle(self) -> None:
        """Bill the instances still holding a GPU up to now (the end of the simulation), leaving them as they are."""
        for instance in self.instances.values():
            if not instance.state.is_final:
                self._bill(instance)
                instance.requested_s = self.now_s
                if instance.started_s is not None:
                    instance.started_s = self.now_s

    def _end(self, instance: Instance, state: BackendState, reason: str | None) -> None:
        instance.state, instance.reason, instance.ended_s = state, reason, self.now_s
        self.live -= 1
        self.changes += 1
        work = self.tasks[instance.task_id]
        if instance.started_s is not None:
            ran_s = self.now_s - instance.started_s
            self.books.gpu_s_used += ran_s
            done = ran_s * instance.speed
            if state == BackendState.SUCCEEDED:
                work.committed_s = work.work_s
            else:
                kept = 0.0
                if work.segment_s is not None:
                    kept = math.floor(done / work.segment_s) * work.segment_s
                    work.committed_s = min(work.committed_s + kept, work.work_s)
                if state in (BackendState.PREEMPTED, BackendState.LOST):
                    self.books.gpu_s_lost += max(done - kept, 0.0) / instance.speed
        if state == BackendState.PREEMPTED:
            self.books.preemptions += 1
        elif state == BackendState.LOST:
            self.books.lost += 1
        self._bill(instance)
        self._release(instance)

    def _bill(self, instance: Instance) -> None:
        if instance.pool == PRIVATE:
            began = instance.started_s if instance.started_s is not None else self.now_s
            usd = self.private.usd_per_gpu_hour * (self.now_s - began) / 3600.0
        else:
            usd = self.prices.cost(
                instance.pool.partition("/")[0],  # the market's cloud: a pod on a node pool pays its node's price
                instance.region or "",
                instance.zone,
                instance.instance_type,
                instance.requested_s,
                self.now_s,
                instance.market,
            )
        instance.usd = usd
        self.books.usd_by_target[instance.target] = self.books.usd_by_target.get(instance.target, 0.0) + usd

    def _release(self, instance: Instance) -> None:
        if instance.pool == PRIVATE:
            if instance.attempt_id in self._private_used:
                self._private_used.remove(instance.attempt_id)
                self._start_waiting_pods()
            else:
                self._private_waiting = [entry for entry in self._private_waiting if entry[2] != instance.attempt_id]
            return
        market = self.markets[instance.pool]
        for zone in market.zones:
            if zone.name == instance.zone:
                held = zone.used if instance.market == "spot" else zone.on_demand
                if instance.attempt_id in held:
                    held.remove(instance.attempt_id)

    def _start_waiting_pods(self) -> None:
        latency = (self.private.launch_latency.min_s, self.private.launch_latency.max_s)
        while self._private_waiting and len(self._private_used) < self.private_gpus:
            attempt_id = self._private_waiting.pop(0)[2]
            self.instances[attempt_id].queued_since_s = None
            self._private_used.append(attempt_id)
            self._schedule(self.now_s + self._latency(*latency), "started", attempt_id)

    # -- the world changing under the instances -------------------------------------------------------

    def _schedule_zone(self, market_key: str, index: int) -> None:
        change = self.markets[market_key].zones[index].next_change_s(self.now_s)
        if change is not None:
            self._schedule(max(change, self.now_s), "zone", f"{market_key}#{index}")

    def _zone_changed(self, market_key: str, index: int) -> None:
        zone = self.markets[market_key].zones[index]
        self.changes += 1
        if self.mode == "spot":  # on-demand instances are kept apart (Zone.on_demand), never reclaimed
            excess = len(zone.used) - zone.available(self.now_s)
            for attempt_id in list(reversed(zone.used))[: max(excess, 0)]:  # the newest go first
                self._end(self.instances[attempt_id], BackendState.PREEMPTED, f"spot capacity reclaimed in {zone.name}")
        self._schedule_zone(market_key, index)

    def _outage(self, index: int, *, starting: bool) -> None:
        outage = self.private.outages[index]
        self.changes += 1
        if not starting:
            self.private_gpus = min(self.private_gpus + outage.gpus, self.private.gpus)
            self._start_waiting_pods()
            return
        self.private_gpus = max(self.private_gpus - outage.gpus, 0)
        for attempt_id in list(reversed(self._private_used))[: max(len(self._private_used) - self.private_gpus, 0)]:
            self._end(self.instances[attempt_id], BackendState.LOST, "node lost (simulated private outage)")
        self._schedule(self.now_s + outage.for_hours * 3600.0, "restore", str(index))

    # -- what the providers and the report read -------------------------------------------------------

    def status(self, attempt_id: str) -> BackendStatus:
        instance = self.instances.get(attempt_id)
        if instance is None:
            return BackendStatus(state=BackendState.LOST, reason="unknown attempt: never launched here")
        with self._lock:
            stopping = attempt_id in self._cancels
        if stopping and not instance.state.is_final:
            return BackendStatus(state=BackendState.FAILED, reason="cancelled")
        if instance.state == BackendState.PENDING and instance.queued_since_s is not None:
            waited = int(self.now_s - instance.queued_since_s)
            return BackendStatus(state=BackendState.PENDING, reason="no free GPU", unschedulable_for_s=waited)
        return BackendStatus(state=instance.state, reason=instance.reason)

    def private_free(self) -> int:
        return max(self.private_gpus - len(self._private_used), 0)

    def in_use_by_target(self) -> dict[str, int]:
        """Instances holding a GPU now (booting or running), per target."""
        counts: dict[str, int] = {}
        for attempt_id in self._private_used:
            target = self.instances[attempt_id].target
            counts[target] = counts.get(target, 0) + 1
        for market in self.markets.values():
            for zone in market.zones:
                for attempt_id in (*zone.used, *zone.on_demand):
                    target = self.instances[attempt_id].target
                    counts[target] = counts.get(target, 0) + 1
        return counts

    def spend_rate_usd_h(self) -> float:
        """Dollars per hour the instances holding a GPU now cost."""
        rate = 0.0
        for market in self.markets.values():
            for zone in market.zones:
                for attempt_id in (*zone.used, *zone.on_demand):
                    instance = self.instances[attempt_id]
                    rate += (
                        self.prices.hourly(
                            market.provider,
                            market.region,
                            zone.name,
                            instance.instance_type,
                            self.now_s,
                            instance.market,
                        )
                        or 0.0
                    )
        return rate + self.private.usd_per_gpu_hour * len(self._private_used)
