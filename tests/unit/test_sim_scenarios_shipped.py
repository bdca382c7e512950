"""The scenarios shipped under policies/scenarios: each loads, its inputs exist, and each shows what it claims.

- every ``policies/scenarios/*.json`` is a scenario or a policy; each scenario
  loads (``load_scenario``), its traces and price history load as a run would
  read them, its policies parse, and its price history prices every zone it
  launches in for the whole run;
- ``spot-drought``: the windows it replays really are dry, counted from the
  traces here (not copied from the docs);
- ``price-spike``: its price history is the launch day's with the documented
  spike in it, and the price book bills it, over the on-demand price.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from controlplane.policy import parse_policy
from simulator.clock import VirtualClock
from simulator.markets import Market, PriceBook, PriceHistory, market_of
from simulator.prices import PriceSeries, load_price_series
from simulator.scenario import Scenario, load_scenario
from simulator.simulate import load_world_inputs

REPO = Path(__file__).resolve().parents[2]
SCENARIOS = REPO / "policies" / "scenarios"
SHIPPED = ("launch-day", "spot-drought", "price-spike")
SPIKE_TYPE = "p3.2xlarge"
#: the spike docs/simulator.md describes: region -> [(hour of 2023-02-20 UTC, factor from then on)]
SPIKE = {
    "us-east-1": [(11, 2.0), (12, 3.5), (13, 5.0), (17, 3.0), (18, 1.5), (19, 1.0)],
    "us-east-2": [(13, 3.0), (16, 1.0)],
}


def _documents() -> Iterator[tuple[Path, dict[str, object]]]:
    for path in sorted(SCENARIOS.glob("*.json")):
        document = json.loads(path.read_text(encoding="utf-8"))
        assert isinstance(document, dict), path.name
        yield path, document


def _scenario_paths() -> list[Path]:
    return [path for path, document in _documents() if "world" in document and "workload" in document]


def _scenario(name: str) -> Scenario:
    return load_scenario(SCENARIOS / f"{name}.json")


def _markets(scenario: Scenario) -> list[Market]:
    traces, _history = load_world_inputs(scenario)
    return [market_of(cloud, traces[(cloud.provider, cloud.region)]) for cloud in scenario.world.clouds]


def _dry_stretches(market: Market, end_s: float) -> dict[str, list[tuple[float, float]]]:
    """Per zone, the stretches of ``[0, end_s)`` in which its trace (at the scenario's offset) offers nothing."""
    found: dict[str, list[tuple[float, float]]] = {}
    for zone in market.zones:
        stretches, t = [], 0.0
        while t < end_s:
            change = zone.next_change_s(t)
            step_end = end_s if change is None else min(change, end_s)
            if zone.available(t) == 0:
                stretches.append((t, step_end))
            t = step_end
        found[zone.name] = stretches
    return found


def _all_dry_s(per_zone: list[list[tuple[float, float]]]) -> float:
    """Seconds in which every zone is dry at once (intersection of the zones' dry stretches)."""
    common = per_zone[0]
    for stretches in per_zone[1:]:
        common = [(max(a0, b0), min(a1, b1)) for a0, a1 in common for b0, b1 in stretches if max(a0, b0) < min(a1, b1)]
    return sum(b - a for a, b in common)


def _dry_zone_hours(scenario: Scenario, start_h: float, end_h: float) -> tuple[float, int, float]:
    """Dry zone-hours in ``[start_h, end_h)`` of the day, the zones counted, and hours every zone was dry."""
    per_zone: list[list[tuple[float, float]]] = []
    for market in _markets(scenario):
        for stretches in _dry_stretches(market, end_h * 3600.0).values():
            clipped = [(max(a, start_h * 3600.0), b) for a, b in stretches if b > start_h * 3600.0]
            per_zone.append(clipped)
    dry_s = sum(b - a for stretches in per_zone for a, b in stretches)
    return dry_s / 3600.0, len(per_zone), _all_dry_s(per_zone) / 3600.0


# -- every shipped file -----------------------------------------------------------------------------------


def test_every_file_is_a_scenario_or_a_policy_and_the_three_scenarios_are_there() -> None:
    for path, document in _documents():
        if "world" in document:
            continue
        assert "targets" in document, f"{path.name}: neither a scenario (world, workload) nor a policy (targets)"
        parse_policy(document)
    assert {path.stem for path in _scenario_paths()} >= set(SHIPPED)


@pytest.mark.parametrize("path", _scenario_paths(), ids=lambda path: path.stem)
def test_a_shipped_scenario_loads_with_its_traces_prices_and_policies(path: Path) -> None:
    scenario = load_scenario(path)
    assert scenario.name == path.stem
    traces, history = load_world_inputs(scenario)  # every trace file and the price CSV, read as a run reads them
    for cloud in scenario.world.clouds:
        assert set(traces[(cloud.provider, cloud.region)]) == set(cloud.zones)
    if scenario.policy is not None:
        parse_policy(json.loads(scenario.path(scenario.policy).read_text(encoding="utf-8")))
    if scenario.seed_policy is not None:
        assert isinstance(json.loads(scenario.path(scenario.seed_policy).read_text(encoding="utf-8")), dict)
    assert history is not None, "a shipped scenario names its price history"
    start = scenario.world.prices_start or scenario.start
    end = start + timedelta(hours=scenario.duration_hours + scenario.drain_hours)
    for cloud in scenario.world.clouds:
        types = scenario.world.catalog_spot.get(cloud.provider, {})
        priced = [t for t in types if _priced(history, cloud.provider, cloud.region, [*cloud.zones], t, start)]
        assert priced, f"{path.name}: no price for {cloud.provider} {cloud.region} at {start.isoformat()}"
        for instance_type in priced:
            for when in (start, end):
                assert _priced(history, cloud.provider, cloud.region, [*cloud.zones], instance_type, when)


def _priced(history: PriceHistory, provider: str, region: str, zones: list[str], kind: str, when: datetime) -> bool:
    places = zones if provider == "aws" else [region]
    return all(history.price_at(provider, place, kind, when) is not None for place in places)


def test_a_scenario_scaled_as_make_sim_runs_it_still_validates() -> None:
    for name in SHIPPED:
        scaled = _scenario(name).scaled(0.002)
        assert scaled.world.private.gpus >= 1
        assert all(cloud.instances_per_unit >= 1 for cloud in scaled.world.clouds)


# -- spot-drought ---------------------------------------------------------------------------------------


def test_the_drought_replays_windows_where_the_zones_went_dry_together() -> None:
    drought, launch = _scenario("spot-drought"), _scenario("launch-day")
    day = drought.duration_hours
    dry, zones, all_dry = _dry_zone_hours(drought, 0.0, day)
    usual, usual_zones, usual_all_dry = _dry_zone_hours(launch, 0.0, launch.duration_hours)
    assert zones == usual_zones >= 9
    # most of the day's zone-hours are dry, more than twice the launch day's, and the zones go dry together
    assert dry >= 0.6 * zones * day
    assert dry >= 2 * usual
    assert all_dry >= 1.0
    assert usual_all_dry == 0.0
    # the peak (10x from hour 12 to 18) is where it hits: at least 80% of its zone-hours are dry
    peak_dry, _, _ = _dry_zone_hours(drought, 12.0, 18.0)
    assert peak_dry >= 0.8 * zones * 6.0


def test_the_drought_keeps_the_launch_day_fleet_and_workload_shape() -> None:
    drought, launch = _scenario("spot-drought"), _scenario("launch-day")
    assert drought.policy == launch.policy
    assert drought.seed_policy == launch.seed_policy
    assert [(c.provider, c.region, dict(c.zones)) for c in drought.world.clouds] == [
        (c.provider, c.region, dict(c.zones)) for c in launch.world.clouds
    ]
    assert drought.world.private == launch.world.private
    assert [step.hours for step in drought.workload.rate] == [step.hours for step in launch.workload.rate]
    steady, peak, _ = (step.per_hour for step in drought.workload.rate)
    assert peak == pytest.approx(10 * steady)
    assert drought.workload.mix == launch.workload.mix
    assert drought.workload.deadline_s == launch.workload.deadline_s


# -- price-spike ----------------------------------------------------------------------------------------


def _series(name: str) -> tuple[Scenario, PriceSeries]:
    scenario = _scenario(name)
    assert scenario.world.prices is not None
    return scenario, load_price_series(scenario.path(scenario.world.prices))


def _factor(region: str, when: datetime, day: datetime) -> float:
    factor = 1.0
    for hour, value in SPIKE.get(region, []):
        if when >= day + timedelta(hours=hour):
            factor = value
    return factor


def test_the_spike_history_is_the_launch_day_one_times_the_documented_factors() -> None:
    spike, spiked = _series("price-spike")
    launch, base = _series("launch-day")
    day = spike.world.prices_start or spike.start
    assert day == (launch.world.prices_start or launch.start)
    # every base key is in the spike file; the spike only adds AWS region rows (the cheapest zone)
    base_keys, spiked_keys = base.keys(), spiked.keys()
    assert set(base_keys) <= set(spiked_keys)
    extra = set(spiked_keys) - set(base_keys)
    assert extra == {(key.provider, key.region[:-1], key.instance_type) for key in base_keys if key.provider == "aws"}
    horizon = int(spike.duration_hours + spike.drain_hours) * 4
    instants = [
        day - timedelta(days=2),
        *(day + timedelta(minutes=15 * i) for i in range(horizon)),
        day + timedelta(days=40),
    ]
    on_demand = spike.world.on_demand["aws"][SPIKE_TYPE]
    peaks: dict[str, float] = {}
    for when in instants:
        for key in base_keys:
            region = key.region[:-1] if key.provider == "aws" else key.region
            factor = _factor(region, when, day) if key.provider == "aws" else 1.0
            usual = base.price_at(*key, when)
            assert usual is not None
            assert spiked.price_at(*key, when) == pytest.approx(usual * factor, abs=1e-4), (key, when)
            if factor > 1.0:
                peaks[region] = max(peaks.get(region, 0.0), factor)
        for region in {key.region for key in extra}:
            zones = [key for key in base_keys if key.provider == "aws" and key.region[:-1] == region]
            cheapest = min(spiked.price_at(*key, when) or 0.0 for key in zones)
            assert spiked.price_at("aws", region, SPIKE_TYPE, when) == pytest.approx(cheapest, abs=1e-9)
    assert peaks == {"us-east-1": 5.0, "us-east-2": 3.0}
    assert all(3.0 <= factor <= 5.0 for factor in peaks.values())
    over = [key for key in spiked_keys if (spiked.price_at(*key, day + timedelta(hours=14)) or 0.0) > on_demand]
    assert {key.region for key in over} >= {"us-east-1", "us-east-1a", "us-east-1c", "us-east-1d", "us-east-1f"}


def test_the_price_book_bills_the_spike_above_on_demand() -> None:
    spike, history = _series("price-spike")
    _launch, base = _series("launch-day")
    clock = VirtualClock(spike.world.prices_start or spike.start)
    book = PriceBook(spike.world, history, mode="spot", at=clock.at)
    usual = PriceBook(spike.world, base, mode="spot", at=clock.at)
    on_demand = spike.world.on_demand["aws"][SPIKE_TYPE]
    args = ("aws", "us-east-1", "us-east-1a", SPIKE_TYPE)
    assert (book.hourly(*args, 14 * 3600.0) or 0.0) > on_demand
    # an instance held from 10:00 to 20:00 pays every step of the spike
    spiked_cost, usual_cost = book.cost(*args, 10 * 3600.0, 20 * 3600.0), usual.cost(*args, 10 * 3600.0, 20 * 3600.0)
    steps = [(10, 11, 1.0), (11, 12, 2.0), (12, 13, 3.5), (13, 17, 5.0), (17, 18, 3.0), (18, 19, 1.5), (19, 20, 1.0)]
    rate = usual.hourly(*args, 10 * 3600.0) or 0.0
    assert usual_cost == pytest.approx(rate * 10, rel=1e-9)
    assert spiked_cost == pytest.approx(sum((b - a) * f * rate for a, b, f in steps), rel=1e-4)
    # the scheduler's price signal (region, no zone) sees the spike too: the cheapest zone of the region
    assert book.hourly("aws", "us-east-1", None, SPIKE_TYPE, 14 * 3600.0) == pytest.approx(5.0 * 0.9981, abs=1e-4)
    assert book.hourly("aws", "us-west-2", None, SPIKE_TYPE, 14 * 3600.0) == pytest.approx(0.918)
