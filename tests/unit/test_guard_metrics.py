"""Breakers, spend and budgets as series: the guards' collector over the hub's samples and the policy's budgets."""

from __future__ import annotations

from datetime import UTC, datetime

from prometheus_client import CollectorRegistry, generate_latest

from controlplane.domain import BUDGET_SOURCE, SignalSample
from controlplane.domain.reliability import BREAKER_SOURCE, breaker_key, tenant_spend_key
from controlplane.policy import parse_policy
from controlplane.policy_sources import PolicySet
from controlplane.runtime.signals import budgets_in_force
from controlplane.signals.guard_metrics import Budgets, GuardCollector

NOW = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)


def _sample(source: str, key: str, value: float) -> SignalSample:
    return SignalSample(source=source, key=key, value=value, observed_at=NOW, ttl_seconds=60.0)


def _registry(samples: list[SignalSample], budgets: Budgets) -> CollectorRegistry:
    registry = CollectorRegistry()
    registry.register(GuardCollector(lambda: {f"{s.source}/{s.key}": s for s in samples}, lambda: budgets))
    return registry


def test_breakers_are_series_per_offer() -> None:
    registry = _registry(
        [
            _sample(BREAKER_SOURCE, breaker_key("aws", "us-east-1", "g5.xlarge"), 1.0),
            _sample(BREAKER_SOURCE, breaker_key("azure", None, None), 0.5),
            _sample("aws_spot", "aws/us-east-1/g5.xlarge", 0.42),  # a price, not a breaker
        ],
        Budgets(),
    )
    value = registry.get_sample_value
    aws = {"provider": "aws", "region": "us-east-1", "instance_type": "g5.xlarge"}
    assert value("fusionplane_breaker_state", aws) == 1
    assert value("fusionplane_breaker_state", {"provider": "azure", "region": "-", "instance_type": "-"}) == 0.5
    assert generate_latest(registry).decode().count("fusionplane_breaker_state{") == 2


def test_spend_and_budgets_per_tenant() -> None:
    budgets = Budgets(
        daily_usd=500.0,
        named_tenants=["acme", "globex"],
        tenant_usd=lambda tenant: {"acme": 100.0, "globex": 50.0}.get(tenant, 20.0),  # 20: the "*" entry
    )
    registry = _registry(
        [
            _sample(BUDGET_SOURCE, "spent_today_usd", 131.5),
            _sample(BUDGET_SOURCE, tenant_spend_key("acme"), 85.0),
            _sample(BUDGET_SOURCE, tenant_spend_key("initech"), 46.5),
            _sample(BUDGET_SOURCE, "unpriced_attempts_today", 3.0),
        ],
        budgets,
    )
    value = registry.get_sample_value
    assert value("fusionplane_cloud_spend_today_usd") == 131.5
    assert value("fusionplane_daily_budget_usd") == 500.0
    assert value("fusionplane_tenant_cloud_spend_today_usd", {"tenant": "acme"}) == 85.0
    assert value("fusionplane_tenant_cloud_spend_today_usd", {"tenant": "initech"}) == 46.5
    assert value("fusionplane_tenant_cloud_spend_today_usd", {"tenant": "globex"}) is None  # spent nothing today
    # named tenants, and a tenant who spent under the "*" budget
    assert value("fusionplane_tenant_daily_budget_usd", {"tenant": "acme"}) == 100.0
    assert value("fusionplane_tenant_daily_budget_usd", {"tenant": "globex"}) == 50.0
    assert value("fusionplane_tenant_daily_budget_usd", {"tenant": "initech"}) == 20.0
    assert "unpriced" not in generate_latest(registry).decode()


def test_no_budget_and_no_spend_export_no_values() -> None:
    text = generate_latest(_registry([], Budgets())).decode()
    # the families are there (a dashboard finds the names), with no samples
    for name in ("breaker_state", "cloud_spend_today_usd", "daily_budget_usd", "tenant_daily_budget_usd"):
        assert f"# TYPE fusionplane_{name} gauge" in text
    assert not [line for line in text.splitlines() if line and not line.startswith("#")]


def test_the_budgets_in_force_come_from_the_base_and_each_tenants_policy() -> None:
    doc = {
        "targets": [{"name": "home", "provider": "local", "private": True}],
        "rules": [{"name": "all", "targets": ["home"]}],
        "thresholds": {"daily_budget_usd": 900, "tenant_daily_budget_usd": {"acme": 100, "*": 25}},
    }
    base = parse_policy(doc)
    overlay = parse_policy({**doc, "thresholds": {"daily_budget_usd": 900, "tenant_daily_budget_usd": {"globex": 60}}})
    budgets = budgets_in_force(PolicySet(base=base, tenants={"globex": overlay}))
    assert budgets.daily_usd == 900
    assert sorted(budgets.named_tenants) == ["acme", "globex"]
    assert [budgets.tenant_usd(t) for t in ("acme", "globex", "initech")] == [100, 60, 25]
    assert budgets_in_force(parse_policy({**doc, "thresholds": {}})).daily_usd is None
