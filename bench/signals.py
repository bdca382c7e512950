"""Live signals: CPU per poll cycle, snapshot build time, and what the pollers cost the planner.

Run with ``make bench-signals`` (or ``python -m bench.signals``). Target from
the live-signals issue: with 20 targets and 50 (region, instance type)
pairs, the scheduler's planning rate drops by at most 5% while the pollers
run (at their default intervals).

Set-up: every backend on 127.0.0.1 in a separate process
(``bench.signal_backends``, pinned to the other core, so that answering
costs the bench nothing); a policy of 20 targets (8 kubernetes, one per node
pool of the emulated cluster; 6 aws and 6 azure with 25 (region, type) pairs
each); the real sources pointed at the backends, wired by the control
plane's own ``build_signal_hub`` (queue depth from a SQLite store with
2,000 queued tasks, every poll's samples written to the history table,
metrics on). The bench process is pinned to one core.

1. **Poll cost**: ``time.process_time()`` (all of this process's threads,
   the sources' worker threads included) and wall time around
   ``hub.poll_all(force=True)``, and around each source's ``hub.poll``;
   medians over ``--cycles`` cycles after two warm-up cycles.
2. **Snapshots**: ``hub.snapshot()`` and the scheduler's per-batch
   ``Scheduler.snapshot(policy)`` with ``signals=hub.samples``.
3. **Planning rate**: ``plan()`` on bench.policy's big policy, tasks and
   snapshot for ``--round-s`` seconds without pollers, then with every
   source polled on its own thread every ``--interval-s`` (far more often
   than the defaults), alternating ``--rounds`` times in this process.
   The drop at the default intervals is too small to measure directly in a
   few rounds, so it is computed from (1): the share of the one core the
   polls take, sum of CPU seconds per poll / interval.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import selectors
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from bench.policy import tasks as bench_tasks
from bench.report import write_section
from bench.signal_backends import (
    AWS_INSTANCE_TYPES,
    AWS_REGIONS,
    AZURE_REGIONS,
    AZURE_SIZES,
    GPU_TAINT,
    POOL_LABEL,
    POOLS,
    pool_target,
)
from bench.signal_measure import QUEUED_TASKS, WARM_UP_CYCLES, measure_planning, measure_polls, median_us, timed
from bench.signal_report import SignalsRun, report
from controlplane.metrics import Metrics
from controlplane.policy import parse_policy
from controlplane.runtime import standalone_scheduler
from controlplane.runtime.signals import DEFAULT_SCHEDULES, build_signal_hub
from controlplane.signals.aws_spot import AwsSpotPriceSource
from controlplane.signals.azure_spot import AzureSpotPriceSource
from controlplane.signals.base import SignalSource, wanted_from_targets
from controlplane.signals.hub import SignalHub
from controlplane.signals.kubernetes_capacity import KubernetesCapacitySource
from controlplane.signals.prometheus import PrometheusSource
from controlplane.store import NewTask, Store, make_engine, upgrade
from providers.noop import NoopProvider

REPO = Path(__file__).resolve().parent.parent
BACKENDS_START_TIMEOUT_S = 120.0
BACKENDS_STOP_TIMEOUT_S = 20.0
#: what each source's one poll reads, for the table (filled in from the backends' answer)
EXPECTED_SAMPLES = {"queue": 1, "prometheus": 16, "kubernetes": 8, "aws_spot": 25, "azure_spot": 25}


# ---- the policy --------------------------------------------------------------------------------


def signals_policy_document(kubeconfig: Path) -> dict[str, Any]:
    """20 targets: 8 kubernetes (one per node pool), 6 aws and 6 azure covering 25 pairs each, overlapping."""
    toleration = {"key": GPU_TAINT["key"], "operator": "Exists", "effect": "NoSchedule"}
    targets: list[dict[str, Any]] = []
    for pool in POOLS:
        tolerations = [toleration]
        if pool.taint:
            tolerations.append({**pool.taint, "operator": "Equal"})
        targets.append(
            {
                "name": pool_target(pool),
                "provider": "kubernetes",
                "private": True,
                "settings": {
                    "kubeconfig": str(kubeconfig),
                    "context": "bench",
                    "namespace": "fusionplane",
                    "node_selector": {POOL_LABEL: pool.name, "nvidia.com/gpu.product": pool.product},
                    "tolerations": tolerations,
                },
            }
        )
    # (name, regions, types): a few wide targets cover every pair, narrower ones repeat some (dedup is the hub's)
    r, t = AWS_REGIONS, AWS_INSTANCE_TYPES
    aws = [
        ("aws-us-east", ["us-east-1", "us-east-2"], list(t)),
        ("aws-us-west", ["us-west-2"], list(t)),
        ("aws-eu", ["eu-central-1", "eu-west-2"], list(t)),
        ("aws-us-east-g5", ["us-east-1"], ["g5.xlarge", "g5.2xlarge"]),
        ("aws-eu-g4dn", ["eu-west-2"], ["g4dn.xlarge"]),
        ("aws-burst", list(r), ["g5.xlarge"]),
    ]
    s = list(AZURE_SIZES)
    azure = [
        ("azure-us-east", ["eastus", "eastus2"], s),
        ("azure-us-west", ["westus2"], s),
        ("azure-eu", ["northeurope", "westeurope"], s),
        ("azure-us-east-t4", ["eastus"], ["Standard_NC4as_T4_v3", "Standard_NC8as_T4_v3"]),
        ("azure-eu-a100", ["westeurope"], ["Standard_NC24ads_A100_v4"]),
        ("azure-burst", list(AZURE_REGIONS), ["Standard_NC4as_T4_v3"]),
    ]
    for provider, specs in (("aws", aws), ("azure", azure)):
        for name, regions, types in specs:
            targets.append(
                {
                    "name": name,
                    "provider": provider,
                    "private": False,
                    "regions": regions,
                    "instance_types": types,
                    "max_price_usd_h": 2.5,
                }
            )
    return {"targets": targets}


def kubeconfig_for(path: Path, url: str) -> Path:
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "bench", "cluster": {"server": url}}],
        "contexts": [{"name": "bench", "context": {"cluster": "bench", "user": "bench"}}],
        "users": [{"name": "bench", "user": {"token": "not-checked-by-kmock"}}],
        "current-context": "bench",
    }
    path.write_text(json.dumps(config), encoding="utf-8")  # JSON is YAML to the kubeconfig loader
    return path


# ---- the backends process ----------------------------------------------------------------------


def start_backends(max_lifetime_s: float) -> subprocess.Popen[bytes]:
    # a session of its own: Ctrl-C on the terminal reaches only the bench, which then stops the
    # backends in order; and their process group (Prometheus included) can be killed as one if needed
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "bench.signal_backends",
            "--watch-stdin",
            "--max-lifetime-s",
            str(max_lifetime_s),
        ],
        cwd=REPO,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        start_new_session=True,
    )


def read_backends_line(proc: subprocess.Popen[bytes], timeout_s: float) -> dict[str, Any]:
    """The backends' one JSON line, within ``timeout_s``; RuntimeError if they exit or stay silent."""
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout_s
    buffer = b""
    with selectors.DefaultSelector() as selector:
        selector.register(proc.stdout, selectors.EVENT_READ)
        while b"\n" not in buffer:  # bounded by the deadline
            left = deadline - time.monotonic()
            if left <= 0:
                raise RuntimeError(f"the backends printed nothing in {timeout_s:.0f} s")
            if selector.select(timeout=min(left, 1.0)):
                chunk = os.read(proc.stdout.fileno(), 65536)
                if not chunk:
                    raise RuntimeError(f"the backends exited before they were ready (exit {proc.wait(5)})")
                buffer += chunk
    return dict(json.loads(buffer.split(b"\n", 1)[0]))


