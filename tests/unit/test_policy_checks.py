"""check_policy / validate_document: semantic findings beyond parse_policy, and that the errors are sound."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
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
from controlplane.policy import Match, Policy, Rule, parse_policy, plan, spot_price_key
from controlplane.policy.checks import Finding, check_policy, validate_document
from controlplane.policy.seed import BuiltinCloud, SeedClouds

REPO = Path(__file__).resolve().parents[2]
NOW = datetime(2026, 5, 4, 9, 30, tzinfo=UTC)

LOCAL = {"name": "local", "provider": "local", "private": True}
K8S = {"name": "k8s", "provider": "kubernetes", "private": True}
AWS_SETTINGS = {"image_id": "ami-0123456789abcdef0"}
AZURE_SETTINGS = {
    "subscription_id": "00000000-0000-0000-0000-000000000000",
    "resource_group": "fusionplane",
    "subnet_id": "/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/net/providers/"
    "Microsoft.Network/virtualNetworks/vnet/subnets/workers",
    "image": "Canonical:ubuntu-24_04-lts:server:latest",
    "ssh_public_key": "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIExample fusionplane",
}
AWS = {
    "name": "aws",
    "provider": "aws",
    "private": False,
    "regions": ["us-east-1"],
    "max_price_usd_h": 0.5,
    "settings": AWS_SETTINGS,
}
AZURE = {"name": "azure", "provider": "azure", "private": False, "settings": AZURE_SETTINGS}
#: the seed form's built-in clouds as an operator configures them (FUSIONPLANE_AWS_*, FUSIONPLANE_AZURE_*)
CONFIGURED = SeedClouds(
    aws=BuiltinCloud(settings={"launch_template": "fusionplane-worker"}, max_price_usd_h=0.5),
    azure=BuiltinCloud(settings=AZURE_SETTINGS),
)
TARGETS = [LOCAL, K8S, AWS, AZURE]


def _doc(*rules: dict[str, Any], targets: list[dict[str, Any]] | None = None, **top: Any) -> dict[str, Any]:
    return {"targets": TARGETS if targets is None else targets, "rules": list(rules), **top}


def _found(document: object) -> list[tuple[str, str]]:
    """(path, severity) of every finding, in order."""
    return [(f.path, f.severity) for f in validate_document(document)]


def _one(document: object) -> Finding:
    findings = validate_document(document)
    assert len(findings) == 1, [str(f) for f in findings]
    return findings[0]


# -- the shipped documents ----------------------------------------------------------------------------


def _shipped_policies() -> list[Path]:
    """default.json and the policy documents among policies/examples (it also holds a signal snapshot)."""
    paths = [REPO / "policies" / "default.json", *sorted((REPO / "policies" / "examples").glob("*.json"))]
    out = []
    for path in paths:
        document = json.loads(path.read_text(encoding="utf-8"))
        if isinstance(document, dict) and {"targets", "rules", "task_rules"} & document.keys():
            out.append(path)
    return out


@pytest.mark.parametrize("path", _shipped_policies(), ids=lambda p: p.name)
def test_shipped_policies_have_no_findings(path: Path) -> None:
    document = json.loads(path.read_text(encoding="utf-8"))
    assert [str(f) for f in validate_document(document, seed_clouds=CONFIGURED)] == []


def test_the_shipped_policies_include_both_example_forms() -> None:
    # the parametrised test above would pass vacuously if the filter dropped the examples
    assert {"default.json", "seed-form.json", "seed-table.json"} <= {p.name for p in _shipped_policies()}


# -- Finding and validate_document -------------------------------------------------------------------


def test_a_finding_prints_its_path_first_like_policy_error() -> None:
    assert str(Finding("rules[3]", "unreachable: x", "error")) == "rules[3]: unreachable: x"
    assert str(Finding("", "must be an object, not array", "error")) == "must be an object, not array"


def test_a_parse_error_is_one_error_finding_with_its_path() -> None:
    document = _doc({"name": "a", "targets": ["nowhere"]})
    finding = _one(document)
    assert finding.path == "rules[0].targets[0]"
    assert finding.severity == "error"
    assert "unknown target 'nowhere'" in finding.message


def test_a_document_that_is_not_an_object_is_one_error() -> None:
    assert _found([]) == [("", "error")]


def test_seed_form_findings_name_the_task_rules_entry() -> None:
    document = {
        "task_rules": [
            {"priority": "high"},
            {"priority": "high", "data_sensitivity": "public", "use_cloud": True},
            {"data_sensitivity": "private", "use_cloud": True, "cloud_provider": "azure"},
        ]
    }
    findings = validate_document(document, seed_clouds=CONFIGURED)
    assert [(f.path, f.severity) for f in findings] == [("task_rules[1]", "error"), ("task_rules[2]", "warning")]
    assert findings[0].message == (
        'unreachable: rule "task-rule-1" (task_rules[0]) matches every task this rule matches and has no conditions'
    )
    # a cloud entry falls back to local, which takes the private tasks; the cloud never does
    assert findings[1].message.startswith('"azure" is not private and every task this rule gets is private')


def test_seed_form_targets_never_used_name_the_built_in_target() -> None:
    # an entry with no priority and no sensitivity takes every task: the default rule never applies
    findings = validate_document({"task_rules": [{"use_cloud": False}]}, seed_clouds=CONFIGURED)
    assert [(f.path, f.severity) for f in findings] == [("task_rules", "warning"), ("task_rules", "warning")]
    assert [f.message.split(" a candidate")[0] for f in findings] == [
        'never used: no rule that can be chosen makes the seed\'s built-in target "aws"',
        'never used: no rule that can be chosen makes the seed\'s built-in target "azure"',
    ]


# -- unreachable rules --------------------------------------------------------------------------------


def test_a_rule_shadowed_by_an_earlier_broader_rule_is_an_error_naming_it() -> None:
    document = _doc(
        {"name": "film", "match": {"data_sensitivity": "private"}, "targets": ["k8s"]},
        {"name": "gpu-peak", "match": {"priority": ["high", "urgent"]}, "targets": ["aws", "k8s"]},
        {"name": "batch", "match": {"kind": "video"}, "targets": ["azure", "local"]},
        {"name": "acme", "match": {"tenant": "acme"}, "targets": ["k8s", "azure"]},
        {
            "name": "urgent-video",
            "match": {"priority": "urgent", "kind": "video", "tenant": ["acme", "globex"]},
            "targets": ["aws", "local"],
        },
    )
    finding = _one(document)
    assert (finding.path, finding.severity) == ("rules[4]", "error")
    assert str(finding) == (
        'rules[4]: unreachable: rule "gpu-peak" (rules[1]) matches every task this rule matches and has no conditions'
    )


def test_an_earlier_rule_with_conditions_shadows_nothing() -> None:
    document = _doc(
        {"name": "peak", "when": {"queue_depth_above": 10}, "targets": ["aws", "k8s"]},
        {"name": "rest", "match": {"priority": "low"}, "targets": ["local"]},
    )
    assert _found(document) == []


def test_rules_that_together_cover_a_later_rule_make_it_unreachable() -> None:
    document = _doc(
        {"name": "private", "match": {"data_sensitivity": "private"}, "targets": ["k8s"]},
        {"name": "open", "match": {"data_sensitivity": ["public", "internal"]}, "targets": ["local", "aws"]},
        {"name": "never", "match": {"kind": "image"}, "targets": ["local"]},
    )
    findings = validate_document(document)
    assert [(f.path, f.severity) for f in findings] == [("rules[2]", "error"), ("targets[3]", "warning")]
    assert findings[0].message == (
        'unreachable: rules "private" (rules[0]) and "open" (rules[1]) together match every task this rule '
        "matches and have no conditions"
    )
    # the default rule is unreachable too, so azure (listed by no rule) is never used
    assert findings[1].message.startswith('never used: no rule that can be chosen makes "azure" a candidate')


@pytest.mark.parametrize(
    ("earlier", "later", "shadowed"),
    [
        ({}, {"tenant": "acme"}, True),
        ({"tenant": ["acme", "globex"]}, {"tenant": "acme"}, True),
        ({"tenant": "acme"}, {"tenant": ["acme", "globex"]}, False),
        ({"tenant": "acme"}, {}, False),
        ({"priority": ["low", "normal", "high", "urgent"]}, {}, True),  # every priority: no constraint
        ({"labels": {"team": "*"}}, {"labels": {"team": ["vfx", "post"]}}, True),
        ({"labels": {"team": "*"}}, {"labels": {"team": "vfx", "campaign": "*"}}, True),
        ({"labels": {"team": ["vfx", "post"]}}, {"labels": {"team": "*"}}, False),
        ({"labels": {"team": ["vfx", "post"]}}, {"labels": {"team": "vfx"}}, True),
        ({"labels": {"team": "vfx"}}, {"labels": {"campaign": "*"}}, False),
        ({"labels": {"team": ["*", "vfx"]}}, {"labels": {"team": "*"}}, False),  # "*" in a list is literal
        ({"labels": {"team": "*"}}, {"labels": {"team": ["*", "vfx"]}}, True),
        ({"deadline_seconds": {"max": 300}}, {"deadline_seconds": {"min": 10, "max": 200}}, True),
        ({"deadline_seconds": {"max": 300}}, {"deadline_seconds": {"max": 300}}, True),
        ({"deadline_seconds": {"max": 300}}, {"deadline_seconds": {"max": 301}}, False),
        ({"deadline_seconds": {"max": 300}}, {}, False),  # later also takes tasks with no deadline
        ({"deadline_seconds": {"min": 0}}, {"deadline_seconds": {"max": 30}}, False),
        ({"input_bytes": {"min": 1000}}, {"input_bytes": {"min": 2000}}, True),
        ({"input_bytes": {"min": 1000}}, {"deadline_seconds": {"min": 2000}}, False),
        ({"kind": "video", "priority": "high"}, {"kind": "video"}, False),
    ],
)
def test_shadowing_compares_each_match_field(earlier: dict[str, Any], later: dict[str, Any], shadowed: bool) -> None:
    document = _doc(
        {"name": "first", "match": earlier, "targets": ["local", "aws"]},
        {"name": "second", "match": later, "targets": ["k8s", "azure"]},
        {"name": "catch-all", "targets": ["local", "k8s", "aws", "azure"]},
    )
    # only the second rule is in question (the catch-all is shadowed too when "second" takes everything)
    about_second = [(f.path, f.severity) for f in check_policy(parse_policy(document)) if f.path == "rules[1]"]
    assert about_second == ([("rules[1]", "error")] if shadowed else [])


# -- rules that can never place what they get ----------------------------------------------------------


def test_a_private_only_rule_allowing_only_non_private_targets_is_an_error() -> None:
    document = _doc({"name": "film", "match": {"data_sensitivity": "private"}, "targets": ["aws", "azure"]})
    finding = _one(document)
    assert str(finding) == (
        "rules[0]: every target it allows is non-private, so private tasks it matches can never be placed"
    )
    assert finding.severity == "error"


def test_a_rule_that_only_gets_private_tasks_because_of_earlier_rules_is_an_error() -> None:
    document = _doc(
        {"name": "open", "match": {"data_sensitivity": ["public", "internal"]}},
        {"name": "rest", "use_cloud": True},
    )
    finding = _one(document)
    assert (finding.path, finding.severity) == ("rules[1]", "error")
    assert "earlier rules with no conditions take every non-private task" in finding.message


def test_a_rule_that_may_get_private_tasks_and_allows_only_clouds_is_a_warning() -> None:
    document = _doc({"name": "campaign", "match": {"labels": {"campaign": "*"}}, "targets": ["aws"]})
    assert _found(document) == [("rules[0]", "warning")]
    # a private rule before it takes those tasks: nothing left to warn about
    private_first = _doc(
        {"name": "film", "match": {"data_sensitivity": "private"}, "targets": ["k8s"]},
        {"name": "campaign", "match": {"labels": {"campaign": "*"}}, "targets": ["aws"]},
    )
    assert _found(private_first) == []


def test_use_cloud_with_no_cloud_target_leaves_no_target() -> None:
    document = _doc({"name": "burst", "match": {"priority": "high"}, "targets": ["local", "k8s"], "use_cloud": True})
    finding = _one(document)
    assert (finding.path, finding.severity) == ("rules[0]", "error")
    assert finding.message.startswith("its actions leave no target (local: use_cloud: true and it is not a cloud")


def test_a_cloud_provider_none_of_the_targets_is_on_leaves_no_target() -> None:
    document = _doc({"name": "aws-only", "match": {"kind": "video"}, "targets": ["azure"], "cloud_provider": "aws"})
    assert _found(document) == [("rules[0]", "error")]


def test_require_outside_the_listed_targets_leaves_no_target() -> None:
    document = _doc({"name": "odd", "match": {"tenant": "acme"}, "targets": ["local"], "require": ["k8s"]})
    assert _found(document) == [("rules[0]", "error")]


# -- conditions that can never hold --------------------------------------------------------------------


def test_spot_price_under_budget_without_any_max_price_can_never_hold() -> None:
    document = _doc({"name": "cheap", "when": {"spot_price_under_budget": True}, "targets": ["azure", "local"]})
    finding = _one(document)
    assert (finding.path, finding.severity) == ("rules[0].when.spot_price_under_budget", "error")
    # a max price on the rule makes it possible again
    document["rules"][0]["max_price_usd_h"] = 0.4
    assert _found(document) == []


def test_a_budget_condition_without_a_daily_budget_can_never_hold() -> None:
    rule = {"name": "budget", "when": {"budget_left_today_usd_above": 20}, "targets": ["aws", "local"]}
    assert _found(_doc(rule)) == [("rules[0].when.budget_left_today_usd_above", "error")]
    assert _found(_doc(rule, thresholds={"daily_budget_usd": 100})) == []


# -- warnings -------------------------------------------------------------------------------------------


def test_a_target_no_rule_can_reach_is_a_warning() -> None:
    document = _doc(
        {"name": "film", "match": {"data_sensitivity": "private"}, "targets": ["k8s"]},
        {"name": "everything", "targets": ["local", "aws"]},
    )
    findings = validate_document(document)
    assert [(f.path, f.severity) for f in findings] == [("targets[3]", "warning")]
    assert str(findings[0]).startswith('targets[3]: never used: no rule that can be chosen makes "azure" a candidate')
    # while the default rule can still apply, every target may be used
    document["rules"][1]["match"] = {"priority": "high"}
    assert _found(document) == []


def test_a_target_offered_only_to_private_tasks_is_never_used_when_it_is_not_private() -> None:
    document = _doc(
        {"name": "open", "match": {"data_sensitivity": ["public", "internal"]}, "targets": ["local", "aws"]},
        {"name": "private", "targets": ["k8s", "azure"]},
    )
    assert _found(document) == [("rules[1].targets[1]", "warning"), ("targets[3]", "warning")]


def test_a_hedge_wider_than_the_allowed_targets_is_a_warning() -> None:
    document = _doc({"name": "urgent", "match": {"priority": "urgent"}, "targets": ["aws", "k8s"], "hedge": 3})
    findings = validate_document(document)
    assert [(f.path, f.severity) for f in findings] == [("rules[0].hedge", "warning")]
    assert findings[0].message == "hedge 3 but the rule allows only 2 target(s) for the tasks it gets (aws, k8s)"
    document["rules"][0]["hedge"] = 2
    assert _found(document) == []


def test_a_listed_target_the_rule_rules_out_is_a_warning() -> None:
    document = _doc({"name": "r", "match": {"priority": "low"}, "targets": ["local", "k8s"], "exclude": ["local"]})
    findings = validate_document(document)
    assert [(f.path, f.severity) for f in findings] == [("rules[0].targets[0]", "warning")]
    assert findings[0].message == '"local" is listed but the rule excludes it, so it is never a candidate'


def test_excluding_a_target_already_ruled_out_is_a_warning() -> None:
    document = _doc(
        {
            "name": "r",
            "match": {"data_sensitivity": "public", "priority": "low"},
            "use_cloud": True,
            "exclude": ["k8s", "azure"],
        }
    )
    findings = validate_document(document)
    assert [(f.path, f.severity) for f in findings] == [("rules[0].exclude[0]", "warning")]
    assert "already ruled out (use_cloud: true and it is not a cloud target)" in findings[0].message


def test_requiring_a_target_the_rule_does_not_list_is_a_warning() -> None:
    document = _doc(
        {"name": "r", "match": {"priority": "low"}, "targets": ["local", "k8s"], "require": ["local", "aws"]}
    )
    findings = validate_document(document)
    # k8s is listed but not required; aws is required but not listed: both are dead entries
    assert [(f.path, f.severity) for f in findings] == [
        ("rules[0].targets[1]", "warning"),
        ("rules[0].require[1]", "warning"),
    ]
    assert findings[0].message == '"k8s" is listed but the rule requires local, aws, so it is never a candidate'
    assert findings[1].message == (
        '"aws" is required but the rule\'s targets do not list it, so it is never a candidate'
    )


def test_duplicate_match_values_are_warnings() -> None:
    document = _doc(
        {"name": "r", "match": {"priority": ["high", "urgent", "high"], "tenant": ["acme", "acme"]}},
    )
    assert _found(document) == [("rules[0].match.priority[2]", "warning"), ("rules[0].match.tenant[1]", "warning")]


def test_a_star_inside_a_label_list_is_a_warning() -> None:
    document = _doc({"name": "r", "match": {"labels": {"team": ["vfx", "*"]}}})
    finding = _one(document)
    assert (finding.path, finding.severity) == ("rules[0].match.labels.team[1]", "warning")
    # "*" on its own, or a one-element list, is the documented wildcard
    document["rules"][0]["match"]["labels"]["team"] = ["*"]
    assert _found(document) == []


# -- soundness: what the errors claim, plan() never contradicts -----------------------------------------

PRIORITIES = [p.value for p in Priority]
SENSITIVITIES = [s.value for s in DataSensitivity]
KINDS = [k.value for k in TaskKind]
TENANTS = ["a", "b", "c"]
LABEL_KEYS = ["team", "campaign"]
LABEL_VALUES = ["x", "y", "*"]
BOUNDS = [0, 100, 300, 600]
NUMBERS = [None, 0, 1, 99, 100, 101, 299, 300, 301, 599, 600, 601, 5000]
NAMES = [t["name"] for t in TARGETS]


def _one_or_many(values: list[str]) -> st.SearchStrategy[Any]:
    # lists may repeat a value: parse_policy accepts that
    return st.sampled_from(values) | st.lists(st.sampled_from(values), min_size=1, max_size=3)


@st.composite
def _ranges(draw: st.DrawFn) -> dict[str, int]:
    low, high = sorted(draw(st.lists(st.sampled_from(BOUNDS), min_size=2, max_size=2)))
    return draw(st.sampled_from([{"min": low}, {"max": high}, {"min": low, "max": high}]))


_MATCHES = st.fixed_dictionaries(
    {},
    optional={
        "priority": _one_or_many(PRIORITIES),
        "data_sensitivity": _one_or_many(SENSITIVITIES),
        "kind": _one_or_many(KINDS),
        "tenant": _one_or_many(TENANTS),
        "labels": st.dictionaries(st.sampled_from(LABEL_KEYS), _one_or_many(LABEL_VALUES), min_size=1),
        "deadline_seconds": _ranges(),
        "input_bytes": _ranges(),
    },
)
_WHENS = st.sampled_from(
    [{}, {}, {}, {"queue_depth_above": 5}, {"spot_price_under_budget": True}, {"budget_left_today_usd_above": 10}]
)


@st.composite
def _rule(draw: st.DrawFn, index: int) -> dict[str, Any]:
    rule: dict[str, Any] = {"name": f"r{index}", "match": draw(_MATCHES), "when": draw(_WHENS)}
    if draw(st.booleans()):
        rule["targets"] = draw(st.lists(st.sampled_from(NAMES), unique=True, min_size=1))
    exclude = draw(st.lists(st.sampled_from(NAMES), unique=True, max_size=2))
    require = draw(st.lists(st.sampled_from([n for n in NAMES if n not in exclude]), unique=True, max_size=2))
    if exclude:
        rule["exclude"] = exclude
    if require:
        rule["require"] = require
    use_cloud = draw(st.sampled_from([None, None, True, False]))
    if use_cloud is not None:
        rule["use_cloud"] = use_cloud
    if use_cloud is not False and draw(st.integers(0, 3)) == 0:
        rule["cloud_provider"] = draw(st.sampled_from(["aws", "azure"]))
    rule["hedge"] = draw(st.integers(1, 4))
    return rule


@st.composite
def _documents(draw: st.DrawFn) -> dict[str, Any]:
    count = draw(st.integers(1, 5))
    aws = {**AWS, "max_price_usd_h": draw(st.sampled_from([None, 0.5]))}
    document: dict[str, Any] = {
        "targets": [LOCAL, K8S, aws, AZURE],
        "rules": [draw(_rule(i)) for i in range(count)],
    }
    if draw(st.booleans()):
        document["thresholds"] = {"daily_budget_usd": 100}
    return document


def _task(
    priority: str, sensitivity: str, kind: str, tenant: str, labels: dict[str, str], deadline: Any, size: Any
) -> Task:
    spec = TaskSpec(
        tenant=tenant,
        kind=TaskKind(kind),
        source_uri="s3://in/face.png",
        target_uri="s3://in/clip.mp4",
        output_uri="s3://out/clip.mp4",
        priority=Priority(priority),
        data_sensitivity=DataSensitivity(sensitivity),
        labels=labels,
        deadline_seconds=deadline,
        input_bytes=size,
    )
    return Task(id="tsk_check", spec=spec, state=TaskState.QUEUED, created_at=NOW, updated_at=NOW)


_TASKS = st.builds(
    _task,
    st.sampled_from(PRIORITIES),
    st.sampled_from(SENSITIVITIES),
    st.sampled_from(KINDS),
    st.sampled_from([*TENANTS, "d"]),
    st.dictionaries(st.sampled_from([*LABEL_KEYS, "other"]), st.sampled_from(["x", "y", "z", "*"])),
    st.sampled_from(NUMBERS),
    st.sampled_from(NUMBERS),
)


def _witness(data: st.DataObject, match: Match) -> Task:
    """A task that ``match`` holds for, so that a rule claimed unreachable is really put to the test."""
    draw = data.draw

    def pick(listed: tuple[str, ...], every: list[str]) -> str:
        return draw(st.sampled_from(list(listed) or every))

    labels = {
        label: draw(st.sampled_from(["x", "y", "z", "*"])) if accepted == ("*",) else draw(st.sampled_from(accepted))
        for label, accepted in match.labels.items()
    }
    if draw(st.booleans()):
        labels.setdefault("other", "x")

    def number(span: Any) -> Any:
        if span is None:
            return draw(st.sampled_from(NUMBERS))
        inside = [n for n in NUMBERS if n is not None and span.holds(n)]
        return draw(st.sampled_from(inside))

    return _task(
        pick(match.priority, PRIORITIES),
        pick(match.data_sensitivity, SENSITIVITIES),
        pick(match.kind, KINDS),
        pick(match.tenant, [*TENANTS, "d"]),
        labels,
        number(match.deadline_seconds),
        number(match.input_bytes),
    )


def _snapshots(policy: Policy) -> list[SignalSnapshot]:
    """No signals at all, and signals under which every satisfiable condition the generator writes holds."""
    values = {"queue/depth": 10.0, "budget/spent_today_usd": 0.0}
    for target in policy.targets:
        if target.provider in ("aws", "azure"):
            region = target.regions[0] if target.regions else None
            instance = target.instance_types[0] if target.instance_types else None
            values[f"spot_price/{spot_price_key(target.provider, region, instance)}"] = 0.01
    samples = {
        name: SignalSample(
            source=name.partition("/")[0],
            key=name.partition("/")[2],
            value=value,
            observed_at=NOW - timedelta(seconds=1),
            ttl_seconds=60,
        )
        for name, value in values.items()
    }
    return [SignalSnapshot(taken_at=NOW), SignalSnapshot(taken_at=NOW, samples=samples)]


def _chosen(placement: PlacementPlan) -> str | None:
    """The rule plan() chose, read from its trace (None: the implicit default rule)."""
    for line in placement.trace:
        found = re.match(r"rule (\S+): matched", line)
        if found:
            return found.group(1)
    return None


def _rule_index(path: str) -> int:
    found = re.match(r"rules\[(\d+)\]", path)
    assert found, path
    return int(found.group(1))


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(document=_documents(), tasks=st.lists(_TASKS, max_size=6), data=st.data())
def test_errors_are_sound_against_plan(document: dict[str, Any], tasks: list[Task], data: st.DataObject) -> None:
    policy = parse_policy(document)
    findings = check_policy(policy)
    errors = [f for f in findings if f.severity == "error"]
    never_chosen = {
        policy.rules[_rule_index(f.path)].name
        for f in errors
        if "unreachable" in f.message or "can never hold" in f.message
    }
    never_placed = {
        policy.rules[_rule_index(f.path)].name
        for f in errors
        if "leave no target" in f.message or "can never be placed" in f.message
    }
    never_used = {policy.targets[int(f.path[8:-1])].name for f in findings if f.path.startswith("targets[")}
    for claim, names in (("unreachable", never_chosen), ("no-candidate", never_placed), ("unused", never_used)):
        if names:
            event(f"claims {claim}")

    witnesses = []
    for rule in policy.rules:
        task = _witness(data, rule.match)
        # the witness really matches the rule when the rule stands alone
        alone = Policy(version="alone", targets=policy.targets, rules=(Rule(name=rule.name, match=rule.match),))
        assert _chosen(plan(task, SignalSnapshot(taken_at=NOW), alone, NOW)) == rule.name
        witnesses.append(task)

    for snapshot in _snapshots(policy):
        for task in [*tasks, *witnesses]:
            placement = plan(task, snapshot, policy, NOW)
            chosen = _chosen(placement)
            assert chosen not in never_chosen, (chosen, [str(f) for f in findings])
            if chosen in never_placed:
                assert placement.candidates == (), (chosen, [str(f) for f in findings])
            offered = {c.target for c in placement.candidates}
            assert not offered & never_used, (offered, [str(f) for f in findings])
