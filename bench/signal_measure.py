"""What ``bench.signals`` measures: the CPU and wall time of each poll, and plan() rounds with and without pollers.

Each measurement returns plain data (:class:`PollCost`, :class:`PlanningRounds`)
that :mod:`bench.signal_report` turns into the table.
"""

from __future__ import annotations

import functools
import statistics
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from bench.policy import NOW, big_policy
from bench.policy import snapshot as bench_snapshot
from bench.policy import tasks as bench_tasks
from controlplane.domain import SignalSnapshot, Task
from controlplane.policy import Policy, plan
from controlplane.signals.hub import SignalHub

#: tasks queued in the store, so that the queue source counts a real table
QUEUED_TASKS = 2_000
POLLER_JOIN_TIMEOUT_S = 30.0
WARM_UP_CYCLES = 2


@dataclass
class PollCost:
    """CPU and wall seconds of each measured poll, per source, and of each whole cycle."""

    cpu: dict[str, list[float]] = field(default_factory=dict)
    wall: dict[str, list[float]] = field(default_factory=dict)

    def add(self, name: str, cpu: float, wall: float) -> None:
        self.cpu.setdefault(name, []).append(cpu)
        self.wall.setdefault(name, []).append(wall)

    def cpu_ms(self, name: str) -> float:
        return statistics.median(self.cpu[name]) * 1e3

    def wall_ms(self, name: str) -> float:
        return statistics.median(self.wall[name]) * 1e3


def timed(fn: Callable[[], object]) -> tuple[float, float]:
    cpu, wall = time.process_time(), time.perf_counter()
    fn()
    return time.process_time() - cpu, time.perf_counter() - wall


def measure_polls(hub: SignalHub, cycles: int) -> PollCost:
    cost = PollCost()
    for _ in range(cycles):
        cost.add("all", *timed(lambda: hub.poll_all(force=True)))
    for _ in range(cycles):
        for name in hub.names:
            cost.add(name, *timed(functools.partial(hub.poll, name, force=True)))
    return cost


def median_us(fn: Callable[[], object], count: int) -> float:
    times = []
    for _ in range(count):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times) * 1e6


@dataclass(frozen=True)
class Round:
    """One planning round: plans done, and the wall, planning-thread and whole-process CPU seconds it took."""

    plans: int
    wall: float
    thread_cpu: float
    process_cpu: float

    @property
    def rate(self) -> float:
        return self.plans / self.wall


def plan_rate(policy: Policy, work: list[Task], snap: SignalSnapshot, seconds: float) -> Round:
    """plan() for ``seconds`` (the clock read once every 256 plans).

    ``process_cpu - thread_cpu`` is what every other thread of the process
    (the pollers and their workers) took meanwhile.
    """
    done = 0
    thread_cpu, process_cpu = time.thread_time(), time.process_time()
    started = time.perf_counter()
    deadline = started + seconds
    while True:  # bounded by the deadline
        for index in range(done, done + 256):
            plan(work[index % len(work)], snap, policy, NOW)
        done += 256
        now = time.perf_counter()
        if now >= deadline:
            return Round(
                plans=done,
                wall=now - started,
                thread_cpu=time.thread_time() - thread_cpu,
                process_cpu=time.process_time() - process_cpu,
            )


class Pollers:
    """Every source of the hub polled on its own thread, every ``interval_s`` (start to start, staggered).

    It runs what the control plane's APScheduler job runs, ``hub.poll(name)``
    (backoff included), only on a fixed cadence so that rounds compare.
    """

    def __init__(self, hub: SignalHub, interval_s: float, max_s: float) -> None:
        self.hub, self.interval_s, self.max_s = hub, interval_s, max_s
        self.polls = dict.fromkeys(hub.names, 0)
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def __enter__(self) -> Pollers:
        for index, name in enumerate(self.hub.names):
            # first polls spread over one interval, as the hub's jitter spreads them, rather than all at once
            offset = index * self.interval_s / len(self.hub.names)
            thread = threading.Thread(target=self._run, args=(name, offset), name=f"poll-{name}", daemon=True)
            self._threads.append(thread)
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        deadline = time.monotonic() + POLLER_JOIN_TIMEOUT_S
        for thread in self._threads:
            thread.join(max(deadline - time.monotonic(), 0.0))
        stuck = [thread.name for thread in self._threads if thread.is_alive()]
        if stuck:
            print(f"pollers still running after {POLLER_JOIN_TIMEOUT_S:.0f} s: {stuck}", file=sys.stderr)

    def _run(self, name: str, offset_s: float) -> None:
        started = time.monotonic()
        due = started + offset_s
        if self._stop.wait(offset_s):
            return
        # bounded twice: the stop event, and max_s should a round never end
        while not self._stop.is_set() and time.monotonic() - started < self.max_s:
            self.hub.poll(name)
            self.polls[name] += 1
            due = max(due + self.interval_s, time.monotonic())
            self._stop.wait(due - time.monotonic())


@dataclass
class PlanningRounds:
    baseline: list[Round] = field(default_factory=list)
    polling: list[Round] = field(default_factory=list)
    #: polls started per source during the "with pollers" rounds
    polls: dict[str, int] = field(default_factory=dict)

    @property
    def polling_seconds(self) -> float:
        return sum(r.wall for r in self.polling)

    def others_share(self, rounds: list[Round]) -> float:
        """The share of the wall time the process's other threads ran (CPU seconds per second)."""
        return sum(r.process_cpu - r.thread_cpu for r in rounds) / sum(r.wall for r in rounds)

    def plans_per_cpu_s(self, rounds: list[Round]) -> float:
        """Plans per CPU second of the planning thread."""
        return sum(r.plans for r in rounds) / sum(r.thread_cpu for r in rounds)

    def planner_share(self, rounds: list[Round]) -> float:
        """The share of the wall time the planning thread ran (the rest: other threads, other processes)."""
        return sum(r.thread_cpu for r in rounds) / sum(r.wall for r in rounds)


def measure_planning(hub: SignalHub, pairs: int, round_s: float, interval_s: float) -> PlanningRounds:
    """``pairs`` rounds without and with pollers, in ABBA order so that a steady drift of the machine's speed
    weighs on both alike; short rounds, so that a change of the shared machine's load hits few pairs."""
    policy, work, snap = big_policy(), bench_tasks(20_000), bench_snapshot()
    plan_rate(policy, work, snap, 1.0)  # warm-up
    out = PlanningRounds(polls=dict.fromkeys(hub.names, 0))
    for pair in range(pairs):
        for polling in (False, True) if pair % 2 == 0 else (True, False):
            if not polling:
                out.baseline.append(plan_rate(policy, work, snap, round_s))
                continue
            with Pollers(hub, interval_s, max_s=round_s + 30) as pollers:
                out.polling.append(plan_rate(policy, work, snap, round_s))
                done = dict(pollers.polls)  # read before stopping: polls after the round do not count
            for name, count in done.items():
                out.polls[name] += count
    return out
