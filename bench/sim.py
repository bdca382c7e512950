"""``make bench-sim``: how fast the simulator runs a launch day, and whether a seed gives the same report twice.

The figures issue 16 names: a simulated launch day of 500,000 tasks in under
10 minutes on a 2-core machine, 100,000 in under 2, and byte-identical JSON
for the same scenario and seed. The launch-day scenario
(policies/scenarios/launch-day.json) is run with its own policy, no
baselines, at the scales given (``--scales``; the scenario's arrival rates,
private GPUs and spot capacity times the scale), each twice with the same
seed: wall time, simulated tasks per wall second, and the sha256 of the JSON.
The baseline, in the same process: the same number of tasks stored and placed
by the same scheduler on the no-op provider (no world, no clock, no follow),
the product's bare placement rate, so the ratio says what the rest of a
task's simulated life costs.
"""

from __future__ import annotations

import argparse
import hashlib
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from bench.report import machine, write_section
from controlplane.domain import TaskKind, TaskSpec
from controlplane.policy import parse_policy
from controlplane.runtime import standalone_scheduler
from controlplane.store import Store, make_engine, upgrade
from providers.noop import NoopProvider
from simulator.scenario import load_scenario
from simulator.simulate import PolicyFile, report_json, simulate

SCENARIO = Path(__file__).resolve().parent.parent / "policies" / "scenarios" / "launch-day.json"


def sim_once(scale: float) -> tuple[float, int, str, int]:
    """Wall seconds, tasks, the report's sha256 and the plans made, for one run of the launch day at ``scale``."""
    scenario = load_scenario(SCENARIO).scaled(scale)
    fleet = PolicyFile(name="launch-day-fleet", document=_fleet(scenario))
    began = time.perf_counter()
    report = simulate(scenario, [fleet], [], fleet=fleet.document)
    wall = time.perf_counter() - began
    text = report_json(report)
    plans = int(report["runs"][0]["summary"]["plans"])
    return wall, int(report["scenario"]["tasks"]), hashlib.sha256(text.encode()).hexdigest(), plans


def _fleet(scenario: object) -> dict[str, object]:
    import json

    path = SCENARIO.parent / "launch-day-fleet.json"
    document: dict[str, object] = json.loads(path.read_text(encoding="utf-8"))
    return document


def placement_baseline(tasks: int) -> float:
    """Tasks per second stored then placed by the product's scheduler on the no-op provider."""
    policy = parse_policy(
        {
            "targets": [{"name": "noop", "provider": "kubernetes", "private": True}],
            "rules": [{"name": "all", "targets": ["noop"]}],
        }
    )
    with tempfile.TemporaryDirectory() as folder:
        engine = make_engine(f"sqlite:///{folder}/bench.db")
        upgrade(engine=engine)
        store = Store(engine)
        scheduler = standalone_scheduler(
            store=store,
            policy=policy,
            providers={"kubernetes": NoopProvider(name="kubernetes", record_calls=False)},
            batch_size=64,
        )
        began = time.perf_counter()
        for n in range(tasks):
            store.create_task(
                spec=TaskSpec(
                    tenant="acme",
                    kind=TaskKind.IMAGE,
                    source_uri="https://media.example/a.png",
                    target_uri="https://media.example/b.png",
                    output_uri="s3://out/o.png",
                ),
                request_hash=f"b{n}",
            )
        while scheduler.place_batch():
            pass
        rate = tasks / (time.perf_counter() - began)
        engine.dispose()
    return rate


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--scales", default="0.005,0.01,0.05", help="comma-separated scales of the launch day")
    parser.add_argument("--no-write", action="store_true", help="print, do not write docs/performance.md")
    parser.add_argument(
        "--runs", type=int, default=2, choices=(1, 2), help="runs per scale (1: no determinism check, e.g. at 0.2)"
    )
    args = parser.parse_args(argv)
    rows = []
    for scale in (float(s) for s in args.scales.split(",")):
        runs = []
        for attempt in range(1, args.runs + 1):
            print(
                f"bench.sim: launch day at scale {scale:g}, run {attempt}/{args.runs} ...", file=sys.stderr, flush=True
            )
            runs.append(sim_once(scale))
        tasks = runs[0][1]
        wall = statistics.median(run[0] for run in runs)
        print(f"bench.sim: placement baseline, {tasks} tasks ...", file=sys.stderr, flush=True)
        baseline = placement_baseline(tasks)
        rate = tasks / wall
        rows.append(
            f"| {scale:g} | {tasks:,} | {runs[0][3] / tasks:.1f} | {wall:.1f} | {rate:,.0f} | {baseline:,.0f} "
            f"| {rate / baseline:.3f} "
            f"| {100_000 / rate / 60:.1f} | {500_000 / rate / 60:.1f} | {_same(runs)} "
            f"| {', '.join(f'{run[0]:.1f}' for run in runs)} |"
        )
    table = "\n".join(
        [
            f"Measured {datetime.now(UTC):%Y-%m-%d} on a {machine()}, Python {sys.version.split()[0]}; "
            "the launch-day scenario with its own policy, no baselines, each scale run twice with the same seed "
            "(median wall time); baseline: the same number of tasks stored and placed on the no-op provider, same "
            "process. Command: `make bench-sim`.",
            "",
            "| scale | tasks | plans per task | wall s | simulated tasks/s | baseline: stored+placed tasks/s | ratio | "
            "100,000 tasks would take, min | 500,000 tasks would take, min | same JSON twice | runs, s |",
            "|---|---|---|---|---|---|---|---|---|---|---|",
            *rows,
        ]
    )
    print(table)
    if not args.no_write:
        write_section("bench-sim", table, heading="## Simulator (`make bench-sim`)\n\n")


def _same(runs: list[tuple[float, int, str, int]]) -> str:
    if len(runs) < 2:
        return "not run"
    return "yes" if runs[0][2] == runs[1][2] else "NO"


if __name__ == "__main__":
    main()
