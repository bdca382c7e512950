"""plan() with on-demand offers, the deadline rule and the expected-cost ranking (issue 17).

The deadline rule and the ranking are pure functions of the task, the
snapshot and the policy, so they are checked here property by property.
"""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from controlplane.domain import (
    DataSensitivity,
    PlacementPlan,
    Priority,
    SignalSample,
    SignalSnapshot,
    Task,
    TaskKind,
    TaskSpec,
    TaskState,
)
from controlplane.policy import PolicyError, parse_policy, plan
from controlplane.scheduler.queueing import no_launch
from controlplane.store.codec import plan_from_json, plan_to_json

NOW = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)
EAST, WEST = "aws/us-east-1/p3.2xlarge", "aws/us-west-2/p3.2xlarge"
AWS = {"launch_template": "fp", "subnets": ["subnet-1"]}
TARGETS: list[dict[str, Any]] = [
    {"name": "onprem", "provider": "kubernetes", "private": True, "storage": {"uri": "s3://fp-work/onprem/"}},
    {
        "name": "spot",
        "provider": "aws",
        "private": False,
        "regions": ["us-east-1", "us-west-2"],
        "instance_types": ["p3.2xlarge"],
        "max_price_usd_h": 2.0,
        "settings": AWS,
        "storage": {"uri": "s3://fp-work/aws/"},
    },
    {
        "name": "ondemand",
        "provider": "aws",
        "private": False,
        "market": "on-demand",
        "regions": ["us-east-1"],
        "instance_types": ["p3.2xlarge"],
        "max_price_usd_h": 4.0,
        "settings": AWS,
        "storage": {"uri": "s3://fp-work/aws/"},
    },
]
#: 10 s of image work, 420 s of restart overhead: on-demand is held while the slack is 420 s or more
DEADLINES = {"sla_seconds": {"urgent": 300, "normal": 7200}, "restart_overhead_seconds": 420}
PRICES = {f"spot_price/{EAST}": 0.9, f"spot_price/{WEST}": 0.95, f"on_demand_price/{EAST}": 3.06}


def policy(rule: dict[str, Any] | None = None, **sections: Any) -> Any:
    rule = rule or {"name": "cloud", "targets": ["spot", "ondemand"], "deadline_aware": True}
    document: dict[str, Any] = {
        "targets": TARGETS,
        "estimates": {"work_seconds": {"image": 10, "video": 600}},
        "deadlines": DEADLINES,
        "rules": [rule],
        **sections,
    }
    return parse_policy(document)


def task(
    *,
    age_s: float = 0.0,
    priority: Priority = Priority.NORMAL,
    deadline_s: int | None = None,
    sensitivity: DataSensitivity = DataSensitivity.PUBLIC,
    kind: TaskKind = TaskKind.IMAGE,
) -> Task:
    spec = TaskSpec(
        tenant="acme",
        kind=kind,
        source_uri="s3://in/face.png",
        target_uri="s3://in/target.png",
        output_uri="/var/fp/outputs/x.png",
        priority=priority,
        data_sensitivity=sensitivity,
        deadline_seconds=deadline_s,
    )
    created = NOW - timedelta(seconds=age_s)
    return Task(id="tsk_1", spec=spec, state=TaskState.QUEUED, created_at=created, updated_at=created)


def snapshot(values: dict[str, float]) -> SignalSnapshot:
    samples = {}
    for name, value in values.items():
        source, _, key = name.partition("/")
        samples[name] = SignalSample(
            source=source, key=key, value=value, observed_at=NOW - timedelta(seconds=1), ttl_seconds=600
        )
    return SignalSnapshot(taken_at=NOW, samples=samples)


def order(result: PlacementPlan) -> list[str]:
    return [c.target for c in result.candidates]


def codes(result: PlacementPlan) -> dict[str, str]:
    return {r.target: r.code for r in result.rejections}


# -- on-demand offers -------------------------------------------------------------------------------


