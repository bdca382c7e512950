"""plan() with the reliability guards: spot circuit breakers and daily cloud budgets, read as signals."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from controlplane.domain import (
    DataSensitivity,
    PlacementPlan,
    SignalSample,
    SignalSnapshot,
    Task,
    TaskKind,
    TaskSpec,
    TaskState,
)
from controlplane.policy import PolicyError, parse_policy, plan
from controlplane.signals.budget import BudgetSource
from controlplane.signals.snapshot_json import snapshot_from_json, snapshot_to_json

NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
EAST, WEST = "aws/us-east-1/g4dn.xlarge", "aws/us-west-2/g4dn.xlarge"

TARGETS: list[dict[str, Any]] = [
    {"name": "local", "provider": "local", "private": True},
    {
        "name": "aws",
        "provider": "aws",
        "private": False,
        "regions": ["us-east-1", "us-west-2"],
        "instance_types": ["g4dn.xlarge"],
        "max_price_usd_h": 0.5,
        "storage": {"uri": "s3://fp-work/aws/"},
    },
    {
        "name": "azure",
        "provider": "azure",
        "private": False,
        "regions": ["eastus"],
        "instance_types": ["NC4"],
        # the task's s3:// inputs are copied into it (an Azure worker has no AWS identity)
        "storage": {"uri": "az://fpwork/work/"},
    },
]
#: clouds first, so a guard that lets a cloud through shows in the first candidate
CLOUD_FIRST = {"name": "cloud-first", "targets": ["aws", "azure", "local"]}


def policy(thresholds: dict[str, Any] | None = None, rules: list[dict[str, Any]] | None = None) -> Any:
    document: dict[str, Any] = {"targets": TARGETS, "rules": [CLOUD_FIRST] if rules is None else rules}
    if thresholds is not None:
        document["thresholds"] = thresholds
    return parse_policy(document)


def task(tenant: str = "acme", sensitivity: DataSensitivity = DataSensitivity.PUBLIC) -> Task:
    spec = TaskSpec(
        tenant=tenant,
        kind=TaskKind.IMAGE,
        source_uri="s3://in/face.png",
        target_uri="s3://in/target.png",
        output_uri="/var/fp/outputs/x.png",  # local: each cloud writes it to its store
        data_sensitivity=sensitivity,
    )
    return Task(id="tsk_1", spec=spec, state=TaskState.QUEUED, created_at=NOW, updated_at=NOW)


def signals(values: dict[str, float | tuple[float, float]]) -> SignalSnapshot:
    """Samples by full name: a number (1 s old) or (value, age in seconds); TTL 60 s."""
    samples = {}
    for name, spec in values.items():
        value, age = spec if isinstance(spec, tuple) else (spec, 1.0)
        source, _, key = name.partition("/")
        samples[name] = SignalSample(
            source=source, key=key, value=value, observed_at=NOW - timedelta(seconds=age), ttl_seconds=60
        )
    return SignalSnapshot(taken_at=NOW, samples=samples)


PRICES = {f"spot_price/{EAST}": 0.3, f"spot_price/{WEST}": 0.35}


def codes(result: PlacementPlan) -> dict[str, str]:
    return {r.target: r.code for r in result.rejections}


def detail(result: PlacementPlan, target: str) -> str:
    return next(r.detail for r in result.rejections if r.target == target)


def first(result: PlacementPlan) -> tuple[str, str | None, float | None]:
    c = result.candidates[0]
    return c.target, c.region, c.expected_usd_h


# -- spot circuit breaker --------------------------------------------------------------------------


def test_an_open_breaker_skips_its_offer_like_a_price_above_the_max() -> None:
    result = plan(task(), signals({**PRICES, f"breaker/{EAST}": 1}), policy(), NOW)
    assert first(result) == ("aws", "us-west-2", 0.35)
    assert result.signals_used[f"breaker/{EAST}"]["value"] == 1  # the receipt shows why us-east-1 was passed over
    assert f"breaker/{WEST}" not in result.signals_used  # missing: closed, and not recorded as used


def test_every_offer_open_rejects_the_target_breaker_open_naming_the_offers() -> None:
    both = signals({**PRICES, f"breaker/{EAST}": 1, f"breaker/{WEST}": 1})
    result = plan(task(), both, policy(), NOW)
    assert codes(result)["aws"] == "breaker_open"
    assert detail(result, "aws") == (f"circuit breaker open (recent preemptions or capacity errors) on {EAST}, {WEST}")
    assert [c.target for c in result.candidates] == ["azure", "local"]


def test_open_breakers_and_prices_over_the_max_name_both() -> None:
    mixed = signals({f"spot_price/{EAST}": 0.3, f"spot_price/{WEST}": 0.9, f"breaker/{EAST}": 1})
    result = plan(task(), mixed, policy(), NOW)
    assert codes(result)["aws"] == "breaker_open"
    assert detail(result, "aws").endswith(f"on {EAST}; spot price above the max price: {WEST} 0.9000 > max 0.5")
    # without the breaker the over-priced pair alone is a plain price rejection
    assert codes(plan(task(), signals({f"spot_price/{WEST}": 0.9}), policy(), NOW))["aws"] == "price_above_max"


def test_a_half_open_breaker_lets_the_offer_through_as_its_probe() -> None:
    result = plan(task(), signals({**PRICES, f"breaker/{EAST}": 0.5}), policy(), NOW)
    assert first(result) == ("aws", "us-east-1", 0.3)
    assert f"circuit breaker {EAST} half-open: this launch is its probe" in result.candidates[0].reasons
    assert result.candidates[0].breaker_probe == EAST  # the executor lets one probe per breaker through
    closed = plan(task(), signals({**PRICES, f"breaker/{EAST}": 0}), policy(), NOW)
    assert closed.candidates[0].breaker_probe is None


def test_a_stale_or_missing_breaker_is_closed() -> None:
    stale = plan(task(), signals({**PRICES, f"breaker/{EAST}": (1, 61)}), policy(), NOW)
    assert first(stale) == ("aws", "us-east-1", 0.3)
    assert stale.signals_used[f"breaker/{EAST}"]["stale"] is True
    assert any(line.startswith(f"signal breaker/{EAST}: stale") for line in stale.trace)
    missing = plan(task(), signals(PRICES), policy(), NOW)
    assert first(missing) == ("aws", "us-east-1", 0.3)
    # absence of evidence never blocks, and leaves the receipt as it was before breakers existed
    assert not any(name.startswith("breaker/") for name in missing.signals_used)
    assert not any("breaker" in line for line in missing.trace)


def test_a_breaker_older_than_load_ttl_is_stale_even_within_its_own_ttl() -> None:
    short = policy({"load_ttl_seconds": 10})
    assert first(plan(task(), signals({**PRICES, f"breaker/{EAST}": (1, 30)}), short, NOW))[1] == "us-east-1"


def test_without_a_max_price_the_first_offer_whose_breaker_is_not_open_is_chosen() -> None:
    azure_east, azure_west = "azure/eastus/NC4", "azure/westus/NC4"
    targets = [TARGETS[0], {**TARGETS[2], "regions": ["eastus", "westus"]}]
    no_cap = parse_policy({"targets": targets, "rules": [{"name": "r", "targets": ["azure", "local"]}]})
    result = plan(task(), signals({f"breaker/{azure_east}": 1}), no_cap, NOW)
    assert first(result) == ("azure", "westus", None)
    both = plan(task(), signals({f"breaker/{azure_east}": 1, f"breaker/{azure_west}": 1}), no_cap, NOW)
    assert codes(both) == {"azure": "breaker_open"}
    assert azure_east in detail(both, "azure")
    assert azure_west in detail(both, "azure")
    probe = plan(task(), signals({f"breaker/{azure_east}": 0.5}), no_cap, NOW)
    assert first(probe) == ("azure", "eastus", None)
    assert any("probe" in reason for reason in probe.candidates[0].reasons)
    assert probe.candidates[0].breaker_probe == azure_east


def test_spot_price_under_budget_does_not_hold_on_an_offer_whose_breaker_is_open() -> None:
    rules = [
        {"name": "cheap-cloud", "when": {"spot_price_under_budget": True}, "targets": ["aws"]},
        {"name": "rest", "targets": ["local"]},
    ]
    only_east = signals({f"spot_price/{EAST}": 0.3, f"breaker/{EAST}": 1})
    assert (
        plan(task(), only_east, policy(rules=rules), NOW)
        .trace[0]
        .startswith("rule cheap-cloud: task matches, conditions do not")
    )
    assert plan(task(), signals({f"spot_price/{EAST}": 0.3}), policy(rules=rules), NOW).candidates[0].target == "aws"


# -- daily budgets ---------------------------------------------------------------------------------


def test_no_budget_reads_no_spend() -> None:
    result = plan(task(), signals(PRICES), policy(), NOW)
    assert first(result)[0] == "aws"
    assert not any(name.startswith("budget/") for name in result.signals_used)


def test_the_overall_budget_spent_rejects_every_cloud_target() -> None:
    budget = policy({"daily_budget_usd": 100})
    spent = plan(task(), signals({**PRICES, "budget/spent_today_usd": 100}), budget, NOW)
    assert codes(spent) == {"aws": "budget_exhausted", "azure": "budget_exhausted"}
    assert detail(spent, "aws") == "daily_budget_usd: spent 100.00 of 100 USD today (UTC), every tenant"
    assert [c.target for c in spent.candidates] == ["local"]
    left = plan(task(), signals({**PRICES, "budget/spent_today_usd": 99.5}), budget, NOW)
    assert first(left)[0] == "aws"
    assert left.signals_used["budget/spent_today_usd"]["value"] == 99.5


def test_a_tenant_budget_holds_back_that_tenant_only() -> None:
    budgets = policy({"daily_budget_usd": 1000, "tenant_daily_budget_usd": {"marketing": 50, "*": 10}})
    snapshot = signals(
        {
            **PRICES,
            "budget/spent_today_usd": 57,
            "budget/spent_today_usd/marketing": 50,
            "budget/spent_today_usd/acme": 7,
        }
    )
    marketing = plan(task("marketing"), snapshot, budgets, NOW)
    assert codes(marketing) == {"aws": "budget_exhausted", "azure": "budget_exhausted"}
    assert detail(marketing, "aws") == "tenant_daily_budget_usd for 'marketing': spent 50.00 of 50 USD today (UTC)"
    assert first(plan(task("acme"), snapshot, budgets, NOW))[0] == "aws"  # 7 of the "*" 10
    # a tenant with no sample beside a fresh total spent nothing today
    film = plan(task("film"), snapshot, budgets, NOW)
    assert first(film)[0] == "aws"
    assert film.signals_used["budget/spent_today_usd/film"]["missing"] is True
    assert "signal budget/spent_today_usd/film: none fresh beside a fresh total, so no spend today: 0" in film.trace


def test_one_number_is_every_tenants_budget() -> None:
    each = policy({"tenant_daily_budget_usd": 10})
    assert each.thresholds.tenant_budget("anyone") == 10
    snapshot = signals({**PRICES, "budget/spent_today_usd": 12, "budget/spent_today_usd/acme": 12})
    assert codes(plan(task("acme"), snapshot, each, NOW))["aws"] == "budget_exhausted"
    assert first(plan(task("other"), snapshot, each, NOW))[0] == "aws"


def test_a_budget_with_unknown_spend_keeps_the_clouds_out_and_private_targets_in() -> None:
    budget = policy({"tenant_daily_budget_usd": {"acme": 50}})
    for snapshot in (signals(PRICES), signals({**PRICES, "budget/spent_today_usd": (1, 600)})):
        result = plan(task("acme"), snapshot, budget, NOW)
        assert codes(result) == {"aws": "budget_unknown", "azure": "budget_unknown"}
        assert "today's cloud spend is unknown" in detail(result, "aws")
        assert [c.target for c in result.candidates] == ["local"]
    # a tenant without a budget of its own, and no overall budget, is not held back by the unknown spend
    assert first(plan(task("other"), signals(PRICES), budget, NOW))[0] == "aws"


def test_private_data_stays_private_whatever_the_budget_says() -> None:
    budget = policy({"daily_budget_usd": 0})
    result = plan(task(sensitivity=DataSensitivity.PRIVATE), signals(PRICES), budget, NOW)
    assert codes(result) == {"aws": "private_data", "azure": "private_data"}
    assert [c.target for c in result.candidates] == ["local"]


def test_the_budget_comes_before_capacity_and_breakers() -> None:
    budget = policy({"daily_budget_usd": 5})
    snapshot = signals({**PRICES, "budget/spent_today_usd": 6, "free_gpus/aws": 0, f"breaker/{EAST}": 1})
    assert codes(plan(task(), snapshot, budget, NOW)) == {"aws": "budget_exhausted", "azure": "budget_exhausted"}


@pytest.mark.parametrize(
    ("value", "path", "message"),
    [
        ("ten", "thresholds.tenant_daily_budget_usd", "must be a number or an object"),
        (-1, "thresholds.tenant_daily_budget_usd", "within 0..inf"),
        ({}, "thresholds.tenant_daily_budget_usd", "at least one tenant"),
        ({"a b": 1}, "thresholds.tenant_daily_budget_usd.a b", "is not a tenant name"),
        ({"acme": True}, "thresholds.tenant_daily_budget_usd.acme", "must be a number"),
    ],
)
def test_bad_tenant_budgets_name_the_field(value: Any, path: str, message: str) -> None:
    with pytest.raises(PolicyError) as caught:
        policy({"tenant_daily_budget_usd": value})
    assert caught.value.path == path
    assert message in caught.value.message


def test_breaker_and_tenant_spend_samples_survive_the_snapshot_json_replay() -> None:
    snapshot = signals({**PRICES, f"breaker/{EAST}": 1, "budget/spent_today_usd": 3, "budget/spent_today_usd/acme": 3})
    again = snapshot_from_json(snapshot_to_json(snapshot))
    assert again == snapshot
    budget = policy({"tenant_daily_budget_usd": 3})
    assert plan(task(), again, budget, NOW) == plan(task(), snapshot, budget, NOW)


# -- the budget poller -----------------------------------------------------------------------------


@dataclass
class Spend:
    total_usd: float
    per_tenant: dict[str, float] = field(default_factory=dict)
    unpriced_attempts: int = 0


def test_the_budget_poller_writes_the_total_every_tenant_and_a_zero_for_one_that_dropped_out() -> None:
    answers: list[Spend | None] = [
        Spend(12.345678, {"acme": 10, "film": 2.345678}, unpriced_attempts=1),
        Spend(1.0, {"acme": 1.0}),  # a new UTC day: film has not spent yet
        None,  # no budget in force any more
    ]
    source = BudgetSource(lambda now: answers.pop(0))
    wanted: Any = None

    def poll() -> dict[str, float]:
        result = source.poll(wanted, timeout_s=1, clock=lambda: NOW)
        assert all(s.source == "budget" and s.observed_at == NOW and s.ttl_seconds == 60 for s in result.samples)
        return {s.key: s.value for s in result.samples}

    assert poll() == {
        "spent_today_usd": 12.3457,
        "spent_today_usd/acme": 10,
        "spent_today_usd/film": 2.3457,
        "unpriced_attempts_today": 1,
    }
    assert poll() == {
        "spent_today_usd": 1,
        "spent_today_usd/acme": 1,
        "spent_today_usd/film": 0,
        "unpriced_attempts_today": 0,
    }
    assert poll() == {}


def test_the_published_schema_takes_the_new_thresholds_and_refuses_what_the_loader_refuses() -> None:
    import json
    from pathlib import Path

    jsonschema = pytest.importorskip("jsonschema")
    schema = json.loads((Path(__file__).parents[2] / "policies" / "schema.json").read_text())
    validator = jsonschema.Draft202012Validator(schema)
    good = {
        "daily_budget_usd": 250,
        "tenant_daily_budget_usd": {"marketing": 150, "*": 40},
        "breaker_window_seconds": 1800,
        "breaker_min_attempts": 5,
        "breaker_open_failure_rate": 0.5,
        "breaker_close_failure_rate": 0.2,
        "breaker_cooldown_seconds": 300,
        "breaker_max_cooldown_seconds": 3600,
    }
    for thresholds in (good, {"tenant_daily_budget_usd": 10}):
        document = {"targets": TARGETS, "thresholds": thresholds}
        validator.validate(document)
        parse_policy(document)
    for bad in ({"tenant_daily_budget_usd": {"a b": 1}}, {"breaker_min_attempts": 0}, {"breaker_open_failure_rate": 0}):
        with pytest.raises(jsonschema.ValidationError):
            validator.validate({"targets": TARGETS, "thresholds": bad})
        with pytest.raises(PolicyError):
            parse_policy({"targets": TARGETS, "thresholds": bad})
