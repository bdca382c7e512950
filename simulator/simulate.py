"""``fusionctl sim run``: load a scenario's world, run each policy and baseline, and put the report together.

The report is one JSON-able document (``-o json`` prints it; ``--report``
renders it as an HTML page): the scenario, then one entry per run with its
summary (:mod:`simulator.outcomes`) and its series over simulated time, then
the offline bound. Everything in it is a function of the scenario, the
policies and the seed, rounded, in a fixed order: the same inputs give
byte-identical JSON (wall-clock timings are kept out of it on purpose).
"""

from __future__ import annotations

import functools
import json
import multiprocessing
import tempfile
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from controlplane.domain import DataSensitivity
from controlplane.policy import Policy, parse_policy
from simulator.baselines import baseline_setups, offline_bound
from simulator.markets import PriceHistory, TraceLike
from simulator.outcomes import summarize
from simulator.prices import load_price_series
from simulator.runner import RunOutcome, RunSetup, run
from simulator.scenario import Scenario, ScenarioError
from simulator.traces import load_trace
from simulator.workload import arrivals

__all__ = ["PolicyFile", "simulate"]


@dataclass(frozen=True)
class PolicyFile:
    """A policy to compare: its name in the report and its document."""

    name: str
    document: Mapping[str, Any]


def load_world_inputs(scenario: Scenario) -> tuple[dict[tuple[str, str], dict[str, TraceLike]], PriceHistory | None]:
    """The zone traces of every cloud market, and the price history, read once for every run."""
    traces: dict[tuple[str, str], dict[str, TraceLike]] = {}
    for index, cloud in enumerate(scenario.world.clouds):
        zones: dict[str, TraceLike] = {}
        for zone, relative in cloud.zones.items():
            try:
                zones[zone] = load_trace(scenario.path(relative), reading=cloud.trace_reading, name=zone)
            except (OSError, ValueError) as exc:
                raise ScenarioError(f"world.clouds[{index}].zones.{zone}: {exc}") from None
        traces[(cloud.provider, cloud.region)] = zones
    history: PriceHistory | None = None
    if scenario.world.prices is not None:
        try:
            history = load_price_series(scenario.path(scenario.world.prices))
        except (OSError, ValueError) as exc:
            raise ScenarioError(f"world.prices: {exc}") from None
    return traces, history


def policy_of(item: PolicyFile) -> Policy:
    try:
        return parse_policy(item.document)
    except ValueError as exc:
        raise ScenarioError(f"policy {item.name}: {exc}") from None


def simulate(
    scenario: Scenario,
    policies: Sequence[PolicyFile],
    baselines: Sequence[str],
    *,
    fleet: Mapping[str, Any],
    progress: Callable[[str, float], None] | None = None,
    workdir: Path | None = None,
    jobs: int = 1,
) -> dict[str, Any]:
    """Every run of the comparison, and the report document.

    With ``jobs`` above 1 the runs go to that many worker processes (each
    run is independent: its own store, world and clock, seeded the same);
    the report is the same, byte for byte, whatever ``jobs`` is. ``progress``
    must then be a module-level function (it is sent to the workers).
    """
    setups = [RunSetup(name=f"policy:{p.name}", kind="policy", policy=policy_of(p)) for p in policies]
    setups += baseline_setups(scenario, fleet, baselines)
    traces, history = load_world_inputs(scenario)
    with tempfile.TemporaryDirectory(prefix="fusionplane-sim-") as scratch:
        folder = workdir or Path(scratch)
        one = functools.partial(_run_one, scenario, traces=traces, history=history, workdir=folder, progress=progress)
        if jobs > 1 and len(setups) > 1:
            # spawn, not fork: a fresh interpreter per worker, nothing inherited half-initialised
            context = multiprocessing.get_context("spawn")
            with ProcessPoolExecutor(max_workers=min(jobs, len(setups)), mp_context=context) as pool:
                runs = list(pool.map(one, setups))
        else:
            runs = [one(setup) for setup in setups]
    if "bound" in baselines:
        runs.append(_bound(scenario, traces, history))
    return {"scenario": _scenario_facts(scenario), "runs": runs}


