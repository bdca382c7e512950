"""Providers: launch overhead per backend, and failover latency through the scheduler.

Run with ``make bench-providers`` (or ``python -m bench.providers``). Target
from the providers issue: a task whose first backend refuses for capacity is
launched on the next candidate in under 5 s of control-plane time.

Backends, all on 127.0.0.1 in this process, are the ones the provider tests
use, through the real SDKs (nothing patched): moto's EC2
(``ThreadedMotoServer``), and in front of it the recording proxy of
tests/contract/test_aws_provider.py that answers chosen calls with EC2
errors; ``FakeAzureArm`` over TLS (azure-mgmt-compute); kmock
(tests/support/kmock_cluster.py, the kubernetes client); the real
``LocalProvider`` (its worker is ``sleep``: what is timed is the launch, not
the face swap). Baseline: ``NoopProvider``, which launches nothing.

1. **Launch overhead**: ``provider.launch()`` from call to return, which is
   when the backend has accepted the resource ("resource requested": the
   EC2 instance, Azure VM or Kubernetes Job exists, pending; the local worker
   process is started). ``--launches`` launches per provider after
   ``--warm-up`` untimed ones (the first builds the SDK client: reported on
   its own as "cold"). Wall time, and CPU time of the launching thread
   (``time.thread_time()``): the control plane's own cost, without the
   in-process fakes answering on their own threads.
2. **Failover latency**: ``Scheduler.place_batch`` on one public task at a
   time, with a policy whose first candidate refuses for capacity
   (``InsufficientInstanceCapacity`` on every EC2 offer, Azure
   ``AllocationFailed``, or the no-op provider's ``InsufficientCapacity``).
   Each provider is wrapped in a clock that notes when its ``launch`` was
   called and when it returned or raised, so the scheduler's own step is
   measured between the two: the launch error -> the next candidate's
   ``launch()`` call (store the failed attempt, create the next one, render
   its spec), and the launch error -> the next ``launch()`` returned
   (resource requested). ``--tasks`` tasks per scenario, one warm-up.

Test servers on loopback are not the clouds: no network latency, no TLS
round trips across a continent, no API-side queueing. The wall times here
are what the control plane and the fakes cost on this machine; a real
``RunInstances`` or ARM PUT adds hundreds of milliseconds of network and
service time per call on top.
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.provider_backends import AWS_TYPE, AZURE_REGION, REGION, Backends, Call, Clocked, running_backends
from bench.provider_results import Failovers, Hop, Launches, Placed, Scenario, report
from bench.report import write_section
from bench.signals import isolated_aws_environment
from controlplane.domain import (
    Candidate,
    DataSensitivity,
    InsufficientCapacity,
    SignalSample,
    Target,
    TaskKind,
    TaskSpec,
)
from controlplane.domain.worker_spec import parse_worker_spec
from controlplane.jsonlog import JsonFormatter
from controlplane.policy import Policy, parse_policy
from controlplane.runtime import standalone_scheduler
from controlplane.store import Store, make_engine, new_id, upgrade
from providers.base import LaunchRequest, Provider

# ---- 1. launch overhead --------------------------------------------------------------------------


def launch_request(target: Target, attempt_id: str, task_id: str) -> LaunchRequest:
    """The request the scheduler would send: a valid worker spec with a callback token."""
    spec = {
        "version": 1,
        "task_id": task_id,
        "attempt_id": attempt_id,
        "source": "s3://in/face.png",
        "target": "s3://in/target.png",
        "output": "s3://out/swapped.png",
        "checkpoint": None,
        "options": {},
        "callback": {
            "url": f"http://127.0.0.1:9/v1/attempts/{attempt_id}",
            "token": "att_" + "b" * 43,
            "heartbeat_seconds": 5.0,
        },
    }
    candidate = Candidate(
        target=target.name,
        provider=target.provider,
        private=target.private,
        region=target.regions[0] if target.regions else None,
        instance_type=target.instance_types[0] if target.instance_types else None,
        max_price_usd_h=target.max_price_usd_h,
    )
    return LaunchRequest(
        attempt_id=attempt_id, task_id=task_id, candidate=candidate, worker_spec=parse_worker_spec(spec)
    )


def measure_launches(
    name: str,
    backend: str,
    provider: Provider,
    target: Target,
    count: int,
    warm_up: int,
    after: Callable[[str], None] | None = None,
) -> Launches:
    """``count`` timed launches after ``warm_up`` untimed ones; ``after(attempt_id)`` runs untimed after each."""
    result = Launches(name, backend, math.nan, math.nan, [], [], [])
    for i in range(warm_up + count):
        attempt_id, task_id = new_id("att"), new_id("tsk")
        request = launch_request(target, attempt_id, task_id)
        wall, cpu, process = time.perf_counter(), time.thread_time(), time.process_time()
        provider.launch(request)
        wall, cpu, process = time.perf_counter() - wall, time.thread_time() - cpu, time.process_time() - process
        if i == 0:
            result.cold_wall_s, result.cold_cpu_s = wall, cpu
        if i >= warm_up:
            result.wall_s.append(wall)
            result.cpu_s.append(cpu)
            result.process_cpu_s.append(process)
        if after is not None:
            after(attempt_id)
    return result


def all_launches(backends: Backends, count: int, warm_up: int) -> list[Launches]:
    p, targets = backends.providers, {t.name: t for t in backends.policy.targets}
    local = p["local"]
    return [
        measure_launches("no-op (baseline)", "in memory", p["noop"], targets["noop-first"], count, warm_up),
        measure_launches("aws", "moto EC2, HTTP", p["aws"], targets["aws-spot"], count, warm_up),
        measure_launches("azure", "fake ARM, HTTPS", p["azure"], targets["azure-eastus"], count, warm_up),
        measure_launches("kubernetes", "kmock, HTTP", p["kubernetes"], targets["onprem"], count, warm_up),
        # each worker is cancelled (untimed) before the next launch: every launch finds a free slot
        measure_launches("local", "sh + sleep", local, targets["local"], count, warm_up, after=local.cancel),
    ]


# ---- 2. failover latency -------------------------------------------------------------------------


def scenario_policy(base: Policy, order: Sequence[str]) -> Policy:
    document: dict[str, Any] = {
        "targets": [
            {
                "name": t.name,
                "provider": t.provider,
                "private": t.private,
                "regions": list(t.regions),
                "instance_types": list(t.instance_types),
                **({"max_price_usd_h": t.max_price_usd_h} if t.max_price_usd_h is not None else {}),
                "settings": dict(t.settings),
            }
            for t in base.targets
            if t.name in order
        ],
        "rules": [{"name": "chain", "targets": list(order)}],
    }
    return parse_policy(document)


def fresh_prices() -> dict[str, SignalSample]:
    """Spot prices within both max prices, observed now: no cloud target is rejected ``stale_price``."""
    from tests.contract.test_azure_provider import SIZE

    now = datetime.now(UTC)
    pairs = ((f"aws/{REGION}/{AWS_TYPE}", 0.21), (f"azure/{AZURE_REGION}/{SIZE}", 0.16))
    return {
        f"spot_price/{key}": SignalSample(source="spot_price", key=key, value=value, observed_at=now, ttl_seconds=600)
        for key, value in pairs
    }


def measure_failovers(backends: Backends, store: Store, scenario: Scenario, tasks: int) -> Failovers:
    calls: list[Call] = []
    policy = scenario_policy(backends.policy, scenario.order)
    scheduler = standalone_scheduler(
        store=store,
        policy=lambda: policy,
        providers={name: Clocked(backends.providers[key], calls) for name, key in scenario.providers.items()},
        callback_base="http://127.0.0.1:9",
        scheduler_id="bench",
        batch_size=1,
        signals=fresh_prices,
    )
    placed: list[Placed] = []
    uses_ec2 = "aws-proxy" in scenario.providers.values()
    ec2_requests = 0
    for i in range(tasks + 1):  # the first one warms up the scheduler's path
        task, _ = store.create_task(
            spec=TaskSpec(
                tenant="bench",
                kind=TaskKind.IMAGE,
                source_uri="s3://in/face.png",
                target_uri="s3://in/target.png",
                output_uri="s3://out/swapped.png",
                data_sensitivity=DataSensitivity.PUBLIC,
            ),
            request_hash=f"{scenario.name}-{i}",
        )
        scenario.before_each()
        calls.clear()
        seen = len(backends.proxy.calls("RunInstances"))
        wall, cpu = time.perf_counter(), time.thread_time()
        if scheduler.place_batch() != 1:
            raise SystemExit(f"{scenario.name}: the task was not claimed")
        wall, cpu = time.perf_counter() - wall, time.thread_time() - cpu
        if i > 0:
            ec2_requests += len(backends.proxy.calls("RunInstances")) - seen
        check_chain(scenario, store, task.id, calls)
        hops = [Hop(calls[j], calls[j + 1]) for j in range(len(calls) - 1)]
        if i > 0:
            placed.append(Placed(wall, cpu, hops))
        scenario.after_each(task.id)
    return Failovers(scenario, placed, ec2_requests / tasks if uses_ec2 else None)


def check_chain(scenario: Scenario, store: Store, task_id: str, calls: list[Call]) -> None:
    """The numbers are only worth something if the task went down the chain as planned."""
    attempts = store.attempts_for(task_id)
    got = [(a.target, a.state.value) for a in attempts]
    wanted = [(t, "failed") for t in scenario.order[:-1]] + [(scenario.order[-1], "launching")]
    if got != wanted or [c.target for c in calls] != list(scenario.order) or calls[-1].error is not None:
        raise SystemExit(f"{scenario.name}: attempts {got}, launches {[(c.target, c.error) for c in calls]}")


def scenarios(backends: Backends, store: Store) -> list[Scenario]:
    p, arm = backends.providers, backends.arm
    noop, local = p["noop"], p["local"]

    def refuse_noop() -> None:
        noop.fail_next(InsufficientCapacity("no capacity (bench)", target="noop-first"))

    def refuse_azure() -> None:
        arm.refuse_next_create("AllocationFailed", "Allocation failed. We do not have sufficient capacity.")

    def cancel_local(task_id: str) -> None:
        # untimed: the worker is stopped so that the next task finds its slot free
        for attempt in store.attempts_for(task_id):
            if attempt.provider == "local":
                local.cancel(attempt.id)

    return [
        Scenario(
            "no-op -> no-op (baseline)",
            "`InsufficientCapacity` raised by the no-op provider",
            ("noop-first", "noop-second"),
            {"kubernetes": "noop"},
            before_each=refuse_noop,
        ),
        Scenario(
            "aws -> azure",
            "`InsufficientInstanceCapacity` (HTTP 500) on both EC2 offers",
            ("aws-spot", "azure-eastus"),
            {"aws": "aws-proxy", "azure": "azure"},
        ),
        Scenario(
            "azure -> kubernetes",
            "Azure `AllocationFailed` (409) on the VM PUT",
            ("azure-eastus", "onprem"),
            {"azure": "azure", "kubernetes": "kubernetes"},
            before_each=refuse_azure,
        ),
        Scenario(
            "aws -> azure -> local",
            "EC2 `InsufficientInstanceCapacity`, then Azure `AllocationFailed`",
            ("aws-spot", "azure-eastus", "local"),
            {"aws": "aws-proxy", "azure": "azure", "local": "local"},
            before_each=refuse_azure,
            after_each=cancel_local,
        ),
    ]


def quiet_json_logging(sink: Any) -> None:
    """Log as ``serve`` does (JSON at INFO, httpx at WARNING), into ``sink``.

    The scheduler logs every launch and refusal: that cost is part of the
    control plane's, but the lines are not wanted on the bench's stderr.
    """
    handler = logging.StreamHandler(sink)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)
    logging.getLogger("httpx").setLevel(logging.WARNING)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--launches", type=int, default=30, help="timed launches per provider")
    parser.add_argument("--warm-up", type=int, default=3, help="untimed launches first (the first is 'cold')")
    parser.add_argument("--tasks", type=int, default=30, help="tasks placed per failover scenario")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args(argv)
    if args.launches < 1 or args.warm_up < 1 or args.tasks < 1:
        parser.error("--launches, --warm-up and --tasks must be at least 1")
    isolated_aws_environment()
    started = time.monotonic()
    with (
        tempfile.TemporaryDirectory(prefix="fusionplane-bench-providers-") as tmp,
        open(os.devnull, "w") as sink,
    ):
        quiet_json_logging(sink)
        folder = Path(tmp)
        engine = make_engine(f"sqlite:///{folder / 'state.db'}")
        try:
            upgrade(engine=engine)
            store = Store(engine)
            with running_backends(folder) as backends:
                print(f"launch overhead ({args.launches} per provider)...", file=sys.stderr)
                launches = all_launches(backends, args.launches, args.warm_up)
                # from here on EC2 (through the proxy) has no capacity for anything
                backends.proxy.refuse("RunInstances", "InsufficientInstanceCapacity", status=500)
                failovers = []
                for scenario in scenarios(backends, store):
                    print(f"failover: {scenario.name} ({args.tasks} tasks)...", file=sys.stderr)
                    failovers.append(measure_failovers(backends, store, scenario, args.tasks))
        finally:
            engine.dispose()
        logging.getLogger().handlers[:] = []
    leftover = [t for t in threading.enumerate() if t is not threading.main_thread() and not t.daemon]
    if leftover:
        print(f"warning: threads still running: {[t.name for t in leftover]}", file=sys.stderr)
    print(f"bench took {time.monotonic() - started:.0f} s", file=sys.stderr)
    table = report(args, launches, failovers)
    print(table)
    if not args.no_write:
        write_section(
            "bench-providers",
            table,
            heading="## Providers (`make bench-providers`)\n\nTarget from the providers issue: a task whose "
            "first backend refuses for capacity is launched on the next candidate in under 5 s of control-plane "
            "time; the launch overhead of each provider (control-plane time from `launch()` to the resource "
            "requested) is measured against the no-op provider.\n\n",
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
