"""Pods on a cloud node pool (EKS with Karpenter or a managed node group, AKS with a spot pool): pure functions.

Landing: each autoscaler labels (and AKS taints) the nodes it brings with
their capacity type, so the pod asks for the pool's capacity type and the
instance type its candidate was priced at (the receipt's price is then the
node's, and a refusal counts against that offer's breaker):

==================  ===============================================  ==========================================
autoscaler          node selector                                    toleration
==================  ===============================================  ==========================================
``karpenter``       ``karpenter.sh/capacity-type: spot|on-demand``   none (the NodePool's own taints: settings)
``eks-node-group``  ``eks.amazonaws.com/capacityType: SPOT|ON_DEMAND``  none
``aks-node-pool``   ``kubernetes.azure.com/scalesetpriority: spot``  ``kubernetes.azure.com/scalesetpriority=spot:
                    (spot pools only)                                NoSchedule``, which AKS puts on spot nodes
==================  ===============================================  ==========================================

Urgent pods spread across zones (soft: a zone out of spot capacity must not
keep an urgent task pending), so one zone's reclaim does not take them all.

Losing the node: a spot pool's pod whose Job failed with no pod left went
with its node (Karpenter drained it for an interruption, or AKS evicted the
VM and the pod was garbage-collected): the attempt is ``preempted`` and
resumes from its checkpoint elsewhere. Capacity: a pod unschedulable past the
pool's ``capacity_wait_seconds`` while the autoscaler says it will not scale
up, or at once when Karpenter reports ``InsufficientCapacity``, is a
capacity refusal (``BackendStatus.capacity_refusal``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from controlplane.domain import InvalidSpec
from controlplane.domain.cloud_pool import AKS_NODE_POOL, EKS_NODE_GROUP, KARPENTER, CloudPool

__all__ = [
    "AKS_SPOT_LABEL",
    "EKS_CAPACITY_LABEL",
    "INSTANCE_TYPE_LABEL",
    "KARPENTER_CAPACITY_LABEL",
    "ZONE_LABEL",
    "capacity_refusal",
    "pool_pod_fields",
]

KARPENTER_CAPACITY_LABEL = "karpenter.sh/capacity-type"
EKS_CAPACITY_LABEL = "eks.amazonaws.com/capacityType"
AKS_SPOT_LABEL = "kubernetes.azure.com/scalesetpriority"
#: well known on every node (kubelet), so it pins the priced instance type on all three autoscalers
INSTANCE_TYPE_LABEL = "node.kubernetes.io/instance-type"
ZONE_LABEL = "topology.kubernetes.io/zone"
#: the event reasons that say the autoscaler is bringing a node for the pod (cluster autoscaler, Karpenter)
SCALING_UP = frozenset({"TriggeredScaleUp", "Nominated"})
#: ... and that it will not (the cluster autoscaler's word: no node group can fit it)
NOT_SCALING_UP = frozenset({"NotTriggerScaleUp"})
#: Karpenter's word for a cloud that has no capacity of the types a NodePool allows
INSUFFICIENT_CAPACITY = "InsufficientCapacity"
#: how much of an event's text a refusal keeps: it becomes the attempt's reason, shown in receipts and consoles
_EVENT_TEXT = 300


def pool_pod_fields(
    pool: CloudPool,
    *,
    instance_type: str | None,
    urgent: bool,
    spread_labels: Mapping[str, str],
    node_selector: Mapping[str, str],
    tolerations: Iterable[Mapping[str, Any]],
    target: str,
) -> dict[str, Any]:
    """The pod fields that land it on ``pool``: the selector and tolerations merged with the settings' own.

    ``InvalidSpec`` when the target's ``settings.node_selector`` asks for another
    capacity type or instance type than the pool's: the pod would never land
    where it was priced.
    """
    wanted = _pool_selector(pool, instance_type)
    for key, value in wanted.items():
        if key in node_selector and node_selector[key] != value:
            raise InvalidSpec(
                f"target {target}: settings.node_selector {key}={node_selector[key]!r} contradicts its "
                f"cloud node pool ({key}={value!r})",
                target=target,
            )
    merged = [dict(t) for t in tolerations]
    for toleration in _pool_tolerations(pool):
        if toleration not in merged:
            merged.append(toleration)
    fields: dict[str, Any] = {"nodeSelector": {**node_selector, **wanted}}
    if merged:
        fields["tolerations"] = merged
    if urgent:
        fields["topologySpreadConstraints"] = [
            {
                "maxSkew": 1,
                "topologyKey": ZONE_LABEL,
                # soft: a zone out of spot capacity must not keep urgent work pending
                "whenUnsatisfiable": "ScheduleAnyway",
                "labelSelector": {"matchLabels": dict(spread_labels)},
            }
        ]
    return fields


def _pool_selector(pool: CloudPool, instance_type: str | None) -> dict[str, str]:
    selector: dict[str, str] = {}
    if pool.autoscaler == KARPENTER:
        selector[KARPENTER_CAPACITY_LABEL] = pool.capacity_type
    elif pool.autoscaler == EKS_NODE_GROUP:
        selector[EKS_CAPACITY_LABEL] = "SPOT" if pool.spot else "ON_DEMAND"
    elif pool.autoscaler == AKS_NODE_POOL and pool.spot:
        selector[AKS_SPOT_LABEL] = "spot"
    if instance_type:
        selector[INSTANCE_TYPE_LABEL] = instance_type
    return selector


def _pool_tolerations(pool: CloudPool) -> list[dict[str, str]]:
    if pool.autoscaler == AKS_NODE_POOL and pool.spot:
        # AKS taints every spot node so that only pods that accept eviction land there
        return [{"key": AKS_SPOT_LABEL, "operator": "Equal", "value": "spot", "effect": "NoSchedule"}]
    return []


def capacity_refusal(pool: CloudPool, *, unschedulable_for_s: int, events: Iterable[Mapping[str, Any]]) -> str | None:
    """Why the pool's cloud will not bring a node for a pending pod, or None while it may still come.

    ``events`` are the pod's events, oldest first. Karpenter's
    ``InsufficientCapacity`` is final at once; otherwise a pod past the
    pool's wait is refused unless the newest autoscaler event says a node is
    on its way (then the policy's ``unschedulable_timeout_seconds`` decides).
    """
    latest_autoscaler: Mapping[str, Any] | None = None
    for event in events:
        reason, message = _text(event.get("reason")), _text(event.get("message"))
        if INSUFFICIENT_CAPACITY in reason or INSUFFICIENT_CAPACITY in message:
            return f"{_source(event)} {reason}: {message}".strip().rstrip(":")
        if reason in SCALING_UP or reason in NOT_SCALING_UP:
            latest_autoscaler = event
    if unschedulable_for_s <= pool.capacity_wait_seconds:
        return None
    if latest_autoscaler is not None and latest_autoscaler.get("reason") in SCALING_UP:
        return None
    said = (
        f"; {_text(latest_autoscaler.get('reason'))}: {_text(latest_autoscaler.get('message'))}".rstrip(": ")
        if latest_autoscaler is not None
        else "; no scale-up"
    )
    return (
        f"no {pool.provider} {pool.capacity_type} node came in {pool.region} within "
        f"{pool.capacity_wait_seconds:g} s (unschedulable for {unschedulable_for_s} s{said})"
    )


def _text(value: Any) -> str:
    """An event field as one short printable line: events are written by whoever may write to the cluster."""
    text = "".join(c if c.isprintable() else " " for c in str(value or ""))
    return text if len(text) <= _EVENT_TEXT else text[: _EVENT_TEXT - 3] + "..."


def _source(event: Mapping[str, Any]) -> str:
    source = event.get("source")
    component = (source.get("component") if isinstance(source, Mapping) else None) or event.get("reportingComponent")
    return _text(component) or "autoscaler"
