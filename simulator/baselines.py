"""The baselines every policy is compared with, run by the same simulator (and one bound computed without it).

Each baseline is a policy document built from the scenario's fleet (the
targets of the scenario's own policy), so it runs through the same
``plan()``, scheduler and world as the policy under test; private tasks stay
on private targets in every baseline, as the invariant demands.

- ``seed``: the seed's ``task_rules`` table (the scenario's ``seed_policy``),
  read by the product's seed form exactly as the seed's ``route_task`` reads
  it, its built-in clouds configured from the scenario (``seed_clouds``).
- ``on-demand``: every task that may leave goes to the cloud targets, bought
  on demand (no preemption, no capacity limit, the on-demand price).
- ``private-only``: everything waits for the private cluster.
- ``static-cheapest``: the spot cloud targets in the order of a fixed catalog
  price (``world.catalog_spot``), with no live signal at all, and no max price
  (the fleet's ``market: on-demand`` targets are left out: a spot catalog).
- ``bound`` (offline lower bound, not a run): the work that cannot fit on the
  private cluster, at the lowest spot price seen anywhere in the run. See
  :func:`offline_bound`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from controlplane.policy import Policy, parse_policy
from controlplane.policy.seed import BuiltinCloud, SeedClouds
from simulator.runner import RunSetup
from simulator.scenario import Scenario, ScenarioError

__all__ = ["BASELINES", "baseline_setups", "offline_bound"]

BASELINES = ("seed", "on-demand", "private-only", "static-cheapest", "bound")

#: launch settings the built-in clouds of the seed form need before they count as configured (never used)
_SEED_SETTINGS: dict[str, dict[str, Any]] = {
    "aws": {"launch_template": "fusionplane-sim", "subnets": ["subnet-sim"]},
    "azure": {
        "subscription_id": "00000000-0000-0000-0000-000000000000",
        "resource_group": "fusionplane-sim",
        "subnet_id": "/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/sim/providers/"
        "Microsoft.Network/virtualNetworks/sim/subnets/workers",
        "image": "Canonical:ubuntu-24_04-lts:server:latest",
        "ssh_public_key": "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAISimulatedKeyNotUsed sim",
    },
}

#: the built-in clouds' stores, so that they can write a task's output as a configured seed deployment would
_SEED_STORAGE: dict[str, dict[str, Any]] = {
    "aws": {"uri": "s3://fp-sim-work/aws/"},
    "azure": {"uri": "az://fpsimwork/work/"},
}


def baseline_setups(scenario: Scenario, fleet: Mapping[str, Any], names: Sequence[str]) -> list[RunSetup]:
    """The runs for ``names`` (``bound`` is left out: it is computed, not run)."""
    targets = [dict(target) for target in fleet.get("targets", [])]
    private = [t["name"] for t in targets if t.get("private")]
    clouds = [t for t in targets if t.get("provider") in ("aws", "azure")]
    setups = []
    for name in names:
        if name == "bound":
            continue
        if name == "seed":
            setups.append(RunSetup(name="baseline:seed", kind="baseline", policy=_seed_policy(scenario)))
        elif name == "on-demand":
            document = _keep_private(targets, private, [t["name"] for t in clouds], drop_max_price=True)
            setups.append(
                RunSetup(name="baseline:on-demand", kind="baseline", policy=_parse(document, name), mode="on_demand")
            )
        elif name == "private-only":
            document = _keep_private([t for t in targets if t.get("private")], private, private)
            setups.append(RunSetup(name="baseline:private-only", kind="baseline", policy=_parse(document, name)))
        elif name == "static-cheapest":
            # a static catalog of spot offers: the fleet's on-demand targets are not spot, and not in it
            spot = [t for t in clouds if t.get("market", "spot") == "spot"]
            ordered = sorted(spot, key=lambda t: (_catalog(scenario, t), t["name"]))
            document = _keep_private(targets, private, [t["name"] for t in ordered], drop_max_price=True)
            setups.append(
                RunSetup(
                    name="baseline:static-cheapest", kind="baseline", policy=_parse(document, name), live_signals=False
                )
            )
        else:
            raise ScenarioError(f"--baselines: unknown baseline {name!r} (one of {', '.join(BASELINES)}, or all)")
    return setups


def _keep_private(
    targets: list[dict[str, Any]], private: list[str], others: list[str], *, drop_max_price: bool = False
) -> dict[str, Any]:
    kept = [{k: v for k, v in target.items() if not (drop_max_price and k == "max_price_usd_h")} for target in targets]
    rules = [{"name": "private-stays-private", "match": {"data_sensitivity": "private"}, "targets": private}]
    if others:
        rules.append({"name": "the-rest", "targets": others})
    return {"targets": kept, "rules": rules}


def _catalog(scenario: Scenario, target: Mapping[str, Any]) -> float:
    prices = scenario.world.catalog_spot.get(target["provider"], {})
    known = [prices[t] for t in target.get("instance_types", []) if t in prices]
    return min(known) if known else float("inf")


def _parse(document: Mapping[str, Any], name: str) -> Policy:
    try:
        return parse_policy(json.loads(json.dumps(document)))
    except ValueError as exc:
        raise ScenarioError(f"baseline {name}: {exc}") from None


def _seed_policy(scenario: Scenario) -> Policy:
    if scenario.seed_policy is None:
        raise ScenarioError("seed_policy: the seed baseline needs the seed's task_rules table")
    document = json.loads(scenario.path(scenario.seed_policy).read_text(encoding="utf-8"))
    clouds = {}
    for provider in ("aws", "azure"):
        market = next((cloud for cloud in scenario.world.clouds if cloud.provider == provider), None)
        catalog = scenario.world.catalog_spot.get(provider, {})
        threshold = scenario.seed_budget_usd_h.get(provider) if scenario.seed_budget_usd_h else None
        clouds[provider] = BuiltinCloud(
            settings=_SEED_SETTINGS[provider],
            storage=_SEED_STORAGE[provider],
            max_price_usd_h=threshold if threshold is not None else (max(catalog.values()) if catalog else None),
            region=market.region if market is not None else None,
        )
    try:
        return parse_policy(document, seed_clouds=SeedClouds(aws=clouds["aws"], azure=clouds["azure"]))
    except ValueError as exc:
        raise ScenarioError(f"seed_policy: {exc}") from None


def offline_bound(
    *,
    private_gpus: int,
    horizon_s: float,
    private_work_s: float,
    public_work_s: float,
    cheapest_usd_h: float | None,
    private_usd_gpu_h: float,
) -> dict[str, Any]:
    """A lower bound on the dollars any placement could have spent on the same tasks.

    Relax everything (arrival times, deadlines, launch latency, preemption,
    task sizes): the private cluster offers ``private_gpus x horizon`` GPU-
    seconds; private work must run there; the rest of it absorbs public work
    at the private cost; public work beyond that runs at the lowest spot price
    that any zone had at any moment of the run. Any real schedule pays at
    least that.
    """
    room_s = max(private_gpus * horizon_s - private_work_s, 0.0)
    overflow_s = max(public_work_s - room_s, 0.0)
    private_cost = private_usd_gpu_h * (private_work_s + min(public_work_s, room_s)) / 3600.0
    cloud_cost = 0.0 if overflow_s == 0 else (cheapest_usd_h or 0.0) * overflow_s / 3600.0
    return {
        "usd_total": round(private_cost + cloud_cost, 4),
        "cloud_gpu_hours": round(overflow_s / 3600.0, 4),
        "cheapest_usd_h": cheapest_usd_h,
    }
