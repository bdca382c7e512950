"""plan(): pure, deterministic, explainable, and never puts private data on a non-private target."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from controlplane.domain import (
    DataSensitivity,
    Priority,
    SignalSample,
    SignalSnapshot,
    Task,
    TaskKind,
    TaskSpec,
    TaskState,
)
from controlplane.policy import Policy, parse_policy, plan
from controlplane.policy_sources import load_policy_file
from controlplane.policy_sources.sources import DEFAULT_POLICY_PATH

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def _task(
    *,
    sensitivity: DataSensitivity = DataSensitivity.PUBLIC,
    priority: Priority = Priority.NORMAL,
    kind: TaskKind = TaskKind.IMAGE,
    tenant: str = "acme",
    task_id: str = "task-1",
) -> Task:
    spec = TaskSpec(
        tenant=tenant,
        kind=kind,
        source_uri="file:///in/face.png",
        target_uri="file:///in/target.png",
        output_uri="file:///out/x.png",
        priority=priority,
        data_sensitivity=sensitivity,
    )
    return Task(id=task_id, spec=spec, state=TaskState.QUEUED, created_at=NOW, updated_at=NOW)


def _signals(values: dict[str, float | tuple[float, float]]) -> SignalSnapshot:
    """Samples by full name (``spot_price/aws/us-east-1/g4dn.xlarge``): a number (1 s old) or (value, age); TTL 60 s."""
    samples = {}
    for name, spec in values.items():
        value, age = spec if isinstance(spec, tuple) else (spec, 1.0)
        source, _, key = name.partition("/")
        samples[f"{source}/{key}"] = SignalSample(
            source=source, key=key, value=value, observed_at=NOW - timedelta(seconds=age), ttl_seconds=60
        )
    return SignalSnapshot(taken_at=NOW, samples=samples)


def _capacity(**free: float | tuple[float, float]) -> SignalSnapshot:
    """free_gpus/<target> samples: a number (fresh) or (value, age in seconds); TTL 60 s."""
    return _signals({f"free_gpus/{name}": spec for name, spec in free.items()})


#: a store per provider, so the tasks' local files reach every target (staged); the guard has its own tests
STORAGE: dict[str, dict[str, str]] = {
    "kubernetes": {"uri": "pvc://fp-work/tasks/", "mount_path": "/mnt/work"},
    "aws": {"uri": "s3://fp-work/aws/"},
    "azure": {"uri": "az://fpwork/work/"},
}

HYBRID: dict[str, Any] = {
    "targets": [
        {"name": "local", "provider": "local", "private": True},
        {
            "name": "k8s",
            "provider": "kubernetes",
            "private": True,
            "regions": ["dc1"],
            "storage": STORAGE["kubernetes"],
        },
        {
            "name": "aws",
            "provider": "aws",
            "private": False,
            "regions": ["us-east-1"],
            "instance_types": ["g4dn.xlarge"],
            "storage": STORAGE["aws"],
        },
        {"name": "azure", "provider": "azure", "private": False, "max_price_usd_h": 0.9, "storage": STORAGE["azure"]},
    ],
    "rules": [
        {"name": "film", "match": {"data_sensitivity": "private"}, "targets": ["k8s", "local"]},
        {"name": "urgent", "match": {"priority": "urgent", "kind": "video"}, "targets": ["azure", "aws"]},
        {"name": "campaign", "match": {"tenant": ["marketing"]}, "targets": ["aws", "k8s"]},
        {"name": "rest", "exclude": ["azure"]},
    ],
}
POLICY = parse_policy(HYBRID)
EMPTY = SignalSnapshot(taken_at=NOW)


def _names(result: Any) -> list[str]:
    return [c.target for c in result.candidates]


def test_the_default_policy_places_everything_locally() -> None:
    policy = load_policy_file(DEFAULT_POLICY_PATH)
    result = plan(_task(), EMPTY, policy, NOW)
    assert _names(result) == ["local"]
    assert result.rejections == ()
    assert result.policy_version == policy.version
    assert result.decided_at == NOW
    assert any("matched" in line for line in result.trace)


def test_first_matching_rule_wins_and_the_trace_says_why_others_did_not() -> None:
    result = plan(_task(priority=Priority.URGENT, kind=TaskKind.VIDEO), EMPTY, POLICY, NOW)
    # azure has a max price and no fresh price: a cloud is never chosen on an unknown price
    assert _names(result) == ["aws"]
    assert result.trace[0].startswith("rule film: no match (data_sensitivity public not in [private])")
    assert result.trace[1].startswith("rule urgent: matched")
    assert result.trace[2] == "2 later rule(s) not evaluated (first match wins)"
    assert {r.target: r.code for r in result.rejections} == {
        "local": "excluded_by_rule",
        "k8s": "excluded_by_rule",
        "azure": "stale_price",
    }
    assert result.candidates[0].reasons[0] == "rule urgent ranks it 2 of 2"
    priced = plan(
        _task(priority=Priority.URGENT, kind=TaskKind.VIDEO), _signals({"spot_price/azure/-/-": 0.4}), POLICY, NOW
    )
    assert _names(priced) == ["azure", "aws"]
    assert priced.candidates[0].expected_usd_h == 0.4
    # the urgent rule needs a video: an urgent image falls through to the later rules
    image = plan(_task(priority=Priority.URGENT, kind=TaskKind.IMAGE), EMPTY, POLICY, NOW)
    assert "rule urgent: no match (kind image not in [video])" in image.trace


def test_tenant_match_and_order_of_preference() -> None:
    result = plan(_task(tenant="marketing"), EMPTY, POLICY, NOW)
    assert _names(result) == ["aws", "k8s"]
    assert result.candidates[0].instance_type == "g4dn.xlarge"
    assert result.candidates[0].region == "us-east-1"


def test_exclusions_and_document_order() -> None:
    result = plan(_task(), EMPTY, POLICY, NOW)
    assert _names(result) == ["local", "k8s", "aws"]
    (rejection,) = result.rejections
    assert (rejection.target, rejection.code) == ("azure", "excluded_by_rule")
    assert "rest excludes it" in rejection.detail


def test_no_rule_matching_falls_back_to_every_target_in_document_order() -> None:
    policy = parse_policy(
        {"targets": HYBRID["targets"], "rules": [{"match": {"tenant": "nobody"}, "targets": ["aws"]}]}
    )
    result = plan(_task(), EMPTY, policy, NOW)
    assert _names(result) == ["local", "k8s", "aws"]  # azure: max price, no price
    assert "rule default: no rule matched; every target in document order" in result.trace


def test_private_data_never_leaves_private_targets_whatever_the_rules_say() -> None:
    # a policy that tries hard to send private data to the cloud
    policy = parse_policy(
        {
            "targets": HYBRID["targets"],
            "rules": [{"match": {"data_sensitivity": "private"}, "targets": ["aws", "azure"]}],
        }
    )
    result = plan(_task(sensitivity=DataSensitivity.PRIVATE), EMPTY, policy, NOW)
    assert result.candidates == ()
    codes = {r.target: r.code for r in result.rejections}
    assert codes == {
        "aws": "private_data",
        "azure": "private_data",
        "local": "excluded_by_rule",
        "k8s": "excluded_by_rule",
    }
    assert not result.placeable
    # with the hybrid policy, the private targets in the film rule's order
    film = plan(_task(sensitivity=DataSensitivity.PRIVATE), EMPTY, POLICY, NOW)
    assert _names(film) == ["k8s", "local"]
    assert all(c.private for c in film.candidates)
    assert {r.target: r.code for r in film.rejections} == {"aws": "private_data", "azure": "private_data"}


def test_a_full_target_is_rejected_on_a_fresh_capacity_signal() -> None:
    result = plan(_task(), _capacity(local=0, k8s=3), POLICY, NOW)
    assert _names(result) == ["k8s", "aws"]
    local = next(r for r in result.rejections if r.target == "local")
    assert local.code == "no_capacity"
    assert "free_gpus/local = 0" in local.detail
    assert result.signals_used["free_gpus/local"] == {
        "value": 0,
        "age_seconds": 1.0,
        "ttl_seconds": 60,
        "stale": False,
        "missing": False,
    }
    assert "3 free GPU(s)" in result.candidates[0].reasons


def test_the_local_targets_capacity_is_worded_as_slots_not_gpus() -> None:
    """The local provider counts worker slots on this machine, which may have no GPU at all."""
    full = plan(_task(), _capacity(local=0, k8s=3), POLICY, NOW)
    local = next(r for r in full.rejections if r.target == "local")
    assert local.detail == "no free local slot: free_gpus/local = 0"
    free = plan(_task(), _capacity(local=2), POLICY, NOW)
    assert free.candidates[0].target == "local"
    assert "2 free local slot(s)" in free.candidates[0].reasons
    assert not any("GPU" in reason for reason in free.candidates[0].reasons)


def test_stale_or_missing_signals_are_recorded_but_never_used() -> None:
    result = plan(_task(), _capacity(local=(0, 600), k8s=(5, 600)), POLICY, NOW)
    assert _names(result) == ["local", "k8s", "aws"]  # a stale zero does not reject
    assert result.signals_used["free_gpus/local"]["stale"] is True
    assert result.signals_used["free_gpus/local"]["age_seconds"] == 600.0
    assert result.signals_used["free_gpus/aws"] == {
        "value": None,
        "age_seconds": None,
        "stale": True,
        "missing": True,
    }
    for candidate in result.candidates:  # a stale value is never a reason to choose
        assert not any("free" in reason for reason in candidate.reasons)
    assert any("free_gpus/local: stale" in line for line in result.trace)


def test_plan_is_deterministic_and_does_not_touch_its_inputs() -> None:
    snapshot = _capacity(local=1, aws=(0, 120))
    before = (POLICY, snapshot)
    first = plan(_task(), snapshot, POLICY, NOW)
    assert plan(_task(), snapshot, POLICY, NOW) == first
    assert (POLICY, snapshot) == before
    later = plan(_task(), snapshot, POLICY, NOW + timedelta(seconds=30))
    assert later.signals_used["free_gpus/local"]["age_seconds"] == 31.0


def test_policy_version_is_stable() -> None:
    assert parse_policy(HYBRID).version == POLICY.version
    assert parse_policy(dict(reversed(list(HYBRID.items())))).version == POLICY.version
    assert plan(_task(), EMPTY, POLICY, NOW).policy_version == POLICY.version


# -- property-based: for ANY policy, snapshot and task -------------------------------------------

_NAMES = ["t0", "t1", "t2", "t3", "t4", "t5"]


@st.composite
def _policies(draw: st.DrawFn) -> Policy:
    names = draw(st.lists(st.sampled_from(_NAMES), min_size=1, max_size=6, unique=True))
    targets = []
    for n in names:
        provider = draw(st.sampled_from(["local", "kubernetes", "aws", "azure"]))
        target: dict[str, Any] = {"name": n, "provider": provider, "private": draw(st.booleans())}
        if draw(st.booleans()):
            target["max_price_usd_h"] = draw(st.sampled_from([0.25, 0.5]))
        if provider != "local" and draw(st.booleans()):  # without one, the task's local files are out of reach
            target["storage"] = STORAGE[provider]
        targets.append(target)

    def some(values: list[str]) -> Any:
        return draw(st.one_of(st.sampled_from(values), st.lists(st.sampled_from(values), min_size=1, max_size=3)))

    rules = []
    for index in range(draw(st.integers(0, 5))):
        match: dict[str, Any] = {}
        if draw(st.booleans()):
            match["priority"] = some([p.value for p in Priority])
        if draw(st.booleans()):
            match["data_sensitivity"] = some([s.value for s in DataSensitivity])
        if draw(st.booleans()):
            match["kind"] = some([k.value for k in TaskKind])
        if draw(st.booleans()):
            match["tenant"] = some(["acme", "marketing", "film"])
        rule: dict[str, Any] = {"name": f"r{index}", "match": match}
        rule["targets"] = draw(st.lists(st.sampled_from(names), unique=True, max_size=len(names)))
        rule["exclude"] = draw(st.lists(st.sampled_from(names), unique=True, max_size=len(names)))
        when: dict[str, Any] = {}
        if draw(st.booleans()):
            when["peak"] = draw(st.sampled_from(names))
        if draw(st.booleans()):
            when["spot_price_under_budget"] = True
        if draw(st.booleans()):
            when["queue_depth_above"] = draw(st.integers(0, 200))
        if when:
            rule["when"] = when
        use_cloud = draw(st.sampled_from([None, True, False]))
        if use_cloud is not None:
            rule["use_cloud"] = use_cloud
            if use_cloud and draw(st.booleans()):
                rule["cloud_provider"] = draw(st.sampled_from(["aws", "azure"]))
        if draw(st.booleans()):
            rule["max_price_usd_h"] = draw(st.sampled_from([0.2, 0.5, 1.0]))
        rule["hedge"] = draw(st.integers(1, 3))
        rules.append(rule)
    thresholds: dict[str, Any] = {}
    if draw(st.booleans()):
        thresholds["daily_budget_usd"] = draw(st.sampled_from([0, 1.0, 100.0]))
    if draw(st.booleans()):
        thresholds["tenant_daily_budget_usd"] = draw(
            st.one_of(
                st.sampled_from([0, 1.0, 100.0]),
                st.dictionaries(st.sampled_from(["acme", "marketing", "*"]), st.sampled_from([0, 1.0]), min_size=1),
            )
        )
    return parse_policy({"targets": targets, "rules": rules, "thresholds": thresholds})


_tasks = st.builds(
    lambda s, p, k, t: _task(sensitivity=s, priority=p, kind=k, tenant=t),
    st.sampled_from(DataSensitivity),
    st.sampled_from(Priority),
    st.sampled_from(TaskKind),
    st.sampled_from(["acme", "marketing", "film"]),
)
_SIGNAL_NAMES = (
    [f"free_gpus/{n}" for n in _NAMES]
    + [f"gpu_utilization/{n}" for n in _NAMES]
    + [f"spot_price/{p}/-/-" for p in ("aws", "azure")]
    + [f"breaker/{p}/-/-" for p in ("aws", "azure")]
    + ["queue/depth", "budget/spent_today_usd", "budget/spent_today_usd/acme", "budget/spent_today_usd/marketing"]
)
_snapshots = st.dictionaries(
    st.sampled_from(_SIGNAL_NAMES),
    st.tuples(st.sampled_from([0.0, 0.1, 0.3, 0.6, 0.95, 1.0, 3.0, 150.0]), st.floats(0, 900)),
    max_size=12,
).map(_signals)


@settings(max_examples=300, deadline=None)
@given(policy=_policies(), task=_tasks, snapshot=_snapshots)
def test_any_plan_keeps_private_data_private_and_accounts_for_every_target(
    policy: Policy, task: Task, snapshot: SignalSnapshot
) -> None:
    result = plan(task, snapshot, policy, NOW)
    if task.spec.data_sensitivity is DataSensitivity.PRIVATE:
        assert all(c.private for c in result.candidates)
        for target in policy.targets:
            if not target.private:
                assert any(r.target == target.name and r.code == "private_data" for r in result.rejections)
    candidates = [c.target for c in result.candidates]
    rejected = [r.target for r in result.rejections]
    assert sorted(candidates + rejected) == sorted(t.name for t in policy.targets)  # each exactly once
    assert all(r.code and r.detail for r in result.rejections)
    assert all(c.reasons for c in result.candidates)
    assert plan(task, snapshot, policy, NOW) == result
    for used in result.signals_used.values():
        assert used["missing"] or used["age_seconds"] >= 0
    for rejection in result.rejections:  # a stale or missing price never puts a cloud in the plan
        assert rejection.code in {
            "private_data",
            "excluded_by_rule",
            "budget_exhausted",
            "budget_unknown",
            "no_capacity",
            "breaker_open",
            "price_above_max",
            "stale_price",
            "unreachable_input",
        }
    storeless = {t.name for t in policy.targets if t.provider != "local" and t.storage is None}
    assert not storeless & {c.target for c in result.candidates}  # the task's local files reach no such target

    def fresh(name: str) -> float | None:
        sample = snapshot.samples.get(name)
        return None if sample is None or sample.age_seconds(NOW) > 60 else sample.value

    clouds = [c for c in result.candidates if c.provider in ("aws", "azure")]
    for candidate in clouds:  # an open breaker never launches, a stale or missing one never blocks
        assert (fresh(f"breaker/{candidate.provider}/-/-") or 0) < 1
    t = policy.thresholds
    daily, own = t.daily_budget_usd, t.tenant_budget(task.spec.tenant)
    if clouds and (daily is not None or own is not None):  # a cloud only under a known, unspent budget
        total = fresh("budget/spent_today_usd")
        assert total is not None
        assert daily is None or total < daily
        assert own is None or (fresh(f"budget/spent_today_usd/{task.spec.tenant}") or 0) < own
    for candidate in result.candidates:
        if candidate.max_price_usd_h is not None and candidate.provider in ("aws", "azure"):
            assert candidate.expected_usd_h is not None
            assert candidate.expected_usd_h <= candidate.max_price_usd_h
    groups = [c.hedge_group for c in result.candidates]
    assert groups == sorted(groups, key=lambda g: g is None)  # hedged candidates come first