def stop_backends(proc: subprocess.Popen[bytes], prometheus_pid: int | None) -> None:
    """Stop the backends by PID: EOF and SIGTERM (they stop Prometheus themselves), then SIGKILL."""
    if proc.poll() is None:
        with contextlib.suppress(OSError):
            if proc.stdin is not None:
                proc.stdin.close()
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=BACKENDS_STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            # still alive, so the group is still theirs: kill it whole (Prometheus is in it)
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=BACKENDS_STOP_TIMEOUT_S)
    # a Prometheus that outlived its parent (the backends killed from outside): ours, by its PID
    if prometheus_pid is not None and _is_prometheus(prometheus_pid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(prometheus_pid, signal.SIGKILL)


def _is_prometheus(pid: int) -> bool:
    try:
        return b"prometheus" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


# ---- the run -----------------------------------------------------------------------------------


def isolated_aws_environment() -> None:
    """Dummy credentials for moto, and nothing of the developer's own AWS setup or proxies read."""
    for name in ("AWS_SESSION_TOKEN", "AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_EC2"):
        os.environ.pop(name, None)
    os.environ.update(
        AWS_ACCESS_KEY_ID="bench",
        AWS_SECRET_ACCESS_KEY="bench",
        AWS_CONFIG_FILE=os.devnull,
        AWS_SHARED_CREDENTIALS_FILE=os.devnull,
        AWS_EC2_METADATA_DISABLED="true",
        NO_PROXY="127.0.0.1,localhost",
        no_proxy="127.0.0.1,localhost",
    )


def pin_to_first_core() -> str:
    if not hasattr(os, "sched_setaffinity"):
        return "not pinned"
    core = min(os.sched_getaffinity(0))
    os.sched_setaffinity(0, {core})
    return f"core {core}"


@contextlib.contextmanager
def queued_store(folder: Path) -> Iterator[Store]:
    engine = make_engine(f"sqlite:///{folder / 'state.db'}")
    try:
        upgrade(engine=engine)
        store = Store(engine)
        specs = [task.spec for task in bench_tasks(QUEUED_TASKS)]
        store.create_tasks([NewTask(spec=spec, request_hash=f"h{i}") for i, spec in enumerate(specs)])
        yield store
    finally:
        engine.dispose()


def build_sources(backends: dict[str, Any]) -> list[SignalSource]:
    sources: list[SignalSource] = []
    if backends.get("prometheus"):
        sources.append(PrometheusSource(backends["prometheus"]))
    sources.append(KubernetesCapacitySource())
    sources.append(AwsSpotPriceSource(endpoint_url=backends["aws"]))
    sources.append(AzureSpotPriceSource(base_url=backends["azure"]))
    return sources


def check_sources(hub: SignalHub) -> list[str]:
    """What went wrong in the last poll of each source (the numbers are only worth what the polls read)."""
    counts: dict[str, int] = {}
    for key in hub.samples():
        source = {"gpu_utilization": "prometheus", "gpu_memory_used": "prometheus", "free_gpus": "kubernetes",
                  "queue": "queue"}.get(key.split("/", 1)[0])  # fmt: skip
        if source is None:  # spot_price/<cloud>/...
            source = "aws_spot" if key.startswith("spot_price/aws/") else "azure_spot"
        counts[source] = counts.get(source, 0) + 1
    notes = []
    for status in hub.status():
        if status.last_error:
            notes.append(f"{status.name}: failed: {status.last_error}")
        notes += [f"{status.name}: {problem}" for problem in status.problems]
        if counts.get(status.name, 0) != EXPECTED_SAMPLES[status.name]:
            notes.append(f"{status.name}: {counts.get(status.name, 0)} samples, {EXPECTED_SAMPLES[status.name]} wanted")
    return notes


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cycles", type=int, default=10, help="measured poll cycles")
    parser.add_argument("--snapshots", type=int, default=2_000)
    parser.add_argument("--rounds", type=int, default=12, help="planning rounds, each without and with pollers")
    parser.add_argument("--round-s", type=float, default=3.0)
    parser.add_argument("--interval-s", type=float, default=1.0, help="every poller's interval while measured")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args(argv)
    isolated_aws_environment()

    def terminate(signum: int, frame: Any) -> None:
        raise SystemExit(128 + signum)  # unwinds through the finally blocks below

    signal.signal(signal.SIGTERM, terminate)
    lifetime = 120 + args.cycles * 10 + args.rounds * (2 * args.round_s + 30)
    # the backends first, with every core allowed, so that they can pin themselves to the last one;
    # then this process to the first, before any thread is made here (threads inherit the mask)
    proc = start_backends(max_lifetime_s=lifetime)
    pinned = pin_to_first_core()
    backends: dict[str, Any] = {}
    hub: SignalHub | None = None
    try:
        backends = read_backends_line(proc, BACKENDS_START_TIMEOUT_S)
        print(f"backends ({backends['pinned']}): {json.dumps(backends)}", file=sys.stderr)
        with (
            tempfile.TemporaryDirectory(prefix="fusionplane-bench-signals-") as folder,
            queued_store(Path(folder)) as store,
        ):
            policy = parse_policy(
                signals_policy_document(kubeconfig_for(Path(folder) / "kubeconfig", backends["kubernetes"]))
            )
            wanted = wanted_from_targets(policy.targets)
            assert len(policy.targets) == 20, len(policy.targets)
            assert (len(wanted.aws_offers), len(wanted.azure_offers)) == (25, 25), wanted
            hub = signal_hub = build_signal_hub(
                store=store, policy=lambda: policy, metrics=Metrics.create(), sources=build_sources(backends)
            )
            cold = timed(lambda: signal_hub.poll_all(force=True))
            for _ in range(WARM_UP_CYCLES - 1):
                signal_hub.poll_all(force=True)
            for problem in check_sources(signal_hub):
                print(f"warning: {problem}", file=sys.stderr)
            print(f"poll cycles ({args.cycles})...", file=sys.stderr)
            cost = measure_polls(signal_hub, args.cycles)
            problems = check_sources(signal_hub)

            providers = {name: NoopProvider(name=name, record_calls=False) for name in ("kubernetes", "aws", "azure")}
            scheduler = standalone_scheduler(
                store=store,
                policy=lambda: policy,
                providers=providers,
                scheduler_id="bench",
                signals=signal_hub.samples,
            )
            samples = len(signal_hub.samples())
            hub_us = median_us(signal_hub.snapshot, args.snapshots)
            scheduler_us = median_us(lambda: scheduler.snapshot(policy), args.snapshots)

            print(f"planning rounds ({args.rounds} x 2 x {args.round_s:g} s)...", file=sys.stderr)
            rounds = measure_planning(signal_hub, args.rounds, args.round_s, args.interval_s)
            intervals = {name: schedule.interval_s for name, schedule in DEFAULT_SCHEDULES.items()}
            run = SignalsRun(
                args=args,
                pinned=pinned,
                backends=backends,
                policy=policy,
                cost=cost,
                cold=cold,
                samples=samples,
                hub_us=hub_us,
                scheduler_us=scheduler_us,
                rounds=rounds,
                problems=problems,
                intervals=intervals,
            )
            table = report(run)
    finally:
        if hub is not None:
            hub.close()
        stop_backends(proc, backends.get("prometheus_pid"))
    print(table)
    if not args.no_write:
        write_section(
            "bench-signals",
            table,
            heading="## Live signals (`make bench-signals`)\n\nTarget from the live-signals issue: poll cost (CPU "
            "time per poll cycle with 20 targets and 50 (region, instance type) pairs) and snapshot build time "
            "measured; the scheduler's planning rate must not drop by more than 5% while the pollers run.\n\n",
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