def _run_one(
    scenario: Scenario,
    setup: RunSetup,
    *,
    traces: dict[tuple[str, str], dict[str, TraceLike]],
    history: PriceHistory | None,
    workdir: Path,
    progress: Callable[[str, float], None] | None,
) -> dict[str, Any]:
    """One run and its report entry (in this process or a worker's)."""
    outcome = run(scenario, setup, traces=traces, history=history, workdir=workdir, progress=progress)
    try:
        return _entry(outcome)
    finally:
        outcome.store.engine.dispose()


def _entry(outcome: RunOutcome) -> dict[str, Any]:
    series = outcome.series
    return {
        "name": outcome.setup.name,
        "kind": outcome.setup.kind,
        "summary": summarize(outcome),
        "series": {
            "t_s": series.t_s,
            "queue_depth": series.queue_depth,
            "gpus_in_use": dict(sorted(series.gpus_in_use.items())),
            "spend_usd_per_h": series.spend_usd_per_h,
            "sla_misses": series.sla_misses,
        },
    }


def _scenario_facts(scenario: Scenario) -> dict[str, Any]:
    return {
        "name": scenario.name,
        "description": scenario.description,
        "seed": scenario.seed,
        "start": scenario.start.isoformat().replace("+00:00", "Z"),
        "duration_s": scenario.end_s,
        "tasks": sum(1 for _ in arrivals(scenario.workload, seed=scenario.seed, until_s=scenario.end_s)),
    }


def _bound(
    scenario: Scenario, traces: Mapping[tuple[str, str], Mapping[str, TraceLike]], history: PriceHistory | None
) -> dict[str, Any]:
    private_s = public_s = 0.0
    for arrival in arrivals(scenario.workload, seed=scenario.seed, until_s=scenario.end_s):
        if arrival.spec.data_sensitivity == DataSensitivity.PRIVATE:
            private_s += arrival.work_s
        else:
            public_s += arrival.work_s
    horizon = scenario.end_s + scenario.drain_hours * 3600.0
    bound = offline_bound(
        private_gpus=scenario.world.private.gpus,
        horizon_s=horizon,
        private_work_s=private_s,
        public_work_s=public_s,
        cheapest_usd_h=_cheapest(scenario, history, horizon),
        private_usd_gpu_h=scenario.world.private.usd_per_gpu_hour,
    )
    return {"name": "bound:offline", "kind": "bound", "summary": bound, "series": None}


def _cheapest(scenario: Scenario, history: PriceHistory | None, horizon_s: float) -> float | None:
    """The lowest spot price any market offered during the run (history, else catalog)."""
    from simulator.markets import PriceBook  # local: only the bound needs a price book of its own

    book = PriceBook(scenario.world, history, mode="spot", at=lambda offset: _at(scenario, offset))
    found: list[float] = []
    for cloud in scenario.world.clouds:
        types = set(scenario.world.catalog_spot.get(cloud.provider, {})) | set(cloud.speed)
        for instance_type in sorted(types):
            for zone in [*cloud.zones, None]:
                t = 0.0
                while t <= horizon_s:
                    price = book.hourly(cloud.provider, cloud.region, zone, instance_type, t)
                    if price is not None:
                        found.append(price / cloud.speed.get(instance_type, 1.0))
                    step = book._next_change(cloud.provider, cloud.region, zone, instance_type, t)
                    t = step if step > t else horizon_s + 1
    return round(min(found), 6) if found else None


def _at(scenario: Scenario, offset_s: float) -> Any:
    from simulator.clock import VirtualClock

    return VirtualClock(scenario.world.prices_start or scenario.start).at(offset_s)


def report_json(report: Mapping[str, Any]) -> str:
    return json.dumps(report, indent=2, sort_keys=False, allow_nan=False) + "\n"
