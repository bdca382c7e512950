"""The shipped policy against every baseline, on the shipped launch day in miniature: it must not lose.

A baseline beats the policy when it delivers at least as many tasks within
their deadline at no higher cost per completed task, and is better in one
of the two (it dominates). The seed and private-only baselines spend less
by failing work; on-demand delivers by paying list price: none of them may
dominate. On top, the issue's own bar: half the on-demand cost per
completed task or less, nothing lost, no private task off a private target.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from simulator.scenario import load_scenario
from simulator.simulate import PolicyFile, simulate
from tests.support.sim import LAUNCH_DAY

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

#: about a thousand tasks: every priority, sensitivity and kind, the peak, the private outage
SCALE = 0.002


def dominates(baseline: dict[str, Any], policy: dict[str, Any]) -> bool:
    more_or_as_many = baseline["on_time"] >= policy["on_time"]
    as_cheap = baseline["usd_per_completed"] <= policy["usd_per_completed"]
    strictly = baseline["on_time"] > policy["on_time"] or baseline["usd_per_completed"] < policy["usd_per_completed"]
    return more_or_as_many and as_cheap and strictly


@pytest.fixture(scope="module")
def report() -> dict[str, dict[str, Any]]:
    scenario = load_scenario(LAUNCH_DAY).scaled(SCALE)
    fleet_path = scenario.path(scenario.policy or "")
    fleet = json.loads(Path(fleet_path).read_text(encoding="utf-8"))
    runs = simulate(
        scenario,
        [PolicyFile(name="shipped", document=fleet)],
        ["seed", "on-demand", "private-only", "static-cheapest"],
        fleet=fleet,
        jobs=2,
    )["runs"]
    return {run["name"]: run["summary"] for run in runs}


def test_no_baseline_dominates_the_shipped_policy(report: dict[str, dict[str, Any]]) -> None:
    policy = report["policy:shipped"]
    beaten_by = [name for name, summary in report.items() if name != "policy:shipped" and dominates(summary, policy)]
    assert beaten_by == [], {name: (s["on_time"], s["usd_per_completed"]) for name, s in report.items()}


def test_half_the_on_demand_cost_per_completed_task_nothing_lost_private_stays_home(
    report: dict[str, dict[str, Any]],
) -> None:
    policy, on_demand = report["policy:shipped"], report["baseline:on-demand"]
    assert policy["usd_per_completed"] <= 0.5 * on_demand["usd_per_completed"]
    assert policy["on_time"] >= on_demand["on_time"]
    assert policy["lost"] == policy["private_off_private"] == policy["unfinished"] == 0


def test_the_dominance_check_itself_can_fail() -> None:
    policy = {"on_time": 900, "usd_per_completed": 0.02}
    assert dominates({"on_time": 950, "usd_per_completed": 0.01}, policy)  # more on time and cheaper: beaten
    assert dominates({"on_time": 900, "usd_per_completed": 0.01}, policy)  # as many, cheaper: beaten
    assert not dominates({"on_time": 950, "usd_per_completed": 0.09}, policy)  # on-demand's trade
    assert not dominates({"on_time": 800, "usd_per_completed": 0.0}, policy)  # private-only's trade
    assert not dominates(dict(policy), policy)  # a tie is not a loss
