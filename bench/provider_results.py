"""What ``bench.providers`` measures, and the markdown report it writes to docs/performance.md."""

from __future__ import annotations

import argparse
import math
import statistics
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date

from bench.provider_backends import Call
from bench.report import machine

COMMAND = "make bench-providers"
#: the issue's bound on one failover, in seconds of control-plane time
FAILOVER_TARGET_S = 5.0


# ---- the measurements ----------------------------------------------------------------------------


@dataclass
class Launches:
    provider: str
    backend: str
    cold_wall_s: float
    cold_cpu_s: float
    wall_s: list[float]
    cpu_s: list[float]
    process_cpu_s: list[float]


@dataclass
class Scenario:
    name: str
    refusal: str
    order: tuple[str, ...]  # targets, in the rule's order
    providers: dict[str, str]  # provider name in the policy -> key in Backends.providers
    before_each: Callable[[], None] = lambda: None
    after_each: Callable[[str], None] = lambda _task_id: None


@dataclass
class Hop:
    """One failover: a refused launch and the next candidate's launch."""

    refused: Call
    next: Call

    @property
    def to_request_s(self) -> float:
        return self.next.started - self.refused.ended

    @property
    def to_request_cpu_s(self) -> float:
        """The scheduler's own CPU between the two launches (the thread that runs both)."""
        return self.next.cpu_started - self.refused.cpu_ended

    @property
    def to_resource_s(self) -> float:
        return self.next.ended - self.refused.ended


@dataclass
class Placed:
    wall_s: float
    cpu_s: float
    hops: list[Hop]


@dataclass
class Failovers:
    scenario: Scenario
    placed: list[Placed]
    #: RunInstances requests the EC2 proxy saw per timed task (None: the scenario does not use EC2)
    ec2_requests_per_task: float | None = None

    def hops(self, index: int) -> list[Hop]:
        return [p.hops[index] for p in self.placed]


# ---- the report ----------------------------------------------------------------------------------


