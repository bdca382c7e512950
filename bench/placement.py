"""Placement against the baselines: every shipped scenario, the shipped policy and every baseline, and issue 17's bars.

Run: ``make bench-placement`` (``FUSIONPLANE_BENCH_SCALE``, default 0.01:
rates, private GPUs and spot capacity times this). For each scenario it
prints one row per run (tasks done within their deadline, completed, dollars
per completed task, its ratio to the seed and to on-demand, the SLA per
priority, lost, private tasks off private targets) and then each bar of the
issue with its figure and whether it holds. The numbers go to
docs/performance.md ("Placement against the baselines") with the machine
and the date.
"""

from __future__ import annotations

import json
import os
import platform
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from simulator.scenario import load_scenario
from simulator.simulate import PolicyFile, simulate

SCENARIOS = ("launch-day", "spot-drought", "price-spike")
ROOT = Path(__file__).resolve().parents[1] / "policies" / "scenarios"
BASELINES = ["seed", "on-demand", "private-only", "static-cheapest", "bound"]


def _row(name: str, s: dict[str, Any], seed: float, on_demand: float) -> str:
    usd = s["usd_per_completed"]
    sla = s["sla"]

    def ratio(base: float) -> str:
        return f"{usd / base:.2f}" if base else "-"

    return (
        f"| {name} | {s['on_time']:,} | {s['completed']:,} | ${usd:.5f} | {ratio(seed)} | {ratio(on_demand)} | "
        f"{sla.get('urgent', 0):.1%} | {sla.get('high', 0):.1%} | {sla.get('normal', 0):.1%} | "
        f"{sla.get('low', 0):.1%} | {s['lost']} | {s['private_off_private']} |"
    )


def _bars(runs: dict[str, dict[str, Any]], bound_usd: float) -> list[str]:
    policy = next(s for n, s in runs.items() if n.startswith("policy:"))
    seed, on_demand = runs["baseline:seed"], runs["baseline:on-demand"]
    usd, total = policy["usd_per_completed"], policy["usd_total"]
    checks = [
        (f"$/done <= 85% of seed: {usd / seed['usd_per_completed']:.2f}x", usd <= 0.85 * seed["usd_per_completed"]),
        (
            f"$/done <= 50% of on-demand: {usd / on_demand['usd_per_completed']:.2f}x",
            usd <= 0.5 * on_demand["usd_per_completed"],
        ),
        (f"urgent SLA >= 99.9%: {policy['sla'].get('urgent', 0):.1%}", policy["sla"].get("urgent", 0) >= 0.999),
        (f"normal SLA >= 99%: {policy['sla'].get('normal', 0):.1%}", policy["sla"].get("normal", 0) >= 0.99),
        ("lost 0, private off private 0", policy["lost"] == 0 and policy["private_off_private"] == 0),
        (f"within 15% of the offline bound (${bound_usd:.2f}): ${total:.2f}", total <= 1.15 * bound_usd),
    ]
    return [f"- {'met' if ok else 'NOT met'}: {text}" for text, ok in checks]


def main() -> None:
    scale = float(os.environ.get("FUSIONPLANE_BENCH_SCALE", "0.01"))
    print(
        f"# placement against the baselines, scale {scale}, {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} CPUs, {datetime.now(UTC):%Y-%m-%d}"
    )
    for name in SCENARIOS:
        scenario = load_scenario(ROOT / f"{name}.json").scaled(scale)
        fleet = json.loads(scenario.path(scenario.policy or "").read_text(encoding="utf-8"))
        began = time.perf_counter()
        report = simulate(
            scenario, [PolicyFile(name="shipped", document=fleet)], BASELINES, fleet=fleet, jobs=os.cpu_count() or 1
        )
        runs = {run["name"]: run["summary"] for run in report["runs"]}
        bound = runs.pop("bound:offline")
        seed, od = runs["baseline:seed"]["usd_per_completed"], runs["baseline:on-demand"]["usd_per_completed"]
        print(f"\n## {name} ({time.perf_counter() - began:.0f} s)\n")
        print(
            "| run | on time | completed | $/completed | x seed | x on-demand | urgent | high | normal | low "
            "| lost | private off |"
        )
        print("|---|---|---|---|---|---|---|---|---|---|---|---|")
        for run, summary in runs.items():
            print(_row(run, summary, seed, od))
        print()
        print("\n".join(_bars(runs, bound["usd_total"])))


if __name__ == "__main__":
    main()
