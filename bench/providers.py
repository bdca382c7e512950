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
import contextlib
import logging
import math
import os
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

from bench.report import write_section
from bench.signals import isolated_aws_environment, machine
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
from providers.base import Capacity, LaunchRequest, LaunchResult, Provider, Quote

COMMAND = "make bench-providers"
REGION = "us-east-1"
AWS_TYPE = "g4dn.xlarge"
AZURE_REGION = "eastus"
NAMESPACE = "fusionplane"
#: the issue's bound on one failover, in seconds of control-plane time
FAILOVER_TARGET_S = 5.0


# ---- a provider with a clock ---------------------------------------------------------------------


@dataclass(frozen=True)
class Call:
    """One ``launch()`` seen by a :class:`Clocked` provider."""

    attempt_id: str
    task_id: str
    target: str
    started: float  # perf_counter at the call
    ended: float  # perf_counter at the return or the raise
    cpu_started: float  # thread_time at the call
    cpu_ended: float  # thread_time at the return or the raise
    error: str | None  # the taxonomy code when it raised


class Clocked:
    """Delegates to a provider and notes each ``launch()``'s start and end (the scheduler sees no difference)."""

    def __init__(self, inner: Any, calls: list[Call]) -> None:
        self.inner, self.calls = inner, calls
        self.name: str = inner.name

    def launch(self, request: LaunchRequest) -> LaunchResult:
        started, cpu = time.perf_counter(), time.thread_time()
        error: str | None = None
        try:
            return self.inner.launch(request)  # type: ignore[no-any-return]
        except Exception as exc:
            error = getattr(exc, "code", type(exc).__name__)
            raise
        finally:
            ended, cpu_ended = time.perf_counter(), time.thread_time()
            self.calls.append(
                Call(
                    request.attempt_id, request.task_id, request.candidate.target, started, ended, cpu, cpu_ended, error
                )
            )

    def capacity(self, target: Target) -> Capacity:
        return self.inner.capacity(target)  # type: ignore[no-any-return]

    def quote(self, candidate: Candidate) -> Quote:
        return self.inner.quote(candidate)  # type: ignore[no-any-return]

    def __getattr__(self, name: str) -> Any:  # status, cancel, list_owned
        return getattr(self.inner, name)


# ---- the backends --------------------------------------------------------------------------------


@dataclass
class Backends:
    folder: Path
    moto_url: str
    proxy: Any  # tests.contract.test_aws_provider._Ec2Proxy
    arm: Any  # tests.fakes.azure_arm.FakeAzureArm
    cluster: Any  # tests.support.kmock_cluster.KmockCluster
    policy: Policy
    #: provider name -> provider, plus "aws-proxy": the EC2 provider whose calls go through the proxy
    providers: dict[str, Any] = field(default_factory=dict)


def bench_policy(subnets: Sequence[str], security_group: str) -> Policy:
    """One target per backend (and two for the no-op baseline); each scenario's rule orders a few of them."""
    from tests.contract.test_aws_provider import AMI, PROFILE
    from tests.contract.test_azure_provider import SETTINGS as AZURE_SETTINGS
    from tests.contract.test_azure_provider import SIZE

    return parse_policy(
        {
            "targets": [
                {
                    "name": "aws-spot",
                    "provider": "aws",
                    "private": False,
                    "regions": [REGION],
                    "instance_types": [AWS_TYPE],
                    "max_price_usd_h": 0.6,
                    "settings": {
                        "image_id": AMI,
                        "subnet_ids": list(subnets),
                        "security_group_ids": [security_group],
                        "iam_instance_profile": PROFILE,
                    },
                },
                {
                    "name": "azure-eastus",
                    "provider": "azure",
                    "private": False,
                    "regions": [AZURE_REGION],
                    "instance_types": [SIZE],
                    "max_price_usd_h": 0.42,
                    "settings": AZURE_SETTINGS,
                },
                {"name": "onprem", "provider": "kubernetes", "private": True, "settings": {"namespace": NAMESPACE}},
                {"name": "local", "provider": "local", "private": True, "settings": {"slots": 2}},
                # the baseline's two targets: a provider name the no-op provider stands in for
                {"name": "noop-first", "provider": "kubernetes", "private": True},
                {"name": "noop-second", "provider": "kubernetes", "private": True},
            ],
            "rules": [{"name": "default", "targets": ["aws-spot", "azure-eastus", "onprem", "local"]}],
        }
    )


