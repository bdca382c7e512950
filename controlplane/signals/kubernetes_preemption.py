"""What a pod of each task priority could take on a full Kubernetes target by preemption.

``preemptible_gpus/<target>/<priority>`` for each task priority that the
target's ``priority_classes`` maps to a PriorityClass: the GPUs on the
target's eligible nodes held by running pods of a lower priority than that
class, which kube-scheduler would evict to make room (its default
``preemptionPolicy: PreemptLowerPriority``). ``plan()`` reads it only for a
full target: a pod sent there then takes a lower pod's GPU instead of the
task waiting in FusionPlane's queue (docs/signals.md, "Preemption on
Kubernetes").

Counted as the scheduler would, per node, from what the capacity source
already read: a pod's priority is its ``spec.priority`` (the admission
controller resolves it from the class; no class and no global default is
0), its GPUs are its effective request (the same rules as free GPUs), a node
counts when the target may use it (eligible for free GPUs), and a
node's lower-priority GPUs are rounded down (half a GPU frees no pod). A
class that does not exist is a problem, not a count; a class with
``preemptionPolicy: Never`` gives no sample, as its pods never preempt.
Two things are not modelled: a PodDisruptionBudget holds no GPU back
(kube-scheduler violates one when nothing else frees room), and a victim's
graceful termination delays the new pod by the victim's grace period.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from decimal import ROUND_FLOOR, Decimal
from typing import Any

from controlplane.domain import Target

__all__ = ["PriorityClassInfo", "pod_priority", "preemptible_gpus", "priority_classes"]

#: kube-scheduler's default when a PriorityClass names no preemptionPolicy
_DEFAULT_POLICY = "PreemptLowerPriority"
_ZERO = Decimal(0)

#: GPU requests per node of the bound, running pods whose priority is below the value given
HeldBelow = Callable[[int], Mapping[str, Decimal]]


@dataclass(frozen=True, kw_only=True)
class PriorityClassInfo:
    value: int
    #: whether its pods preempt lower ones (``preemptionPolicy`` other than ``Never``)
    preempts: bool


def _mapping(value: Any, what: str) -> Mapping[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ValueError(f"{what} is not an object")
    return value


def priority_classes(items: Iterable[Any]) -> dict[str, PriorityClassInfo]:
    """The cluster's PriorityClasses by name, from a ``scheduling.k8s.io/v1`` list (ValueError if malformed)."""
    found: dict[str, PriorityClassInfo] = {}
    for item in items:
        item = _mapping(item, "priority class")
        name = _mapping(item.get("metadata"), "priority class metadata").get("name")
        value = item.get("value")
        if not isinstance(name, str) or not name:
            raise ValueError("a priority class has no metadata.name")
        if not isinstance(value, int) or isinstance(value, bool):
            raise ValueError(f"priority class {name} has no integer value")
        policy = item.get("preemptionPolicy") or _DEFAULT_POLICY
        found[name] = PriorityClassInfo(value=value, preempts=policy != "Never")
    return found


def pod_priority(pod: Mapping[str, Any]) -> int:
    """A pod's ``spec.priority``: 0 when unset (no class and no global default)."""
    priority = _mapping(pod.get("spec"), "pod spec").get("priority")
    if priority is None:
        return 0
    if not isinstance(priority, int) or isinstance(priority, bool):
        raise ValueError("a pod's spec.priority is not an integer")
    return priority


def preemptible_gpus(
    target: Target, classes: Mapping[str, PriorityClassInfo], eligible_nodes: Sequence[str], held_below: HeldBelow
) -> tuple[dict[str, int], list[str]]:
    """Task priority -> GPUs its class may preempt on ``target``'s eligible nodes; and the problems found.

    ``held_below(value)`` gives the GPUs held per node by pods of a priority
    below ``value``; it is asked once per distinct class value.
    """
    mapping = target.settings.get("priority_classes") or {}
    counts: dict[str, int] = {}
    problems: list[str] = []
    by_value: dict[int, Mapping[str, Decimal]] = {}
    for priority, class_name in sorted(mapping.items()):
        info = classes.get(class_name)
        if info is None:
            problems.append(f"{target.name}: PriorityClass {class_name!r} (priority_classes.{priority}) does not exist")
            continue
        if not info.preempts:
            continue
        if info.value not in by_value:
            by_value[info.value] = held_below(info.value)
        held = by_value[info.value]
        counts[priority] = sum(
            int(held.get(node, _ZERO).to_integral_value(rounding=ROUND_FLOOR)) for node in eligible_nodes
        )
    return counts, problems