def test_an_on_demand_target_is_priced_from_the_list_price_and_says_its_market() -> None:
    result = plan(task(), snapshot(PRICES), policy({"name": "od", "targets": ["ondemand"]}), NOW)
    (candidate,) = result.candidates
    assert (candidate.market, candidate.expected_usd_h) == ("on-demand", 3.06)
    assert any("on-demand price aws/us-east-1/p3.2xlarge 3.0600" in r for r in candidate.reasons)
    assert f"on_demand_price/{EAST}" in result.signals_used


def test_an_on_demand_target_ignores_the_spot_breaker_and_the_spot_price() -> None:
    values = {f"on_demand_price/{EAST}": 3.06, f"breaker/{EAST}": 1.0, f"spot_price/{EAST}": 9.0}
    result = plan(task(), snapshot(values), policy({"name": "od", "targets": ["ondemand", "spot"]}), NOW)
    assert order(result) == ["ondemand"]
    assert codes(result)["spot"] in {"breaker_open", "price_above_max"}


def test_an_on_demand_price_above_the_max_rejects_it_naming_the_list_price() -> None:
    result = plan(
        task(), snapshot({f"on_demand_price/{EAST}": 5.0}), policy({"name": "od", "targets": ["ondemand"]}), NOW
    )
    assert codes(result)["ondemand"] == "price_above_max"
    assert "on-demand price above the max price" in result.rejections[-1].detail


def test_a_market_on_a_private_target_is_refused_naming_the_field() -> None:
    document = {"targets": [{"name": "k", "provider": "kubernetes", "private": True, "market": "spot"}]}
    with pytest.raises(PolicyError, match=r"^targets\[0\]\.market: only aws and azure"):
        parse_policy(document)
    with pytest.raises(PolicyError, match=r"^targets\[0\]\.market: must be one of spot, on-demand"):
        parse_policy({"targets": [{**TARGETS[1], "market": "reserved"}]})


# -- the deadline rule ------------------------------------------------------------------------------


def test_with_slack_to_spare_on_demand_is_held_back_until_a_stated_moment() -> None:
    result = plan(task(age_s=100), snapshot(PRICES), policy(), NOW)
    assert order(result) == ["spot"]
    assert codes(result)["ondemand"] == "deadline_slack"
    # deadline 7200 - work 10 - overhead 420: on-demand is usable 6770 s after submission
    assert "slack 7090 s" in result.rejections[-1].detail
    assert result.replan_by is None  # a candidate is there: nothing to wait for


def test_once_the_slack_runs_out_on_demand_goes_before_spot_with_the_numbers() -> None:
    result = plan(task(age_s=6900), snapshot(PRICES), policy(), NOW)
    assert order(result) == ["ondemand", "spot"]
    reason = next(r for r in result.candidates[0].reasons if r.startswith("deadline rule"))
    assert "slack 290 s = deadline 7200 s - 6900 s since submitted - work 10 s, restart overhead 420 s" in reason
    assert any("on-demand and private before spot" in line for line in result.trace)


def test_a_held_back_plan_with_no_spot_says_when_to_plan_again_and_the_queue_waits_until_then() -> None:
    no_spot = {f"on_demand_price/{EAST}": 3.06}  # spot has a max price and no fresh price: stale_price
    created = NOW - timedelta(seconds=100)
    result = plan(task(age_s=100), snapshot(no_spot), policy(), NOW)
    assert not result.candidates
    assert result.replan_by == created + timedelta(seconds=7200 - 10 - 420)
    decision = no_launch(task=task(age_s=6000), decision=result, history=[], now=NOW, max_queue_s=86400)
    assert decision.wait is not None
    assert "ondemand: deadline_slack" in decision.wait
    assert plan_from_json(plan_to_json(result)).replan_by == result.replan_by  # stored in the receipt


def test_the_sla_of_the_priority_is_the_deadline_of_a_task_without_one() -> None:
    # urgent: 300 s, so slack 290 s < 420 s at once
    assert order(plan(task(priority=Priority.URGENT), snapshot(PRICES), policy(), NOW)) == ["ondemand", "spot"]


def test_a_task_without_any_deadline_never_needs_on_demand() -> None:
    result = plan(task(priority=Priority.LOW, age_s=86400), snapshot(PRICES), policy(), NOW)
    assert order(result) == ["spot"]
    assert "no deadline" in next(r.detail for r in result.rejections if r.target == "ondemand")


