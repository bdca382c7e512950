"""plan() throughput: a policy with 50 rules and 8 targets, on one core.

Run with ``make bench-policy`` (or ``python -m bench.policy``). The tasks are
spread so that rules match at every depth (early, middle, late, none), with a
snapshot holding load and price signals for every target. Baseline in the
same process: the same loop with a one-rule, one-target policy, so the
ratio is the cost of the bigger policy.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from typing import Any

from bench.report import write_section
from controlplane.domain import (
    DataSensitivity,
    Priority,
    SignalSample,
    SignalSnapshot,
    Task,
    TaskKind,
    TaskSpec,
    TaskState,
)
from controlplane.policy import Policy, parse_policy, plan

NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
PROVIDERS = ["kubernetes", "kubernetes", "local", "aws", "aws", "azure", "azure", "aws"]
#: every target but the local one names a store, so the tasks' uploaded files reach all of them (staged) and
#: plan() checks each one in full, the data-plane guard included
STORES = {
    "kubernetes": {"uri": "pvc://fp-work/tasks/", "mount_path": "/mnt/work"},
    "aws": {"uri": "s3://fp-work/aws/"},
    "azure": {"uri": "az://fpwork/work/"},
}


def big_policy() -> Policy:
    return parse_policy(big_policy_document())


def big_policy_document(*, cloud_max_price: float = 0.5) -> dict[str, Any]:
    """The benchmark's policy as a document: 8 targets, 50 rules (bench.simulate varies the max price)."""
    targets = [
        {
            "name": f"t{i}",
            "provider": provider,
            "private": provider in ("kubernetes", "local"),
            "regions": ["us-east-1", "us-west-2"] if provider == "aws" else ["eastus"],
            "instance_types": ["g4dn.xlarge", "g5.xlarge"] if provider == "aws" else ["Standard_NC4as_T4_v3"],
            **({"max_price_usd_h": cloud_max_price} if provider in ("aws", "azure") else {}),
            **({"storage": STORES[provider]} if provider in STORES else {}),
        }
        for i, provider in enumerate(PROVIDERS)
    ]
    names = [t["name"] for t in targets]
    rules: list[dict[str, Any]] = []
    for i in range(50):
        rule: dict[str, Any] = {
            "name": f"r{i}",
            "match": {"tenant": f"tenant-{i}", "priority": ["high", "urgent"] if i % 2 else "normal"},
            "targets": [names[(i + k) % 8] for k in range(4)],
        }
        if i % 5 == 0:
            rule["when"] = {"peak": names[i % 8], "spot_price_under_budget": True}
        if i % 7 == 0:
            rule["hedge"] = 2
        if i % 3 == 0:
            rule["match"]["labels"] = {"campaign": "*"}
        rules.append(rule)
    return {"targets": targets, "rules": rules}


def small_policy() -> Policy:
    return parse_policy({"targets": [{"name": "local", "provider": "local", "private": True}]})


def snapshot(*, now: datetime = NOW, free_gpus: Callable[[int], float] = lambda i: float(i % 3)) -> SignalSnapshot:
    """Load and price signals for every target of the big policy, observed 5 s before ``now``.

    ``free_gpus(i)`` is target ``t<i>``'s free GPUs (by default 0, 1, 2 in turn).
    """
    samples: dict[str, SignalSample] = {}

    def add(source: str, key: str, value: float) -> None:
        samples[f"{source}/{key}"] = SignalSample(
            source=source, key=key, value=value, observed_at=now - timedelta(seconds=5), ttl_seconds=300
        )

    for i in range(8):
        add("gpu_utilization", f"t{i}", 0.5 + 0.06 * i)
        add("free_gpus", f"t{i}", free_gpus(i))
    for region in ("us-east-1", "us-west-2"):
        for instance_type in ("g4dn.xlarge", "g5.xlarge"):
            add("spot_price", f"aws/{region}/{instance_type}", 0.31)
    add("spot_price", "azure/eastus/Standard_NC4as_T4_v3", 0.42)
    add("queue", "depth", 40)
    return SignalSnapshot(taken_at=now, samples=samples)


def tasks(count: int) -> list[Task]:
    out = []
    for i in range(count):
        spec = TaskSpec(
            tenant=f"tenant-{(i * 7) % 60}",  # tenants 50..59 match no rule: the default rule
            kind=TaskKind.VIDEO,
            # uploaded files and the API's default local output, as most tasks arrive
            source_uri="/var/fp/inputs/acme/upl_1/face.png",
            target_uri=f"/var/fp/inputs/acme/upl_2/clip-{i}.mp4",
            output_uri=f"/var/fp/outputs/acme/out-{i}/swapped.mp4",
            priority=list(Priority)[i % 4],
            data_sensitivity=list(DataSensitivity)[i % 3],
            labels={"campaign": "x"} if i % 2 else {},
        )
        out.append(Task(id=f"tsk_{i}", spec=spec, state=TaskState.QUEUED, created_at=NOW, updated_at=NOW))
    return out


def rate(policy: Policy, work: list[Task], snap: SignalSnapshot) -> float:
    started = time.perf_counter()
    for task in work:
        plan(task, snap, policy, NOW)
    return len(work) / (time.perf_counter() - started)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--plans", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args(argv)
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})  # one core, as the target says
    big, small, snap, work = big_policy(), small_policy(), snapshot(), tasks(args.plans)
    rate(big, work[:1000], snap)  # warm-up
    big_rates, small_rates = [], []
    for _ in range(args.rounds):
        small_rates.append(rate(small, work, snap))
        big_rates.append(rate(big, work, snap))
    big_median, small_median = statistics.median(big_rates), statistics.median(small_rates)
    table = "\n".join(
        [
            f"Measured {date.today().isoformat()} on one core (pinned) of a {os.cpu_count()}-core machine, Python "
            f"{sys.version.split()[0]}; {args.plans} plans per round, median of {args.rounds} rounds. "
            "Command: `make bench-policy`.",
            "",
            "| policy | plans/s (median) | ratio to baseline |",
            "|---|---|---|",
            f"| 1 target, no rules (baseline) | {small_median:,.0f} | 1.00 |",
            f"| 8 targets, 50 rules (target: 20,000) | **{big_median:,.0f}** | {big_median / small_median:.2f} |",
        ]
    )
    print(table)
    if not args.no_write:
        write_section(
            "bench-policy",
            table,
            heading="## Policy engine (`make bench-policy`)\n\nTarget from the policy-engine issue: at least 20,000 "
            "plans/s on one core for a policy with 50 rules and 8 targets.\n\n",
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
