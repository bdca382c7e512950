"""A cluster's hostile or broken answers about priorities never inflate what a task may preempt.

What an API server (or a proxy in front of it) says about PriorityClasses and
pod priorities is input like any other: a priority that is not an integer,
a class list that is not a list, a class whose value is text. Each becomes a
problem on the target's poll, the free GPUs are still counted, and no
``preemptible_gpus`` sample is made from a guess.
"""

from __future__ import annotations

from typing import Any

import kmock
import pytest

from controlplane.domain import CAPACITY_SOURCE, PREEMPTIBLE_SOURCE
from controlplane.signals.kubernetes_capacity import KubernetesCapacitySource
from tests.integration import test_signals_kubernetes as base
from tests.integration.test_signals_kubernetes import (
    PRIORITY_CLASSES,
    Clusters,
    EmulatedCluster,
    make_node,
    make_pod,
    poll,
)
from tests.integration.test_signals_kubernetes_preemption import make_class, samples

pytestmark = pytest.mark.timeout(30)


# the emulated cluster, the kubeconfig and the source under test: the same fixtures as the free-GPU tests
cluster, kube, source = base.cluster, base.kube, base.source


def test_a_pod_priority_that_is_not_an_integer_makes_no_preemption_count(
    cluster: EmulatedCluster, kube: Clusters, source: KubernetesCapacitySource
) -> None:
    api = kube.add("a", cluster.url)
    make_class(api, "fp-urgent", 1_000)
    make_node(api, "n1", gpus="1")
    make_pod(api, "p1", node="n1")
    # what a compromised or buggy server might say: a priority as text, which a careless int() would accept
    cluster.on_loop(lambda: _set_priority(cluster, "p1", "-1"))

    result = poll(source, kube.target("k8s", "a", priority_classes={"urgent": "fp-urgent"}))

    assert samples(result, CAPACITY_SOURCE) == {"k8s": 0.0}
    assert samples(result, PREEMPTIBLE_SOURCE) == {}
    assert result.problems == ["k8s: malformed API answer: a pod's spec.priority is not an integer"]


@pytest.mark.parametrize(
    "answer",
    [
        {"apiVersion": "scheduling.k8s.io/v1", "kind": "PriorityClassList", "items": {"fp-urgent": 1}},
        {"apiVersion": "scheduling.k8s.io/v1", "kind": "PriorityClassList", "items": [{"metadata": {"name": "x"}}]},
        {"apiVersion": "scheduling.k8s.io/v1", "kind": "PriorityClassList", "items": ["fp-urgent"]},
        {"apiVersion": "scheduling.k8s.io/v1", "kind": "PriorityClassList", "items": [], "metadata": "x"},
    ],
)
def test_a_malformed_priority_class_list_is_a_problem_and_free_gpus_still_count(
    answer: dict[str, Any], cluster: EmulatedCluster, kube: Clusters, source: KubernetesCapacitySource
) -> None:
    api = kube.add("a", cluster.url)
    make_node(api, "n1", gpus="2")
    make_pod(api, "p1", node="n1")
    cluster.on_loop(lambda: cluster.handler[kmock.action.LIST, PRIORITY_CLASSES] << answer)

    result = poll(source, kube.target("k8s", "a", priority_classes={"urgent": "fp-urgent"}))

    assert samples(result, CAPACITY_SOURCE) == {"k8s": 1.0}
    assert samples(result, PREEMPTIBLE_SOURCE) == {}
    [problem] = result.problems
    assert problem.startswith("k8s: cannot count preemptible GPUs: malformed API answer: ")


def _set_priority(cluster: EmulatedCluster, name: str, priority: Any) -> None:
    for (resource, _namespace, pod_name), obj in cluster.handler.objects.items():
        if pod_name == name and resource.plural == "pods":
            obj.raw["spec"]["priority"] = priority
