"""A Kubernetes target's cloud node pool: the spot or on-demand machines its cluster's autoscaler brings.

An EKS cluster with a Karpenter NodePool or a managed node group, or an AKS
cluster with a spot node pool, runs each attempt as a pod, but the node
under that pod is bought from the same cloud market as a spot VM. The pool
says which market (cloud, region, capacity type, instance types) so that
``plan()`` prices, caps, budgets and breaks it exactly as it does a VM
target of that cloud, and so the provider knows which node labels and
taints that cloud's autoscaler puts on the nodes.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "AUTOSCALERS",
    "CAPACITY_TYPES",
    "DEFAULT_AUTOSCALER",
    "EKS_NODE_GROUP",
    "KARPENTER",
    "AKS_NODE_POOL",
    "CloudPool",
]

#: what brings the pool's nodes, and so which labels and taints they carry
KARPENTER = "karpenter"
EKS_NODE_GROUP = "eks-node-group"
AKS_NODE_POOL = "aks-node-pool"
#: the autoscalers each cloud's managed Kubernetes offers for GPU pools
AUTOSCALERS: dict[str, tuple[str, ...]] = {"aws": (KARPENTER, EKS_NODE_GROUP), "azure": (AKS_NODE_POOL,)}
DEFAULT_AUTOSCALER: dict[str, str] = {"aws": KARPENTER, "azure": AKS_NODE_POOL}
#: the pool's market, in the words of the targets' ``market`` (spot can be refused and taken back)
CAPACITY_TYPES: tuple[str, ...] = ("spot", "on-demand")


@dataclass(frozen=True, kw_only=True)
class CloudPool:
    """The node pool a ``kubernetes`` target's pods land on (the policy's ``targets[].cloud``)."""

    #: the cloud whose market prices the nodes: ``aws`` (EKS) or ``azure`` (AKS)
    provider: str
    region: str
    #: ``spot`` or ``on-demand``
    capacity_type: str
    #: the instance types / VM sizes the pool may bring, preferred first (priced in this order)
    instance_types: tuple[str, ...]
    #: :data:`AUTOSCALERS`: which labels and taints the pool's nodes carry
    autoscaler: str
    #: a pod unschedulable this long with no scale-up under way is a capacity refusal (fails over like
    #: ``InsufficientInstanceCapacity``); the policy's ``unschedulable_timeout_seconds`` stays the backstop
    capacity_wait_seconds: float = 90.0

    @property
    def spot(self) -> bool:
        return self.capacity_type == "spot"
