"""The simulator against counts made by hand from a real single-zone trace (docs/simulator.md, "Validation").

A backlog of equal image tasks (each 600 GPU-seconds, more work than the
three-hour window holds) on one zone of the measured us-east-1a availability trace, one
instance per trace unit, no launch latency, a constant spot price:

- greedy spot (every task may only go to that zone): the instance is lost at
  every 1 -> 0 step of the trace, so preemptions = the number of such steps
  in the window; it is held for at most the trace's available time, and for
  at least that minus one scheduler round per available stretch (the round
  that notices the capacity came back);
- on demand: every task runs at once, so the bill is tasks x 600 s x the
  on-demand price, exactly.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from controlplane.policy import parse_policy
from simulator.outcomes import summarize
from simulator.runner import RunSetup, run
from simulator.scenario import parse_scenario
from simulator.traces import SpotTrace, load_trace

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

TRACE = Path(__file__).resolve().parents[2] / "policies/scenarios/traces/aws-v100-availability-2023-02-15"
HOURS = 3
#: where the window starts in the trace: a stretch with several available stretches
OFFSET_HOURS = 752
TICK_S = 2.0
SPOT_USD_H, ON_DEMAND_USD_H = 0.918, 3.06
TASKS, WORK_S = 50, 600.0


def trace_counts(trace: SpotTrace) -> dict[str, float]:
    """Counted from the trace's values alone, over the window [start, end) in trace seconds: available
    seconds, available stretches, and 1 -> 0 steps at tick boundaries inside the window."""
    start, end = OFFSET_HOURS * 3600.0, (OFFSET_HOURS + HOURS) * 3600.0
    gap, values = trace.gap_seconds, trace.values
    first, last = int(start // gap), int((end - 1e-9) // gap)
    available = sum(min(end, (k + 1) * gap) - max(start, k * gap) for k in range(first, last + 1) if values[k] > 0)
    steps_down = sum(1 for k in range(first + 1, last + 1) if values[k - 1] > 0 and values[k] == 0)
    stretches = (values[first] > 0) + sum(1 for k in range(first + 1, last + 1) if values[k - 1] == 0 and values[k] > 0)
    return {"available_s": available, "stretches": stretches, "steps_down": steps_down}


def scenario() -> Any:
    return parse_scenario(
        {
            "name": "validation",
            "start": "2023-02-20T00:00:00Z",
            "duration_hours": HOURS,
            "drain_hours": 0,
            "seed": 1,
            "scheduling": {"tick_s": TICK_S, "idle_tick_s": TICK_S, "sample_s": 3600},
            "world": {
                "private": {"gpus": 1},
                "clouds": [
                    {
                        "provider": "aws",
                        "region": "us-east-1",
                        "zones": {"us-east-1a": "unused"},
                        "trace_offset_hours": OFFSET_HOURS,
                        "launch_latency": {"min_s": 0, "max_s": 0},
                    }
                ],
                "catalog_spot": {"aws": {"p3.2xlarge": SPOT_USD_H}},
                "on_demand": {"aws": {"p3.2xlarge": ON_DEMAND_USD_H}},
            },
            "workload": {
                # the whole backlog in the first seconds, then nothing
                "rate": [{"hours": 0.01, "per_hour": TASKS * 200}, {"hours": HOURS, "per_hour": 0}],
                "max_tasks": TASKS,
                "mix": {"data_sensitivity": {"public": 1}},
                "work": {"image": {"min_s": WORK_S, "max_s": WORK_S}},
                "output_uri": "s3://fp-out/{tenant}/{n}.png",
            },
        }
    )


POLICY = parse_policy(
    {
        "targets": [
            {
                "name": "spot",
                "provider": "aws",
                "private": False,
                "regions": ["us-east-1"],
                "instance_types": ["p3.2xlarge"],
            }
        ],
        "rules": [{"name": "spot-only", "targets": ["spot"]}],
        "thresholds": {"max_attempts": 50, "max_queue_seconds": 86400},
    }
)


def simulate(tmp_path: Path, mode: str) -> tuple[Any, dict[str, Any], SpotTrace]:
    trace = load_trace(TRACE / "us-east-1a_v100_1.json")
    # greedy: no signals at all (no breaker to hold launches back after preemptions), as static-cheapest
    setup = RunSetup(name=f"check:{mode}", kind="baseline", policy=POLICY, mode=mode, live_signals=False)  # type: ignore[arg-type]
    outcome = run(
        scenario(), setup, traces={("aws", "us-east-1"): {"us-east-1a": trace}}, history=None, workdir=tmp_path
    )
    return outcome, summarize(outcome), trace


def test_greedy_spot_matches_the_counts_of_the_trace(tmp_path: Path) -> None:
    _outcome, summary, trace = simulate(tmp_path, "spot")
    counts = trace_counts(trace)
    assert counts["steps_down"] >= 2, "the window must hold preemptions to check"
    assert summary["preemptions"] == counts["steps_down"]
    held_s = summary["spend_by_target"]["spot"] / SPOT_USD_H * 3600
    assert counts["available_s"] - counts["stretches"] * (TICK_S + 1) <= held_s <= counts["available_s"] + 0.01
    assert summary["lost"] == 0


def test_on_demand_bills_every_task_once_at_the_on_demand_price(tmp_path: Path) -> None:
    _outcome, summary, _trace = simulate(tmp_path, "on_demand")
    assert summary["completed"] == TASKS
    assert summary["preemptions"] == 0
    assert summary["usd_total"] == pytest.approx(TASKS * WORK_S * ON_DEMAND_USD_H / 3600, abs=1e-3)
