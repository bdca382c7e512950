"""The baselines built from the scenario's fleet: the static catalog is a spot catalog."""

from __future__ import annotations

import json

from simulator.baselines import baseline_setups
from simulator.scenario import load_scenario
from tests.support.sim import LAUNCH_DAY


def test_static_cheapest_leaves_the_fleets_on_demand_targets_out_and_on_demand_keeps_every_cloud() -> None:
    scenario = load_scenario(LAUNCH_DAY)
    fleet = json.loads(scenario.path(scenario.policy or "").read_text(encoding="utf-8"))
    assert any(t.get("market") == "on-demand" for t in fleet["targets"])  # the shipped fleet has some
    static, on_demand = baseline_setups(scenario, fleet, ["static-cheapest", "on-demand"])
    listed = {name for rule in static.policy.rules for name in rule.actions.targets}
    assert {t.market for t in static.policy.targets if t.name in listed and t.provider in ("aws", "azure")} == {"spot"}
    assert {"aws-spot", "azure-spot"} <= listed
    assert {"aws-ondemand", "azure-ondemand"} <= {n for rule in on_demand.policy.rules for n in rule.actions.targets}