def p90(values: Sequence[float]) -> float:
    """Nearest-rank 90th percentile."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(0.9 * len(ordered)) - 1)]


def ms(value: float) -> str:
    """Seconds as milliseconds, to about three significant digits (the no-op launch takes microseconds)."""
    value *= 1e3
    return f"{value:.3f}" if value < 1 else f"{value:.2f}" if value < 10 else f"{value:.1f}"


def med_p90(values: Sequence[float]) -> str:
    return f"{ms(statistics.median(values))} / {ms(p90(values))}"


def report(args: argparse.Namespace, launches: list[Launches], failovers: list[Failovers]) -> str:
    base = launches[0]
    base_cpu = statistics.median(base.cpu_s)
    lines = [
        f"Measured {date.today().isoformat()} on a {machine()}, Python {sys.version.split()[0]}, SQLite store. "
        f"Command: `{COMMAND}` (`python -m bench.providers`).",
        "",
        "**Test servers on loopback are not the clouds.** Every backend is the tests' fake on 127.0.0.1 in the "
        "bench's own process: moto's EC2 (and the recording proxy that answers `InsufficientInstanceCapacity`), "
        "the fake Azure ARM over TLS, kmock for Kubernetes, and the real local provider starting `sleep` as its "
        "worker. There is no network latency and no service time of a real API: these numbers are the control "
        "plane's own cost (plus the fakes' answers in the wall times), not what a launch takes against EC2 or "
        "Azure, where each API call adds its round trip and the service's own time.",
        "",
        f"**Launch overhead**: `provider.launch()` from call to return (the resource is requested: instance, "
        f"VM, Job or process exists); {args.launches} launches per provider after {args.warm_up} untimed, "
        "median / p90 in ms. CPU = the launching thread's CPU time (`time.thread_time()`): the control plane's "
        "own cost, not the fakes' threads; process CPU adds those.",
        "",
        "| provider | backend (fake) | calls per launch | wall ms median / p90 | CPU ms median / p90 | "
        "process CPU ms (median) | CPU ratio to no-op | first launch, cold (wall / CPU ms) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    calls = {
        "no-op (baseline)": "none",
        "aws": "DescribeInstances (adopt?), RunInstances",
        "azure": "GET VM (adopt?), PUT VM",
        "kubernetes": "GET Job (adopt?), POST Secret, POST Job",
        "local": "fork/exec `sh`, which starts the worker detached",
    }
    for item in launches:
        ratio = statistics.median(item.cpu_s) / base_cpu if base_cpu > 0 else math.nan
        lines.append(
            f"| {item.provider} | {item.backend} | {calls[item.provider]} | {med_p90(item.wall_s)} | "
            f"{med_p90(item.cpu_s)} | {ms(statistics.median(item.process_cpu_s))} | {ratio:,.0f}x | "
            f"{ms(item.cold_wall_s)} / {ms(item.cold_cpu_s)} |"
        )
    worst_cpu = 0.0
    worst_wall = 0.0
    lines += [
        "",
        f"**Failover latency**: `Scheduler.place_batch()` on one public task at a time whose first candidate "
        f"refuses for capacity; {args.tasks} tasks per scenario after one warm-up, median / p90 in ms. "
        "*Error -> next request*: from the refused `launch()` raising to the next candidate's `launch()` call "
        "(the scheduler records the failed attempt, creates the next one in the store, renders its spec), in wall "
        "time and in CPU time of the scheduler's thread. "
        "*Error -> resource requested*: until that `launch()` returned. Whole `place_batch`: claim, plan, "
        "receipt, every launch.",
        "",
        "| scenario | refusal | hop | refused launch (wall ms) | error -> next request (wall ms) | "
        "error -> next request (CPU ms) | error -> resource requested (wall ms) | whole `place_batch` wall ms | "
        "whole `place_batch` CPU ms (its thread) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for result in failovers:
        hop_count = len(result.scenario.order) - 1
        walls = [p.wall_s for p in result.placed]
        cpus = [p.cpu_s for p in result.placed]
        worst_cpu, worst_wall = max(worst_cpu, p90(cpus)), max(worst_wall, p90(walls))
        for index in range(hop_count):
            hops = result.hops(index)
            first = index == 0
            hop = f"{result.scenario.order[index]} -> {result.scenario.order[index + 1]}"
            refusal = result.scenario.refusal
            lines.append(
                f"| {result.scenario.name if first else ''} | {refusal if first else ''} | {hop} | "
                f"{med_p90([h.refused.ended - h.refused.started for h in hops])} | "
                f"{med_p90([h.to_request_s for h in hops])} | {med_p90([h.to_request_cpu_s for h in hops])} | "
                f"{med_p90([h.to_resource_s for h in hops])} | "
                f"{med_p90(walls) if first else ''} | {med_p90(cpus) if first else ''} |"
            )
    met = "met" if worst_cpu < FAILOVER_TARGET_S else "**not met**"
    ec2_requests = ", ".join(
        f"{r.ec2_requests_per_task:.1f} RunInstances requests per task in {r.scenario.name} (2 offers)"
        for r in failovers
        if r.ec2_requests_per_task is not None
    )
    lines += [
        "",
        f"Target ({FAILOVER_TARGET_S:g} s of control-plane time per failover) {met}: the slowest scenario's whole "
        f"`place_batch`, every refused launch included, took {ms(worst_cpu)} ms of CPU and {ms(worst_wall)} ms "
        "of wall time at p90. EC2's `InsufficientInstanceCapacity` comes with HTTP 500, which botocore's "
        "standard retry mode tries once more after a short jittered back-off (up to 50 ms), so a refused EC2 "
        "offer costs two requests, until the client's retry quota (500 units, 14 per retry, refilled by 1 per "
        "successful call) runs out after about 35 retries; from then on each offer is asked once. One client "
        f"serves both EC2 scenarios, one after the other: {ec2_requests}. Azure's refusal is a 409 the SDK does "
        "not retry. kmock keeps every object and request it was sent, and answers more slowly as they pile up: "
        "its wall times grow through the run while the control plane's CPU per launch does not.",
    ]
    return "\n".join(lines)