def test_a_rule_without_deadline_aware_leaves_on_demand_in_its_place() -> None:
    result = plan(task(age_s=0), snapshot(PRICES), policy({"name": "plain", "targets": ["spot", "ondemand"]}), NOW)
    assert order(result) == ["spot", "ondemand"]


def test_deadline_aware_without_a_deadlines_section_is_refused_naming_the_rule() -> None:
    document = {"targets": TARGETS, "rules": [{"name": "r", "targets": ["spot"], "deadline_aware": True}]}
    with pytest.raises(PolicyError, match=r"^rules\[0\]\.deadline_aware: needs the policy's deadlines section"):
        parse_policy(document)


@settings(max_examples=200, deadline=None)
@given(
    deadline=st.integers(min_value=1, max_value=20000),
    age=st.floats(min_value=0, max_value=30000, allow_nan=False),
    overhead=st.floats(min_value=0, max_value=3000, allow_nan=False),
    work=st.floats(min_value=0, max_value=3000, allow_nan=False),
)
def test_the_deadline_rule_holds_on_demand_exactly_while_the_slack_covers_the_overhead(
    deadline: int, age: float, overhead: float, work: float
) -> None:
    rules = {"sla_seconds": {}, "restart_overhead_seconds": overhead}
    chosen = policy(deadlines=rules, estimates={"work_seconds": {"image": work}})
    result = plan(task(age_s=age, deadline_s=deadline), snapshot(PRICES), chosen, NOW)
    slack = deadline - age - work
    if slack >= overhead:
        assert order(result) == ["spot"]
        assert codes(result)["ondemand"] == "deadline_slack"
    else:
        assert order(result) == ["ondemand", "spot"]
    assert {c.target for c in result.candidates} | {r.target for r in result.rejections} >= {"spot", "ondemand"}


def test_private_data_never_meets_the_cloud_whatever_the_deadline() -> None:
    rule = {"name": "all", "targets": ["spot", "ondemand", "onprem"], "deadline_aware": True, "rank": "expected_cost"}
    result = plan(task(age_s=7000, sensitivity=DataSensitivity.PRIVATE), snapshot(PRICES), policy(rule), NOW)
    assert order(result) == ["onprem"]
    assert codes(result)["ondemand"] == codes(result)["spot"] == "private_data"


# -- the expected-cost ranking ----------------------------------------------------------------------


RANKED = {"name": "ranked", "targets": ["spot", "ondemand", "onprem"], "rank": "expected_cost"}


def history(
    offer: str, *, launches: float, refusals: float = 0, preemptions: float, run_hours: float
) -> dict[str, float]:
    return {
        f"spot_history/{offer}/launches": launches,
        f"spot_history/{offer}/refusals": refusals,
        f"spot_history/{offer}/preemptions": preemptions,
        f"spot_history/{offer}/run_hours": run_hours,
    }


def test_a_cold_start_ranks_on_the_documented_priors_and_says_so() -> None:
    result = plan(task(), snapshot(PRICES), policy(RANKED), NOW)
    assert order(result) == ["onprem", "spot", "ondemand"]  # 0 USD, then spot even with its risk, then the list price
    spot = result.candidates[1]
    assert spot.region == "us-east-1"
    assert spot.history_launches == 0
    # priors: 1 preemption per 10 h; a try is 150 s of launch overhead + 10 s of work
    survive = math.exp(-0.1 * 160 / 3600)
    assert spot.expected_usd_per_task == pytest.approx(0.9 * 160 / 3600 / survive, rel=1e-4)
    assert spot.completion_chance == pytest.approx(0.9 * survive, abs=1e-4)
    assert any("no history: the priors" in r for r in spot.reasons)
    ondemand = result.candidates[2]
    assert ondemand.expected_usd_per_task == pytest.approx(3.06 * 160 / 3600, rel=1e-4)
    assert ondemand.completion_chance == 1.0


