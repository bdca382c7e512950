"""``fusionctl policy simulate`` over 100,000 recorded decisions (target: under 30 s).

Run with ``make bench-simulate`` (or ``python -m bench.simulate``). Set-up,
not timed: a fresh SQLite database, 100,000 tasks spread over the bench
policy's 50 rules (bench/policy.py), placed by the real scheduler with a
snapshot holding load, capacity and spot prices, so every receipt has its
batch's stored snapshot. Timed: the CLI command itself (read, rebuild each
task and snapshot, plan, compare), with a candidate policy whose lower cloud
max price moves part of the traffic. Baseline in the same process: only
streaming the same recorded decisions out of the store, so the ratio is what
replanning adds to reading.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

from click.testing import CliRunner

from bench.policy import big_policy, big_policy_document
from bench.policy import snapshot as bench_snapshot
from bench.policy import tasks as bench_tasks
from bench.report import write_section
from controlplane.cli.policy import policy as policy_cli
from controlplane.domain import SignalSnapshot
from controlplane.policy import Policy
from controlplane.policy_sources import PolicySet
from controlplane.scheduler import Scheduler
from controlplane.store import NewTask, Store, make_engine, upgrade
from providers.noop import NoopProvider


class _Snapshotting(Scheduler):
    """The real scheduler; its snapshot is the bench's signals, observed as it plans."""

    def snapshot(self, policy: Policy | PolicySet) -> SignalSnapshot:
        # room for every task: since queueing (issue 13) a batch never over-books free slots and a
        # task with no room waits; with a frozen snapshot the waiting tasks would be woken and
        # re-planned every batch, so a few free GPUs turned the set-up quadratic (hours, not
        # seconds) while recording nothing more
        return bench_snapshot(now=self.clock(), free_gpus=lambda i: float(1_000_000 * (1 + i % 3)))


def record(store: Store, count: int) -> float:
    """Submit and place ``count`` tasks; returns seconds taken."""
    started = time.perf_counter()
    specs = [task.spec for task in bench_tasks(count)]
    for offset in range(0, count, 1000):
        store.create_tasks(
            [NewTask(spec=spec, request_hash=f"h{offset + i}") for i, spec in enumerate(specs[offset : offset + 1000])]
        )
    policy = big_policy()
    providers = {name: NoopProvider(name=name, record_calls=False) for name in ("kubernetes", "local", "aws", "azure")}
    scheduler = _Snapshotting(
        store=store,
        policy=lambda: policy,
        providers=providers,
        callback_base="http://127.0.0.1:1",
        checkpoint_root=None,
        scheduler_id="bench",
        batch_size=256,
    )
    while scheduler.place_batch():
        pass
    return time.perf_counter() - started


def read_only(store: Store) -> float:
    started = time.perf_counter()
    for _ in store.recorded_decisions():
        pass
    return time.perf_counter() - started


def replay(candidate: Path, url: str) -> tuple[float, dict[str, object]]:
    started = time.perf_counter()
    result = CliRunner().invoke(
        policy_cli,
        ["simulate", str(candidate), "--output", "json"],
        env={"FUSIONPLANE_DATABASE_URL": url},
        catch_exceptions=False,
    )
    seconds = time.perf_counter() - started
    if result.exit_code != 0:
        raise SystemExit(f"simulate failed: {result.output}")
    return seconds, json.loads(result.output)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--decisions", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="fusionplane-bench-simulate-") as folder:
        url = f"sqlite:///{Path(folder) / 'state.db'}"
        engine = make_engine(url)
        upgrade(engine=engine)
        store = Store(engine)
        setup_s = record(store, args.decisions)
        candidate = Path(folder) / "candidate.json"
        candidate.write_text(json.dumps(big_policy_document(cloud_max_price=0.35)), encoding="utf-8")
        reads, replays = [], []
        report: dict[str, object] = {}
        for _ in range(args.rounds):
            reads.append(read_only(store))
            seconds, report = replay(candidate, url)
            replays.append(seconds)
        engine.dispose()
    read_median, replay_median = statistics.median(reads), statistics.median(replays)
    print(f"set-up (submit + place {args.decisions}): {setup_s:.1f} s", file=sys.stderr)
    table = "\n".join(
        [
            f"Measured {date.today().isoformat()} on a {os.cpu_count()}-core machine (shared), Python "
            f"{sys.version.split()[0]}, SQLite; {args.decisions:,} recorded decisions (50 rules, 8 targets), "
            f"median of {args.rounds} rounds. Command: `make bench-simulate`.",
            "",
            "| run | seconds (median) | decisions/s | ratio to baseline |",
            "|---|---|---|---|",
            f"| stream the recorded decisions (baseline) | {read_median:.1f} | "
            f"{args.decisions / read_median:,.0f} | 1.00 |",
            f"| `policy simulate` (target: under 30 s) | **{replay_median:.1f}** | "
            f"{args.decisions / replay_median:,.0f} | {replay_median / read_median:.2f} |",
            "",
            f"The candidate policy changed {report.get('changed'):,} of {report.get('replayed'):,} placements.",
        ]
    )
    print(table)
    if not args.no_write:
        write_section(
            "bench-simulate",
            table,
            heading="## Policy replay (`make bench-simulate`)\n\nTarget from the policy-engine issue: "
            "`policy simulate` replays 100,000 recorded decisions in under 30 s.\n\n",
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