@contextlib.contextmanager
def running_backends(folder: Path) -> Iterator[Backends]:
    """Every server started here is stopped on the way out, and every local worker cancelled."""
    import boto3
    from moto.server import ThreadedMotoServer

    from providers.aws import AwsSpotProvider
    from providers.bootstrap import WorkerImage
    from providers.kubernetes import KubernetesProvider
    from providers.local import LocalProvider
    from providers.noop import NoopProvider
    from tests.contract.test_aws_provider import IMAGE, PROFILE, _Ec2Proxy, ec2
    from tests.contract.test_azure_provider import new_provider
    from tests.fakes.azure_arm import FakeAzureArm
    from tests.support.kmock_cluster import KmockCluster, api_client
    from tests.support.loopback import serving

    with contextlib.ExitStack() as stack:
        moto = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        moto.start()

        @stack.callback
        def _stop_moto() -> None:
            moto.stop()
            if moto._server is not None:  # stop() leaves the listening socket open
                moto._server.server_close()

        host, port = moto.get_host_and_port()
        moto_url = f"http://{host}:{port}"
        client = ec2(moto_url, REGION)
        subnets = sorted(client.describe_subnets()["Subnets"], key=lambda s: s["AvailabilityZone"])[:2]
        group = client.describe_security_groups(GroupNames=["default"])["SecurityGroups"][0]["GroupId"]
        boto3.client("iam", region_name=REGION, endpoint_url=moto_url).create_instance_profile(
            InstanceProfileName=PROFILE
        )
        policy = bench_policy([s["SubnetId"] for s in subnets], group)

        proxy = stack.enter_context(serving(_Ec2Proxy(moto_url)))
        arm = stack.enter_context(FakeAzureArm(cert_dir=folder / "arm-tls"))
        cluster = stack.enter_context(KmockCluster())
        kube_client = api_client(cluster.url)
        stack.callback(kube_client.close)

        def targets() -> tuple[Target, ...]:
            return policy.targets

        owner = f"bench-{os.getpid()}"
        aws = AwsSpotProvider(targets, image=IMAGE, owner=owner, endpoint_url=moto_url)
        aws_proxy = AwsSpotProvider(targets, image=IMAGE, owner=owner + "-p", endpoint_url=proxy.url)
        azure = new_provider(arm, targets)
        kubernetes = KubernetesProvider(
            targets,
            image=WorkerImage(image="fusionplane-worker:bench-gpu"),
            owner=owner,
            api_client_for=lambda _target: kube_client,
        )
        # a worker that waits to be cancelled ("--spec PATH" lands in $0 and $1)
        local = LocalProvider(folder / "local-state", 2, ["sh", "-c", "exec sleep 120"], term_grace_seconds=5.0)
        for closing in (aws, aws_proxy, azure):
            stack.callback(closing.close)

        @stack.callback
        def _stop_local_workers() -> None:
            for owned in local.list_owned():
                with contextlib.suppress(Exception):  # best effort on the way out; the rest still stop
                    local.cancel(owned.attempt_id)

        yield Backends(
            folder=folder,
            moto_url=moto_url,
            proxy=proxy,
            arm=arm,
            cluster=cluster,
            policy=policy,
            providers={
                "noop": NoopProvider(name="kubernetes", record_calls=False),
                "aws": aws,
                "aws-proxy": aws_proxy,
                "azure": azure,
                "kubernetes": kubernetes,
                "local": local,
            },
        )


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


@dataclass
class Launches:
    provider: str
    backend: str
    cold_wall_s: float
    cold_cpu_s: float
    wall_s: list[float]
    cpu_s: list[float]
    process_cpu_s: list[float]


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