def test_a_region_that_keeps_preempting_loses_to_a_dearer_calm_one() -> None:
    video = task(kind=TaskKind.VIDEO)
    risky = history(EAST, launches=200, preemptions=150, run_hours=30)  # 5 preemptions an hour
    calm = history(WEST, launches=200, preemptions=0, run_hours=60)
    result = plan(video, snapshot({**PRICES, **risky, **calm}), policy(RANKED), NOW)
    spot = result.candidates[1]
    assert (spot.target, spot.region, spot.history_launches) == ("spot", "us-west-2", 200)
    assert any("200 launch(es) in the history" in r for r in spot.reasons)
    assert f"spot_history/{WEST}/preemptions" in result.signals_used  # the receipt keeps the evidence


def test_when_spot_risk_makes_spot_dearer_than_on_demand_on_demand_ranks_first() -> None:
    video = task(kind=TaskKind.VIDEO)
    awful = {
        **history(EAST, launches=100, preemptions=500, run_hours=10),
        **history(WEST, launches=100, preemptions=500, run_hours=10),
    }
    result = plan(video, snapshot({**PRICES, **awful}), policy({**RANKED, "targets": ["spot", "ondemand"]}), NOW)
    assert order(result) == ["ondemand", "spot"]
    assert "rank: expected cost per completed task, cheapest first" in result.trace


@settings(max_examples=150, deadline=None)
@given(
    preemptions=st.floats(min_value=0, max_value=1000, allow_nan=False),
    more=st.floats(min_value=0.1, max_value=1000, allow_nan=False),
    hours=st.floats(min_value=0.1, max_value=1000, allow_nan=False),
)
def test_more_preemptions_never_lower_an_offers_expected_cost(preemptions: float, more: float, hours: float) -> None:
    one = {"name": "east-only", "targets": ["spot"], "rank": "expected_cost"}

    def cost(seen: float) -> float:
        values = {f"spot_price/{EAST}": 0.9, **history(EAST, launches=10, preemptions=seen, run_hours=hours)}
        result = plan(task(kind=TaskKind.VIDEO), snapshot(values), policy(one), NOW)
        usd = result.candidates[0].expected_usd_per_task
        assert usd is not None
        return usd

    assert cost(preemptions + more) >= cost(preemptions)


@pytest.mark.parametrize(
    ("section", "field", "value", "message"),
    [
        ("spot_risk", "prior_refusal_rate", 1.5, "must be within 0..0.99"),
        ("spot_risk", "prior_launches", 0, "must be within 1..1e+06"),
        ("spot_risk", "history_hours", "a day", "must be a number, not string"),
        ("deadlines", "restart_overhead_seconds", -1, "must be within 0..86400"),
        ("estimates", "work_seconds", {"audio": 5}, "unknown field"),
    ],
)
def test_bad_economics_are_refused_naming_the_field(section: str, field: str, value: Any, message: str) -> None:
    document: dict[str, Any] = {"targets": TARGETS, section: {field: value}}
    with pytest.raises(PolicyError, match=rf"^{section}\.{field}.*{re.escape(message)}"):
        parse_policy(document)


def test_a_bad_rank_is_refused_naming_the_rule_field() -> None:
    with pytest.raises(PolicyError, match=r"^rules\[0\]\.rank: must be one of order, expected_cost"):
        parse_policy({"targets": TARGETS, "rules": [{"name": "r", "rank": "cheapest"}]})


def test_explain_shows_the_market_the_estimate_its_sample_size_and_replan_by(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from controlplane.cli.tasks.explain import _explain_decision

    ranked = plan(task(age_s=6900), snapshot(PRICES), policy({**RANKED, "deadline_aware": True}), NOW)
    _explain_decision(1, 1, plan_to_json(ranked))
    shown = capsys.readouterr().out
    assert "ondemand (aws, cloud, region us-east-1, type p3.2xlarge, expected $3.06/h" in shown
    assert "on-demand, $0.1360 per completed task, chance 1.000 (priors only)" in shown
    assert "deadline rule: slack 290 s" in shown
    held = plan(task(age_s=100), snapshot({f"on_demand_price/{EAST}": 3.06}), policy(), NOW)
    _explain_decision(1, 1, plan_to_json(held))
    assert "plan again by 2026-12-06T13:51:10+00:00" in capsys.readouterr().out
