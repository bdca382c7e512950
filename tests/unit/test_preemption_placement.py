"""A full private cluster whose PriorityClasses preempt: what plan() does with it, and how a batch counts it down.

``preemptible_gpus/<target>/<priority>`` (kubernetes_preemption) tells plan()
that a pod of the task's priority would take a lower-priority pod's GPU on a
target whose ``free_gpus`` is 0; these tests pin what it accepts, what it
ignores and what the receipt says.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest

from controlplane.api.signals import signal_rows
from controlplane.domain import PREEMPTIBLE_SOURCE, Priority, Target
from controlplane.policy import parse_policy, plan
from controlplane.scheduler.batch_capacity import taken_by_launch
from controlplane.signals.base import wanted_from_targets
from controlplane.signals.kubernetes_preemption import (
    PriorityClassInfo,
    pod_priority,
    preemptible_gpus,
    priority_classes,
)
from simulator.signals import SimClusterLoad
from simulator.world import TaskWork
from tests.unit.test_plan import STORAGE, _signals, _task
from tests.unit.test_sim_world import candidate, make

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
CLASSES = {"urgent": "fp-urgent", "high": "fp-high"}
POLICY = parse_policy(
    {
        "targets": [
            {
                "name": "k8s",
                "provider": "kubernetes",
                "private": True,
                "storage": STORAGE["kubernetes"],
                "settings": {"priority_classes": CLASSES},
            },
            {
                "name": "aws",
                "provider": "aws",
                "private": False,
                "regions": ["us-east-1"],
                "instance_types": ["g4dn.xlarge"],
                "storage": STORAGE["aws"],
            },
        ]
    }
)


def _plan(priority: Priority, values: dict[str, float | tuple[float, float]]) -> Any:
    return plan(_task(priority=priority), _signals(values), POLICY, NOW)


def test_a_full_cluster_is_a_candidate_when_the_tasks_class_would_preempt_a_lower_pod() -> None:
    result = _plan(Priority.URGENT, {"free_gpus/k8s": 0, "preemptible_gpus/k8s/urgent": 2, "free_gpus/aws": 0})
    [k8s] = [c for c in result.candidates if c.target == "k8s"]
    assert "no free GPU; 2 held by lower-priority pods, which the urgent PriorityClass preempts" in k8s.reasons
    assert result.signals_used["preemptible_gpus/k8s/urgent"]["value"] == 2
    # a cloud target is not a cluster the task's class preempts on, whatever a sample says
    assert [r.code for r in result.rejections if r.target == "aws"] == ["no_capacity"]


def test_nothing_to_preempt_rejects_it_and_says_so() -> None:
    result = _plan(Priority.HIGH, {"free_gpus/k8s": 0, "preemptible_gpus/k8s/high": 0})
    [rejection] = [r for r in result.rejections if r.target == "k8s"]
    assert rejection.code == "no_capacity"
    assert rejection.detail == ("no free GPU: free_gpus/k8s = 0, and no lower-priority pod a high pod may preempt")


def test_another_prioritys_sample_a_missing_one_or_a_stale_one_changes_nothing() -> None:
    for values in (
        {"free_gpus/k8s": 0, "preemptible_gpus/k8s/urgent": 3},  # normal has no class of its own
        {"free_gpus/k8s": 0},
    ):
        result = _plan(Priority.NORMAL, values)
        [rejection] = [r for r in result.rejections if r.target == "k8s"]
        assert (rejection.code, rejection.detail) == ("no_capacity", "no free GPU: free_gpus/k8s = 0")
        assert "preemptible_gpus/k8s/normal" not in result.signals_used  # missing: not noted
    stale = _plan(Priority.URGENT, {"free_gpus/k8s": 0, "preemptible_gpus/k8s/urgent": (3, 600.0)})
    assert [r.code for r in stale.rejections if r.target == "k8s"] == ["no_capacity"]
    assert stale.signals_used["preemptible_gpus/k8s/urgent"]["stale"] is True


def test_a_cluster_with_free_gpus_does_not_read_what_it_could_preempt() -> None:
    result = _plan(Priority.URGENT, {"free_gpus/k8s": 2, "preemptible_gpus/k8s/urgent": 5})
    assert result.candidates[0].target == "k8s"
    assert "2 free GPU(s)" in result.candidates[0].reasons
    assert "preemptible_gpus/k8s/urgent" not in result.signals_used


def test_a_batch_counts_each_preempting_launch_against_its_own_and_every_lower_priority() -> None:
    values: dict[str, float | tuple[float, float]] = {
        "free_gpus/k8s": 0,
        "preemptible_gpus/k8s/urgent": 3,
        "preemptible_gpus/k8s/high": 1,
        "preemptible_gpus/k8s/normal": 1,
    }
    snapshot = _signals(values)
    group = list(_plan(Priority.HIGH, values).candidates)
    after = taken_by_launch(snapshot, group, Priority.HIGH)
    left = {name: sample.value for name, sample in after.samples.items()}
    # the victim was below high; urgent could take the new high pod instead, so urgent keeps its 3
    assert left == {
        "free_gpus/k8s": 0,
        "preemptible_gpus/k8s/urgent": 3,
        "preemptible_gpus/k8s/high": 0,
        "preemptible_gpus/k8s/normal": 0,
    }
    assert "k8s" in [c.target for c in _plan(Priority.HIGH, values).candidates]
    assert "k8s" not in [c.target for c in plan(_task(priority=Priority.HIGH), after, POLICY, NOW).candidates]
    # a free GPU is taken first, and then nothing preemptible is counted down
    free = taken_by_launch(_signals({"free_gpus/k8s": 1, "preemptible_gpus/k8s/high": 1}), group, Priority.HIGH)
    assert {n: s.value for n, s in free.samples.items()} == {"free_gpus/k8s": 0, "preemptible_gpus/k8s/high": 1}


# -- counting from the cluster's objects (what the kubernetes source reads) -----------------------


def test_priority_classes_are_read_by_name_and_never_preempting_ones_are_marked() -> None:
    classes = priority_classes(
        [
            {"metadata": {"name": "fp-urgent"}, "value": 1_000_000},
            {"metadata": {"name": "fp-polite"}, "value": 5, "preemptionPolicy": "Never"},
            {"metadata": {"name": "fp-explicit"}, "value": -3, "preemptionPolicy": "PreemptLowerPriority"},
        ]
    )
    assert classes == {
        "fp-urgent": PriorityClassInfo(value=1_000_000, preempts=True),
        "fp-polite": PriorityClassInfo(value=5, preempts=False),
        "fp-explicit": PriorityClassInfo(value=-3, preempts=True),
    }


@pytest.mark.parametrize(
    ("items", "message"),
    [
        ([{"metadata": {"name": "x"}, "value": "1000"}], "no integer value"),
        ([{"metadata": {"name": "x"}, "value": True}], "no integer value"),
        ([{"metadata": {}, "value": 1}], "no metadata.name"),
        ([{"metadata": "x", "value": 1}], "metadata is not an object"),
        (["fp-urgent"], "priority class is not an object"),
    ],
)
def test_a_malformed_priority_class_is_an_error_not_a_guess(items: list[Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        priority_classes(items)


def test_a_pods_priority_defaults_to_zero_and_must_be_an_integer() -> None:
    assert pod_priority({"spec": {}}) == 0
    assert pod_priority({"spec": {"priority": -10}}) == -10
    for bad in ("100", 1.5, True):
        with pytest.raises(ValueError, match=r"spec\.priority"):
            pod_priority({"spec": {"priority": bad}})


def test_preemptible_gpus_per_priority_only_on_the_eligible_nodes() -> None:
    target = Target(
        name="k8s",
        provider="kubernetes",
        private=True,
        settings={"priority_classes": {"urgent": "u", "high": "h", "normal": "never", "low": "gone"}},
    )
    classes = {
        "u": PriorityClassInfo(value=100, preempts=True),
        "h": PriorityClassInfo(value=10, preempts=True),
        "never": PriorityClassInfo(value=5, preempts=False),
    }
    held = {100: {"a": Decimal(2), "b": Decimal("1.5"), "cordoned": Decimal(4)}, 10: {"a": Decimal(1)}}
    asked: list[int] = []

    def held_below(value: int) -> dict[str, Decimal]:
        asked.append(value)
        return held[value]

    counts, problems = preemptible_gpus(target, classes, ["a", "b"], held_below)
    assert counts == {"urgent": 3, "high": 1}  # 2 + floor(1.5); the cordoned node is not eligible
    assert problems == ["k8s: PriorityClass 'gone' (priority_classes.low) does not exist"]
    assert sorted(asked) == [10, 100]


# -- the simulator's cluster reports the same signal ---------------------------------------------


def test_the_simulated_cluster_reports_what_each_class_may_preempt_only_when_its_classes_preempt() -> None:
    k8s = POLICY.targets[0]
    for preemption, expected in ((True, {"k8s/urgent": 1.0, "k8s/high": 1.0}), (False, {})):
        world = make([(0, 0)], gpus=1, preemption=preemption)
        world.tasks["t"] = TaskWork(work_s=100.0, segment_s=None)
        world.launch("a", "t", k8s, candidate(k8s), "low")
        wanted = wanted_from_targets(POLICY.targets)
        result = SimClusterLoad(world).poll(wanted, timeout_s=1, clock=lambda: NOW)
        found = {s.key: s.value for s in result.samples if s.source == PREEMPTIBLE_SOURCE}
        assert found == expected


def test_the_signals_api_says_a_preemptible_count_is_in_gpus() -> None:
    rows = signal_rows(_signals({"preemptible_gpus/k8s/urgent": 2, "gpu_utilization/k8s": 0.5}))
    assert {row["name"]: row["unit"] for row in rows} == {
        "gpu_utilization/k8s": None,
        "preemptible_gpus/k8s/urgent": "gpus",
    }
